//! `bench`: latency and throughput of racing replicas, against the raw Kafka limit and
//! Kafka Streams, on one broker, in one run.
//!
//! - `bench run [--quick]`: every scenario, one fresh topic each; writes
//!   `<out>/latest.json` and `<out>/latest.md` (`benches/run.sh` is the one command).
//! - `bench replica …`: one replica in this process (the transactional write mode, which
//!   the launcher's config cannot select).
//! - `bench restart`: restart to first output against log length, with and without
//!   snapshots (`bench run` has it too, as `restart-identity`).
//! - `bench pipelines`: aggregate throughput and latency of 1, 2, 4… pipelines on a cluster.
//! - `bench micro`: the per-event cost of each step of the hot path, without Kafka.
//! - `bench conformance`: Kafka Streams' matching engine against the Rust one on inputs that
//!   reach every rule.
//!
//! Layout: [`load`] (the generator), [`framework`] (sender, observer and replica of the
//! framework), [`raw`] (plain rdkafka: the limit, plain observers, write amplification),
//! [`procs`] (child processes and faults), [`cluster`] (the replicated cluster: its
//! partition leaders, killed under load), [`measure`] (histograms), [`conformance`] (Kafka
//! Streams' matching engine against the Rust one), [`micro`], [`restart`].

// The harness is a driver: it reads clocks to measure latency (the workspace's clippy.toml
// forbids that in the framework's pure core, not here). `%` stays readable on rust 1.85.
#![allow(clippy::disallowed_methods, clippy::manual_is_multiple_of)]

mod cluster;
mod conformance;
mod framework;
mod load;
mod measure;
mod micro;
mod pipelines;
mod procs;
mod raw;
mod restart;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use competing_transformers::signature::{Signer, Trust};
use competing_transformers_kafka::{admin, KafkaLog, KafkaLogConfig};
use serde::Serialize;

use framework::Det;
use load::Load;
use measure::{SharedTimeline, Summary, Timeline};
use procs::{Fault, Proc};

#[derive(Parser)]
#[command(about = "Benchmarks of racing replicas against the raw Kafka limit and Kafka Streams")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios and write the results.
    Run(RunArgs),
    /// One replica of a DET in this process until SIGTERM.
    Replica {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        replica_id: String,
        /// identity or matching-engine
        #[arg(long, default_value = "identity")]
        det: String,
        /// Write one event per record in Kafka transactions instead of record groups.
        #[arg(long)]
        transactional: bool,
    },
    /// Time from all replicas' restart to their first output, against the log's length,
    /// with and without snapshots; writes `<out>/restart.json`.
    Restart(restart::RestartArgs),
    /// Aggregate throughput and latency of 1, 2 and 4 pipelines on the 3-broker cluster;
    /// writes `<out>/pipelines.json`.
    Pipelines(pipelines::PipelinesArgs),
    /// Time each step of the hot path per event, without Kafka.
    Micro,
    /// Copy every record of one topic to another with plain clients until SIGTERM (the
    /// two-hop limit the framework's replica is compared with).
    Relay {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Check that the Kafka Streams matching engine writes what the Rust engine writes, on
    /// inputs that reach every rule (cancels, rejections, the fill limit, dead letters).
    Conformance {
        #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// The Kafka Streams peer's jar.
        #[arg(long, default_value = "benches/kafka-streams/target/bench-kafka-streams.jar")]
        streams_jar: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// A smoke run: tiny load, a few scenarios, under a minute; numbers mean nothing.
    #[arg(long)]
    quick: bool,
    /// Include Kafka Streams (needs the jar from benches/kafka-streams; on by default
    /// unless --quick).
    #[arg(long)]
    streams: Option<bool>,
    /// Only scenarios whose name contains this, or one of these (comma-separated).
    #[arg(long)]
    only: Option<String>,
    /// With --only: names that are these exactly, not names that contain them.
    #[arg(long)]
    exact: bool,
    /// Where latest.json and latest.md go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// The Kafka Streams peer's jar.
    #[arg(long, default_value = "benches/kafka-streams/target/bench-kafka-streams.jar")]
    streams_jar: PathBuf,
    /// Profile the replica of `identity-1-flat` with `perf record` into <out>/profile.txt.
    #[arg(long)]
    profile: bool,
    /// Events in the backlog scenarios (default 1,000,000; 2,000 with --quick): the
    /// bounded-memory figure drains 10,000,000.
    #[arg(long)]
    backlog_events: Option<u64>,
    /// A 3-broker cluster's bootstrap (`scripts/kafka.sh cluster-start`): the main scenarios
    /// run there too, as `<name>@cluster` beside the single broker's (topics replication
    /// factor 3, `min.insync.replicas=2`, acks=all), with a partition leader killed under load.
    #[arg(long)]
    cluster: Option<String>,
    /// That cluster's `KAFKA_CLUSTER_DIR` (its nodes' pid files and configs): the leader-kill
    /// scenarios kill and restart its nodes.
    #[arg(long, env = "KAFKA_CLUSTER_DIR")]
    cluster_dir: Option<PathBuf>,
    /// Log lengths of the `restart-identity` scenario, in inputs (default 100,000 and
    /// 1,000,000; 2,000 with --quick).
    #[arg(long, value_delimiter = ',')]
    restart_events: Option<Vec<u64>>,
    /// Inputs between snapshots in `restart-identity` (default the launcher's 100,000; 1,000
    /// with --quick).
    #[arg(long)]
    restart_snapshot_every: Option<u64>,
}

/// What runs the transform.
#[derive(Clone, Copy, Debug, Serialize)]
enum System {
    /// Produce → consume on one partition, idempotent producer, no transactions.
    RawIdempotent,
    /// Produce → consume on one partition, every batch in a transaction.
    RawTransactional,
    /// Produce → relay process (consume → produce, plain clients, one record per event) →
    /// consume: the two hops of a replica without the framework.
    RawRelay,
    /// Racing replicas of the framework, each its own process, racing as `racing` says;
    /// `signed`: the DET's keys are protected, its replicas sign every record and the
    /// observer verifies them.
    Framework { det: Det, replicas: usize, transactional: bool, racing: Racing, signed: bool },
    /// Kafka Streams (exactly_once_v2) running `det`, `instances` processes in one group, one
    /// standby.
    KafkaStreams { instances: usize, det: Det },
}

/// How the framework's replicas race (the launcher's `racing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
enum Racing {
    /// The default: the replica that won lately writes at once, the others hold back.
    Adaptive,
    /// Every replica writes every group at once.
    All,
    /// Replica k writes after k × `delay_ms` unless beaten (`stagger_ms`, `--stagger-rank`).
    Staggered { delay_ms: u64 },
}

impl Racing {
    fn label(self) -> String {
        match self {
            Racing::Adaptive => String::new(),
            Racing::All => ", all at once".into(),
            Racing::Staggered { delay_ms } => format!(", staggered {delay_ms} ms"),
        }
    }

    /// Its lines in the launcher's `[[transformer]]` entry.
    fn config_lines(self) -> String {
        match self {
            Racing::Adaptive => String::new(),
            Racing::All => "racing = \"all\"\n".into(),
            Racing::Staggered { delay_ms } => format!("stagger_ms = {delay_ms}\n"),
        }
    }
}

impl System {
    fn label(&self) -> String {
        match *self {
            System::RawIdempotent => "raw rdkafka, idempotent".into(),
            System::RawTransactional => "raw rdkafka, transactions".into(),
            System::RawRelay => "raw rdkafka relay process, idempotent".into(),
            System::Framework { det, replicas, transactional, racing, signed } => format!(
                "{} × {replicas} replica{}{}{}{}",
                det.name(),
                if replicas == 1 { "" } else { "s" },
                if transactional { ", transactional mode" } else { "" },
                if transactional { String::new() } else { racing.label() },
                if signed { ", signed records on protected keys" } else { "" }
            ),
            System::KafkaStreams { instances, det } => {
                format!("Kafka Streams {}, EOS v2, {instances} instances", det.name())
            }
        }
    }
}

#[derive(Clone)]
struct Scenario {
    name: String,
    system: System,
    load: Load,
    fault: Fault,
    /// On the `--cluster`, not the single broker.
    cluster: bool,
}

#[derive(Serialize)]
struct ScenarioResult {
    name: String,
    system: String,
    load: String,
    fault: String,
    #[serde(flatten)]
    summary: Summary,
    amplification: Option<raw::Amplification>,
    /// The largest peak resident memory of the scenario's transforming processes.
    peak_rss_mb: Option<f64>,
    notes: Vec<String>,
    error: Option<String>,
}

/// Racing replicas of the framework, all writing at once, unsigned.
fn fw(det: Det, replicas: usize, transactional: bool) -> System {
    System::Framework { det, replicas, transactional, racing: Racing::Adaptive, signed: false }
}

fn scenarios(quick: bool, streams: bool, backlog_events: Option<u64>) -> Vec<Scenario> {
    let (secs, rate, flat_secs) = if quick { (3.0, 200, 2.0) } else { (15.0, 1_000, 10.0) };
    let at_rate = Load::Rate { per_s: rate, secs };
    // 2,000 unanswered events: enough to keep the pipe full, small enough that a replica's
    // backlog never batches past the broker's 1 MiB record limit (see BENCHMARKS.md).
    let flat = Load::Flat { secs: flat_secs, unanswered_max: 2_000 };
    let backlog = Load::Backlog { events: backlog_events.unwrap_or(if quick { 2_000 } else { 1_000_000 }) };
    let stall = Fault::Stall { stall_ms: 300, every_ms: 2_000 };
    let kill = Fault::Kill { at_fraction: 0.4, restart_after_ms: Some(1_000) };
    let signed = System::Framework {
        det: Det::Identity,
        replicas: 1,
        transactional: false,
        racing: Racing::Adaptive,
        signed: true,
    };
    let s = |name: &str, system, load, fault| Scenario { name: name.into(), system, load, fault, cluster: false };
    let mut all = vec![
        s("raw-idempotent", System::RawIdempotent, at_rate, Fault::None),
        s("raw-transactional", System::RawTransactional, at_rate, Fault::None),
        s("raw-transactional-naive", System::RawTransactional, at_rate, Fault::None),
        s("identity-1", fw(Det::Identity, 1, false), at_rate, Fault::None),
        s("identity-1-signed", signed, at_rate, Fault::None),
    ];
    if !quick {
        all.extend([
            s("raw-idempotent-flat", System::RawIdempotent, flat, Fault::None),
            s("raw-transactional-flat", System::RawTransactional, flat, Fault::None),
            s("identity-1-flat", fw(Det::Identity, 1, false), flat, Fault::None),
            s("identity-1-flat-signed", signed, flat, Fault::None),
            s("raw-relay-flat", System::RawRelay, flat, Fault::None),
            s("identity-3-flat", fw(Det::Identity, 3, false), flat, Fault::None),
            s("identity-2", fw(Det::Identity, 2, false), at_rate, Fault::None),
            s("identity-3", fw(Det::Identity, 3, false), at_rate, Fault::None),
            s("matching-3", fw(Det::MatchingEngine, 3, false), at_rate, Fault::None),
        ]);
    }
    all.extend([
        s("identity-1-backlog", fw(Det::Identity, 1, false), backlog, Fault::None),
        s("raw-relay-backlog", System::RawRelay, backlog, Fault::None),
        s("identity-3-stall", fw(Det::Identity, 3, false), at_rate, stall),
        s("identity-3-kill", fw(Det::Identity, 3, false), at_rate, kill),
        s("identity-3-txn-stall", fw(Det::Identity, 3, true), at_rate, stall),
    ]);
    if !quick {
        all.extend(racing_scenarios(at_rate, stall, kill));
    }
    if !quick {
        all.extend([
            s("identity-3-txn", fw(Det::Identity, 3, true), at_rate, Fault::None),
            s("identity-3-txn-kill", fw(Det::Identity, 3, true), at_rate, kill),
            // The peers of streams-matching-stall and streams-matching-kill.
            s("matching-3-stall", fw(Det::MatchingEngine, 3, false), at_rate, stall),
            s("matching-3-kill", fw(Det::MatchingEngine, 3, false), at_rate, kill),
        ]);
    }
    if streams {
        let streams_kill = Fault::Kill { at_fraction: 0.3, restart_after_ms: None };
        for (name, det) in [("identity", Det::Identity), ("matching", Det::MatchingEngine)] {
            let ks = System::KafkaStreams { instances: 2, det };
            all.extend([
                s(&format!("streams-{name}"), ks, at_rate, Fault::None),
                s(&format!("streams-{name}-stall"), ks, at_rate, stall),
                s(&format!("streams-{name}-kill"), ks, at_rate, streams_kill),
            ]);
        }
    }
    all
}

/// The racing modes beside the default (adaptive) under the same faults, and the degree of
/// competition: 1 to 5 replicas, adaptive and all at once.
fn racing_scenarios(at_rate: Load, stall: Fault, kill: Fault) -> Vec<Scenario> {
    let racing = |replicas, racing| System::Framework {
        det: Det::Identity,
        replicas,
        transactional: false,
        racing,
        signed: false,
    };
    let s = |name: String, system, fault| Scenario { name, system, load: at_rate, fault, cluster: false };
    let mut all = Vec::new();
    for (mode, racing_mode) in [("stagger", Racing::Staggered { delay_ms: 5 }), ("all", Racing::All)] {
        all.extend([
            s(format!("identity-3-{mode}"), racing(3, racing_mode), Fault::None),
            s(format!("identity-3-{mode}-stall"), racing(3, racing_mode), stall),
            s(format!("identity-3-{mode}-kill"), racing(3, racing_mode), kill),
        ]);
    }
    // The matching engine all at once, beside matching-3 (adaptive): what racing changes
    // for a DET with several outputs per input.
    let matching_all = System::Framework {
        det: Det::MatchingEngine,
        replicas: 3,
        transactional: false,
        racing: Racing::All,
        signed: false,
    };
    all.extend([
        s("matching-3-all".into(), matching_all, Fault::None),
        s("matching-3-all-stall".into(), matching_all, stall),
        s("matching-3-all-kill".into(), matching_all, kill),
    ]);
    for replicas in [4, 5] {
        all.push(s(format!("identity-{replicas}"), racing(replicas, Racing::Adaptive), Fault::None));
    }
    for replicas in [1, 2, 4, 5] {
        all.push(s(format!("identity-{replicas}-all"), racing(replicas, Racing::All), Fault::None));
    }
    all
}

/// The scenarios repeated on the cluster by `--cluster`, each as `<name>@cluster`.
const CLUSTER_TWINS: &[&str] = &[
    "raw-idempotent",
    "identity-1",
    "raw-idempotent-flat",
    "identity-1-flat",
    "raw-relay-flat",
    "identity-3",
    "identity-3-stall",
    "identity-3-kill",
    "streams-identity",
    "streams-identity-stall",
    "streams-identity-kill",
];

/// The suffix of a scenario's name on the cluster.
const ON_CLUSTER: &str = "@cluster";

/// `all` with each of [`CLUSTER_TWINS`] followed by its twin on the cluster, and the
/// leader-kill scenarios after the replica kills they stand beside: raw Kafka's, 3 replicas',
/// Kafka Streams'.
fn with_cluster_twins(all: Vec<Scenario>) -> Vec<Scenario> {
    let leader_kill = Fault::KillLeader { at_fraction: 0.4 };
    let mut out = Vec::new();
    for scenario in all {
        let on_cluster = |name: &str, system, fault| Scenario {
            name: format!("{name}{ON_CLUSTER}"),
            system,
            fault,
            cluster: true,
            ..scenario.clone()
        };
        let mut after = Vec::new();
        if CLUSTER_TWINS.contains(&scenario.name.as_str()) {
            after.push(on_cluster(&scenario.name, scenario.system, scenario.fault));
        }
        match scenario.name.as_str() {
            "identity-3-kill" => after.extend([
                on_cluster("raw-idempotent-leader-kill", System::RawIdempotent, leader_kill),
                on_cluster("identity-3-leader-kill", scenario.system, leader_kill),
            ]),
            "streams-identity-kill" => {
                after.push(on_cluster("streams-identity-leader-kill", scenario.system, leader_kill))
            }
            _ => {}
        }
        out.push(scenario);
        out.extend(after);
    }
    out
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Run(args) => {
            if std::env::var_os("BENCH_TXN_DEBUG").is_some() {
                tracing_subscriber::fmt().with_env_filter("debug").with_writer(std::io::stderr).with_ansi(false).init();
            }
            runtime.block_on(run(args))
        }
        Command::Replica { bootstrap, topic, replica_id, det, transactional } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            let det = match det.as_str() {
                "identity" => Det::Identity,
                "matching-engine" => Det::MatchingEngine,
                other => bail!("unknown DET `{other}`: identity or matching-engine"),
            };
            runtime.block_on(framework::run_one_replica(bootstrap, topic, replica_id, det, transactional))
        }
        Command::Restart(args) => runtime.block_on(restart::run(args)),
        Command::Pipelines(args) => runtime.block_on(pipelines::run(args)),
        Command::Micro => {
            println!("{}", serde_json::to_string_pretty(&micro::run(200_000))?);
            Ok(())
        }
        Command::Relay { bootstrap, from, to } => runtime.block_on(raw::relay(bootstrap, from, to)),
        Command::Conformance { bootstrap, streams_jar } => {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
            let work = std::env::temp_dir().join(format!("competing-transformers-conformance-{stamp}"));
            let verdict = runtime.block_on(conformance::check_edges(&bootstrap, &streams_jar, &work))?;
            println!(
                "{} ({} inputs; Kafka Streams log in {})",
                verdict.note,
                conformance::edge_orders().len(),
                work.display()
            );
            if !verdict.equal {
                bail!("the Kafka Streams matching engine differs from the Rust one");
            }
            Ok(())
        }
    }
}

/// The command line of one Kafka Streams instance of the peer (`benches/kafka-streams`).
fn streams_args(
    jar: &Path,
    det: Det,
    bootstrap: &str,
    application_id: &str,
    input: &str,
    output: &str,
    state: &Path,
) -> Vec<String> {
    let args = [
        "-Xmx512m",
        "-jar",
        &jar.display().to_string(),
        "--det",
        det.name(),
        bootstrap,
        application_id,
        input,
        output,
        &state.display().to_string(),
    ];
    args.map(String::from).to_vec()
}

/// Everything one run shares.
struct Context_ {
    args: RunArgs,
    /// Replica and Kafka Streams logs, topic configs: a temporary directory.
    work: PathBuf,
    /// The `--cluster`, checked against its directory.
    cluster: Option<cluster::Cluster>,
    bench_exe: PathBuf,
    launcher_exe: PathBuf,
    stamp: u128,
    warmup: Duration,
    drain: Duration,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let streams = args.streams.unwrap_or(!args.quick);
    let cx = prepare(&args, streams)?;
    eprintln!("bench: logs of replicas and Kafka Streams in {}", cx.work.display());

    let micro = micro::run(if args.quick { 20_000 } else { 200_000 });
    let selected = |scenario: &str| {
        let named = |only: &str| {
            only.split(',').any(|name| if args.exact { scenario == name } else { scenario.contains(name) })
        };
        args.only.as_deref().is_none_or(named)
    };
    let mut all = scenarios(args.quick, streams, args.backlog_events);
    if cx.cluster.is_some() {
        all = with_cluster_twins(all);
    }
    let mut results = Vec::new();
    for scenario in all.iter().filter(|scenario| selected(&scenario.name)) {
        let result = run_or_fail(&cx, scenario).await;
        print_result(&result);
        results.push(result);
    }
    let mut restarts = Vec::new();
    for on_cluster in [false, true] {
        let name = format!("restart-identity{}", if on_cluster { ON_CLUSTER } else { "" });
        if selected(&name) && (!on_cluster || cx.cluster.is_some()) {
            restarts.extend(restart_identity(&cx, on_cluster).await?);
        }
    }
    write_report(&args, started, &micro, &results, &restarts)?;
    if results.iter().any(|r| r.error.is_some()) || restarts.iter().any(|r| r.error.is_some()) {
        bail!("some scenarios failed; see above");
    }
    Ok(())
}

/// The `restart-identity` scenario: every replica of the identity DET restarts at once on a
/// log of each length, with and without snapshots (see `restart.rs`).
async fn restart_identity(cx: &Context_, on_cluster: bool) -> anyhow::Result<Vec<restart::Restart>> {
    let args = &cx.args;
    let bootstrap = match (&cx.cluster, on_cluster) {
        (Some(cluster), true) => cluster.bootstrap.clone(),
        _ => args.bootstrap.clone(),
    };
    let restart_args = restart::RestartArgs {
        bootstrap,
        events: args.restart_events.clone().unwrap_or(if args.quick { vec![2_000] } else { vec![100_000, 1_000_000] }),
        dets: vec![Det::Identity.name().into()],
        replicas: 3,
        snapshot_every_inputs: args.restart_snapshot_every.unwrap_or(if args.quick { 1_000 } else { 100_000 }),
        out: args.out.clone(),
        suffix: if on_cluster { ON_CLUSTER.into() } else { String::new() },
    };
    eprintln!(
        "bench: restart-identity{} — 3 replicas restarted at once, logs of {:?} inputs",
        restart_args.suffix, restart_args.events
    );
    let restarts = restart::measure(&restart_args, &cx.work.join("restart"), cx.stamp).await?;
    Ok(restarts)
}

/// Checks that the executables (and the Kafka Streams jar, when needed) are built, and makes
/// the run's directories.
fn prepare(args: &RunArgs, streams: bool) -> anyhow::Result<Context_> {
    if streams && !args.streams_jar.exists() {
        bail!("{} is missing; build it with `mvn -q -f benches/kafka-streams/pom.xml package` (benches/run.sh does), or pass --streams false", args.streams_jar.display());
    }
    let bench_exe = std::env::current_exe()?;
    let launcher_exe = bench_exe.with_file_name("bench-launcher");
    if !launcher_exe.exists() {
        bail!("{} is missing; build it with `cargo build --release -p bench-harness`", launcher_exe.display());
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let work = std::env::temp_dir().join(format!("competing-transformers-bench-{stamp}"));
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&args.out)?;
    let (warmup, drain) = if args.quick {
        (Duration::from_millis(500), Duration::from_secs(10))
    } else {
        (Duration::from_secs(2), Duration::from_secs(30))
    };
    let cluster = match (&args.cluster, &args.cluster_dir) {
        (None, _) => None,
        (Some(_), None) => bail!("--cluster needs the cluster's directory: --cluster-dir or KAFKA_CLUSTER_DIR"),
        (Some(bootstrap), Some(dir)) => Some(cluster::Cluster::new(bootstrap, dir)?),
    };
    Ok(Context_ { args: args.clone(), work, cluster, bench_exe, launcher_exe, stamp, warmup, drain })
}

/// Runs one scenario; a failure becomes a result that carries the error.
async fn run_or_fail(cx: &Context_, scenario: &Scenario) -> ScenarioResult {
    eprintln!(
        "bench: {} — {}, {}, fault: {}",
        scenario.name,
        scenario.system.label(),
        scenario.load.label(),
        scenario.fault.label()
    );
    match run_scenario(cx, scenario).await {
        Ok(result) => result,
        Err(error) => {
            eprintln!("  FAILED: {error:#}");
            if let (Some(cluster), true) = (&cx.cluster, scenario.cluster) {
                // A leader killed by a scenario that failed before its restart.
                if let Err(error) = cluster.make_whole().await {
                    eprintln!("  the cluster is not whole: {error:#}");
                }
            }
            ScenarioResult {
                name: scenario.name.clone(),
                system: scenario.system.label(),
                load: scenario.load.label(),
                fault: scenario.fault.label(),
                summary: Summary::default(),
                amplification: None,
                peak_rss_mb: None,
                notes: vec![],
                error: Some(format!("{error:#}")),
            }
        }
    }
}

/// One line of figures per scenario, on stderr.
fn print_result(result: &ScenarioResult) {
    let l = &result.summary.latency;
    eprintln!(
        "  {} of {} answered; {:.0} ev/s; p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.1} ms; largest gap {:.1} ms at {:.1} s{}{}",
        result.summary.answered,
        result.summary.sent,
        result.summary.throughput_eps,
        l.p50_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        result.summary.gap_max_ms,
        result.summary.gap_max_at_s,
        result
            .amplification
            .as_ref()
            .map(|a| format!("; amplification {:.2} by bytes, {:.2} by count", a.by_bytes, a.by_count))
            .unwrap_or_default(),
        result.peak_rss_mb.map(|mb| format!("; peak RSS {mb:.0} MB")).unwrap_or_default()
    );
}

/// Writes `<out>/latest.json` and `<out>/latest.md` (`quick.*` for a smoke run) and prints the
/// table.
fn write_report(
    args: &RunArgs,
    started: Instant,
    micro: &BTreeMap<&'static str, f64>,
    results: &[ScenarioResult],
    restarts: &[restart::Restart],
) -> anyhow::Result<()> {
    let targets = targets(results);
    let report = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "quick": args.quick,
        "bootstrap": args.bootstrap,
        "cluster": args.cluster,
        "machine": machine(),
        "duration_s": started.elapsed().as_secs_f64(),
        "micro_ns_per_event": micro,
        "targets": targets,
        "scenarios": results,
        "restarts": restarts,
    });
    let json_path = args.out.join(if args.quick { "quick.json" } else { "latest.json" });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let table = markdown(results, &report) + &restart_markdown(restarts);
    std::fs::write(args.out.join(if args.quick { "quick.md" } else { "latest.md" }), &table)?;
    println!("{table}");
    eprintln!("bench: wrote {} in {:.0} s", json_path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// One scenario's run: its topic, its directory, and what its tasks share.
struct ScenarioRun<'a> {
    cx: &'a Context_,
    scenario: &'a Scenario,
    bootstrap: String,
    topic: String,
    /// Logs and configs of its processes.
    dir: PathBuf,
    timeline: SharedTimeline,
    /// Tells the observer and the fault to end.
    stop: Arc<AtomicBool>,
}

/// What transforms, once started: its processes (the first is the fault's victim), the load
/// generator's sender (`None`: the raw transactional generator sends), and the observer.
struct Started {
    procs: Vec<Proc>,
    send: Option<load::Send>,
    observer: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// What a restarted process prints once it is ready.
    ready_line: &'static str,
}

/// The fault's task: gives the processes back, with what happened to them.
type FaultTask = tokio::task::JoinHandle<(Vec<Proc>, anyhow::Result<Vec<String>>)>;

async fn run_scenario(cx: &Context_, scenario: &Scenario) -> anyhow::Result<ScenarioResult> {
    let run = ScenarioRun::new(cx, scenario)?;
    let mut notes = Vec::new();
    let Started { mut procs, send, observer, ready_line } = run.start(&mut notes).await?;
    if scenario.cluster {
        notes.push(run.layout_note().await);
    }
    // Let the observer connect before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backlog = matches!(scenario.load, Load::Backlog { .. });
    if backlog {
        signal_all(&mut procs, libc::SIGSTOP);
    }

    let load_started = Instant::now();
    let fault_task = run.start_fault(&mut procs, ready_line);
    let sent = run.generate(send, &mut notes).await?;
    let load_ended = Instant::now();
    if backlog {
        signal_all(&mut procs, libc::SIGCONT);
        notes.push(format!("{sent} events waiting when the transforming processes were let go"));
    }
    run.drain(sent, &mut notes).await;
    run.stop.store(true, Ordering::Relaxed);
    if let Some(task) = fault_task {
        let (all, fault_notes) = task.await?;
        notes.extend(fault_notes.context("the fault")?);
        procs = all;
    }
    observer.await?.context("the observer")?;
    let amplification = run.amplification().await?;
    let mut error = run.check_streams_matching(&mut notes).await?;
    let peak_rss_mb = procs.iter().filter_map(|proc| peak_rss_mb(proc.pid)).reduce(f64::max);
    for proc in procs {
        proc.stop(Duration::from_secs(15)).await;
    }
    if let Err(error) = raw::delete_topics(&run.bootstrap, &run.topic).await {
        notes.push(format!("could not delete the scenario's topics: {error:#}"));
    }
    notes.push(format!("load ran {:.1} s; {sent} events", load_ended.duration_since(load_started).as_secs_f64()));
    let summary = run.summarize(load_started, load_ended, backlog, &mut error);
    Ok(ScenarioResult {
        name: scenario.name.clone(),
        system: scenario.system.label(),
        load: scenario.load.label(),
        fault: scenario.fault.label(),
        summary,
        amplification,
        peak_rss_mb,
        notes,
        error,
    })
}

/// The most resident memory process `pid` had (`VmHWM`), in MB, while it still runs.
fn peak_rss_mb(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0 / 1e6)
}

fn signal_all(procs: &mut [Proc], signal: i32) {
    for proc in procs {
        proc.signal(signal);
    }
}

impl<'a> ScenarioRun<'a> {
    fn new(cx: &'a Context_, scenario: &'a Scenario) -> anyhow::Result<Self> {
        let dir = cx.work.join(&scenario.name);
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            cx,
            scenario,
            bootstrap: match (&cx.cluster, scenario.cluster) {
                (Some(cluster), true) => cluster.bootstrap.clone(),
                _ => cx.args.bootstrap.clone(),
            },
            // Topic names take no `@`.
            topic: format!("bench-{}-{}", scenario.name.replace('@', "-"), cx.stamp),
            dir,
            timeline: Arc::new(Mutex::new(Timeline::default())),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts what transforms, and the observer.
    async fn start(&self, notes: &mut Vec<String>) -> anyhow::Result<Started> {
        match self.scenario.system {
            System::RawRelay => self.start_relay().await,
            System::RawIdempotent | System::RawTransactional => self.start_raw().await,
            System::Framework { det, replicas, transactional, racing, signed } => {
                self.start_framework(det, replicas, transactional, racing, signed).await
            }
            System::KafkaStreams { instances, det } => self.start_kafka_streams(instances, det, notes).await,
        }
    }

    /// Creates the input and output topics of a system that reads one and writes the other.
    async fn create_in_out_topics(&self) -> anyhow::Result<(String, String)> {
        let (input, output) = (format!("{}-in", self.topic), format!("{}-out", self.topic));
        admin::create_topic(&KafkaLogConfig::new(&self.bootstrap, &input)).await?;
        admin::create_topic(&KafkaLogConfig::new(&self.bootstrap, &output)).await?;
        Ok((input, output))
    }

    /// A plain observer of `topic`.
    fn observe_plain(&self, topic: String, seq_from: raw::SeqFrom) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        tokio::spawn(raw::observe_plain(
            self.bootstrap.clone(),
            topic,
            seq_from,
            self.timeline.clone(),
            self.stop.clone(),
        ))
    }

    async fn start_relay(&self) -> anyhow::Result<Started> {
        let bootstrap = &self.bootstrap;
        let (input, output) = self.create_in_out_topics().await?;
        let args = ["relay", "--bootstrap", bootstrap, "--from", &input, "--to", &output].map(String::from).to_vec();
        let mut relay = Proc::spawn("relay", &self.cx.bench_exe, args, vec![], self.dir.join("relay.log"))?;
        relay.wait_for("relay starting").await?;
        let observer = self.observe_plain(output, raw::SeqFrom::Payload);
        Ok(Started {
            procs: vec![relay],
            send: Some(raw::plain_sender(bootstrap, &input, raw::SeqFrom::Payload, load::payload)?),
            observer,
            ready_line: "relay starting",
        })
    }

    async fn start_raw(&self) -> anyhow::Result<Started> {
        admin::create_topic(&KafkaLogConfig::new(&self.bootstrap, &self.topic)).await?;
        let observer = self.observe_plain(self.topic.clone(), raw::SeqFrom::Payload);
        let send = match self.scenario.system {
            System::RawIdempotent => {
                Some(raw::plain_sender(&self.bootstrap, &self.topic, raw::SeqFrom::Payload, load::payload)?)
            }
            _ => None,
        };
        Ok(Started { procs: Vec::new(), send, observer, ready_line: "" })
    }

    async fn start_framework(
        &self,
        det: Det,
        replicas: usize,
        transactional: bool,
        racing: Racing,
        signed: bool,
    ) -> anyhow::Result<Started> {
        let mut log_config = KafkaLogConfig::new(&self.bootstrap, &self.topic);
        admin::create_topic(&log_config).await?;
        let config = self.launcher_config(det, racing)?;
        if signed {
            // The observer reads through the same trust table, so it verifies what it reads.
            log_config.trust = self.protect(&config, det)?;
        }
        let mut procs = Vec::new();
        for i in 0..replicas {
            procs.push(self.spawn_replica(i, det, transactional, racing, &config)?);
        }
        for proc in &mut procs {
            proc.wait_for("replica starting").await?;
        }
        let log = Arc::new(KafkaLog::connect(log_config).await?);
        let observer = tokio::spawn(framework::observe(log.clone(), det, self.timeline.clone(), self.stop.clone()));
        Ok(Started { procs, send: Some(framework::sender(log, det)), observer, ready_line: "replica starting" })
    }

    /// Writes the launcher's config for one replica of `det` per process.
    fn launcher_config(&self, det: Det, racing: Racing) -> anyhow::Result<PathBuf> {
        let (bootstrap, topic) = (&self.bootstrap, &self.topic);
        let config = self.dir.join("launcher.toml");
        let racing = racing.config_lines();
        std::fs::write(&config, format!("[kafka]\nbootstrap_servers = {bootstrap:?}\ntopic = {topic:?}\n\n[[transformer]]\nname = {:?}\nreplicas = 1\n{racing}", det.name()))?;
        Ok(config)
    }

    /// Protects `det`'s keys in the launcher `config` with a bench key the replicas sign
    /// with; returns the trust table, for the observer.
    fn protect(&self, config: &Path, det: Det) -> anyhow::Result<Trust> {
        let signer = Signer::from_secret(&[0x5e; 32]);
        let key_file = self.dir.join("bench.key");
        std::fs::write(&key_file, signer.secret_base64())?;
        let output = det.output_key();
        let mut text = std::fs::read_to_string(config)?;
        text.push_str(&format!(
            "\n[[trust.protected]]\nkeys = [{:?}, {:?}]\npublic_keys = [{:?}]\n\n[signing]\nkey_file = {:?}\n",
            output.as_str(),
            output.dead_letters().as_str(),
            signer.public_key().to_base64(),
            key_file.display().to_string()
        ));
        std::fs::write(config, text)?;
        Ok(Trust::new().protect(&output, [signer.public_key()]).protect(&output.dead_letters(), [signer.public_key()]))
    }

    /// Replica `i`: `bench replica --transactional`, or the launcher with `config`.
    fn spawn_replica(
        &self,
        i: usize,
        det: Det,
        transactional: bool,
        racing: Racing,
        config: &Path,
    ) -> anyhow::Result<Proc> {
        let name = format!("r{i}");
        let log = self.dir.join(format!("{name}.log"));
        let envs = vec![("RUST_LOG".to_string(), "info".to_string())];
        if transactional {
            let args = [
                "replica",
                "--bootstrap",
                &self.bootstrap,
                "--topic",
                &self.topic,
                "--replica-id",
                &format!("{name}-{}", det.name()),
                "--det",
                det.name(),
                "--transactional",
            ];
            return Proc::spawn(&name, &self.cx.bench_exe, args.map(String::from).to_vec(), envs, log);
        }
        let mut args = vec![
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--replica-id".into(),
            name.clone(),
            "--replicas".into(),
            "1".into(),
        ];
        if matches!(racing, Racing::Staggered { .. }) {
            // r0 writes first: the stall and kill faults hit it, the worst case.
            args.extend(["--stagger-rank".into(), i.to_string()]);
        }
        Proc::spawn(&name, &self.cx.launcher_exe, args, envs, log)
    }

    async fn start_kafka_streams(
        &self,
        instances: usize,
        det: Det,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Started> {
        let (input, output) = self.create_in_out_topics().await?;
        let mut procs = Vec::new();
        for i in 0..instances {
            let name = format!("ks{i}");
            let state = self.dir.join(format!("{name}-state"));
            let application_id = self.topic.clone();
            let args =
                streams_args(&self.cx.args.streams_jar, det, &self.bootstrap, &application_id, &input, &output, &state);
            procs.push(Proc::spawn(&name, Path::new("java"), args, vec![], self.dir.join(format!("{name}.log")))?);
        }
        for proc in &mut procs {
            proc.wait_for("RUNNING").await?;
        }
        let active = self.one_active_instance(&procs).await?;
        procs.swap(0, active);
        notes.push(format!("active instance: {}", procs[0].name));
        let (seq_in, payload) = det.plain();
        let observer = self.observe_plain(output, seq_in);
        let send = Some(raw::plain_sender(&self.bootstrap, &input, seq_in, payload)?);
        Ok(Started { procs, send, observer, ready_line: "RUNNING" })
    }

    /// Waits until the group settles, exactly one instance holding the one task; returns it.
    async fn one_active_instance(&self, procs: &[Proc]) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let states: Vec<Option<bool>> = procs
                .iter()
                .map(|p| {
                    p.current_log().lines().rfind(|l| l.starts_with("RUNNING active=")).map(|l| l != "RUNNING active=0")
                })
                .collect();
            if states.iter().all(Option::is_some) && states.iter().filter(|s| **s == Some(true)).count() == 1 {
                return Ok(states.iter().position(|s| *s == Some(true)).expect("one"));
            }
            if Instant::now() > deadline {
                bail!("Kafka Streams did not settle on one active instance within 60 s; see {}", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts the scenario's fault, if it has a fault and a process: on the first process,
    /// or, with adaptive racing, on the replica that wrote the latest canonical output when
    /// it strikes (the leader: the worst case, as the first rank is with staggering).
    fn start_fault(&self, procs: &mut Vec<Proc>, ready_line: &str) -> Option<FaultTask> {
        if let Fault::KillLeader { at_fraction } = self.scenario.fault {
            return self.start_leader_kill(procs, at_fraction);
        }
        if matches!(self.scenario.fault, Fault::None) || procs.is_empty() {
            return None;
        }
        let mut procs = std::mem::take(procs);
        let (fault, secs, stop, ready) =
            (self.scenario.fault, self.scenario.load.secs(), self.stop.clone(), ready_line.to_string());
        let pick: procs::Pick = match self.scenario.system {
            System::Framework { racing: Racing::Adaptive, transactional: false, .. } => {
                let timeline = self.timeline.clone();
                Box::new(move |procs: &[Proc]| {
                    let writer = timeline.lock().expect("timeline").latest_writer.clone().unwrap_or_default();
                    // Replica ids are `<--replica-id>-<transformer>-<number>`; procs are named by the first.
                    let prefix = writer.split('-').next().unwrap_or_default();
                    procs.iter().position(|p| p.name == prefix).unwrap_or(0)
                })
            }
            _ => Box::new(|_: &[Proc]| 0),
        };
        Some(tokio::spawn(async move {
            let notes = procs::inflict(fault, &mut procs, pick, secs, &ready, stop).await;
            (procs, notes)
        }))
    }

    /// The leader-kill fault: kills the broker leading the partition the transform reads (the
    /// log; the input topic of raw relay and Kafka Streams) at `at_fraction` of the load.
    fn start_leader_kill(&self, procs: &mut Vec<Proc>, at_fraction: f64) -> Option<FaultTask> {
        let cluster = self.cx.cluster.clone()?;
        let topic = match self.scenario.system {
            System::RawRelay | System::KafkaStreams { .. } => format!("{}-in", self.topic),
            _ => self.topic.clone(),
        };
        let at = Duration::from_secs_f64(self.scenario.load.secs() * at_fraction);
        let (procs, stop) = (std::mem::take(procs), self.stop.clone());
        Some(tokio::spawn(async move { (procs, cluster::kill_leader(cluster, topic, at, stop).await) }))
    }

    /// The replication of the topic the transform reads, as the cluster reports it.
    async fn layout_note(&self) -> String {
        let topic = match self.scenario.system {
            System::RawRelay | System::KafkaStreams { .. } => format!("{}-in", self.topic),
            _ => self.topic.clone(),
        };
        match admin::describe_topic(&KafkaLogConfig::new(&self.bootstrap, &topic)).await {
            Ok(facts) => format!(
                "{topic}: replication factor {}, min.insync.replicas {}, on {} brokers",
                facts.replication_factor, facts.min_insync_replicas, facts.brokers
            ),
            Err(error) => format!("{topic}: layout not read ({error})"),
        }
    }

    /// Runs the load through `send`, or through the raw transactional generator when there is
    /// none; returns how many events were sent.
    async fn generate(&self, send: Option<load::Send>, notes: &mut Vec<String>) -> anyhow::Result<u64> {
        if let Some(send) = send {
            return load::generate(self.scenario.load, send, self.timeline.clone()).await;
        }
        let (bootstrap, topic, load, timeline) =
            (self.bootstrap.clone(), self.topic.clone(), self.scenario.load, self.timeline.clone());
        let first = !self.scenario.name.contains("naive");
        let (sent, note) =
            tokio::task::spawn_blocking(move || raw::generate_transactional(&bootstrap, &topic, load, timeline, first))
                .await??;
        notes.push(note);
        Ok(sent)
    }

    /// Waits until every event is answered, or nothing new came for the drain time.
    async fn drain(&self, sent: u64, notes: &mut Vec<String>) {
        // A long backlog goes quiet while a replica reads ahead for its own outputs.
        let quiet_max = match self.scenario.load {
            Load::Backlog { events } => self.cx.drain + Duration::from_secs(events / 100_000),
            _ => self.cx.drain,
        };
        let mut last_count = 0;
        let mut last_growth = Instant::now();
        loop {
            let count = self.timeline.lock().expect("timeline").seen.len();
            if count as u64 >= sent {
                break;
            }
            if count != last_count {
                (last_count, last_growth) = (count, Instant::now());
            }
            if last_growth.elapsed() > quiet_max {
                notes.push(format!(
                    "{} of {sent} events never answered within {:?} of the last output",
                    sent - count as u64,
                    quiet_max
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The framework's write amplification, read from its log; `None` for other systems.
    async fn amplification(&self) -> anyhow::Result<Option<raw::Amplification>> {
        let System::Framework { det, .. } = self.scenario.system else {
            return Ok(None);
        };
        let (bootstrap, topic) = (self.bootstrap.clone(), self.topic.clone());
        let amplification = tokio::task::spawn_blocking(move || {
            raw::amplification(&bootstrap, &topic, &det.output_key(), framework::LOAD_WRITER)
        })
        .await??;
        Ok(Some(amplification))
    }

    /// After a Kafka Streams matching-engine run: its reports must equal the Rust engine's on
    /// the same inputs. Returns the scenario's error if they differ.
    async fn check_streams_matching(&self, notes: &mut Vec<String>) -> anyhow::Result<Option<String>> {
        let System::KafkaStreams { det: Det::MatchingEngine, .. } = self.scenario.system else {
            return Ok(None);
        };
        let (bootstrap, input, output) =
            (self.bootstrap.clone(), format!("{}-in", self.topic), format!("{}-out", self.topic));
        let verdict =
            tokio::task::spawn_blocking(move || conformance::matching_engine(&bootstrap, &input, &output)).await??;
        eprintln!("  {}", verdict.note);
        let error = if verdict.equal { None } else { Some(verdict.note.clone()) };
        notes.push(verdict.note);
        Ok(error)
    }

    /// The scenario's figures from its timeline; an unanswered delivered input is its error.
    fn summarize(
        &self,
        load_started: Instant,
        load_ended: Instant,
        backlog: bool,
        error: &mut Option<String>,
    ) -> Summary {
        let timeline = self.timeline.lock().expect("timeline");
        let mut summary = measure::analyze(&timeline, load_started, load_started + self.cx.warmup);
        // Every delivered input must be answered: a loss is a failure, never a figure.
        if summary.answered < summary.sent && error.is_none() {
            *error = Some(format!(
                "{} of {} delivered inputs were never answered",
                summary.sent - summary.answered,
                summary.sent
            ));
        }
        if backlog {
            // Throughput of the drain alone; latency is mostly the wait for SIGCONT.
            summary.throughput_eps = measure::rate_since(&timeline, load_ended);
        }
        summary
    }
}

/// The figures of a run's scenarios, by name, for the targets.
struct Figures<'a>(&'a [ScenarioResult]);

impl Figures<'_> {
    fn get(&self, name: &str) -> Option<&ScenarioResult> {
        self.0.iter().find(|r| r.name == name && r.error.is_none())
    }
    fn eps(&self, name: &str) -> Option<f64> {
        self.get(name).map(|r| r.summary.throughput_eps)
    }
    fn p99(&self, name: &str) -> Option<f64> {
        self.get(name).map(|r| r.summary.latency.p99_ms)
    }
    fn gap(&self, name: &str) -> Option<f64> {
        self.get(name).map(|r| r.summary.gap_max_ms)
    }
    fn amplification(&self, name: &str) -> Option<f64> {
        self.get(name).and_then(|r| r.amplification.as_ref()).map(|a| a.by_bytes)
    }
    /// One racing mode's three figures, from `<base>`, `<base>-stall` and `<base>-kill`
    /// (and `<suffix>` after each: `@cluster`): write amplification, stalled p99 over
    /// unstalled, killed gap over normal.
    fn racing(&self, base: &str, suffix: &str) -> (Option<f64>, Option<f64>, Option<f64>) {
        let name = |fault: &str| format!("{base}{fault}{suffix}");
        (
            self.amplification(&name("")),
            ratio(self.p99(&name("-stall")), self.p99(&name(""))),
            ratio(self.gap(&name("-kill")), self.gap(&name(""))),
        )
    }
}

/// `a ÷ b`, when both are known and `b` is not zero.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// One target of the report: its value, its goal, whether it is met (`None`: no goal).
fn target(value: Option<f64>, goal: &str, ok: Option<fn(f64) -> bool>) -> serde_json::Value {
    serde_json::json!({"value": value, "goal": goal, "met": ok.and_then(|ok| value.map(ok))})
}

/// Where the run stands against the goals BENCHMARKS.md states (issues 6 and 15).
fn targets(results: &[ScenarioResult]) -> serde_json::Value {
    let f = Figures(results);
    let throughput = ratio(f.eps("identity-1-flat"), f.eps("raw-idempotent-flat"));
    let (amplification, stall, gap) = f.racing("identity-3", "");
    let (all_amplification, all_stall, all_gap) = f.racing("identity-3-all", "");
    let (staggered_amplification, staggered_stall, staggered_gap) = f.racing("identity-3-stagger", "");
    let vs_streams = ratio(f.p99("identity-3-stall"), f.p99("streams-identity"));
    let vs_streams_stalled = ratio(f.p99("identity-3-stall"), f.p99("streams-identity-stall"));
    let mut targets = serde_json::json!({
        "1_identity_1_flat_over_raw_throughput": target(throughput, ">= 0.70", Some(|v| v >= 0.7)),
        "1b_identity_1_flat_over_raw_relay_flat": target(ratio(f.eps("identity-1-flat"), f.eps("raw-relay-flat")), "(the same two hops with plain clients)", None),
        "1d_identity_1_backlog_over_raw_relay_backlog": target(ratio(f.eps("identity-1-backlog"), f.eps("raw-relay-backlog")), "(the same two hops with plain clients)", None),
        "2a_stalled_p99_over_unstalled_p99": target(stall, "<= 1.5", Some(|v| v <= 1.5)),
        "2b_stalled_p99_over_kafka_streams_p99": target(vs_streams, "< 0.5", Some(|v| v < 0.5)),
        "2c_stalled_p99_over_kafka_streams_stalled_p99": target(vs_streams_stalled, "< 0.5", Some(|v| v < 0.5)),
        "3_killed_gap_over_normal_gap": target(gap, "<= 2", Some(|v| v <= 2.0)),
        "4_write_amplification_3_replicas": target(amplification, "<= 1.2", Some(|v| v <= 1.2)),
        "4a_write_amplification_3_replicas_all_at_once": target(all_amplification, "(all at once: ~N)", None),
        "2a_all_at_once_stalled_p99_over_unstalled_p99": target(all_stall, "<= 1.5", Some(|v| v <= 1.5)),
        "3a_all_at_once_killed_gap_over_normal_gap": target(all_gap, "<= 2", Some(|v| v <= 2.0)),
        "4s_write_amplification_3_replicas_staggered_5ms": target(staggered_amplification, "<= 1.2", Some(|v| v <= 1.2)),
        "2s_staggered_stalled_p99_over_staggered_p99": target(staggered_stall, "<= 1.5", Some(|v| v <= 1.5)),
        "3s_staggered_killed_gap_over_staggered_gap": target(staggered_gap, "<= 2", Some(|v| v <= 2.0)),
    });
    targets["3_killed_gap_over_normal_gap"]["kafka_streams_failover_gap_ms"] = f.gap("streams-identity-kill").into();
    // Goal 3 with state: the matching engine, whose Kafka Streams peer restores a book on failover.
    let (matching_amplification, matching_stall, matching_gap) = f.racing("matching-3", "");
    targets["3m_matching_killed_gap_over_normal_gap"] = target(matching_gap, "<= 2", Some(|v| v <= 2.0));
    targets["3m_matching_killed_gap_over_normal_gap"]["kafka_streams_failover_gap_ms"] =
        f.gap("streams-matching-kill").into();
    targets["2m_matching_stalled_p99_over_unstalled_p99"] = target(matching_stall, "<= 1.5", Some(|v| v <= 1.5));
    targets["4m_matching_write_amplification_3_replicas"] =
        target(matching_amplification, "<= 1.2", Some(|v| v <= 1.2));
    let (_, matching_all_stall, matching_all_gap) = f.racing("matching-3-all", "");
    targets["2ma_matching_all_at_once_stalled_p99_over_unstalled_p99"] =
        target(matching_all_stall, "<= 1.5", Some(|v| v <= 1.5));
    targets["3ma_matching_all_at_once_killed_gap_over_normal_gap"] =
        target(matching_all_gap, "<= 2", Some(|v| v <= 2.0));
    cluster_targets(&f, &mut targets);
    targets
}

/// The same goals on the cluster (`@cluster`), and the leader kill beside Kafka Streams'.
fn cluster_targets(f: &Figures<'_>, targets: &mut serde_json::Value) {
    let c = |name: &str| format!("{name}{ON_CLUSTER}");
    if !f.0.iter().any(|r| r.name.ends_with(ON_CLUSTER)) {
        return;
    }
    let (amplification, stall, gap) = f.racing("identity-3", ON_CLUSTER);
    let flat = |over: &str| ratio(f.eps(&c("identity-1-flat")), f.eps(&c(over)));
    let leader_gap = f.gap(&c("identity-3-leader-kill"));
    let entries = [
        (
            "c1_identity_1_flat_over_raw_throughput@cluster",
            target(flat("raw-idempotent-flat"), ">= 0.70", Some(|v| v >= 0.7)),
        ),
        (
            "c1b_identity_1_flat_over_raw_relay_flat@cluster",
            target(flat("raw-relay-flat"), ">= 0.9 (issue 15)", Some(|v| v >= 0.9)),
        ),
        ("c2a_stalled_p99_over_unstalled_p99@cluster", target(stall, "<= 1.5", Some(|v| v <= 1.5))),
        (
            "c2b_stalled_p99_over_kafka_streams_p99@cluster",
            target(ratio(f.p99(&c("identity-3-stall")), f.p99(&c("streams-identity"))), "< 0.5", Some(|v| v < 0.5)),
        ),
        ("c3_killed_gap_over_normal_gap@cluster", target(gap, "<= 2", Some(|v| v <= 2.0))),
        ("c4_write_amplification_3_replicas@cluster", target(amplification, "<= 1.2", Some(|v| v <= 1.2))),
        (
            "c5_leader_killed_gap_ms@cluster",
            target(leader_gap, "(the largest gap; raw Kafka's and Kafka Streams' beside it)", None),
        ),
        (
            "c5b_leader_killed_gap_over_raw_leader_killed_gap@cluster",
            target(
                ratio(leader_gap, f.gap(&c("raw-idempotent-leader-kill"))),
                "(the failover's own cost: raw Kafka's gap)",
                None,
            ),
        ),
        (
            "c5c_leader_killed_gap_over_kafka_streams_leader_killed_gap@cluster",
            target(ratio(leader_gap, f.gap(&c("streams-identity-leader-kill"))), "(ours ÷ Kafka Streams')", None),
        ),
    ];
    for (name, value) in entries {
        targets[name] = value;
    }
    targets["c5_leader_killed_gap_ms@cluster"]["raw_gap_ms"] = f.gap(&c("raw-idempotent-leader-kill")).into();
    targets["c5_leader_killed_gap_ms@cluster"]["kafka_streams_gap_ms"] =
        f.gap(&c("streams-identity-leader-kill")).into();
}

fn markdown(results: &[ScenarioResult], report: &serde_json::Value) -> String {
    let mut out = String::from(
        "| scenario | system | load | fault | answered | throughput ev/s | p50 ms | p99 ms | p99.9 ms | max ms | largest gap ms | ampl. bytes | ampl. count |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let s = &r.summary;
        let (ab, ac) = r
            .amplification
            .as_ref()
            .map_or(("".into(), "".into()), |a| (format!("{:.2}", a.by_bytes), format!("{:.2}", a.by_count)));
        if let Some(error) = &r.error {
            out.push_str(&format!(
                "| {} | {} | {} | {} | FAILED: {} |||||||||\n",
                r.name,
                r.system,
                r.load,
                r.fault,
                error.replace('|', "/")
            ));
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {}/{} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {ab} | {ac} |\n",
            r.name,
            r.system,
            r.load,
            r.fault,
            s.answered,
            s.sent,
            s.throughput_eps,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.p999_ms,
            s.latency.max_ms,
            s.gap_max_ms
        ));
    }
    out.push_str("\nTargets (BENCHMARKS.md):\n\n");
    if let Some(targets) = report["targets"].as_object() {
        for (name, t) in targets {
            out.push_str(&format!(
                "- {name}: value {} (goal {}), met: {}\n",
                fmt_opt(&t["value"]),
                t["goal"].as_str().unwrap_or(""),
                t["met"]
            ));
        }
    }
    out.push_str(&format!("\nHot path, ns per event (`bench micro`): {}\n", report["micro_ns_per_event"]));
    out
}

/// The restart scenarios' table: spawn of every replica to the first output, by log length.
fn restart_markdown(restarts: &[restart::Restart]) -> String {
    if restarts.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nRestart (every replica at once) to the first output:\n\n| scenario | log inputs | snapshots | replicas | first output ms | peak RSS MB | newest snapshot bytes |\n|---|---|---|---|---|---|---|\n",
    );
    for r in restarts {
        let first = match (&r.error, r.first_output_ms) {
            (Some(error), _) => format!("FAILED: {}", error.replace('|', "/")),
            (None, ms) => ms.map_or("n/a".into(), |ms| format!("{ms:.0}")),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {first} | {} | {} |\n",
            r.scenario,
            r.events,
            if r.snapshots { "on" } else { "off (replay from 0)" },
            r.replicas,
            r.peak_rss_mb.map_or(String::new(), |mb| format!("{mb:.0}")),
            r.snapshot.as_ref().map_or(String::new(), |m| m.bytes.to_string()),
        ));
    }
    out
}

fn fmt_opt(value: &serde_json::Value) -> String {
    value.as_f64().map_or("n/a".into(), |v| format!("{v:.2}"))
}

fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let memory_kb = read("/proc/meminfo")
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse::<u64>()
        .unwrap_or(0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": memory_kb / 1024 / 1024,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average_at_end": read("/proc/loadavg").trim(),
    })
}
