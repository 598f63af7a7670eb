//! Deterministic simulation: racing replicas on the in-memory log under a seeded scheduler
//! with crashes, restarts, stalls, lost and reordered deliveries, spells in which every write
//! of one replica fails, and poison inputs. Every seed must give the canonical output and
//! dead-letter streams of one replica running alone with no faults.
//!
//! `SIM_SEEDS=N` runs N seeds (default 400); `SIM_SEED=S` replays one seed.

use std::collections::{HashMap, VecDeque};

use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::record::Record;
use competing_transformers::replica::{run_to_end, ReplicaConfig, ReplicaCore, Stagger};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, Transform, TransformError};

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

/// A stateful transform with every kind of failure: keeps a running sum, emits 0 to 2
/// events per input, fails on multiples of 13, panics on multiples of 17, and cannot decode
/// a payload that is not JSON.
struct RunningSum {
    sum: i64,
}

impl Transform for RunningSum {
    fn name(&self) -> &str {
        "running-sum"
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("numbers")]
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
            out.emit_json(&serde_json::json!({ "sum": self.sum, "k": k, "input": input.index }));
        }
        Ok(())
    }
}

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn input_event(rng: &mut Rng, i: u64) -> Event {
    let payload = if rng.chance(3) { b"not json".to_vec() } else { (1 + i as i64 * 7 % 50).to_string().into_bytes() };
    Event::new(key("numbers"), None, None, 1_000 + i as i64, "application/json", payload)
}

/// What a stream means, independent of where the inputs sat in the log: payloads, and
/// causes as the index of the input they came from.
fn meaning(log: &MemoryLog, stream: &EventSourceKey) -> Vec<(u64, Vec<u8>, i64, Option<u64>)> {
    let inputs: HashMap<u64, u64> = log
        .canonical_with_offsets(&key("numbers"))
        .into_iter()
        .map(|(offset, event)| (offset, event.index.unwrap()))
        .collect();
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
            (e.index.unwrap(), payload, e.effective_time_ms, e.cause.map(|c| inputs[&c]))
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
}

struct SimReplica {
    id: String,
    stagger: Option<Stagger>,
    core: Option<ReplicaCore<RunningSum>>,
    in_flight: VecDeque<(u64, Record)>,
    /// Writes lost without a word yet: the producer reports them failed later, as
    /// librdkafka does when `message.timeout.ms` passes.
    lost: Vec<u64>,
    stalled_until: u64,
    /// Until this time every delivery of this replica fails (a broker refusing its writes):
    /// the others must carry the pipeline meanwhile.
    failing_until_ms: u64,
}

impl SimReplica {
    fn start(&mut self, log: &MemoryLog) {
        let mut config = ReplicaConfig::new(self.id.clone());
        config.resend_after_ms = 300;
        config.pending_events_max = 40;
        config.stagger = self.stagger;
        // Backoffs short next to the scenario, so a replica writes again within it.
        config.write_retry_min_ms = 5;
        config.write_retry_max_ms = 80;
        self.core = Some(ReplicaCore::new(RunningSum { sum: 0 }, config, log.records().len() as u64));
        self.in_flight.clear();
        self.lost.clear();
    }

    /// One step of normal work: fetch some records, queue writes, deliver one.
    fn work(&mut self, log: &MemoryLog, rng: &mut Rng, now_ms: u64, faults: &mut Faults, allow_faults: bool) {
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
        // A driver that sleeps to the core's deadline would call `on_timeout` only once it
        // passed: a re-send must never come before its deadline.
        let due = core.poll_timeout_ms().is_some_and(|at| at <= now_ms);
        let resent = core.stats().groups_resent;
        core.on_timeout(now_ms);
        assert!(due || core.stats().groups_resent == resent, "a re-send before the core's deadline");
    }

    fn crash(&mut self, log: &MemoryLog, rng: &mut Rng) {
        // A dying producer: each queued record either made it whole or not at all.
        for (_, record) in self.in_flight.drain(..) {
            if rng.chance(50) {
                log.append_now(&record).unwrap();
            }
        }
        self.core = None;
        self.lost.clear();
    }
}

#[allow(clippy::too_many_lines)] // one seed's whole scenario, read top to bottom
fn run_seed(seed: u64) -> Faults {
    let mut rng = Rng(seed);
    let replica_count = 2 + rng.below(3);
    let input_count = 20 + rng.below(40);
    let log = MemoryLog::new();
    // Half the seeds stagger writes: replica n waits n × delay before writing.
    let delay_ms = if rng.chance(50) { Some(1 + rng.below(60)) } else { None };
    let mut replicas: Vec<SimReplica> = (0..replica_count)
        .map(|n| SimReplica {
            id: format!("r{n}"),
            stagger: delay_ms.map(|delay_ms| Stagger { rank: n, delay_ms }),
            core: None,
            in_flight: VecDeque::new(),
            lost: Vec::new(),
            stalled_until: 0,
            failing_until_ms: 0,
        })
        .collect();
    for replica in &mut replicas {
        replica.start(&log);
    }
    let mut faults = Faults::default();
    let mut inputs = Vec::new();
    let mut published = 0;
    let mut now_ms = 0;
    let fault_steps = 400 + rng.below(400);
    for step in 0..fault_steps {
        now_ms += 1 + rng.below(20);
        if published < input_count && rng.chance(15) {
            let event = input_event(&mut rng, published);
            inputs.push(event.clone());
            log.publish(&key("numbers"), vec![event]);
            published += 1;
        }
        let r = rng.below(replica_count) as usize;
        let replica = &mut replicas[r];
        if replica.stalled_until > step {
            continue;
        }
        match rng.below(100) {
            0..=1 => {
                faults.crashes += 1;
                replica.crash(&log, &mut rng);
            }
            2..=3 => {
                faults.stalls += 1;
                replica.stalled_until = step + 20 + rng.below(100);
            }
            4..=6 if replica.core.is_none() => replica.start(&log),
            7 => {
                faults.failing_spells += 1;
                replica.failing_until_ms = now_ms + 100 + rng.below(900);
            }
            _ => replica.work(&log, &mut rng, now_ms, &mut faults, true),
        }
    }
    while published < input_count {
        let event = input_event(&mut rng, published);
        inputs.push(event.clone());
        log.publish(&key("numbers"), vec![event]);
        published += 1;
    }
    // Quiesce: no more faults; every replica (restarted if dead) works until all settle.
    for replica in &mut replicas {
        replica.stalled_until = 0;
        replica.failing_until_ms = 0;
        if replica.core.is_none() {
            replica.start(&log);
        }
    }
    let mut quiet_rounds = 0;
    for _ in 0..100_000 {
        now_ms += 10;
        for replica in &mut replicas {
            replica.work(&log, &mut rng, now_ms, &mut faults, false);
        }
        let settled = replicas.iter().all(|r| {
            let core = r.core.as_ref().unwrap();
            r.in_flight.is_empty() && core.is_settled() && core.position() == log.records().len() as u64
        });
        quiet_rounds = if settled { quiet_rounds + 1 } else { 0 };
        if quiet_rounds > 5 {
            break;
        }
    }
    if quiet_rounds <= 5 {
        for r in &replicas {
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
    assert!(quiet_rounds > 5, "seed {seed}: replicas did not settle; replay with SIM_SEED={seed}");

    // The reference: one replica alone, no faults, same inputs.
    let reference = MemoryLog::new();
    for event in &inputs {
        reference.publish(&key("numbers"), vec![event.clone()]);
    }
    run_to_end(&reference, RunningSum { sum: 0 });

    for stream in [key("running-sum"), key("running-sum.dead-letters")] {
        let got = meaning(&log, &stream);
        let want = meaning(&reference, &stream);
        assert!(
            got == want,
            "seed {seed}: canonical `{stream}` differs from a lone replica's ({} vs {} events); replay with SIM_SEED={seed}",
            got.len(),
            want.len()
        );
    }
    for replica in &replicas {
        let core = replica.core.as_ref().unwrap();
        assert!(core.divergence().is_none(), "seed {seed}: {} diverged; replay with SIM_SEED={seed}", replica.id);
    }
    faults.poison = inputs
        .iter()
        .filter(|e| {
            !e.payload.starts_with(b"n") && {
                let n: i64 = std::str::from_utf8(&e.payload).unwrap().parse().unwrap();
                n % 13 == 0 || n % 17 == 0
            }
        })
        .count() as u64
        + inputs.iter().filter(|e| e.payload.starts_with(b"n")).count() as u64;
    faults.records = log.records().len() as u64;
    faults
}

#[test]
fn racing_replicas_under_faults_match_a_lone_replica() {
    // The transform panics on purpose; keep those caught panics out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("cannot add") {
            default_hook(info);
        }
    }));
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => {
            let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
            (0..n).collect()
        }
    };
    let mut total = Faults::default();
    for &seed in &seeds {
        let f = run_seed(seed);
        total.crashes += f.crashes;
        total.stalls += f.stalls;
        total.failed_deliveries += f.failed_deliveries;
        total.silent_losses += f.silent_losses;
        total.reorders += f.reorders;
        total.failing_spells += f.failing_spells;
        total.poison += f.poison;
        total.records += f.records;
    }
    println!(
        "simulation: {} seeds, {} records; faults: {} crashes, {} stalls, {} failed deliveries, {} silent losses, {} reordered deliveries, {} spells of failing writes, {} poison inputs; all matched a lone replica",
        seeds.len(), total.records, total.crashes, total.stalls, total.failed_deliveries, total.silent_losses, total.reorders, total.failing_spells, total.poison
    );
    assert!(
        total.crashes > 0 && total.failed_deliveries > 0 && total.failing_spells > 0 && total.poison > 0
            || seeds.len() < 10
    );
}
