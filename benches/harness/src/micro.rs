//! The per-event cost of each step of a replica's hot path, without Kafka: what a fetched
//! input and a written output cost in CPU before any I/O (the thread's CPU time, so that
//! other processes on the cores do not count).
//!
//! Steps, in a replica's order: decode the fetched input record in place (which re-computes
//! and checks every event's SHA-256 digest), apply the canonical rule, call the transform,
//! build the output event (its digest), encode the output record; then decode the record
//! again when it is read back, and apply the rule to it.

use std::collections::BTreeMap;

use competing_transformers::canonical::CanonicalRule;
use competing_transformers::record::{EncodedRecord, FetchedRecord, Record, RecordView};
use competing_transformers::replica::{ReplicaConfig, ReplicaCore};
use competing_transformers::signature::{Signer, Trust};
use competing_transformers::{Event, EventSourceKey, Outputs};

use crate::framework::{Det, CONTENT_TYPE_BYTES};

/// Nanoseconds per event of each step, over `n` events of the identity DET's 100-byte payload.
pub fn run(n: u64) -> BTreeMap<&'static str, f64> {
    let output_key = EventSourceKey::new(bench_harness::IDENTITY).expect("valid");
    let inputs = input_records(n);
    let mut timer = Timer { n, results: BTreeMap::new() };
    let mut decoded = Vec::with_capacity(n as usize);
    timer.time("1 decode input record (incl. digest check)", &mut || {
        decoded = inputs.iter().map(|r| RecordView::parse_fetched(r).expect("decodes")).collect();
    });
    let mut rule = CanonicalRule::default();
    timer.time("2 canonical rule on input", &mut || apply_rule(&mut rule, &decoded, 0));
    let mut outputs_all = Vec::with_capacity(n as usize);
    // What `Identity::apply` does (copy the payload into the outputs), without building an
    // `Input`, whose fields change as the framework grows.
    timer.time("3 transform call (identity: copy payload to outputs)", &mut || identity(&decoded, &mut outputs_all));
    let mut events = Vec::with_capacity(n as usize);
    timer.time("4 build output event (digest)", &mut || output_events(&mut outputs_all, &output_key, &mut events));
    let mut encoded = Vec::with_capacity(n as usize);
    // Without summary headers, as the log writes by default.
    timer.time("5 encode output record", &mut || encode_outputs(&mut events, &output_key, &mut encoded));
    let fetched = fetched_outputs(encoded, n);
    let mut read_back = Vec::with_capacity(n as usize);
    timer.time("6 decode output record read back", &mut || {
        read_back = fetched.iter().map(|r| RecordView::parse_fetched(r).expect("decodes")).collect();
    });
    timer.time("7 canonical rule on output", &mut || apply_rule(&mut rule, &read_back, n));
    let _ = CONTENT_TYPE_BYTES;
    let records: Vec<Record> = read_back.iter().map(RecordView::to_record).collect();
    let total: f64 = timer.results.values().sum();
    timer.results.insert("total", total);
    signed_steps(&mut timer, &records, &output_key);
    core_loop(&mut timer, &inputs, &output_key);
    timer.results
}

/// With the output key protected, what signing costs the writer (step 5 signed) and what
/// verifying costs a reader of the key (step 7 with the trust table): outside the total.
fn signed_steps(timer: &mut Timer, records: &[Record], output_key: &EventSourceKey) {
    let signer = Signer::from_secret(&[0x5e; 32]);
    let mut signed = Vec::with_capacity(records.len());
    timer.time("signed: 5 encode output record, signed (Ed25519)", &mut || {
        signed = records.iter().map(|r| r.encode_signed(false, Some(&signer)).expect("encodes")).collect();
    });
    let fetched = fetched_outputs(signed, timer.n);
    let views: Vec<RecordView<'_>> = fetched.iter().map(|r| RecordView::parse_fetched(r).expect("decodes")).collect();
    let mut rule = CanonicalRule::default().with_trust(Trust::new().protect(output_key, [signer.public_key()]));
    timer.time("signed: 7 canonical rule on output (incl. signature check)", &mut || {
        apply_rule(&mut rule, &views, 0);
    });
    assert_eq!(rule.count(output_key), timer.n, "every signed output is canonical");
}

/// Inputs per fetched batch in [`core_loop`]: what a replica's cursor hands over flat out.
const CORE_BATCH: usize = 500;

/// The replica core's whole turn per event, as the driver runs it flat out: a fetched batch
/// of inputs (copied as the cursor copies them), its output record written and encoded, then
/// read back and judged. Steps 1 to 7 as the core does them, batching included: outside the
/// total.
fn core_loop(timer: &mut Timer, inputs: &[FetchedRecord], output_key: &EventSourceKey) {
    let mut core = ReplicaCore::new(bench_harness::Identity, ReplicaConfig::new("r0-identity"), 0);
    timer.time("core: replica loop, batches of 500 (outside the total)", &mut || {
        let mut offset = 0;
        for batch in inputs.chunks(CORE_BATCH) {
            let batch: Vec<FetchedRecord> =
                batch.iter().zip(offset..).map(|(r, offset)| FetchedRecord { offset, ..r.clone() }).collect();
            offset += batch.len() as u64;
            core.on_fetched(&batch, offset);
            let mut written = Vec::new();
            while let Some(write) = core.poll_write(0) {
                let encoded = write.record.encode_with(false).expect("encodes");
                core.on_delivery(write.write_id, Ok(offset));
                written.push(FetchedRecord {
                    offset,
                    key: Some(encoded.key),
                    value: Some(encoded.value),
                    ..Default::default()
                });
                offset += 1;
            }
            core.on_fetched(&written, offset);
        }
    });
    assert_eq!(core.own_rule().count(output_key), timer.n, "every output is canonical");
}

/// Times each step and keeps its cost per event.
struct Timer {
    n: u64,
    results: BTreeMap<&'static str, f64>,
}

impl Timer {
    fn time(&mut self, name: &'static str, f: &mut dyn FnMut()) {
        let start = thread_cpu_ns();
        f();
        self.results.insert(name, (thread_cpu_ns() - start) as f64 / self.n as f64);
    }
}

/// CPU time this thread has used, in ns: unlike the wall clock, not the time other processes
/// held the machine's cores (benchmarks share them).
fn thread_cpu_ns() -> u128 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to write; the clock always exists on Linux.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(read, 0, "the thread's CPU clock is readable");
    now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128
}

/// `n` input records as the load writes them, as fetched from the log.
fn input_records(n: u64) -> Vec<FetchedRecord> {
    let input_key = Det::Identity.input_key();
    (0..n)
        .map(|seq| {
            let record = Record {
                source: input_key.clone(),
                writer: "bench-load".into(),
                events: vec![Det::Identity.event(seq)],
            };
            let encoded = record.encode().expect("encodes");
            FetchedRecord { offset: seq, key: Some(encoded.key), value: Some(encoded.value), ..Default::default() }
        })
        .collect()
}

/// The canonical rule on `records`, the first at offset `first_offset`.
fn apply_rule(rule: &mut CanonicalRule, records: &[RecordView<'_>], first_offset: u64) {
    for (i, record) in records.iter().enumerate() {
        std::hint::black_box(rule.apply_view(first_offset + i as u64, Ok(record)).expect("decoded"));
    }
}

/// The identity transform's work: each input's payload copied into its outputs.
fn identity(decoded: &[RecordView<'_>], outputs_all: &mut Vec<Outputs>) {
    for record in decoded {
        let event = &record.events[0];
        let mut outputs = Outputs::default();
        outputs.emit(event.content_type, event.payload.to_vec());
        outputs_all.push(outputs);
    }
}

/// The output events, numbered and digested as a replica builds them.
fn output_events(outputs_all: &mut Vec<Outputs>, output_key: &EventSourceKey, events: &mut Vec<Event>) {
    for (i, outputs) in outputs_all.drain(..).enumerate() {
        for o in outputs.into_events() {
            events.push(Event::new(output_key.clone(), Some(i as u64), Some(i as u64), 0, o.content_type, o.payload));
        }
    }
}

/// One output record per event.
fn encode_outputs(events: &mut Vec<Event>, output_key: &EventSourceKey, encoded: &mut Vec<EncodedRecord>) {
    for event in events.drain(..) {
        encoded.push(
            Record { source: output_key.clone(), writer: "r0-identity".into(), events: vec![event] }
                .encode_with(false)
                .expect("encodes"),
        );
    }
}

/// The output records as read back from the log, after the `n` inputs.
fn fetched_outputs(encoded: Vec<EncodedRecord>, n: u64) -> Vec<FetchedRecord> {
    encoded
        .into_iter()
        .enumerate()
        .map(|(i, e)| FetchedRecord {
            offset: n + i as u64,
            timestamp_ms: None,
            key: Some(e.key),
            value: Some(e.value),
            details: Vec::new(),
        })
        .collect()
}
