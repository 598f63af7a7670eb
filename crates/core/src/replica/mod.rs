//! A replica of a transform: the pure decision core, and the local driver that runs it over
//! a [`crate::MemoryLog`]. The tokio driver over Kafka is in `competing-transformers-kafka`.

pub mod core;
pub mod local;
pub mod racing;

pub use self::core::{Divergence, DivergenceKind, Phase, ReplicaConfig, ReplicaCore, ReplicaStats, WriteRequest};
pub use local::{drive, run_to_end};
pub use racing::{Adaptive, Racing, Stagger};
