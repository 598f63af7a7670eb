//! Dead letters: what a replica writes instead of outputs when an input fails.
//!
//! A dead letter is an event on the transform's own dead-letter key (`<name>.dead-letters`),
//! so it is numbered, raced and deduplicated exactly like an output. Its payload is the same
//! on every replica: no wall clock, no replica id.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::event::Offset;
use crate::transform::{Input, TransformError};

/// The Avro schema of a dead letter (`schemas/dead-letter.avsc`), the same shape as its JSON
/// payload, for Kafka-native tools that export dead letters as Avro.
#[cfg(feature = "avro")]
pub const DEAD_LETTER_SCHEMA: &str = include_str!("../../../schemas/dead-letter.avsc");

/// Content type of dead-letter payloads.
pub const CONTENT_TYPE_DEAD_LETTER: &str = "application/vnd.competing-transformers.dead-letter+json";

/// Why an input was dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The payload could not be decoded.
    Decode,
    /// The payload failed schema validation.
    Schema,
    /// The transform returned an error.
    Transform,
    /// The transform panicked.
    Panic,
    /// The outputs for one input were larger than a record may be.
    OutputTooLarge,
}

impl Reason {
    /// How an operator reads the reason in a sentence.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Decode => "it could not be decoded",
            Reason::Schema => "it failed schema validation",
            Reason::Transform => "the transform returned an error",
            Reason::Panic => "the transform panicked",
            Reason::OutputTooLarge => "its outputs were too large for one record",
        }
    }
}

/// The failed input, untouched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedInput {
    /// Its event-source key.
    pub key: String,
    /// Its canonical index.
    pub index: u64,
    /// Where its record sits in the log.
    pub offset: Offset,
    /// Its business time.
    pub effective_time_ms: i64,
    /// Its content type.
    pub content_type: String,
    /// Its payload, base64 (standard alphabet, padded).
    pub payload_base64: String,
}

/// A dead letter's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The transform that failed.
    pub transformer: String,
    /// Its version.
    pub version: u32,
    /// Why.
    pub reason: Reason,
    /// The error message.
    pub message: String,
    /// The input it failed on.
    pub input: FailedInput,
}

impl DeadLetter {
    /// Builds the dead letter for `input`.
    pub fn new(transformer: &str, version: u32, reason: Reason, message: String, input: &Input<'_>) -> Self {
        Self {
            transformer: transformer.to_string(),
            version,
            reason,
            message,
            input: FailedInput {
                key: input.key.to_string(),
                index: input.index,
                offset: input.offset,
                effective_time_ms: input.effective_time_ms,
                content_type: input.content_type.to_string(),
                payload_base64: base64::engine::general_purpose::STANDARD.encode(input.payload),
            },
        }
    }

    /// The reason a transform error stands for.
    pub fn reason_of(error: &TransformError) -> Reason {
        match error {
            TransformError::Decode(_) => Reason::Decode,
            TransformError::Schema(_) => Reason::Schema,
            _ => Reason::Transform,
        }
    }

    /// The original payload.
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.input.payload_base64)
    }

    /// The payload bytes written to the log.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter always serializes")
    }

    /// One sentence for an operator.
    pub fn describe(&self) -> String {
        format!(
            "at offset {}, transformer {} v{} failed on event {} of `{}` because {}: {}",
            self.input.offset,
            self.transformer,
            self.version,
            self.input.index,
            self.input.key,
            self.reason.describe(),
            self.message
        )
    }
}

#[cfg(all(test, feature = "avro"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::codec::{self, AvroOutput, SchemaCache};
    use crate::event::{Digest, EventSourceKey};

    #[test]
    fn a_dead_letter_fits_its_avro_schema_and_reads_back_the_same() {
        let key = EventSourceKey::new("orders").unwrap();
        let input = Input {
            key: &key,
            index: 17,
            offset: 428,
            effective_time_ms: 1_700_000_000_000,
            content_type: codec::CONTENT_TYPE_AVRO,
            payload: &[0, 0, 0, 0, 9, 1],
            digest: Digest([0; 32]),
            schemas: &codec::NO_SCHEMAS,
        };
        let letter = DeadLetter::new("enricher", 1, Reason::Schema, "field `amount` missing".into(), &input);
        let output = AvroOutput { schema_id: 5, schema: Arc::new(codec::parse_schema(DEAD_LETTER_SCHEMA).unwrap()) };
        let payload = codec::encode_avro(&letter, &output).unwrap();
        let mut schemas = SchemaCache::new();
        schemas.insert(5, output.schema.clone());
        let back: DeadLetter = codec::decode(codec::CONTENT_TYPE_AVRO, &payload, &schemas, None).unwrap();
        assert_eq!(back, letter);
    }
}
