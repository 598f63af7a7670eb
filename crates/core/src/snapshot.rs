//! Snapshots: a replica's whole state at a log position, so a start costs the log since
//! the snapshot, not the log's age.
//!
//! A replica takes one after every `snapshot_every_inputs`-th canonical input, at the end of
//! the record holding it, while its own-key reader stands at that record too (see
//! `replica::core`). Its content is then a function of the log up to that record and of the
//! DET alone, so every replica takes the same bytes there: replicas store them racing like
//! outputs, and one whose bytes differ from the stored ones has a **state divergence**.
//!
//! The bytes are JSON ([`Snapshot::encode`], `docs/RECORD_FORMAT.md`, "Snapshots"), split
//! into chunks of at most [`CHUNK_BYTES_MAX`] when stored; [`Snapshot::digest`] is the
//! SHA-256 of the encoded bytes.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::event::{Digest, Event, EventSourceKey, Offset};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// Most bytes of an encoded snapshot one stored chunk carries: with its envelope, well under
/// what one record may take.
pub const CHUNK_BYTES_MAX: usize = 512 * 1024;

/// A replica's state after the record at `position - 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The DET's name.
    pub transformer: String,
    /// Where reading goes on: the record after the one holding the last input applied.
    pub position: Offset,
    /// Canonical inputs applied so far.
    pub inputs: u64,
    /// The DET's state ([`crate::Transform::save_state`]), base64.
    pub state_base64: String,
    /// Canonical events of each subscription so far: the index its next input takes.
    pub input_counts: Vec<(String, u64)>,
    /// The index the replica's next output, and next dead letter, takes.
    pub next_index: Streams,
    /// Canonical events of the output and dead-letter keys in the log before `position`.
    pub own_counts: Streams,
    /// Groups computed and not canonical before `position`: still to be written, or read
    /// canonical, after it. In index order per key.
    pub pending: Vec<PendingGroup>,
}

/// One number per stream of the DET.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streams {
    /// Of the output key.
    pub output: u64,
    /// Of the dead-letter key.
    pub dead_letters: u64,
}

/// A group computed but not yet canonical: its events as the replica writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingGroup {
    /// Whether it is a dead letter (else outputs).
    pub dead_letter: bool,
    /// Its events, consecutive indexes.
    pub events: Vec<PendingEvent>,
}

/// An event of a pending group. The digest is recomputed from the rest when read back, so
/// a snapshot cannot carry an event that does not match its own digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// Its index.
    pub index: u64,
    /// The input it came from.
    pub cause: Option<Offset>,
    /// Its business time.
    pub effective_time_ms: i64,
    /// Its content type.
    pub content_type: String,
    /// Its payload, base64.
    pub payload_base64: String,
}

/// Why stored bytes are not a snapshot this build can resume from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not the JSON of a snapshot.
    #[error("the bytes are not a snapshot: {0}")]
    Malformed(#[source] serde_json::Error),
    /// Written in a format this build does not read.
    #[error("snapshot format {found}; this build reads format {SNAPSHOT_FORMAT}")]
    Format {
        /// The format it says.
        found: u32,
    },
    /// Its bytes do not have the digest they were stored with.
    #[error("snapshot digest {found} differs from the stored {expected}: the snapshot is corrupt")]
    Digest {
        /// What the stored manifest says.
        expected: Digest,
        /// What the bytes hash to.
        found: Digest,
    },
    /// A payload or the state is not base64.
    #[error("a field of the snapshot is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// For another DET, or an event that cannot be (a name the format refuses).
    #[error("the snapshot cannot be resumed from: {0}")]
    Invalid(String),
}

impl Snapshot {
    /// The bytes stored: the same for the same snapshot on every replica.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a snapshot serializes")
    }

    /// The SHA-256 of `encoded`: what replicas compare.
    pub fn digest_of(encoded: &[u8]) -> Digest {
        Digest(Sha256::digest(encoded).into())
    }

    /// Reads stored bytes back, checking them against `expected` when the store kept a
    /// digest.
    pub fn decode(bytes: &[u8], expected: Option<Digest>) -> Result<Self, SnapshotError> {
        if let Some(expected) = expected {
            let found = Self::digest_of(bytes);
            if found != expected {
                return Err(SnapshotError::Digest { expected, found });
            }
        }
        let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(SnapshotError::Malformed)?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format { found: snapshot.format });
        }
        Ok(snapshot)
    }

    /// The DET's state bytes.
    pub fn state(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(base64::engine::general_purpose::STANDARD.decode(&self.state_base64)?)
    }

    /// The pending groups as events of `output` (or of its dead-letter key), digests
    /// recomputed.
    pub fn pending_events(&self, output: &EventSourceKey) -> Result<Vec<(bool, Vec<Event>)>, SnapshotError> {
        let dead_letters = output.dead_letters();
        self.pending
            .iter()
            .map(|group| {
                let key = if group.dead_letter { &dead_letters } else { output };
                let events = group
                    .events
                    .iter()
                    .map(|e| {
                        let payload = base64::engine::general_purpose::STANDARD.decode(&e.payload_base64)?;
                        Ok(Event::new(
                            key.clone(),
                            Some(e.index),
                            e.cause,
                            e.effective_time_ms,
                            e.content_type.clone(),
                            payload,
                        ))
                    })
                    .collect::<Result<Vec<_>, SnapshotError>>()?;
                Ok((group.dead_letter, events))
            })
            .collect()
    }
}

impl PendingEvent {
    /// The snapshot's form of `event`.
    pub fn of(event: &Event) -> Self {
        Self {
            index: event.index.expect("a replica's events are numbered"),
            cause: event.cause,
            effective_time_ms: event.effective_time_ms,
            content_type: event.content_type.clone(),
            payload_base64: base64::engine::general_purpose::STANDARD.encode(&event.payload),
        }
    }
}

/// The state of a serde value as bytes, for [`crate::Transform::save_state`]: JSON, whose
/// bytes are the same for the same value as long as its maps are ordered (`BTreeMap`, never
/// `HashMap`, whose order differs from process to process).
pub fn state_to_bytes<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).expect("a transform's state serializes")
}

/// A serde value back from [`state_to_bytes`], for [`crate::Transform::restore_state`].
pub fn state_from_bytes<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the saved state does not read back: {e}"))
}

/// `encoded` cut into the chunks it is stored in.
pub fn chunks(encoded: &[u8]) -> impl Iterator<Item = &[u8]> {
    encoded.chunks(CHUNK_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let event = Event::new(EventSourceKey::new("echo").unwrap(), Some(3), Some(9), 7, "text/plain", b"x".to_vec());
        Snapshot {
            format: SNAPSHOT_FORMAT,
            transformer: "echo".into(),
            position: 10,
            inputs: 4,
            state_base64: base64::engine::general_purpose::STANDARD.encode(b"state"),
            input_counts: vec![("in".into(), 4)],
            next_index: Streams { output: 4, dead_letters: 0 },
            own_counts: Streams { output: 3, dead_letters: 0 },
            pending: vec![PendingGroup { dead_letter: false, events: vec![PendingEvent::of(&event)] }],
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_and_its_events_with_their_digests() {
        let original = snapshot();
        let bytes = original.encode();
        let digest = Snapshot::digest_of(&bytes);
        let read = Snapshot::decode(&bytes, Some(digest)).unwrap();
        assert_eq!(read, original);
        assert_eq!(read.state().unwrap(), b"state");
        let output = EventSourceKey::new("echo").unwrap();
        let (dead_letter, events) = read.pending_events(&output).unwrap().remove(0);
        let event = Event::new(output, Some(3), Some(9), 7, "text/plain", b"x".to_vec());
        assert!(!dead_letter);
        assert_eq!(events, vec![event]);
    }

    #[test]
    fn corrupt_or_foreign_bytes_are_refused_with_why() {
        let bytes = snapshot().encode();
        let digest = Snapshot::digest_of(&bytes);
        let mut corrupt = bytes.clone();
        corrupt[20] ^= 1;
        assert!(matches!(Snapshot::decode(&corrupt, Some(digest)), Err(SnapshotError::Digest { .. })));
        let later = String::from_utf8(bytes).unwrap().replace("\"format\":1", "\"format\":2");
        assert!(matches!(Snapshot::decode(later.as_bytes(), None), Err(SnapshotError::Format { found: 2 })));
        assert!(matches!(Snapshot::decode(b"{}", None), Err(SnapshotError::Malformed(_))));
    }

    #[test]
    fn chunks_cover_the_bytes_in_order() {
        let bytes: Vec<u8> = (0..CHUNK_BYTES_MAX * 2 + 5).map(|i| i as u8).collect();
        let parts: Vec<&[u8]> = chunks(&bytes).collect();
        assert_eq!(parts.iter().map(|c| c.len()).collect::<Vec<_>>(), [CHUNK_BYTES_MAX, CHUNK_BYTES_MAX, 5]);
        assert_eq!(parts.concat(), bytes);
    }
}
