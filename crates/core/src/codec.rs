//! Payload codecs: how a typed value becomes an event's payload and back.
//!
//! Two codecs, chosen by the event's content type:
//!
//! - `application/json` ([`CONTENT_TYPE_JSON`]): serde_json.
//! - `application/vnd.apache.avro+binary` ([`CONTENT_TYPE_AVRO`]): Avro binary in the
//!   Confluent wire format: magic byte 0, the writer schema's registry id as a big-endian u32,
//!   then the Avro datum ([`frame`], [`schema_id`]).
//!
//! Decoding Avro needs the writer schema, which lives in a schema registry. Looking it up is
//! I/O, and the replica core does none: the driver resolves the ids of a fetched batch first
//! (`avro_ids_to_resolve`, and the Kafka crate's `schema_registry`) and hands the core a read-only
//! [`SchemaCache`]; [`decode`] only reads it.
//!
//! Avro values reach serde through their JSON shape: the schemas in `schemas/` mirror the
//! JSON payloads (a union of records for an internally tagged enum, each record with a
//! one-symbol `type` enum), so one serde type reads and writes both codecs.
//!
//! Every failure here is one sentence that goes into a dead letter with reason `schema`
//! (Avro) or `decode` (JSON). The sentence is built from stable facts alone (the schema id,
//! the payload's size); the library's own error (serde_json's, apache-avro's) or the
//! registry's reply is the error's `source()`, which the dead letter keeps outside its digest:
//! a dependency upgrade changes that text, and replicas must still agree.
//!
//! Avro needs the crate's `avro` feature (apache-avro and its dependencies). Without it the
//! wire format is still recognised ([`frame`], [`schema_id`]) but not decoded: an Avro input
//! is a `schema` dead letter saying so ([`AVRO_DISABLED`]), the same on every replica.

use std::collections::BTreeMap;
#[cfg(feature = "avro")]
use std::collections::BTreeSet;
#[cfg(feature = "avro")]
use std::io::Cursor;
use std::sync::Arc;

#[cfg(feature = "avro")]
use apache_avro::reader::datum::GenericDatumReader;
#[cfg(feature = "avro")]
use apache_avro::types::Value as AvroValue;
#[cfg(feature = "avro")]
use apache_avro::writer::datum::GenericDatumWriter;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "avro")]
use crate::event::EventSourceKey;
use crate::event::CONTENT_TYPE_JSON;

#[cfg(feature = "avro")]
use crate::record::{FetchedRecord, RecordView};
/// apache-avro, re-exported so a DET author names the same [`Schema`] type the codec takes
/// (for `Input::decode_as`) without pinning its version twice.
#[cfg(feature = "avro")]
pub use apache_avro;
/// An Avro schema: apache-avro's.
#[cfg(feature = "avro")]
pub use apache_avro::Schema;

/// Why a payload could not be decoded or encoded. A transform's `?` turns it into
/// [`crate::transform::TransformError::Codec`], so the input is dead-lettered with reason
/// `decode` or `schema`. `message` depends on the payload alone; the library's text is the
/// `source`, kept out of the dead letter's digested payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a payload of their content type.
    #[error("cannot decode input: {message}")]
    Decode {
        /// What is wrong, from stable facts alone.
        message: String,
        /// The library's error, when one said more.
        source: Option<LibraryError>,
    },
    /// The payload is well formed but does not fit its schema or the type asked for.
    #[error("input failed validation: {message}")]
    Schema {
        /// What is wrong, from stable facts alone.
        message: String,
        /// The library's error or the registry's reply, when one said more.
        source: Option<LibraryError>,
    },
}

impl CodecError {
    /// A `decode` error saying `message`, with no library text behind it.
    pub fn decode(message: impl Into<String>) -> Self {
        CodecError::Decode { message: message.into(), source: None }
    }

    /// A `schema` error saying `message`, with no library text behind it.
    pub fn schema(message: impl Into<String>) -> Self {
        CodecError::Schema { message: message.into(), source: None }
    }

    /// A `schema` error saying `message` because of `source`, a library's error.
    pub fn schema_because(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        CodecError::Schema { message: message.into(), source: Some(LibraryError::new(source)) }
    }

    /// The stable sentence: what a dead letter's digested `message` holds.
    pub fn message(&self) -> &str {
        match self {
            CodecError::Decode { message, .. } | CodecError::Schema { message, .. } => message,
        }
    }

    /// The library's error or the registry's reply behind it, if any: outside the digest.
    pub fn library(&self) -> Option<&LibraryError> {
        match self {
            CodecError::Decode { source, .. } | CodecError::Schema { source, .. } => source.as_ref(),
        }
    }
}

/// The sentence of a JSON payload serde_json could not read into the type asked for.
pub const NOT_JSON_FOR_THIS_INPUT: &str = "the payload is not valid JSON for this input";

/// `serde_json`'s failure to read a payload: a `decode` error whose message is
/// [`NOT_JSON_FOR_THIS_INPUT`], serde_json's text its source.
pub fn json_error(error: serde_json::Error) -> CodecError {
    CodecError::Decode { message: NOT_JSON_FOR_THIS_INPUT.into(), source: Some(LibraryError::new(error)) }
}

/// An error from a library (serde_json, apache-avro) or a service (the schema registry): text
/// that a dependency upgrade or another host may change, so it never enters a digested
/// payload. Shared, so the errors that carry it stay cheap to clone; two are equal when they
/// say the same.
#[derive(Clone)]
pub struct LibraryError(Arc<dyn std::error::Error + Send + Sync>);

impl LibraryError {
    /// Wraps a library's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// A service's reply, kept as text.
    pub fn reply(text: impl Into<String>) -> Self {
        Self(Arc::new(Reply(text.into())))
    }
}

impl std::fmt::Debug for LibraryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for LibraryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for LibraryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for LibraryError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for LibraryError {}

/// A service's reply as an error.
#[derive(Debug)]
struct Reply(String);

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reply {}

/// Why the registry has no usable schema for an id: the stable sentence a dead letter keeps,
/// and the registry's reply, kept outside the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// From the schema id alone (`RegistryError::on_the_log` in the Kafka crate).
    pub message: String,
    /// What the registry said, when it said something.
    pub reply: Option<String>,
}

/// An Avro schema. Without the `avro` feature, a stand-in no value of which exists: the
/// signatures stay the same, a [`SchemaCache`] holds only refusals and [`decode`] only takes
/// `None` for a reader schema.
#[cfg(not(feature = "avro"))]
#[derive(Debug)]
pub enum Schema {}

/// Why an Avro input is dead-lettered (reason `schema`) when the crate is built without the
/// `avro` feature.
pub const AVRO_DISABLED: &str =
    "the payload is Avro, and this transformer was built without Avro support (the `avro` feature of competing-transformers)";

/// Content type of Avro payloads in the Confluent wire format.
pub const CONTENT_TYPE_AVRO: &str = "application/vnd.apache.avro+binary";
/// First byte of a Confluent wire-format payload.
pub const WIRE_MAGIC: u8 = 0;
/// Magic byte plus the 4-byte schema id.
pub const WIRE_HEADER_BYTES: usize = 5;

/// Writer schemas by registry id, as the driver resolved them: read-only to the core.
///
/// An id maps to its parsed schema, or to the sentence saying why the registry does not
/// have it (answered 404, or returned a schema that does not parse). Ids the registry could
/// not be asked about (unreachable, 5xx) are never stored: the driver retries those.
#[derive(Clone, Debug, Default)]
pub struct SchemaCache {
    schemas: BTreeMap<u32, Result<Arc<Schema>, Unresolved>>,
}

/// An empty cache: for cores driven without a registry.
pub static NO_SCHEMAS: SchemaCache = SchemaCache::new();

impl SchemaCache {
    /// An empty cache.
    pub const fn new() -> Self {
        Self { schemas: BTreeMap::new() }
    }

    /// What is known of schema `id`, if it was resolved.
    pub fn get(&self, id: u32) -> Option<&Result<Arc<Schema>, Unresolved>> {
        self.schemas.get(&id)
    }

    /// Whether `id` was resolved, to a schema or to a refusal.
    pub fn contains(&self, id: u32) -> bool {
        self.schemas.contains_key(&id)
    }

    /// Records the writer schema of `id`.
    pub fn insert(&mut self, id: u32, schema: Arc<Schema>) {
        self.schemas.insert(id, Ok(schema));
    }

    /// Records that the registry has no usable schema `id`, and why (one sentence).
    pub fn insert_unknown(&mut self, id: u32, why: String) {
        self.schemas.insert(id, Err(Unresolved { message: why, reply: None }));
    }

    /// Records that the registry has no usable schema `id`: why, from the id alone (what a
    /// dead letter digests), and the registry's `reply` (kept outside the digest).
    pub fn insert_unresolved(&mut self, id: u32, unresolved: Unresolved) {
        self.schemas.insert(id, Err(unresolved));
    }

    /// Ids resolved so far.
    pub fn len(&self) -> usize {
        self.schemas.len()
    }

    /// Whether nothing was resolved.
    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }
}

/// The codec a transform's outputs are written in, set per transformer by configuration.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum OutputCodec {
    /// `application/json`: the default.
    #[default]
    Json,
    /// Avro in the Confluent wire format, under a registered schema.
    #[cfg(feature = "avro")]
    Avro(AvroOutput),
}

/// The registered schema Avro outputs are written with.
#[cfg(feature = "avro")]
#[derive(Clone, Debug)]
pub struct AvroOutput {
    /// The registry's id of the schema, written in every payload.
    pub schema_id: u32,
    /// The schema.
    pub schema: Arc<Schema>,
}

/// Parses an Avro schema (the text of a `.avsc` file).
#[cfg(feature = "avro")]
pub fn parse_schema(text: &str) -> Result<Schema, apache_avro::Error> {
    Schema::parse_str(text)
}

/// Prefixes an Avro datum with the Confluent wire header for schema `id`.
pub fn frame(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(WIRE_HEADER_BYTES + datum.len());
    payload.push(WIRE_MAGIC);
    payload.extend_from_slice(&id.to_be_bytes());
    payload.extend_from_slice(datum);
    payload
}

/// The schema id of a Confluent wire-format payload, and the datum after the header.
pub fn schema_id(payload: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    match payload {
        [WIRE_MAGIC, a, b, c, d, datum @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => Err(CodecError::schema(format!(
            "the payload is not Avro in the Confluent wire format (magic byte 0, then a 4-byte schema id): it is {} bytes starting {}",
            payload.len(),
            hex_prefix(payload)
        ))),
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 8;
    let mut text: String = bytes.iter().take(SHOWN_BYTES_MAX).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > SHOWN_BYTES_MAX {
        text.push('…');
    }
    if text.is_empty() {
        "with nothing".into()
    } else {
        format!("0x{text}")
    }
}

/// The media type without parameters (`application/json; charset=utf-8` → `application/json`).
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Decodes a payload into `T`, by its content type. An Avro payload is read with its writer
/// schema from `schemas` and, when `reader` is given, resolved to that reader schema (Avro
/// schema evolution: fields added with a default are filled in, removed fields dropped);
/// without the `avro` feature it is a [`CodecError::Schema`] saying [`AVRO_DISABLED`].
pub fn decode<T: DeserializeOwned>(
    content_type: &str,
    payload: &[u8],
    schemas: &SchemaCache,
    reader: Option<&Schema>,
) -> Result<T, CodecError> {
    match media_type(content_type) {
        CONTENT_TYPE_JSON => serde_json::from_slice(payload).map_err(json_error),
        #[cfg(not(feature = "avro"))]
        CONTENT_TYPE_AVRO => {
            let _ = (schemas, reader);
            Err(CodecError::schema(AVRO_DISABLED))
        }
        #[cfg(feature = "avro")]
        CONTENT_TYPE_AVRO => {
            let value = decode_avro(payload, schemas, reader)?;
            let id = schema_id(payload)?.0;
            let json = serde_json::Value::try_from(value).map_err(|e| {
                CodecError::schema_because(format!("the Avro value with schema id {id} has no JSON shape"), e)
            })?;
            serde_json::from_value(json).map_err(|e| {
                CodecError::schema_because(
                    format!("the Avro value with schema id {id} does not fit the transform's input type"),
                    e,
                )
            })
        }
        other => Err(CodecError::decode(format!(
            "unsupported content type `{other}`; payloads must be {CONTENT_TYPE_JSON} or {CONTENT_TYPE_AVRO}"
        ))),
    }
}

/// Reads an Avro wire-format payload into an Avro value, with its writer schema from
/// `schemas`, resolved to `reader` when given. The whole payload must be one datum.
#[cfg(feature = "avro")]
pub fn decode_avro(payload: &[u8], schemas: &SchemaCache, reader: Option<&Schema>) -> Result<AvroValue, CodecError> {
    let (id, datum) = schema_id(payload)?;
    let writer = match schemas.get(id) {
        Some(Ok(schema)) => schema,
        Some(Err(unresolved)) => {
            return Err(CodecError::Schema {
                message: unresolved.message.clone(),
                source: unresolved.reply.clone().map(LibraryError::reply),
            })
        }
        None => {
            return Err(CodecError::schema(format!(
                "schema id {id} was not resolved: no schema registry is configured for this replica (set SCHEMA_REGISTRY_URL)"
            )))
        }
    };
    let datum_reader = GenericDatumReader::builder(writer).maybe_reader_schema(reader).build().map_err(|e| {
        CodecError::schema_because(
            format!("the writer schema with id {id} does not resolve to the transform's reader schema"),
            e,
        )
    })?;
    let mut cursor = Cursor::new(datum);
    let value = datum_reader.read_value(&mut cursor).map_err(|e| {
        CodecError::schema_because(format!("the Avro payload with schema id {id} does not decode with that schema"), e)
    })?;
    let rest = datum.len() as u64 - cursor.position();
    if rest > 0 {
        return Err(CodecError::schema(format!(
            "Avro payload with schema id {id}: {rest} bytes follow the datum; the payload is corrupt or was written with another schema"
        )));
    }
    Ok(value)
}

/// Encodes `value` as an Avro wire-format payload under `output`'s schema. A value that does
/// not fit the schema is a [`CodecError::Schema`] naming what does not fit.
#[cfg(feature = "avro")]
pub fn encode_avro<T: Serialize + ?Sized>(value: &T, output: &AvroOutput) -> Result<Vec<u8>, CodecError> {
    let json =
        serde_json::to_value(value).map_err(|e| CodecError::schema_because("the output does not serialize", e))?;
    let fit = |e: apache_avro::Error| {
        CodecError::schema_because(format!("the output does not fit its Avro schema (id {})", output.schema_id), e)
    };
    let avro = AvroValue::try_from(json).map_err(fit)?.resolve(&output.schema).map_err(fit)?;
    let datum =
        GenericDatumWriter::builder(&output.schema).build().map_err(fit)?.write_value_to_vec(avro).map_err(fit)?;
    Ok(frame(output.schema_id, &datum))
}

/// Encodes `value` as JSON.
pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializing to a Vec cannot fail for derived types")
}

/// The schema ids of Avro payloads among `records` on the `subscriptions` keys that `known`
/// does not hold yet: what the driver must resolve before the core may see the batch.
///
/// Records are scanned for the Avro content type first, so a batch without Avro payloads
/// costs no decoding. Records that do not decode, and payloads without a wire header, are
/// left to the core (malformed record, or a `schema` dead letter).
#[cfg(feature = "avro")]
pub fn avro_ids_to_resolve(
    records: &[FetchedRecord],
    subscriptions: &[EventSourceKey],
    known: &SchemaCache,
) -> BTreeSet<u32> {
    let needle = CONTENT_TYPE_AVRO.as_bytes();
    let mut ids = BTreeSet::new();
    for fetched in records {
        let Some(value) = &fetched.value else { continue };
        if !value.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let Ok(record) = RecordView::parse(value) else { continue };
        for event in &record.events {
            if media_type(event.content_type) != CONTENT_TYPE_AVRO
                || !subscriptions.iter().any(|k| k.as_str() == event.key)
            {
                continue;
            }
            if let Ok((id, _)) = schema_id(event.payload) {
                if !known.contains(id) {
                    ids.insert(id);
                }
            }
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "avro")]
    use crate::event::Event;
    #[cfg(feature = "avro")]
    use crate::record::Record;

    #[cfg(feature = "avro")]
    const V1: &str =
        r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"long"}]}"#;
    #[cfg(feature = "avro")]
    const V2: &str = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"qty","type":"long"},
        {"name":"note","type":"string","default":"none"}]}"#;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct OrderV1 {
        id: String,
        qty: u64,
    }

    #[cfg(feature = "avro")]
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct OrderV2 {
        id: String,
        qty: u64,
        note: String,
    }

    #[cfg(feature = "avro")]
    fn output(id: u32, text: &str) -> AvroOutput {
        AvroOutput { schema_id: id, schema: Arc::new(parse_schema(text).unwrap()) }
    }

    #[cfg(feature = "avro")]
    fn cache(entries: &[(u32, &str)]) -> SchemaCache {
        let mut cache = SchemaCache::new();
        for (id, text) in entries {
            cache.insert(*id, Arc::new(parse_schema(text).unwrap()));
        }
        cache
    }

    #[cfg(feature = "avro")]
    #[test]
    fn avro_round_trips_through_the_wire_format() {
        let payload = encode_avro(&OrderV1 { id: "o1".into(), qty: 3 }, &output(7, V1)).unwrap();
        assert_eq!(&payload[..5], &[0, 0, 0, 0, 7]);
        let back: OrderV1 = decode(CONTENT_TYPE_AVRO, &payload, &cache(&[(7, V1)]), None).unwrap();
        assert_eq!(back, OrderV1 { id: "o1".into(), qty: 3 });
    }

    #[cfg(feature = "avro")]
    #[test]
    fn a_reader_schema_fills_fields_added_with_a_default() {
        let payload = encode_avro(&OrderV1 { id: "o1".into(), qty: 3 }, &output(1, V1)).unwrap();
        let v2 = parse_schema(V2).unwrap();
        let back: OrderV2 = decode(CONTENT_TYPE_AVRO, &payload, &cache(&[(1, V1)]), Some(&v2)).unwrap();
        assert_eq!(back, OrderV2 { id: "o1".into(), qty: 3, note: "none".into() });
    }

    #[test]
    fn json_payloads_decode_with_serde_json_and_their_errors_are_decode_errors() {
        let back: OrderV1 =
            decode("application/json; charset=utf-8", br#"{"id":"a","qty":1}"#, &NO_SCHEMAS, None).unwrap();
        assert_eq!(back.id, "a");
        let error = decode::<OrderV1>(CONTENT_TYPE_JSON, b"{", &NO_SCHEMAS, None).unwrap_err();
        assert!(
            matches!(&error, CodecError::Decode { message, source: Some(_) } if message == NOT_JSON_FOR_THIS_INPUT)
        );
        // serde_json's text is the source, never the message.
        let serde_text = serde_json::from_slice::<OrderV1>(b"{").unwrap_err().to_string();
        assert_eq!(error.library().map(ToString::to_string), Some(serde_text.clone()));
        assert!(!error.message().contains(&serde_text) && !error.to_string().contains(&serde_text), "{error}");
        let error = decode::<OrderV1>("text/csv", b"a,1", &NO_SCHEMAS, None).unwrap_err();
        assert!(error.to_string().contains("unsupported content type `text/csv`"), "{error}");
    }

    #[cfg(feature = "avro")]
    #[test]
    fn a_payload_without_the_wire_header_is_a_schema_error() {
        for payload in [&b""[..], &[0, 0, 1][..], &[1, 0, 0, 0, 1, 2][..]] {
            let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, payload, &cache(&[(1, V1)]), None).unwrap_err();
            assert!(
                matches!(&error, CodecError::Schema { message, source: None } if message.contains("Confluent wire format")),
                "{error:?}"
            );
        }
    }

    #[cfg(feature = "avro")]
    #[test]
    fn a_truncated_or_padded_body_is_a_schema_error_with_the_avro_error() {
        let payload = encode_avro(&OrderV1 { id: "order-1".into(), qty: 3 }, &output(1, V1)).unwrap();
        let truncated = &payload[..payload.len() - 3];
        let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, truncated, &cache(&[(1, V1)]), None).unwrap_err();
        assert_eq!(error.message(), "the Avro payload with schema id 1 does not decode with that schema");
        assert!(matches!(&error, CodecError::Schema { source: Some(_), .. }), "apache-avro's error is the source");
        let mut padded = payload.clone();
        padded.push(2);
        let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, &padded, &cache(&[(1, V1)]), None).unwrap_err();
        assert!(error.to_string().contains("1 bytes follow the datum"), "{error}");
    }

    #[cfg(feature = "avro")]
    #[test]
    fn an_unknown_or_unresolved_schema_id_is_a_schema_error_saying_why() {
        let payload = frame(9, &[2, b'a', 2]);
        let mut known = SchemaCache::new();
        known.insert_unknown(9, "schema id 9 is not in the registry".into());
        let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, &payload, &known, None).unwrap_err();
        assert_eq!(error, CodecError::schema("schema id 9 is not in the registry"));
        known.insert_unresolved(
            9,
            Unresolved {
                message: "schema id 9 is not in the registry".into(),
                reply: Some("No content with id 9".into()),
            },
        );
        let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, &payload, &known, None).unwrap_err();
        assert_eq!(error.message(), "schema id 9 is not in the registry");
        assert_eq!(error.library().map(ToString::to_string).as_deref(), Some("No content with id 9"));
        let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, &payload, &NO_SCHEMAS, None).unwrap_err();
        assert!(error.to_string().contains("SCHEMA_REGISTRY_URL"), "{error}");
    }

    #[cfg(feature = "avro")]
    #[test]
    fn an_output_that_does_not_fit_its_schema_is_a_schema_error() {
        #[derive(serde::Serialize)]
        struct Wrong {
            id: u64,
        }
        let error = encode_avro(&Wrong { id: 1 }, &output(3, V1)).unwrap_err();
        assert!(matches!(&error, CodecError::Schema { message, .. } if message.contains("(id 3)")), "{error:?}");
    }

    #[cfg(feature = "avro")]
    #[test]
    fn only_unknown_ids_of_subscribed_avro_events_need_resolving() {
        let key = |k: &str| EventSourceKey::new(k).unwrap();
        let event = |k: &str, ct: &str, payload: Vec<u8>| Event::new(key(k), None, None, 0, ct, payload);
        let record = Record {
            source: key("src"),
            writer: "w".into(),
            events: vec![
                event("orders", CONTENT_TYPE_AVRO, frame(1, &[])),
                event("orders", CONTENT_TYPE_AVRO, frame(2, &[])),
                event("other", CONTENT_TYPE_AVRO, frame(3, &[])),
                event("orders", CONTENT_TYPE_JSON, frame(4, &[])),
                event("orders", CONTENT_TYPE_AVRO, vec![9]),
            ],
        };
        let encoded = record.encode().unwrap();
        let fetched =
            FetchedRecord { offset: 0, value: Some(encoded.value), key: Some(encoded.key), ..Default::default() };
        let ids = avro_ids_to_resolve(&[fetched], &[key("orders")], &cache(&[(1, V1)]));
        assert_eq!(ids.into_iter().collect::<Vec<_>>(), [2]);
    }

    #[cfg(not(feature = "avro"))]
    #[test]
    fn without_the_avro_feature_an_avro_payload_is_a_schema_error_with_one_reason() {
        let mut known = SchemaCache::new();
        known.insert_unknown(1, "schema id 1 is not in the registry".into());
        for (payload, schemas) in [(frame(1, &[2, b'a', 6]), &known), (vec![9], &NO_SCHEMAS)] {
            let error = decode::<OrderV1>(CONTENT_TYPE_AVRO, &payload, schemas, None).unwrap_err();
            assert_eq!(error, CodecError::schema(AVRO_DISABLED));
        }
    }
}
