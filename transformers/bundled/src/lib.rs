//! The bundled DETs, registered for the `transformer-launcher` binary, and the guided demo.

pub mod demo;

use competing_transformers_launcher::Registry;
use enricher::Enricher;
use ledger::Ledger;
use matching_engine::MatchingEngine;

/// The transforms `transformer-launcher` can run, by name.
pub fn registry() -> Registry {
    Registry::new()
        .with("matching-engine", MatchingEngine::new)
        .with("enricher", Enricher::new)
        .with("ledger", Ledger::new)
}
