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
/// once, until there is nothing left to read or write. Time is the core's own: when there is
/// nothing to do now, it jumps to the core's next deadline (a held group's turn, the end of
/// a pause after a failed delivery) instead of waiting for it.
///
/// # Panics
///
/// If the core hands out a record that cannot be encoded (an invalid replica id): no retry
/// could ever write it.
pub fn drive<T: Transform>(core: &mut ReplicaCore<T>, log: &MemoryLog) {
    let mut now_ms = 0;
    loop {
        let records = log.records_from(core.position());
        let position = core.position() + records.len() as u64;
        core.on_fetched(&records, position);
        let mut wrote = false;
        while let Some(write) = core.poll_write(now_ms) {
            let offset = log.append_now_with_details(&write.record, &write.details).unwrap_or_else(|error| {
                panic!("replica `{}` wrote a record that can never be written: {error}", core.replica_id())
            });
            core.on_delivery(write.write_id, Ok(offset));
            wrote = true;
        }
        if !wrote && records.is_empty() {
            match core.poll_timeout_ms() {
                Some(at) if at > now_ms => {
                    now_ms = at;
                    core.on_timeout(now_ms);
                }
                _ => return,
            }
        }
    }
}
