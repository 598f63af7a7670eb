//! `dead-letters redrive`: writes a dead letter's original event back, for a fixed transform.
//!
//! **What is written.** The original event, untouched — payload, content type, effective time
//! — as a new event on the original input key (or `--to`), so a fixed transform processes it
//! like any input and transforms need no unwrapping. Its provenance travels two ways, neither
//! touching the payload:
//! - in the record format: the event's `cause` is the dead letter's log offset (a field every
//!   event has, digested), so the redriven event is recognisable on the log itself;
//! - as a small JSON event on `<NAME>.redrives` ([`Redrive`]): which dead letter, where its
//!   event was written, and the event's digest, for operators and tools.
//!
//! Wrapping the payload was rejected: the transform would have to know about redrives, and
//! its dead letter of a redriven event would wrap a wrapper.
//!
//! **Once, even when two redrives run at once.** The redriven event's digest is a function of
//! the dead letter alone (cause, time, content type, payload), so "already redriven" is "a
//! canonical event of the target with that digest exists". A redrive reads the target's
//! canonical events up to some offset and writes with `exists_or_write` at the count it read
//! there, and only if none of them has the digest. Of two redrives racing, one takes that
//! index; the other's write has no effect, and reading on it finds the event (or another
//! source's event there, and it tries again at the next index). A copy at a later index could
//! only come from a redrive that had read the first copy, so there is never a second one. The
//! `<NAME>.redrives` event is written the same way, once per dead letter. A redrive that died
//! between the two writes finds its event on retry and writes only the missing provenance.
//! (Two dead letters in one record holding byte-identical events with the same effective time
//! share a digest: the second counts as redriven with the first.)
//!
//! **On a truncated log** ([`redrive_from`]) the readers start where `dead-letters list`'s
//! does: each key at the oldest snapshot at or after the log's first offset holding its
//! count (`reading::start_for`), so every dead letter still on the log, and every redrive of
//! it (written after it), is read. No snapshot holds the count of `<NAME>.redrives`, so
//! there the provenance event is written unconditionally, and only by the redrive that wrote
//! the event itself: at most once per dead letter (a redrive that died between its two
//! writes leaves none), rather than exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::out;
use crate::reading::{read_dead_letters_from, ReadDeadLetter};
use crate::Error;
use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::event::{Digest, Event, EventSourceKey, Offset};
use competing_transformers_kafka::{EventLog, EventStream, Pipeline, Resume, WriteOutcome};

/// Content type of `<NAME>.redrives` events.
pub const CONTENT_TYPE_REDRIVE: &str = "application/vnd.competing-transformers.redrive+json";
/// Most attempts to place one event when other sources keep taking the index.
const WRITE_ATTEMPTS_MAX: u32 = 20;
/// Longest wait for one fetch while reading on to the log end.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// The provenance event on `<NAME>.redrives`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    /// The dead-letter stream.
    pub dead_letter_key: String,
    /// The dead letter's index there.
    pub dead_letter_index: u64,
    /// The dead letter's log offset (the redriven event's `cause`).
    pub dead_letter_offset: Offset,
    /// Where the original event was written.
    pub to_key: String,
    /// Its index there.
    pub to_index: u64,
    /// Its digest (hex).
    pub digest: String,
}

/// The stream of redrive provenance events of a transform.
pub fn redrives_key(transformer: &EventSourceKey) -> EventSourceKey {
    EventSourceKey::new(format!("{transformer}.redrives")).unwrap_or_else(|_| transformer.dead_letters())
}

/// The event a redrive writes for `letter` (found at `offset`) on `to`: deterministic, so its
/// digest identifies the redrive.
pub fn redriven_event(letter: &DeadLetter, offset: Offset, to: &EventSourceKey) -> Result<Event, Error> {
    let payload = letter.payload().map_err(|e| {
        Error::Usage(format!(
            "the dead letter at offset {offset} holds a payload that is not base64 ({e}); it cannot be redriven"
        ))
    })?;
    Ok(Event::new(
        to.clone(),
        None,
        Some(offset),
        letter.input.effective_time_ms,
        letter.input.content_type.clone(),
        payload,
    ))
}

/// What the log says about the keys a redrive writes, as far as it has read them: each
/// target's canonical events and the provenance events.
struct Seen {
    /// The canonical events of the targets and of `redrives`, read on as needed.
    stream: EventStream,
    redrives: EventSourceKey,
    /// Canonical events per key: digest → index (the first, if two share a digest).
    digests: HashMap<EventSourceKey, HashMap<Digest, u64>>,
    /// How many canonical events each key has in what was read: every index below it was.
    counts: HashMap<EventSourceKey, u64>,
    /// Dead-letter index → index of its provenance event on `redrives`.
    provenance: BTreeMap<u64, u64>,
    /// Where the reading started: the counts of keys with no event read yet.
    start: Resume,
}

impl Seen {
    /// Reads the canonical events of `targets` and `redrives` (when `start` knows its count)
    /// from `start` up to the log end.
    async fn read<L: EventLog>(
        log: Arc<L>,
        targets: &[EventSourceKey],
        redrives: &EventSourceKey,
        start: Resume,
    ) -> Result<Self, Error> {
        let mut keys = targets.to_vec();
        keys.push(redrives.clone());
        let stream = Pipeline::resumed(log.clone(), "redrive", start.clone()).stream_events(&keys, 0).await?;
        let mut seen = Seen {
            stream,
            redrives: redrives.clone(),
            digests: HashMap::new(),
            counts: HashMap::new(),
            provenance: BTreeMap::new(),
            start,
        };
        seen.read_on(log.as_ref()).await?;
        Ok(seen)
    }

    /// Reads on to the log's current end.
    async fn read_on<L: EventLog>(&mut self, log: &L) -> Result<(), Error> {
        let end = log.end_offset().await?;
        loop {
            // Past the end: only hand over what was fetched, without waiting for more.
            let wait = if self.stream.position() >= end { Duration::ZERO } else { FETCH_WAIT };
            match self.stream.next_within(wait).await? {
                Some(canonical) => self.note(&canonical.event),
                // The stream's position steps over transaction markers, which no record holds.
                None if self.stream.position() >= end => return Ok(()),
                None => {}
            }
        }
    }

    /// Takes in one canonical event (read back, or just written by this redrive).
    fn note(&mut self, event: &Event) {
        let index = event.index.expect("canonical events carry their index");
        if event.key == self.redrives {
            if let Ok(redrive) = serde_json::from_slice::<Redrive>(&event.payload) {
                self.provenance.entry(redrive.dead_letter_index).or_insert(index);
            }
        }
        self.digests.entry(event.key.clone()).or_default().entry(event.digest).or_insert(index);
        let count = self.counts.entry(event.key.clone()).or_default();
        *count = (*count).max(index + 1);
    }

    /// The index of `key`'s canonical event with `digest`, if one was read.
    fn index_of(&self, key: &EventSourceKey, digest: &Digest) -> Option<u64> {
        self.digests.get(key).and_then(|digests| digests.get(digest)).copied()
    }

    fn count(&self, key: &EventSourceKey) -> u64 {
        let at_start = || self.start.known(key).map_or(0, |known| known.count);
        self.counts.get(key).copied().unwrap_or_else(at_start)
    }

    /// Whether the provenance stream's count is known, so its events are placed exactly once.
    fn knows_provenance(&self) -> bool {
        self.start.known(&self.redrives).is_some()
    }
}

/// Appends `event` on its key unless `found` finds it in what `seen` read; returns the index
/// it has and whether this call wrote it. The write goes at the count of what was read, so
/// it lands only if nothing was written on the key since: a concurrent redrive's copy makes
/// it have no effect, and reading on finds that copy.
async fn place<L: EventLog>(
    pipeline: &Pipeline<L>,
    seen: &mut Seen,
    event: Event,
    found: impl Fn(&Seen) -> Option<u64>,
) -> Result<(u64, bool), Error> {
    let key = event.key.clone();
    for _ in 0..WRITE_ATTEMPTS_MAX {
        if let Some(index) = found(seen) {
            return Ok((index, false));
        }
        match pipeline.exists_or_write(&key, seen.count(&key), vec![event.clone()]).await? {
            WriteOutcome::Written { index, .. } => {
                seen.note(&event.clone().with_index(index));
                return Ok((index, true));
            }
            // Another redrive wrote this very event at that index.
            WriteOutcome::Exists { index, same_digest: Some(true), .. } => {
                seen.note(&event.clone().with_index(index));
                return Ok((index, false));
            }
            // Someone wrote on the key since it was read: read on, look again.
            WriteOutcome::Exists { .. } | WriteOutcome::Rejected { .. } => {
                seen.read_on(pipeline.log().as_ref()).await?
            }
        }
    }
    Err(Error::Contended { key: key.to_string(), attempts: WRITE_ATTEMPTS_MAX })
}

/// What a redrive did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Events written by this call.
    pub written: u64,
    /// Dead letters found already redriven.
    pub existing: u64,
}

/// `dead-letters redrive`: redrives dead letter `index` of `transformer` (all when `None`)
/// to its input key or `to`, printing one line per dead letter. Records carry `writer`.
/// Reads the log from offset 0.
pub async fn redrive<L: EventLog>(
    log: Arc<L>,
    transformer: &EventSourceKey,
    index: Option<u64>,
    to: Option<&EventSourceKey>,
    writer: &str,
) -> Result<RedriveReport, Error> {
    redrive_from(log, transformer, index, to, writer, |_| async { Ok(Resume::origin()) }).await
}

/// [`redrive`], its readers of some keys starting where `start` says for those keys.
pub async fn redrive_from<L: EventLog, S>(
    log: Arc<L>,
    transformer: &EventSourceKey,
    index: Option<u64>,
    to: Option<&EventSourceKey>,
    writer: &str,
    start: impl Fn(Vec<EventSourceKey>) -> S,
) -> Result<RedriveReport, Error>
where
    S: std::future::Future<Output = Result<Resume, Error>>,
{
    redrive_labelled(log, transformer, Target { index, to, writer, label: "" }, start).await
}

/// Which dead letters a redrive takes, where to, as whom, and what starts its lines.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Dead letter `index` of the transformer; all of them when `None`.
    pub index: Option<u64>,
    /// The key written instead of each dead letter's input key.
    pub to: Option<&'a EventSourceKey>,
    /// The writer id its records carry.
    pub writer: &'a str,
    /// What starts each line it prints: the pipeline (`p<N> `) on a log of several.
    pub label: &'a str,
}

/// [`redrive_from`] of one pipeline (`log`), whose lines start with `target.label`.
pub async fn redrive_labelled<L: EventLog, S>(
    log: Arc<L>,
    transformer: &EventSourceKey,
    target: Target<'_>,
    start: impl Fn(Vec<EventSourceKey>) -> S,
) -> Result<RedriveReport, Error>
where
    S: std::future::Future<Output = Result<Resume, Error>>,
{
    let Target { index, to, writer, label } = target;
    let dead_letters_key = transformer.dead_letters();
    let letters_start = start(vec![dead_letters_key.clone()]).await?;
    let letters: Vec<ReadDeadLetter> = read_dead_letters_from(log.clone(), &dead_letters_key, letters_start)
        .await?
        .into_iter()
        .map(|(letter, _)| letter)
        .collect();
    let plans = plan(choose(&letters, index, transformer)?, to)?;
    let redrives = redrives_key(transformer);
    let targets: Vec<EventSourceKey> = plans.iter().map(|plan| plan.event.key.clone()).collect();
    let targets_start = start(targets.clone()).await?;
    check_targets_start(&targets_start, &plans)?;
    let mut seen = Seen::read(log.clone(), &targets, &redrives, targets_start.clone()).await?;
    let pipeline = Pipeline::resumed(log, writer, targets_start);
    let mut report = RedriveReport::default();
    for plan in plans {
        let (offset, letter_index, target) = (plan.offset, plan.letter_index, plan.event.key.clone());
        let (to_index, wrote) = redrive_one(&pipeline, &mut seen, &dead_letters_key, &redrives, plan).await?;
        if wrote {
            report.written += 1;
            out(format_args!(
                "{label}dead letter {letter_index} (offset {offset}): written as event {to_index} of `{target}`"
            ))?;
        } else {
            report.existing += 1;
            out(format_args!(
                "{label}dead letter {letter_index} (offset {offset}): already redriven as event {to_index} of `{target}`"
            ))?;
        }
    }
    eprintln!(
        "{label}redrove {} dead letter(s) of `{transformer}`, {} already redriven; provenance on `{redrives}`",
        report.written, report.existing
    );
    Ok(report)
}

/// A redrive of a dead letter is written after it: a target read from after a dead letter
/// could miss its redrive, and write it twice.
fn check_targets_start(start: &Resume, plans: &[Plan]) -> Result<(), Error> {
    for plan in plans {
        let from = start.known(&plan.event.key).map_or(Offset::MAX, |known| known.from);
        if from > plan.offset {
            return Err(Error::Usage(format!(
                "dead letter {} is at offset {}, but `{}` can be read only from offset {from} (the log before is deleted and no older snapshot holds its count), so a redrive of it in between would go unseen; redrive it to a key read from before it (--to)",
                plan.letter_index,
                plan.offset,
                plan.event.key
            )));
        }
    }
    Ok(())
}

/// Dead letter `index` of `letters`, or all of them when `None`.
fn choose<'a>(
    letters: &'a [ReadDeadLetter],
    index: Option<u64>,
    transformer: &EventSourceKey,
) -> Result<Vec<&'a ReadDeadLetter>, Error> {
    let Some(wanted) = index else {
        return Ok(letters.iter().collect());
    };
    let letter = letters.iter().find(|(_, i, _)| *i == wanted).ok_or_else(|| {
        Error::Usage(format!(
            "`{}` has no dead letter {wanted} ({} in all); list them with `transformer-launcher dead-letters list --transformer {transformer}`",
            transformer.dead_letters(),
            letters.len()
        ))
    })?;
    Ok(vec![letter])
}

/// One dead letter to redrive, and the event it becomes.
struct Plan {
    /// The dead letter's log offset.
    offset: Offset,
    /// Its index on the dead-letter stream.
    letter_index: u64,
    /// The original event, on its input key or `--to`.
    event: Event,
}

/// The event each chosen dead letter becomes; fails on the first that cannot be redriven.
fn plan(chosen: Vec<&ReadDeadLetter>, to: Option<&EventSourceKey>) -> Result<Vec<Plan>, Error> {
    let mut plans = Vec::new();
    for (offset, letter_index, letter) in chosen {
        let letter = letter.as_ref().map_err(|raw| {
            Error::Usage(format!("dead letter {letter_index} (offset {offset}) is not one this launcher can read, so it cannot be redriven: {raw}"))
        })?;
        let target = match to {
            Some(to) => to.clone(),
            None => EventSourceKey::new(letter.input.key.clone()).map_err(|e| {
                Error::Usage(format!(
                    "dead letter {letter_index} names input key {:?} ({e}); pass --to KEY",
                    letter.input.key
                ))
            })?,
        };
        let event = redriven_event(letter, *offset, &target)?;
        plans.push(Plan { offset: *offset, letter_index: *letter_index, event });
    }
    Ok(plans)
}

/// Writes one planned event unless the log has it, then its provenance unless the log has
/// one for this dead letter; returns the event's index and whether this call wrote it.
async fn redrive_one<L: EventLog>(
    pipeline: &Pipeline<L>,
    seen: &mut Seen,
    dead_letters_key: &EventSourceKey,
    redrives: &EventSourceKey,
    plan: Plan,
) -> Result<(u64, bool), Error> {
    let Plan { offset, letter_index, event } = plan;
    let (target, digest) = (event.key.clone(), event.digest);
    let (to_index, wrote) = place(pipeline, seen, event, |seen| seen.index_of(&target, &digest)).await?;
    let redrive = Redrive {
        dead_letter_key: dead_letters_key.to_string(),
        dead_letter_index: letter_index,
        dead_letter_offset: offset,
        to_key: target.to_string(),
        to_index,
        digest: digest.to_string(),
    };
    let payload = serde_json::to_vec(&redrive).expect("a redrive always serializes");
    // Time 0 rather than the wall clock: a retry, or a concurrent redrive, builds the same bytes.
    let provenance = Event::new(redrives.clone(), None, Some(offset), 0, CONTENT_TYPE_REDRIVE, payload);
    if seen.knows_provenance() {
        place(pipeline, seen, provenance, |seen| seen.provenance.get(&letter_index).copied()).await?;
    } else if wrote {
        // No count to place it at (a truncated log): only the writer of the event writes it.
        pipeline.write(redrives, vec![provenance]).await?;
    }
    Ok((to_index, wrote))
}
