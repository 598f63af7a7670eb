//! The log's API from `docs/DESIGN.md` on top of any [`EventLog`]: `write`, `exists_or_write`,
//! `stream_events` and the computed counts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{EventLog, LogCursor};
use crate::error::LogError;
use competing_transformers::canonical::{CanonicalRule, Verdict, DIGEST_WINDOW_DEFAULT};
use competing_transformers::dead_letter::Detail;
use competing_transformers::event::{Event, EventSourceKey, Offset};
use competing_transformers::record::{FetchedRecord, Record, RecordView};

/// How long one fetch waits for new records before checking again.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// The result of [`Pipeline::exists_or_write`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WriteOutcome {
    /// The events are canonical from `index` on; the record sits at `offset`.
    Written {
        /// Where the record landed.
        offset: Offset,
        /// Index of the first event.
        index: u64,
    },
    /// An event was already canonical at `index`: the write had no effect.
    Exists {
        /// The index asked for.
        index: u64,
        /// Where the canonical event is, when known.
        winner: Option<Offset>,
        /// Whether its digest equals ours, when known.
        same_digest: Option<bool>,
    },
    /// `index` was ahead of the count: the write had no effect.
    Rejected {
        /// The index asked for.
        index: u64,
        /// The key's count when the write was judged.
        count: u64,
    },
}

/// A canonical event, as subscribers see it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CanonicalEvent {
    /// Where its record sits in the log.
    pub offset: Offset,
    /// The replica or source that wrote the winning copy.
    pub writer: String,
    /// The event, with `index` set to its canonical index.
    pub event: Event,
    /// For a dead letter, the advisory detail the winning copy's record carries for it (the
    /// version that computed it, the library's or panic's text): never digested.
    pub detail: Option<Detail>,
}

/// Where a reader starts, and what the canonical rule knows there: the log's start (every
/// key at count 0), or a stored position with the counts of some keys, each known from a
/// record offset on (a snapshot's, a sink's stored position).
///
/// A key's verdicts depend on its own events alone, so a reader may take up each key at its
/// own offset: events of a key before its offset are stepped over, and from there on the key
/// is judged from its count. A key with no count is not followed at all: its verdicts cannot
/// be known without the log before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    position: Offset,
    /// Keys known from an offset at or after `position`, with their counts there.
    known: BTreeMap<EventSourceKey, KnownCount>,
    /// Whether every other key is known too: at count 0 from `position` on.
    every_key: bool,
}

/// A key's canonical count at a record offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownCount {
    /// The record offset from which the key is followed.
    pub from: Offset,
    /// Its canonical events in the log before `from`.
    pub count: u64,
}

impl Default for Resume {
    fn default() -> Self {
        Self::origin()
    }
}

impl Resume {
    /// The log's start: every key, at count 0. The same as resuming at offset 0 with no counts.
    pub fn origin() -> Self {
        Self::every_key(0, [])
    }

    /// At `position`, knowing `counts` there; keys absent from it are not followed.
    pub fn at(position: Offset, counts: impl IntoIterator<Item = (EventSourceKey, u64)>) -> Self {
        Self::per_key(position, counts.into_iter().map(|(key, count)| (key, KnownCount { from: position, count })))
    }

    /// At `position`, knowing `counts` there and every other key at count 0 (had no canonical
    /// event before `position`): what a reader of every key stores.
    pub fn every_key(position: Offset, counts: impl IntoIterator<Item = (EventSourceKey, u64)>) -> Self {
        Self { every_key: true, ..Self::at(position, counts) }
    }

    /// Reading from `position`, each key from its own offset (at or after `position`) on;
    /// keys absent are not followed.
    pub fn per_key(position: Offset, keys: impl IntoIterator<Item = (EventSourceKey, KnownCount)>) -> Self {
        let known: BTreeMap<_, _> = keys.into_iter().collect();
        assert!(known.values().all(|k| k.from >= position), "a key is taken up at or after the reader's position");
        Self { position, known, every_key: false }
    }

    /// This start for a reader of `keys` alone: each as known here, the others not followed.
    pub fn restricted(&self, keys: &[EventSourceKey]) -> Self {
        let known = keys.iter().filter_map(|key| self.known(key).map(|known| (key.clone(), known)));
        Self::per_key(self.position, known)
    }

    /// Where the reader's cursor opens.
    pub fn position(&self) -> Offset {
        self.position
    }

    /// Whether this is the log's start, every key known.
    pub fn is_origin(&self) -> bool {
        self.position == 0 && self.every_key && self.known.values().all(|k| k.from == 0 && k.count == 0)
    }

    /// What is known of `key`, if anything.
    pub fn known(&self, key: &EventSourceKey) -> Option<KnownCount> {
        match self.known.get(key) {
            Some(known) => Some(*known),
            None => self.every_key.then_some(KnownCount { from: self.position, count: 0 }),
        }
    }

    /// Whether a reader from here judges `key`'s event in the record at `offset`.
    pub fn follows(&self, key: &str, offset: Offset) -> bool {
        match self.known.get(key) {
            Some(known) => offset >= known.from,
            None => self.every_key,
        }
    }

    /// The rule at the reader's position, to apply to records from there with
    /// [`CanonicalRule::apply_view_where`] and [`Resume::follows`]: it judges a key's events
    /// only from the key's offset on, so the key's count at the position is, as far as the
    /// rule can tell, its count there.
    pub fn rule(&self) -> CanonicalRule {
        let counts: Vec<(EventSourceKey, u64)> =
            self.known.iter().map(|(key, known)| (key.clone(), known.count)).collect();
        CanonicalRule::resumed(DIGEST_WINDOW_DEFAULT, self.position, &counts)
    }
}

/// One pipeline (one partition) of the distributed event log, read through the canonical
/// rule.
pub struct Pipeline<L: EventLog> {
    log: Arc<L>,
    writer: String,
    start: Resume,
    tail: Mutex<Option<Tail>>,
}

/// A reader that has applied the rule to everything before `rule.next_offset()`.
struct Tail {
    cursor: Box<dyn LogCursor>,
    rule: CanonicalRule,
    start: Resume,
}

impl Tail {
    /// Reads on until every record below `until` is applied, handing each to `visit`.
    async fn advance(
        &mut self,
        until: Offset,
        mut visit: impl FnMut(Offset, &RecordView<'_>, &[Option<Verdict>]),
    ) -> Result<(), LogError> {
        while self.rule.next_offset() < until && self.cursor.position() < until {
            for fetched in self.cursor.next_batch(FETCH_WAIT).await? {
                let decoded = RecordView::parse_fetched(&fetched);
                let start = &self.start;
                let follows = |key: &str| start.follows(key, fetched.offset);
                if let Ok(verdicts) = self.rule.apply_view_where(fetched.offset, decoded.as_ref(), follows) {
                    visit(fetched.offset, decoded.as_ref().expect("decoded"), &verdicts);
                }
            }
        }
        Ok(())
    }
}

impl<L: EventLog> Pipeline<L> {
    /// A pipeline over `log`; records it writes carry `writer` as their replica id.
    pub fn new(log: Arc<L>, writer: impl Into<String>) -> Self {
        Self::resumed(log, writer, Resume::origin())
    }

    /// A pipeline whose readers (its streams, and the reader `exists_or_write` judges by)
    /// start at `start` instead of the log's start: they follow only the keys it knows.
    pub fn resumed(log: Arc<L>, writer: impl Into<String>, start: Resume) -> Self {
        Self { log, writer: writer.into(), start, tail: Mutex::new(None) }
    }

    /// Where its readers start.
    pub fn start(&self) -> &Resume {
        &self.start
    }

    /// The log underneath.
    pub fn log(&self) -> &Arc<L> {
        &self.log
    }

    /// Appends `events` under `key` unconditionally, as one atomic group; each takes the
    /// next index of its key. Returns where the record landed.
    pub async fn write(&self, key: &EventSourceKey, events: Vec<Event>) -> Result<Offset, LogError> {
        self.log.check_signer(key.as_str())?;
        let events = events.into_iter().map(|e| Event { key: key.clone(), index: None, ..e }).collect();
        self.log.append(&Record { source: key.clone(), writer: self.writer.clone(), events }).await
    }

    /// Appends `events` under `key` at `index, index + 1, …` only if `index` is the key's
    /// count when the record is read; otherwise the write has no effect. The events form one
    /// atomic group.
    pub async fn exists_or_write(
        &self,
        key: &EventSourceKey,
        index: u64,
        events: Vec<Event>,
    ) -> Result<WriteOutcome, LogError> {
        assert!(
            self.start.known(key).is_some(),
            "`{key}` is written with exists_or_write only by a pipeline whose start knows its count"
        );
        self.log.check_signer(key.as_str())?;
        let mut guard = self.tail.lock().await;
        let tail = self.tail(&mut guard).await?;
        let first_digest = events.first().map(|e| e.digest);
        // Already known to exist: skip the write.
        if index < tail.rule.count(key) {
            let canonical = tail.rule.canonical_at(key, index);
            return Ok(WriteOutcome::Exists {
                index,
                winner: canonical.map(|(_, at)| at),
                same_digest: canonical.map(|(d, _)| Some(d) == first_digest),
            });
        }
        let events: Vec<Event> =
            events.into_iter().zip(index..).map(|(e, i)| Event { key: key.clone(), index: Some(i), ..e }).collect();
        let record = Record { source: key.clone(), writer: self.writer.clone(), events };
        let offset = self.log.append(&record).await?;
        let mut verdict = None;
        tail.advance(offset + 1, |at, _, verdicts| {
            if at == offset {
                verdict = verdicts.first().copied().flatten();
            }
        })
        .await?;
        Ok(match verdict.expect("our record was read back") {
            Verdict::Canonical { index } => WriteOutcome::Written { offset, index },
            Verdict::Duplicate { index, winner } => {
                WriteOutcome::Exists { index, winner, same_digest: winner.map(|_| true) }
            }
            Verdict::Divergent { index, winner } => {
                WriteOutcome::Exists { index, winner: Some(winner), same_digest: Some(false) }
            }
            Verdict::Rejected { index, count } => WriteOutcome::Rejected { index, count },
            // Checked before writing: only a trust table changed since can bring this.
            Verdict::Unauthorized { .. } => {
                return Err(LogError::Unsigned {
                    key: key.to_string(),
                    signer: self.log.signer().map(|signer| signer.to_base64()),
                })
            }
        })
    }

    /// The number of canonical events of `key` up to the current end of the log (0 for a key
    /// the pipeline's start does not know).
    pub async fn count(&self, key: &EventSourceKey) -> Result<u64, LogError> {
        let mut guard = self.tail.lock().await;
        let end = self.log.end_offset().await?;
        let tail = self.tail(&mut guard).await?;
        tail.advance(end, |_, _, _| {}).await?;
        Ok(tail.rule.count(key))
    }

    /// The rule's state after reading up to the current end of the log: counts, duplicates,
    /// rejections and malformed records per key.
    pub async fn snapshot(&self) -> Result<CanonicalRule, LogError> {
        let mut guard = self.tail.lock().await;
        let end = self.log.end_offset().await?;
        let tail = self.tail(&mut guard).await?;
        tail.advance(end, |_, _, _| {}).await?;
        Ok(tail.rule.clone())
    }

    /// The canonical events of `keys` (all keys when empty: all the start knows), in log
    /// order, from the record at offset `from` on. The rule is applied from the pipeline's
    /// start (the log's start unless [`Pipeline::resumed`]), so verdicts are the same as any
    /// other reader's.
    pub async fn stream_events(&self, keys: &[EventSourceKey], from: Offset) -> Result<EventStream, LogError> {
        let followed = |key: &EventSourceKey| keys.is_empty() || keys.contains(key);
        let handed =
            self.start.known.iter().filter(|(k, _)| followed(k)).map(|(k, known)| (k.clone(), known.count)).collect();
        Ok(EventStream {
            cursor: self.log.cursor(self.start.position).await?,
            rule: self.start.rule().with_trust(self.log.trust()),
            start: self.start.clone(),
            keys: keys.to_vec(),
            from,
            ready: VecDeque::new(),
            handed,
        })
    }

    async fn tail<'a>(&self, guard: &'a mut Option<Tail>) -> Result<&'a mut Tail, LogError> {
        if guard.is_none() {
            let cursor = self.log.cursor(self.start.position).await?;
            let rule = self.start.rule().with_trust(self.log.trust());
            *guard = Some(Tail { cursor, rule, start: self.start.clone() });
        }
        Ok(guard.as_mut().expect("just set"))
    }
}

/// A subscription: canonical events of some keys, in log order.
pub struct EventStream {
    cursor: Box<dyn LogCursor>,
    rule: CanonicalRule,
    start: Resume,
    keys: Vec<EventSourceKey>,
    from: Offset,
    ready: VecDeque<CanonicalEvent>,
    /// Per followed key, canonical events handed out or hidden (before `from`) so far.
    handed: HashMap<EventSourceKey, u64>,
}

impl EventStream {
    /// The next canonical event, waiting up to `max_wait`; `None` when none came in time.
    pub async fn next_within(&mut self, max_wait: Duration) -> Result<Option<CanonicalEvent>, LogError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.hand(&event.event);
                return Ok(Some(event));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let batch = self.cursor.next_batch((deadline - now).min(FETCH_WAIT)).await?;
            for fetched in &batch {
                self.read(fetched);
            }
        }
    }

    /// Applies the rule to one record and queues its canonical events of the stream's keys.
    fn read(&mut self, fetched: &FetchedRecord) {
        let (keys, start, offset) = (&self.keys, &self.start, fetched.offset);
        let follows =
            |key: &str| (keys.is_empty() || keys.iter().any(|k| k.as_str() == key)) && start.follows(key, offset);
        let decoded = if self.keys.is_empty() && self.start.is_origin() {
            RecordView::parse_fetched(fetched)
        } else {
            // Following some keys: a record holding none of them is stepped over without
            // checking its digests, the costly part of decoding.
            match RecordView::parse_fetched_unverified(fetched) {
                Ok(view) if !view.events.iter().any(|e| follows(e.key)) => {
                    self.rule.pass(offset);
                    return;
                }
                Ok(view) => view.verify().map(|()| view),
                Err(error) => Err(error),
            }
        };
        let Ok(verdicts) = self.rule.apply_view_where(offset, decoded.as_ref(), follows) else { return };
        let record = decoded.expect("decoded");
        for (view, verdict) in record.events.iter().zip(verdicts) {
            let Some(Verdict::Canonical { index }) = verdict else { continue };
            let key = match self.keys.iter().find(|k| k.as_str() == view.key) {
                Some(key) => key.clone(),
                None => EventSourceKey::checked(view.key),
            };
            let event = Event { index: Some(index), ..view.to_event_with_key(key) };
            if offset < self.from {
                self.hand(&event);
                continue;
            }
            self.ready.push_back(CanonicalEvent {
                offset,
                writer: record.writer.to_string(),
                event,
                // Details are keyed by the index the writer claimed.
                detail: view.index.and_then(|claimed| Detail::find(&fetched.details, claimed)),
            });
        }
    }

    /// Counts `event` as handed out (or hidden).
    fn hand(&mut self, event: &Event) {
        let index = event.index.expect("canonical events carry their index");
        self.handed.insert(event.key.clone(), index + 1);
    }

    /// Collects canonical events until `count` have arrived or `max_wait` passes with none.
    pub async fn collect(&mut self, count: usize, max_wait: Duration) -> Result<Vec<CanonicalEvent>, LogError> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            match self.next_within(max_wait).await? {
                Some(event) => events.push(event),
                None => break,
            }
        }
        Ok(events)
    }

    /// The offset the stream reads next, past transaction markers: compare it with
    /// [`EventLog::end_offset`] to know when the stream has caught up.
    pub fn position(&self) -> Offset {
        self.cursor.position()
    }

    /// The canonical count of each followed key after the events handed out so far (and
    /// those hidden before `from`): what a sink that has consumed them stores with its
    /// position, when that position is the end of the last record handed out.
    pub fn counts_handed(&self) -> Vec<(EventSourceKey, u64)> {
        let mut counts: Vec<_> = self.handed.iter().map(|(k, c)| (k.clone(), *c)).collect();
        counts.sort();
        counts
    }

    /// What the stream's rule has seen so far (counts, duplicates, malformed records). A
    /// stream of some keys only steps over records that hold none of them: its rule knows
    /// those keys, not the others.
    pub fn rule(&self) -> &CanonicalRule {
        &self.rule
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::MemoryLog;

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    fn event(k: &str, index: Option<u64>, payload: &str) -> Event {
        Event::new(key(k), index, None, 0, "text/plain", payload.as_bytes().to_vec())
    }

    /// Records of `a` and `b`, with a duplicate, a rejection and a two-event group.
    async fn log() -> Arc<MemoryLog> {
        let log = Arc::new(MemoryLog::new());
        let writer = Pipeline::new(log.clone(), "w");
        for i in 0..6u64 {
            writer.exists_or_write(&key("a"), i, vec![event("a", None, &format!("a{i}"))]).await.unwrap();
            writer.exists_or_write(&key("a"), i, vec![event("a", None, &format!("a{i}"))]).await.unwrap();
            writer.write(&key("b"), vec![event("b", None, "b"), event("b", None, "b'")]).await.unwrap();
            writer.exists_or_write(&key("b"), 99, vec![event("b", None, "late")]).await.unwrap();
        }
        log
    }

    async fn read(pipeline: &Pipeline<MemoryLog>, keys: &[EventSourceKey], from: Offset) -> Vec<(Offset, Event)> {
        let mut stream = pipeline.stream_events(keys, from).await.unwrap();
        let events = stream.collect(1_000, Duration::from_millis(50)).await.unwrap();
        events.into_iter().map(|c| (c.offset, c.event)).collect()
    }

    #[tokio::test]
    async fn a_stream_resumed_with_the_counts_at_a_position_reads_what_one_from_zero_reads_there() {
        let log = log().await;
        let from_zero = Pipeline::new(log.clone(), "r");
        let end = log.end_offset().await.unwrap();
        for position in 0..=end {
            let mut before = from_zero.stream_events(&[], 0).await.unwrap();
            let counted: Vec<CanonicalEvent> = before.collect(1_000, Duration::from_millis(50)).await.unwrap();
            let count = |k: &str| counted.iter().filter(|c| c.offset < position && c.event.key == key(k)).count();
            let counts = [(key("a"), count("a") as u64), (key("b"), count("b") as u64)];
            let resumed = Pipeline::resumed(log.clone(), "r", Resume::at(position, counts));
            assert_eq!(read(&resumed, &[], position).await, read(&from_zero, &[], position).await, "at {position}");
            let a = [key("a")];
            assert_eq!(read(&resumed, &a, position).await, read(&from_zero, &a, position).await, "at {position}");
        }
    }

    #[tokio::test]
    async fn each_key_is_taken_up_at_its_own_offset_and_an_unknown_key_is_not_followed() {
        let log = log().await;
        let from_zero = Pipeline::new(log.clone(), "r");
        let all = read(&from_zero, &[], 0).await;
        let count = |k: &str, before: Offset| all.iter().filter(|(o, e)| *o < before && e.key == key(k)).count() as u64;
        let start = Resume::per_key(3, [(key("a"), KnownCount { from: 7, count: count("a", 7) })]);
        let resumed = Pipeline::resumed(log.clone(), "r", start);
        let want: Vec<_> = all.iter().filter(|(o, e)| *o >= 7 && e.key == key("a")).cloned().collect();
        assert_eq!(read(&resumed, &[], 0).await, want);
        let mut stream = resumed.stream_events(&[key("a")], 0).await.unwrap();
        stream.collect(1_000, Duration::from_millis(50)).await.unwrap();
        assert_eq!(stream.counts_handed(), [(key("a"), count("a", u64::MAX))]);
    }

    #[tokio::test]
    async fn exists_or_write_on_a_resumed_pipeline_judges_from_the_stored_count() {
        let log = log().await;
        let count = Pipeline::new(log.clone(), "r").count(&key("a")).await.unwrap();
        let end = log.end_offset().await.unwrap();
        let resumed = Pipeline::resumed(log.clone(), "w2", Resume::at(end, [(key("a"), count)]));
        let stale = resumed.exists_or_write(&key("a"), count - 1, vec![event("a", None, "x")]).await.unwrap();
        assert!(matches!(stale, WriteOutcome::Exists { .. }), "{stale:?}");
        let next = resumed.exists_or_write(&key("a"), count, vec![event("a", None, "x")]).await.unwrap();
        assert!(matches!(next, WriteOutcome::Written { index, .. } if index == count), "{next:?}");
    }
}
