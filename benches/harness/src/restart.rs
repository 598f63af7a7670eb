//! `bench restart`: how long a DET is without outputs after all its replicas restart at
//! once, against the length of the log, with and without snapshots.
//!
//! For each DET and log length N: one replica (snapshots on) drains a log of N inputs; it
//! stops; one more input (the marker) is appended; then `replicas` processes start at once,
//! with snapshots, then again without (`snapshot_every_inputs = 0`: replay from offset 0).
//! The figure is the time from their spawn to the first canonical output of the marker (the
//! outage of a deploy that restarts every replica), and their peak resident memory by then.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use competing_transformers_kafka::snapshot_store::{KafkaSnapshotStore, Manifest};
use competing_transformers_kafka::{admin, KafkaLog, KafkaLogConfig};
use serde::Serialize;

use crate::framework::{self, Det};
use crate::load::{self, Load};
use crate::measure::{SharedTimeline, Timeline};
use crate::procs::Proc;
use crate::{peak_rss_mb, raw};

/// `bench restart`'s arguments; `bench run` makes its own for its `restart-*` scenarios.
#[derive(clap::Args, Clone)]
pub struct RestartArgs {
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Log lengths, in inputs.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub events: Vec<u64>,
    /// DETs: identity, matching-engine.
    #[arg(long, value_delimiter = ',', default_value = "identity,matching-engine")]
    pub dets: Vec<String>,
    /// Replica processes restarted at once.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Inputs between snapshots (the launcher's default).
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_every_inputs: u64,
    /// Where restart.json goes.
    #[arg(long, default_value = "benches/results")]
    pub out: PathBuf,
    /// Appended to each result's scenario name (`restart-<det><suffix>`): `@cluster` on a
    /// cluster.
    #[arg(skip)]
    pub suffix: String,
}

/// One restart: all replicas at once, on a log of `events` inputs (and their outputs).
#[derive(Serialize)]
pub struct Restart {
    /// `restart-<det>`, with the run's suffix (`@cluster`).
    pub scenario: String,
    pub det: &'static str,
    pub events: u64,
    pub snapshots: bool,
    pub replicas: usize,
    /// Spawn to the marker's first canonical output.
    pub first_output_ms: Option<f64>,
    /// The largest peak resident memory of the replicas by then.
    pub peak_rss_mb: Option<f64>,
    /// Fill and first drain of the log, for the record.
    pub drain_s: f64,
    /// The newest snapshot when the replicas restarted (with snapshots).
    pub snapshot: Option<Manifest>,
    pub error: Option<String>,
}

/// Runs every (DET, length) pair and writes `<out>/restart.json`.
pub async fn run(args: RestartArgs) -> anyhow::Result<()> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let work = std::env::temp_dir().join(format!("competing-transformers-restart-{stamp}"));
    eprintln!("bench restart: replica logs in {}", work.display());
    let results = measure(&args, &work, stamp).await?;
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("restart.json");
    let report = serde_json::json!({ "machine": crate::machine(), "replicas": args.replicas,
        "snapshot_every_inputs": args.snapshot_every_inputs, "restarts": results });
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("bench restart: wrote {}", path.display());
    Ok(())
}

/// Every (DET, length) pair of `args`, replica logs under `work`: with and without
/// snapshots each. A failed restart is a result with its error.
pub async fn measure(args: &RestartArgs, work: &Path, stamp: u128) -> anyhow::Result<Vec<Restart>> {
    let launcher = std::env::current_exe()?.with_file_name("bench-launcher");
    if !launcher.exists() {
        bail!("{} is missing; build it with `cargo build --release -p bench-harness`", launcher.display());
    }
    let mut results = Vec::new();
    for name in &args.dets {
        let det = match name.as_str() {
            "identity" => Det::Identity,
            "matching-engine" => Det::MatchingEngine,
            other => bail!("unknown DET `{other}`: identity or matching-engine"),
        };
        for &events in &args.events {
            let log = LogUnderTest::new(args, &launcher, work, det, events, stamp)?;
            results.extend(log.measure().await?);
        }
    }
    Ok(results)
}

/// One log: its topic, its observer, and the replicas run on it.
struct LogUnderTest<'a> {
    args: &'a RestartArgs,
    launcher: &'a Path,
    dir: PathBuf,
    det: Det,
    events: u64,
    topic: String,
    timeline: SharedTimeline,
    stop: Arc<AtomicBool>,
}

impl<'a> LogUnderTest<'a> {
    fn new(
        args: &'a RestartArgs,
        launcher: &'a Path,
        work: &Path,
        det: Det,
        events: u64,
        stamp: u128,
    ) -> anyhow::Result<Self> {
        let cluster = if args.suffix.is_empty() { "" } else { "-cluster" };
        let topic = format!("bench-restart-{}-{events}{cluster}-{stamp}", det.name());
        let dir = work.join(&topic);
        std::fs::create_dir_all(&dir)?;
        let (timeline, stop) = (Arc::new(Mutex::new(Timeline::default())), Arc::new(AtomicBool::new(false)));
        Ok(Self { args, launcher, dir, det, events, topic, timeline, stop })
    }

    /// Fills and drains the log, then restarts every replica with and without snapshots.
    async fn measure(&self) -> anyhow::Result<Vec<Restart>> {
        let config = KafkaLogConfig::new(&self.args.bootstrap, &self.topic);
        admin::create_topic(&config).await?;
        admin::create_snapshot_topics(&config).await?;
        let log = Arc::new(KafkaLog::connect(config).await?);
        let observer =
            tokio::spawn(framework::observe(log.clone(), self.det, self.timeline.clone(), self.stop.clone()));
        let send = framework::sender(log, self.det);
        eprintln!("  {} × {}: filling and draining the log", self.det.name(), self.events);
        let started = Instant::now();
        let drained = self.fill_and_drain(&send).await;
        let drain_s = started.elapsed().as_secs_f64();
        let mut results = Vec::new();
        match &drained {
            Ok(manifest) => eprintln!(
                "  newest snapshot: {} inputs, {} bytes, at offset {}",
                manifest.inputs, manifest.bytes, manifest.position
            ),
            Err(error) => results.push(self.failed(true, drain_s, error)),
        }
        if let Ok(manifest) = drained {
            for snapshots in [true, false] {
                let restart = self.restart(&send, snapshots).await;
                let result = restart.unwrap_or_else(|error| self.failed(snapshots, drain_s, &error));
                eprintln!(
                    "  {} × {}, snapshots {}: first output after {:?} ms, {:?} MB",
                    self.det.name(),
                    self.events,
                    if snapshots { "on" } else { "off" },
                    result.first_output_ms.map(f64::round),
                    result.peak_rss_mb.map(f64::round)
                );
                results.push(Restart { drain_s, snapshot: snapshots.then(|| manifest.clone()), ..result });
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        observer.await?.context("the observer")?;
        raw::delete_topics(&self.args.bootstrap, &self.topic).await?;
        Ok(results)
    }

    fn scenario(&self) -> String {
        format!("restart-{}{}", self.det.name(), self.args.suffix)
    }

    fn failed(&self, snapshots: bool, drain_s: f64, error: &anyhow::Error) -> Restart {
        eprintln!("  {} × {}: {error:#}", self.det.name(), self.events);
        Restart {
            scenario: self.scenario(),
            det: self.det.name(),
            events: self.events,
            snapshots,
            replicas: self.args.replicas,
            first_output_ms: None,
            peak_rss_mb: None,
            drain_s,
            snapshot: None,
            error: Some(format!("{error:#}")),
        }
    }

    /// One replica with snapshots drains `events` inputs; it is stopped once the last is
    /// answered and its newest snapshot stored.
    async fn fill_and_drain(&self, send: &load::Send) -> anyhow::Result<Manifest> {
        let config = self.config(self.args.snapshot_every_inputs, "fill")?;
        let mut replica = self.spawn("fill", &config)?;
        replica.wait_for("replica starting").await?;
        load::generate(Load::Backlog { events: self.events }, send.clone(), self.timeline.clone()).await?;
        let last = self.timeline.lock().expect("timeline").sent.iter().map(|(offset, _)| *offset).max();
        let last = last.context("no input was delivered")?;
        let answered = self.answered(last, Instant::now(), Duration::from_secs(1_800)).await;
        // As in a pipeline that keeps up: its newest snapshot is at most one interval old.
        let stored = match answered {
            Ok(_) => self.snapshot_stored().await,
            Err(error) => Err(error),
        };
        replica.stop(Duration::from_secs(30)).await;
        stored
    }

    /// Waits until a snapshot within one interval of the log's end is stored; returns it.
    async fn snapshot_stored(&self) -> anyhow::Result<Manifest> {
        let store = KafkaSnapshotStore::connect(&KafkaLogConfig::new(&self.args.bootstrap, &self.topic)).await?;
        let wanted = self.events - self.events % self.args.snapshot_every_inputs.max(1);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let newest =
                store.manifests(self.det.name()).await?.into_iter().map(|m| m.manifest).max_by_key(|m| m.inputs);
            match newest {
                Some(manifest) if manifest.inputs >= wanted => return Ok(manifest),
                _ if Instant::now() > deadline => bail!("no snapshot at {wanted} inputs was stored within 300 s"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Appends the marker, starts every replica at once, and times its first output.
    async fn restart(&self, send: &load::Send, snapshots: bool) -> anyhow::Result<Restart> {
        let marker = send(self.events + u64::from(snapshots)).await?;
        let every = if snapshots { self.args.snapshot_every_inputs } else { 0 };
        let label = if snapshots { "snap" } else { "replay" };
        let config = self.config(every, label)?;
        let spawned = Instant::now();
        let mut replicas = Vec::new();
        for i in 0..self.args.replicas {
            replicas.push(self.spawn(&format!("{label}-r{i}"), &config)?);
        }
        let answered = self.answered(marker, spawned, Duration::from_secs(1_800)).await;
        let peak_rss_mb = replicas.iter().filter_map(|replica| peak_rss_mb(replica.pid)).reduce(f64::max);
        for replica in replicas {
            replica.stop(Duration::from_secs(30)).await;
        }
        let first_output_ms = Some(answered?.duration_since(spawned).as_secs_f64() * 1e3);
        Ok(Restart {
            scenario: self.scenario(),
            det: self.det.name(),
            events: self.events,
            snapshots,
            replicas: self.args.replicas,
            first_output_ms,
            peak_rss_mb,
            drain_s: 0.0,
            snapshot: None,
            error: None,
        })
    }

    /// When the observer read the first output caused by `input`, read after `since`.
    async fn answered(&self, input: u64, since: Instant, wait_max: Duration) -> anyhow::Result<Instant> {
        let deadline = since + wait_max;
        loop {
            let seen = self
                .timeline
                .lock()
                .expect("timeline")
                .seen
                .iter()
                .rev()
                .take(100_000)
                .find_map(|(cause, at)| (*cause == input && *at >= since).then_some(*at));
            if let Some(at) = seen {
                return Ok(at);
            }
            if Instant::now() > deadline {
                bail!("the input at offset {input} was not answered within {wait_max:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The launcher's config for replicas taking a snapshot every `every` inputs.
    fn config(&self, every: u64, label: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{label}.toml"));
        let (bootstrap, topic, name) = (&self.args.bootstrap, &self.topic, self.det.name());
        std::fs::write(&path, format!("[kafka]\nbootstrap_servers = {bootstrap:?}\ntopic = {topic:?}\n\n[[transformer]]\nname = {name:?}\nreplicas = 1\nsnapshot_every_inputs = {every}\n"))?;
        Ok(path)
    }

    fn spawn(&self, name: &str, config: &Path) -> anyhow::Result<Proc> {
        let args = ["run", "--config", &config.display().to_string(), "--replica-id", name, "--replicas", "1"];
        let envs = vec![("RUST_LOG".to_string(), std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()))];
        Proc::spawn(name, self.launcher, args.map(String::from).to_vec(), envs, self.dir.join(format!("{name}.log")))
    }
}
