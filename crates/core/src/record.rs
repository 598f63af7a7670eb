//! The record codec: one Kafka record carries one atomic group of events.
//!
//! This module alone defines the bytes on the log. `docs/RECORD_FORMAT.md` describes them for
//! readers in other languages; the two must change together.
//!
//! Decoding is total: any bytes give a [`Record`] or a [`DecodeError`], never a panic.

use crate::event::{Digest, Event, EventSourceKey, Offset, CONTENT_TYPE_BYTES_MAX};

/// First two bytes of every record value.
pub const MAGIC: [u8; 2] = *b"CT";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Most events one record may hold; a writer splits larger batches.
pub const EVENTS_PER_RECORD_MAX: usize = 10_000;
/// Longest replica id, in bytes (one length byte on the wire).
pub const WRITER_BYTES_MAX: usize = 255;

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
}

/// One atomic group of events, as written in one Kafka record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// The writer's event-source key: the Kafka record key.
    pub source: EventSourceKey,
    /// The writing replica's id. Not part of any event's digest, so replicas' copies of an
    /// event compare equal.
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
    /// Summary headers for tools (names from [`headers`]); ignored by [`Record::decode`].
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// A record read back from the log, before decoding.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct FetchedRecord {
    /// Where the record sits in the log.
    pub offset: Offset,
    /// The broker's or producer's timestamp, in ms since the epoch, when known. Information
    /// only: the canonical rule never looks at it.
    pub timestamp_ms: Option<i64>,
    /// The Kafka record key.
    pub key: Option<Vec<u8>>,
    /// The Kafka record value. Headers are not read: decoding never needs them.
    pub value: Option<Vec<u8>>,
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
    /// The replica id is too long.
    #[error("replica id is longer than {WRITER_BYTES_MAX} bytes")]
    WriterTooLong,
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
        "record format version {0} is not supported (this reader knows version {FORMAT_VERSION}); upgrade the reader"
    )]
    UnsupportedVersion(u8),
    /// The value ended inside a field.
    #[error("record value ends inside field `{0}`")]
    Truncated(&'static str),
    /// A text field is not UTF-8.
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// An event-source key is empty or holds forbidden characters.
    #[error("event {event} has an invalid event-source key: {reason}")]
    InvalidKey {
        /// Position of the event in the record (the record's source key is event `None`).
        event: usize,
        /// What is wrong with it.
        reason: String,
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
        if self.events.is_empty() {
            return Err(EncodeError::NoEvents);
        }
        if self.events.len() > EVENTS_PER_RECORD_MAX {
            return Err(EncodeError::TooManyEvents(self.events.len()));
        }
        if self.writer.len() > WRITER_BYTES_MAX {
            return Err(EncodeError::WriterTooLong);
        }
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

    /// Decodes a record value. Total: never panics, whatever the bytes.
    pub fn decode(value: &[u8]) -> Result<Record, DecodeError> {
        RecordView::parse(value).map(|view| view.to_record())
    }

    /// Decodes a fetched record's value.
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
    /// Decodes a record value in place, checking every event's digest. Total: never
    /// panics, whatever the bytes.
    pub fn parse(value: &'a [u8]) -> Result<Self, DecodeError> {
        Self::parse_checked(value, true)
    }

    /// Decodes a fetched record's value in place.
    pub fn parse_fetched(record: &'a FetchedRecord) -> Result<Self, DecodeError> {
        match &record.value {
            Some(value) => Self::parse(value),
            None => Err(DecodeError::NoValue),
        }
    }

    /// Decodes the structure only, leaving digests unchecked: enough to see which keys a
    /// record holds. [`RecordView::verify`] must pass before any verdict is drawn from it.
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
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let source = reader.key("source", usize::MAX)?;
        let writer = reader.short_str("writer")?;
        let count = reader.u32("event count")? as u64;
        if count == 0 || count > EVENTS_PER_RECORD_MAX as u64 {
            return Err(DecodeError::BadEventCount(count));
        }
        let mut events = Vec::with_capacity(count as usize);
        for position in 0..count as usize {
            let flags = reader.u8("flags")?;
            if flags & !(FLAG_INDEX | FLAG_CAUSE) != 0 {
                return Err(DecodeError::UnknownFlags { event: position, flags });
            }
            // Keys repeat the source's in most records: checked once.
            let key = reader.short_str("key")?;
            if key != source {
                EventSourceKey::check(key)
                    .map_err(|e| DecodeError::InvalidKey { event: position, reason: e.to_string() })?;
            }
            let index = if flags & FLAG_INDEX != 0 { Some(reader.u64("index")?) } else { None };
            let cause = if flags & FLAG_CAUSE != 0 { Some(reader.u64("cause")?) } else { None };
            let effective_time_ms = reader.u64("effective time")? as i64;
            let content_type = reader.short_str("content type")?;
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
        Ok(RecordView { source, writer, events })
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
    fn short_str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u8(field)? as usize;
        std::str::from_utf8(self.take(len, field)?).map_err(|_| DecodeError::InvalidUtf8(field))
    }
    fn key(&mut self, field: &'static str, event: usize) -> Result<&'a str, DecodeError> {
        let text = self.short_str(field)?;
        EventSourceKey::check(text).map_err(|e| DecodeError::InvalidKey { event, reason: e.to_string() })?;
        Ok(text)
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
        assert_eq!(Record::decode(b"CT\x02"), Err(DecodeError::UnsupportedVersion(2)));
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
        assert_eq!(record.encode(), Err(EncodeError::WriterTooLong));
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
            let fetched = FetchedRecord { offset: 0, timestamp_ms: None, key: None, value: Some(value.clone()) };
            let decoded = Record::decode_fetched(&fetched);
            // Structure first and digests later (how a reader of some keys skips records)
            // accepts exactly the records a full decode accepts.
            let in_two_steps = RecordView::parse_unverified(&value).and_then(|view| view.verify().map(|()| view.to_record()));
            prop_assert_eq!(decoded.is_ok(), in_two_steps.is_ok());
            if let Ok(record) = decoded {
                prop_assert_eq!(Some(record), in_two_steps.ok());
            }
        }

        #[test]
        fn any_valid_record_round_trips(
            writer in "[a-z0-9-]{0,20}",
            events in proptest::collection::vec(
                ("[a-z][a-z.-]{0,15}", proptest::option::of(any::<u64>()), proptest::option::of(any::<u64>()),
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
