//! Snapshots on the in-memory log: a replica restored from a snapshot and fed the rest of
//! the log writes what one that replayed from the start writes; replicas take identical
//! snapshots at the same inputs; a state that differs is a state divergence.

use competing_transformers::replica::{drive, run_to_end, DivergenceKind, Phase, ReplicaConfig, ReplicaCore};
use competing_transformers::snapshot::{state_from_bytes, state_to_bytes, Snapshot};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, Transform, TransformError};

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// A stateful DET: a running sum per key, each output carrying the sum so far; fails on 13.
#[derive(Default)]
struct Sum {
    sums: std::collections::BTreeMap<String, i64>,
    /// Saved with the state when set: a state that differs between replicas.
    salt: Option<String>,
}

impl Transform for Sum {
    fn name(&self) -> &str {
        "sum"
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("numbers")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let n: i64 = input.json()?;
        if n == 13 {
            return Err(TransformError::Failed("13 is unlucky".into()));
        }
        let sum = self.sums.entry(format!("k{}", n % 3)).or_default();
        *sum += n;
        out.emit_json(&serde_json::json!({ "sum": *sum, "input": input.index }));
        Ok(())
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(state_to_bytes(&(&self.sums, &self.salt)))
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        (self.sums, self.salt) = state_from_bytes(state)?;
        Ok(())
    }
}

fn publish(log: &MemoryLog, from: i64, to: i64) {
    for n in from..to {
        log.publish(
            &key("numbers"),
            vec![Event::new(key("numbers"), None, None, n, "application/json", n.to_string().into_bytes())],
        );
    }
}

fn config(id: &str) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(id);
    config.snapshot_every_inputs = Some(10);
    config
}

/// Drives a fresh replica over `log`, collecting every snapshot it takes.
fn run_collecting(log: &MemoryLog, transform: Sum, id: &str) -> (ReplicaCore<Sum>, Vec<Snapshot>) {
    let mut core = ReplicaCore::new(transform, config(id), 0);
    let mut taken = Vec::new();
    loop {
        drive(&mut core, log);
        let before = taken.len();
        taken.extend(std::iter::from_fn(|| core.poll_snapshot()));
        if taken.len() == before {
            return (core, taken);
        }
    }
}

fn payloads(log: &MemoryLog, stream: &EventSourceKey) -> Vec<Vec<u8>> {
    log.canonical(stream).into_iter().map(|e| e.payload).collect()
}

#[test]
fn a_replica_restored_from_a_snapshot_writes_what_a_replay_from_the_start_writes() {
    // The reference: one replica over all 100 inputs from offset 0.
    let reference = MemoryLog::new();
    publish(&reference, 0, 100);
    run_to_end(&reference, Sum::default());

    // The same inputs, a replica that saw half of them, and a snapshot it took.
    let log = MemoryLog::new();
    publish(&log, 0, 50);
    let (_, taken) = run_collecting(&log, Sum::default(), "first");
    // The driver took none while the replica ran: it keeps the newest four.
    assert_eq!(taken.iter().map(|s| s.inputs).collect::<Vec<_>>(), [20, 30, 40, 50]);
    publish(&log, 50, 100);
    let snapshot = Snapshot::decode(&taken[2].encode(), Some(Snapshot::digest_of(&taken[2].encode()))).unwrap();
    let mut restored = ReplicaCore::restore(Sum::default(), config("restored"), &snapshot, log.end()).ok().unwrap();
    assert!(matches!(restored.phase(), Phase::CatchingUp { .. }));
    drive(&mut restored, &log);
    assert!(restored.divergence().is_none(), "{:?}", restored.divergence());
    assert_eq!(restored.stats().inputs_processed, 60, "inputs 40.. only: the snapshot holds the rest");
    assert_eq!(payloads(&log, &key("sum")), payloads(&reference, &key("sum")));
    assert_eq!(payloads(&log, &key("sum.dead-letters")), payloads(&reference, &key("sum.dead-letters")));
}

#[test]
fn a_snapshot_holding_groups_not_yet_canonical_writes_them_after_a_restore() {
    // A replica computed the groups of inputs 0..10 and died before any landed.
    let log = MemoryLog::new();
    publish(&log, 0, 10);
    let mut first = ReplicaCore::new(Sum::default(), config("first"), log.end());
    let records = log.records();
    first.on_fetched(&records, log.end());
    let snapshot = first.poll_snapshot().expect("a snapshot after 10 inputs");
    assert_eq!(snapshot.pending.len(), 10, "all ten groups are in it, none canonical yet");
    let mut restored = ReplicaCore::restore(Sum::default(), config("restored"), &snapshot, log.end()).ok().unwrap();
    drive(&mut restored, &log);
    let reference = MemoryLog::new();
    publish(&reference, 0, 10);
    run_to_end(&reference, Sum::default());
    assert_eq!(payloads(&log, &key("sum")), payloads(&reference, &key("sum")));
}

#[test]
fn replicas_take_identical_snapshots_and_a_different_state_is_a_state_divergence() {
    let log = MemoryLog::new();
    publish(&log, 0, 30);
    let (_, first) = run_collecting(&log, Sum::default(), "a");
    let (mut second, again) = run_collecting(&log, Sum::default(), "b");
    assert_eq!(first.iter().map(|s| s.inputs).collect::<Vec<_>>(), [10, 20, 30]);
    assert_eq!(
        first.iter().map(Snapshot::encode).collect::<Vec<_>>(),
        again.iter().map(Snapshot::encode).collect::<Vec<_>>()
    );
    // The stored one is the first's: the same digest changes nothing.
    for snapshot in &first {
        second.on_snapshot_stored(snapshot.position, Snapshot::digest_of(&snapshot.encode()));
    }
    assert!(second.divergence().is_none());

    let (mut salted, _) = run_collecting(&log, Sum { salt: Some("host-b".into()), ..Sum::default() }, "c");
    let stored = &first[1];
    salted.on_snapshot_stored(stored.position, Snapshot::digest_of(&stored.encode()));
    let divergence = salted.divergence().expect("a state divergence");
    assert_eq!(
        (divergence.kind, divergence.canonical_offset, divergence.index),
        (DivergenceKind::State, stored.position, 20)
    );
    assert_eq!(salted.phase(), Phase::Diverged);
    assert!(divergence.to_string().contains("not a function of the inputs applied"), "{divergence}");
}

#[test]
fn a_snapshot_of_another_det_or_build_is_refused_with_why() {
    let log = MemoryLog::new();
    publish(&log, 0, 10);
    let (_, taken) = run_collecting(&log, Sum::default(), "a");
    let mut foreign = taken[0].clone();
    foreign.transformer = "other".into();
    let (_, error) = ReplicaCore::restore(Sum::default(), config("r"), &foreign, 0).err().expect("refused");
    assert!(error.to_string().contains("of `other`, not of `sum`"), "{error}");
    let mut resubscribed = taken[0].clone();
    resubscribed.input_counts[0].0 = "letters".into();
    assert!(ReplicaCore::restore(Sum::default(), config("r"), &resubscribed, 0).is_err());
}
