//! The core's bookkeeping, seen from inside: pending groups and their counts, what goes out
//! again after a failure, what is skipped, the deadline, divergence.

use sha2::Digest as _;

use super::*;
use crate::memory::MemoryLog;
use crate::testing::Echo;
use crate::transform::TransformError;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn publish(log: &MemoryLog, payload: &[u8]) {
    log.publish(&key("in"), vec![Event::new(key("in"), None, None, 7, "text/plain", payload.to_vec())]);
}

/// A live replica (nothing to catch up on) with `config`'s limits.
fn replica(configure: impl FnOnce(&mut ReplicaConfig)) -> ReplicaCore<Echo> {
    let mut config = ReplicaConfig::new("r");
    configure(&mut config);
    ReplicaCore::new(Echo::default(), config, 0)
}

/// Feeds `core` every record of `log` it has not read.
fn fetch(core: &mut ReplicaCore<Echo>, log: &MemoryLog) {
    let records = log.records_from(core.position());
    let position = core.position() + records.len() as u64;
    core.on_fetched(&records, position);
}

fn send_states(core: &ReplicaCore<Echo>) -> Vec<SendState> {
    core.pending.iter().map(|g| g.send).collect()
}

fn first_indexes(write: &WriteRequest) -> Vec<u64> {
    write.record.events.iter().map(|e| e.index.unwrap()).collect()
}

/// Calls `poll_write` until `None`, as a driver does.
fn poll_writes(core: &mut ReplicaCore<Echo>, now_ms: u64) -> Vec<WriteRequest> {
    std::iter::from_fn(|| core.poll_write(now_ms)).collect()
}

/// What a driver relies on to sleep: once it has handled the deadline, the next one is
/// later (or there is none), so it never spins.
fn assert_deadline_moves_on(core: &mut ReplicaCore<Echo>, now_ms: u64) -> Vec<WriteRequest> {
    core.on_timeout(now_ms);
    let writes = poll_writes(core, now_ms);
    assert!(core.poll_timeout_ms().is_none_or(|at| at > now_ms), "deadline {:?} at {now_ms}", core.poll_timeout_ms());
    writes
}

#[test]
fn pending_groups_and_their_counts_follow_each_group_until_it_is_canonical() {
    let log = MemoryLog::new();
    for payload in [&b"a"[..], b"bad", b"b"] {
        publish(&log, payload);
    }
    let mut core = replica(|_| {});
    fetch(&mut core, &log);
    assert_eq!(core.pending.len(), 3);
    assert_eq!(core.groups, [2, 1], "two output groups, one dead letter");
    assert_eq!(core.pending_events(), 3);
    assert_eq!(core.next_index, [2, 1]);
    assert_eq!((core.computed[OUTPUT].from, core.computed[OUTPUT].digests.len()), (0, 2));
    assert_eq!(core.stats().dead_letters, 1);

    let writes = poll_writes(&mut core, 0);
    assert_eq!(writes.len(), 1, "all three groups fit in one record");
    assert_eq!(core.send_from, 3);
    let at = log.append_now(&writes[0].record).unwrap();
    core.on_delivery(writes[0].write_id, Ok(at));
    assert_eq!(core.pending.len(), 3, "delivered is not canonical until read back");
    assert!(send_states(&core).iter().all(|s| matches!(s, SendState::Sent { offset: Some(o), .. } if *o == at)));
    assert!(!core.is_settled());

    fetch(&mut core, &log);
    assert!(core.pending.is_empty());
    assert_eq!((core.groups, core.pending_events(), core.send_from), ([0, 0], 0, 0));
    assert!(core.computed[OUTPUT].digests.is_empty() && core.computed[DEAD_LETTER].digests.is_empty());
    assert_eq!(core.stats().races_won, 3);
    assert!(core.is_settled());
}

#[test]
fn a_failed_delivery_sends_its_groups_and_every_later_one_again_in_order() {
    let log = MemoryLog::new();
    for payload in [b"a", b"b", b"c"] {
        publish(&log, payload);
    }
    // One group per record.
    let mut core = replica(|c| c.record_bytes_max = 1);
    fetch(&mut core, &log);
    let writes = poll_writes(&mut core, 0);
    assert_eq!(writes.iter().map(first_indexes).collect::<Vec<_>>(), [[0], [1], [2]]);
    core.on_delivery(writes[0].write_id, Ok(10));

    core.on_delivery(writes[1].write_id, Err(()));
    assert_eq!(core.stats().delivery_failures, 1);
    assert!(matches!(send_states(&core)[..], [SendState::Sent { .. }, SendState::Unsent, SendState::Unsent]));
    assert_eq!(core.send_from, 1, "the next write starts at the failed group");
    assert_eq!(poll_writes(&mut core, 0), [], "not at once: after a backoff");
    let retry_at = core.poll_timeout_ms().expect("the end of the backoff");
    let again = assert_deadline_moves_on(&mut core, retry_at);
    assert_eq!(again.iter().map(first_indexes).collect::<Vec<_>>(), [[1], [2]], "in order, from the failed one");

    // The third write's groups already went out again: its late failure changes nothing.
    core.on_delivery(writes[2].write_id, Err(()));
    assert!(send_states(&core).iter().all(|s| matches!(s, SendState::Sent { .. })));
    assert_eq!(poll_writes(&mut core, 0), []);
}

#[test]
fn groups_already_canonical_in_the_fetched_records_are_not_queued() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    crate::replica::run_to_end(&log, Echo::default());
    // The input and the winner's output arrive in one batch.
    let mut late = replica(|_| {});
    fetch(&mut late, &log);
    assert!(late.pending.is_empty());
    assert_eq!((late.groups, late.pending_events()), ([0, 0], 0));
    assert_eq!(late.stats().writes_skipped, 1);
    assert_eq!(late.next_index, [1, 0], "numbered all the same");
    assert_eq!(poll_writes(&mut late, 0), []);
    assert!(late.is_settled());
}

#[test]
fn a_dead_letter_canonical_behind_a_missing_output_leaves_the_middle_of_the_queue() {
    let log = MemoryLog::new();
    for payload in [&b"a"[..], b"bad", b"b"] {
        publish(&log, payload);
    }
    let mut core = replica(|_| {});
    fetch(&mut core, &log);
    let write = core.poll_write(0).unwrap();
    // Only the dead letter lands (another replica's copy of it, say).
    let dead_letters: Vec<Event> =
        write.record.events.iter().filter(|e| e.key == *core.dead_letter_key()).cloned().collect();
    log.append_now(&Record { events: dead_letters, ..write.record.clone() }).unwrap();
    fetch(&mut core, &log);
    assert_eq!(core.pending.iter().map(|g| (g.slot, g.first_index)).collect::<Vec<_>>(), [(OUTPUT, 0), (OUTPUT, 1)]);
    assert_eq!((core.groups, core.pending_events(), core.send_from), ([2, 0], 2, 2));
    assert!(core.computed[DEAD_LETTER].digests.is_empty());
}

#[test]
fn an_idle_replica_has_no_deadline() {
    let mut core = replica(|c| c.racing = Racing::Staggered(Stagger { rank: 1, delay_ms: 50 }));
    assert_eq!(core.poll_timeout_ms(), None);
    let log = MemoryLog::new();
    publish(&log, b"a");
    crate::replica::run_to_end(&log, Echo::default());
    fetch(&mut core, &log);
    assert_eq!(poll_writes(&mut core, 100), []);
    assert_eq!(core.poll_timeout_ms(), None, "nothing held, nothing sent");
}

#[test]
fn a_staggered_group_is_released_at_its_deadline_and_not_before() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|c| {
        c.racing = Racing::Staggered(Stagger { rank: 2, delay_ms: 30 });
        c.resend_after_ms = 500;
    });
    fetch(&mut core, &log);
    assert_eq!(core.poll_timeout_ms(), Some(0), "not stamped yet: poll it at once");
    assert_eq!(poll_writes(&mut core, 1_000), []);
    assert_eq!(core.poll_timeout_ms(), Some(1_060), "rank 2 waits twice the delay");
    assert_eq!(assert_deadline_moves_on(&mut core, 1_059), []);
    let writes = assert_deadline_moves_on(&mut core, 1_060);
    assert_eq!(writes.len(), 1);
    assert_eq!(core.poll_timeout_ms(), Some(1_560), "then its re-send deadline");
}

#[test]
fn a_held_group_is_stamped_even_while_the_in_flight_limit_blocks_writes() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|c| {
        c.racing = Racing::Staggered(Stagger { rank: 1, delay_ms: 10 });
        c.in_flight_records_max = 1;
        c.record_bytes_max = 1;
    });
    fetch(&mut core, &log);
    assert_eq!(poll_writes(&mut core, 0), []);
    let first = assert_deadline_moves_on(&mut core, 10);
    assert_eq!(first.len(), 1);
    publish(&log, b"b");
    fetch(&mut core, &log);
    assert_eq!(poll_writes(&mut core, 20), [], "the limit is reached");
    assert_eq!(core.poll_timeout_ms(), Some(30), "yet its turn is known: no busy wake-ups");
}

#[test]
fn a_sent_group_is_due_again_after_resend_after_ms_or_once_the_reader_passes_it() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|c| c.resend_after_ms = 500);
    fetch(&mut core, &log);
    assert_eq!(poll_writes(&mut core, 100).len(), 1);
    assert_eq!(core.poll_timeout_ms(), Some(600));
    assert_eq!(assert_deadline_moves_on(&mut core, 599), []);
    assert_eq!(core.stats().groups_resent, 0, "not before its deadline");
    let again = assert_deadline_moves_on(&mut core, 600);
    assert_eq!((core.stats().groups_resent, again.len()), (1, 1));
    assert_eq!(core.poll_timeout_ms(), Some(1_100), "the re-send has a deadline of its own");

    // Delivered where the reader has not been: only slow.
    core.on_delivery(again[0].write_id, Ok(5));
    assert_eq!(core.poll_timeout_ms(), None);
    // The reader passes that offset (records of other writers) and the group is not there:
    // lost, due at once.
    for _ in 1..=5 {
        log.append_raw(None, None);
    }
    fetch(&mut core, &log);
    assert_eq!(core.position(), 6);
    assert_eq!(core.poll_timeout_ms(), Some(600));
    assert_eq!(assert_deadline_moves_on(&mut core, 700).len(), 1);
    assert_eq!(core.stats().groups_resent, 2);
}

#[test]
fn a_canonical_copy_of_its_own_key_with_another_digest_is_a_divergence() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|_| {});
    fetch(&mut core, &log);
    let ours = core.pending[0].events[0].digest;
    // Another writer's event 0 of `echo`, computed differently, lands first.
    let theirs = Event::new(key("echo"), Some(0), Some(0), 7, "text/plain", b"A".to_vec());
    let at = log.append_now(&Record { source: key("echo"), writer: "other".into(), events: vec![theirs.clone()] });
    fetch(&mut core, &log);
    let divergence = core.divergence().expect("a divergence");
    assert_eq!(
        (&divergence.key, divergence.index, divergence.ours, divergence.canonical, divergence.canonical_offset),
        (&key("echo"), 0, ours, theirs.digest, at.unwrap())
    );
    assert_eq!((core.phase(), core.stats().divergences), (Phase::Diverged, 1));
    assert_eq!(poll_writes(&mut core, 0), [], "a diverged replica writes nothing");
    assert_eq!(core.poll_timeout_ms(), None);
}

/// The bytes of `record` at `offset`, as fetched.
fn fetched_at(offset: Offset, record: &Record) -> FetchedRecord {
    let encoded = record.encode().unwrap();
    FetchedRecord { offset, key: Some(encoded.key), value: Some(encoded.value), ..Default::default() }
}

#[test]
fn an_own_event_read_back_is_compared_byte_for_byte_and_a_forged_copy_of_its_digest_is_malformed() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|_| {});
    fetch(&mut core, &log);
    let ours = core.pending[0].events[0].clone();
    // Our digest on other content: what checking the digest would refuse, the comparison
    // of bytes refuses too.
    let forged = Event { payload: b"b".to_vec(), ..ours.clone() };
    for tampered in [forged, Event { cause: Some(5), ..ours.clone() }, Event { effective_time_ms: 8, ..ours.clone() }] {
        let record = Record { source: key("echo"), writer: "forger".into(), events: vec![tampered] };
        let offset = core.position();
        core.on_fetched(&[fetched_at(offset, &record)], offset + 1);
    }
    assert_eq!(core.own_rule().malformed(), 3, "each forged copy is malformed");
    assert_eq!((core.own_rule().count(&key("echo")), core.divergence()), (0, None));
    // A true copy (another replica's) is canonical and stands for ours.
    let copy = Record { source: key("echo"), writer: "other".into(), events: vec![ours] };
    let offset = core.position();
    core.on_fetched(&[fetched_at(offset, &copy)], offset + 1);
    assert_eq!((core.own_rule().malformed(), core.own_rule().count(&key("echo"))), (3, 1));
    assert_eq!(core.divergence(), None);
    assert!(core.pending.is_empty());
}

#[test]
fn outputs_computed_after_a_different_copy_is_canonical_are_a_divergence_too() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let theirs = Event::new(key("echo"), Some(0), Some(0), 7, "text/plain", b"A".to_vec());
    log.append_now(&Record { source: key("echo"), writer: "other".into(), events: vec![theirs] }).unwrap();
    let mut core = replica(|_| {});
    fetch(&mut core, &log);
    assert_eq!(core.divergence().map(|d| (d.index, d.canonical_offset)), Some((0, 1)));
    assert_eq!(core.stats().writes_skipped, 0, "skipped only while live, and it is not");
    assert!(core.pending.is_empty(), "the group is canonical (with other bytes): nothing to write");
}

#[cfg(not(feature = "avro"))]
#[test]
fn without_the_avro_feature_an_avro_input_is_a_schema_dead_letter_with_one_reason() {
    use crate::codec::{frame, AVRO_DISABLED, CONTENT_TYPE_AVRO};

    /// Decodes every input by its content type.
    struct Decoder;
    impl Transform for Decoder {
        fn name(&self) -> &str {
            "decoder"
        }
        fn version(&self) -> u32 {
            1
        }
        fn subscriptions(&self) -> Vec<EventSourceKey> {
            vec![key("in")]
        }
        fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
            let value: serde_json::Value = input.decode()?;
            out.emit_json(&value);
            Ok(())
        }
    }

    let log = MemoryLog::new();
    let avro = Event::new(key("in"), None, None, 7, CONTENT_TYPE_AVRO, frame(1, &[2, b'a']));
    log.publish(&key("in"), vec![avro]);
    crate::replica::run_to_end(&log, Decoder);
    let letters = log.canonical(&key("decoder.dead-letters"));
    assert_eq!(letters.len(), 1);
    let letter: DeadLetter = serde_json::from_slice(&letters[0].payload).unwrap();
    assert_eq!((letter.reason, letter.message.as_str()), (Reason::Schema, AVRO_DISABLED));
    assert!(log.canonical(&key("decoder")).is_empty());
}

/// Fails every delivery of `core`'s writes from `now_ms` for `rounds` rounds, each polled
/// when its backoff ends; returns the times the rounds went out, and last the time the next
/// one may.
fn fail_rounds(core: &mut ReplicaCore<Echo>, mut now_ms: u64, rounds: usize) -> Vec<u64> {
    let mut sent_at = Vec::new();
    for _ in 0..rounds {
        let writes = poll_writes(core, now_ms);
        assert!(!writes.is_empty(), "a round goes out at {now_ms}");
        sent_at.push(now_ms);
        for write in &writes {
            core.on_delivery(write.write_id, Err(()));
        }
        // A driver calls `poll_write` after every delivery: at the same time, nothing.
        for _ in 0..1_000 {
            assert_eq!(core.poll_write(now_ms), None, "a failed write is never sent again at once");
        }
        let deadline = core.poll_timeout_ms().expect("a deadline: the end of the backoff");
        assert!(deadline > now_ms);
        assert_eq!(assert_deadline_moves_on(core, deadline - 1), [], "not before the deadline");
        now_ms = deadline;
    }
    sent_at.push(now_ms);
    sent_at
}

#[test]
fn failed_deliveries_in_a_row_are_sent_again_only_after_a_growing_backoff() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|c| {
        c.write_retry_min_ms = 100;
        c.write_retry_max_ms = 1_000;
    });
    fetch(&mut core, &log);
    let sent_at = fail_rounds(&mut core, 0, 8);
    let waits: Vec<u64> = sent_at.windows(2).map(|pair| pair[1] - pair[0]).collect();
    // Nominal 100, 200, 400, 800, then 1 000 on; each plus a spread of less than as much again.
    for (n, wait) in waits.iter().enumerate() {
        let nominal = (100 << n).min(1_000);
        assert!((nominal..=2 * nominal).contains(wait), "wait {n} is {wait} ms, nominal {nominal}: {waits:?}");
    }
    assert_eq!(core.stats().delivery_failures, 8);
    assert_eq!(core.stats().records_written, 8, "one record a round, not one a poll");
}

#[test]
fn a_delivery_that_succeeds_starts_the_backoff_over() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut core = replica(|c| c.write_retry_min_ms = 100);
    fetch(&mut core, &log);
    let times = fail_rounds(&mut core, 0, 5);
    let next = times[5];
    assert!(next - times[4] >= 1_600, "the fifth wait is at least 16 × 100 ms: {times:?}");
    let write = poll_writes(&mut core, next).pop().expect("the sixth round");
    core.on_delivery(write.write_id, Ok(log.append_now(&write.record).unwrap()));
    // The next failure waits the first wait again.
    publish(&log, b"b");
    fetch(&mut core, &log);
    let sent_at = fail_rounds(&mut core, next, 2);
    assert!((100..=200).contains(&(sent_at[1] - sent_at[0])), "{sent_at:?}");
}

#[test]
fn writes_in_flight_together_fail_together_and_count_once() {
    let log = MemoryLog::new();
    for payload in [b"a", b"b", b"c"] {
        publish(&log, payload);
    }
    let mut core = replica(|c| {
        c.record_bytes_max = 1;
        c.write_retry_min_ms = 100;
    });
    fetch(&mut core, &log);
    let writes = poll_writes(&mut core, 0);
    assert_eq!(writes.len(), 3);
    for write in &writes {
        core.on_delivery(write.write_id, Err(()));
    }
    assert_eq!(poll_writes(&mut core, 0), []);
    let deadline = core.poll_timeout_ms().unwrap();
    assert!((100..=200).contains(&deadline), "one failed round, not three: {deadline}");
    assert_eq!(assert_deadline_moves_on(&mut core, deadline).len(), 3, "all three go out again, in order");
}

/// Decodes each input as JSON and answers it; floods on `{"flood":…}`, and names an
/// over-long content type on `{"content_type":…}`.
struct Strict {
    name: String,
}

impl Transform for Strict {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("in")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let value: serde_json::Value = input.json()?;
        if let Some(length) = value.get("content_type").and_then(serde_json::Value::as_u64) {
            out.emit(&"t".repeat(length as usize), b"{}".to_vec());
        } else if value.get("flood").is_some() {
            // Within the per-input limits (1 000 events, 512 KiB of payload), yet with their
            // framing and long content types more than a record may carry.
            (0..OUTPUT_EVENTS_MAX).for_each(|_| out.emit(&"t".repeat(CONTENT_TYPE_BYTES_MAX), vec![b'x'; 520]));
        } else {
            out.emit_json(&value);
        }
        Ok(())
    }
}

/// A ~750 KB payload that is not JSON.
fn undecodable() -> Vec<u8> {
    (0..750_000u32).map(|i| b"not json "[i as usize % 9]).collect()
}

/// What each of two replicas of `Strict` named `name` writes for `log`'s inputs, checked
/// against the record limit: the same events on both.
fn writes_of_two_replicas(log: &MemoryLog, name: &str) -> Vec<Event> {
    let mut written = Vec::new();
    for id in ["host-a-strict-1", "host-b-strict-2"] {
        let mut core = ReplicaCore::new(Strict { name: name.into() }, ReplicaConfig::new(id), 0);
        let records = log.records();
        core.on_fetched(&records, records.len() as u64);
        let mut events = Vec::new();
        for write in poll_writes_of(&mut core) {
            let encoded = write.record.encode().expect("every record the core hands out encodes");
            assert!(encoded.value.len() <= RECORD_BYTES_MAX, "a record of {} bytes", encoded.value.len());
            events.extend(write.record.events);
        }
        written.push(events);
    }
    assert_eq!(written[0], written[1], "both replicas write the same events, byte for byte");
    written.remove(0)
}

fn poll_writes_of(core: &mut ReplicaCore<Strict>) -> Vec<WriteRequest> {
    std::iter::from_fn(|| core.poll_write(0)).collect()
}

fn letter_of(event: &Event) -> DeadLetter {
    assert_eq!(event.content_type, CONTENT_TYPE_DEAD_LETTER);
    serde_json::from_slice(&event.payload).unwrap()
}

#[test]
fn a_750_kb_undecodable_input_is_one_dead_letter_that_fits_the_same_on_every_replica() {
    let log = MemoryLog::new();
    let payload = undecodable();
    log.publish(&key("in"), vec![Event::new(key("in"), None, None, 7, "application/json", payload.clone())]);
    log.publish(&key("in"), vec![Event::new(key("in"), None, None, 8, "application/json", b"{\"a\":1}".to_vec())]);
    let events = writes_of_two_replicas(&log, "strict");
    assert_eq!(events.len(), 2, "the dead letter, then the next input's output");
    let letter = letter_of(&events[0]);
    assert_eq!(letter.reason, Reason::Decode);
    assert!(letter.input.payload_truncated);
    assert_eq!(letter.input.payload_bytes, Some(750_000));
    let sha256 = Digest(sha2::Sha256::digest(&payload).into()).to_string();
    assert_eq!(letter.input.payload_sha256, Some(sha256));
    assert_eq!(letter.kept_payload().unwrap(), &payload[..crate::dead_letter::PAYLOAD_KEPT_BYTES_MAX]);
    assert_eq!(events[1].payload, b"{\"a\":1}");
}

#[test]
fn outputs_over_the_group_limit_are_a_dead_letter_that_fits_even_for_a_large_input() {
    let log = MemoryLog::new();
    // A long name: the key is framing on every output event.
    let name = "s".repeat(240);
    let mut flood = br#"{"flood":""#.to_vec();
    flood.extend(std::iter::repeat_n(b'f', 700_000));
    flood.extend(br#""}"#);
    log.publish(&key("in"), vec![Event::new(key("in"), None, None, 7, "application/json", flood.clone())]);
    let events = writes_of_two_replicas(&log, &name);
    assert_eq!(events.len(), 1);
    let letter = letter_of(&events[0]);
    assert_eq!(letter.reason, Reason::OutputTooLarge);
    assert!(letter.message.contains(&format!("at most {GROUP_BYTES_MAX}")), "{}", letter.message);
    assert!(letter.input.payload_truncated);
    assert_eq!(letter.input.payload_bytes, Some(flood.len() as u64));
}

#[test]
fn an_over_long_content_type_is_an_invalid_output_dead_letter() {
    let log = MemoryLog::new();
    for json in [&br#"{"content_type":256}"#[..], br#"{"content_type":255}"#] {
        log.publish(&key("in"), vec![Event::new(key("in"), None, None, 7, "application/json", json.to_vec())]);
    }
    let events = writes_of_two_replicas(&log, "strict");
    assert_eq!(events.len(), 2);
    let letter = letter_of(&events[0]);
    assert_eq!(letter.reason, Reason::InvalidOutput);
    assert_eq!(letter.message, "output 0 has a content type of 256 bytes; a content type may have at most 255");
    assert_eq!(events[1].content_type.len(), 255, "255 bytes are a content type");
}

#[test]
fn the_largest_record_header_is_what_the_codec_writes() {
    let source = key(&"s".repeat(255));
    assert_eq!(encoded_header_len(&source, &"w".repeat(255)), crate::transform::RECORD_HEADER_BYTES_MAX);
}

/// Drives `core` over `log` in batches of at most 50 records, appending what it writes at
/// once; the most events, and bytes, it held at any time.
fn drive_counting_held(core: &mut ReplicaCore<Echo>, log: &MemoryLog) -> (usize, usize) {
    let mut held_max = (0, 0);
    for _ in 0..100_000 {
        let from = core.position();
        let batch: Vec<_> = log.records_from(from).into_iter().take(50).collect();
        core.on_fetched(&batch, from + batch.len() as u64);
        let (events, bytes) = core.holding();
        held_max = (held_max.0.max(events), held_max.1.max(bytes));
        for write in poll_writes(core, 0) {
            let at = log.append_now(&write.record).unwrap();
            core.on_delivery(write.write_id, Ok(at));
        }
        if batch.is_empty() && core.is_settled() && !core.is_deferring() {
            return held_max;
        }
    }
    panic!("the replica never settled: {:?} at {}", core.phase(), core.position());
}

#[test]
fn a_backlog_past_the_bound_is_deferred_and_read_again_not_held() {
    let log = MemoryLog::new();
    for i in 0..1_000 {
        publish(&log, format!("{i}").as_bytes());
    }
    let mut core = replica(|c| c.pending_events_max = 10);
    let (held_max, _) = drive_counting_held(&mut core, &log);
    assert!(held_max <= 11, "held {held_max} events with a bound of 10");
    assert!(core.stats().records_written > 50, "written as it went, in many records");
    let outputs: Vec<Vec<u8>> = log.canonical(&key("echo")).into_iter().map(|e| e.payload).collect();
    let inputs: Vec<Vec<u8>> = (0..1_000).map(|i| format!("{i}").into_bytes()).collect();
    assert_eq!(outputs, inputs, "every input answered once, in order");
    assert_eq!(core.stats().inputs_processed, 1_000, "each input transformed once, though read again");
}

#[test]
fn catching_up_on_outputs_that_land_behind_the_backlog_holds_no_more_than_the_bound() {
    let log = MemoryLog::new();
    for i in 0..1_000 {
        publish(&log, format!("{i}").as_bytes());
    }
    crate::replica::run_to_end(&log, Echo::default());
    let end = log.end();
    let mut core = ReplicaCore::new(
        Echo::default(),
        {
            let mut config = ReplicaConfig::new("late");
            config.pending_bytes_max = 2_000;
            config
        },
        end,
    );
    let (_, held_max) = drive_counting_held(&mut core, &log);
    let group_bytes_max = core.pending.iter().map(Group::encoded_bytes).max().unwrap_or(100);
    assert!(held_max <= 2_000 + group_bytes_max, "held {held_max} bytes with a bound of 2000");
    assert_eq!(core.stats().records_written, 0, "everything was canonical already");
    assert_eq!(log.end(), end);
    assert_eq!(core.stats().inputs_processed, 1_000);
}
