//! Drives the competing-transformers core on Kafka, with tokio.
//!
//! The core crate decides; this crate does the I/O (like quinn around quinn-proto):
//! - [`log`]: the [`EventLog`] a replica reads and appends to, with its backends (the core's
//!   `MemoryLog`, and [`KafkaLog`] in record-group or transactional mode) and [`Pipeline`],
//!   the log's API (`write`, `exists_or_write`, `stream_events`) over any backend.
//! - [`client`]: what every Kafka client shares: properties, and how errors are sorted.
//! - [`error`]: [`LogError`], the log's errors.
//! - [`admin`]: creates and checks the log's topic and its snapshot topics.
//! - [`export`]: canonical events to a plain topic, exactly once.
//! - [`schema_registry`]: the schema registry client.
//! - [`driver`]: runs a replica's core over a log: fetch, apply, write, retry, shut down.
//! - [`snapshot_store`]: snapshots chunked on a topic beside the log, found through a
//!   compacted index.
//! - [`shutdown`]: the stop signal every long-running task takes.
//! - [`backoff`]: the one retry schedule, exponential with jitter.
//!
//! Only this crate imports rdkafka or talks to a registry.

pub mod admin;
pub mod backoff;
pub mod client;
#[allow(clippy::disallowed_methods)] // the driver feeds the core its time
pub mod driver;
pub mod error;
pub mod export;
pub mod log;
pub mod schema_decisions;
pub mod schema_registry;
pub mod shutdown;
pub mod snapshot_store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backoff::Backoff;
pub use client::{KafkaLogConfig, WriteMode};
pub use driver::{
    run_replica, run_replica_with, run_replica_with_registry, ReplicaError, ReplicaServices, ReplicaStatus,
};
pub use error::LogError;
pub use log::{
    CanonicalEvent, Delivery, EventLog, EventStream, KafkaLog, KnownCount, LogCursor, Pipeline, Resume, WriteOutcome,
};
pub use shutdown::{Shutdown, ShutdownTrigger};
