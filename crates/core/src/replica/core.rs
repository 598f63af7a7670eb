//! The replica as a sans-I/O state machine.
//!
//! Records fetched from the log, delivery outcomes and the time go in; records to append and
//! the next deadline come out. The tokio driver of `competing-transformers-kafka`, the local
//! driver ([`super::local`]) and the simulator drive the same core.
//!
//! A replica's life (`docs/DESIGN.md`):
//! 1. **Catch-up**: read up to the log end seen at start, computing every group but writing
//!    none, because later records may already hold them. Groups still missing at the end
//!    were lost (every replica died first): those are written.
//! 2. **Live**: each canonical input of a subscribed key is transformed; its group (outputs,
//!    or one dead letter) is numbered from the replica's own counters and written unless
//!    the records already fetched show it canonical: at once, or after holding it back for
//!    its turn ([`Racing`]: by default the writer of the latest canonical group writes at
//!    once and the others hold back, see [`super::racing`]).
//! 3. **Watching its own streams**: each canonical event of its output or dead-letter key is
//!    compared with what it computed; a different digest is a divergence and stops writing.
//! 4. **Deferring**: past `pending_events_max` or `pending_bytes_max` of groups computed but
//!    not yet seen canonical, the replica stops transforming and reads ahead for its own keys
//!    alone, which is what makes its groups canonical; once half of that is canonical it
//!    reads the deferred inputs again from where it stopped. Memory stays bounded whatever
//!    the backlog: a replica holds offsets, not outputs, for inputs past the bound.
//! 5. **Re-sending**: a failed delivery, a rejected copy of its own, or a group that stays
//!    missing for `resend_after_ms` makes it re-send every group not yet canonical, in order.
//!    After a failed delivery nothing is written until a backoff has passed
//!    (`write_retry_min_ms` doubling to `write_retry_max_ms`), never at once.
//!
//! Every group fits in one record: outputs too large for one ([`GROUP_BYTES_MAX`]) or that
//! cannot be encoded (a content type over 255 bytes) become a dead letter, and a dead letter
//! always fits. Given a valid replica id, the core never hands out a record that could never
//! be written.
//!
//! # Driving it
//!
//! [`ReplicaCore`] does no I/O and reads no clock: a driver tells it what happened (`on_*`),
//! then polls it for what to do (`poll_*`). Time is the driver's monotonic clock in ms,
//! passed as `now_ms`; it never goes back (an earlier value is taken as the latest one).
//!
//! 1. Records fetched from [`ReplicaCore::position`] on: [`ReplicaCore::on_fetched`], or
//!    [`ReplicaCore::on_fetched_with`] once the batch's Avro writer schemas are resolved.
//!    The position moves back and forth while inputs are deferred: read from it again (a
//!    new cursor) whenever it is not where the last batch ended.
//! 2. A write delivered, or failed: [`ReplicaCore::on_delivery`].
//! 3. The deadline of step 6 reached: [`ReplicaCore::on_timeout`].
//! 4. After each of those: [`ReplicaCore::poll_write`] until `None`, appending each record and
//!    reporting its outcome in step 2 later.
//! 5. Then [`ReplicaCore::divergence`]: once set, the core writes nothing more and its
//!    deadline is `None`; the driver stops the replica.
//! 6. Then [`ReplicaCore::poll_timeout_ms`]: when to come back with step 3 if nothing else
//!    happens first (`None`: only a fetch or a delivery can wake it). Sleep until then.
//!
//! Getters (`stats`, `phase`, `position`, …) may be called at any time.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};

use base64::Engine as _;

use super::racing::Leadership;
pub use super::racing::{Adaptive, Racing, Stagger};
use crate::canonical::{CanonicalRule, Verdict, DIGEST_WINDOW_DEFAULT};
use crate::codec::{OutputCodec, SchemaCache, NO_SCHEMAS};
use crate::dead_letter::{DeadLetter, Detail, Details, Failure, Reason, CONTENT_TYPE_DEAD_LETTER};
use crate::event::{Digest, Event, EventSourceKey, Offset, CONTENT_TYPE_BYTES_MAX};
use crate::record::{
    encoded_event_len, encoded_header_len, DecodeError, EventView, FetchedRecord, Record, RecordView,
    EVENTS_PER_RECORD_MAX,
};
use crate::signature::Trust;
use crate::snapshot::{PendingEvent, PendingGroup, Snapshot, SnapshotError, Streams, SNAPSHOT_FORMAT};
use crate::transform::{
    Input, Output, Outputs, Transform, GROUP_BYTES_MAX, OUTPUT_BYTES_MAX, OUTPUT_EVENTS_MAX, RECORD_BYTES_MAX,
};

/// Limits and identity of one replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The replica's id, written in its records (never digested).
    pub replica_id: String,
    /// Digests kept per key for duplicate checks.
    pub digest_window: usize,
    /// Most events computed but not yet seen canonical. Past it, or past
    /// `pending_bytes_max`, inputs are deferred: the replica reads on for its own keys only
    /// and comes back for them once half of what it held is canonical.
    pub pending_events_max: usize,
    /// Most bytes (as encoded in records) of events computed but not yet seen canonical:
    /// with `pending_events_max`, what bounds a replica's memory whatever the backlog.
    pub pending_bytes_max: usize,
    /// Most records in flight at once.
    pub in_flight_records_max: usize,
    /// Bytes one record value may take before the next group goes in another record. A
    /// group alone may take up to [`GROUP_BYTES_MAX`] whatever this says: keep it at or under
    /// what the broker and the producer accept (`message.max.bytes`) less the key and headers.
    pub record_bytes_max: usize,
    /// How long a sent group may stay missing from the log before it is sent again.
    pub resend_after_ms: u64,
    /// How long writing waits after a failed delivery, at first; each failed round in a row
    /// doubles it up to `write_retry_max_ms`, a spread derived from the replica id adds up to
    /// as much again, and a delivery that succeeds starts it over.
    pub write_retry_min_ms: u64,
    /// The longest nominal wait after failed deliveries (see `write_retry_min_ms`).
    pub write_retry_max_ms: u64,
    /// Who writes each new group at once and how long the others hold it back: by default
    /// learnt from the log ([`Racing::Adaptive`]); every replica at once; or ranks configured
    /// per replica ([`Racing::Staggered`]).
    pub racing: Racing,
    /// The codec of the transform's outputs ([`Outputs::emit_value`]): JSON unless the
    /// transformer is configured for Avro.
    pub output_codec: OutputCodec,
    /// Snapshots: one after every this many canonical inputs, at the end of the record
    /// holding the last (see [`crate::snapshot`]), when the DET saves its state. `None`: none.
    pub snapshot_every_inputs: Option<u64>,
    /// The log's trust table: which keys count only in records their writers signed. The
    /// replica applies it to its inputs and its own keys; it signs nothing itself (the log
    /// it writes through does).
    pub trust: Trust,
}

impl ReplicaConfig {
    /// Defaults for a replica called `replica_id`.
    pub fn new(replica_id: impl Into<String>) -> Self {
        Self {
            replica_id: replica_id.into(),
            digest_window: DIGEST_WINDOW_DEFAULT,
            pending_events_max: 100_000,
            pending_bytes_max: 64 << 20,
            in_flight_records_max: 1_000,
            record_bytes_max: RECORD_BYTES_MAX,
            resend_after_ms: 5_000,
            write_retry_min_ms: 100,
            write_retry_max_ms: 5_000,
            racing: Racing::default(),
            output_codec: OutputCodec::Json,
            snapshot_every_inputs: None,
            trust: Trust::default(),
        }
    }
}

/// A record the driver must append, and the id its delivery outcome is reported under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRequest {
    /// Identifies the write in [`ReplicaCore::on_delivery`].
    pub write_id: u64,
    /// The record to append.
    pub record: Record,
    /// Header values the record carries beside it: the advisory details of its dead letters
    /// (`record::headers::DEAD_LETTER_DETAIL`), never digested.
    pub details: Vec<Vec<u8>>,
}

/// A canonical event of the replica's own keys whose digest differs from what it computed,
/// or a stored snapshot whose digest differs from the one it took at the same position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The key (for a state divergence, the output key).
    pub key: EventSourceKey,
    /// The index (for a state divergence, the inputs applied when the snapshot was taken).
    pub index: u64,
    /// What this replica computed.
    pub ours: Digest,
    /// What the log holds.
    pub canonical: Digest,
    /// Where the canonical event sits.
    pub canonical_offset: Offset,
    /// The replica that wrote the canonical event, when the divergence was seen as its
    /// record was read (not when this replica computed the event after reading it).
    pub canonical_writer: Option<String>,
    /// What differs: an event, or the state.
    pub kind: DivergenceKind,
}

/// What a [`Divergence`] found different.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DivergenceKind {
    /// An event of the replica's output or dead-letter key.
    Event,
    /// The snapshot stored for a log position (`canonical_offset`): the DET's saved state,
    /// or the replica's, differs though the log up to there is the same.
    State,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == DivergenceKind::State {
            return write!(
                f,
                "the snapshot of `{}` stored for offset {} (after {} inputs) has digest {} but this replica took {}: the transform's state, or what save_state makes of it, is not a function of the inputs applied",
                self.key, self.canonical_offset, self.index, self.canonical, self.ours
            );
        }
        write!(f, "event {} of `{}` at offset {}", self.index, self.key, self.canonical_offset)?;
        if let Some(writer) = &self.canonical_writer {
            write!(f, " (written by {writer})")?;
        }
        write!(
            f,
            " has digest {} but this replica computed {}: the transform is not deterministic",
            self.canonical, self.ours
        )
    }
}

/// Race accounting of one replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Canonical inputs transformed.
    pub inputs_processed: u64,
    /// Records appended (first sends and re-sends).
    pub records_written: u64,
    /// Groups re-sent after a loss.
    pub groups_resent: u64,
    /// Own events that became canonical: races won.
    pub races_won: u64,
    /// Own events that arrived second: races lost (duplicates written).
    pub races_lost: u64,
    /// Own events rejected as ahead of the count.
    pub writes_rejected: u64,
    /// Groups not written because they were already canonical in what was fetched.
    pub writes_skipped: u64,
    /// Dead letters computed.
    pub dead_letters: u64,
    /// Divergences seen on the replica's own keys.
    pub divergences: u64,
    /// Failed deliveries.
    pub delivery_failures: u64,
    /// Times inputs were deferred because the groups held reached the memory bound.
    pub deferrals: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendState {
    /// Held back for its turn, `hold_ms` from the first poll after it was made: until the
    /// deadline, set then.
    Held { hold_ms: u64, until_ms: Option<u64> },
    /// Not sent, or to be sent again.
    Unsent,
    /// In the record with this write id, sent at this time, delivered at `offset` once the
    /// log has said where.
    Sent { write_id: u64, at_ms: u64, offset: Option<Offset> },
}

/// What one input produced: all events on one key, consecutive indexes.
#[derive(Clone, Debug)]
struct Group {
    /// `OUTPUT` or `DEAD_LETTER`: which of the replica's keys.
    slot: usize,
    first_index: u64,
    events: Vec<Event>,
    send: SendState,
}

impl Group {
    fn end_index(&self) -> u64 {
        self.first_index + self.events.len() as u64
    }
    /// Bytes the group takes in a record value: exact, so records stay under the broker's
    /// size limit.
    fn encoded_bytes(&self) -> usize {
        self.events.iter().map(encoded_event_len).sum()
    }
}

/// Writes held back after failed deliveries: a failure never makes the next write go out
/// at once, so a write that keeps failing cannot spin.
#[derive(Clone, Copy, Debug, Default)]
struct WriteRetry {
    /// Failed rounds in a row: a round is the failure of a write sent since the last pause
    /// began (writes in flight together fail together and count once).
    failures: u32,
    /// Writes with ids from here were sent since the last pause began.
    round_from: u64,
    pause: Pause,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Pause {
    /// Writing freely.
    #[default]
    None,
    /// A delivery failed; the wait starts when the core next learns the time.
    Unstamped,
    /// Nothing is written before this time.
    Until(u64),
}

/// Where the replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading up to the log end seen at start, writing nothing.
    CatchingUp {
        /// The log end seen at start.
        until: Offset,
    },
    /// Processing and writing.
    Live,
    /// Saw a divergence: reads on, writes nothing.
    Diverged,
}

/// One replica's decisions.
pub struct ReplicaCore<T: Transform> {
    transform: T,
    config: ReplicaConfig,
    output_key: EventSourceKey,
    dead_letter_key: EventSourceKey,
    subscriptions: Vec<EventSourceKey>,
    /// The rule over the replica's own keys, applied up to `own_next`.
    own: CanonicalRule,
    own_next: Offset,
    /// Canonical events of each subscription, counted up to `inputs`.
    input_counts: Vec<u64>,
    inputs: InputPosition,
    /// Whether inputs wait at `inputs` while the reader follows the own keys alone.
    deferring: bool,
    /// Canonical inputs applied since the log's start (from a snapshot's count on).
    inputs_applied: u64,
    /// The count of inputs applied at which the next snapshot is due.
    next_snapshot_at: u64,
    /// Snapshots taken and not yet handed to the driver.
    snapshots: VecDeque<Snapshot>,
    /// Positions and digests of the snapshots taken last: what stored ones are checked against.
    taken: VecDeque<(Offset, u64, Digest)>,
    phase: Phase,
    next_index: [u64; 2],
    pending: VecDeque<Group>,
    /// Events in `pending` and their bytes in records, and its groups per slot.
    pending_events: usize,
    pending_bytes: usize,
    groups: [usize; 2],
    /// Every group in `pending` before this position is sent: where a write starts looking.
    /// Back to 0 whenever sent groups must go out again.
    send_from: usize,
    /// Digests of the pending events per slot, by index: what own events are checked against.
    computed: [ComputedDigests; 2],
    in_flight: VecDeque<u64>,
    next_write_id: u64,
    resend_wanted: bool,
    retry: WriteRetry,
    stats: ReplicaStats,
    divergence: Option<Divergence>,
    now_ms: u64,
    /// The details of the dead letters not yet canonical, by index.
    details: Details,
    /// Who leads and how long to hold, learnt from the log: in adaptive racing only.
    leadership: Option<Leadership>,
}

/// Where transforming goes on: the first event of a record not yet taken as an input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct InputPosition {
    offset: Offset,
    /// Events of the record at `offset` already taken.
    event: usize,
}

/// The digests this replica computed for indexes `from..` of one key, not yet canonical.
#[derive(Clone, Debug, Default)]
struct ComputedDigests {
    from: u64,
    digests: VecDeque<Digest>,
}

impl ComputedDigests {
    fn get(&self, index: u64) -> Option<Digest> {
        let at = usize::try_from(index.checked_sub(self.from)?).ok()?;
        self.digests.get(at).copied()
    }

    fn push(&mut self, first_index: u64, digests: impl Iterator<Item = Digest>) {
        // A gap means the groups between were canonical before they were computed: the
        // digests before it are of canonical indexes and never asked for again.
        if self.from + self.digests.len() as u64 != first_index {
            self.digests.clear();
            self.from = first_index;
        }
        self.digests.extend(digests);
    }

    fn forget_below(&mut self, count: u64) {
        while self.from < count && self.digests.pop_front().is_some() {
            self.from += 1;
        }
    }
}

/// Snapshots a replica keeps for the driver to store, and digests it keeps to check stored
/// ones against: the newest, as a driver that falls behind needs only those.
const SNAPSHOTS_REMEMBERED: usize = 4;

/// Index into `next_index`.
const OUTPUT: usize = 0;
const DEAD_LETTER: usize = 1;

/// Why `outputs` cannot be written as one group under `key`, if they cannot: too many, too
/// large for one record, or a content type the record format cannot carry. Decided from the
/// outputs alone, so every replica decides alike.
fn unwritable(key: &EventSourceKey, outputs: &[Output]) -> Option<(Reason, String)> {
    let bytes: usize = outputs.iter().map(|o| o.payload.len()).sum();
    if outputs.len() > OUTPUT_EVENTS_MAX || bytes > OUTPUT_BYTES_MAX {
        return Some((Reason::OutputTooLarge, format!(
            "{} events of {bytes} bytes; one input may emit at most {OUTPUT_EVENTS_MAX} events of {OUTPUT_BYTES_MAX} bytes",
            outputs.len()
        )));
    }
    if let Some(at) = outputs.iter().position(|o| o.content_type.len() > CONTENT_TYPE_BYTES_MAX) {
        return Some((
            Reason::InvalidOutput,
            format!(
                "output {at} has a content type of {} bytes; a content type may have at most {CONTENT_TYPE_BYTES_MAX}",
                outputs[at].content_type.len()
            ),
        ));
    }
    let in_record = group_bytes(key, outputs.iter().map(|o| (o.content_type.as_str(), o.payload.len())));
    if in_record > GROUP_BYTES_MAX {
        return Some((
            Reason::OutputTooLarge,
            format!(
                "{} events take {in_record} bytes in a record; one input's group may take at most {GROUP_BYTES_MAX}",
                outputs.len()
            ),
        ));
    }
    None
}

/// Bytes a group of events under `key` with these content types and payload sizes takes in
/// a record value, exactly: each event numbered and caused, as a replica writes them.
fn group_bytes<'a>(key: &EventSourceKey, events: impl IntoIterator<Item = (&'a str, usize)>) -> usize {
    let framing = encoded_event_len(&Event {
        key: key.clone(),
        index: Some(0),
        cause: Some(0),
        effective_time_ms: 0,
        content_type: String::new(),
        payload: Vec::new(),
        digest: Digest([0; 32]),
    });
    events.into_iter().map(|(content_type, payload_len)| framing + content_type.len() + payload_len).sum()
}

/// A number from `replica_id` and `count` alone (FNV-1a, then SplitMix64's finalizer): the
/// spread of a replica's retry waits.
fn mix(replica_id: &str, count: u32) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in replica_id.bytes().chain(count.to_be_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

impl<T: Transform> ReplicaCore<T> {
    /// A replica that will read from offset 0 and write nothing until it reaches `catch_up_until`
    /// (the log end seen at start).
    pub fn new(transform: T, config: ReplicaConfig, catch_up_until: Offset) -> Self {
        let output_key =
            EventSourceKey::new(transform.name()).expect("a transform's name must be a valid event-source key");
        let dead_letter_key = output_key.dead_letters();
        let subscriptions = transform.subscriptions();
        let own = CanonicalRule::new(config.digest_window).with_trust(config.trust.clone());
        let phase = if catch_up_until == 0 { Phase::Live } else { Phase::CatchingUp { until: catch_up_until } };
        let next_snapshot_at = config.snapshot_every_inputs.unwrap_or(0);
        let leadership = match config.racing {
            Racing::Adaptive(limits) => Some(Leadership::new(&config.replica_id, limits)),
            Racing::AllAtOnce | Racing::Staggered(_) => None,
        };
        Self {
            transform,
            config,
            output_key,
            dead_letter_key,
            input_counts: vec![0; subscriptions.len()],
            subscriptions,
            own,
            own_next: 0,
            inputs: InputPosition::default(),
            deferring: false,
            inputs_applied: 0,
            next_snapshot_at,
            snapshots: VecDeque::new(),
            taken: VecDeque::new(),
            phase,
            next_index: [0, 0],
            pending: VecDeque::new(),
            pending_events: 0,
            pending_bytes: 0,
            groups: [0, 0],
            send_from: 0,
            computed: Default::default(),
            in_flight: VecDeque::new(),
            next_write_id: 0,
            resend_wanted: false,
            retry: WriteRetry::default(),
            stats: ReplicaStats::default(),
            divergence: None,
            now_ms: 0,
            details: Details::default(),
            leadership,
        }
    }

    /// A replica resumed from `snapshot` (taken by a replica of the same DET): it reads on from
    /// the snapshot's position and writes nothing until it reaches `catch_up_until`. The
    /// groups the snapshot holds are written then unless read canonical first. A snapshot it
    /// cannot resume from gives the transform back, as it was if its `restore_state` leaves
    /// the state alone on failure (as it must), for an older snapshot or a start from 0.
    pub fn restore(
        mut transform: T,
        config: ReplicaConfig,
        snapshot: &Snapshot,
        catch_up_until: Offset,
    ) -> Result<Self, (T, SnapshotError)> {
        if let Err(error) = Self::check_restorable(&transform, snapshot) {
            return Err((transform, error));
        }
        let restored =
            snapshot.state().and_then(|state| transform.restore_state(&state).map_err(SnapshotError::Invalid));
        if let Err(error) = restored {
            return Err((transform, error));
        }
        let mut core = Self::new(transform, config, catch_up_until);
        let counts = [
            (core.output_key.clone(), snapshot.own_counts.output),
            (core.dead_letter_key.clone(), snapshot.own_counts.dead_letters),
        ];
        core.own = CanonicalRule::resumed(core.config.digest_window, snapshot.position, &counts)
            .with_trust(core.config.trust.clone());
        core.own_next = snapshot.position;
        core.inputs = InputPosition { offset: snapshot.position, event: 0 };
        core.input_counts = snapshot.input_counts.iter().map(|(_, count)| *count).collect();
        core.next_index = [snapshot.next_index.output, snapshot.next_index.dead_letters];
        core.inputs_applied = snapshot.inputs;
        let every = core.config.snapshot_every_inputs.filter(|every| *every > 0).unwrap_or(u64::MAX);
        core.next_snapshot_at = (snapshot.inputs / every).saturating_add(1).saturating_mul(every);
        let pending = snapshot.pending_events(&core.output_key).expect("checked before");
        for (dead_letter, events) in pending {
            let slot = if dead_letter { DEAD_LETTER } else { OUTPUT };
            let first_index = events.first().and_then(|e| e.index).unwrap_or(core.next_index[slot]);
            let count = core.own.count(core.key_of(slot));
            core.queue(Group { slot, first_index, events, send: SendState::Unsent }, count);
        }
        if catch_up_until <= snapshot.position {
            core.phase = Phase::Live;
        }
        Ok(core)
    }

    /// Why `transform` cannot resume from `snapshot`, if it cannot: another DET's, another
    /// build's subscriptions, or pending events that do not read back.
    fn check_restorable(transform: &T, snapshot: &Snapshot) -> Result<(), SnapshotError> {
        if snapshot.transformer != transform.name() {
            return Err(SnapshotError::Invalid(format!(
                "it is of `{}`, not of `{}`",
                snapshot.transformer,
                transform.name()
            )));
        }
        let subscriptions: Vec<String> = transform.subscriptions().iter().map(|k| k.to_string()).collect();
        let saved: Vec<&String> = snapshot.input_counts.iter().map(|(key, _)| key).collect();
        if saved.iter().copied().ne(subscriptions.iter()) {
            return Err(SnapshotError::Invalid(format!(
                "it was taken by a build subscribed to {saved:?}; this one subscribes to {subscriptions:?}"
            )));
        }
        let output = EventSourceKey::new(transform.name()).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        snapshot.pending_events(&output).map(drop)
    }

    /// Applies fetched records (in offset order, from [`ReplicaCore::position`] on) and
    /// transforms the canonical inputs among them. `position` is the reader's next offset.
    pub fn on_fetched(&mut self, records: &[FetchedRecord], position: Offset) {
        self.on_fetched_with(records, position, &NO_SCHEMAS)
    }

    /// [`ReplicaCore::on_fetched`] for a batch whose Avro payloads' writer schemas the driver
    /// resolved into `schemas` first (see `codec::avro_ids_to_resolve`, with the `avro`
    /// feature): the core only reads them.
    pub fn on_fetched_with(&mut self, records: &[FetchedRecord], position: Offset, schemas: &SchemaCache) {
        debug_assert!(records.first().is_none_or(|r| r.offset >= self.position()), "a batch from the position on");
        let end = position.max(records.last().map_or(0, |r| r.offset + 1));
        // Record by record, the own keys before the inputs: a snapshot at a record's end then
        // holds exactly the log up to it. Nothing is written before the whole batch is read,
        // so a group canonical later in the batch is still never written.
        for record in records {
            // Read in place; only the inputs' payloads reach the transform, borrowed.
            let view = self.read(record);
            let offset = record.offset;
            let judged_here = offset >= self.own_next;
            if judged_here {
                self.judge_own_record(offset, view.as_ref());
                self.own_next = offset + 1;
            }
            if !self.deferring && offset >= self.inputs.offset {
                self.transform_record(offset, view.as_ref(), schemas);
                if judged_here && !self.deferring {
                    self.snapshot_if_due(offset + 1);
                }
            }
        }
        self.own_next = self.own_next.max(end);
        if !self.deferring {
            self.inputs = InputPosition { offset: self.inputs.offset.max(end), event: 0 };
        }
        self.prune();
        if self.deferring && !self.holds_over(2) {
            self.deferring = false;
        }
        if let Phase::CatchingUp { until } = self.phase {
            if self.own_next >= until {
                self.phase = Phase::Live;
                self.hold_caught_up();
            }
        }
    }

    /// Decodes a fetched record in place. Digests cost a hash an event, and only a record
    /// holding one of the replica's keys can change a verdict it needs: only those are
    /// checked (a record with a wrong digest is malformed, to every reader alike).
    fn read<'r>(&self, record: &'r FetchedRecord) -> Result<RecordView<'r>, DecodeError> {
        let view = RecordView::parse_fetched_unverified(record)?;
        let follows = |key: &str| {
            key == self.output_key.as_str()
                || key == self.dead_letter_key.as_str()
                || self.subscriptions.iter().any(|k| k.as_str() == key)
        };
        if view.events.iter().any(|e| follows(e.key)) && !self.holds_each_of(&view) {
            view.verify()?;
        }
        Ok(view)
    }

    /// Whether every event of `view` is, byte for byte, a pending output of this replica
    /// stored with the digest the replica computed for it: then each stored digest is its
    /// content's, which is all [`RecordView::verify`] checks, and hashing again is for
    /// nothing. This is the replica reading its own records back (and racing copies of
    /// them): a comparison of bytes instead of a SHA-256 per event.
    fn holds_each_of(&self, view: &RecordView<'_>) -> bool {
        // Outputs alone: then `pending` is in index order and found by bisection.
        if self.groups[DEAD_LETTER] > 0 {
            return false;
        }
        let holds = |at: usize, index: u64| {
            self.pending.get(at).is_some_and(|g| g.first_index <= index && index < g.end_index())
        };
        // A record's events are consecutive: the group of the one before, or the next.
        let mut last = None;
        view.events.iter().all(|event| {
            let Some(index) = event.index.filter(|_| event.key == self.output_key.as_str()) else { return false };
            let near = last.into_iter().flat_map(|at: usize| [at, at + 1]).find(|at| holds(*at, index));
            let at = near.unwrap_or_else(|| self.pending.partition_point(|g| g.end_index() <= index));
            if !holds(at, index) {
                return false;
            }
            last = Some(at);
            let group = &self.pending[at];
            let ours = &group.events[(index - group.first_index) as usize];
            debug_assert_eq!(
                ours.digest,
                Event::compute_digest(ours.cause, ours.effective_time_ms, &ours.content_type, &ours.payload),
                "pending events are made with their digest"
            );
            ours.digest == event.digest
                && ours.cause == event.cause
                && ours.effective_time_ms == event.effective_time_ms
                && ours.content_type == event.content_type
                && ours.payload == event.payload
        })
    }

    /// Applies the rule to the own keys' events of the record at `offset`.
    fn judge_own_record(&mut self, offset: Offset, view: Result<&RecordView<'_>, &DecodeError>) {
        let (output, dead_letter) = (self.output_key.as_str(), self.dead_letter_key.as_str());
        let Ok(verdicts) = self.own.apply_view_where(offset, view, |key| key == output || key == dead_letter) else {
            return;
        };
        let record = view.expect("decoded");
        for (event, verdict) in record.events.iter().zip(verdicts) {
            if let Some(verdict) = verdict {
                let slot = if event.key == self.output_key.as_str() { OUTPUT } else { DEAD_LETTER };
                self.judge_own(slot, event, verdict, offset, record.writer);
            }
        }
    }

    /// Transforms the canonical inputs of the record at `offset` from the input position on,
    /// until the groups held reach the bound: then the rest waits there, to be read again.
    fn transform_record(&mut self, offset: Offset, view: Result<&RecordView<'_>, &DecodeError>, schemas: &SchemaCache) {
        let skip = if offset == self.inputs.offset { self.inputs.event } else { 0 };
        if let Ok(record) = view {
            let trust = self.config.trust.clone();
            let mut authority = trust.record(record.seal.as_ref());
            for (at, event) in record.events.iter().enumerate().skip(skip) {
                let Some(subscription) = self.subscriptions.iter().position(|k| k.as_str() == event.key) else {
                    continue;
                };
                let count = self.input_counts[subscription];
                // Unauthorized (a protected key, not signed by its writers) or not at the count.
                if event.index.is_some_and(|index| index != count) || !authority.authorizes(event.key) {
                    continue;
                }
                if self.holds_over(1) {
                    // What is canonical by now must not count against the bound.
                    self.prune();
                }
                if self.holds_over(1) {
                    self.inputs = InputPosition { offset, event: at };
                    self.deferring = true;
                    self.stats.deferrals += 1;
                    return;
                }
                self.input_counts[subscription] += 1;
                self.inputs_applied += 1;
                let key = self.subscriptions[subscription].clone();
                self.process(offset, count, &key, event, schemas);
            }
        }
        self.inputs = InputPosition { offset: offset + 1, event: 0 };
    }

    /// Takes a snapshot at `position` (a record's end, read for inputs and own keys alike) if
    /// an `snapshot_every_inputs`-th input was applied since the last one and the DET saves
    /// its state.
    fn snapshot_if_due(&mut self, position: Offset) {
        let Some(every) = self.config.snapshot_every_inputs.filter(|every| *every > 0) else { return };
        if self.inputs_applied < self.next_snapshot_at || self.phase == Phase::Diverged {
            return;
        }
        self.next_snapshot_at = (self.inputs_applied / every + 1) * every;
        let Some(state) = self.transform.save_state() else { return };
        self.prune();
        let groups = self.pending.iter().map(|g| PendingGroup {
            dead_letter: g.slot == DEAD_LETTER,
            events: g.events.iter().map(PendingEvent::of).collect(),
        });
        let snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            transformer: self.output_key.to_string(),
            position,
            inputs: self.inputs_applied,
            state_base64: base64::engine::general_purpose::STANDARD.encode(state),
            input_counts: self
                .subscriptions
                .iter()
                .map(|k| k.to_string())
                .zip(self.input_counts.iter().copied())
                .collect(),
            next_index: Streams { output: self.next_index[OUTPUT], dead_letters: self.next_index[DEAD_LETTER] },
            own_counts: Streams {
                output: self.own.count(&self.output_key),
                dead_letters: self.own.count(&self.dead_letter_key),
            },
            pending: groups.collect(),
        };
        let digest = Snapshot::digest_of(&snapshot.encode());
        self.taken.push_back((position, self.inputs_applied, digest));
        if self.taken.len() > SNAPSHOTS_REMEMBERED {
            self.taken.pop_front();
        }
        self.snapshots.push_back(snapshot);
        if self.snapshots.len() > SNAPSHOTS_REMEMBERED {
            self.snapshots.pop_front();
        }
    }

    /// Whether the groups held exceed the bound divided by `divisor`. Holding nothing is
    /// never over it, so one input at a time always goes through.
    fn holds_over(&self, divisor: usize) -> bool {
        self.pending_events > 0
            && (self.pending_events > self.config.pending_events_max / divisor
                || self.pending_bytes > self.config.pending_bytes_max / divisor)
    }

    fn judge_own(&mut self, slot: usize, event: &EventView<'_>, verdict: Verdict, offset: Offset, writer: &str) {
        let mine = writer == self.config.replica_id;
        match verdict {
            Verdict::Canonical { index } => {
                if mine {
                    self.stats.races_won += 1;
                }
                if let Some(leadership) = &mut self.leadership {
                    leadership.on_canonical(slot, index, writer);
                }
                if let Some(ours) = self.computed_digest(slot, index) {
                    if ours != event.digest {
                        let key = self.key_of(slot).clone();
                        self.diverge(Divergence {
                            key,
                            index,
                            ours,
                            canonical: event.digest,
                            canonical_offset: offset,
                            canonical_writer: Some(writer.to_string()),
                            kind: DivergenceKind::Event,
                        });
                    }
                }
            }
            Verdict::Duplicate { index, .. } if !mine => {
                if let Some(leadership) = &mut self.leadership {
                    leadership.on_duplicate(slot, index, writer);
                }
            }
            Verdict::Duplicate { .. } | Verdict::Divergent { .. } if mine => self.stats.races_lost += 1,
            Verdict::Rejected { .. } if mine => {
                self.stats.writes_rejected += 1;
                // An earlier group of ours never landed: send again from the count.
                self.resend_wanted = true;
            }
            _ => {}
        }
    }

    fn computed_digest(&self, slot: usize, index: u64) -> Option<Digest> {
        self.computed[slot].get(index)
    }

    fn diverge(&mut self, divergence: Divergence) {
        self.stats.divergences += 1;
        if self.divergence.is_none() {
            tracing::error!(replica = %self.config.replica_id, %divergence, "divergence: this replica stops writing");
            self.divergence = Some(divergence);
        }
        self.phase = Phase::Diverged;
    }

    /// Transforms one canonical input and queues its group.
    fn process(
        &mut self,
        offset: Offset,
        index: u64,
        key: &EventSourceKey,
        event: &EventView<'_>,
        schemas: &SchemaCache,
    ) {
        let input = Input {
            key,
            index,
            offset,
            effective_time_ms: event.effective_time_ms,
            content_type: event.content_type,
            payload: event.payload,
            digest: event.digest,
            schemas,
        };
        self.stats.inputs_processed += 1;
        let (slot, produced) = self.outputs_or_dead_letter(input);
        if produced.is_empty() {
            return;
        }
        let key = self.key_of(slot).clone();
        let first_index = self.next_index[slot];
        self.next_index[slot] += produced.len() as u64;
        let events: Vec<Event> = produced
            .into_iter()
            .zip(first_index..)
            .map(|((content_type, payload), i)| {
                Event::new(key.clone(), Some(i), Some(offset), input.effective_time_ms, content_type, payload)
            })
            .collect();
        let count = self.own.count(&key);
        self.check_against_canonical(&key, &events, count);
        self.queue(Group { slot, first_index, events, send: SendState::Unsent }, count);
    }

    /// Runs the transform on `input`: the slot its group goes to, and the group's content
    /// types and payloads (its outputs, or the one dead letter that replaces them).
    fn outputs_or_dead_letter(&mut self, input: Input<'_>) -> (usize, Vec<(String, Vec<u8>)>) {
        match self.run_transform(input) {
            (outputs, None) => {
                (OUTPUT, outputs.into_events().into_iter().map(|o| (o.content_type, o.payload)).collect())
            }
            (_, Some(failure)) => {
                self.stats.dead_letters += 1;
                let letter = DeadLetter::new(self.transform.name(), failure.reason, failure.message, &input);
                let index = self.next_index[DEAD_LETTER];
                let detail = Detail { index, version: self.transform.version(), error: failure.error };
                tracing::warn!(replica = %self.config.replica_id, "{} ({})", letter.describe(), detail.describe());
                self.details.insert(&detail);
                let payload = letter.to_json();
                debug_assert!(
                    group_bytes(&self.dead_letter_key, [(CONTENT_TYPE_DEAD_LETTER, payload.len())]) <= GROUP_BYTES_MAX,
                    "a dead letter always fits in a record"
                );
                (DEAD_LETTER, vec![(CONTENT_TYPE_DEAD_LETTER.to_string(), payload)])
            }
        }
    }

    /// The transform's outputs for `input`, and why they must become a dead letter instead,
    /// if they must: it failed, panicked, or emitted what one group cannot carry.
    fn run_transform(&mut self, input: Input<'_>) -> (Outputs, Option<Failure>) {
        let mut outputs = Outputs::with_codec(self.config.output_codec.clone());
        let transform = &mut self.transform;
        let result = catch_unwind(AssertUnwindSafe(|| transform.apply(&input, &mut outputs)));
        let failure = match result {
            Ok(Ok(())) => unwritable(&self.output_key, outputs.events()).map(|(r, m)| Failure::new(r, m)),
            Ok(Err(error)) => Some(Failure::of_error(&error)),
            Err(panic) => Some(Failure::of_panic(panic.as_ref())),
        };
        (outputs, failure)
    }

    /// Compares a new group with what is already canonical at its indexes (`count` is its
    /// key's canonical count): a different digest is a divergence.
    fn check_against_canonical(&mut self, key: &EventSourceKey, events: &[Event], count: u64) {
        for event in events {
            let i = event.index.expect("numbered");
            if i >= count {
                break;
            }
            if let Some((canonical, at)) = self.own.canonical_at(key, i) {
                if canonical != event.digest {
                    self.diverge(Divergence {
                        key: key.clone(),
                        index: i,
                        ours: event.digest,
                        canonical,
                        canonical_offset: at,
                        canonical_writer: None,
                        kind: DivergenceKind::Event,
                    });
                }
            }
        }
    }

    /// Queues a new group to be written, held for its turn unless this replica writes at once,
    /// unless it is canonical already (`count` is its key's canonical count).
    fn queue(&mut self, mut group: Group, count: u64) {
        if group.end_index() <= count {
            if self.phase == Phase::Live {
                self.stats.writes_skipped += 1;
            }
            return;
        }
        if let Some(hold_ms) = self.hold_ms().filter(|_| self.phase == Phase::Live) {
            group.send = SendState::Held { hold_ms, until_ms: None };
        }
        self.computed[group.slot].push(group.first_index, group.events.iter().map(|e| e.digest));
        self.pending_events += group.events.len();
        self.pending_bytes += group.encoded_bytes();
        self.groups[group.slot] += 1;
        self.pending.push_back(group);
    }

    /// How long a new group waits for its turn, by the racing mode and, in adaptive racing,
    /// what the log says up to now; `None`: it is written at once.
    fn hold_ms(&self) -> Option<u64> {
        let hold_ms = match self.config.racing {
            Racing::AllAtOnce => 0,
            Racing::Staggered(stagger) => stagger.rank.saturating_mul(stagger.delay_ms),
            Racing::Adaptive(_) => {
                let leadership = self.leadership.as_ref().expect("adaptive racing learns");
                leadership.rank().saturating_mul(leadership.hold_ms())
            }
        };
        (hold_ms > 0).then_some(hold_ms)
    }

    /// Going live after catching up: the groups still missing wait for this replica's turn
    /// like new ones, as the replica leading may only not have written them yet.
    fn hold_caught_up(&mut self) {
        let Some(hold_ms) = self.hold_ms() else { return };
        for group in self.pending.range_mut(self.send_from..) {
            if group.send == SendState::Unsent {
                group.send = SendState::Held { hold_ms, until_ms: None };
            }
        }
    }

    /// The replica's key of `slot`.
    fn key_of(&self, slot: usize) -> &EventSourceKey {
        if slot == OUTPUT {
            &self.output_key
        } else {
            &self.dead_letter_key
        }
    }

    /// Drops groups that are canonical now.
    fn prune(&mut self) {
        let counts = [self.own.count(&self.output_key), self.own.count(&self.dead_letter_key)];
        // Each key's groups are in index order, so its canonical ones come first: usually
        // the whole canonical part is at the front.
        while self.pending.front().is_some_and(|g| g.end_index() <= counts[g.slot]) {
            let group = self.pending.pop_front().expect("a front");
            self.send_from = self.send_from.saturating_sub(1);
            self.forget(&group);
        }
        // Behind a group of one key still missing, groups of the other key may be canonical.
        if self.pending.front().is_some_and(|front| self.groups[1 - front.slot] > 0) {
            let mut missing = [false, false];
            let mut kept = VecDeque::with_capacity(self.pending.len());
            let send_from = self.send_from;
            for (position, group) in std::mem::take(&mut self.pending).into_iter().enumerate() {
                if missing[group.slot] || group.end_index() > counts[group.slot] {
                    missing[group.slot] = true;
                    kept.push_back(group);
                } else {
                    self.send_from -= (position < send_from) as usize;
                    self.forget(&group);
                }
            }
            self.pending = kept;
        }
        self.computed[OUTPUT].forget_below(counts[OUTPUT]);
        self.computed[DEAD_LETTER].forget_below(counts[DEAD_LETTER]);
        self.details.forget_below(counts[DEAD_LETTER]);
    }

    /// Accounts for a group leaving `pending` because it is canonical.
    fn forget(&mut self, group: &Group) {
        self.groups[group.slot] -= 1;
        self.pending_events -= group.events.len();
        self.pending_bytes -= group.encoded_bytes();
        // Held for its turn, or computed live and read canonical before it went out: a
        // write saved.
        let unsent_live = group.send == SendState::Unsent && self.phase == Phase::Live;
        if matches!(group.send, SendState::Held { .. }) || unsent_live {
            self.stats.writes_skipped += 1;
        }
    }

    /// When the driver must call [`ReplicaCore::on_timeout`] next, then
    /// [`ReplicaCore::poll_write`]: ms on the clock it passes as `now_ms`, at or before the
    /// latest `now_ms` meaning at once. `None` while nothing is timed (nothing held for its
    /// turn, nothing sent and unaccounted for, no backoff after a failed delivery running)
    /// and once diverged: only a fetch or a delivery
    /// can give the core work then. Ask again after every `on_*` call and after `poll_write`
    /// returned `None`: the answer changes with them.
    #[must_use]
    pub fn poll_timeout_ms(&self) -> Option<u64> {
        if self.phase == Phase::Diverged {
            return None;
        }
        [self.next_release_ms(), self.resend_due_ms(), self.retry_due_ms()].into_iter().flatten().min()
    }

    /// When writing may start again after failed deliveries. A pause not stamped yet is due
    /// at once: the next `on_timeout` or `poll_write` stamps it.
    fn retry_due_ms(&self) -> Option<u64> {
        match self.retry.pause {
            Pause::None => None,
            Pause::Unstamped => Some(self.now_ms),
            Pause::Until(at) => Some(at),
        }
    }

    /// Takes the time in: never back. Stamps a pause that waits for it, ends one that is over.
    fn tick(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(leadership) = &mut self.leadership {
            leadership.tick(self.now_ms);
        }
        match self.retry.pause {
            Pause::Unstamped => self.retry.pause = Pause::Until(self.now_ms.saturating_add(self.retry_wait_ms())),
            Pause::Until(at) if at <= self.now_ms => self.retry.pause = Pause::None,
            Pause::Until(_) | Pause::None => {}
        }
    }

    /// The wait after `retry.failures` failed rounds in a row: the nominal wait doubles from
    /// `write_retry_min_ms` up to `write_retry_max_ms`; a spread of up to as much again,
    /// derived from the replica id and the count, keeps replicas that failed together from
    /// writing again in step while the core stays deterministic.
    fn retry_wait_ms(&self) -> u64 {
        let min = self.config.write_retry_min_ms.max(1);
        let max = self.config.write_retry_max_ms.max(min);
        let doublings = self.retry.failures.saturating_sub(1).min(32);
        let nominal = min.saturating_mul(1 << doublings).min(max);
        let spread = mix(&self.config.replica_id, self.retry.failures) % nominal.saturating_add(1);
        nominal.saturating_add(spread)
    }

    /// When the first held group's turn comes. A group not stamped yet is due at once: the
    /// next `poll_write` stamps it.
    fn next_release_ms(&self) -> Option<u64> {
        if self.config.racing == Racing::AllAtOnce {
            return None;
        }
        // Sent groups come first: the held ones are after them.
        self.pending.range(self.send_from..).find_map(|g| match g.send {
            SendState::Held { until_ms, .. } => Some(until_ms.unwrap_or(self.now_ms)),
            _ => None,
        })
    }

    /// When the first sent group counts as lost, if it is still unaccounted for: once
    /// `resend_after_ms` passed without a delivery report, or at once when the reader has
    /// passed the offset it was delivered at without it becoming canonical. Sent groups come
    /// first, so the first group is the oldest write.
    fn resend_due_ms(&self) -> Option<u64> {
        match self.pending.front()?.send {
            SendState::Sent { offset: Some(offset), .. } => (offset < self.own_next).then_some(self.now_ms),
            SendState::Sent { at_ms, offset: None, .. } => Some(at_ms.saturating_add(self.config.resend_after_ms)),
            _ => None,
        }
    }

    /// The next record to append, if any. Call until `None` after every input to the core.
    pub fn poll_write(&mut self, now_ms: u64) -> Option<WriteRequest> {
        self.tick(now_ms);
        if !self.may_write() {
            return None;
        }
        // Before the in-flight limit and the pause: a held group's turn is stamped when first
        // polled, so the deadline is known even while writes wait.
        self.release_held();
        if self.retry.pause != Pause::None || self.in_flight.len() >= self.config.in_flight_records_max {
            return None;
        }
        if self.resend_wanted && self.in_flight.is_empty() {
            self.resend_wanted = false;
            for group in self.pending.iter_mut().filter(|g| matches!(g.send, SendState::Sent { .. })) {
                group.send = SendState::Unsent;
                self.stats.groups_resent += 1;
            }
            self.send_from = 0;
        }
        self.debug_check_send_order();
        let write_id = self.next_write_id;
        let events = self.take_unsent(write_id);
        if events.is_empty() {
            return None;
        }
        self.next_write_id += 1;
        self.in_flight.push_back(write_id);
        self.stats.records_written += 1;
        let details = self.details.for_events(&self.dead_letter_key, &events);
        let record = Record { source: self.output_key.clone(), writer: self.config.replica_id.clone(), events };
        Some(WriteRequest { write_id, record, details })
    }

    /// Whether the phase lets the replica write now.
    fn may_write(&self) -> bool {
        match self.phase {
            Phase::Live => true,
            Phase::Diverged | Phase::CatchingUp { .. } => false,
        }
    }

    /// Releases held groups whose turn has come, in order: a group never overtakes an
    /// earlier one, so a replica's writes stay in index order. In adaptive racing, a
    /// replica that leads now (its copy won meanwhile) writes all it holds at once.
    fn release_held(&mut self) {
        if self.config.racing == Racing::AllAtOnce {
            return;
        }
        let now = self.now_ms;
        let leads = self.leadership.as_ref().is_some_and(|l| l.rank() == 0);
        let mut blocked = false;
        for group in self.pending.range_mut(self.send_from..) {
            if let SendState::Held { hold_ms, until_ms } = &mut group.send {
                // Every group's turn counts from when it was first seen here, not from when
                // the one before it was released: turns must not add up under load.
                let due = match until_ms {
                    Some(due) => *due,
                    None => {
                        if let Some(leadership) = &mut self.leadership {
                            leadership.on_held(group.slot, group.first_index, now);
                        }
                        *until_ms.insert(now.saturating_add(*hold_ms))
                    }
                };
                blocked |= due > now && !leads;
                if !blocked {
                    group.send = SendState::Unsent;
                }
            }
        }
    }

    /// The order `on_delivery` relies on: sent groups first, in write order.
    fn debug_check_send_order(&self) {
        debug_assert!(self.send_from <= self.pending.len());
        debug_assert!(self.pending.iter().take(self.send_from).all(|g| matches!(g.send, SendState::Sent { .. })));
        debug_assert!(
            self.pending.iter().skip(self.send_from).all(|g| !matches!(g.send, SendState::Sent { .. })),
            "sent groups come first"
        );
        debug_assert!(
            self.pending
                .iter()
                .filter_map(|g| if let SendState::Sent { write_id, .. } = g.send { Some(write_id) } else { None })
                .is_sorted(),
            "sent groups are in write order"
        );
    }

    /// Marks the unsent groups that fit in one record, up to the first held one, sent in
    /// write `write_id`, and returns their events.
    fn take_unsent(&mut self, write_id: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let mut bytes = encoded_header_len(&self.output_key, &self.config.replica_id);
        for group in
            self.pending.iter_mut().skip(self.send_from).take_while(|g| !matches!(g.send, SendState::Held { .. }))
        {
            if group.send != SendState::Unsent {
                self.send_from += 1;
                continue;
            }
            let size = group.encoded_bytes();
            if !events.is_empty()
                && (bytes + size > self.config.record_bytes_max
                    || events.len() + group.events.len() > EVENTS_PER_RECORD_MAX)
            {
                break;
            }
            bytes += size;
            events.extend(group.events.iter().cloned());
            group.send = SendState::Sent { write_id, at_ms: self.now_ms, offset: None };
            self.send_from += 1;
        }
        events
    }

    /// Reports where a write landed, or that it failed. After a failure nothing is written
    /// until a backoff has passed ([`ReplicaConfig::write_retry_min_ms`]): the next
    /// `poll_write` at the same time returns `None`, and [`ReplicaCore::poll_timeout_ms`] says
    /// when to come back. A delivery that succeeds ends the backoff and starts it over.
    pub fn on_delivery(&mut self, write_id: u64, outcome: Result<Offset, ()>) {
        self.in_flight.retain(|id| *id != write_id);
        // Sent groups come first, their write ids in order (every re-send starts from the
        // first group it re-sends): one write's groups are one run, found by bisection.
        let sent_by = |g: &Group| match g.send {
            SendState::Sent { write_id, .. } => write_id,
            _ => u64::MAX,
        };
        let start = self.pending.partition_point(|g| sent_by(g) < write_id);
        // Writes sent since the last pause began are the current round.
        let current = write_id >= self.retry.round_from;
        match outcome {
            Ok(at) => {
                for group in self.pending.range_mut(start..).take_while(|g| sent_by(g) == write_id) {
                    if let SendState::Sent { offset, .. } = &mut group.send {
                        *offset = Some(at);
                    }
                }
                if current {
                    self.retry.failures = 0;
                    self.retry.pause = Pause::None;
                }
            }
            Err(()) => {
                self.stats.delivery_failures += 1;
                // The failed groups, and every later one, go out again in order.
                let resend = self.pending.get(start).is_some_and(|g| sent_by(g) == write_id);
                if resend {
                    for group in self.pending.range_mut(start..) {
                        if matches!(group.send, SendState::Sent { .. }) {
                            group.send = SendState::Unsent;
                        }
                    }
                    self.send_from = self.send_from.min(start);
                }
                // Nothing is written at once after a failure, so a write that keeps failing
                // cannot spin. Writes in flight with it fail with it: they make the wait
                // start again from their report, but do not make it longer.
                if current {
                    self.retry.failures = self.retry.failures.saturating_add(1);
                    self.retry.round_from = self.next_write_id;
                }
                self.retry.pause = Pause::Unstamped;
            }
        }
    }

    /// Lets time pass, at or after [`ReplicaCore::poll_timeout_ms`] (earlier is harmless): a
    /// group still undelivered `resend_after_ms` after it was sent, or delivered at an offset
    /// the reader has passed without it becoming canonical, is sent again with everything
    /// after it. A delivered group the reader has not reached yet is only slow, not lost.
    pub fn on_timeout(&mut self, now_ms: u64) {
        self.tick(now_ms);
        if self.resend_due_ms().is_some_and(|due| due <= self.now_ms) {
            for group in &mut self.pending {
                if matches!(group.send, SendState::Sent { .. }) {
                    self.send_from = 0;
                    group.send = SendState::Unsent;
                    self.stats.groups_resent += 1;
                }
            }
        }
    }

    fn pending_events(&self) -> usize {
        debug_assert_eq!(self.pending_events, self.pending.iter().map(|g| g.events.len()).sum::<usize>());
        self.pending_events
    }

    /// Where the next fetched batch must start: the first input not yet transformed, or,
    /// while inputs are deferred, the reader of the own keys.
    pub fn position(&self) -> Offset {
        if self.deferring {
            self.own_next
        } else {
            self.inputs.offset
        }
    }

    /// The first record not yet read for inputs: how far the transform has come.
    pub fn input_position(&self) -> Offset {
        self.inputs.offset
    }

    /// The next snapshot taken and not yet handed out, for the driver to store; the oldest
    /// are dropped if the driver falls behind.
    pub fn poll_snapshot(&mut self) -> Option<Snapshot> {
        self.snapshots.pop_front()
    }

    /// The snapshot stored for `position` has digest `stored` (another replica's, if it
    /// stored first): a digest other than the one this replica took there is a state
    /// divergence, and the replica stops writing as for an output divergence.
    pub fn on_snapshot_stored(&mut self, position: Offset, stored: Digest) {
        let Some(&(_, inputs, ours)) = self.taken.iter().find(|(at, _, _)| *at == position) else { return };
        if ours != stored {
            self.diverge(Divergence {
                key: self.output_key.clone(),
                index: inputs,
                ours,
                canonical: stored,
                canonical_offset: position,
                canonical_writer: None,
                kind: DivergenceKind::State,
            });
        }
    }

    /// Whether inputs wait while the replica reads ahead for its own keys.
    pub fn is_deferring(&self) -> bool {
        self.deferring
    }

    /// Events computed but not yet seen canonical, and their bytes in records: what the
    /// memory bound counts.
    pub fn holding(&self) -> (usize, usize) {
        (self.pending_events(), self.pending_bytes)
    }

    /// Where the replica is in its life.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The race accounting so far.
    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    /// The first divergence seen, if any.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_ref()
    }

    /// The canonical rule over the replica's own keys (output and dead letters), as far as
    /// it has read them.
    pub fn own_rule(&self) -> &CanonicalRule {
        &self.own
    }

    /// The keys whose canonical events are inputs.
    pub fn subscriptions(&self) -> &[EventSourceKey] {
        &self.subscriptions
    }

    /// The output key.
    pub fn output_key(&self) -> &EventSourceKey {
        &self.output_key
    }

    /// The dead-letter key.
    pub fn dead_letter_key(&self) -> &EventSourceKey {
        &self.dead_letter_key
    }

    /// Whether every computed group is canonical and nothing is in flight.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_empty()
    }

    /// In adaptive racing, this replica's rank by what it has read of its own keys: 0 when
    /// it leads (or no one has won yet) and writes new groups at once, k when it holds them
    /// back k hold times. `None` in the other modes.
    pub fn racing_rank(&self) -> Option<u64> {
        self.leadership.as_ref().map(Leadership::rank)
    }

    /// In adaptive racing, the writer of the latest canonical event of the own keys read.
    pub fn racing_leader(&self) -> Option<&str> {
        self.leadership.as_ref().and_then(Leadership::leader)
    }

    /// In adaptive racing, how long a rank-1 follower holds a new group now.
    pub fn racing_hold_ms(&self) -> Option<u64> {
        self.leadership.as_ref().map(Leadership::hold_ms)
    }

    /// The replica's id.
    pub fn replica_id(&self) -> &str {
        &self.config.replica_id
    }

    /// The transform.
    pub fn transform(&self) -> &T {
        &self.transform
    }
}

#[cfg(test)]
mod tests;
