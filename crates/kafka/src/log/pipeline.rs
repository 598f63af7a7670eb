//! The log's API from `docs/DESIGN.md` on top of any [`EventLog`]: `write`, `exists_or_write`,
//! `stream_events` and the computed counts.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{EventLog, LogCursor};
use crate::error::LogError;
use competing_transformers::canonical::{CanonicalRule, Verdict};
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

/// One pipeline (one partition) of the distributed event log, read through the canonical
/// rule.
pub struct Pipeline<L: EventLog> {
    log: Arc<L>,
    writer: String,
    tail: Mutex<Option<Tail>>,
}

/// A reader that has applied the rule to everything before `rule.next_offset()`.
struct Tail {
    cursor: Box<dyn LogCursor>,
    rule: CanonicalRule,
}

impl Tail {
    /// Reads on until every record below `until` is applied, handing each to `visit`.
    async fn advance(
        &mut self,
        until: Offset,
        mut visit: impl FnMut(Offset, &RecordView<'_>, &[Verdict]),
    ) -> Result<(), LogError> {
        while self.rule.next_offset() < until && self.cursor.position() < until {
            for fetched in self.cursor.next_batch(FETCH_WAIT).await? {
                let decoded = RecordView::parse_fetched(&fetched);
                if let Ok(verdicts) = self.rule.apply_view(fetched.offset, decoded.as_ref()) {
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
        Self { log, writer: writer.into(), tail: Mutex::new(None) }
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
                verdict = verdicts.first().copied();
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

    /// The number of canonical events of `key` up to the current end of the log.
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

    /// The canonical events of `keys` (all keys when empty), in log order, from the record
    /// at offset `from` on. The rule is applied from the start of the log, so verdicts are
    /// the same as any other reader's.
    pub async fn stream_events(&self, keys: &[EventSourceKey], from: Offset) -> Result<EventStream, LogError> {
        Ok(EventStream {
            cursor: self.log.cursor(0).await?,
            rule: CanonicalRule::default().with_trust(self.log.trust()),
            keys: keys.to_vec(),
            from,
            ready: VecDeque::new(),
        })
    }

    async fn tail<'a>(&self, guard: &'a mut Option<Tail>) -> Result<&'a mut Tail, LogError> {
        if guard.is_none() {
            *guard = Some(Tail {
                cursor: self.log.cursor(0).await?,
                rule: CanonicalRule::default().with_trust(self.log.trust()),
            });
        }
        Ok(guard.as_mut().expect("just set"))
    }
}

/// A subscription: canonical events of some keys, in log order.
pub struct EventStream {
    cursor: Box<dyn LogCursor>,
    rule: CanonicalRule,
    keys: Vec<EventSourceKey>,
    from: Offset,
    ready: VecDeque<CanonicalEvent>,
}

impl EventStream {
    /// The next canonical event, waiting up to `max_wait`; `None` when none came in time.
    pub async fn next_within(&mut self, max_wait: Duration) -> Result<Option<CanonicalEvent>, LogError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            if let Some(event) = self.ready.pop_front() {
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
        let decoded = if self.keys.is_empty() {
            RecordView::parse_fetched(fetched)
        } else {
            // Following some keys: a record holding none of them is stepped over without
            // checking its digests, the costly part of decoding.
            match RecordView::parse_fetched_unverified(fetched) {
                Ok(view) if !view.events.iter().any(|e| self.keys.iter().any(|k| k.as_str() == e.key)) => {
                    self.rule.pass(fetched.offset);
                    return;
                }
                Ok(view) => view.verify().map(|()| view),
                Err(error) => Err(error),
            }
        };
        let Ok(verdicts) = self.rule.apply_view(fetched.offset, decoded.as_ref()) else { return };
        if fetched.offset < self.from {
            return;
        }
        let record = decoded.expect("decoded");
        for (event, verdict) in record.events.iter().zip(verdicts) {
            if let Verdict::Canonical { index } = verdict {
                let key = if self.keys.is_empty() {
                    Some(EventSourceKey::checked(event.key))
                } else {
                    self.keys.iter().find(|k| k.as_str() == event.key).cloned()
                };
                if let Some(key) = key {
                    self.ready.push_back(CanonicalEvent {
                        offset: fetched.offset,
                        writer: record.writer.to_string(),
                        event: Event { index: Some(index), ..event.to_event_with_key(key) },
                        detail: event.index.and_then(|index| Detail::find(&fetched.details, index)),
                    });
                }
            }
        }
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

    /// What the stream's rule has seen so far (counts, duplicates, malformed records). A
    /// stream of some keys only steps over records that hold none of them: its rule knows
    /// those keys, not the others.
    pub fn rule(&self) -> &CanonicalRule {
        &self.rule
    }
}
