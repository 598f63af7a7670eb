//! Events and the names they travel under: the vocabulary of the distributed event log.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

/// Position of a record in the log (a Kafka offset of the pipeline's partition).
pub type Offset = u64;

/// Longest event-source key, in bytes: it is length-prefixed by one byte on the wire.
pub const EVENT_SOURCE_KEY_BYTES_MAX: usize = 255;
/// Longest content type, in bytes: it is length-prefixed by one byte on the wire.
pub const CONTENT_TYPE_BYTES_MAX: usize = 255;

/// The name of a stream of events inside the log (`orders`, `matching-engine`).
///
/// Every event carries one, and the log counts events per key: the count is the index the
/// next event of that key takes.
///
/// Cloning is cheap (the name is shared): every event carries its key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventSourceKey(Arc<str>);

/// Why a string cannot be an [`EventSourceKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// The key was empty.
    #[error("an event-source key must not be empty")]
    Empty,
    /// The key was longer than [`EVENT_SOURCE_KEY_BYTES_MAX`].
    #[error("event-source key `{0}` is longer than {EVENT_SOURCE_KEY_BYTES_MAX} bytes")]
    TooLong(String),
    /// The key held a control character or a comma (commas separate keys in headers).
    #[error("event-source key {0:?} holds a control character or a comma; use letters, digits, `.`, `-` or `_`")]
    BadCharacter(String),
}

impl EventSourceKey {
    /// Checks and wraps a key name.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidKey> {
        let name = name.into();
        Self::check(&name)?;
        Ok(Self(name.into()))
    }

    /// Whether `name` is a valid key, without making one.
    pub fn check(name: &str) -> Result<(), InvalidKey> {
        if name.is_empty() {
            return Err(InvalidKey::Empty);
        }
        if name.len() > EVENT_SOURCE_KEY_BYTES_MAX {
            return Err(InvalidKey::TooLong(name.to_string()));
        }
        // Keys are ASCII in practice: test bytes, and chars only when there is more.
        let bad = if name.is_ascii() {
            name.bytes().any(|b| b.is_ascii_control() || b == b',')
        } else {
            name.chars().any(|c| c.is_control() || c == ',')
        };
        if bad {
            return Err(InvalidKey::BadCharacter(name.to_string()));
        }
        Ok(())
    }

    /// A key from a name [`EventSourceKey::check`] has passed (a record view's keys have):
    /// no second check on the read path.
    pub fn checked(name: &str) -> Self {
        debug_assert!(Self::check(name).is_ok(), "{name:?} was checked");
        Self(name.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dead-letter stream of the transform whose output key this is.
    pub fn dead_letters(&self) -> EventSourceKey {
        // Cannot fail: a valid key plus a short suffix, truncated to the limit.
        let mut name = format!("{}.dead-letters", self.0);
        while name.len() > EVENT_SOURCE_KEY_BYTES_MAX {
            name.remove(0);
        }
        Self(name.into())
    }
}

// Maps keyed by EventSourceKey can be searched with a &str (same Hash and Eq as str).
impl Borrow<str> for EventSourceKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventSourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventSourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for EventSourceKey {
    type Err = InvalidKey;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// SHA-256 over the digested part of an event (see [`Event::compute_digest`]).
///
/// Two replicas that computed the same event produce the same digest; a different digest at
/// the same (key, index) is a divergence.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One event as it travels in a record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Event {
    /// The stream the event belongs to.
    pub key: EventSourceKey,
    /// The index the writer claims (a conditional write), or `None` for an unconditional
    /// write that takes the next index.
    pub index: Option<u64>,
    /// Offset of the input event this one was computed from, for transform outputs.
    pub cause: Option<Offset>,
    /// Business time of the event in milliseconds since the Unix epoch, set by the event
    /// source and inherited by transform outputs (never a replica's wall clock).
    pub effective_time_ms: i64,
    /// Media type of the payload (`application/json`, `application/vnd.apache.avro+binary`).
    pub content_type: String,
    /// The event itself, opaque to the log.
    pub payload: Vec<u8>,
    /// Digest of the fields above except key and index; checked on decode.
    pub digest: Digest,
}

impl Event {
    /// Builds an event and computes its digest.
    pub fn new(
        key: EventSourceKey,
        index: Option<u64>,
        cause: Option<Offset>,
        effective_time_ms: i64,
        content_type: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        let content_type = content_type.into();
        let digest = Self::compute_digest(cause, effective_time_ms, &content_type, &payload);
        Self { key, index, cause, effective_time_ms, content_type, payload, digest }
    }

    /// A JSON event with no index (an unconditional write) and no cause.
    pub fn json(key: EventSourceKey, effective_time_ms: i64, value: &serde_json::Value) -> Self {
        let payload = serde_json::to_vec(value).expect("a JSON value always serializes");
        Self::new(key, None, None, effective_time_ms, CONTENT_TYPE_JSON, payload)
    }

    /// The same event claiming `index`.
    pub fn with_index(mut self, index: u64) -> Self {
        self.index = Some(index);
        self
    }

    /// SHA-256 of: cause flag byte (0 or 1), cause as u64 big-endian (only when present),
    /// effective time as i64 big-endian, content-type length byte, content type, payload.
    ///
    /// Key and index are left out: they are the position the digest is compared at. The
    /// writer's replica id is not part of an event at all.
    pub fn compute_digest(cause: Option<Offset>, effective_time_ms: i64, content_type: &str, payload: &[u8]) -> Digest {
        let mut hasher = Sha256::new();
        match cause {
            Some(offset) => {
                hasher.update([1u8]);
                hasher.update(offset.to_be_bytes());
            }
            None => hasher.update([0u8]),
        }
        hasher.update(effective_time_ms.to_be_bytes());
        hasher.update([content_type.len() as u8]);
        hasher.update(content_type.as_bytes());
        hasher.update(payload);
        Digest(hasher.finalize().into())
    }
}

/// Content type of JSON payloads.
pub const CONTENT_TYPE_JSON: &str = "application/json";
