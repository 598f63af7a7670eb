//! A replica's life, step by step, on the in-memory log.

use competing_transformers::dead_letter::{DeadLetter, Detail, Reason, PANIC_MESSAGE};
use competing_transformers::replica::{run_to_end, Phase, ReplicaConfig, ReplicaCore};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, Transform, TransformError};

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Echoes each input twice; panics on `boom`; emits too much on `flood`.
struct Echo;

impl Transform for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn version(&self) -> u32 {
        3
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("in")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        match input.payload {
            b"boom" => panic!("boom on {}", input.index),
            b"flood" => (0..2_000).for_each(|_| out.emit("text/plain", vec![])),
            payload => (0..2).for_each(|_| out.emit("text/plain", payload.to_vec())),
        }
        Ok(())
    }
}

fn publish(log: &MemoryLog, payload: &[u8]) {
    log.publish(&key("in"), vec![Event::new(key("in"), None, None, 7, "text/plain", payload.to_vec())]);
}

/// Runs `core` over the log with the library's local driver; returns records it wrote.
fn drive(core: &mut ReplicaCore<Echo>, log: &MemoryLog) -> u64 {
    let before = core.stats().records_written;
    competing_transformers::replica::drive(core, log);
    core.stats().records_written - before
}

#[test]
fn a_restarted_replica_writes_nothing_that_is_already_in_the_log() {
    let log = MemoryLog::new();
    for payload in [b"a", b"b", b"c"] {
        publish(&log, payload);
    }
    run_to_end(&log, Echo);
    let mut restarted = ReplicaCore::new(Echo, ReplicaConfig::new("again"), log.records().len() as u64);
    assert!(matches!(restarted.phase(), Phase::CatchingUp { .. }));
    assert_eq!(drive(&mut restarted, &log), 0);
    assert_eq!(restarted.phase(), Phase::Live);
    assert_eq!(restarted.stats().inputs_processed, 3);
    assert_eq!(log.canonical(&key("echo")).len(), 6);
}

#[test]
fn outputs_lost_with_every_replica_are_written_after_catch_up() {
    let log = MemoryLog::new();
    for payload in [b"a", b"b"] {
        publish(&log, payload);
    }
    // A replica computes both groups but dies before any write lands.
    let mut doomed = ReplicaCore::new(Echo, ReplicaConfig::new("doomed"), 0);
    let records = log.records();
    doomed.on_fetched(&records, records.len() as u64);
    assert!(doomed.poll_write(0).is_some());
    drop(doomed);
    publish(&log, b"c");
    let mut next = ReplicaCore::new(Echo, ReplicaConfig::new("next"), log.records().len() as u64);
    drive(&mut next, &log);
    let outputs: Vec<Vec<u8>> = log.canonical(&key("echo")).into_iter().map(|e| e.payload).collect();
    assert_eq!(outputs, [b"a", b"a", b"b", b"b", b"c", b"c"].map(|p| p.to_vec()));
}

#[test]
fn a_group_already_canonical_in_the_fetched_records_is_skipped() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    run_to_end(&log, Echo);
    // A live replica that reads the input and the winner's outputs in one batch.
    let mut late = ReplicaCore::new(Echo, ReplicaConfig::new("late"), 0);
    assert_eq!(drive(&mut late, &log), 0);
    assert_eq!(late.stats().writes_skipped, 1);
}

#[test]
fn panics_and_oversized_outputs_become_dead_letters_and_the_replica_goes_on() {
    let log = MemoryLog::new();
    for payload in [&b"a"[..], b"boom", b"flood", b"b"] {
        publish(&log, payload);
    }
    let core = run_to_end(&log, Echo);
    assert_eq!(core.stats().dead_letters, 2);
    let letters: Vec<DeadLetter> =
        log.canonical(&key("echo.dead-letters")).iter().map(|e| serde_json::from_slice(&e.payload).unwrap()).collect();
    assert_eq!(letters.iter().map(|l| l.reason).collect::<Vec<_>>(), [Reason::Panic, Reason::OutputTooLarge]);
    // The panic's text and the version are outside the digest: in the record's detail header.
    assert_eq!(letters[0].message, PANIC_MESSAGE);
    assert_eq!((letters[0].transformer.as_str(), letters[0].version, letters[0].input.index), ("echo", None, 1));
    let (offset, _) = log.canonical_with_offsets(&key("echo.dead-letters"))[0].clone();
    let detail = Detail::find(&log.records()[offset as usize].details, 0).expect("the record carries the detail");
    assert_eq!(detail, Detail { index: 0, version: 3, error: Some("boom on 1".into()) });
    assert_eq!(letters[0].payload().unwrap(), b"boom");
    assert_eq!(log.canonical(&key("echo")).len(), 4, "the inputs around the poison are processed");
}

#[test]
fn a_rejected_copy_of_its_own_makes_a_replica_send_again_from_the_count() {
    let log = MemoryLog::new();
    publish(&log, b"a");
    publish(&log, b"b");
    let mut core = ReplicaCore::new(Echo, ReplicaConfig::new("r"), 0);
    let records = log.records();
    core.on_fetched(&records, records.len() as u64);
    // The record with both groups is lost; its delivery is reported failed.
    let lost = core.poll_write(0).unwrap();
    core.on_delivery(lost.write_id, Err(()));
    assert_eq!(drive(&mut core, &log), 1, "the lost groups go out again in one record");
    assert_eq!(log.canonical(&key("echo")).len(), 4);
    assert!(core.is_settled());
}

#[test]
fn a_staggered_replica_writes_only_what_the_first_rank_has_not_written_in_time() {
    use competing_transformers::replica::{Racing, Stagger};
    let log = MemoryLog::new();
    publish(&log, b"a");
    let mut config = ReplicaConfig::new("second");
    config.racing = Racing::Staggered(Stagger { rank: 1, delay_ms: 50 });
    let mut second = ReplicaCore::new(Echo, config, 0);
    let records = log.records();
    second.on_fetched(&records, records.len() as u64);
    assert_eq!(second.poll_write(1_000), None, "held for its turn");
    assert_eq!(second.poll_timeout_ms(), Some(1_050), "the driver wakes it at its turn");
    // The first rank's copy lands in time: nothing to write.
    run_to_end(&log, Echo);
    let records = log.records_from(second.position());
    second.on_fetched(&records, second.position() + records.len() as u64);
    assert_eq!(second.poll_write(1_060), None);
    assert_eq!(second.stats().writes_skipped, 1);
    // The first rank is stalled for the next input: the second writes once its turn comes.
    publish(&log, b"b");
    let records = log.records_from(second.position());
    second.on_fetched(&records, second.position() + records.len() as u64);
    assert_eq!(second.poll_write(2_000), None);
    assert_eq!(second.poll_write(2_049), None);
    let write = second.poll_write(2_050).expect("its turn has come");
    assert_eq!(write.record.events.len(), 2);
}

#[test]
fn records_stay_under_the_size_limit_counting_every_envelope_byte() {
    let log = MemoryLog::new();
    for _ in 0..200 {
        publish(&log, &[b'x'; 300]);
    }
    let mut config = ReplicaConfig::new("r");
    config.record_bytes_max = 10_000;
    let mut core = ReplicaCore::new(Echo, config, 0);
    let records = log.records();
    core.on_fetched(&records, records.len() as u64);
    let mut sizes = Vec::new();
    while let Some(write) = core.poll_write(0) {
        sizes.push(write.record.encode().unwrap().value.len());
    }
    assert!(sizes.len() > 1, "the backlog is split into several records");
    assert!(sizes.iter().all(|&size| size <= 10_000), "record sizes {sizes:?}");
}

#[test]
fn staggered_turns_count_from_each_group_and_do_not_add_up() {
    use competing_transformers::replica::{Racing, Stagger};
    let log = MemoryLog::new();
    let mut config = ReplicaConfig::new("second");
    config.racing = Racing::Staggered(Stagger { rank: 1, delay_ms: 5 });
    let mut core = ReplicaCore::new(Echo, config, 0);
    for (at, payload) in [(100, b"a"), (101, b"b"), (102, b"c")] {
        publish(&log, payload);
        let records = log.records_from(core.position());
        core.on_fetched(&records, core.position() + records.len() as u64);
        assert_eq!(core.poll_write(at), None);
    }
    // The first rank never writes: all three groups go out at their own turns.
    let first = core.poll_write(105).expect("a's turn");
    assert_eq!(first.record.events.len(), 2);
    let rest = core.poll_write(107).expect("b's and c's turns");
    assert_eq!(rest.record.events.len(), 4);
}
