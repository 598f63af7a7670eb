//! `bench pipelines`: aggregate throughput (flat out) and latency (at a fixed total rate) of
//! a log of 1, 2, 4… pipelines, one identity replica per pipeline, all in this process.
//!
//! Each pipeline has its own load generator, replica and observer, as a sharded producer,
//! a host per pipeline and a sink per pipeline would; their timelines are merged (ids
//! offset per pipeline) so throughput is the sum and latency percentiles cover every event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::shard::Pipelines;
use competing_transformers_kafka::{admin, run_replica, KafkaLog, KafkaLogConfig, ReplicaStatus, ShutdownTrigger};
use serde::Serialize;
use tokio::sync::watch;

use crate::framework::{self, Det};
use crate::load::{self, Load};
use crate::measure::{self, Summary, Timeline};

/// Ids of pipeline `p`'s events are offset by `p` times this, so merged timelines never mix.
const ID_SPACE: u64 = 1 << 40;

/// `bench pipelines`.
#[derive(clap::Args)]
pub struct PipelinesArgs {
    /// Bootstrap servers of the cluster (RF 3, min ISR 2 on 3 brokers: `topics create`'s layout).
    #[arg(long, env = "KAFKA_CLUSTER_BOOTSTRAP")]
    bootstrap: String,
    /// Pipeline counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pipelines: Vec<u32>,
    /// Seconds of each flat-out and each fixed-rate run.
    #[arg(long, default_value_t = 20.0)]
    secs: f64,
    /// Total events a second of the fixed-rate run, spread evenly over the pipelines.
    #[arg(long, default_value_t = 2_000)]
    rate_per_s: u32,
    /// Where `pipelines.json` goes.
    #[arg(long, default_value = "benches/results")]
    out: std::path::PathBuf,
}

/// One pipeline count's figures.
#[derive(Serialize)]
struct Row {
    pipelines: u32,
    flat: Summary,
    rate: Summary,
    /// Each pipeline's own flat-out throughput, events/s.
    flat_per_pipeline_eps: Vec<f64>,
}

pub async fn run(args: PipelinesArgs) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &count in &args.pipelines {
        let pipelines = Pipelines::new(count).context("a pipeline count from 1 to 1024")?;
        let flat = Load::Flat { secs: args.secs, unanswered_max: 20_000 };
        let (flat, flat_per_pipeline_eps) = scenario(&args.bootstrap, pipelines, |_| flat).await?;
        let per_pipeline = (args.rate_per_s / count).max(1);
        let (rate, _) =
            scenario(&args.bootstrap, pipelines, |_| Load::Rate { per_s: per_pipeline, secs: args.secs }).await?;
        println!(
            "{count} pipeline(s): flat out {:.0} events/s (per pipeline {:?}); at {} events/s p50 {:.1} ms, p99 {:.1} ms",
            flat.throughput_eps,
            flat_per_pipeline_eps.iter().map(|e| e.round()).collect::<Vec<_>>(),
            per_pipeline * count,
            rate.latency.p50_ms,
            rate.latency.p99_ms
        );
        rows.push(Row { pipelines: count, flat, rate, flat_per_pipeline_eps });
    }
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("pipelines.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(
            &serde_json::json!({ "bootstrap": args.bootstrap, "secs": args.secs, "rate_per_s": args.rate_per_s, "rows": rows }),
        )?,
    )?;
    println!("wrote {}", path.display());
    Ok(())
}

/// One run over a fresh log of `pipelines`: the merged summary and each pipeline's throughput.
async fn scenario(
    bootstrap: &str,
    pipelines: Pipelines,
    load: impl Fn(u32) -> Load,
) -> anyhow::Result<(Summary, Vec<f64>)> {
    let topic = format!("bench-pipelines-{}-{}", pipelines.count(), std::process::id() as u128 * 1_000_000 + unique());
    let mut config = KafkaLogConfig::new(bootstrap, topic);
    config.pipelines = pipelines;
    admin::create_topic(&config).await.context("creating the log on the cluster")?;
    let shutdown = ShutdownTrigger::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut replicas = Vec::new();
    let mut observers = Vec::new();
    let mut generators = Vec::new();
    let timelines: Vec<_> = pipelines.all().map(|_| Arc::new(Mutex::new(Timeline::default()))).collect();
    for pipeline in pipelines.all() {
        let config = config.pipeline(pipeline);
        let replica_log = Arc::new(KafkaLog::connect(config.clone()).await?);
        let (status, _) = watch::channel(ReplicaStatus::default());
        let replica_config = ReplicaConfig::new(format!("bench-p{pipeline}"));
        replicas.push(tokio::spawn(run_replica(
            replica_log,
            bench_harness::Identity,
            replica_config,
            shutdown.subscribe(),
            status,
        )));
        let observer_log = Arc::new(KafkaLog::connect(config.clone()).await?);
        let timeline = timelines[pipeline as usize].clone();
        observers.push(tokio::spawn(framework::observe(observer_log, Det::Identity, timeline, stop.clone())));
    }
    let started = Instant::now();
    for pipeline in pipelines.all() {
        let log = Arc::new(KafkaLog::connect(config.pipeline(pipeline)).await?);
        let send = framework::sender(log, Det::Identity);
        generators.push(tokio::spawn(load::generate(load(pipeline), send, timelines[pipeline as usize].clone())));
    }
    for generator in generators {
        generator.await??;
    }
    // Let the last answers arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for observer in observers {
        observer.await??;
    }
    shutdown.request();
    for replica in replicas {
        replica.await??;
    }
    let warmup = started + Duration::from_secs(2);
    let per_pipeline: Vec<f64> = timelines
        .iter()
        .map(|t| measure::analyze(&t.lock().expect("timeline"), started, warmup).throughput_eps)
        .collect();
    let mut merged = Timeline::default();
    for (pipeline, timeline) in timelines.iter().enumerate() {
        let timeline = timeline.lock().expect("timeline");
        let offset = pipeline as u64 * ID_SPACE;
        merged.sent.extend(timeline.sent.iter().map(|(id, at)| (id + offset, *at)));
        merged.seen.extend(timeline.seen.iter().map(|(id, at)| (id + offset, *at)));
    }
    merged.seen.sort_by_key(|(_, at)| *at);
    Ok((measure::analyze(&merged, started, warmup), per_pipeline))
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros() % 1_000_000
}
