//! Deterministic simulation: racing replicas on the in-memory log under a seeded scheduler
//! with crashes, restarts, stalls, lost and reordered deliveries, deliveries reported failed
//! that landed, a dead run's records landing after its successor re-sent them, spells in
//! which every write of one replica fails (in some seeds, all through the faults), poison
//! inputs, malformed records, foreign duplicates on the DET's
//! streams, and rolling restarts onto a build with a new `version()`. Seeds read one to
//! three input keys, interleaved; a quarter run with a digest window of a few digests and
//! records of a few hundred bytes, so the window wraps and writes split. Half take
//! snapshots: every replica checks its own against the first stored at each position (a
//! difference is a state divergence), and restarts resume from the newest. Every seed must
//! give the canonical output and dead-letter streams of one replica running alone with no
//! faults. Half the seeds stagger their replicas; of the others, two thirds race adaptively
//! (the default) and a third all at once.
//!
//! Timed runs of adaptive racing (`Timed`, 1 ms steps, three replicas) check its figures:
//! about one copy of each group when healthy, and a leader stalled, killed, slowed past the
//! longest hold, or woken believing it still leads overtaken within one hold, with the
//! outputs again those of a lone replica.
//!
//! A second test makes a foreign event canonical on the output key: every replica must
//! then stop and name the writer and the offset. A third protects the DET's keys (replicas
//! sign their records) while a forger writes the next index of its streams again and again,
//! unsigned or signed with a key of its own: no replica may stop, and the streams must still
//! be a lone replica's.
//!
//! `SIM_SEEDS=N` runs N seeds (default 400; the foreign-write test runs a quarter of them);
//! `SIM_SEED=S` replays one seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Once;

use competing_transformers::canonical::CanonicalRule;
use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::record::{Record, RecordView};
use competing_transformers::replica::{run_to_end, Racing, ReplicaConfig, ReplicaCore, Stagger};
use competing_transformers::signature::{Signer, Trust};
use competing_transformers::snapshot::{state_from_bytes, state_to_bytes, Snapshot};
use competing_transformers::Digest;
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Offset, Outputs, Transform, TransformError};

/// The id of a writer that is not a replica of the DET.
const INTRUDER: &str = "intruder";

/// The keys a seed's transform may read: the first one, two or three.
const INPUT_KEYS: [&str; 3] = ["numbers", "tallies", "counts"];

/// SplitMix64: a tiny generator whose sequence depends on the seed alone.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One build of the transform: builds that differ only in `version` share their logic.
#[derive(Clone, Debug)]
struct Build {
    version: u32,
    inputs: Vec<EventSourceKey>,
}

/// A stateful transform with every kind of failure: keeps a running sum over all its input
/// keys, emits 0 to 2 events per input, fails on multiples of 13, panics on multiples of
/// 17, and cannot decode a payload that is not JSON.
struct RunningSum {
    sum: i64,
    build: Build,
}

impl RunningSum {
    fn new(build: Build) -> Self {
        Self { sum: 0, build }
    }
}

impl Transform for RunningSum {
    fn name(&self) -> &str {
        "running-sum"
    }
    fn version(&self) -> u32 {
        self.build.version
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        self.build.inputs.clone()
    }
    fn save_state(&self) -> Option<Vec<u8>> {
        Some(state_to_bytes(&self.sum))
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.sum = state_from_bytes(state)?;
        Ok(())
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let n: i64 = input.json()?;
        if n % 13 == 0 {
            return Err(TransformError::Failed(format!("{n} is unlucky")));
        }
        if n % 17 == 0 {
            panic!("cannot add {n}");
        }
        self.sum += n;
        for k in 0..n.rem_euclid(3) {
            out.emit_json(
                &serde_json::json!({ "sum": self.sum, "k": k, "key": input.key.as_str(), "input": input.index }),
            );
        }
        Ok(())
    }
}

/// Limits small enough that the digest window wraps and a replica's writes split over
/// several records.
#[derive(Clone, Copy, Debug)]
struct Scale {
    digest_window: usize,
    record_bytes_max: usize,
    /// As the main scenario's: the simulated producer delivers one record a step, slower
    /// than a backlog of small records is re-sent (see
    /// `a_backlog_in_small_records_delivered_slowly_settles`).
    resend_after_ms: u64,
}

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// The events of input record `i`: mostly one, sometimes events of several input keys in
/// one record.
fn input_record(rng: &mut Rng, i: u64, keys: &[EventSourceKey]) -> Vec<Event> {
    let count = if keys.len() > 1 && rng.chance(15) { 2 + rng.below(keys.len() as u64 - 1) } else { 1 };
    (0..count)
        .map(|j| {
            let key = keys[rng.below(keys.len() as u64) as usize].clone();
            let payload = if rng.chance(3) {
                b"not json".to_vec()
            } else {
                (1 + (i as i64 * 7 + j as i64) % 50).to_string().into_bytes()
            };
            Event::new(key, None, None, 1_000 + i as i64, "application/json", payload)
        })
        .collect()
}

/// Appends one input record, as an event source does.
fn publish(log: &MemoryLog, events: &[Event]) -> Offset {
    let record = Record { source: events[0].key.clone(), writer: "source".into(), events: events.to_vec() };
    log.append_now(&record).expect("inputs encode")
}

/// The output key and the dead-letter key.
fn streams() -> [EventSourceKey; 2] {
    let output = key("running-sum");
    let dead_letters = output.dead_letters();
    [output, dead_letters]
}

/// An event of the DET's stream `key` written by [`INTRUDER`], claiming `index`.
fn forged(key: &EventSourceKey, index: Option<u64>) -> Record {
    let event = Event::new(key.clone(), index, None, 0, "application/json", b"{\"forged\":true}".to_vec());
    Record { source: key.clone(), writer: INTRUDER.into(), events: vec![event] }
}

/// Appends a record every reader must skip as malformed: bytes that are no record, a record
/// cut short or with a payload not matching its digest, no key or no value, or a Kafka key
/// that is not the value's source (one of them a forged next output under an input's key).
fn append_malformed(log: &MemoryLog, rng: &mut Rng, inputs: &[EventSourceKey]) {
    let input_key = inputs[rng.below(inputs.len() as u64) as usize].as_str().as_bytes().to_vec();
    let [output, _] = streams();
    let next_output = log.canonical(&output).len() as u64;
    let an_input = Record {
        source: key(INPUT_KEYS[0]),
        writer: "source".into(),
        events: vec![Event::new(key(INPUT_KEYS[0]), None, None, 0, "application/json", b"1".to_vec())],
    };
    let mut value = an_input.encode().unwrap().value;
    match rng.below(7) {
        0 => {
            let bytes = (0..1 + rng.below(40)).map(|_| rng.below(256) as u8).collect();
            log.append_raw(Some(input_key), Some(bytes));
        }
        1 => {
            value.truncate(rng.below(value.len() as u64) as usize);
            log.append_raw(Some(input_key), Some(value));
        }
        2 => {
            *value.last_mut().unwrap() ^= 0x20;
            log.append_raw(Some(input_key), Some(value));
        }
        3 => {
            log.append_raw(None, Some(value));
        }
        4 => {
            log.append_raw(Some(input_key), None);
        }
        5 => {
            log.append_raw(Some(output.as_str().as_bytes().to_vec()), Some(value));
        }
        _ => {
            let value = forged(&output, Some(next_output)).encode().unwrap().value;
            log.append_raw(Some(input_key), Some(value));
        }
    }
}

/// Appends, as a writer that is no replica, a copy of an event already canonical on one of
/// the DET's streams with another digest: a divergent duplicate every reader hides.
fn append_foreign_duplicate(log: &MemoryLog, rng: &mut Rng) -> bool {
    let stream = &streams()[rng.below(2) as usize];
    let count = log.canonical(stream).len() as u64;
    if count == 0 {
        return false;
    }
    log.append_now(&forged(stream, Some(rng.below(count)))).unwrap();
    true
}

/// Appends, as a forger, an event at the next index of one of the DET's streams, where every
/// replica computed its own: unsigned, or signed by the forger's own key.
fn append_forgery(log: &MemoryLog, rng: &mut Rng) {
    let stream = &streams()[rng.below(2) as usize];
    let next = log.canonical(stream).len() as u64;
    let forger = rng.chance(50).then(|| Signer::from_secret(&[0xf0; 32]));
    log.signed_by(forger).append_now(&forged(stream, Some(next))).unwrap();
}

/// The inputs (key and index) of one input record.
type Causes = Vec<(String, u64)>;

/// What a stream means, independent of where the inputs sat in the log: payloads, and
/// causes as the inputs (key and index) of the record they came from.
fn meaning(
    log: &MemoryLog,
    inputs: &[EventSourceKey],
    stream: &EventSourceKey,
) -> Vec<(u64, Vec<u8>, i64, Option<Causes>)> {
    let mut records: HashMap<u64, Causes> = HashMap::new();
    for input in inputs {
        for (offset, event) in log.canonical_with_offsets(input) {
            records.entry(offset).or_default().push((input.to_string(), event.index.unwrap()));
        }
    }
    log.canonical(stream)
        .into_iter()
        .map(|e| {
            let mut payload = e.payload.clone();
            if stream.as_str().ends_with("dead-letters") {
                // The input's offset differs between runs; its index does not.
                let mut letter: DeadLetter = serde_json::from_slice(&e.payload).unwrap();
                letter.input.offset = 0;
                payload = letter.to_json();
            }
            (e.index.unwrap(), payload, e.effective_time_ms, e.cause.map(|c| records[&c].clone()))
        })
        .collect()
}

#[derive(Default, Debug, Clone, Copy)]
struct Faults {
    crashes: u64,
    stalls: u64,
    failed_deliveries: u64,
    silent_losses: u64,
    reorders: u64,
    failing_spells: u64,
    poison: u64,
    records: u64,
    malformed: u64,
    foreign_duplicates: u64,
    /// Replicas restarted onto a build with a new version.
    upgrades: u64,
    /// Deliveries reported failed whose record landed.
    landed_failures: u64,
    /// Seeds in which one replica's every write fails until the faults end.
    always_failing_seeds: u64,
    /// Snapshots stored, replicas restarted from one, and snapshots checked against the
    /// stored one at their position.
    snapshots: u64,
    restores: u64,
    snapshot_checks: u64,
    /// Seeds whose transform read two or three keys.
    multi_key_seeds: u64,
    /// Seeds with a small digest window and small records, and those of them whose output
    /// stream outgrew the window.
    small_seeds: u64,
    window_wraps: u64,
    /// Events forged at the next index of a protected stream.
    forgeries: u64,
}

impl Faults {
    fn add(&mut self, f: &Faults) {
        self.crashes += f.crashes;
        self.stalls += f.stalls;
        self.failed_deliveries += f.failed_deliveries;
        self.silent_losses += f.silent_losses;
        self.reorders += f.reorders;
        self.failing_spells += f.failing_spells;
        self.poison += f.poison;
        self.records += f.records;
        self.malformed += f.malformed;
        self.foreign_duplicates += f.foreign_duplicates;
        self.upgrades += f.upgrades;
        self.snapshots += f.snapshots;
        self.landed_failures += f.landed_failures;
        self.always_failing_seeds += f.always_failing_seeds;
        self.restores += f.restores;
        self.snapshot_checks += f.snapshot_checks;
        self.multi_key_seeds += f.multi_key_seeds;
        self.small_seeds += f.small_seeds;
        self.window_wraps += f.window_wraps;
        self.forgeries += f.forgeries;
    }
}

struct SimReplica {
    id: String,
    racing: Racing,
    /// What it runs when (re)started.
    build: Build,
    scale: Option<Scale>,
    core: Option<ReplicaCore<RunningSum>>,
    in_flight: VecDeque<(u64, Record)>,
    /// Writes lost without a word yet: the producer reports them failed later, as
    /// librdkafka does when `message.timeout.ms` passes.
    lost: Vec<u64>,
    stalled_until: u64,
    /// Until this time every delivery of this replica fails (a broker refusing its writes):
    /// the others must carry the pipeline meanwhile.
    failing_until_ms: u64,
    /// Inputs between snapshots, in seeds that take them.
    snapshot_every: Option<u64>,
    /// The snapshots every replica of the seed stores and restarts from.
    store: Rc<RefCell<Store>>,
    /// Whether its current run resumed from a snapshot.
    resumed: bool,
    /// Records of a dead run still on their way to the log.
    late: Vec<Record>,
    /// The key its records are signed with, if the DET's keys are protected.
    signer: Option<Signer>,
    /// The log's trust table, which its runs apply.
    trust: Trust,
}

/// The first snapshot stored at each position, as the snapshot store keeps it.
#[derive(Default)]
struct Store {
    stored: BTreeMap<Offset, (Digest, Snapshot)>,
    /// Replicas restarted from a snapshot rather than from offset 0.
    restores: u64,
    checks: u64,
}

impl SimReplica {
    fn start(&mut self, log: &MemoryLog) {
        let mut config = ReplicaConfig::new(self.id.clone());
        config.resend_after_ms = 300;
        config.pending_events_max = 40;
        config.racing = self.racing;
        // Backoffs short next to the scenario, so a replica writes again within it.
        config.write_retry_min_ms = 5;
        config.write_retry_max_ms = 80;
        if let Some(scale) = self.scale {
            config.digest_window = scale.digest_window;
            config.record_bytes_max = scale.record_bytes_max;
            config.resend_after_ms = scale.resend_after_ms;
        }
        config.snapshot_every_inputs = self.snapshot_every;
        config.trust = self.trust.clone();
        let transform = RunningSum::new(self.build.clone());
        let mut store = self.store.borrow_mut();
        // Every other start of a seed with snapshots resumes from the newest one stored.
        let newest = store.stored.values().next_back().map(|(_, snapshot)| snapshot.clone());
        self.resumed = newest.is_some() && store.restores < store.stored.len() as u64;
        self.core = Some(match newest.filter(|_| store.restores < store.stored.len() as u64) {
            Some(snapshot) => {
                store.restores += 1;
                ReplicaCore::restore(transform, config, &snapshot, log.end()).ok().expect("a snapshot of this DET")
            }
            None => ReplicaCore::new(transform, config, log.end()),
        });
        self.in_flight.clear();
        self.lost.clear();
    }

    /// Stores the snapshots the replica took, or checks them against the one stored first.
    fn store_snapshots(&mut self) {
        let Some(core) = self.core.as_mut() else { return };
        let mut store = self.store.borrow_mut();
        while let Some(snapshot) = core.poll_snapshot() {
            let digest = Snapshot::digest_of(&snapshot.encode());
            let (stored, _) = *store.stored.entry(snapshot.position).or_insert((digest, snapshot.clone()));
            core.on_snapshot_stored(snapshot.position, stored);
            store.checks += 1;
        }
    }

    /// One step of normal work: fetch some records, queue writes, deliver one.
    fn work(&mut self, log: &MemoryLog, rng: &mut Rng, now_ms: u64, faults: &mut Faults, allow_faults: bool) {
        self.store_snapshots();
        // Its producer signs what it writes, when it holds a key.
        let signing = log.signed_by(self.signer.clone());
        let log = &signing;
        let Some(core) = self.core.as_mut() else { return };
        match rng.below(4) {
            0 | 1 => {
                let mut records = log.records_from(core.position());
                records.truncate(1 + rng.below(8) as usize);
                let position = core.position() + records.len() as u64;
                core.on_fetched(&records, position);
            }
            2 => {
                while let Some(write) = core.poll_write(now_ms) {
                    self.in_flight.push_back((write.write_id, write.record));
                }
            }
            _ => {
                if allow_faults && self.in_flight.len() > 1 && rng.chance(5) {
                    faults.reorders += 1;
                    self.in_flight.swap(0, 1);
                }
                if let Some((write_id, record)) = self.in_flight.pop_front() {
                    if now_ms < self.failing_until_ms || allow_faults && rng.chance(8) {
                        faults.failed_deliveries += 1;
                        // A timeout reported after the record made it after all.
                        if allow_faults && rng.chance(20) {
                            faults.landed_failures += 1;
                            log.append_now(&record).unwrap();
                        }
                        core.on_delivery(write_id, Err(()));
                        // A driver polls right after a delivery: a failure never makes the
                        // replica write again at once, so a write that keeps failing cannot spin.
                        assert!(core.poll_write(now_ms).is_none(), "a write at once after a failed delivery");
                    } else if allow_faults && rng.chance(3) {
                        faults.silent_losses += 1;
                        self.lost.push(write_id);
                    } else {
                        let offset = log.append_now(&record).unwrap();
                        core.on_delivery(write_id, Ok(offset));
                    }
                }
            }
        }
        if !self.lost.is_empty() && (!allow_faults || rng.chance(5)) {
            core.on_delivery(self.lost.remove(0), Err(()));
        }
        // A dead session's records land late, after its successor may have sent them again.
        if !self.late.is_empty() && (!allow_faults || rng.chance(10)) {
            log.append_now(&self.late.remove(0)).unwrap();
        }
        // A driver that sleeps to the core's deadline would call `on_timeout` only once it
        // passed: a re-send must never come before its deadline.
        let due = core.poll_timeout_ms().is_some_and(|at| at <= now_ms);
        let resent = core.stats().groups_resent;
        core.on_timeout(now_ms);
        assert!(due || core.stats().groups_resent == resent, "a re-send before the core's deadline");
    }

    fn crash(&mut self, log: &MemoryLog, rng: &mut Rng) {
        let signing = log.signed_by(self.signer.clone());
        let log = &signing;
        // A dying producer: each queued record either made it whole or not at all, now or
        // (the broker still holding it) later, after the replica came back.
        for (_, record) in self.in_flight.drain(..) {
            match rng.below(4) {
                0 => log.append_now(&record).map(drop).unwrap(),
                1 => self.late.push(record),
                _ => {}
            }
        }
        self.core = None;
        self.lost.clear();
    }

    /// Whether it runs an older build than the one it would start now.
    fn upgrade_due(&self) -> bool {
        self.core.as_ref().is_some_and(|core| core.transform().build.version != self.build.version)
    }

    /// Reads the whole log and queues its writes without delivering any: every group it
    /// computes is in flight or held.
    fn read_to_end(&mut self, log: &MemoryLog, now_ms: u64) {
        let core = self.core.as_mut().expect("a running replica");
        let records = log.records_from(core.position());
        core.on_fetched(&records, log.end());
        while let Some(write) = core.poll_write(now_ms) {
            self.in_flight.push_back((write.write_id, write.record));
        }
    }
}

/// One seed's world: the log, the replicas, and what the scheduler did to them.
struct Sim {
    seed: u64,
    rng: Rng,
    log: MemoryLog,
    /// The build every replica starts on; a bump gives them a newer version of it.
    build: Build,
    scale: Option<Scale>,
    replicas: Vec<SimReplica>,
    input_count: u64,
    inputs: Vec<Vec<Event>>,
    /// The step at which a new version of the build comes out, if it does in this seed.
    bump_at: Option<u64>,
    faults: Faults,
    now_ms: u64,
    /// Whether the DET's keys are protected, its replicas signing and a forger at work.
    protected: bool,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let replica_count = 2 + rng.below(3);
        let inputs: Vec<EventSourceKey> = INPUT_KEYS[..1 + rng.below(3) as usize].iter().map(|k| key(k)).collect();
        let scale = rng.chance(25).then(|| Scale {
            digest_window: 1 + rng.below(6) as usize,
            record_bytes_max: 100 + rng.below(300) as usize,
            resend_after_ms: 300,
        });
        let input_count = if scale.is_some() { 60 + rng.below(100) } else { 20 + rng.below(40) };
        let bump_at = rng.chance(30).then(|| 100 + rng.below(300));
        let build = Build { version: 1, inputs };
        let log = MemoryLog::new();
        // Half the seeds stagger writes: replica n waits n × delay before writing.
        let delay_ms = if rng.chance(50) { Some(1 + rng.below(60)) } else { None };
        // Of the others, two thirds race adaptively (the default), a third all at once.
        let racing = |n| match delay_ms {
            Some(delay_ms) => Racing::Staggered(Stagger { rank: n, delay_ms }),
            None if seed.is_multiple_of(3) => Racing::AllAtOnce,
            None => Racing::default(),
        };
        // Half the seeds take snapshots, and restart replicas from them.
        let snapshot_every = rng.chance(50).then(|| 2 + rng.below(8));
        let store = Rc::new(RefCell::new(Store::default()));
        let mut replicas: Vec<SimReplica> = (0..replica_count)
            .map(|n| SimReplica {
                id: format!("r{n}"),
                racing: racing(n),
                build: build.clone(),
                scale,
                core: None,
                in_flight: VecDeque::new(),
                lost: Vec::new(),
                stalled_until: 0,
                failing_until_ms: 0,
                snapshot_every,
                store: store.clone(),
                resumed: false,
                late: Vec::new(),
                signer: None,
                trust: Trust::default(),
            })
            .collect();
        for replica in &mut replicas {
            replica.start(&log);
        }
        // In some seeds one replica can never write while the faults last.
        let always_failing = rng.chance(15);
        if always_failing {
            replicas[0].failing_until_ms = u64::MAX;
        }
        let faults = Faults {
            always_failing_seeds: u64::from(always_failing),
            multi_key_seeds: u64::from(build.inputs.len() > 1),
            small_seeds: u64::from(scale.is_some()),
            ..Faults::default()
        };
        Self {
            seed,
            rng,
            log,
            build,
            scale,
            replicas,
            input_count,
            inputs: Vec::new(),
            bump_at,
            faults,
            now_ms: 0,
            protected: false,
        }
    }

    /// The seed's world with the DET's keys protected: every replica signs with a key of its
    /// own (each in the table, as in a rotation), and every reader applies the table.
    fn protected(seed: u64) -> Self {
        let mut sim = Self::new(seed);
        let signers: Vec<Signer> = (0..sim.replicas.len()).map(|n| Signer::from_secret(&[n as u8 + 1; 32])).collect();
        let trust = streams()
            .iter()
            .fold(Trust::new(), |trust, stream| trust.protect(stream, signers.iter().map(Signer::public_key)));
        sim.log = sim.log.with_trust(trust.clone());
        sim.protected = true;
        for (replica, signer) in sim.replicas.iter_mut().zip(signers) {
            (replica.signer, replica.trust) = (Some(signer), trust.clone());
            replica.start(&sim.log);
        }
        sim
    }

    fn publish_next(&mut self) {
        let events = input_record(&mut self.rng, self.inputs.len() as u64, &self.build.inputs);
        publish(&self.log, &events);
        self.inputs.push(events);
    }

    /// The faulty part of the run: inputs arrive while the scheduler injects faults.
    fn run_faults(&mut self) {
        let fault_steps = 400 + self.rng.below(400);
        for step in 0..fault_steps {
            self.now_ms += 1 + self.rng.below(20);
            if (self.inputs.len() as u64) < self.input_count && self.rng.chance(15) {
                self.publish_next();
            }
            if self.bump_at == Some(step) {
                // A new build is out: every replica runs it from its next start on.
                for replica in &mut self.replicas {
                    replica.build.version += 1;
                }
            }
            let (log, rng, faults) = (&self.log, &mut self.rng, &mut self.faults);
            let r = rng.below(self.replicas.len() as u64) as usize;
            let replica = &mut self.replicas[r];
            if replica.stalled_until > step {
                continue;
            }
            match rng.below(100) {
                0..=1 => {
                    faults.crashes += 1;
                    replica.crash(log, rng);
                }
                2..=3 => {
                    faults.stalls += 1;
                    replica.stalled_until = step + 20 + rng.below(100);
                }
                4..=6 if replica.core.is_none() => replica.start(log),
                7 => {
                    faults.failing_spells += 1;
                    replica.failing_until_ms = self.now_ms + 100 + rng.below(900);
                }
                8 => {
                    faults.malformed += 1;
                    append_malformed(log, rng, &self.build.inputs);
                }
                9 => faults.foreign_duplicates += u64::from(append_foreign_duplicate(log, rng)),
                13..=15 if self.protected => {
                    faults.forgeries += 1;
                    append_forgery(log, rng);
                }
                // The rolling restart: one replica at a time goes down and comes back on the
                // new build, while the others go on.
                10..=12 if replica.upgrade_due() => {
                    faults.upgrades += 1;
                    replica.crash(log, rng);
                    replica.start(log);
                }
                _ => replica.work(log, rng, self.now_ms, faults, true),
            }
        }
        while (self.inputs.len() as u64) < self.input_count {
            self.publish_next();
        }
    }

    /// No more faults: every replica (restarted if dead or on an older build) works until
    /// all settle.
    fn quiesce(&mut self) {
        let (log, rng, faults) = (&self.log, &mut self.rng, &mut self.faults);
        for replica in &mut self.replicas {
            replica.stalled_until = 0;
            replica.failing_until_ms = 0;
            if replica.upgrade_due() {
                faults.upgrades += 1;
                replica.crash(log, rng);
            }
            if replica.core.is_none() {
                replica.start(log);
            }
        }
        let mut quiet_rounds = 0;
        for _ in 0..100_000 {
            self.now_ms += 10;
            for replica in &mut self.replicas {
                replica.work(log, rng, self.now_ms, faults, false);
            }
            let settled = self.replicas.iter().all(|r| {
                let core = r.core.as_ref().unwrap();
                r.in_flight.is_empty() && r.late.is_empty() && core.is_settled() && core.position() == log.end()
            });
            quiet_rounds = if settled { quiet_rounds + 1 } else { 0 };
            if quiet_rounds > 5 {
                break;
            }
        }
        if quiet_rounds <= 5 {
            for r in &self.replicas {
                let c = r.core.as_ref().unwrap();
                eprintln!(
                    "{}: phase {:?} position {} of {} settled {} in_flight {} deferring {} stats {:?}",
                    r.id,
                    c.phase(),
                    c.position(),
                    log.records().len(),
                    c.is_settled(),
                    r.in_flight.len(),
                    c.is_deferring(),
                    c.stats()
                );
            }
        }
        let seed = self.seed;
        assert!(quiet_rounds > 5, "seed {seed}: replicas did not settle; replay with SIM_SEED={seed}");
    }

    /// The property: the canonical streams mean what one replica alone computes from the
    /// same input records, with no fault, and no replica diverged.
    fn check(&mut self) {
        let seed = self.seed;
        for replica in &mut self.replicas {
            replica.store_snapshots();
        }
        let store = self.replicas[0].store.borrow();
        (self.faults.snapshots, self.faults.restores, self.faults.snapshot_checks) =
            (store.stored.len() as u64, store.restores, store.checks);
        drop(store);
        let reference = MemoryLog::new();
        for events in &self.inputs {
            publish(&reference, events);
        }
        run_to_end(&reference, RunningSum::new(self.build.clone()));
        for stream in streams() {
            let got = meaning(&self.log, &self.build.inputs, &stream);
            let want = meaning(&reference, &self.build.inputs, &stream);
            assert!(
                got == want,
                "seed {seed}: canonical `{stream}` differs from a lone replica's ({} vs {} events); replay with SIM_SEED={seed}",
                got.len(),
                want.len()
            );
        }
        for replica in &self.replicas {
            let core = replica.core.as_ref().unwrap();
            assert!(core.divergence().is_none(), "seed {seed}: {} diverged; replay with SIM_SEED={seed}", replica.id);
            // One resumed from a snapshot never read the records before it.
            if !replica.resumed {
                assert_eq!(
                    core.own_rule().malformed(),
                    self.faults.malformed,
                    "seed {seed}: {} did not skip exactly the malformed records; replay with SIM_SEED={seed}",
                    replica.id
                );
            }
            assert_eq!(core.transform().version(), replica.build.version, "seed {seed}: {} not upgraded", replica.id);
        }
        let [output, dead_letters] = streams();
        self.faults.poison = reference.canonical(&dead_letters).len() as u64;
        self.faults.records = self.log.records().len() as u64;
        self.faults.window_wraps =
            u64::from(self.scale.is_some_and(|s| self.log.canonical(&output).len() > s.digest_window));
    }
}

fn run_seed(seed: u64) -> Faults {
    let mut sim = Sim::new(seed);
    sim.run_faults();
    sim.quiesce();
    sim.check();
    sim.faults
}

/// The transform panics on purpose; keep those caught panics out of the output.
fn quiet_transform_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("cannot add") {
                default_hook(info);
            }
        }));
    });
}

/// `SIM_SEED`, or the first `SIM_SEEDS / share` seeds (default 400 / share).
fn seeds(share: u64) -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
            (0..(n / share).max(1)).collect()
        }
    }
}

#[test]
fn racing_replicas_under_faults_match_a_lone_replica() {
    quiet_transform_panics();
    let seeds = seeds(1);
    let mut total = Faults::default();
    for &seed in &seeds {
        total.add(&run_seed(seed));
    }
    println!(
        "simulation: {} seeds, {} records; faults: {} crashes, {} stalls, {} failed deliveries, {} silent losses, {} reordered deliveries, {} spells of failing writes, {} poison inputs, {} malformed records, {} foreign duplicates, {} failed deliveries that landed, {} seeds with a replica that never writes, {} restarts onto a new version, {} snapshots stored, {} checked, {} restarts from one; {} seeds with several input keys, {} with small limits ({} of them past the digest window); all matched a lone replica",
        seeds.len(), total.records, total.crashes, total.stalls, total.failed_deliveries, total.silent_losses, total.reorders, total.failing_spells, total.poison,
        total.malformed, total.foreign_duplicates, total.landed_failures, total.always_failing_seeds, total.upgrades, total.snapshots, total.snapshot_checks, total.restores, total.multi_key_seeds, total.small_seeds, total.window_wraps
    );
    assert!(
        total.crashes > 0
            && total.failed_deliveries > 0
            && total.failing_spells > 0
            && total.poison > 0
            && total.malformed > 0
            && total.foreign_duplicates > 0
            && total.upgrades > 0
            && total.restores > 0
            && total.landed_failures > 0
            && total.always_failing_seeds > 0
            && total.multi_key_seeds > 0
            && total.window_wraps > 0
            || seeds.len() < 10
    );
}

/// A foreign writer makes its event canonical at the next index of the output key, where
/// every replica has computed its own: each must stop, naming the writer and the offset.
/// The property no longer applies after that, so the seed's run ends there.
fn run_foreign_seed(seed: u64) {
    let mut sim = Sim::new(seed);
    sim.run_faults();
    sim.quiesce();
    // "1" is one output in every build; every replica computes it, none has delivered it.
    publish(&sim.log, &[Event::new(sim.build.inputs[0].clone(), None, None, 0, "application/json", b"1".to_vec())]);
    for replica in &mut sim.replicas {
        replica.read_to_end(&sim.log, sim.now_ms);
    }
    let [output, _] = streams();
    let index = sim.log.canonical(&output).len() as u64;
    let offset = sim.log.append_now(&forged(&output, Some(index))).unwrap();
    // A replica started now reads the foreign event before it computes that index.
    let mut late =
        SimReplica { id: "late".into(), racing: Racing::AllAtOnce, core: None, ..sim.replicas.pop().unwrap() };
    let (log, rng, faults) = (&sim.log, &mut sim.rng, &mut sim.faults);
    for replica in &mut sim.replicas {
        for _ in 0..10_000 {
            if replica.core.as_ref().unwrap().position() == log.end() {
                break;
            }
            sim.now_ms += 10;
            replica.work(log, rng, sim.now_ms, faults, false);
        }
        let divergence = replica.core.as_ref().unwrap().divergence();
        let divergence = divergence.unwrap_or_else(|| panic!("seed {seed}: {} did not stop", replica.id));
        assert_eq!((&divergence.key, divergence.index), (&output, index), "seed {seed}: {}", replica.id);
        assert_eq!(divergence.canonical_offset, offset, "seed {seed}: {}", replica.id);
        assert_eq!(divergence.canonical_writer.as_deref(), Some(INTRUDER), "seed {seed}: {}", replica.id);
    }
    late.start(log);
    for _ in 0..10_000 {
        sim.now_ms += 10;
        late.work(log, rng, sim.now_ms, faults, false);
    }
    let divergence = late.core.as_ref().unwrap().divergence();
    let divergence = divergence.unwrap_or_else(|| panic!("seed {seed}: the late replica did not stop"));
    assert_eq!(
        (&divergence.key, divergence.index, divergence.canonical_offset),
        (&output, index, offset),
        "seed {seed}"
    );
    assert!(
        divergence.canonical_writer.as_deref().is_none_or(|w| w == INTRUDER),
        "seed {seed}: the late replica blames {:?}",
        divergence.canonical_writer
    );
}

#[test]
fn a_foreign_event_canonical_on_the_output_key_stops_every_replica_naming_its_writer() {
    quiet_transform_panics();
    for seed in seeds(4) {
        run_foreign_seed(seed);
    }
}

/// The DET's streams are protected and a forger keeps writing their next index, unsigned or
/// signed by its own key: every reader calls those events unauthorized, so no replica stops
/// and the streams are a lone replica's.
#[test]
fn forged_events_on_protected_streams_stop_no_replica() {
    quiet_transform_panics();
    let mut forgeries = 0;
    for seed in seeds(8) {
        let mut sim = Sim::protected(seed);
        sim.run_faults();
        sim.quiesce();
        sim.check();
        forgeries += sim.faults.forgeries;
        let mut rule = CanonicalRule::default().with_trust(sim.log.trust().clone());
        for fetched in sim.log.records() {
            let _ = rule.apply_view(fetched.offset, RecordView::parse_fetched(&fetched).as_ref());
        }
        let unauthorized: u64 = streams().iter().map(|stream| rule.stats(stream).unauthorized).sum();
        // The forger's events, and the foreign duplicates (unsigned too): nothing else.
        let forged = sim.faults.forgeries + sim.faults.foreign_duplicates;
        assert_eq!(unauthorized, forged, "seed {seed}: every forged event, and nothing else, is unauthorized");
    }
    assert!(forgeries > 0 || seeds(8).len() < 10, "the forger was at work");
}

/// Seed 8 with small records re-sent after 300 ms: replica r2 catches up with a backlog
/// over `pending_events_max` while the simulated producer delivers its records slower than
/// it re-sends them. A replica that stopped reading while writes were in flight never saw
/// its groups canonical and re-sent them for ever; one that defers inputs reads on.
#[test]
fn a_backlog_in_small_records_delivered_slowly_settles() {
    quiet_transform_panics();
    let mut sim = Sim::new(8);
    assert!(sim.scale.is_some(), "seed 8 has small records");
    for replica in &mut sim.replicas {
        replica.scale = replica.scale.map(|scale| Scale { resend_after_ms: 300, ..scale });
        replica.start(&sim.log);
    }
    sim.run_faults();
    sim.quiesce();
    sim.check();
}

/// What the timed runs of adaptive racing do to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaderFault {
    None,
    /// The current leader stops 300 ms in every 1,000 ms (its writes already sent land).
    Stall,
    /// The current leader stops 300 ms between computing groups and writing them, and writes
    /// them at once when it wakes, before reading: for those groups it and the replica that
    /// took over both lead.
    StallBeforeWriting,
    /// The current leader dies at 1,000 ms (its writes in flight are lost) and starts again
    /// 1,000 ms later.
    Kill,
    /// The current leader's writes take 30 ms to land from 1,000 ms on: over the longest hold.
    Slow,
}

/// Adaptive racing in 1 ms steps: an input every 2 ms, each replica reading the log and
/// writing every ms, writes landing 1 ms after they are sent (`delivery_ms`).
struct Timed {
    log: MemoryLog,
    replicas: Vec<TimedReplica>,
    now_ms: u64,
    /// When each record landed, by offset.
    landed_at: Vec<u64>,
    inputs: Vec<Vec<Event>>,
    build: Build,
    /// When each replica became the leader, and which, by the log.
    leaders: Vec<(u64, String)>,
}

struct TimedReplica {
    id: String,
    core: Option<ReplicaCore<RunningSum>>,
    /// Writes sent: when they land, their id and record.
    in_flight: VecDeque<(u64, u64, Record)>,
    /// Writes landed while it was stalled, reported when it wakes.
    delivered: Vec<(u64, Offset)>,
    delivery_ms: u64,
    stalled_until_ms: u64,
    /// Writes before reading at its next step (it woke from a stall before writing).
    write_first: bool,
    dead_until_ms: Option<u64>,
}

impl Timed {
    fn new(replica_count: usize, racing: Racing) -> Self {
        let build = Build { version: 1, inputs: vec![key(INPUT_KEYS[0])] };
        let replicas = (0..replica_count)
            .map(|n| {
                let mut config = ReplicaConfig::new(format!("r{n}"));
                config.racing = racing;
                TimedReplica {
                    id: format!("r{n}"),
                    core: Some(ReplicaCore::new(RunningSum::new(build.clone()), config, 0)),
                    in_flight: VecDeque::new(),
                    delivered: Vec::new(),
                    delivery_ms: 1,
                    stalled_until_ms: 0,
                    write_first: false,
                    dead_until_ms: None,
                }
            })
            .collect();
        let log = MemoryLog::new();
        Self { log, replicas, now_ms: 0, landed_at: Vec::new(), inputs: Vec::new(), build, leaders: Vec::new() }
    }

    fn append(&mut self, record: &Record) -> Offset {
        let offset = self.log.append_now(record).unwrap();
        self.landed_at.push(self.now_ms);
        offset
    }

    /// The leader by the log, as the replica that has read furthest sees it.
    fn leader(&self) -> Option<usize> {
        let reader = self
            .replicas
            .iter()
            .filter(|r| r.stalled_until_ms <= self.now_ms)
            .filter_map(|r| r.core.as_ref())
            .max_by_key(|core| core.position())?;
        let writer = reader.racing_leader()?;
        self.replicas.iter().position(|r| r.id == writer)
    }

    /// Runs `ms` steps with `fault` done to the leader of the moment it strikes.
    fn run(&mut self, ms: u64, fault: LeaderFault, rng: &mut Rng) {
        for _ in 0..ms {
            self.now_ms += 1;
            if self.now_ms.is_multiple_of(2) {
                let events = input_record(rng, self.inputs.len() as u64, &self.build.inputs);
                self.append(&Record { source: events[0].key.clone(), writer: "source".into(), events: events.clone() });
                self.inputs.push(events);
            }
            self.strike(fault);
            for r in 0..self.replicas.len() {
                self.step(r);
            }
            if let Some(leader) = self.leader().map(|r| self.replicas[r].id.clone()) {
                if self.leaders.last().is_none_or(|(_, id)| *id != leader) {
                    self.leaders.push((self.now_ms, leader));
                }
            }
        }
    }

    fn strike(&mut self, fault: LeaderFault) {
        let at = self.now_ms.is_multiple_of(1_000) && self.now_ms >= 1_000;
        let Some(leader) = self.leader().filter(|_| at) else { return };
        let now = self.now_ms;
        let replica = &mut self.replicas[leader];
        match fault {
            LeaderFault::None => {}
            LeaderFault::Stall => replica.stalled_until_ms = now + 300,
            LeaderFault::StallBeforeWriting => {
                // It reads what is there (computing groups) and stops before writing them.
                let core = replica.core.as_mut().unwrap();
                let records = self.log.records_from(core.position());
                core.on_fetched(&records, self.log.end());
                replica.stalled_until_ms = now + 300;
                replica.write_first = true;
            }
            LeaderFault::Kill if now == 1_000 => {
                replica.core = None;
                replica.in_flight.clear();
                replica.delivered.clear();
                replica.dead_until_ms = Some(now + 1_000);
            }
            LeaderFault::Slow if now == 1_000 => replica.delivery_ms = 30,
            LeaderFault::Kill | LeaderFault::Slow => {}
        }
    }

    /// One ms of replica `r`: its writes due land, it reads the log, writes, and lets time pass.
    fn step(&mut self, r: usize) {
        let now = self.now_ms;
        while self.replicas[r].in_flight.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, write_id, record) = self.replicas[r].in_flight.pop_front().unwrap();
            let offset = self.append(&record);
            self.replicas[r].delivered.push((write_id, offset));
        }
        let replica = &mut self.replicas[r];
        if replica.dead_until_ms.is_some_and(|until| until <= now) {
            replica.dead_until_ms = None;
            let mut config = ReplicaConfig::new(replica.id.clone());
            config.racing = Racing::default();
            replica.core = Some(ReplicaCore::new(RunningSum::new(self.build.clone()), config, self.log.end()));
        }
        if replica.stalled_until_ms > now {
            return;
        }
        let Some(core) = replica.core.as_mut() else { return };
        for (write_id, offset) in replica.delivered.drain(..) {
            core.on_delivery(write_id, Ok(offset));
        }
        if !std::mem::take(&mut replica.write_first) {
            let records = self.log.records_from(core.position());
            core.on_fetched(&records, self.log.end());
        }
        core.on_timeout(now);
        while let Some(write) = core.poll_write(now) {
            replica.in_flight.push_back((now + replica.delivery_ms, write.write_id, write.record));
        }
    }

    /// Lets every replica settle with no new input.
    fn settle(&mut self) {
        for _ in 0..2_000 {
            self.now_ms += 1;
            for r in 0..self.replicas.len() {
                self.replicas[r].stalled_until_ms = 0;
                self.step(r);
            }
        }
    }

    /// The canonical outputs and dead letters mean what a lone replica computes.
    fn check_against_a_lone_replica(&self, what: &str) {
        let reference = MemoryLog::new();
        for events in &self.inputs {
            publish(&reference, events);
        }
        run_to_end(&reference, RunningSum::new(self.build.clone()));
        for stream in streams() {
            let got = meaning(&self.log, &self.build.inputs, &stream);
            assert!(got == meaning(&reference, &self.build.inputs, &stream), "{what}: canonical `{stream}` differs");
        }
        for replica in &self.replicas {
            assert!(replica.core.as_ref().unwrap().divergence().is_none(), "{what}: {} diverged", replica.id);
        }
    }

    /// Events the replicas wrote on the DET's streams per canonical one, from `from_ms` on.
    fn amplification(&self, from_ms: u64) -> f64 {
        let (mut written, mut canonical) = (0, 0);
        for stream in streams() {
            canonical += self
                .log
                .canonical_with_offsets(&stream)
                .iter()
                .filter(|(o, _)| self.landed_at[*o as usize] >= from_ms)
                .count();
        }
        for (offset, record) in self.log.records().iter().enumerate() {
            let Ok(record) = Record::decode_fetched(record) else { continue };
            if record.writer != "source" && self.landed_at[offset] >= from_ms {
                written += record.events.len();
            }
        }
        written as f64 / canonical.max(1) as f64
    }

    /// The longest time from an input to its first canonical output or dead letter.
    fn latency_max_ms(&self) -> u64 {
        streams()
            .iter()
            .flat_map(|stream| self.log.canonical_with_offsets(stream))
            .map(|(offset, event)| self.landed_at[offset as usize] - self.landed_at[event.cause.unwrap() as usize])
            .max()
            .unwrap_or(0)
    }
}

/// One timed run of three replicas racing adaptively, `fault` done to the leader, checked
/// against a lone replica: (write amplification after the first second, the longest input
/// to output time, the leaders in turn).
fn timed_run(fault: LeaderFault) -> (f64, u64, Vec<(u64, String)>) {
    let mut rng = Rng(u64::from(fault as u8) + 1);
    let mut timed = Timed::new(3, Racing::default());
    timed.run(4_000, fault, &mut rng);
    timed.settle();
    timed.check_against_a_lone_replica(&format!("{fault:?}"));
    let figures = (timed.amplification(1_000), timed.latency_max_ms(), timed.leaders.clone());
    println!(
        "adaptive racing, leader fault {fault:?}: amplification {:.2}, longest answer {} ms, leaders {:?}",
        figures.0, figures.1, figures.2
    );
    figures
}

/// The longest answer when a leader fails: the hold of a rank-1 follower at most, a step to
/// read, a step to write and the write's ms.
const TAKEOVER_MS_MAX: u64 = competing_transformers::replica::racing::HOLD_MAX_MS_DEFAULT + 4;

#[test]
fn adaptive_racing_writes_about_one_copy_of_each_group_when_healthy() {
    quiet_transform_panics();
    let (amplification, latency_max_ms, leaders) = timed_run(LeaderFault::None);
    assert!(amplification <= 1.05, "amplification {amplification}");
    assert!(latency_max_ms <= 3, "the leader answers in a read, a write and its ms: {latency_max_ms} ms");
    assert_eq!(leaders.len(), 1, "one leader throughout: {leaders:?}");
}

#[test]
fn adaptive_racing_overtakes_a_stalled_leader_within_a_hold() {
    quiet_transform_panics();
    let (amplification, latency_max_ms, leaders) = timed_run(LeaderFault::Stall);
    assert!(latency_max_ms <= TAKEOVER_MS_MAX, "longest answer {latency_max_ms} ms");
    assert!(amplification <= 1.2, "amplification {amplification}");
    assert!(leaders.len() >= 4, "leadership moved at each of the three stalls: {leaders:?}");
}

#[test]
fn adaptive_racing_overtakes_a_killed_leader_and_the_restarted_one_follows() {
    quiet_transform_panics();
    let (amplification, latency_max_ms, leaders) = timed_run(LeaderFault::Kill);
    assert!(latency_max_ms <= TAKEOVER_MS_MAX, "longest answer {latency_max_ms} ms");
    assert!(amplification <= 1.1, "amplification {amplification}");
    assert_eq!(leaders.len(), 2, "one takeover, none back when the killed one returns: {leaders:?}");
}

#[test]
fn adaptive_racing_hands_leadership_to_a_faster_replica() {
    quiet_transform_panics();
    let (amplification, latency_max_ms, leaders) = timed_run(LeaderFault::Slow);
    assert!(latency_max_ms <= TAKEOVER_MS_MAX, "longest answer {latency_max_ms} ms");
    assert!(amplification <= 1.1, "amplification {amplification}");
    assert_eq!(leaders.len(), 2, "the slow leader lost its place for good: {leaders:?}");
}

#[test]
fn adaptive_racing_settles_when_two_replicas_both_think_they_lead() {
    quiet_transform_panics();
    let (amplification, latency_max_ms, leaders) = timed_run(LeaderFault::StallBeforeWriting);
    assert!(latency_max_ms <= TAKEOVER_MS_MAX, "longest answer {latency_max_ms} ms");
    assert!(amplification > 1.0, "the woken leader wrote what the new one had written: {amplification}");
    assert!(amplification <= 1.2, "amplification {amplification}");
    assert!(leaders.len() >= 4, "{leaders:?}");
}
