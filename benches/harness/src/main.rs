//! `bench`: latency and throughput of racing replicas, against the raw Kafka limit and
//! Kafka Streams, on one broker, in one run.
//!
//! - `bench run [--quick]`: every scenario, one fresh topic each; writes
//!   `<out>/latest.json` and `<out>/latest.md` (`benches/run.sh` is the one command).
//! - `bench replica …`: one replica in this process (the transactional write mode, which
//!   the launcher's config cannot select).
//! - `bench micro`: the per-event cost of each step of the hot path, without Kafka.
//! - `bench conformance`: Kafka Streams' matching engine against the Rust one on inputs that
//!   reach every rule.
//!
//! Layout: [`load`] (the generator), [`framework`] (sender, observer and replica of the
//! framework), [`raw`] (plain rdkafka: the limit, plain observers, write amplification),
//! [`procs`] (child processes and faults), [`measure`] (histograms), [`conformance`] (Kafka
//! Streams' matching engine against the Rust one), [`micro`].

// The harness is a driver: it reads clocks to measure latency (the workspace's clippy.toml
// forbids that in the framework's pure core, not here). `%` stays readable on rust 1.85.
#![allow(clippy::disallowed_methods, clippy::manual_is_multiple_of)]

mod conformance;
mod framework;
mod load;
mod measure;
mod micro;
mod procs;
mod raw;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use competing_transformers_kafka::{admin, KafkaLog, KafkaLogConfig};
use serde::Serialize;

use framework::Det;
use load::Load;
use measure::{Summary, Timeline};
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
    /// Only scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Where latest.json and latest.md go.
    #[arg(long, default_value = "benches/results")]
    out: PathBuf,
    /// The Kafka Streams peer's jar.
    #[arg(long, default_value = "benches/kafka-streams/target/bench-kafka-streams.jar")]
    streams_jar: PathBuf,
    /// Profile the replica of `identity-1-flat` with `perf record` into <out>/profile.txt.
    #[arg(long)]
    profile: bool,
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
    /// Racing replicas of the framework, each its own process; `stagger_ms`: replica k
    /// writes after k × that unless beaten (the launcher's `stagger_ms`).
    Framework { det: Det, replicas: usize, transactional: bool, stagger_ms: Option<u64> },
    /// Kafka Streams (exactly_once_v2) running `det`, `instances` processes in one group, one
    /// standby.
    KafkaStreams { instances: usize, det: Det },
}

impl System {
    fn label(&self) -> String {
        match *self {
            System::RawIdempotent => "raw rdkafka, idempotent".into(),
            System::RawTransactional => "raw rdkafka, transactions".into(),
            System::RawRelay => "raw rdkafka relay process, idempotent".into(),
            System::Framework { det, replicas, transactional, stagger_ms } => format!(
                "{} × {replicas} replica{}{}{}",
                det.name(),
                if replicas == 1 { "" } else { "s" },
                if transactional { ", transactional mode" } else { "" },
                stagger_ms.map(|ms| format!(", staggered {ms} ms")).unwrap_or_default()
            ),
            System::KafkaStreams { instances, det } => {
                format!("Kafka Streams {}, EOS v2, {instances} instances", det.name())
            }
        }
    }
}

struct Scenario {
    name: String,
    system: System,
    load: Load,
    fault: Fault,
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
    notes: Vec<String>,
    error: Option<String>,
}

fn scenarios(quick: bool, streams: bool) -> Vec<Scenario> {
    let (secs, rate, flat_secs) = if quick { (3.0, 200, 2.0) } else { (15.0, 1_000, 10.0) };
    let at_rate = Load::Rate { per_s: rate, secs };
    // 2,000 unanswered events: enough to keep the pipe full, small enough that a replica's
    // backlog never batches past the broker's 1 MiB record limit (see BENCHMARKS.md).
    let flat = Load::Flat { secs: flat_secs, unanswered_max: 2_000 };
    let backlog = Load::Backlog { events: if quick { 2_000 } else { 1_000_000 } };
    let stall = Fault::Stall { stall_ms: 300, every_ms: 2_000 };
    let kill = Fault::Kill { at_fraction: 0.4, restart_after_ms: Some(1_000) };
    let fw = |det, replicas, transactional| System::Framework { det, replicas, transactional, stagger_ms: None };
    let staggered = System::Framework { det: Det::Identity, replicas: 3, transactional: false, stagger_ms: Some(5) };
    let s = |name: &str, system, load, fault| Scenario { name: name.into(), system, load, fault };
    let mut all = vec![
        s("raw-idempotent", System::RawIdempotent, at_rate, Fault::None),
        s("raw-transactional", System::RawTransactional, at_rate, Fault::None),
        s("raw-transactional-naive", System::RawTransactional, at_rate, Fault::None),
        s("identity-1", fw(Det::Identity, 1, false), at_rate, Fault::None),
    ];
    if !quick {
        all.extend([
            s("raw-idempotent-flat", System::RawIdempotent, flat, Fault::None),
            s("raw-transactional-flat", System::RawTransactional, flat, Fault::None),
            s("identity-1-flat", fw(Det::Identity, 1, false), flat, Fault::None),
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
        all.extend([
            s("identity-3-stagger", staggered, at_rate, Fault::None),
            s("identity-3-stagger-stall", staggered, at_rate, stall),
            s("identity-3-stagger-kill", staggered, at_rate, kill),
        ]);
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
    bench_exe: PathBuf,
    launcher_exe: PathBuf,
    stamp: u128,
    warmup: Duration,
    drain: Duration,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let streams = args.streams.unwrap_or(!args.quick);
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
    let cx = Context_ { args: args.clone(), work, bench_exe, launcher_exe, stamp, warmup, drain };
    eprintln!("bench: logs of replicas and Kafka Streams in {}", cx.work.display());

    let micro = micro::run(if args.quick { 20_000 } else { 200_000 });
    let mut results = Vec::new();
    for scenario in scenarios(args.quick, streams) {
        if args.only.as_deref().is_some_and(|only| !scenario.name.contains(only)) {
            continue;
        }
        eprintln!(
            "bench: {} — {}, {}, fault: {}",
            scenario.name,
            scenario.system.label(),
            scenario.load.label(),
            scenario.fault.label()
        );
        let result = match run_scenario(&cx, &scenario).await {
            Ok(result) => result,
            Err(error) => {
                eprintln!("  FAILED: {error:#}");
                ScenarioResult {
                    name: scenario.name.clone(),
                    system: scenario.system.label(),
                    load: scenario.load.label(),
                    fault: scenario.fault.label(),
                    summary: Summary::default(),
                    amplification: None,
                    notes: vec![],
                    error: Some(format!("{error:#}")),
                }
            }
        };
        let l = &result.summary.latency;
        eprintln!(
            "  {} of {} answered; {:.0} ev/s; p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.1} ms; largest gap {:.1} ms{}",
            result.summary.answered,
            result.summary.sent,
            result.summary.throughput_eps,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            result.summary.gap_max_ms,
            result
                .amplification
                .as_ref()
                .map(|a| format!("; amplification {:.2} by bytes, {:.2} by count", a.by_bytes, a.by_count))
                .unwrap_or_default()
        );
        results.push(result);
    }
    let targets = targets(&results);
    let report = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "quick": args.quick,
        "bootstrap": args.bootstrap,
        "machine": machine(),
        "duration_s": started.elapsed().as_secs_f64(),
        "micro_ns_per_event": micro,
        "targets": targets,
        "scenarios": results,
    });
    let json_path = args.out.join(if args.quick { "quick.json" } else { "latest.json" });
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let table = markdown(&results, &report);
    std::fs::write(args.out.join(if args.quick { "quick.md" } else { "latest.md" }), &table)?;
    println!("{table}");
    eprintln!("bench: wrote {} in {:.0} s", json_path.display(), started.elapsed().as_secs_f64());
    if results.iter().any(|r| r.error.is_some()) {
        bail!("some scenarios failed; see above");
    }
    Ok(())
}

async fn run_scenario(cx: &Context_, scenario: &Scenario) -> anyhow::Result<ScenarioResult> {
    let bootstrap = cx.args.bootstrap.clone();
    let topic = format!("bench-{}-{}", scenario.name, cx.stamp);
    let dir = cx.work.join(&scenario.name);
    std::fs::create_dir_all(&dir)?;
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut notes = Vec::new();
    let mut amplification = None;

    // Start what transforms, and the observer; return the generator's sender and the victim.
    let mut procs: Vec<Proc> = Vec::new();
    let (send, observer, ready_line): (Option<load::Send>, tokio::task::JoinHandle<anyhow::Result<()>>, &str) =
        match scenario.system {
            System::RawRelay => {
                let (input, output) = (format!("{topic}-in"), format!("{topic}-out"));
                admin::create_topic(&KafkaLogConfig::new(&bootstrap, &input)).await?;
                admin::create_topic(&KafkaLogConfig::new(&bootstrap, &output)).await?;
                let args =
                    ["relay", "--bootstrap", &bootstrap, "--from", &input, "--to", &output].map(String::from).to_vec();
                let mut relay = Proc::spawn("relay", &cx.bench_exe, args, vec![], dir.join("relay.log"))?;
                relay.wait_for("relay starting").await?;
                procs.push(relay);
                let observer = tokio::spawn(raw::observe_plain(
                    bootstrap.clone(),
                    output,
                    raw::SeqFrom::Payload,
                    timeline.clone(),
                    stop.clone(),
                ));
                (
                    Some(raw::plain_sender(&bootstrap, &input, raw::SeqFrom::Payload, load::payload)?),
                    observer,
                    "relay starting",
                )
            }
            System::RawIdempotent | System::RawTransactional => {
                admin::create_topic(&KafkaLogConfig::new(&bootstrap, &topic)).await?;
                let observer = tokio::spawn(raw::observe_plain(
                    bootstrap.clone(),
                    topic.clone(),
                    raw::SeqFrom::Payload,
                    timeline.clone(),
                    stop.clone(),
                ));
                let send = match scenario.system {
                    System::RawIdempotent => {
                        Some(raw::plain_sender(&bootstrap, &topic, raw::SeqFrom::Payload, load::payload)?)
                    }
                    _ => None,
                };
                (send, observer, "")
            }
            System::Framework { det, replicas, transactional, stagger_ms } => {
                let log_config = KafkaLogConfig::new(&bootstrap, &topic);
                admin::create_topic(&log_config).await?;
                let config = dir.join("launcher.toml");
                let stagger = stagger_ms.map(|ms| format!("stagger_ms = {ms}\n")).unwrap_or_default();
                std::fs::write(&config, format!("[kafka]\nbootstrap_servers = {bootstrap:?}\ntopic = {topic:?}\n\n[[transformer]]\nname = {:?}\nreplicas = 1\n{stagger}", det.name()))?;
                for i in 0..replicas {
                    let name = format!("r{i}");
                    let log = dir.join(format!("{name}.log"));
                    let envs = vec![("RUST_LOG".to_string(), "info".to_string())];
                    let proc = if transactional {
                        let args = [
                            "replica",
                            "--bootstrap",
                            &bootstrap,
                            "--topic",
                            &topic,
                            "--replica-id",
                            &format!("{name}-{}", det.name()),
                            "--det",
                            det.name(),
                            "--transactional",
                        ];
                        Proc::spawn(&name, &cx.bench_exe, args.map(String::from).to_vec(), envs, log)?
                    } else {
                        let mut args = vec![
                            "run".into(),
                            "--config".into(),
                            config.display().to_string(),
                            "--replica-id".into(),
                            name.clone(),
                            "--replicas".into(),
                            "1".into(),
                        ];
                        if stagger_ms.is_some() {
                            // r0 writes first: the stall and kill faults hit it, the worst case.
                            args.extend(["--stagger-rank".into(), i.to_string()]);
                        }
                        Proc::spawn(&name, &cx.launcher_exe, args, envs, log)?
                    };
                    procs.push(proc);
                }
                for proc in &mut procs {
                    proc.wait_for("replica starting").await?;
                }
                let log = Arc::new(KafkaLog::connect(log_config).await?);
                let observer = tokio::spawn(framework::observe(log.clone(), det, timeline.clone(), stop.clone()));
                (Some(framework::sender(log, det)), observer, "replica starting")
            }
            System::KafkaStreams { instances, det } => {
                let (input, output) = (format!("{topic}-in"), format!("{topic}-out"));
                admin::create_topic(&KafkaLogConfig::new(&bootstrap, &input)).await?;
                admin::create_topic(&KafkaLogConfig::new(&bootstrap, &output)).await?;
                for i in 0..instances {
                    let name = format!("ks{i}");
                    let state = dir.join(format!("{name}-state"));
                    let args = streams_args(
                        &cx.args.streams_jar,
                        det,
                        &bootstrap,
                        &format!("bench-{}-{}", scenario.name, cx.stamp),
                        &input,
                        &output,
                        &state,
                    );
                    procs.push(Proc::spawn(&name, Path::new("java"), args, vec![], dir.join(format!("{name}.log")))?);
                }
                for proc in &mut procs {
                    proc.wait_for("RUNNING").await?;
                }
                // The group settles: exactly one instance holds the one task.
                let deadline = Instant::now() + Duration::from_secs(60);
                let active = loop {
                    let states: Vec<Option<bool>> = procs
                        .iter()
                        .map(|p| {
                            p.current_log()
                                .lines()
                                .rfind(|l| l.starts_with("RUNNING active="))
                                .map(|l| l != "RUNNING active=0")
                        })
                        .collect();
                    if states.iter().all(Option::is_some) && states.iter().filter(|s| **s == Some(true)).count() == 1 {
                        break states.iter().position(|s| *s == Some(true)).expect("one");
                    }
                    if Instant::now() > deadline {
                        bail!("Kafka Streams did not settle on one active instance within 60 s; see {}", dir.display());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                };
                procs.swap(0, active);
                notes.push(format!("active instance: {}", procs[0].name));
                let (seq_in, payload) = det.plain();
                let observer =
                    tokio::spawn(raw::observe_plain(bootstrap.clone(), output, seq_in, timeline.clone(), stop.clone()));
                (Some(raw::plain_sender(&bootstrap, &input, seq_in, payload)?), observer, "RUNNING")
            }
        };
    // Let the observer connect before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let backlog = matches!(scenario.load, Load::Backlog { .. });
    if backlog {
        for proc in &mut procs {
            proc.signal(libc::SIGSTOP);
        }
    }

    let load_started = Instant::now();
    let fault_task = if matches!(scenario.fault, Fault::None) || procs.is_empty() {
        None
    } else {
        let mut victim = procs.remove(0);
        let (fault, secs, stop, ready) = (scenario.fault, scenario.load.secs(), stop.clone(), ready_line.to_string());
        Some(tokio::spawn(async move {
            let notes = procs::inflict(fault, &mut victim, secs, &ready, stop).await;
            (victim, notes)
        }))
    };
    let sent = match send {
        Some(send) => load::generate(scenario.load, send, timeline.clone()).await?,
        None => {
            let (bootstrap, topic, load, timeline) =
                (bootstrap.clone(), topic.clone(), scenario.load, timeline.clone());
            let first = !scenario.name.contains("naive");
            let (sent, note) = tokio::task::spawn_blocking(move || {
                raw::generate_transactional(&bootstrap, &topic, load, timeline, first)
            })
            .await??;
            notes.push(note);
            sent
        }
    };
    let load_ended = Instant::now();
    if backlog {
        for proc in &mut procs {
            proc.signal(libc::SIGCONT);
        }
        notes.push(format!("{sent} events waiting when the transforming processes were let go"));
    }
    // Drain: until every event is answered, or nothing new for the drain time.
    let mut last_count = 0;
    let mut last_growth = Instant::now();
    loop {
        let count = timeline.lock().expect("timeline").seen.len();
        if count as u64 >= sent {
            break;
        }
        if count != last_count {
            (last_count, last_growth) = (count, Instant::now());
        }
        if last_growth.elapsed() > cx.drain {
            notes.push(format!(
                "{} of {sent} events never answered within {:?} of the last output",
                sent - count as u64,
                cx.drain
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(task) = fault_task {
        let (victim, fault_notes) = task.await?;
        notes.extend(fault_notes.context("the fault")?);
        procs.insert(0, victim);
    }
    observer.await?.context("the observer")?;
    if let System::Framework { det, .. } = scenario.system {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        amplification = Some(
            tokio::task::spawn_blocking(move || {
                raw::amplification(&bootstrap, &topic, &det.output_key(), framework::LOAD_WRITER)
            })
            .await??,
        );
    }
    let mut error = None;
    if let System::KafkaStreams { det: Det::MatchingEngine, .. } = scenario.system {
        let (bootstrap, input, output) = (bootstrap.clone(), format!("{topic}-in"), format!("{topic}-out"));
        let verdict =
            tokio::task::spawn_blocking(move || conformance::matching_engine(&bootstrap, &input, &output)).await??;
        eprintln!("  {}", verdict.note);
        if !verdict.equal {
            error = Some(verdict.note.clone());
        }
        notes.push(verdict.note);
    }
    for proc in procs {
        proc.stop(Duration::from_secs(15)).await;
    }
    if let Err(error) = raw::delete_topics(&bootstrap, &topic).await {
        notes.push(format!("could not delete the scenario's topics: {error:#}"));
    }
    notes.push(format!("load ran {:.1} s; {sent} events", load_ended.duration_since(load_started).as_secs_f64()));
    let timeline = timeline.lock().expect("timeline");
    let mut summary = measure::analyze(&timeline, load_started + cx.warmup);
    // Every delivered input must be answered: a loss is a failure, never a figure.
    if summary.answered < summary.sent && error.is_none() {
        error = Some(format!(
            "{} of {} delivered inputs were never answered",
            summary.sent - summary.answered,
            summary.sent
        ));
    }
    if backlog {
        // Throughput of the drain alone; latency is mostly the wait for SIGCONT.
        summary.throughput_eps = measure::rate_since(&timeline, load_ended);
    }
    Ok(ScenarioResult {
        name: scenario.name.clone(),
        system: scenario.system.label(),
        load: scenario.load.label(),
        fault: scenario.fault.label(),
        summary,
        amplification,
        notes,
        error,
    })
}

/// Where the run stands against the four goals BENCHMARKS.md states.
fn targets(results: &[ScenarioResult]) -> serde_json::Value {
    let get = |name: &str| results.iter().find(|r| r.name == name && r.error.is_none());
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let eps = |name: &str| get(name).map(|r| r.summary.throughput_eps);
    let throughput = ratio(eps("identity-1-flat"), eps("raw-idempotent-flat"));
    let over_relay = ratio(eps("identity-1-flat"), eps("raw-relay-flat"));
    let backlog_over_relay = ratio(eps("identity-1-backlog"), eps("raw-relay-backlog"));
    let stall = ratio(
        get("identity-3-stall").map(|r| r.summary.latency.p99_ms),
        get("identity-3").map(|r| r.summary.latency.p99_ms),
    );
    let vs_streams = ratio(
        get("identity-3-stall").map(|r| r.summary.latency.p99_ms),
        get("streams-identity").map(|r| r.summary.latency.p99_ms),
    );
    let vs_streams_stalled = ratio(
        get("identity-3-stall").map(|r| r.summary.latency.p99_ms),
        get("streams-identity-stall").map(|r| r.summary.latency.p99_ms),
    );
    let gap =
        ratio(get("identity-3-kill").map(|r| r.summary.gap_max_ms), get("identity-3").map(|r| r.summary.gap_max_ms));
    let amplification = get("identity-3").and_then(|r| r.amplification.as_ref()).map(|a| a.by_bytes);
    let staggered_amplification = get("identity-3-stagger").and_then(|r| r.amplification.as_ref()).map(|a| a.by_bytes);
    let staggered_stall = ratio(
        get("identity-3-stagger-stall").map(|r| r.summary.latency.p99_ms),
        get("identity-3-stagger").map(|r| r.summary.latency.p99_ms),
    );
    let staggered_gap = ratio(
        get("identity-3-stagger-kill").map(|r| r.summary.gap_max_ms),
        get("identity-3-stagger").map(|r| r.summary.gap_max_ms),
    );
    // Goal 3 with state: the matching engine, whose Kafka Streams peer restores a book on failover.
    let matching_gap =
        ratio(get("matching-3-kill").map(|r| r.summary.gap_max_ms), get("matching-3").map(|r| r.summary.gap_max_ms));
    let met = |value: Option<f64>, ok: fn(f64) -> bool| value.map(ok);
    serde_json::json!({
        "1_identity_1_flat_over_raw_throughput": {"value": throughput, "goal": ">= 0.70", "met": met(throughput, |v| v >= 0.7)},
        "1b_identity_1_flat_over_raw_relay_flat": {"value": over_relay, "goal": "(the same two hops with plain clients)", "met": null},
        "1d_identity_1_backlog_over_raw_relay_backlog": {"value": backlog_over_relay, "goal": "(the same two hops with plain clients)", "met": null},
        "2a_stalled_p99_over_unstalled_p99": {"value": stall, "goal": "<= 1.5", "met": met(stall, |v| v <= 1.5)},
        "2b_stalled_p99_over_kafka_streams_p99": {"value": vs_streams, "goal": "< 0.5", "met": met(vs_streams, |v| v < 0.5)},
        "2c_stalled_p99_over_kafka_streams_stalled_p99": {"value": vs_streams_stalled, "goal": "< 0.5", "met": met(vs_streams_stalled, |v| v < 0.5)},
        "3_killed_gap_over_normal_gap": {"value": gap, "goal": "<= 2", "met": met(gap, |v| v <= 2.0),
            "kafka_streams_failover_gap_ms": get("streams-identity-kill").map(|r| r.summary.gap_max_ms)},
        "3m_matching_killed_gap_over_normal_gap": {"value": matching_gap, "goal": "<= 2", "met": met(matching_gap, |v| v <= 2.0),
            "kafka_streams_failover_gap_ms": get("streams-matching-kill").map(|r| r.summary.gap_max_ms)},
        "4_write_amplification_3_replicas": {"value": amplification, "goal": "<= 1.5", "met": met(amplification, |v| v <= 1.5)},
        "4s_write_amplification_3_replicas_staggered_5ms": {"value": staggered_amplification, "goal": "<= 1.5", "met": met(staggered_amplification, |v| v <= 1.5)},
        "2s_staggered_stalled_p99_over_staggered_p99": {"value": staggered_stall, "goal": "<= 1.5", "met": met(staggered_stall, |v| v <= 1.5)},
        "3s_staggered_killed_gap_over_staggered_gap": {"value": staggered_gap, "goal": "<= 2", "met": met(staggered_gap, |v| v <= 2.0)},
    })
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
    out.push_str("\nTargets (issue 6):\n\n");
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
