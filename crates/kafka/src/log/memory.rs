//! The core's in-memory log as an [`EventLog`]: the reference every backend must match.

use std::time::Duration;

use competing_transformers::event::Offset;
use competing_transformers::record::{FetchedRecord, Record};
use competing_transformers::signature::{PublicKey, Trust};
use competing_transformers::MemoryLog;

use super::{Delivery, EventLog, LogCursor};
use crate::error::LogError;

#[async_trait::async_trait]
impl EventLog for MemoryLog {
    fn append(&self, record: &Record) -> Delivery {
        self.append_with_details(record, &[])
    }

    fn append_with_details(&self, record: &Record, details: &[Vec<u8>]) -> Delivery {
        let result = self.append_now_with_details(record, details).map_err(LogError::from);
        Box::pin(async move { result })
    }

    fn trust(&self) -> Trust {
        MemoryLog::trust(self).clone()
    }

    fn signer(&self) -> Option<PublicKey> {
        MemoryLog::signer(self)
    }

    async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError> {
        Ok(Box::new(MemoryCursor { log: self.clone(), next: from }))
    }

    async fn end_offset(&self) -> Result<Offset, LogError> {
        Ok(self.end())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), LogError> {
        Ok(())
    }
}

struct MemoryCursor {
    log: MemoryLog,
    next: Offset,
}

/// Most records one batch returns, like a Kafka fetch.
const BATCH_RECORDS_MAX: usize = 500;

#[async_trait::async_trait]
impl LogCursor for MemoryCursor {
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<FetchedRecord>, LogError> {
        let next = self.next;
        let arrived = std::future::poll_fn(|cx| self.log.poll_end(next, cx));
        let _ = tokio::time::timeout(max_wait, arrived).await;
        let batch = self.log.records_between(self.next, BATCH_RECORDS_MAX);
        self.next += batch.len() as Offset;
        Ok(batch)
    }

    fn position(&self) -> Offset {
        self.next
    }
}
