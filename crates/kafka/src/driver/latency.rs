//! How long a replica waits from reading an input to reading its canonical answer, on its own
//! clock.
//!
//! Not from the input record's timestamp: that is another host's wall clock. The replica
//! notes when it read each input (live only: a replay's latency means nothing) and, when it
//! first reads an output or dead letter naming that input as its cause, how long ago that
//! was. The first answer read is the canonical one (the log's order decides), whichever
//! replica wrote it; later copies find the input already answered and are not counted.

use std::collections::VecDeque;

use tokio::time::Instant;

use competing_transformers::event::{EventSourceKey, Offset};
use competing_transformers::record::{FetchedRecord, RecordView};

/// The upper bounds of the histogram's buckets, in microseconds (1 ms to 10 s).
pub const LATENCY_BOUNDS_US: [u64; 12] =
    [1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000];
/// Most inputs awaiting their answer that are remembered: an input with no output at all
/// (a DET may answer with none) must not grow the replica; the oldest are forgotten first.
const AWAITED_MAX: usize = 10_000;

/// Input→canonical-output latencies as plain numbers: per bucket of [`LATENCY_BOUNDS_US`]
/// (not cumulative; the last entry counts what is above every bound), their count and sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations per bucket; index `LATENCY_BOUNDS_US.len()` is the overflow bucket.
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// Observations.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn observe(&mut self, latency_us: u64) {
        let bucket = LATENCY_BOUNDS_US.iter().position(|bound| latency_us <= *bound).unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(latency_us);
    }

    /// This histogram plus `other` (a replica's runs added up).
    pub fn plus(&self, other: &Self) -> Self {
        let mut sum = self.clone();
        for (mine, theirs) in sum.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        sum.count += other.count;
        sum.sum_us = sum.sum_us.saturating_add(other.sum_us);
        sum
    }
}

/// Inputs read live and not answered yet, and the latencies seen so far.
#[derive(Default)]
pub(super) struct LatencyTracker {
    awaited: Awaited,
    pub(super) histogram: LatencyHistogram,
}

/// Inputs awaiting their answer, by offset: a queue in offset order, since inputs are read
/// in log order and mostly answered in it too (a map cost a node an input). An answered
/// input leaves a gap, dropped once it reaches the front.
#[derive(Default)]
struct Awaited {
    queue: VecDeque<(Offset, Option<Instant>)>,
    /// Entries of `queue` still awaited.
    len: usize,
}

impl Awaited {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Notes that the input at `offset` was read at `now`, unless it already awaits.
    fn insert(&mut self, offset: Offset, now: Instant) {
        if self.queue.back().is_none_or(|(last, _)| *last < offset) {
            self.queue.push_back((offset, Some(now)));
            self.len += 1;
            return;
        }
        // Read again (a cursor moved back): the first read stands.
        match self.queue.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(at) => {
                let read = &mut self.queue[at].1;
                if read.is_none() {
                    *read = Some(now);
                    self.len += 1;
                }
            }
            Err(at) => {
                self.queue.insert(at, (offset, Some(now)));
                self.len += 1;
            }
        }
    }

    /// When the input at `offset` was read, if it awaits; it awaits no more.
    fn remove(&mut self, offset: Offset) -> Option<Instant> {
        // Answers mostly come in input order: the front first.
        let at = if self.queue.front().is_some_and(|(o, _)| *o == offset) {
            0
        } else {
            self.queue.binary_search_by_key(&offset, |(o, _)| *o).ok()?
        };
        let read = self.queue[at].1.take()?;
        self.len -= 1;
        while self.queue.front().is_some_and(|(_, read)| read.is_none()) {
            self.queue.pop_front();
        }
        Some(read)
    }

    /// Forgets the oldest inputs until at most `max` await.
    fn keep_at_most(&mut self, max: usize) {
        while self.len > max {
            if let Some((_, Some(_))) = self.queue.pop_front() {
                self.len -= 1;
            }
        }
    }
}

impl LatencyTracker {
    /// Notes the inputs of a batch read at `now` (when `live`) and the answers it holds.
    pub(super) fn on_batch(
        &mut self,
        records: &[FetchedRecord],
        inputs: &[EventSourceKey],
        answers: [&EventSourceKey; 2],
        live: bool,
        now: Instant,
    ) {
        if !live && self.awaited.is_empty() {
            // Catching up with nothing awaited: nothing to note and nothing to time, so the
            // records the core parses anyway are not parsed a second time here.
            return;
        }
        let named = |source: &[u8]| answers.iter().copied().chain(inputs).any(|key| key.as_str().as_bytes() == source);
        for record in records {
            // Only records under a key it follows are parsed (a record's Kafka key is its
            // source; a replica's records go under its output key, dead letters included).
            if !record.key.as_deref().is_some_and(named) {
                continue;
            }
            let Some(Ok(view)) = record.value.as_deref().map(RecordView::parse_unverified) else { continue };
            for event in &view.events {
                if answers.iter().any(|key| key.as_str() == event.key) {
                    if let Some(read) = event.cause.and_then(|cause| self.awaited.remove(cause)) {
                        let waited = now.saturating_duration_since(read).as_micros();
                        self.histogram.observe(u64::try_from(waited).unwrap_or(u64::MAX));
                    }
                } else if live && inputs.iter().any(|key| key.as_str() == event.key) {
                    self.awaited.insert(record.offset, now);
                }
            }
        }
        self.awaited.keep_at_most(AWAITED_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::event::Event;
    use competing_transformers::record::Record;

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    /// A fetched record at `offset` holding one event under `source`, answering `cause`.
    fn fetched(offset: Offset, source: &str, cause: Option<Offset>) -> FetchedRecord {
        let event = Event::new(key(source), Some(0), cause, 1, "application/json", b"{}".to_vec());
        let encoded = Record { source: key(source), writer: "w".into(), events: vec![event] }.encode().unwrap();
        FetchedRecord {
            offset,
            timestamp_ms: None,
            key: Some(encoded.key),
            value: Some(encoded.value),
            details: Vec::new(),
        }
    }

    #[test]
    fn an_input_is_timed_to_its_first_answer_only_and_only_when_read_live() {
        let (input, output, dead) = (key("in"), key("echo"), key("echo.dead-letters"));
        let mut tracker = LatencyTracker::default();
        let start = Instant::now();
        // Offset 0 read while catching up: never timed. Offset 1 read live.
        tracker.on_batch(&[fetched(0, "in", None)], std::slice::from_ref(&input), [&output, &dead], false, start);
        tracker.on_batch(&[fetched(1, "in", None)], std::slice::from_ref(&input), [&output, &dead], true, start);
        let later = start + std::time::Duration::from_millis(3);
        let answers = [fetched(2, "echo", Some(0)), fetched(3, "echo", Some(1)), fetched(4, "echo", Some(1))];
        tracker.on_batch(&answers, std::slice::from_ref(&input), [&output, &dead], true, later);
        assert_eq!(tracker.histogram.count, 1, "one live input, its duplicate answer not counted again");
        assert_eq!(tracker.histogram.sum_us, 3_000);
        assert!(tracker.awaited.is_empty());
    }

    #[test]
    fn awaited_inputs_keep_their_first_read_and_the_oldest_are_forgotten_first() {
        let start = Instant::now();
        let later = start + std::time::Duration::from_millis(1);
        let mut awaited = Awaited::default();
        for offset in [1, 3, 5] {
            awaited.insert(offset, start);
        }
        awaited.insert(3, later);
        awaited.insert(2, later);
        assert_eq!(awaited.remove(3), Some(start), "the first read stands");
        assert_eq!(awaited.remove(3), None);
        assert_eq!(awaited.remove(1), Some(start));
        assert_eq!(awaited.queue.front().map(|(o, _)| *o), Some(2), "answered ones at the front are dropped");
        awaited.insert(3, later);
        awaited.keep_at_most(1);
        assert_eq!((awaited.remove(2), awaited.remove(3), awaited.remove(5)), (None, None, Some(start)));
        assert!(awaited.is_empty());
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_that_holds_it() {
        let mut histogram = LatencyHistogram::default();
        histogram.observe(1_000);
        histogram.observe(1_001);
        histogram.observe(20_000_000);
        assert_eq!(histogram.buckets[0], 1);
        assert_eq!(histogram.buckets[1], 1);
        assert_eq!(histogram.buckets[LATENCY_BOUNDS_US.len()], 1);
        assert_eq!(histogram.plus(&histogram).count, 6);
        assert_eq!(histogram.sum_us, 20_002_001);
    }
}
