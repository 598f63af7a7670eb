//! A transform for tests of the framework's own layers (drivers, supervision, operator
//! commands), so each test module does not write its own. Feature `testing`.

use crate::event::EventSourceKey;
use crate::transform::{Input, Outputs, Transform, TransformError};

/// Echoes each input of `in` once, as `text/plain` under its name; the payload `bad` is a
/// transform error (a `transform` dead letter) and `boom` a panic (a `panic` dead letter).
#[derive(Clone, Copy, Debug)]
pub struct Echo(pub &'static str);

impl Default for Echo {
    fn default() -> Self {
        Echo("echo")
    }
}

impl Transform for Echo {
    fn name(&self) -> &str {
        self.0
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![EventSourceKey::new("in").expect("a valid constant key")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        match input.payload {
            b"bad" => return Err(TransformError::Failed("bad input".into())),
            b"boom" => panic!("boom on {}", input.index),
            payload => out.emit("text/plain", payload.to_vec()),
        }
        Ok(())
    }
}
