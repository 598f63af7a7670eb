//! Competing transformers: racing replicas of deterministic event transforms over one
//! totally ordered Kafka partition.
//!
//! Layout (see `docs/ARCHITECTURE.md`):
//! - [`event`]: event-source keys, events, digests.
//! - [`record`]: the record codec, the only definition of bytes on the log.
//! - [`canonical`]: the canonical rule that emulates `exists_or_write` (pure).
//! - [`log`]: the [`log::EventLog`] backends (memory, Kafka) and the [`log::Pipeline`] API.
//! - [`transform`]: the contract a DET author implements.
//! - [`replica`]: a replica's decisions (pure core) and the driver that runs them.
//! - [`dead_letter`]: what a failed input becomes.
//! - [`codec`]: payload codecs (JSON, Avro in the Confluent wire format), pure.
//! - [`schema_registry`]: the schema registry client: writer schemas by id, registration.

pub mod canonical;
pub mod codec;
pub mod dead_letter;
pub mod event;
#[allow(clippy::disallowed_methods)] // the operator CLI: clocks for logs, demo and publish
pub mod launcher;
pub mod log;
pub mod record;
pub mod replica;
pub mod schema_registry;
pub mod transform;

/// The README's examples compile and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

pub use canonical::{CanonicalRule, Verdict};
pub use event::{Digest, Event, EventSourceKey, Offset};
pub use log::{EventLog, KafkaLog, KafkaLogConfig, LogError, MemoryLog, Pipeline, WriteOutcome};
pub use record::Record;
pub use transform::{Input, Outputs, Transform, TransformError};
