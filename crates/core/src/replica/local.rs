//! Runs one replica synchronously over a [`MemoryLog`]: the test driver for DET authors,
//! and the single-process reference the simulator compares racing replicas with.

use super::core::{ReplicaConfig, ReplicaCore};
use crate::memory::MemoryLog;
use crate::transform::Transform;

/// Runs a fresh replica of `transform` over everything in `log`, appending its outputs and
/// dead letters to `log`, until everything it computed is canonical. Returns the replica,
/// for its stats and the transform's state.
pub fn run_to_end<T: Transform>(log: &MemoryLog, transform: T) -> ReplicaCore<T> {
    let mut core = ReplicaCore::new(transform, ReplicaConfig::new("local"), 0);
    drive(&mut core, log);
    assert!(core.is_settled() || core.divergence().is_some(), "a lone replica over a memory log always settles");
    core
}

/// Feeds `core` everything in `log` it has not read, appending each record it writes at
/// once, until there is nothing left to read or write.
pub fn drive<T: Transform>(core: &mut ReplicaCore<T>, log: &MemoryLog) {
    loop {
        let records = log.records_from(core.position());
        let position = core.position() + records.len() as u64;
        core.on_fetched(&records, position);
        let mut wrote = false;
        while let Some(write) = core.poll_write(0) {
            let outcome = log.append_now(&write.record).map_err(|_| ());
            core.on_delivery(write.write_id, outcome);
            wrote = true;
        }
        if !wrote && records.is_empty() {
            return;
        }
    }
}
