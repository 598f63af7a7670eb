//! Dead letters: what a replica writes instead of outputs when an input fails.
//!
//! A dead letter is an event on the transform's own dead-letter key (`<name>.dead-letters`),
//! so it is numbered, raced and deduplicated exactly like an output. Its payload is the same
//! on every replica: no wall clock, no replica id.
//!
//! A dead letter always fits in one record ([`GROUP_BYTES_MAX`]): it copies at most
//! [`PAYLOAD_KEPT_BYTES_MAX`] bytes of the input's payload (a longer payload keeps that
//! prefix, its size and its SHA-256) and at most [`MESSAGE_BYTES_MAX`] bytes of the error
//! message. Both cuts depend on the input and the DET alone, so replicas still agree.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::event::{Digest, Offset};
use crate::transform::{Input, TransformError, GROUP_BYTES_MAX};

/// The Avro schema of a dead letter (`schemas/dead-letter.avsc`), the same shape as its JSON
/// payload, for Kafka-native tools that export dead letters as Avro.
#[cfg(feature = "avro")]
pub const DEAD_LETTER_SCHEMA: &str = include_str!("../../../schemas/dead-letter.avsc");

/// Content type of dead-letter payloads.
pub const CONTENT_TYPE_DEAD_LETTER: &str = "application/vnd.competing-transformers.dead-letter+json";

/// Longest error message a dead letter keeps, in bytes; a longer one is cut at a character
/// boundary and ends with [`MESSAGE_CUT_MARK`].
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024;
/// What ends a message cut to [`MESSAGE_BYTES_MAX`].
pub const MESSAGE_CUT_MARK: &str = " [cut]";
/// Room a dead letter's event keeps for everything but its copy of the payload: its
/// framing in the record, the names (255 bytes each), the input's content type and the
/// message (each escaped in JSON: up to 6 bytes a byte), the numbers and the digest.
const ENVELOPE_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of the input's payload a dead letter copies (base64 writes 4 bytes for every
/// 3): what [`GROUP_BYTES_MAX`] leaves after the envelope. A longer payload keeps this prefix
/// with its size and SHA-256, and its dead letter says `payload_truncated`.
pub const PAYLOAD_KEPT_BYTES_MAX: usize = (GROUP_BYTES_MAX - ENVELOPE_BYTES_MAX) / 4 * 3;

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
    /// The outputs for one input cannot be written (a content type over 255 bytes).
    InvalidOutput,
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
            Reason::InvalidOutput => "its outputs could not be written",
        }
    }
}

/// The failed input: untouched, or with only a prefix of its payload when the whole would
/// not fit in a record.
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
    /// Its payload, base64 (standard alphabet, padded): all of it, or its first
    /// [`PAYLOAD_KEPT_BYTES_MAX`] bytes when `payload_truncated`.
    pub payload_base64: String,
    /// Whether `payload_base64` holds only a prefix of the payload. Absent (false) in dead
    /// letters that hold it whole, so their bytes are what earlier versions wrote.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// The whole payload's size in bytes, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// The whole payload's SHA-256 (lowercase hex), when truncated: what finds the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
}

impl FailedInput {
    /// The failed `input`, its payload cut to [`PAYLOAD_KEPT_BYTES_MAX`] bytes if longer.
    fn of(input: &Input<'_>) -> Self {
        let payload = input.payload;
        let truncated = payload.len() > PAYLOAD_KEPT_BYTES_MAX;
        let kept = if truncated { &payload[..PAYLOAD_KEPT_BYTES_MAX] } else { payload };
        Self {
            key: input.key.to_string(),
            index: input.index,
            offset: input.offset,
            effective_time_ms: input.effective_time_ms,
            content_type: input.content_type.to_string(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(kept),
            payload_truncated: truncated,
            payload_bytes: truncated.then_some(payload.len() as u64),
            payload_sha256: truncated.then(|| Digest(Sha256::digest(payload).into()).to_string()),
        }
    }
}

/// Why a dead letter cannot give back the input's payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// `payload_base64` is not base64.
    #[error("{0}")]
    NotBase64(#[source] base64::DecodeError),
    /// The dead letter holds only a prefix of the payload.
    #[error("only the first {kept} of the input's {original} payload bytes are kept (SHA-256 {sha256})")]
    Truncated {
        /// Bytes kept.
        kept: usize,
        /// Bytes the payload had.
        original: u64,
        /// The whole payload's SHA-256, lowercase hex.
        sha256: String,
    },
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
    /// Builds the dead letter for `input`: its payload and `message` cut to what always fits
    /// in a record ([`PAYLOAD_KEPT_BYTES_MAX`], [`MESSAGE_BYTES_MAX`]).
    pub fn new(transformer: &str, version: u32, reason: Reason, message: String, input: &Input<'_>) -> Self {
        Self {
            transformer: transformer.to_string(),
            version,
            reason,
            message: cut_message(message),
            input: FailedInput::of(input),
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

    /// The original payload; an error when the dead letter holds only a prefix of it.
    pub fn payload(&self) -> Result<Vec<u8>, PayloadError> {
        let kept = self.kept_payload().map_err(PayloadError::NotBase64)?;
        if self.input.payload_truncated {
            return Err(PayloadError::Truncated {
                kept: kept.len(),
                original: self.input.payload_bytes.unwrap_or_default(),
                sha256: self.input.payload_sha256.clone().unwrap_or_default(),
            });
        }
        Ok(kept)
    }

    /// The payload bytes the dead letter holds: the whole payload, or its prefix when
    /// `payload_truncated`.
    pub fn kept_payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
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

/// `message`, cut to [`MESSAGE_BYTES_MAX`] bytes at a character boundary if longer.
fn cut_message(mut message: String) -> String {
    if message.len() > MESSAGE_BYTES_MAX {
        let mut end = MESSAGE_BYTES_MAX - MESSAGE_CUT_MARK.len();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(MESSAGE_CUT_MARK);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::event::{Event, EventSourceKey, CONTENT_TYPE_BYTES_MAX};
    use crate::record::encoded_event_len;

    fn input<'a>(key: &'a EventSourceKey, content_type: &'a str, payload: &'a [u8]) -> Input<'a> {
        Input {
            key,
            index: u64::MAX,
            offset: u64::MAX,
            effective_time_ms: i64::MIN,
            content_type,
            payload,
            digest: Digest([0; 32]),
            schemas: &codec::NO_SCHEMAS,
        }
    }

    #[test]
    fn a_small_input_is_kept_whole_and_its_dead_letter_reads_as_before() {
        let key = EventSourceKey::new("orders").unwrap();
        let letter = DeadLetter::new("engine", 1, Reason::Decode, "bad".into(), &input(&key, "text/plain", b"x"));
        assert_eq!(letter.payload().unwrap(), b"x");
        let json = String::from_utf8(letter.to_json()).unwrap();
        assert!(!json.contains("payload_truncated") && !json.contains("payload_bytes"), "{json}");
        // A dead letter written before the payload could be cut reads the same.
        let older = r#"{"transformer":"engine","version":1,"reason":"decode","message":"bad","input":{"key":"orders","index":18446744073709551615,"offset":18446744073709551615,"effective_time_ms":-9223372036854775808,"content_type":"text/plain","payload_base64":"eA=="}}"#;
        assert_eq!(json, older, "the bytes of a dead letter that fits are unchanged");
        assert_eq!(serde_json::from_str::<DeadLetter>(older).unwrap(), letter);
    }

    #[test]
    fn an_oversized_input_keeps_a_prefix_its_size_and_its_digest() {
        let key = EventSourceKey::new("orders").unwrap();
        let payload: Vec<u8> = (0..750_000u32).map(|i| (i % 251) as u8).collect();
        let letter = DeadLetter::new("engine", 1, Reason::Decode, "bad".into(), &input(&key, "text/plain", &payload));
        assert!(letter.input.payload_truncated);
        assert_eq!(letter.input.payload_bytes, Some(750_000));
        let sha256 = Digest(Sha256::digest(&payload).into()).to_string();
        assert_eq!(letter.input.payload_sha256.as_deref(), Some(sha256.as_str()));
        assert_eq!(letter.kept_payload().unwrap(), &payload[..PAYLOAD_KEPT_BYTES_MAX]);
        assert!(matches!(letter.payload(), Err(PayloadError::Truncated { original: 750_000, .. })));
        let back: DeadLetter = serde_json::from_slice(&letter.to_json()).unwrap();
        assert_eq!(back, letter);
    }

    #[test]
    fn the_largest_dead_letter_fits_in_a_group() {
        // Longest names, a content type and a message that JSON escapes 6 bytes for 1, a
        // payload as large as a record: the worst a dead letter can be.
        let name = "n".repeat(255 - ".dead-letters".len());
        let dead_letters = EventSourceKey::new(name.clone()).unwrap().dead_letters();
        let key = EventSourceKey::new("k".repeat(255)).unwrap();
        let content_type = "\u{1}".repeat(CONTENT_TYPE_BYTES_MAX);
        let payload = vec![0xff; 1 << 20];
        let message = "\u{1}".repeat(1 << 20);
        let letter =
            DeadLetter::new(&name, u32::MAX, Reason::OutputTooLarge, message, &input(&key, &content_type, &payload));
        assert!(letter.message.len() <= MESSAGE_BYTES_MAX && letter.message.ends_with(MESSAGE_CUT_MARK));
        let event =
            Event::new(dead_letters, Some(u64::MAX), Some(u64::MAX), 0, CONTENT_TYPE_DEAD_LETTER, letter.to_json());
        assert!(encoded_event_len(&event) <= GROUP_BYTES_MAX, "{} bytes", encoded_event_len(&event));
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let cut = cut_message("é".repeat(MESSAGE_BYTES_MAX));
        assert!(cut.len() <= MESSAGE_BYTES_MAX && cut.ends_with(MESSAGE_CUT_MARK));
        assert!(cut.trim_end_matches(MESSAGE_CUT_MARK).chars().all(|c| c == 'é'));
        assert_eq!(cut_message("short".into()), "short");
    }
}

#[cfg(all(test, feature = "avro"))]
mod avro_tests {
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
        let whole = DeadLetter::new("enricher", 1, Reason::Schema, "field `amount` missing".into(), &input);
        let large = vec![7; PAYLOAD_KEPT_BYTES_MAX + 1];
        let truncated =
            DeadLetter::new("enricher", 1, Reason::InvalidOutput, "cut".into(), &Input { payload: &large, ..input });
        assert!(truncated.input.payload_truncated);
        let output = AvroOutput { schema_id: 5, schema: Arc::new(codec::parse_schema(DEAD_LETTER_SCHEMA).unwrap()) };
        let mut schemas = SchemaCache::new();
        schemas.insert(5, output.schema.clone());
        for letter in [whole, truncated] {
            let payload = codec::encode_avro(&letter, &output).unwrap();
            let back: DeadLetter = codec::decode(codec::CONTENT_TYPE_AVRO, &payload, &schemas, None).unwrap();
            assert_eq!(back, letter);
        }
    }
}
