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

/// Whether `byte` may appear in a name on the log (an event-source key or a writer id): an
/// ASCII letter or digit, `.`, `_`, `-` or `:`.
///
/// A set this small keeps names unambiguous: no spaces, control or zero-width characters
/// (a key cannot look like `orders` and be something else), no commas (the `ct.keys` header
/// separator), nothing that breaks a table row; and a reader in any language checks it the
/// same way.
pub fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b':')
}

/// The first character of `name` outside [`is_name_byte`], with its byte position.
pub(crate) fn first_bad_character(name: &str) -> Option<(usize, char)> {
    let at = name.bytes().position(|b| !is_name_byte(b))?;
    // `at` is a char boundary: every byte before it is ASCII.
    name[at..].chars().next().map(|c| (at, c))
}

/// The name of a stream of events inside the log (`orders`, `matching-engine`).
///
/// Every event carries one, and the log counts events per key: the count is the index the
/// next event of that key takes. A key is 1 to [`EVENT_SOURCE_KEY_BYTES_MAX`] bytes, each an
/// ASCII letter or digit, `.`, `_`, `-` or `:` ([`is_name_byte`]).
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
    /// The key held a character outside [`is_name_byte`].
    #[error(
        "event-source key {key:?} holds {character:?} at byte {at}; use only ASCII letters, digits, `.`, `_`, `-` and `:`"
    )]
    BadCharacter {
        /// The key.
        key: String,
        /// Byte position of the first character not allowed.
        at: usize,
        /// That character.
        character: char,
    },
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
        match first_bad_character(name) {
            Some((at, character)) => Err(InvalidKey::BadCharacter { key: name.to_string(), at, character }),
            None => Ok(()),
        }
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
    /// For a transform's output or dead letter, the offset of the record that holds the
    /// input event it was computed from (each event its own input's, when one record batches
    /// several inputs' groups); for a redriven event, its dead letter's offset; `None` for an
    /// event source's events. Digested; the canonical rule never reads it.
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
    /// effective time as i64 big-endian, content-type length byte, content type, payload
    /// (raw: its length is not hashed; it is whatever follows the content type).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::spec_vectors::{bytes, hex};

    /// The spec's digest examples: what is hashed, byte for byte, and the digest.
    const WITH_CAUSE_INPUT: &str = concat!(
        "01",
        "000000000000002a",
        "0000018bcfe56800",
        "10",
        "6170706c69636174696f6e2f6a736f6e",
        "7b2261223a317d",
    );
    const WITH_CAUSE_DIGEST: &str = "a3581d4089cb064b2cff41e334aedb7c262c7187c6ae36f3cfcf016595ed68ee";
    const WITHOUT_CAUSE_INPUT: &str = concat!("00", "ffffffffffffffff", "00");
    const WITHOUT_CAUSE_DIGEST: &str = "8bd2c082c106818d05f766a71a0e490ab11e314991751d6cedf2e36e7cd1752d";

    #[test]
    fn digests_match_the_spec_s_worked_examples() {
        let with_cause = Event::compute_digest(Some(42), 1_700_000_000_000, "application/json", b"{\"a\":1}");
        assert_eq!(with_cause.to_string(), WITH_CAUSE_DIGEST);
        assert_eq!(hex(&Sha256::digest(bytes("digest-input-with-cause"))), WITH_CAUSE_DIGEST);
        assert_eq!(hex(&bytes("digest-input-with-cause")), WITH_CAUSE_INPUT);
        assert_eq!(bytes("digest-input-with-cause").len(), 41);
        assert_eq!(hex(&bytes("digest-with-cause")), WITH_CAUSE_DIGEST);

        let without_cause = Event::compute_digest(None, -1, "", b"");
        assert_eq!(without_cause.to_string(), WITHOUT_CAUSE_DIGEST);
        assert_eq!(hex(&bytes("digest-input-without-cause")), WITHOUT_CAUSE_INPUT);
        assert_eq!(hex(&bytes("digest-without-cause")), WITHOUT_CAUSE_DIGEST);
    }

    #[test]
    fn the_name_set_is_letters_digits_and_four_marks() {
        let allowed: Vec<u8> = (0..=255u8).filter(|b| is_name_byte(*b)).collect();
        assert_eq!(allowed, b"-.0123456789:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz");
        assert_eq!(EventSourceKey::check(""), Err(InvalidKey::Empty));
        assert!(EventSourceKey::check(&"k".repeat(EVENT_SOURCE_KEY_BYTES_MAX)).is_ok());
        assert!(matches!(EventSourceKey::check(&"k".repeat(256)), Err(InvalidKey::TooLong(_))));
        assert!(matches!(
            "orders\nx".parse::<EventSourceKey>(),
            Err(InvalidKey::BadCharacter { at: 6, character: '\n', .. })
        ));
    }

    #[test]
    fn a_dead_letter_key_is_a_valid_key_even_from_the_longest_key() {
        for name in ["matching-engine", &"k".repeat(EVENT_SOURCE_KEY_BYTES_MAX)] {
            let dead_letters = EventSourceKey::new(name).unwrap().dead_letters();
            assert!(EventSourceKey::check(dead_letters.as_str()).is_ok());
            assert!(dead_letters.as_str().ends_with(".dead-letters"));
        }
    }
}
