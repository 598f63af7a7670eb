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
//! **Idempotent on retry.** The redriven event's digest is a function of the dead letter alone
//! (cause, time, content type, payload), so "already redriven" is "a canonical event of the
//! target with that digest exists". A redrive first looks for one, then writes with
//! `exists_or_write` at the target's count: two redrivers racing for the same index produce
//! the same event and one wins; if another source took the index, it looks again and retries
//! at the next one. The `<NAME>.redrives` event is written the same way, once per dead letter.
//! A redrive that died between the two writes finds its event on retry and writes only the
//! missing provenance. (Two dead letters in one record holding byte-identical events with the
//! same effective time share a digest: the second counts as redriven with the first.)

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::out;
use crate::reading::{each_canonical, read_dead_letters, ReadDeadLetter};
use crate::Error;
use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::event::{Digest, Event, EventSourceKey, Offset};
use competing_transformers_kafka::{EventLog, Pipeline, WriteOutcome};

/// Content type of `<NAME>.redrives` events.
pub const CONTENT_TYPE_REDRIVE: &str = "application/vnd.competing-transformers.redrive+json";
/// Most attempts to place one event when other sources keep taking the index.
const WRITE_ATTEMPTS_MAX: u32 = 20;

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

/// What the log says about earlier redrives of one transform.
#[derive(Default)]
struct Seen {
    /// Canonical events per target key: digest → index.
    targets: HashMap<EventSourceKey, HashMap<Digest, u64>>,
    /// Dead-letter indexes with a provenance event.
    provenance: BTreeMap<u64, Redrive>,
}

async fn scan<L: EventLog>(log: Arc<L>, targets: &[EventSourceKey], redrives: &EventSourceKey) -> Result<Seen, Error> {
    let end = log.end_offset().await?;
    let pipeline = Pipeline::new(log, "redrive");
    let mut keys = targets.to_vec();
    keys.push(redrives.clone());
    let mut stream = pipeline.stream_events(&keys, 0).await?;
    let mut seen = Seen::default();
    each_canonical(&mut stream, end, false, |canonical| {
        let index = canonical.event.index.expect("canonical events carry their index");
        if &canonical.event.key == redrives {
            if let Ok(redrive) = serde_json::from_slice::<Redrive>(&canonical.event.payload) {
                seen.provenance.insert(redrive.dead_letter_index, redrive);
            }
        }
        if targets.contains(&canonical.event.key) {
            seen.targets.entry(canonical.event.key.clone()).or_default().insert(canonical.event.digest, index);
        }
        Ok(())
    })
    .await?;
    Ok(seen)
}

/// Appends `event` on its key unless a canonical event with its digest exists; returns the
/// index it has and whether this call wrote it.
async fn place<L: EventLog>(pipeline: &Pipeline<L>, event: Event, known: Option<u64>) -> Result<(u64, bool), Error> {
    if let Some(index) = known {
        return Ok((index, false));
    }
    let key = event.key.clone();
    for _ in 0..WRITE_ATTEMPTS_MAX {
        let count = pipeline.count(&key).await?;
        match pipeline.exists_or_write(&key, count, vec![event.clone()]).await? {
            WriteOutcome::Written { index, .. } => return Ok((index, true)),
            // Another redriver wrote this very event at that index.
            WriteOutcome::Exists { index, same_digest: Some(true), .. } => return Ok((index, false)),
            // Another source took the index: try the next one.
            WriteOutcome::Exists { .. } | WriteOutcome::Rejected { .. } => {}
        }
    }
    Err(Error::Usage(format!(
        "could not place the event on `{key}` in {WRITE_ATTEMPTS_MAX} attempts: other sources keep writing; retry (it is idempotent)"
    )))
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
pub async fn redrive<L: EventLog>(
    log: Arc<L>,
    transformer: &EventSourceKey,
    index: Option<u64>,
    to: Option<&EventSourceKey>,
    writer: &str,
) -> Result<RedriveReport, Error> {
    let dead_letters_key = transformer.dead_letters();
    let letters: Vec<ReadDeadLetter> = read_dead_letters(log.clone(), &dead_letters_key).await?;
    let plans = plan(choose(&letters, index, transformer)?, to)?;
    let redrives = redrives_key(transformer);
    let targets: Vec<EventSourceKey> = plans.iter().map(|plan| plan.event.key.clone()).collect();
    let mut seen = scan(log.clone(), &targets, &redrives).await?;
    let pipeline = Pipeline::new(log, writer);
    let mut report = RedriveReport::default();
    for plan in plans {
        let (offset, letter_index, target) = (plan.offset, plan.letter_index, plan.event.key.clone());
        let (to_index, wrote) = redrive_one(&pipeline, &mut seen, &dead_letters_key, &redrives, plan).await?;
        if wrote {
            report.written += 1;
            out(format_args!(
                "dead letter {letter_index} (offset {offset}): written as event {to_index} of `{target}`"
            ))?;
        } else {
            report.existing += 1;
            out(format_args!(
                "dead letter {letter_index} (offset {offset}): already redriven as event {to_index} of `{target}`"
            ))?;
        }
    }
    eprintln!(
        "redrove {} dead letter(s) of `{transformer}`, {} already redriven; provenance on `{redrives}`",
        report.written, report.existing
    );
    Ok(report)
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

/// Writes one planned event unless `seen` knows it, then its provenance unless `seen` has
/// it; returns the event's index and whether this call wrote it.
async fn redrive_one<L: EventLog>(
    pipeline: &Pipeline<L>,
    seen: &mut Seen,
    dead_letters_key: &EventSourceKey,
    redrives: &EventSourceKey,
    plan: Plan,
) -> Result<(u64, bool), Error> {
    let Plan { offset, letter_index, event } = plan;
    let (target, digest) = (event.key.clone(), event.digest);
    let known = seen.targets.get(&target).and_then(|digests| digests.get(&digest)).copied();
    let (to_index, wrote) = place(pipeline, event, known).await?;
    seen.targets.entry(target.clone()).or_default().insert(digest, to_index);
    if let Entry::Vacant(slot) = seen.provenance.entry(letter_index) {
        let redrive = Redrive {
            dead_letter_key: dead_letters_key.to_string(),
            dead_letter_index: letter_index,
            dead_letter_offset: offset,
            to_key: target.to_string(),
            to_index,
            digest: digest.to_string(),
        };
        let payload = serde_json::to_vec(&redrive).expect("a redrive always serializes");
        // Time 0 rather than the wall clock: a retry builds the same bytes.
        let provenance = Event::new(redrives.clone(), None, Some(offset), 0, CONTENT_TYPE_REDRIVE, payload);
        place(pipeline, provenance, None).await?;
        slot.insert(redrive);
    }
    Ok((to_index, wrote))
}
