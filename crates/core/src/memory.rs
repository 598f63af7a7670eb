//! The in-memory reference log: the behaviour every backend must match, and the log DET
//! authors use in unit tests. Synchronous; a runtime waits on it through [`MemoryLog::poll_end`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::canonical::{CanonicalRule, Verdict};
use crate::event::{Event, EventSourceKey, Offset};
use crate::record::{EncodeError, FetchedRecord, Record, RecordView};
use crate::signature::{PublicKey, Signer, Trust};

/// An event log held in memory, shared by cloning. Each handle has its own signer (the key
/// its appends are signed with, if any) and trust table (what its readers apply).
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<Inner>>,
    signer: Option<Signer>,
    trust: Trust,
}

#[derive(Default)]
struct Inner {
    records: Vec<FetchedRecord>,
    /// Readers waiting for a record past the end; woken by the next append.
    waiting: Vec<Waker>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// This log through a handle whose appends are signed by `signer` (`None`: unsigned).
    pub fn signed_by(&self, signer: Option<Signer>) -> Self {
        Self { signer, ..self.clone() }
    }

    /// This log through a handle whose readers apply `trust`.
    pub fn with_trust(&self, trust: Trust) -> Self {
        Self { trust, ..self.clone() }
    }

    /// The public key this handle's appends are signed with, if any.
    pub fn signer(&self) -> Option<PublicKey> {
        self.signer.as_ref().map(Signer::public_key)
    }

    /// The trust table this handle's readers apply.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Appends raw bytes as a record, as a foreign or broken writer might.
    pub fn append_raw(&self, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Offset {
        self.push(FetchedRecord { offset: 0, timestamp_ms: None, key, value, details: Vec::new() })
    }

    /// Every record, in order.
    pub fn records(&self) -> Vec<FetchedRecord> {
        self.records_from(0)
    }

    /// The records from offset `from` on.
    pub fn records_from(&self, from: Offset) -> Vec<FetchedRecord> {
        self.records_between(from, usize::MAX)
    }

    /// At most `count_max` records from offset `from` on.
    pub fn records_between(&self, from: Offset, count_max: usize) -> Vec<FetchedRecord> {
        let inner = self.lock();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(inner.records.len());
        let stop = start.saturating_add(count_max).min(inner.records.len());
        inner.records[start..stop].to_vec()
    }

    /// The offset the next record will take.
    pub fn end(&self) -> Offset {
        self.lock().records.len() as Offset
    }

    /// Ready once the log holds a record at `offset`; otherwise wakes `cx` on the next append.
    pub fn poll_end(&self, offset: Offset, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.records.len() as Offset > offset {
            return Poll::Ready(());
        }
        if !inner.waiting.iter().any(|waker| waker.will_wake(cx.waker())) {
            inner.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Appends a record at once.
    pub fn append_now(&self, record: &Record) -> Result<Offset, EncodeError> {
        self.append_now_with_details(record, &[])
    }

    /// Appends a record at once, carrying `details` (dead-letter detail header values, see
    /// [`crate::record::headers::DEAD_LETTER_DETAIL`]) as a Kafka record would: read back in
    /// [`FetchedRecord::details`].
    pub fn append_now_with_details(&self, record: &Record, details: &[Vec<u8>]) -> Result<Offset, EncodeError> {
        let encoded = record.encode_signed(true, self.signer.as_ref())?;
        Ok(self.push(FetchedRecord {
            offset: 0,
            timestamp_ms: None,
            key: Some(encoded.key),
            value: Some(encoded.value),
            details: details.to_vec(),
        }))
    }

    /// Appends `events` unconditionally under `key`, one record, as an event source does.
    pub fn publish(&self, key: &EventSourceKey, events: Vec<Event>) -> Offset {
        let events = events.into_iter().map(|e| Event { key: key.clone(), index: None, ..e }).collect();
        self.append_now(&Record { source: key.clone(), writer: "source".into(), events })
            .expect("events a test publishes encode")
    }

    /// The canonical events of `key`, in log order, as every reader sees them.
    pub fn canonical(&self, key: &EventSourceKey) -> Vec<Event> {
        self.canonical_with_offsets(key).into_iter().map(|(_, event)| event).collect()
    }

    /// The canonical events of `key` with the offsets of their records.
    pub fn canonical_with_offsets(&self, key: &EventSourceKey) -> Vec<(Offset, Event)> {
        let mut rule = CanonicalRule::default().with_trust(self.trust.clone());
        let mut events = Vec::new();
        for fetched in self.records() {
            let decoded = RecordView::parse_fetched(&fetched);
            if let Ok(verdicts) = rule.apply_view(fetched.offset, decoded.as_ref()) {
                for (event, verdict) in decoded.expect("decoded").events.iter().zip(verdicts) {
                    if let (true, Verdict::Canonical { index }) = (event.key == key.as_str(), verdict) {
                        events.push((
                            fetched.offset,
                            Event { index: Some(index), ..event.to_event_with_key(key.clone()) },
                        ));
                    }
                }
            }
        }
        events
    }

    fn push(&self, mut record: FetchedRecord) -> Offset {
        let mut inner = self.lock();
        let offset = inner.records.len() as Offset;
        record.offset = offset;
        inner.records.push(record);
        for waker in inner.waiting.drain(..) {
            waker.wake();
        }
        offset
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves whole records only: pushes are one statement.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
