//! The transform contract: what a DET author implements.
//!
//! A deterministic event transform (DET) turns each canonical input event into zero or more
//! output events under its own event-source key. Several replicas run the same transform
//! and race to write the outputs, so it must be deterministic: the same inputs in the same
//! order give the same outputs. The context it gets holds no wall clock and no randomness
//! except what is derived from the log ([`Input::seed`]).
//!
//! ```
//! use competing_transformers::transform::{Input, Outputs, Transform, TransformError};
//! use competing_transformers::EventSourceKey;
//!
//! /// Counts greetings and answers each one.
//! #[derive(Default)]
//! struct Greeter { greeted: u64 }
//!
//! #[derive(serde::Deserialize)]
//! struct Hello { name: String }
//!
//! impl Transform for Greeter {
//!     fn name(&self) -> &str { "greeter" }
//!     fn version(&self) -> u32 { 1 }
//!     fn subscriptions(&self) -> Vec<EventSourceKey> { vec!["hellos".parse().unwrap()] }
//!     fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
//!         let hello: Hello = input.json()?;
//!         self.greeted += 1;
//!         out.emit_json(&serde_json::json!({ "reply": format!("hi {}", hello.name), "n": self.greeted }));
//!         Ok(())
//!     }
//! }
//! # let _ = Greeter::default();
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, CodecError, OutputCodec, SchemaCache};
use crate::event::{Digest, EventSourceKey, Offset, CONTENT_TYPE_JSON, EVENT_SOURCE_KEY_BYTES_MAX};
use crate::record::WRITER_BYTES_MAX;

/// Most events one input may produce.
pub const OUTPUT_EVENTS_MAX: usize = 1_000;
/// Most payload bytes one input may produce, all outputs together: the group must fit in one
/// Kafka record (1 MiB by default) with room for the envelope.
pub const OUTPUT_BYTES_MAX: usize = 512 * 1024;
/// The largest record value a replica writes by default: under librdkafka's default
/// `message.max.bytes` (1,000,000) with room for the Kafka key, the summary headers and the
/// batch framing.
pub const RECORD_BYTES_MAX: usize = 900 * 1024;
/// Bytes of the largest record header ([`crate::record::encoded_header_len`] with a source
/// key and a writer id of 255 bytes each).
pub const RECORD_HEADER_BYTES_MAX: usize = 2 + 1 + (1 + EVENT_SOURCE_KEY_BYTES_MAX) + (1 + WRITER_BYTES_MAX) + 4;
/// Most bytes the events of one input's group (its outputs, or its dead letter) may take in
/// a record value, framing included ([`crate::record::encoded_event_len`]): alone in a
/// record, with any header, the group fits in [`RECORD_BYTES_MAX`]. Outputs over it become an
/// `output_too_large` dead letter, which always fits. The limit is a constant, so every
/// replica decides alike whatever its configuration.
pub const GROUP_BYTES_MAX: usize = RECORD_BYTES_MAX - RECORD_HEADER_BYTES_MAX;

/// One canonical input event, as a transform sees it.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The stream it belongs to.
    pub key: &'a EventSourceKey,
    /// Its canonical index in that stream.
    pub index: u64,
    /// Where its record sits in the log.
    pub offset: Offset,
    /// Its business time, ms since the epoch, as the event source set it.
    pub effective_time_ms: i64,
    /// Media type of the payload.
    pub content_type: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The event's digest.
    pub digest: Digest,
    /// Writer schemas of Avro payloads, resolved by the driver before the core saw the
    /// input ([`crate::codec::NO_SCHEMAS`] when no registry is configured).
    pub schemas: &'a SchemaCache,
}

impl Input<'_> {
    /// Decodes a JSON payload; a payload that does not decode is a `decode`
    /// [`TransformError::Codec`], which sends the input to the dead-letter stream.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, TransformError> {
        serde_json::from_slice(self.payload).map_err(|e| codec::json_error(e).into())
    }

    /// Decodes the payload into `T` by its content type: JSON with serde_json, Avro
    /// (`application/vnd.apache.avro+binary`, Confluent wire format) with its writer schema.
    /// A JSON payload that does not decode is a `decode` [`TransformError::Codec`]; an Avro
    /// payload that does not (corrupt, unknown schema id, not fitting `T`, or the crate built
    /// without its `avro` feature) is a `schema` one, apache-avro's error its source. Both
    /// send the input to the dead-letter stream.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, TransformError> {
        Ok(codec::decode(self.content_type, self.payload, self.schemas, None)?)
    }

    /// Like [`Input::decode`], but an Avro payload is first resolved to `reader`, the schema
    /// this transform was built against (Avro schema evolution: a field added with a default
    /// reads as that default from events written before it existed).
    #[cfg(feature = "avro")]
    pub fn decode_as<T: DeserializeOwned>(&self, reader: &codec::Schema) -> Result<T, TransformError> {
        Ok(codec::decode(self.content_type, self.payload, self.schemas, Some(reader))?)
    }

    /// A number derived from the input alone, the same on every replica: the only
    /// randomness a transform may use.
    pub fn seed(&self) -> u64 {
        u64::from_be_bytes(self.digest.0[..8].try_into().expect("8 bytes")) ^ self.offset
    }
}

/// One output event, before it gets its key and index.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Output {
    /// Media type of the payload.
    pub content_type: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Where a transform puts its outputs for one input.
#[derive(Default, Debug)]
pub struct Outputs {
    events: Vec<Output>,
    codec: OutputCodec,
}

impl Outputs {
    /// Outputs whose [`Outputs::emit_value`] encodes with `codec`.
    pub fn with_codec(codec: OutputCodec) -> Self {
        Self { events: Vec::new(), codec }
    }

    /// The codec [`Outputs::emit_value`] uses, set per transformer by configuration.
    pub fn codec(&self) -> &OutputCodec {
        &self.codec
    }

    /// Emits `value` in the configured codec: JSON by default, Avro under the registered
    /// output schema when the transformer is configured with `codec = "avro"`. A value that
    /// does not fit the output schema is a `schema` [`TransformError::Codec`].
    pub fn emit_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), TransformError> {
        match &self.codec {
            OutputCodec::Json => self.emit(CONTENT_TYPE_JSON, codec::encode_json(value)),
            #[cfg(feature = "avro")]
            OutputCodec::Avro(output) => {
                let payload = codec::encode_avro(value, output)?;
                self.emit(codec::CONTENT_TYPE_AVRO, payload);
            }
        }
        Ok(())
    }

    /// Emits an event with a JSON payload.
    pub fn emit_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        let payload = serde_json::to_vec(value).expect("serializing to a Vec cannot fail for derived types");
        self.emit(CONTENT_TYPE_JSON, payload);
    }

    /// Emits an event with any payload. A content type longer than
    /// [`crate::event::CONTENT_TYPE_BYTES_MAX`] bytes cannot be written: the input becomes an
    /// `invalid_output` dead letter instead of its outputs.
    pub fn emit(&mut self, content_type: &str, payload: Vec<u8>) {
        self.events.push(Output { content_type: content_type.to_string(), payload });
    }

    /// The events emitted so far.
    pub fn events(&self) -> &[Output] {
        &self.events
    }

    /// Takes the events out.
    pub fn into_events(self) -> Vec<Output> {
        self.events
    }
}

/// Why a transform could not process an input. Every variant sends the input to the
/// dead-letter stream; the pipeline goes on.
///
/// The text of `Decode`, `Schema` and `Failed` is the DET's own output: its dead letter keeps
/// it, digested, so it must depend on the input and the DET alone (no library's error text,
/// which a dependency upgrade changes; wrap such an error in a [`CodecError`] instead). A
/// `Codec` error's dead letter keeps only the codec's stable sentence; the library's text goes
/// outside the digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The payload could not be decoded (the DET's own words).
    #[error("cannot decode input: {0}")]
    Decode(String),
    /// The payload decoded but broke its schema or the transform's rules for valid input (the
    /// DET's own words).
    #[error("input failed validation: {0}")]
    Schema(String),
    /// The transform failed on a valid input.
    #[error("{0}")]
    Failed(String),
    /// A payload codec failed: reason `decode` or `schema` by its kind.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

impl TransformError {
    /// What went wrong, without the prefix naming the kind: a dead letter states the kind in
    /// its reason already. For a codec error, its stable sentence without the library's text.
    pub fn detail(&self) -> &str {
        match self {
            TransformError::Decode(detail) | TransformError::Schema(detail) | TransformError::Failed(detail) => detail,
            TransformError::Codec(error) => error.message(),
        }
    }
}

/// A deterministic event transform.
///
/// State lives in the implementor. `apply` is called once per canonical input event of the
/// subscribed keys, in log order, on every replica.
pub trait Transform: Send + 'static {
    /// The transform's name: also its output event-source key.
    fn name(&self) -> &str;

    /// The transform's version, recorded in the advisory detail of its dead letters (never in
    /// their digested payload: a bump must not make replicas disagree on an old input).
    fn version(&self) -> u32;

    /// The event-source keys whose events it consumes.
    fn subscriptions(&self) -> Vec<EventSourceKey>;

    /// The Avro schema (`.avsc` text) of its outputs, if it can write Avro: registered under
    /// the subject `<name>-value` when the transformer runs with `codec = "avro"`.
    fn output_schema(&self) -> Option<&str> {
        None
    }

    /// Processes one input, emitting zero or more outputs. An error (or a panic) sends the
    /// input to the dead-letter stream and discards what was emitted for it.
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError>;

    /// Snapshots, opt-in: the whole state as bytes, a function of the inputs applied alone
    /// (ordered maps, no addresses, no clock), so every replica saves the same bytes at the
    /// same input; replicas compare them, and different bytes are a state divergence.
    /// [`crate::snapshot::state_to_bytes`] writes a serde value. `None` (the default): no
    /// snapshots, and a replica starts by replaying the log from its start.
    fn save_state(&self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the state with one [`Transform::save_state`] returned, on a transform just
    /// made. An error (one sentence) makes the replica fall back to an older snapshot, or to
    /// the log's start.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let _ = state;
        Err(format!("the transform `{}` does not restore snapshots", self.name()))
    }
}

/// A boxed transform is a transform, so launchers can hold transforms chosen at run time.
impl<T: Transform + ?Sized> Transform for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn version(&self) -> u32 {
        (**self).version()
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        (**self).subscriptions()
    }
    fn output_schema(&self) -> Option<&str> {
        (**self).output_schema()
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        (**self).apply(input, out)
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        (**self).save_state()
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        (**self).restore_state(state)
    }
}
