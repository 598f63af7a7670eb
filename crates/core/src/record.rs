//! The record codec: one Kafka record carries one atomic group of events.
//!
//! This module alone defines the bytes on the log. `docs/RECORD_FORMAT.md` describes them for
//! readers in other languages; the two must change together.
//!
//! Decoding is total: any bytes give a [`Record`] or a [`DecodeError`], never a panic.
//!
//! What the format forbids is refused both ways: [`Record::encode`] does not write it and
//! [`Record::decode_fetched`] calls it malformed. A record read from Kafka is its key and
//! its value together: the key must be exactly the value's `source`.

use crate::event::{first_bad_character, Digest, Event, EventSourceKey, InvalidKey, Offset, CONTENT_TYPE_BYTES_MAX};
use crate::signature::{PublicKey, Seal, Signer, PUBLIC_KEY_BYTES, SEAL_BYTES, SIGNATURE_BYTES};

/// First two bytes of every record value.
pub const MAGIC: [u8; 2] = *b"CT";
/// The format version of an unsigned record.
pub const FORMAT_VERSION: u8 = 1;
/// The format version of a signed record: version 1's layout, then a seal (the signer's
/// public key and an Ed25519 signature over every byte before the signature).
pub const SIGNED_FORMAT_VERSION: u8 = 2;
/// Most events one record may hold; a writer splits larger batches.
pub const EVENTS_PER_RECORD_MAX: usize = 10_000;
/// Longest writer id (a replica id), in bytes (one length byte on the wire).
pub const WRITER_BYTES_MAX: usize = 255;

/// Why a string cannot be a record's writer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidWriter {
    /// The writer id was empty.
    #[error("a writer id must not be empty")]
    Empty,
    /// Longer than [`WRITER_BYTES_MAX`].
    #[error("writer id `{0}` is longer than {WRITER_BYTES_MAX} bytes")]
    TooLong(String),
    /// A character outside [`crate::event::is_name_byte`].
    #[error(
        "writer id {writer:?} holds {character:?} at byte {at}; use only ASCII letters, digits, `.`, `_`, `-` and `:`"
    )]
    BadCharacter {
        /// The writer id.
        writer: String,
        /// Byte position of the first character not allowed.
        at: usize,
        /// That character.
        character: char,
    },
}

/// Whether `writer` may be a record's writer id: 1 to [`WRITER_BYTES_MAX`] bytes, each an
/// ASCII letter or digit, `.`, `_`, `-` or `:` (the same characters as an event-source key).
pub fn check_writer(writer: &str) -> Result<(), InvalidWriter> {
    if writer.is_empty() {
        return Err(InvalidWriter::Empty);
    }
    if writer.len() > WRITER_BYTES_MAX {
        return Err(InvalidWriter::TooLong(writer.to_string()));
    }
    match first_bad_character(writer) {
        Some((at, character)) => Err(InvalidWriter::BadCharacter { writer: writer.to_string(), at, character }),
        None => Ok(()),
    }
}

const FLAG_INDEX: u8 = 0b01;
const FLAG_CAUSE: u8 = 0b10;

/// Header names that summarise a record for Kafka-native tools. Readers never need them.
pub mod headers {
    /// The format version, as decimal text.
    pub const FORMAT: &str = "ct.format";
    /// The writer's replica id.
    pub const WRITER: &str = "ct.writer";
    /// Number of events in the record, as decimal text.
    pub const EVENTS: &str = "ct.events";
    /// The distinct event-source keys of the events, comma-separated, in first-seen order.
    pub const KEYS: &str = "ct.keys";
    /// `first-last` indexes of the record's events of its own key, when they carry indexes.
    pub const INDEXES: &str = "ct.indexes";
    /// Not a summary: the advisory detail of one dead letter in the record (JSON, see
    /// `dead_letter::Detail`), one header per dead letter that has one. Never digested,
    /// written whatever the summary-header setting, and read back into
    /// [`super::FetchedRecord::details`].
    pub const DEAD_LETTER_DETAIL: &str = "ct.dead-letter.detail";
}

/// One atomic group of events, as written in one Kafka record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The writer's event-source key: the Kafka record key.
    pub source: EventSourceKey,
    /// The writing replica's id (see [`check_writer`]). Not part of any event's digest, so
    /// replicas' copies of an event compare equal.
    pub writer: String,
    /// The events, in the order they take indexes.
    pub events: Vec<Event>,
}

/// A record as Kafka stores it: key, value and headers.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct EncodedRecord {
    /// The Kafka record key (the writer's event-source key, UTF-8).
    pub key: Vec<u8>,
    /// The Kafka record value (the format below).
    pub value: Vec<u8>,
    /// Summary headers for tools (names from [`headers`]), then any dead-letter details;
    /// ignored by [`Record::decode`].
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

impl EncodedRecord {
    /// Adds `details` (header values, see [`headers::DEAD_LETTER_DETAIL`]) after its headers.
    pub fn with_details(mut self, details: &[Vec<u8>]) -> Self {
        self.headers.extend(details.iter().map(|value| (headers::DEAD_LETTER_DETAIL, value.clone())));
        self
    }
}

/// A record read back from the log, before decoding.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct FetchedRecord {
    /// Where the record sits in the log.
    pub offset: Offset,
    /// The broker's or producer's timestamp, in ms since the epoch, when known. Information
    /// only: the canonical rule never looks at it.
    pub timestamp_ms: Option<i64>,
    /// The Kafka record key: must be the value's `source`, byte for byte, or the record is
    /// malformed.
    pub key: Option<Vec<u8>>,
    /// The Kafka record value.
    pub value: Option<Vec<u8>>,
    /// The values of its [`headers::DEAD_LETTER_DETAIL`] headers, in order: advisory, never
    /// needed to decode. No other header is read.
    pub details: Vec<Vec<u8>>,
}

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A record needs at least one event.
    #[error("a record needs at least one event")]
    NoEvents,
    /// More events than [`EVENTS_PER_RECORD_MAX`].
    #[error("a record holds at most {EVENTS_PER_RECORD_MAX} events, not {0}; split the batch")]
    TooManyEvents(usize),
    /// The writer id is empty, too long or holds a character not allowed.
    #[error("cannot write this record: {0}")]
    InvalidWriter(#[source] InvalidWriter),
    /// A content type is too long.
    #[error("content type of event {event} is longer than {CONTENT_TYPE_BYTES_MAX} bytes")]
    ContentTypeTooLong {
        /// Position of the event in the record.
        event: usize,
    },
    /// A payload is over 4 GiB.
    #[error("payload of event {event} is larger than 4 GiB")]
    PayloadTooLarge {
        /// Position of the event in the record.
        event: usize,
    },
}

/// Why bytes are not a record. Such a record is *malformed*: readers skip and count it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record had no value (a tombstone).
    #[error("record has no value")]
    NoValue,
    /// The value does not start with the magic bytes `CT`.
    #[error("record value does not start with the magic bytes `CT`: not written by this framework")]
    BadMagic,
    /// Written by a newer format version.
    #[error(
        "record format version {0} is not supported (this reader knows versions {FORMAT_VERSION} and {SIGNED_FORMAT_VERSION}); upgrade the reader"
    )]
    UnsupportedVersion(u8),
    /// The value ended inside a field.
    #[error("record value ends inside field `{0}`")]
    Truncated(&'static str),
    /// A text field is not UTF-8.
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// The Kafka record has no key.
    #[error("record has no Kafka key; it must be the record's source key")]
    NoKafkaKey,
    /// The Kafka record key is not the value's `source`.
    #[error("record's Kafka key {kafka_key:?} is not its source key `{record_source}`")]
    KafkaKeyMismatch {
        /// The Kafka key (lossy UTF-8).
        kafka_key: String,
        /// The `source` field of the value.
        record_source: String,
    },
    /// The record's `source` is not a valid event-source key.
    #[error("record has an invalid source key: {0}")]
    InvalidSource(#[source] InvalidKey),
    /// The record's writer id is not valid.
    #[error("record has an invalid writer id: {0}")]
    InvalidWriter(#[source] InvalidWriter),
    /// An event's event-source key is empty, too long, or holds a character not allowed.
    #[error("event {event} has an invalid event-source key: {reason}")]
    InvalidKey {
        /// Position of the event in the record.
        event: usize,
        /// What is wrong with it.
        #[source]
        reason: InvalidKey,
    },
    /// Zero events, or more than [`EVENTS_PER_RECORD_MAX`].
    #[error("record claims {0} events; a record holds 1 to {EVENTS_PER_RECORD_MAX}")]
    BadEventCount(u64),
    /// Flag bits this version does not define.
    #[error("event {event} has unknown flag bits {flags:#04x}")]
    UnknownFlags {
        /// Position of the event in the record.
        event: usize,
        /// The flag byte.
        flags: u8,
    },
    /// The stored digest does not match the event's content: corruption, or a foreign writer.
    #[error("event {event} does not match its digest: the record is corrupt")]
    DigestMismatch {
        /// Position of the event in the record.
        event: usize,
    },
    /// Bytes after the last event.
    #[error("{0} unexpected bytes after the last event")]
    TrailingBytes(usize),
}

/// Bytes an event takes in a record value, exactly as [`Record::encode`] writes it.
pub fn encoded_event_len(event: &Event) -> usize {
    1 + 1
        + event.key.as_str().len()
        + if event.index.is_some() { 8 } else { 0 }
        + if event.cause.is_some() { 8 } else { 0 }
        + 8
        + 1
        + event.content_type.len()
        + 32
        + 4
        + event.payload.len()
}

/// Bytes of a record value before its events: magic, version, source, writer, event count.
pub fn encoded_header_len(source: &EventSourceKey, writer: &str) -> usize {
    2 + 1 + 1 + source.as_str().len() + 1 + writer.len() + 4
}

impl Record {
    /// Encodes the record as Kafka key, value and headers.
    pub fn encode(&self) -> Result<EncodedRecord, EncodeError> {
        self.encode_with(true)
    }

    /// Encodes the record, with its summary headers only if `summary_headers` (building
    /// them costs more than the value of a small record).
    pub fn encode_with(&self, summary_headers: bool) -> Result<EncodedRecord, EncodeError> {
        self.encode_signed(summary_headers, None)
    }

    /// Encodes the record, signed by `signer` if one is given: format version 2, the value
    /// of version 1 with the signer's public key and the signature of all of it after it.
    pub fn encode_signed(&self, summary_headers: bool, signer: Option<&Signer>) -> Result<EncodedRecord, EncodeError> {
        let mut encoded = self.encode_unsigned(summary_headers)?;
        if let Some(signer) = signer {
            let value = &mut encoded.value;
            value.reserve_exact(SEAL_BYTES);
            value[2] = SIGNED_FORMAT_VERSION;
            value.extend_from_slice(signer.public_key().as_bytes());
            let signature = signer.sign(value);
            value.extend_from_slice(&signature);
            if let Some((_, format)) = encoded.headers.iter_mut().find(|(name, _)| *name == headers::FORMAT) {
                *format = SIGNED_FORMAT_VERSION.to_string().into_bytes();
            }
        }
        Ok(encoded)
    }

    fn encode_unsigned(&self, summary_headers: bool) -> Result<EncodedRecord, EncodeError> {
        if self.events.is_empty() {
            return Err(EncodeError::NoEvents);
        }
        if self.events.len() > EVENTS_PER_RECORD_MAX {
            return Err(EncodeError::TooManyEvents(self.events.len()));
        }
        check_writer(&self.writer).map_err(EncodeError::InvalidWriter)?;
        let size =
            encoded_header_len(&self.source, &self.writer) + self.events.iter().map(encoded_event_len).sum::<usize>();
        let mut value = Vec::with_capacity(size);
        value.extend_from_slice(&MAGIC);
        value.push(FORMAT_VERSION);
        put_short_str(&mut value, self.source.as_str());
        put_short_str(&mut value, &self.writer);
        value.extend_from_slice(&(self.events.len() as u32).to_be_bytes());
        for (position, event) in self.events.iter().enumerate() {
            if event.content_type.len() > CONTENT_TYPE_BYTES_MAX {
                return Err(EncodeError::ContentTypeTooLong { event: position });
            }
            let payload_len =
                u32::try_from(event.payload.len()).map_err(|_| EncodeError::PayloadTooLarge { event: position })?;
            let mut flags = 0;
            if event.index.is_some() {
                flags |= FLAG_INDEX;
            }
            if event.cause.is_some() {
                flags |= FLAG_CAUSE;
            }
            value.push(flags);
            put_short_str(&mut value, event.key.as_str());
            if let Some(index) = event.index {
                value.extend_from_slice(&index.to_be_bytes());
            }
            if let Some(cause) = event.cause {
                value.extend_from_slice(&cause.to_be_bytes());
            }
            value.extend_from_slice(&event.effective_time_ms.to_be_bytes());
            put_short_str(&mut value, &event.content_type);
            value.extend_from_slice(&event.digest.0);
            value.extend_from_slice(&payload_len.to_be_bytes());
            value.extend_from_slice(&event.payload);
        }
        debug_assert_eq!(value.len(), size, "encoded_event_len and encoded_header_len match the encoding");
        let headers = if summary_headers { self.summary_headers() } else { Vec::new() };
        Ok(EncodedRecord { key: self.source.as_str().as_bytes().to_vec(), value, headers })
    }

    fn summary_headers(&self) -> Vec<(&'static str, Vec<u8>)> {
        // Distinct keys in first-seen order; keys never hold commas, so the list is its own set.
        let mut keys: Vec<u8> = Vec::with_capacity(self.source.as_str().len());
        for event in &self.events {
            let key = event.key.as_str().as_bytes();
            if keys.is_empty() {
                keys.extend_from_slice(key);
            } else if !keys.split(|b| *b == b',').any(|k| k == key) {
                keys.push(b',');
                keys.extend_from_slice(key);
            }
        }
        let mut headers = Vec::with_capacity(5);
        headers.push((headers::FORMAT, FORMAT_VERSION.to_string().into_bytes()));
        headers.push((headers::WRITER, self.writer.as_bytes().to_vec()));
        headers.push((headers::EVENTS, self.events.len().to_string().into_bytes()));
        headers.push((headers::KEYS, keys));
        let mut own = self.events.iter().filter(|e| e.key == self.source).filter_map(|e| e.index);
        if let Some(first) = own.next() {
            let last = own.next_back().unwrap_or(first);
            headers.push((headers::INDEXES, format!("{first}-{last}").into_bytes()));
        }
        headers
    }

    /// Decodes a record value alone: every check but the Kafka key's, which needs the key
    /// (see [`Record::decode_fetched`]). Total: never panics, whatever the bytes.
    pub fn decode(value: &[u8]) -> Result<Record, DecodeError> {
        RecordView::parse(value).map(|view| view.to_record())
    }

    /// Decodes a fetched record: its value, and its Kafka key against the value's `source`.
    pub fn decode_fetched(record: &FetchedRecord) -> Result<Record, DecodeError> {
        RecordView::parse_fetched(record).map(|view| view.to_record())
    }
}

/// A decoded record whose fields borrow the record's bytes: reading a record this way
/// copies nothing. [`Record::decode`] is this plus [`RecordView::to_record`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecordView<'a> {
    /// The writer's event-source key (checked like every [`EventSourceKey`]).
    pub source: &'a str,
    /// The writing replica's id.
    pub writer: &'a str,
    /// The events, in the order they take indexes.
    pub events: Vec<EventView<'a>>,
    /// The signature block of a signed record (format version 2): not checked by parsing,
    /// only by a reader whose [`crate::signature::Trust`] protects one of the record's keys.
    pub seal: Option<Seal<'a>>,
}

/// One event of a [`RecordView`]: an [`Event`] that borrows its text and payload.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EventView<'a> {
    /// The event's event-source key (checked like every [`EventSourceKey`]).
    pub key: &'a str,
    /// The index the writer claims, if any.
    pub index: Option<u64>,
    /// Offset of the input it was computed from, for transform outputs.
    pub cause: Option<Offset>,
    /// Business time in ms since the epoch.
    pub effective_time_ms: i64,
    /// Media type of the payload.
    pub content_type: &'a str,
    /// The payload.
    pub payload: &'a [u8],
    /// The stored digest: checked against the content by [`RecordView::parse`].
    pub digest: Digest,
}

impl<'a> EventView<'a> {
    /// The owned event under `key`, which must be this event's key (shared, not copied).
    pub fn to_event_with_key(&self, key: EventSourceKey) -> Event {
        debug_assert_eq!(key.as_str(), self.key);
        Event {
            key,
            index: self.index,
            cause: self.cause,
            effective_time_ms: self.effective_time_ms,
            content_type: self.content_type.to_string(),
            payload: self.payload.to_vec(),
            digest: self.digest,
        }
    }

    fn digest_matches(&self) -> bool {
        Event::compute_digest(self.cause, self.effective_time_ms, self.content_type, self.payload) == self.digest
    }
}

impl<'a> RecordView<'a> {
    /// Decodes a record value in place, checking every event's digest: every check but the
    /// Kafka key's ([`RecordView::parse_fetched`] does that one too). Total: never panics,
    /// whatever the bytes.
    pub fn parse(value: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse_checked(value, true)
    }

    /// Decodes a fetched record in place: its value, and its Kafka key, which must be the
    /// value's `source`.
    pub fn parse_fetched(record: &'a FetchedRecord) -> Result<Self, DecodeError> {
        Self::parse_fetched_checked(record, true)
    }

    /// [`RecordView::parse_fetched`] with digests left unchecked, like
    /// [`RecordView::parse_unverified`]: [`RecordView::verify`] must pass before any verdict.
    pub fn parse_fetched_unverified(record: &'a FetchedRecord) -> Result<Self, DecodeError> {
        Self::parse_fetched_checked(record, false)
    }

    fn parse_fetched_checked(record: &'a FetchedRecord, verify: bool) -> Result<Self, DecodeError> {
        let value = record.value.as_deref().ok_or(DecodeError::NoValue)?;
        let view = Self::parse_checked(value, verify)?;
        view.check_kafka_key(record.key.as_deref())?;
        Ok(view)
    }

    /// Whether `kafka_key` is this record's `source`, byte for byte, as the format requires.
    pub fn check_kafka_key(&self, kafka_key: Option<&[u8]>) -> Result<(), DecodeError> {
        match kafka_key {
            None => Err(DecodeError::NoKafkaKey),
            Some(key) if key == self.source.as_bytes() => Ok(()),
            Some(key) => Err(DecodeError::KafkaKeyMismatch {
                kafka_key: String::from_utf8_lossy(key).into_owned(),
                record_source: self.source.to_string(),
            }),
        }
    }

    /// Decodes the structure of a value only, leaving digests (and the Kafka key) unchecked:
    /// enough to see which keys a record holds. [`RecordView::verify`] must pass before any
    /// verdict is drawn from it.
    pub fn parse_unverified(value: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse_checked(value, false)
    }

    /// Checks every event's digest (what [`RecordView::parse`] does as it goes).
    pub fn verify(&self) -> Result<(), DecodeError> {
        match self.events.iter().position(|e| !e.digest_matches()) {
            Some(event) => Err(DecodeError::DigestMismatch { event }),
            None => Ok(()),
        }
    }

    /// The owned record.
    pub fn to_record(&self) -> Record {
        let source = EventSourceKey::checked(self.source);
        let events = self
            .events
            .iter()
            .map(|view| {
                // Most events carry the record's own key: share it instead of copying.
                let key = if view.key == self.source { source.clone() } else { EventSourceKey::checked(view.key) };
                view.to_event_with_key(key)
            })
            .collect();
        Record { source, writer: self.writer.to_string(), events }
    }

    fn parse_checked(value: &'a [u8], verify: bool) -> Result<Self, DecodeError> {
        let mut reader = Reader { bytes: value };
        if reader.take(2, "magic")? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = reader.u8("version")?;
        let seal = match version {
            FORMAT_VERSION => None,
            SIGNED_FORMAT_VERSION => Some(reader.take_seal(value)?),
            _ => return Err(DecodeError::UnsupportedVersion(version)),
        };
        let source = reader.short_str("source")?;
        EventSourceKey::check(source).map_err(DecodeError::InvalidSource)?;
        let writer = reader.short_str("writer")?;
        check_writer(writer).map_err(DecodeError::InvalidWriter)?;
        let count = reader.u32("event count")? as u64;
        if count == 0 || count > EVENTS_PER_RECORD_MAX as u64 {
            return Err(DecodeError::BadEventCount(count));
        }
        let mut events: Vec<EventView<'a>> = Vec::with_capacity(count as usize);
        for position in 0..count as usize {
            let flags = reader.u8("flags")?;
            if flags & !(FLAG_INDEX | FLAG_CAUSE) != 0 {
                return Err(DecodeError::UnknownFlags { event: position, flags });
            }
            // Keys repeat the source's in most records: checked once.
            let key = match reader.short_bytes("key")? {
                same if same == source.as_bytes() => source,
                other => {
                    let key = std::str::from_utf8(other).map_err(|_| DecodeError::InvalidUtf8("key"))?;
                    EventSourceKey::check(key).map_err(|reason| DecodeError::InvalidKey { event: position, reason })?;
                    key
                }
            };
            let index = if flags & FLAG_INDEX != 0 { Some(reader.u64("index")?) } else { None };
            let cause = if flags & FLAG_CAUSE != 0 { Some(reader.u64("cause")?) } else { None };
            let effective_time_ms = reader.u64("effective time")? as i64;
            // Content types repeat too: the one before is checked UTF-8 already.
            let content_type = match (reader.short_bytes("content type")?, events.last()) {
                (same, Some(before)) if same == before.content_type.as_bytes() => before.content_type,
                (other, _) => std::str::from_utf8(other).map_err(|_| DecodeError::InvalidUtf8("content type"))?,
            };
            let digest = Digest(reader.take(32, "digest")?.try_into().expect("take returned 32 bytes"));
            let payload_len = reader.u32("payload length")? as usize;
            let payload = reader.take(payload_len, "payload")?;
            let event = EventView { key, index, cause, effective_time_ms, content_type, payload, digest };
            if verify && !event.digest_matches() {
                return Err(DecodeError::DigestMismatch { event: position });
            }
            events.push(event);
        }
        if !reader.bytes.is_empty() {
            return Err(DecodeError::TrailingBytes(reader.bytes.len()));
        }
        Ok(RecordView { source, writer, events, seal })
    }
}

fn put_short_str(out: &mut Vec<u8>, text: &str) {
    debug_assert!(text.len() <= 255, "callers check lengths before encoding");
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4, field)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8, field)?.try_into().expect("8 bytes")))
    }
    /// Takes the seal off the end of `value`, whose unread bytes these are: the events are
    /// read from what is left.
    fn take_seal(&mut self, value: &'a [u8]) -> Result<Seal<'a>, DecodeError> {
        let Some(body) = self.bytes.len().checked_sub(SEAL_BYTES) else {
            return Err(DecodeError::Truncated("seal"));
        };
        let (rest, seal) = self.bytes.split_at(body);
        self.bytes = rest;
        let (public_key, signature) = seal.split_at(PUBLIC_KEY_BYTES);
        Ok(Seal {
            public_key: PublicKey::from_bytes(public_key.try_into().expect("32 bytes")),
            signature: <[u8; SIGNATURE_BYTES]>::try_from(signature).expect("64 bytes"),
            signed: &value[..value.len() - SIGNATURE_BYTES],
        })
    }
    fn short_bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u8(field)? as usize;
        self.take(len, field)
    }
    fn short_str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.short_bytes(field)?).map_err(|_| DecodeError::InvalidUtf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    fn sample() -> Record {
        Record {
            source: key("matcher"),
            writer: "replica-1".into(),
            events: vec![
                Event::new(
                    key("matcher"),
                    Some(7),
                    Some(42),
                    1_700_000_000_000,
                    "application/json",
                    b"{\"a\":1}".to_vec(),
                ),
                Event::new(key("matcher.dead-letters"), None, None, -5, "text/plain", vec![]),
            ],
        }
    }

    #[test]
    fn repeated_keys_and_content_types_read_as_the_first_and_other_bytes_are_still_checked() {
        let event = |key: &str, content_type: &str| Event::new(self::key(key), None, None, 0, content_type, vec![1]);
        let record = Record {
            source: key("matcher"),
            writer: "w".into(),
            events: vec![event("matcher", "text/plain"), event("matcher", "text/plain"), event("other", "text/x")],
        };
        let value = record.encode().unwrap().value;
        assert_eq!(Record::decode(&value).unwrap(), record);
        // The third event's content type `text/x` and key `other`, made not UTF-8.
        let at = |needle: &[u8]| value.windows(needle.len()).rposition(|w| w == needle).unwrap();
        let mut bad_type = value.clone();
        bad_type[at(b"text/x") + 5] = 0xff;
        assert_eq!(RecordView::parse_unverified(&bad_type).unwrap_err(), DecodeError::InvalidUtf8("content type"));
        let mut bad_key = value.clone();
        bad_key[at(b"other")] = 0xff;
        assert_eq!(RecordView::parse_unverified(&bad_key).unwrap_err(), DecodeError::InvalidUtf8("key"));
        let mut bad_name = value.clone();
        bad_name[at(b"other")] = b' ';
        assert!(matches!(RecordView::parse_unverified(&bad_name), Err(DecodeError::InvalidKey { event: 2, .. })));
    }

    #[test]
    fn round_trips_and_summarises_in_headers() {
        let record = sample();
        let encoded = record.encode().unwrap();
        assert_eq!(encoded.key, b"matcher");
        assert_eq!(Record::decode(&encoded.value).unwrap(), record);
        let header = |name: &str| {
            encoded.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(header(headers::EVENTS).as_deref(), Some("2"));
        assert_eq!(header(headers::KEYS).as_deref(), Some("matcher,matcher.dead-letters"));
        assert_eq!(header(headers::INDEXES).as_deref(), Some("7-7"));
        assert_eq!(header(headers::WRITER).as_deref(), Some("replica-1"));
    }

    #[test]
    fn replica_id_does_not_change_digests() {
        let mut other = sample();
        other.writer = "replica-2".into();
        let a = Record::decode(&sample().encode().unwrap().value).unwrap();
        let b = Record::decode(&other.encode().unwrap().value).unwrap();
        assert_eq!(a.events, b.events);
        assert_ne!(a.writer, b.writer);
    }

    #[test]
    fn a_flipped_payload_byte_is_a_digest_mismatch() {
        let mut value = sample().encode().unwrap().value;
        // Flip the byte of the first event's payload `{"a":1}` that holds `1`.
        let at = value.windows(7).position(|w| w == b"{\"a\":1}").unwrap() + 5;
        value[at] ^= 1;
        assert_eq!(Record::decode(&value), Err(DecodeError::DigestMismatch { event: 0 }));
    }

    #[test]
    fn rejects_foreign_and_future_records_by_name() {
        assert_eq!(Record::decode(b"{\"json\":true}"), Err(DecodeError::BadMagic));
        assert_eq!(Record::decode(b"CT\x03"), Err(DecodeError::UnsupportedVersion(3)));
        assert_eq!(Record::decode(b"CT\x02"), Err(DecodeError::Truncated("seal")));
        assert_eq!(Record::decode(b""), Err(DecodeError::Truncated("magic")));
        let mut value = sample().encode().unwrap().value;
        value.push(0);
        assert_eq!(Record::decode(&value), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn refuses_to_encode_empty_or_oversized_groups() {
        let mut record = sample();
        record.events.clear();
        assert_eq!(record.encode(), Err(EncodeError::NoEvents));
        record.writer = "w".repeat(256);
        record.events = sample().events;
        assert_eq!(record.encode(), Err(EncodeError::InvalidWriter(InvalidWriter::TooLong("w".repeat(256)))));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Record::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_records_never_panics(position in 0usize..200, byte in any::<u8>(), cut in 0usize..200) {
            let mut value = sample().encode().unwrap().value;
            let at = position % value.len();
            value[at] = byte;
            value.truncate(value.len().saturating_sub(cut % 8));
            let fetched = FetchedRecord { offset: 0, key: Some(b"matcher".to_vec()), value: Some(value.clone()), ..Default::default() };
            let decoded = Record::decode_fetched(&fetched);
            // Structure first and digests later (how a reader of some keys skips records)
            // accepts exactly the records a full decode accepts.
            let in_two_steps = RecordView::parse_fetched_unverified(&fetched).and_then(|view| view.verify().map(|()| view.to_record()));
            prop_assert_eq!(decoded.is_ok(), in_two_steps.is_ok());
            if let Ok(record) = decoded {
                prop_assert_eq!(Some(record), in_two_steps.ok());
            }
        }

        #[test]
        fn any_valid_record_round_trips(
            writer in "[A-Za-z0-9._:-]{1,20}",
            events in proptest::collection::vec(
                ("[A-Za-z0-9._:-]{1,15}", proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()),
                 any::<i64>(), "[a-z/+.]{0,20}", proptest::collection::vec(any::<u8>(), 0..64)),
                1..6),
        ) {
            let events: Vec<Event> = events.into_iter()
                .map(|(k, i, c, t, ct, p)| Event::new(key(&k), i, c, t, ct, p))
                .collect();
            let record = Record { source: events[0].key.clone(), writer, events };
            let encoded = record.encode().unwrap();
            prop_assert_eq!(Record::decode(&encoded.value).unwrap(), record);
        }
    }
}

/// The rules of names, the Kafka key and empty values, both ways: what the format forbids
/// is refused on encode (or on construction) and malformed on decode.
#[cfg(test)]
mod rules {
    use super::*;
    use crate::event::is_name_byte;
    use proptest::prelude::*;

    /// A record value written by hand from the format's description, names unchecked: how a
    /// foreign or broken writer might write one. Key, source and writer are not digested.
    fn raw_value(source: &str, writer: &str, key: &str, count: u32) -> Vec<u8> {
        let digest = Event::compute_digest(None, 0, "text/plain", b"x");
        let mut value = b"CT\x01".to_vec();
        for text in [source, writer] {
            value.push(text.len() as u8);
            value.extend_from_slice(text.as_bytes());
        }
        value.extend_from_slice(&count.to_be_bytes());
        for _ in 0..count {
            value.extend_from_slice(&[0, key.len() as u8]);
            value.extend_from_slice(key.as_bytes());
            value.extend_from_slice(&0i64.to_be_bytes());
            value.push(10);
            value.extend_from_slice(b"text/plain");
            value.extend_from_slice(&digest.0);
            value.extend_from_slice(&1u32.to_be_bytes());
            value.push(b'x');
        }
        value
    }

    fn fetched(key: Option<&[u8]>, value: Option<Vec<u8>>) -> FetchedRecord {
        FetchedRecord { offset: 0, key: key.map(<[u8]>::to_vec), value, ..Default::default() }
    }

    /// Every way a fetched record can be judged, which must agree.
    fn decode_both_ways(record: &FetchedRecord) -> Result<Record, DecodeError> {
        let whole = Record::decode_fetched(record);
        let in_two_steps =
            RecordView::parse_fetched_unverified(record).and_then(|v| v.verify().map(|()| v.to_record()));
        assert_eq!(whole, in_two_steps);
        whole
    }

    /// Names the project itself uses, as keys and as writer ids.
    const PROJECT_NAMES: &[&str] = &[
        "orders",
        "matching-engine",
        "matching-engine.dead-letters",
        "matching-engine.redrives",
        "orders-eurusd",
        "running-sum.dead-letters",
        "demo-a-matching-engine-1",
        "host-det-2",
        "bench-load",
        "bench-conformance-1700000000000",
        "r0-identity",
        "host.example.com-publish",
        "build_host:2",
    ];

    /// Strings that look like names and are not: space, newline, tab, zero-width space,
    /// no-break space, comma, slash, a non-ASCII letter, a byte order mark, DEL.
    const LOOKALIKES: &[&str] = &[
        "orders ",
        "ord ers",
        "orders\n",
        "a\tb",
        "orders\u{200b}",
        "orders\u{a0}",
        "a,b",
        "a/b",
        "ordérs",
        "\u{feff}orders",
        "a\u{7f}",
    ];

    #[test]
    fn every_name_the_project_uses_is_a_key_and_a_writer_id() {
        for name in PROJECT_NAMES {
            assert!(EventSourceKey::check(name).is_ok(), "{name}");
            assert_eq!(check_writer(name), Ok(()), "{name}");
            let source = EventSourceKey::new(*name).unwrap();
            let record = Record {
                source: source.clone(),
                writer: name.to_string(),
                events: vec![Event::new(source, Some(0), None, 0, "text/plain", vec![])],
            };
            let encoded = record.encode().unwrap();
            assert_eq!(decode_both_ways(&fetched(Some(&encoded.key), Some(encoded.value))), Ok(record));
        }
    }

    #[test]
    fn lookalikes_are_refused_as_keys_and_writers_and_malformed_on_the_log() {
        for name in LOOKALIKES {
            assert!(matches!(EventSourceKey::new(*name), Err(InvalidKey::BadCharacter { .. })), "{name:?}");
            assert!(matches!(check_writer(name), Err(InvalidWriter::BadCharacter { .. })), "{name:?}");
            let mut record = sample_record();
            record.writer = name.to_string();
            assert!(matches!(record.encode(), Err(EncodeError::InvalidWriter(InvalidWriter::BadCharacter { .. }))));
            let as_source = fetched(Some(name.as_bytes()), Some(raw_value(name, "w", "ok", 1)));
            assert!(matches!(decode_both_ways(&as_source), Err(DecodeError::InvalidSource(_))), "{name:?}");
            let as_writer = fetched(Some(b"ok"), Some(raw_value("ok", name, "ok", 1)));
            assert!(matches!(decode_both_ways(&as_writer), Err(DecodeError::InvalidWriter(_))), "{name:?}");
            let as_key = fetched(Some(b"ok"), Some(raw_value("ok", "w", name, 1)));
            assert!(matches!(decode_both_ways(&as_key), Err(DecodeError::InvalidKey { event: 0, .. })), "{name:?}");
        }
        // The bad character is named, with where it is.
        assert_eq!(
            EventSourceKey::new("orders\u{200b}"),
            Err(InvalidKey::BadCharacter { key: "orders\u{200b}".into(), at: 6, character: '\u{200b}' })
        );
    }

    fn sample_record() -> Record {
        let key = EventSourceKey::new("orders").unwrap();
        Record {
            source: key.clone(),
            writer: "host-a-publish".into(),
            events: vec![Event::new(key, None, None, 0, "text/plain", b"x".to_vec())],
        }
    }

    #[test]
    fn the_kafka_key_must_be_the_source() {
        let encoded = sample_record().encode().unwrap();
        assert_eq!(encoded.key, b"orders");
        assert!(decode_both_ways(&fetched(Some(b"orders"), Some(encoded.value.clone()))).is_ok());
        assert_eq!(decode_both_ways(&fetched(None, Some(encoded.value.clone()))), Err(DecodeError::NoKafkaKey));
        for key in [&b"payments"[..], b"", b"orders ", b"Orders", b"\xff"] {
            assert!(
                matches!(
                    decode_both_ways(&fetched(Some(key), Some(encoded.value.clone()))),
                    Err(DecodeError::KafkaKeyMismatch { record_source, .. }) if record_source == "orders"
                ),
                "{key:?}"
            );
        }
        // The value alone cannot know its key: decoding it is every check but this one.
        assert!(Record::decode(&encoded.value).is_ok());
    }

    #[test]
    fn null_and_empty_things_have_one_verdict_each() {
        // No value (a tombstone), or an empty one: malformed, whatever the key.
        assert_eq!(decode_both_ways(&fetched(Some(b"orders"), None)), Err(DecodeError::NoValue));
        assert_eq!(decode_both_ways(&fetched(None, None)), Err(DecodeError::NoValue));
        assert_eq!(decode_both_ways(&fetched(Some(b"orders"), Some(vec![]))), Err(DecodeError::Truncated("magic")));
        // No events: malformed, and never written.
        let empty = fetched(Some(b"orders"), Some(raw_value("orders", "w", "orders", 0)));
        assert_eq!(decode_both_ways(&empty), Err(DecodeError::BadEventCount(0)));
        // Empty names: malformed, and never written.
        let no_source = fetched(Some(b""), Some(raw_value("", "w", "orders", 1)));
        assert_eq!(decode_both_ways(&no_source), Err(DecodeError::InvalidSource(InvalidKey::Empty)));
        let no_writer = fetched(Some(b"orders"), Some(raw_value("orders", "", "orders", 1)));
        assert_eq!(decode_both_ways(&no_writer), Err(DecodeError::InvalidWriter(InvalidWriter::Empty)));
        let no_key = fetched(Some(b"orders"), Some(raw_value("orders", "w", "", 1)));
        assert_eq!(decode_both_ways(&no_key), Err(DecodeError::InvalidKey { event: 0, reason: InvalidKey::Empty }));
        let mut record = sample_record();
        record.writer.clear();
        assert_eq!(record.encode(), Err(EncodeError::InvalidWriter(InvalidWriter::Empty)));
        // An empty payload and an empty content type are an ordinary event.
        let key = EventSourceKey::new("orders").unwrap();
        let record = Record {
            source: key.clone(),
            writer: "w".into(),
            events: vec![Event::new(key, None, None, 0, "", vec![])],
        };
        let encoded = record.encode().unwrap();
        assert_eq!(decode_both_ways(&fetched(Some(&encoded.key), Some(encoded.value))), Ok(record));
    }

    /// A name of 1 to 255 allowed bytes.
    fn valid_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._:-]{1,255}"
    }

    /// A name with at least one character outside the allowed set, at most 255 bytes.
    fn forbidden_name() -> impl Strategy<Value = String> {
        let bad = any::<char>().prop_filter("outside the set", |c| !(c.is_ascii() && is_name_byte(*c as u8)));
        ("[A-Za-z0-9._:-]{0,100}", bad, "[A-Za-z0-9._:-]{0,100}").prop_map(|(a, c, b)| format!("{a}{c}{b}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_valid_name_round_trips_as_source_key_and_writer(source in valid_name(), key in valid_name(), writer in valid_name()) {
            let source = EventSourceKey::new(source).unwrap();
            let record = Record {
                source: source.clone(),
                writer,
                events: vec![
                    Event::new(source, Some(1), Some(2), 3, "text/plain", b"p".to_vec()),
                    Event::new(EventSourceKey::new(key).unwrap(), None, None, 4, "text/plain", vec![]),
                ],
            };
            let encoded = record.encode().unwrap();
            prop_assert_eq!(&encoded.key, &record.source.as_str().as_bytes().to_vec());
            prop_assert_eq!(decode_both_ways(&fetched(Some(&encoded.key), Some(encoded.value))), Ok(record));
        }

        #[test]
        fn every_name_with_a_forbidden_character_is_refused(name in forbidden_name()) {
            prop_assert!(
                matches!(EventSourceKey::new(name.as_str()), Err(InvalidKey::BadCharacter { .. })),
                "key {:?}", name
            );
            prop_assert!(matches!(check_writer(&name), Err(InvalidWriter::BadCharacter { .. })), "{:?}", name);
            let mut record = sample_record();
            record.writer = name.clone();
            prop_assert!(matches!(record.encode(), Err(EncodeError::InvalidWriter(_))), "{:?}", name);
            let as_source = fetched(Some(name.as_bytes()), Some(raw_value(&name, "w", "ok", 1)));
            prop_assert!(matches!(decode_both_ways(&as_source), Err(DecodeError::InvalidSource(_))), "{:?}", name);
            let as_writer = fetched(Some(b"ok"), Some(raw_value("ok", &name, "ok", 1)));
            prop_assert!(matches!(decode_both_ways(&as_writer), Err(DecodeError::InvalidWriter(_))), "{:?}", name);
            let as_key = fetched(Some(b"ok"), Some(raw_value("ok", "w", &name, 1)));
            prop_assert!(matches!(decode_both_ways(&as_key), Err(DecodeError::InvalidKey { event: 0, .. })), "{:?}", name);
        }

        #[test]
        fn names_over_255_bytes_are_refused(name in "[A-Za-z0-9._:-]{256,300}") {
            prop_assert_eq!(EventSourceKey::new(name.as_str()), Err(InvalidKey::TooLong(name.clone())));
            prop_assert_eq!(check_writer(&name), Err(InvalidWriter::TooLong(name.clone())));
        }
    }
}

/// The worked examples of `docs/RECORD_FORMAT.md`, read from the page itself, so the page and
/// the code cannot drift apart.
#[cfg(test)]
pub(crate) mod spec_vectors {
    /// The format's description.
    pub const SPEC: &str = include_str!("../../../docs/RECORD_FORMAT.md");

    /// The bytes of the example after the line `<!-- vector: {name} -->`: the first word of
    /// each line of the code block that follows, in hex.
    pub fn bytes(name: &str) -> Vec<u8> {
        let marker = format!("<!-- vector: {name} -->");
        let after = &SPEC[SPEC.find(&marker).unwrap_or_else(|| panic!("the spec has no vector `{name}`"))..];
        let mut lines = after.lines().skip_while(|line| !line.starts_with("```")).skip(1);
        let mut hex = String::new();
        for line in lines.by_ref().take_while(|line| !line.starts_with("```")) {
            hex.push_str(line.split_whitespace().next().unwrap_or(""));
        }
        unhex(&hex)
    }

    /// Bytes from hex digits.
    pub fn unhex(hex: &str) -> Vec<u8> {
        assert!(hex.len().is_multiple_of(2) && hex.bytes().all(|b| b.is_ascii_hexdigit()), "not hex: {hex}");
        (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex")).collect()
    }

    /// Hex digits of bytes.
    pub fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod worked_example {
    use super::spec_vectors::{bytes, hex};
    use super::*;

    /// The record of the spec's worked example, and its bytes.
    const RECORD_KEY: &str = "6d61746368696e672d656e67696e65";
    const RECORD_VALUE: &str = concat!(
        "4354",
        "01",
        "0f6d61746368696e672d656e67696e65",
        "18686f73742d612d6d61746368696e672d656e67696e652d31",
        "00000002",
        "03",
        "0f6d61746368696e672d656e67696e65",
        "0000000000000007",
        "000000000000002a",
        "0000018bcfe56800",
        "106170706c69636174696f6e2f6a736f6e",
        "a3581d4089cb064b2cff41e334aedb7c262c7187c6ae36f3cfcf016595ed68ee",
        "00000007",
        "7b2261223a317d",
        "03",
        "0f6d61746368696e672d656e67696e65",
        "0000000000000008",
        "000000000000002b",
        "0000018bcfe56800",
        "106170706c69636174696f6e2f6a736f6e",
        "cf23705dd655b86efee38a06a345f208d9ef9f47c1082186bbf2382a96485c6e",
        "00000007",
        "7b2261223a327d",
    );

    fn example() -> Record {
        let key = EventSourceKey::new("matching-engine").unwrap();
        let output = |index, cause, payload: &[u8]| {
            Event::new(key.clone(), Some(index), Some(cause), 1_700_000_000_000, "application/json", payload.to_vec())
        };
        Record {
            source: key.clone(),
            writer: "host-a-matching-engine-1".into(),
            events: vec![output(7, 42, b"{\"a\":1}"), output(8, 43, b"{\"a\":2}")],
        }
    }

    #[test]
    fn the_spec_s_record_is_what_the_code_writes_and_reads() {
        let encoded = example().encode().unwrap();
        assert_eq!(hex(&encoded.key), RECORD_KEY);
        assert_eq!(hex(&encoded.value), RECORD_VALUE);
        assert_eq!(encoded.value.len(), 250);
        assert_eq!(hex(&bytes("record-key")), RECORD_KEY, "the spec's Kafka key");
        assert_eq!(hex(&bytes("record-value")), RECORD_VALUE, "the spec's record value");
        let fetched =
            FetchedRecord { offset: 0, key: Some(encoded.key), value: Some(encoded.value), ..Default::default() };
        assert_eq!(Record::decode_fetched(&fetched), Ok(example()));
    }

    /// RFC 8032's first test key, as the spec's signed example uses it.
    const RFC_8032_SECRET: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";

    #[test]
    fn the_spec_s_signed_record_is_what_the_code_writes_and_reads() {
        let signer = Signer::from_base64(RFC_8032_SECRET).unwrap();
        assert_eq!(signer.public_key().to_base64(), "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
        let encoded = example().encode_signed(true, Some(&signer)).unwrap();
        let mut expected = bytes("record-value");
        expected[2] = SIGNED_FORMAT_VERSION;
        expected.extend(bytes("signed-record-seal"));
        assert_eq!(hex(&encoded.value), hex(&expected), "the spec's signed value");
        assert_eq!(encoded.value.len(), 250 + SEAL_BYTES);
        let format = encoded.headers.iter().find(|(name, _)| *name == headers::FORMAT).map(|(_, v)| v.clone());
        assert_eq!(format.as_deref(), Some(&b"2"[..]));
        let view = RecordView::parse(&encoded.value).unwrap();
        let seal = view.seal.expect("a signed record has a seal");
        assert_eq!(seal.public_key, signer.public_key());
        assert!(seal.verify());
        assert_eq!(seal.signed, &encoded.value[..encoded.value.len() - SIGNATURE_BYTES]);
        // The events read as the unsigned record's: no digest covers the signature.
        assert_eq!(view.to_record(), example());
        assert_eq!(RecordView::parse(&example().encode().unwrap().value).unwrap().seal, None);
    }

    #[test]
    fn a_signed_value_too_short_for_its_seal_is_malformed() {
        let mut value = bytes("record-value");
        value[2] = SIGNED_FORMAT_VERSION;
        assert!(RecordView::parse(&value).is_err(), "the last 96 bytes are taken as the seal");
        value.truncate(3 + SEAL_BYTES - 1);
        assert_eq!(RecordView::parse(&value), Err(DecodeError::Truncated("seal")));
    }
}
