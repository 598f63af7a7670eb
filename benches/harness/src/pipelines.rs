//! `bench pipelines`: aggregate throughput (flat out) and latency (at a fixed rate per
//! pipeline) of a log of 1, 2 and 4 pipelines on the 3-broker cluster, one identity replica
//! per pipeline.
//!
//! Everything runs in this one process: per pipeline a replica (the framework's tokio
//! driver, `run_replica`), a load generator and an observer, each with clients of its own.
//! Each pipeline is measured as the main scenarios measure one log (`load`, `framework`,
//! `measure`); the pipelines' timelines are then merged (an event's id is its offset and its
//! pipeline) into one summary: outputs a second over all pipelines, and one latency
//! distribution over all events.
//!
//! Reproduce (cluster from `scripts/kafka.sh cluster-start`):
//! `cargo build --release -p bench-harness && KAFKA_CLUSTER_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 target/release/bench pipelines --runs 3`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::shard::Pipelines;
use competing_transformers_kafka::{admin, run_replica, KafkaLog, KafkaLogConfig, ReplicaStatus, ShutdownTrigger};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde::Serialize;
use tokio::sync::watch;

use crate::framework::{self, Det};
use crate::load::{self, Load};
use crate::measure::{self, SharedTimeline, Summary, Timeline};

/// Events sent but not yet answered, per pipeline, flat out (as the main flat scenarios).
const UNANSWERED_MAX: usize = 2_000;
/// Left out of the figures at the start of each load: connections warm.
const WARMUP: Duration = Duration::from_secs(2);
/// How long, after the load, the last outputs may take.
const DRAIN: Duration = Duration::from_secs(20);
/// An event id is its offset times this plus its pipeline: unique across pipelines.
const PIPELINES_ID_STRIDE: u64 = 1 << 12;

/// `bench pipelines`.
#[derive(clap::Args)]
pub struct PipelinesArgs {
    /// The 3-broker cluster (`scripts/kafka.sh cluster-start`).
    #[arg(long, env = "KAFKA_CLUSTER_BOOTSTRAP")]
    bootstrap: String,
    /// The pipeline counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pipelines: Vec<u32>,
    /// How long the flat-out load runs.
    #[arg(long, default_value_t = 10.0)]
    flat_secs: f64,
    /// Events a second sent to each pipeline for the latency figures.
    #[arg(long, default_value_t = 1_000)]
    rate_per_pipeline: u32,
    /// How long the fixed-rate load runs.
    #[arg(long, default_value_t = 15.0)]
    rate_secs: f64,
    /// How many times to measure everything (the figures of a shared machine are noisy).
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Where `pipelines.json` goes.
    #[arg(long, default_value = "benches/results")]
    out: std::path::PathBuf,
}

/// One measurement: a pipeline count under one load.
#[derive(Serialize)]
struct Measured {
    run: u32,
    pipelines: u32,
    load: String,
    #[serde(flatten)]
    summary: Summary,
}

/// Runs every pipeline count under both loads `runs` times; writes `<out>/pipelines.json`.
pub async fn run(args: PipelinesArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut measured = Vec::new();
    for run in 1..=args.runs {
        for &count in &args.pipelines {
            let pipelines = Pipelines::new(count).context("a pipeline count is 1 to 1024")?;
            let flat = Load::Flat { secs: args.flat_secs, unanswered_max: UNANSWERED_MAX };
            let rate = Load::Rate { per_s: args.rate_per_pipeline, secs: args.rate_secs };
            for load in [flat, rate] {
                let summary = measure_one(&args.bootstrap, pipelines, load).await?;
                let l = &summary.latency;
                eprintln!(
                    "bench pipelines: run {run}, {count} pipeline(s), {}: {} of {} answered; {:.0} ev/s; p50 {:.2} p99 {:.2} max {:.1} ms",
                    load.label(),
                    summary.answered,
                    summary.sent,
                    summary.throughput_eps,
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms
                );
                measured.push(Measured { run, pipelines: count, load: label(load, count), summary });
            }
        }
    }
    write_report(&args, &measured, started.elapsed())
}

/// The load as the report names it: the fixed rate is per pipeline.
fn label(load: Load, pipelines: u32) -> String {
    match load {
        Load::Rate { per_s, .. } => format!("{per_s}/s per pipeline ({}/s in all)", per_s * pipelines),
        other => other.label(),
    }
}

/// One pipeline's replica, load and observer, and what they measured.
struct Lane {
    replica: tokio::task::JoinHandle<()>,
    shutdown: ShutdownTrigger,
    observer: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Arc<AtomicBool>,
    timeline: SharedTimeline,
}

async fn start_lane(config: KafkaLogConfig) -> anyhow::Result<(Lane, load::Send)> {
    let replica_log = Arc::new(KafkaLog::connect(config.clone()).await?);
    let shutdown = ShutdownTrigger::new();
    let (status, _) = watch::channel(ReplicaStatus::default());
    let id = format!("bench-p{}", config.partition);
    let replica_task =
        run_replica(replica_log, bench_harness::Identity, ReplicaConfig::new(id), shutdown.subscribe(), status);
    let replica = tokio::spawn(async move {
        if let Err(error) = replica_task.await {
            eprintln!("  a replica failed: {error}");
        }
    });
    let timeline: SharedTimeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let observer_log = Arc::new(KafkaLog::connect(config.clone()).await?);
    let observer = tokio::spawn(framework::observe(observer_log, Det::Identity, timeline.clone(), stop.clone()));
    let send = framework::sender(Arc::new(KafkaLog::connect(config).await?), Det::Identity);
    Ok((Lane { replica, shutdown, observer, stop, timeline }, send))
}

/// A fresh log of `pipelines` on the cluster, the load on each pipeline at once, then the
/// merged summary.
async fn measure_one(bootstrap: &str, pipelines: Pipelines, load: Load) -> anyhow::Result<Summary> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let mut config = KafkaLogConfig::new(bootstrap, format!("bench-pipelines-{}-{stamp}", pipelines.count()));
    config.pipelines = pipelines;
    admin::create_topic(&config).await.with_context(|| format!("creating `{}` on the cluster", config.topic))?;
    let mut lanes = Vec::new();
    let mut sends = Vec::new();
    for pipeline in config.each_pipeline() {
        let (lane, send) = start_lane(pipeline).await?;
        lanes.push(lane);
        sends.push(send);
    }
    // Let every replica reach the end of its (empty) pipeline before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load_started = Instant::now();
    let generators: Vec<_> = sends
        .into_iter()
        .zip(&lanes)
        .map(|(send, lane)| tokio::spawn(load::generate(load, send, lane.timeline.clone())))
        .collect();
    for generator in generators {
        generator.await??;
    }
    drain(&lanes).await;
    let merged = stop_and_merge(lanes).await?;
    delete_topic(&config).await;
    Ok(measure::analyze(&merged, load_started, load_started + WARMUP))
}

/// Waits until every event sent is answered, or `DRAIN`.
async fn drain(lanes: &[Lane]) {
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline {
        let behind = lanes.iter().any(|lane| {
            let timeline = lane.timeline.lock().expect("timeline");
            timeline.seen.len() < timeline.sent.len()
        });
        if !behind {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops every lane and merges their timelines, an id becoming its offset and pipeline.
async fn stop_and_merge(lanes: Vec<Lane>) -> anyhow::Result<Timeline> {
    let mut merged = Timeline::default();
    for (pipeline, lane) in lanes.into_iter().enumerate() {
        lane.stop.store(true, Ordering::Relaxed);
        lane.observer.await??;
        lane.shutdown.request();
        lane.replica.await?;
        let timeline = std::mem::take(&mut *lane.timeline.lock().expect("timeline"));
        let id = |offset: u64| offset * PIPELINES_ID_STRIDE + pipeline as u64;
        merged.sent.extend(timeline.sent.into_iter().map(|(offset, at)| (id(offset), at)));
        merged.seen.extend(timeline.seen.into_iter().map(|(offset, at)| (id(offset), at)));
    }
    // The gap figures want outputs in reading order.
    merged.seen.sort_by_key(|(_, at)| *at);
    Ok(merged)
}

/// Deletes a measured log: the cluster's disks are not the benchmark's to fill.
async fn delete_topic(config: &KafkaLogConfig) {
    let admin: Result<AdminClient<DefaultClientContext>, _> =
        ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create();
    let deleted = match admin {
        Ok(admin) => admin.delete_topics(&[&config.topic], &AdminOptions::new()).await.map(|_| ()),
        Err(error) => Err(error),
    };
    if let Err(error) = deleted {
        eprintln!("  could not delete `{}`: {error}", config.topic);
    }
}

/// Every measurement, and per pipeline count and load the median and spread of the
/// throughput and of the p99 over the runs.
fn write_report(args: &PipelinesArgs, measured: &[Measured], took: Duration) -> anyhow::Result<()> {
    let mut summary = Vec::new();
    for &count in &args.pipelines {
        for flat in [true, false] {
            let of: Vec<&Measured> =
                measured.iter().filter(|m| m.pipelines == count && m.load.starts_with("flat") == flat).collect();
            let Some(first) = of.first() else { continue };
            let spread = |value: fn(&Measured) -> f64| {
                let mut values: Vec<f64> = of.iter().map(|m| value(m)).collect();
                values.sort_by(f64::total_cmp);
                serde_json::json!({"median": values[values.len() / 2], "min": values[0], "max": values[values.len() - 1]})
            };
            summary.push(serde_json::json!({
                "pipelines": count,
                "load": first.load,
                "runs": of.len(),
                "throughput_eps": spread(|m| m.summary.throughput_eps),
                "p50_ms": spread(|m| m.summary.latency.p50_ms),
                "p99_ms": spread(|m| m.summary.latency.p99_ms),
            }));
        }
    }
    let report = serde_json::json!({
        "benchmark": "pipelines (issue 16)",
        "command": "cargo build --release -p bench-harness && KAFKA_CLUSTER_BOOTSTRAP=127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094 target/release/bench pipelines --runs 3",
        "setup": "the 3-broker cluster of scripts/kafka.sh (replication factor 3, min.insync.replicas 2); per pipeline one identity replica, one load generator and one observer, all in this one process; 100-byte events",
        "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(0),
        "flat_secs": args.flat_secs,
        "unanswered_max_per_pipeline": UNANSWERED_MAX,
        "rate_per_pipeline": args.rate_per_pipeline,
        "rate_secs": args.rate_secs,
        "warmup_secs": WARMUP.as_secs_f64(),
        "took_secs": took.as_secs_f64(),
        "summary": summary,
        "measured": measured,
    });
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("pipelines.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("bench pipelines: wrote {} in {:.0} s", path.display(), took.as_secs_f64());
    Ok(())
}
