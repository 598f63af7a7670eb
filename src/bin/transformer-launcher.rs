//! `transformer-launcher`: the launcher's CLI with the bundled DETs registered.
//!
//! Built by the `bundled-transformers` crate (`transformers/bundled`): the framework crate
//! cannot depend on the DETs built on it. A binary of your own gets the same CLI for its own
//! DETs with these same few lines.

use std::process::ExitCode;

use competing_transformers::launcher::{self, Registry};
use enricher::Enricher;
use ledger::Ledger;
use matching_engine::MatchingEngine;

fn main() -> ExitCode {
    launcher::main_with(
        Registry::new()
            .with("matching-engine", MatchingEngine::new)
            .with("enricher", Enricher::new)
            .with("ledger", Ledger::new),
    )
}
