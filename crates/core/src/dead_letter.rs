//! Dead letters: what a replica writes instead of outputs when an input fails.
//!
//! A dead letter is an event on the transform's own dead-letter key (`<name>.dead-letters`),
//! so it is numbered, raced and deduplicated exactly like an output. Its payload is a function
//! of the input and the DET alone: no wall clock, no replica id, no DET version, no text of a
//! library (serde_json, apache-avro), a panic or a registry. That text, and the version that
//! computed the dead letter, is its [`Detail`]: an advisory Kafka header of the record that
//! holds it ([`crate::record::headers::DEAD_LETTER_DETAIL`]), never digested, which racing
//! copies may carry differently.
//!
//! A dead letter always fits in one record ([`GROUP_BYTES_MAX`]): it copies at most
//! [`PAYLOAD_KEPT_BYTES_MAX`] bytes of the input's payload (a longer payload keeps that
//! prefix, its size and its SHA-256) and at most [`MESSAGE_BYTES_MAX`] bytes of the error
//! message. Both cuts depend on the input and the DET alone, so replicas still agree.

use std::any::Any;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::codec::CodecError;
use crate::event::{Digest, Event, EventSourceKey, Offset};
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
    /// Its version: written by builds before dead letters became a function of the input and
    /// the DET alone, absent since (the version is in the [`Detail`] now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Why.
    pub reason: Reason,
    /// The error message: the DET's own words, or a fixed sentence from stable facts (see
    /// [`Failure`]).
    pub message: String,
    /// The input it failed on.
    pub input: FailedInput,
}

impl DeadLetter {
    /// Builds the dead letter for `input`: its payload and `message` cut to what always fits
    /// in a record ([`PAYLOAD_KEPT_BYTES_MAX`], [`MESSAGE_BYTES_MAX`]).
    pub fn new(transformer: &str, reason: Reason, message: String, input: &Input<'_>) -> Self {
        Self {
            transformer: transformer.to_string(),
            version: None,
            reason,
            message: cut_message(message),
            input: FailedInput::of(input),
        }
    }

    /// The reason a transform error stands for.
    pub fn reason_of(error: &TransformError) -> Reason {
        match error {
            TransformError::Decode(_) | TransformError::Codec(CodecError::Decode { .. }) => Reason::Decode,
            TransformError::Schema(_) | TransformError::Codec(CodecError::Schema { .. }) => Reason::Schema,
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
            "at offset {}, transformer {}{} failed on event {} of `{}` because {}: {}",
            self.input.offset,
            self.transformer,
            self.version.map(|v| format!(" v{v}")).unwrap_or_default(),
            self.input.index,
            self.input.key,
            self.reason.describe(),
            self.message
        )
    }
}

/// The message of a `panic` dead letter: the panic's own text goes to its [`Detail`].
pub const PANIC_MESSAGE: &str = "the transform panicked";

/// Why an input failed, split as the log needs it: `reason` and `message`, which the dead
/// letter digests, depend on the input and the DET alone; `error`, the text of a library, a
/// panic or a registry, goes to the [`Detail`] outside the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The stable reason code.
    pub reason: Reason,
    /// The DET's own words, or a fixed sentence from stable facts.
    pub message: String,
    /// The library's error (with its sources), the panic's text or the registry's reply.
    pub error: Option<String>,
}

impl Failure {
    /// A failure the framework states in its own words alone (`output_too_large`,
    /// `invalid_output`).
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), error: None }
    }

    /// The failure a transform returned. Its own text (`Decode`, `Schema`, `Failed`) is its
    /// output and stays in the message; a codec error keeps its stable sentence there, and
    /// the library's text is the `error`.
    pub fn of_error(error: &TransformError) -> Self {
        let library = match error {
            TransformError::Codec(codec) => codec.library().map(|library| error_chain(library)),
            _ => None,
        };
        Self { reason: DeadLetter::reason_of(error), message: error.detail().to_string(), error: library }
    }

    /// A panic of the transform: [`PANIC_MESSAGE`], its payload's text the `error`.
    pub fn of_panic(payload: &(dyn Any + Send)) -> Self {
        Self {
            reason: Reason::Panic,
            message: PANIC_MESSAGE.to_string(),
            error: Some(crate::panic::panic_message(payload)),
        }
    }
}

/// An error and its sources, `: `-separated; a source whose text its error already shows
/// (many libraries print their source in their own message) is not repeated.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Most bytes of one [`Detail`] header value; a longer `error` is cut at a character boundary
/// and ends with [`MESSAGE_CUT_MARK`].
pub const DETAIL_BYTES_MAX: usize = 8 * 1024;
/// Most bytes of [`Detail`] headers one record carries: details past it are left out (they
/// are advisory), so a record of many dead letters stays under the broker's limit.
pub const RECORD_DETAILS_BYTES_MAX: usize = 32 * 1024;

/// What a dead letter leaves outside its digest: the version of the DET that computed it and
/// the text of the library, panic or registry behind it. Carried as JSON in a
/// [`crate::record::headers::DEAD_LETTER_DETAIL`] header of the record that holds the dead
/// letter, one header per dead letter that has a detail; advisory: racing copies may differ,
/// and readers show the canonical copy's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The dead letter's index on the dead-letter key: which event of the record it is for.
    pub index: u64,
    /// The version of the DET that computed it.
    pub version: u32,
    /// The library's error, the panic's text or the registry's reply, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Detail {
    /// The header value: JSON of at most [`DETAIL_BYTES_MAX`] bytes, `error` cut to fit.
    pub fn to_header(&self) -> Vec<u8> {
        let mut detail = self.clone();
        loop {
            let json = serde_json::to_vec(&detail).expect("a detail always serializes");
            let Some(error) = detail.error.as_mut().filter(|_| json.len() > DETAIL_BYTES_MAX) else { return json };
            // JSON writes a byte of text as 1 to 6: cutting the excess from the text is enough.
            let keep = error.len().saturating_sub(json.len() - DETAIL_BYTES_MAX + MESSAGE_CUT_MARK.len());
            *error = cut_text(std::mem::take(error), keep);
        }
    }

    /// The detail in a header value, if it is one.
    pub fn parse(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }

    /// The detail for the dead letter at `index` among a record's detail header values.
    pub fn find(values: &[Vec<u8>], index: u64) -> Option<Self> {
        values.iter().filter_map(|value| Self::parse(value)).find(|detail| detail.index == index)
    }

    /// One phrase for an operator, beside the dead letter's sentence.
    pub fn describe(&self) -> String {
        match &self.error {
            Some(error) => format!("computed by v{}: {error}", self.version),
            None => format!("computed by v{}", self.version),
        }
    }
}

/// The details of the dead letters a replica computed and has not seen canonical yet, by
/// index, as header values: what its records carry beside them.
#[derive(Clone, Debug, Default)]
pub struct Details {
    by_index: BTreeMap<u64, Vec<u8>>,
}

impl Details {
    /// Keeps `detail` until its dead letter is canonical.
    pub fn insert(&mut self, detail: &Detail) {
        self.by_index.insert(detail.index, detail.to_header());
    }

    /// Forgets the details of indexes below `count`: canonical, never written again.
    pub fn forget_below(&mut self, count: u64) {
        self.by_index = self.by_index.split_off(&count);
    }

    /// The header values a record of `events` carries: the details of its events on
    /// `dead_letters` (the dead-letter key), in record order, at most
    /// [`RECORD_DETAILS_BYTES_MAX`] bytes together.
    pub fn for_events(&self, dead_letters: &EventSourceKey, events: &[Event]) -> Vec<Vec<u8>> {
        let mut bytes = 0;
        events
            .iter()
            .filter(|event| &event.key == dead_letters)
            .filter_map(|event| self.by_index.get(&event.index?))
            .take_while(|value| {
                bytes += value.len();
                bytes <= RECORD_DETAILS_BYTES_MAX
            })
            .cloned()
            .collect()
    }

    /// Details kept.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

/// `message`, cut to [`MESSAGE_BYTES_MAX`] bytes at a character boundary if longer.
fn cut_message(message: String) -> String {
    cut_text(message, MESSAGE_BYTES_MAX)
}

/// `text`, cut to `bytes_max` bytes at a character boundary ending with [`MESSAGE_CUT_MARK`]
/// if longer.
fn cut_text(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max.saturating_sub(MESSAGE_CUT_MARK.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(MESSAGE_CUT_MARK);
    }
    text
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
        let letter = DeadLetter::new("engine", Reason::Decode, "bad".into(), &input(&key, "text/plain", b"x"));
        assert_eq!(letter.payload().unwrap(), b"x");
        let json = String::from_utf8(letter.to_json()).unwrap();
        assert!(!json.contains("payload_truncated") && !json.contains("payload_bytes"), "{json}");
        let now = r#"{"transformer":"engine","reason":"decode","message":"bad","input":{"key":"orders","index":18446744073709551615,"offset":18446744073709551615,"effective_time_ms":-9223372036854775808,"content_type":"text/plain","payload_base64":"eA=="}}"#;
        assert_eq!(json, now, "no version: it is in the detail, outside the digest");
        // A dead letter written by an older build, with its version, still reads.
        let older = now.replace(r#""transformer":"engine","#, r#""transformer":"engine","version":1,"#);
        let read = serde_json::from_str::<DeadLetter>(&older).unwrap();
        assert_eq!(read, DeadLetter { version: Some(1), ..letter.clone() });
        assert!(read.describe().contains("transformer engine v1 failed"), "{}", read.describe());
        assert!(letter.describe().contains("transformer engine failed"), "{}", letter.describe());
    }

    #[test]
    fn an_oversized_input_keeps_a_prefix_its_size_and_its_digest() {
        let key = EventSourceKey::new("orders").unwrap();
        let payload: Vec<u8> = (0..750_000u32).map(|i| (i % 251) as u8).collect();
        let letter = DeadLetter::new("engine", Reason::Decode, "bad".into(), &input(&key, "text/plain", &payload));
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
        let letter = DeadLetter::new(&name, Reason::OutputTooLarge, message, &input(&key, &content_type, &payload));
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

    #[test]
    fn a_codec_failure_keeps_its_stable_sentence_and_the_library_text_goes_to_the_detail() {
        let serde_error = serde_json::from_slice::<serde_json::Value>(b"{nope").unwrap_err();
        let serde_text = serde_error.to_string();
        let failure = Failure::of_error(&codec::json_error(serde_error).into());
        assert_eq!((failure.reason, failure.message.as_str()), (Reason::Decode, codec::NOT_JSON_FOR_THIS_INPUT));
        assert_eq!(failure.error.as_deref(), Some(serde_text.as_str()));
        let key = EventSourceKey::new("orders").unwrap();
        let letter = DeadLetter::new("engine", failure.reason, failure.message, &input(&key, "application/json", b"{"));
        let json = String::from_utf8(letter.to_json()).unwrap();
        assert!(!json.contains(&serde_text) && !json.contains("line 1"), "{json}");
        // The DET's own words stay: they are its output.
        let own = Failure::of_error(&TransformError::Failed("account `a` is closed".into()));
        assert_eq!(own, Failure::new(Reason::Transform, "account `a` is closed"));
    }

    #[test]
    fn a_panic_is_one_fixed_sentence_its_text_in_the_detail() {
        let failure = Failure::of_panic(&"index out of bounds: the len is 3" as &(dyn Any + Send));
        assert_eq!((failure.reason, failure.message.as_str()), (Reason::Panic, PANIC_MESSAGE));
        assert_eq!(failure.error.as_deref(), Some("index out of bounds: the len is 3"));
    }

    #[test]
    fn a_detail_header_is_bounded_and_reads_back() {
        let long = Detail { index: 4, version: 2, error: Some("\u{1}".repeat(1 << 20)) };
        let header = long.to_header();
        assert!(header.len() <= DETAIL_BYTES_MAX, "{}", header.len());
        let back = Detail::parse(&header).unwrap();
        assert!(back.error.as_deref().unwrap().ends_with(MESSAGE_CUT_MARK));
        let short = Detail { index: 5, version: 2, error: None };
        assert_eq!(String::from_utf8(short.to_header()).unwrap(), r#"{"index":5,"version":2}"#);
        assert_eq!(Detail::find(&[header, short.to_header(), b"junk".to_vec()], 5), Some(short));
    }

    #[test]
    fn a_record_carries_the_details_of_its_dead_letters_within_a_budget() {
        let dead_letters = EventSourceKey::new("engine").unwrap().dead_letters();
        let mut details = Details::default();
        let event = |key: &EventSourceKey, index| Event::new(key.clone(), Some(index), Some(0), 0, "x", Vec::new());
        let events: Vec<Event> = (0..10).map(|i| event(&dead_letters, i)).collect();
        for index in 0..10 {
            details.insert(&Detail { index, version: 1, error: Some("e".repeat(DETAIL_BYTES_MAX)) });
        }
        let carried = details.for_events(&dead_letters, &events);
        assert_eq!(carried.len(), RECORD_DETAILS_BYTES_MAX / DETAIL_BYTES_MAX);
        assert_eq!(Detail::parse(&carried[0]).unwrap().index, 0, "in record order");
        let output = event(&EventSourceKey::new("engine").unwrap(), 3);
        assert!(details.for_events(&dead_letters, &[output]).is_empty(), "outputs have no detail");
        details.forget_below(8);
        assert_eq!(details.len(), 2);
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
        let whole = DeadLetter::new("enricher", Reason::Schema, "field `amount` missing".into(), &input);
        let large = vec![7; PAYLOAD_KEPT_BYTES_MAX + 1];
        let truncated =
            DeadLetter::new("enricher", Reason::InvalidOutput, "cut".into(), &Input { payload: &large, ..input });
        assert!(truncated.input.payload_truncated);
        // An older build's dead letter, with its version, fits the schema too.
        let older = DeadLetter { version: Some(1), ..whole.clone() };
        let output = AvroOutput { schema_id: 5, schema: Arc::new(codec::parse_schema(DEAD_LETTER_SCHEMA).unwrap()) };
        let mut schemas = SchemaCache::new();
        schemas.insert(5, output.schema.clone());
        for letter in [whole, truncated, older] {
            let payload = codec::encode_avro(&letter, &output).unwrap();
            let back: DeadLetter = codec::decode(codec::CONTENT_TYPE_AVRO, &payload, &schemas, None).unwrap();
            assert_eq!(back, letter);
        }
    }
}
