//! The in-memory reference log: the behaviour every backend must match, and the log DET
//! authors use in unit tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Delivery, EventLog, LogCursor, LogError};
use crate::canonical::{CanonicalRule, Verdict};
use crate::event::{Event, EventSourceKey, Offset};
use crate::record::{EncodeError, FetchedRecord, Record};

/// An event log held in memory, shared by cloning.
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

struct Inner {
    records: Mutex<Vec<FetchedRecord>>,
    end: watch::Sender<Offset>,
}

impl Default for Inner {
    fn default() -> Self {
        Self { records: Mutex::new(Vec::new()), end: watch::channel(0).0 }
    }
}

impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends raw bytes as a record, as a foreign or broken writer might.
    pub fn append_raw(&self, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Offset {
        self.push(FetchedRecord { offset: 0, timestamp_ms: None, key, value })
    }

    /// Every record, in order.
    pub fn records(&self) -> Vec<FetchedRecord> {
        self.records_from(0)
    }

    /// The records from offset `from` on.
    pub fn records_from(&self, from: Offset) -> Vec<FetchedRecord> {
        let records = self.inner.records.lock().expect("memory log lock");
        records.get(from as usize..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Appends a record at once, without a runtime.
    pub fn append_now(&self, record: &Record) -> Result<Offset, EncodeError> {
        let encoded = record.encode()?;
        Ok(self.push(FetchedRecord {
            offset: 0,
            timestamp_ms: None,
            key: Some(encoded.key),
            value: Some(encoded.value),
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
        let mut rule = CanonicalRule::default();
        let mut events = Vec::new();
        for fetched in self.records() {
            let decoded = Record::decode_fetched(&fetched);
            if let Ok(verdicts) = rule.apply(fetched.offset, decoded.as_ref()) {
                for (event, verdict) in decoded.expect("decoded").events.into_iter().zip(verdicts) {
                    if let (true, Verdict::Canonical { index }) = (&event.key == key, verdict) {
                        events.push((fetched.offset, Event { index: Some(index), ..event }));
                    }
                }
            }
        }
        events
    }

    fn push(&self, mut record: FetchedRecord) -> Offset {
        let mut records = self.inner.records.lock().expect("memory log lock");
        let offset = records.len() as Offset;
        record.offset = offset;
        records.push(record);
        self.inner.end.send_replace(offset + 1);
        offset
    }
}

#[async_trait::async_trait]
impl EventLog for MemoryLog {
    fn append(&self, record: &Record) -> Delivery {
        let result = self.append_now(record).map_err(LogError::from);
        Box::pin(async move { result })
    }

    async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError> {
        Ok(Box::new(MemoryCursor { log: self.clone(), next: from, end: self.inner.end.subscribe() }))
    }

    async fn end_offset(&self) -> Result<Offset, LogError> {
        Ok(*self.inner.end.borrow())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), LogError> {
        Ok(())
    }
}

struct MemoryCursor {
    log: MemoryLog,
    next: Offset,
    end: watch::Receiver<Offset>,
}

/// Most records one batch returns, like a Kafka fetch.
const BATCH_RECORDS_MAX: usize = 500;

#[async_trait::async_trait]
impl LogCursor for MemoryCursor {
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<FetchedRecord>, LogError> {
        if *self.end.borrow_and_update() <= self.next {
            let next = self.next;
            let _ = tokio::time::timeout(max_wait, self.end.wait_for(|end| *end > next)).await;
        }
        let records = self.log.inner.records.lock().expect("memory log lock");
        let start = (self.next as usize).min(records.len());
        let stop = (start + BATCH_RECORDS_MAX).min(records.len());
        let batch = records[start..stop].to_vec();
        self.next = stop as Offset;
        Ok(batch)
    }

    fn position(&self) -> Offset {
        self.next
    }
}
