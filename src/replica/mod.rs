//! A replica of a transform: the pure decision core and the driver that runs it.

pub mod core;
#[allow(clippy::disallowed_methods)] // the driver feeds the core its time
pub mod driver;
pub mod local;

pub use self::core::{Divergence, Phase, ReplicaConfig, ReplicaCore, ReplicaStats, Stagger, WriteRequest};
pub use driver::{run_replica, run_replica_with_registry, ReplicaError, ReplicaStatus};
pub use local::{drive, run_to_end};
