//! `bench-launcher`: the framework's launcher CLI with the benchmark's DETs registered
//! (`identity` and `matching-engine`). The harness runs replicas as
//! `bench-launcher run --config … --replica-id … --replicas 1`, one process each.

use std::process::ExitCode;

use bench_harness::{Identity, IDENTITY};
use competing_transformers_launcher::{self as launcher, Registry};
use matching_engine::MatchingEngine;

fn main() -> ExitCode {
    launcher::main_with(Registry::new().with(IDENTITY, Identity::default).with("matching-engine", MatchingEngine::new))
}
