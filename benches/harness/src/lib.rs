//! What the benchmark's replica processes run: the identity DET.
//!
//! The orchestrator (`bench`, `src/main.rs`) and the launcher binary (`bench-launcher`)
//! share it.

use competing_transformers::{EventSourceKey, Input, Outputs, Transform, TransformError};

/// The identity DET's name: its output stream.
pub const IDENTITY: &str = "identity";
/// The stream the identity DET reads.
pub const IDENTITY_INPUT: &str = "inputs";

/// Copies every input event to its output stream unchanged: the cheapest possible DET, so
/// what is measured is the framework.
#[derive(Default)]
pub struct Identity;

impl Transform for Identity {
    fn name(&self) -> &str {
        IDENTITY
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![EventSourceKey::new(IDENTITY_INPUT).expect("a valid constant key")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        out.emit(input.content_type, input.payload.to_vec());
        Ok(())
    }
    // Stateless: an empty state, so that its replicas resume from snapshots too.
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(format!("the identity DET has no state, and was given {} bytes", state.len()))
        }
    }
}
