//! The per-event cost of each step of a replica's hot path, without Kafka: what a fetched
//! input and a written output cost in CPU before any I/O.
//!
//! Steps, in a replica's order: decode the fetched input record in place (which re-computes
//! and checks every event's SHA-256 digest), apply the canonical rule, call the transform,
//! build the output event (its digest), encode the output record; then decode the record
//! again when it is read back, and apply the rule to it.

use std::collections::BTreeMap;
use std::time::Instant;

use competing_transformers::canonical::CanonicalRule;
use competing_transformers::record::{FetchedRecord, Record, RecordView};
use competing_transformers::{Event, EventSourceKey, Outputs};

use crate::framework::{Det, CONTENT_TYPE_BYTES};

/// Nanoseconds per event of each step, over `n` events of the identity DET's 100-byte payload.
pub fn run(n: u64) -> BTreeMap<&'static str, f64> {
    let input_key = Det::Identity.input_key();
    let output_key = EventSourceKey::new(bench_harness::IDENTITY).expect("valid");
    let inputs: Vec<FetchedRecord> = (0..n)
        .map(|seq| {
            let record = Record {
                source: input_key.clone(),
                writer: "bench-load".into(),
                events: vec![Det::Identity.event(seq)],
            };
            let encoded = record.encode().expect("encodes");
            FetchedRecord { offset: seq, timestamp_ms: None, key: Some(encoded.key), value: Some(encoded.value) }
        })
        .collect();
    let mut results = BTreeMap::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        results.insert(name, start.elapsed().as_nanos() as f64 / n as f64);
    };
    let mut decoded = Vec::with_capacity(n as usize);
    time("1 decode input record (incl. digest check)", &mut || {
        decoded = inputs.iter().map(|r| RecordView::parse_fetched(r).expect("decodes")).collect();
    });
    let mut rule = CanonicalRule::default();
    time("2 canonical rule on input", &mut || {
        for (offset, record) in decoded.iter().enumerate() {
            std::hint::black_box(rule.apply_view(offset as u64, Ok(record)).expect("decoded"));
        }
    });
    let mut outputs_all = Vec::with_capacity(n as usize);
    // What `Identity::apply` does (copy the payload into the outputs), without building an
    // `Input`, whose fields change as the framework grows.
    time("3 transform call (identity: copy payload to outputs)", &mut || {
        for record in &decoded {
            let event = &record.events[0];
            let mut outputs = Outputs::default();
            outputs.emit(event.content_type, event.payload.to_vec());
            outputs_all.push(outputs);
        }
    });
    let mut events = Vec::with_capacity(n as usize);
    time("4 build output event (digest)", &mut || {
        for (i, outputs) in outputs_all.drain(..).enumerate() {
            for o in outputs.into_events() {
                events.push(Event::new(
                    output_key.clone(),
                    Some(i as u64),
                    Some(i as u64),
                    0,
                    o.content_type,
                    o.payload,
                ));
            }
        }
    });
    let mut encoded = Vec::with_capacity(n as usize);
    // Without summary headers, as the log writes by default.
    time("5 encode output record", &mut || {
        for event in events.drain(..) {
            encoded.push(
                Record { source: output_key.clone(), writer: "r0-identity".into(), events: vec![event] }
                    .encode_with(false)
                    .expect("encodes"),
            );
        }
    });
    let fetched: Vec<FetchedRecord> = encoded
        .into_iter()
        .enumerate()
        .map(|(i, e)| FetchedRecord {
            offset: n + i as u64,
            timestamp_ms: None,
            key: Some(e.key),
            value: Some(e.value),
        })
        .collect();
    let mut read_back = Vec::with_capacity(n as usize);
    time("6 decode output record read back", &mut || {
        read_back = fetched.iter().map(|r| RecordView::parse_fetched(r).expect("decodes")).collect();
    });
    time("7 canonical rule on output", &mut || {
        for (i, record) in read_back.iter().enumerate() {
            std::hint::black_box(rule.apply_view(n + i as u64, Ok(record)).expect("decoded"));
        }
    });
    let _ = CONTENT_TYPE_BYTES;
    let total: f64 = results.values().sum();
    results.insert("total", total);
    results
}
