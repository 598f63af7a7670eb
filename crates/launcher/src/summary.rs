//! What the whole log says: verdicts per key and who won the races, for `status` and the demo.
//!
//! [`LogSummary::apply`] is pure (records in, tallies out); [`LogSummary::read`] feeds it the
//! log once, up to the end seen when it starts.

use std::collections::BTreeMap;
use std::time::Duration;

use competing_transformers::canonical::{CanonicalRule, KeyStats, Verdict};
use competing_transformers::event::EventSourceKey;
use competing_transformers::record::{FetchedRecord, Record};
use competing_transformers_kafka::{EventLog, LogError};

/// How long one fetch waits while reading the log to its end.
const FETCH_WAIT: Duration = Duration::from_millis(200);

/// One writer's events on one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterTally {
    /// Its copies that became canonical: races won (or plain writes).
    pub won: u64,
    /// Its copies that arrived second: races lost.
    pub lost: u64,
    /// Its copies with a digest different from the canonical one.
    pub divergent: u64,
    /// Its copies whose index was ahead of the count.
    pub rejected: u64,
}

/// The canonical rule over the whole log, plus per writer tallies.
#[derive(Clone, Debug, Default)]
pub struct LogSummary {
    rule: CanonicalRule,
    writers: BTreeMap<(EventSourceKey, String), WriterTally>,
    records: u64,
}

impl LogSummary {
    /// Applies the rule to one record (in offset order) and tallies its events by writer.
    pub fn apply(&mut self, fetched: &FetchedRecord) {
        self.records += 1;
        let decoded = Record::decode_fetched(fetched);
        let Ok(verdicts) = self.rule.apply(fetched.offset, decoded.as_ref()) else { return };
        let record = decoded.expect("the rule judged it, so it decoded");
        for (event, verdict) in record.events.iter().zip(verdicts) {
            let tally = self.writers.entry((event.key.clone(), record.writer.clone())).or_default();
            match verdict {
                Verdict::Canonical { .. } => tally.won += 1,
                Verdict::Duplicate { .. } => tally.lost += 1,
                Verdict::Divergent { .. } => tally.divergent += 1,
                Verdict::Rejected { .. } => tally.rejected += 1,
            }
        }
    }

    /// Reads `log` from its start to the end seen now.
    pub async fn read<L: EventLog>(log: &L) -> Result<Self, LogError> {
        let end = log.end_offset().await?;
        let mut cursor = log.cursor(0).await?;
        let mut summary = Self::default();
        while cursor.position() < end {
            for fetched in cursor.next_batch(FETCH_WAIT).await? {
                summary.apply(&fetched);
            }
        }
        Ok(summary)
    }

    /// Every key with its verdict counts, sorted by key.
    pub fn keys(&self) -> Vec<(EventSourceKey, KeyStats)> {
        self.rule.all_stats()
    }

    /// The verdict counts of `key`.
    pub fn key(&self, key: &EventSourceKey) -> KeyStats {
        self.rule.stats(key)
    }

    /// The writers of `key`, most races won first.
    pub fn writers(&self, key: &EventSourceKey) -> Vec<(String, WriterTally)> {
        let mut writers: Vec<(String, WriterTally)> = self
            .writers
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, writer), tally)| (writer.clone(), *tally))
            .collect();
        writers.sort_by(|a, b| b.1.won.cmp(&a.1.won).then_with(|| a.0.cmp(&b.0)));
        writers
    }

    /// Records that did not decode.
    pub fn malformed(&self) -> u64 {
        self.rule.malformed()
    }

    /// Records read, malformed ones included.
    pub fn records(&self) -> u64 {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::event::Event;
    use competing_transformers::record::Record;

    fn fetched(offset: u64, writer: &str, index: Option<u64>, payload: &[u8]) -> FetchedRecord {
        let key = EventSourceKey::new("out").unwrap();
        let event = Event::new(key.clone(), index, None, 0, "text/plain", payload.to_vec());
        let encoded = Record { source: key, writer: writer.into(), events: vec![event] }.encode().unwrap();
        FetchedRecord { offset, key: Some(encoded.key), value: Some(encoded.value), ..Default::default() }
    }

    #[test]
    fn races_are_credited_to_the_writer_of_the_canonical_copy() {
        let mut summary = LogSummary::default();
        summary.apply(&fetched(0, "a", Some(0), b"x"));
        summary.apply(&fetched(1, "b", Some(0), b"x"));
        summary.apply(&fetched(2, "b", Some(1), b"y"));
        summary.apply(&fetched(3, "a", Some(1), b"other"));
        summary.apply(&fetched(4, "a", Some(9), b"z"));
        summary.apply(&FetchedRecord { offset: 5, value: Some(b"junk".to_vec()), ..Default::default() });
        let key = EventSourceKey::new("out").unwrap();
        assert_eq!(
            summary.writers(&key),
            [
                ("a".to_string(), WriterTally { won: 1, lost: 0, divergent: 1, rejected: 1 }),
                ("b".to_string(), WriterTally { won: 1, lost: 1, divergent: 0, rejected: 0 }),
            ]
        );
        assert_eq!(summary.key(&key).canonical, 2);
        assert_eq!((summary.malformed(), summary.records()), (1, 6));
    }
}
