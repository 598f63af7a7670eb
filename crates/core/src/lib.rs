//! Competing transformers: racing replicas of deterministic event transforms over one
//! totally ordered log.
//!
//! This crate is what a DET author depends on: the vocabulary, the bytes on the log, the rule
//! every reader applies, the transform contract and a replica's decisions, all pure. It does
//! no I/O, reads no clock and starts no runtime; `competing-transformers-kafka` drives it on
//! Kafka, `competing-transformers-launcher` runs it as a service. Layout (see
//! `docs/ARCHITECTURE.md`):
//! - [`event`]: event-source keys, events, digests.
//! - [`record`]: the record codec, the only definition of bytes on the log.
//! - [`canonical`]: the canonical rule that emulates `exists_or_write`.
//! - [`signature`]: protected keys and signed records (authenticated writers).
//! - [`shard`]: pipelines, and the shard function that picks an event's pipeline.
//! - [`transform`]: the contract a DET author implements.
//! - [`codec`]: payload codecs (JSON, Avro in the Confluent wire format).
//! - [`dead_letter`]: what a failed input becomes.
//! - [`replica`]: a replica's decisions as a sans-I/O state machine, and the local driver.
//! - [`memory`]: the in-memory log, the reference every backend matches and DET tests use.
//! - [`panic`]: a panic's payload as text.

pub mod canonical;
pub mod codec;
pub mod dead_letter;
pub mod event;
pub mod memory;
pub mod panic;
pub mod record;
pub mod replica;
pub mod shard;
pub mod signature;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transform;

/// The README's examples compile and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

pub use canonical::{CanonicalRule, Verdict};
pub use event::{Digest, Event, EventSourceKey, Offset};
pub use memory::MemoryLog;
pub use record::Record;
pub use transform::{Input, Outputs, Transform, TransformError};
