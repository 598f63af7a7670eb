//! The driver's side of snapshots: resuming from the newest one that loads, and storing the
//! ones the core takes, one at a time, off the replica's loop.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::snapshot_store::{load_newest, SnapshotStoreError, Snapshots, Stored};
use competing_transformers::event::Offset;
use competing_transformers::replica::{ReplicaConfig, ReplicaCore};
use competing_transformers::snapshot::Snapshot;
use competing_transformers::transform::Transform;

/// A core resumed from the newest snapshot of `transform` that loads and restores, else a
/// core that starts from offset 0. Either catches up to `end` before writing.
pub(super) async fn resume_or_start<T: Transform>(
    snapshots: Option<&dyn Snapshots>,
    transform: T,
    config: ReplicaConfig,
    end: Offset,
) -> ReplicaCore<T> {
    let replica = config.replica_id.clone();
    let Some(store) = snapshots.filter(|_| config.snapshot_every_inputs.is_some()) else {
        tracing::info!(replica, log_end = end, "replica starting: catching up from offset 0");
        return ReplicaCore::new(transform, config, end);
    };
    let name = transform.name().to_string();
    // The transform goes into each restore tried and comes back from a refused one.
    let mut transform = Some(transform);
    let restore = |snapshot: Snapshot| {
        let tried = transform.take().expect("given back by every refusal");
        ReplicaCore::restore(tried, config.clone(), &snapshot, end).map(|core| (core, snapshot)).map_err(
            |(back, error)| {
                transform = Some(back);
                error.to_string()
            },
        )
    };
    match load_newest(store, &name, restore).await {
        Ok(Some((core, snapshot))) => {
            let position = snapshot.position;
            tracing::info!(
                replica,
                position,
                inputs = snapshot.inputs,
                log_end = end,
                "replica starting from a snapshot: catching up from offset {position}"
            );
            return core;
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(replica, %error, "cannot read the snapshot index"),
    }
    let transform = transform.expect("given back by every refusal");
    tracing::info!(replica, log_end = end, "replica starting: no snapshot to resume from; catching up from offset 0");
    ReplicaCore::new(transform, config, end)
}

/// Stores the core's snapshots, one at a time: while one is being stored the core keeps
/// the newest few, so a slow store never holds the replica back.
pub(super) struct Keeper {
    store: Option<Arc<dyn Snapshots>>,
    writer: String,
    storing: Option<JoinHandle<(Offset, Result<Stored, SnapshotStoreError>)>>,
    /// The newest snapshot stored: its position and when, in ms since the Unix epoch.
    last_stored: Option<(Offset, u64)>,
}

impl Keeper {
    pub(super) fn new(store: Option<Arc<dyn Snapshots>>, writer: String) -> Self {
        Self { store, writer, storing: None, last_stored: None }
    }

    /// Starts storing the core's next snapshot, if none is being stored.
    pub(super) fn store_next<T: Transform>(&mut self, core: &mut ReplicaCore<T>) {
        let Some(store) = &self.store else {
            while core.poll_snapshot().is_some() {}
            return;
        };
        if self.storing.is_some() {
            return;
        }
        if let Some(snapshot) = core.poll_snapshot() {
            let (store, writer) = (store.clone(), self.writer.clone());
            self.storing = Some(tokio::spawn(store_one(store, snapshot, writer)));
        }
    }

    /// The newest snapshot stored by this run: its position and when (ms since the epoch).
    pub(super) fn last_stored(&self) -> Option<(Offset, u64)> {
        self.last_stored
    }

    /// Whether a snapshot is being stored: then [`Keeper::stored`] has something to wait for.
    pub(super) fn is_storing(&self) -> bool {
        self.storing.is_some()
    }

    /// Waits for the snapshot being stored, and tells the core what the store holds at its
    /// position: a digest other than its own is a state divergence, which the core reports.
    pub(super) async fn stored<T: Transform>(&mut self, core: &mut ReplicaCore<T>) {
        let Some(storing) = self.storing.as_mut() else { return std::future::pending().await };
        let outcome = storing.await;
        self.storing = None;
        match outcome {
            Ok((position, Ok(stored))) => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
                self.last_stored = Some((position, now_ms));
                Self::check_digest(core, &self.writer, position, &stored);
            }
            Ok((position, Err(error))) => {
                tracing::warn!(replica = %self.writer, position, %error, "could not store a snapshot; the next one will be tried")
            }
            Err(error) => tracing::warn!(replica = %self.writer, %error, "the snapshot store task failed"),
        }
    }
}

impl Keeper {
    /// Tells the core what the store holds at `position`: a digest other than its own is a
    /// state divergence, which the core reports.
    fn check_digest<T: Transform>(core: &mut ReplicaCore<T>, writer: &str, position: Offset, stored: &Stored) {
        match stored.canonical.manifest.digest() {
            Some(digest) => core.on_snapshot_stored(position, digest),
            None => tracing::warn!(replica = %writer, position, "the stored snapshot's manifest has no valid digest"),
        }
    }
}

async fn store_one(
    store: Arc<dyn Snapshots>,
    snapshot: Snapshot,
    writer: String,
) -> (Offset, Result<Stored, SnapshotStoreError>) {
    let position = snapshot.position;
    (position, store.store(&snapshot, &writer).await)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::driver::{run_replica_with, ReplicaServices, ReplicaStatus};
    use crate::shutdown::ShutdownTrigger;
    use crate::snapshot_store::{MemoryIndex, SnapshotStore};
    use competing_transformers::replica::run_to_end;
    use competing_transformers::snapshot::{state_from_bytes, state_to_bytes};
    use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, TransformError};

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    /// Counts its inputs; each output says how many came before.
    #[derive(Default)]
    struct Count(u64);

    impl Transform for Count {
        fn name(&self) -> &str {
            "count"
        }
        fn version(&self) -> u32 {
            1
        }
        fn subscriptions(&self) -> Vec<EventSourceKey> {
            vec![key("in")]
        }
        fn apply(&mut self, _: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
            self.0 += 1;
            out.emit_json(&self.0);
            Ok(())
        }
        fn save_state(&self) -> Option<Vec<u8>> {
            Some(state_to_bytes(&self.0))
        }
        fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
            self.0 = state_from_bytes(state)?;
            Ok(())
        }
    }

    fn publish(log: &MemoryLog, count: u64) {
        for i in 0..count {
            log.publish(&key("in"), vec![Event::new(key("in"), None, None, i as i64, "text/plain", b"x".to_vec())]);
        }
    }

    /// Runs a replica `id` over `log` until `outputs` are canonical; its last status.
    async fn run_until(log: &Arc<MemoryLog>, store: &Arc<dyn Snapshots>, id: &str, outputs: usize) -> ReplicaStatus {
        let mut config = ReplicaConfig::new(id);
        config.snapshot_every_inputs = Some(10);
        let services = ReplicaServices { registry: None, snapshots: Some(store.clone()) };
        let trigger = ShutdownTrigger::new();
        let (status, _) = watch::channel(ReplicaStatus::default());
        let task = tokio::spawn(run_replica_with(
            log.clone(),
            Count::default(),
            config,
            services,
            trigger.subscribe(),
            status,
        ));
        while log.canonical(&key("count")).len() < outputs {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the last snapshot reach the store.
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.request();
        task.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_replica_resumes_from_the_newest_stored_snapshot_and_writes_what_a_replay_would() {
        let log = Arc::new(MemoryLog::new());
        let store: Arc<dyn Snapshots> =
            Arc::new(SnapshotStore::new(Arc::new(MemoryLog::new()), MemoryIndex::default()));
        publish(&log, 45);
        let first = run_until(&log, &store, "first", 45).await;
        assert_eq!(first.stats.inputs_processed, 45);
        assert_eq!(store.manifests("count").await.unwrap()[0].manifest.inputs, 40, "the newest first");

        publish(&log, 30);
        let second = run_until(&log, &store, "second", 75).await;
        assert_eq!(second.stats.inputs_processed, 35, "inputs 40.. only: the snapshot holds the rest");

        let reference = MemoryLog::new();
        publish(&reference, 75);
        run_to_end(&reference, Count::default());
        let payloads =
            |log: &MemoryLog| log.canonical(&key("count")).into_iter().map(|e| e.payload).collect::<Vec<_>>();
        assert_eq!(payloads(&log), payloads(&reference));
    }
}
