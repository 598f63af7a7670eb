//! The distributed event log: one totally ordered partition of records.
//!
//! [`EventLog`] is what a backend provides: append a record, read records from an offset.
//! It knows nothing of indexes or verdicts. [`Pipeline`] puts the canonical rule on top and
//! offers the log's API from `docs/DESIGN.md`: `write`, `exists_or_write`, `stream_events`.
//!
//! Backends: the core's `MemoryLog` (the reference) and [`KafkaLog`] (rdkafka, in
//! record-group or transactional mode).

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod kafka;
pub mod memory;
#[allow(clippy::disallowed_methods)] // waits with deadlines, never decides with them
pub mod pipeline;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use kafka::KafkaLog;
pub use pipeline::{CanonicalEvent, EventStream, KnownCount, Pipeline, Resume, WriteOutcome};

use competing_transformers::event::Offset;
use competing_transformers::record::{FetchedRecord, Record};
use competing_transformers::signature::{PublicKey, Trust};

use crate::error::LogError;

/// A pending append: resolves to the record's offset once the log has it.
pub type Delivery = Pin<Box<dyn Future<Output = Result<Offset, LogError>> + Send>>;

/// One partition of records in a total order: what a log backend provides.
#[async_trait::async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends one atomic group. The record is queued before this returns, so records
    /// appended one after another by one caller land in that order unless a delivery fails.
    /// The returned future says where it landed.
    fn append(&self, record: &Record) -> Delivery;

    /// [`EventLog::append`], the record carrying `details` as advisory headers
    /// (`record::headers::DEAD_LETTER_DETAIL`: the dead letters' details, never digested). A
    /// backend that cannot carry them drops them: nothing reads them to decide anything.
    fn append_with_details(&self, record: &Record, details: &[Vec<u8>]) -> Delivery {
        let _ = details;
        self.append(record)
    }

    /// Readies the writer before the first append, so that what a writer needs from the
    /// backend first (Kafka: a producer id) is had while the caller catches up, not at its
    /// first write. Readers never call it: they need no right to write.
    fn prepare_writes(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// A cursor reading records in offset order, starting at `from`.
    async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError>;

    /// The offset the next record will take: everything below it is readable (for Kafka, the
    /// last stable offset as a `read_committed` reader sees it).
    async fn end_offset(&self) -> Result<Offset, LogError>;

    /// The first offset still in the log: above 0 once retention (or an operator) deleted
    /// older records.
    async fn start_offset(&self) -> Result<Offset, LogError> {
        Ok(0)
    }

    /// Waits until every appended record is delivered or failed.
    async fn flush(&self, timeout: Duration) -> Result<(), LogError>;

    /// The log's trust table (`competing_transformers::signature`): which keys count only
    /// in records their writers signed. Every reader of the log applies it.
    fn trust(&self) -> Trust {
        Trust::default()
    }

    /// The public key this client signs its records with, if it signs.
    fn signer(&self) -> Option<PublicKey> {
        None
    }

    /// Whether what this client writes on `key` counts: the key is not protected, or this
    /// client signs with one of its writers' keys. A [`LogError::Unsigned`] otherwise.
    fn check_signer(&self, key: &str) -> Result<(), LogError> {
        let trust = self.trust();
        let signer = self.signer();
        match (trust.writers(key), signer) {
            (None, _) => Ok(()),
            (Some(writers), Some(signer)) if writers.contains(&signer) => Ok(()),
            (Some(_), signer) => {
                Err(LogError::Unsigned { key: key.to_string(), signer: signer.map(|key| key.to_base64()) })
            }
        }
    }

    /// What its clients last reported of themselves (librdkafka's statistics, when
    /// `statistics.interval.ms` is set); `None` for a backend without any.
    fn client_statistics(&self) -> Option<crate::client::ClientStatistics> {
        None
    }
}

/// Reads records in offset order.
#[async_trait::async_trait]
pub trait LogCursor: Send {
    /// The next records, waiting up to `max_wait` when there are none; may return an empty
    /// batch.
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<FetchedRecord>, LogError>;

    /// The offset the cursor reads next. It can be past the last record returned: Kafka's
    /// transaction markers take offsets but are never returned.
    fn position(&self) -> Offset;
}
