//! `demo`: three replicas of the matching engine as separate processes, a crash, and the
//! pipeline carrying on.
//!
//! The replicas are `transformer-launcher run --replica-id demo-x --replicas 1` processes (the
//! binary beside this one), so SIGKILL is a real crash: no flush, no goodbye. The demo speaks
//! the matching engine's JSON vocabulary (limit, market and cancel orders in; trades out) as
//! plain data.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use competing_transformers::codec::{self, SchemaCache};
use competing_transformers::event::{Event, EventSourceKey, Offset, CONTENT_TYPE_JSON};
use competing_transformers_kafka::schema_registry::SchemaRegistry;
use competing_transformers_kafka::{admin, KafkaLog, KafkaLogConfig, Pipeline, Shutdown, ShutdownTrigger};
use competing_transformers_launcher::config::BOOTSTRAP_DEFAULT;
use competing_transformers_launcher::reading::{read_dead_letters, readable, ReadDeadLetter};
use competing_transformers_launcher::summary::LogSummary;
use competing_transformers_launcher::wall_clock_ms;

type Error = anyhow::Error;

/// The transformer the demo runs, and the key it reads.
const TRANSFORMER: &str = "matching-engine";
const INPUT_KEY: &str = "orders";
/// The replicas' id prefixes, one process each.
const REPLICAS: [&str; 3] = ["demo-a", "demo-b", "demo-c"];
/// Orders are published in this many bursts; the crash comes before the middle one.
const BURSTS: usize = 4;
const BURST_PAUSE: Duration = Duration::from_millis(300);
/// How long a replica process may take to start reading the log.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a burst's orders may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Output count unchanged this long: the survivors have nothing left to write.
const SETTLED_AFTER: Duration = Duration::from_secs(1);
/// How long a replica may take to flush and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
const TRADES_SHOWN: usize = 10;
/// A schema id no registry is expected to hold: the demo's broken Avro order.
const BROKEN_SCHEMA_ID: u32 = 999_999;

/// `demo`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "demo",
    about = "Show racing replicas surviving a crash, against a local broker, in under a minute",
    long_about = "Show racing replicas surviving a crash, against a broker at \
--bootstrap, in under a minute.\n\n\
Creates a fresh topic demo-<unix time>, starts 3 replicas of the matching engine as separate \
processes, publishes sample orders in bursts (one of them malformed), SIGKILLs the replica that \
won the most races so far while orders keep coming, waits until every order is answered, prints \
the first trades, the share of races each replica won, the dead letter, and how quickly orders \
were answered before and after the kill, then stops the survivors with SIGTERM. The topic is \
kept, to explore with `status`, `tail` and `dead-letters`."
)]
pub struct DemoArgs {
    /// A running broker, host:port
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// How many sample orders to publish
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(20..=5_000))]
    pub orders: u32,
    /// Replicas write their reports in Avro through the schema registry at --registry, and
    /// one order arrives as broken Avro (a schema id the registry does not know)
    #[arg(long)]
    pub avro: bool,
    /// The schema registry's Confluent-compatible API, for --avro
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_URL",
        hide_env_values = true,
        value_name = "URL",
        default_value = "http://127.0.0.1:8081/apis/ccompat/v7"
    )]
    pub registry: String,
    /// The broker stops when the demo ends (scripts/demo.sh started it for the demo): the
    /// closing hints say to start it again first
    #[arg(long, hide = true)]
    pub broker_stops: bool,
}

/// One replica process.
struct Replica {
    name: &'static str,
    replica_id: String,
    child: Child,
    pid: u32,
    log_path: PathBuf,
}

/// The crash: how many orders had been sent before it, when, and whom it killed.
struct Kill {
    orders_before: usize,
    after: Duration,
    replica_id: String,
}

/// What the watcher has seen of the engine's canonical outputs and dead letters.
#[derive(Default)]
struct Seen {
    /// Input offset → when its first canonical report (or dead letter) arrived.
    answered: HashMap<Offset, Instant>,
    outputs: u64,
    trades: Vec<Value>,
    last_growth: Option<Instant>,
}

/// When each order was sent, and the crash.
struct Published {
    /// (input offset, when it was sent), in order.
    sent: Vec<(Offset, Instant)>,
    killed: Option<Kill>,
}

/// What the demo's steps share.
struct Demo {
    args: DemoArgs,
    start: Instant,
    topic: String,
    /// The replicas' configuration and logs.
    dir: PathBuf,
    log: Arc<KafkaLog>,
}

/// `demo`.
pub async fn run(args: DemoArgs) -> Result<(), Error> {
    if cfg!(not(unix)) {
        bail!("the demo needs a Unix host: it stops its replica processes with SIGTERM");
    }
    let demo = Demo::create_topic(args).await?;
    let (config_path, schemas) = demo.write_config()?;
    let mut replicas = demo.start_replicas(&config_path).await?;
    let watching = ShutdownTrigger::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watcher = tokio::spawn(watch_outputs(demo.log.clone(), seen.clone(), watching.subscribe(), schemas));
    let published = demo.publish_orders(&mut replicas, &seen).await?;
    settle(&seen).await?;
    watching.request();
    watcher.await.map_err(|e| anyhow!("the output watcher failed: {e}"))??;
    let seen = Arc::try_unwrap(seen).ok().expect("the watcher has ended").into_inner().expect("seen lock");
    demo.stamp(format!("canonical outputs stopped growing at {} reports", seen.outputs));
    demo.report(&seen, &published).await?;
    demo.finish(replicas).await
}

impl Demo {
    /// Creates a fresh topic, `demo-<unix time>`, and connects to it.
    async fn create_topic(args: DemoArgs) -> Result<Self, Error> {
        let start = Instant::now();
        let topic = format!("demo-{}", wall_clock_ms() / 1000);
        let log_config = KafkaLogConfig::new(&args.bootstrap, &topic);
        let facts = admin::create_topic(&log_config).await?;
        let log = Arc::new(KafkaLog::connect(log_config).await?);
        let dir = std::env::temp_dir().join(&topic);
        let demo = Self { args, start, topic, dir, log };
        demo.stamp(format!(
            "created topic `{}` on {}: {} partition, retention forever",
            demo.topic, demo.args.bootstrap, facts.partitions
        ));
        Ok(demo)
    }

    /// Prints a line with the time since the start.
    fn stamp(&self, text: String) {
        println!("[{:>5.1}s] {text}", self.start.elapsed().as_secs_f64());
    }

    /// Writes the replicas' launcher configuration; with --avro, also returns the registry
    /// client that makes their outputs readable.
    fn write_config(&self) -> Result<(PathBuf, Option<Arc<SchemaRegistry>>), Error> {
        let (args, dir) = (&self.args, &self.dir);
        std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {} ({e})", dir.display()))?;
        let config_path = dir.join("launcher.toml");
        let mut config = format!(
            "[kafka]\nbootstrap_servers = {:?}\ntopic = {:?}\n\n[[transformer]]\nname = {TRANSFORMER:?}\nreplicas = 1\n",
            args.bootstrap, self.topic
        );
        let schemas = if args.avro {
            config.push_str(&format!("codec = \"avro\"\n\n[schema_registry]\nurl = {:?}\n", args.registry));
            let client = SchemaRegistry::new(&args.registry).map_err(|e| anyhow!(e))?;
            Some(Arc::new(client))
        } else {
            None
        };
        std::fs::write(&config_path, config).map_err(|e| anyhow!("cannot write {} ({e})", config_path.display()))?;
        Ok((config_path, schemas))
    }

    /// Starts a process per replica and waits until each reads the log.
    async fn start_replicas(&self, config_path: &Path) -> Result<Vec<Replica>, Error> {
        let mut replicas = Vec::new();
        for name in REPLICAS {
            replicas.push(spawn_replica(name, config_path, &self.dir, &self.args.bootstrap)?);
        }
        for replica in &mut replicas {
            wait_ready(replica).await?;
        }
        self.stamp(format!(
            "started 3 replicas of {TRANSFORMER} as processes: {}; logs in {}",
            replicas.iter().map(|r| format!("{} (pid {})", r.replica_id, r.pid)).collect::<Vec<_>>().join(", "),
            self.dir.display()
        ));
        Ok(replicas)
    }

    /// Publishes the sample orders in bursts, each answered before the next; the replica
    /// that won the most races is killed before the middle burst.
    async fn publish_orders(&self, replicas: &mut Vec<Replica>, seen: &Mutex<Seen>) -> Result<Published, Error> {
        let pipeline = Pipeline::new(self.log.clone(), "demo-publisher");
        let orders = sample_orders(self.args.orders as usize);
        let burst_size = orders.len().div_ceil(BURSTS);
        let mut published = Published { sent: Vec::with_capacity(orders.len()), killed: None };
        for (burst, chunk) in orders.chunks(burst_size).enumerate() {
            if burst == BURSTS / 2 {
                let replica_id = kill_the_leader(self.log.as_ref(), replicas, &|text| self.stamp(text)).await?;
                let orders_before = published.sent.len();
                published.killed = Some(Kill { orders_before, after: self.start.elapsed(), replica_id });
            }
            let first = published.sent.len() + 1;
            publish_burst(&pipeline, chunk, self.args.avro && burst == 1, &mut published.sent).await?;
            self.await_answers(seen, &published.sent, first).await?;
            let survivors = if published.killed.is_some() { " by the 2 survivors" } else { "" };
            self.stamp(format!(
                "published orders {first}-{} and every one was answered{survivors}",
                published.sent.len()
            ));
            tokio::time::sleep(BURST_PAUSE).await;
        }
        Ok(published)
    }

    /// Waits until every order from number `first` on has its answer.
    async fn await_answers(&self, seen: &Mutex<Seen>, sent: &[(Offset, Instant)], first: usize) -> Result<(), Error> {
        let waiting = sent[first - 1..].iter().map(|(offset, _)| *offset).collect::<Vec<_>>();
        wait_until(ANSWER_TIMEOUT, || {
            let seen = seen.lock().expect("seen lock");
            waiting.iter().all(|offset| seen.answered.contains_key(offset))
        })
        .await
        .map_err(|_| {
            anyhow!(
                "orders {first}-{} were not all answered within {ANSWER_TIMEOUT:?}; see the replica logs in {}",
                sent.len(),
                self.dir.display()
            )
        })
    }

    /// Reads the log's verdicts and dead letters, and prints what happened.
    async fn report(&self, seen: &Seen, published: &Published) -> Result<(), Error> {
        let summary = LogSummary::read(self.log.as_ref()).await?;
        let dead_letters = EventSourceKey::new(TRANSFORMER).expect("valid").dead_letters();
        let letters = read_dead_letters(self.log.clone(), &dead_letters).await?;
        print_results(seen, &summary, &letters, &published.sent, published.killed.as_ref());
        Ok(())
    }

    /// Stops the survivors and says how to explore the topic.
    async fn finish(&self, replicas: Vec<Replica>) -> Result<(), Error> {
        let names: Vec<String> = replicas.iter().map(|r| r.replica_id.clone()).collect();
        stop_replicas(replicas).await?;
        self.stamp(format!("stopped {} with SIGTERM; they flushed and exited 0", names.join(" and ")));
        let _ = std::fs::remove_dir_all(&self.dir);
        let bootstrap = if self.args.bootstrap == BOOTSTRAP_DEFAULT {
            String::new()
        } else {
            format!(" --bootstrap {}", self.args.bootstrap)
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        if self.args.broker_stops {
            // The broker keeps its data across a stop (scripts/kafka.sh): the topic comes back.
            println!(
                "\ndemo finished in {elapsed:.1} s. The broker the demo started stops now; its data stays. To explore the topic, start it again (scripts/kafka.sh start), then:"
            );
        } else {
            println!("\ndemo finished in {elapsed:.1} s. The topic stays, to explore:");
        }
        for command in ["status", "tail matching-engine", "dead-letters list --transformer matching-engine"] {
            println!("  transformer-launcher {command} --topic {}{bootstrap}", self.topic);
        }
        Ok(())
    }
}

/// Writes `orders` (and with `broken_avro` an Avro order no registry can decode, which
/// becomes a `schema` dead letter), noting when each was sent.
async fn publish_burst(
    pipeline: &Pipeline<KafkaLog>,
    orders: &[Vec<u8>],
    broken_avro: bool,
    sent: &mut Vec<(Offset, Instant)>,
) -> Result<(), Error> {
    let input_key = EventSourceKey::new(INPUT_KEY).expect("a valid constant key");
    for order in orders {
        let at = Instant::now();
        let event = Event::new(input_key.clone(), None, None, wall_clock_ms(), CONTENT_TYPE_JSON, order.clone());
        let offset = pipeline.write(&input_key, vec![event]).await?;
        sent.push((offset, at));
    }
    if broken_avro {
        // Avro framing with a schema id no registry holds.
        let broken = codec::frame(BROKEN_SCHEMA_ID, b"\x02o1");
        let event = Event::new(input_key.clone(), None, None, wall_clock_ms(), codec::CONTENT_TYPE_AVRO, broken);
        sent.push((pipeline.write(&input_key, vec![event]).await?, Instant::now()));
    }
    Ok(())
}

/// Waits until the output count stopped growing: the survivors have nothing left to write.
async fn settle(seen: &Mutex<Seen>) -> Result<(), Error> {
    wait_until(ANSWER_TIMEOUT, || {
        let seen = seen.lock().expect("seen lock");
        seen.last_growth.is_some_and(|at| at.elapsed() >= SETTLED_AFTER)
    })
    .await
    .map_err(|_| anyhow!("the output count kept growing; see the replica logs"))
}

/// The sample orders, as JSON lines: alternating buys and sells a few ticks around a mid
/// price of 100, every 7th a market order, every 10th a cancel of an earlier order, and one
/// truncated line (at 3/5 of the way) that becomes a dead letter. Deterministic.
fn sample_orders(count: usize) -> Vec<Vec<u8>> {
    const MID: usize = 100;
    const ACCOUNTS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    (0..count)
        .map(|i| {
            let order_id = format!("o{:03}", i + 1);
            let account = ACCOUNTS[i % ACCOUNTS.len()];
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            let quantity = 1 + (i * 7) % 10;
            let order = if i == count * 3 / 5 {
                return br#"{"type":"limit","order_id":"o-broken","side":"buy","price":"#.to_vec();
            } else if i % 10 == 9 {
                json!({ "type": "cancel", "order_id": format!("o{:03}", i - 5) })
            } else if i % 7 == 3 {
                json!({ "type": "market", "order_id": order_id, "account": account, "side": side, "quantity": quantity })
            } else {
                let price = if side == "buy" { MID - 2 + (i * 3) % 5 } else { MID + 2 - (i * 3) % 5 };
                json!({ "type": "limit", "order_id": order_id, "account": account, "side": side, "price": price, "quantity": quantity })
            };
            serde_json::to_vec(&order).expect("JSON values serialize")
        })
        .collect()
}

fn spawn_replica(name: &'static str, config: &Path, dir: &Path, bootstrap: &str) -> Result<Replica, Error> {
    let exe = launcher_executable()?;
    let log_path = dir.join(format!("{name}.log"));
    let log_file =
        std::fs::File::create(&log_path).map_err(|e| anyhow!("cannot create {} ({e})", log_path.display()))?;
    let log_copy = log_file.try_clone().map_err(|e| anyhow!("cannot share {} ({e})", log_path.display()))?;
    let child = Command::new(exe)
        .args(["run", "--replica-id", name, "--replicas", "1", "--config"])
        .arg(config)
        .env("KAFKA_BOOTSTRAP", bootstrap)
        .env("RUST_LOG", "info")
        .env_remove("KAFKA_TOPIC")
        .env_remove("REPLICA_ID")
        .env_remove("TRANSFORMER_LAUNCHER_CONFIG")
        .stdin(Stdio::null())
        .stdout(log_copy)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow!("cannot start replica {name} ({e})"))?;
    let pid = child.id().expect("a just-spawned child has a pid");
    Ok(Replica { name, replica_id: format!("{name}-{TRANSFORMER}-1"), child, pid, log_path })
}

/// `transformer-launcher`, built beside this binary.
fn launcher_executable() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().context("cannot find this executable")?.with_file_name("transformer-launcher");
    if !exe.exists() {
        bail!("{} is missing; build it first: cargo build -p bundled-transformers --bins", exe.display());
    }
    Ok(exe)
}

/// Waits until the replica's log says it reads the log, or fails with its last lines.
async fn wait_ready(replica: &mut Replica) -> Result<(), Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&replica.log_path).unwrap_or_default();
        if text.contains("replica starting") {
            return Ok(());
        }
        let exited = replica.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            let last: Vec<&str> = text.lines().rev().take(3).collect();
            let why = match exited {
                Some(status) => format!("exited ({status})"),
                None => format!("did not start reading the log within {READY_TIMEOUT:?}"),
            };
            return Err(anyhow!(
                "replica {} {why}; its last lines: {}",
                replica.name,
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGKILLs the replica that won the most races so far and returns its id.
async fn kill_the_leader(
    log: &KafkaLog,
    replicas: &mut Vec<Replica>,
    stamp: &impl Fn(String),
) -> Result<String, Error> {
    let summary = LogSummary::read(log).await?;
    let output_key = EventSourceKey::new(TRANSFORMER).expect("a valid constant key");
    let total = summary.key(&output_key).canonical;
    let leader = summary
        .writers(&output_key)
        .into_iter()
        .find_map(|(writer, tally)| replicas.iter().position(|r| r.replica_id == writer).map(|at| (at, tally.won)));
    let (at, won) = leader.unwrap_or((0, 0));
    let mut replica = replicas.remove(at);
    replica.child.start_kill().map_err(|e| anyhow!("cannot kill {} ({e})", replica.name))?;
    let _ = replica.child.wait().await;
    stamp(format!(
        "SIGKILL {} (pid {}), which had won the most races so far ({won} of {total} reports); publishing goes on",
        replica.replica_id, replica.pid
    ));
    Ok(replica.replica_id)
}

/// Follows the engine's canonical reports and dead letters until told to stop.
async fn watch_outputs(
    log: Arc<KafkaLog>,
    seen: Arc<Mutex<Seen>>,
    stop: Shutdown,
    schemas: Option<Arc<SchemaRegistry>>,
) -> Result<(), Error> {
    let mut cache = SchemaCache::new();
    let output_key = EventSourceKey::new(TRANSFORMER).expect("a valid constant key");
    let keys = [output_key.clone(), output_key.dead_letters()];
    let mut stream = Pipeline::new(log, "demo-watcher").stream_events(&keys, 0).await?;
    while !stop.is_requested() {
        let Some(canonical) = stream.next_within(Duration::from_millis(50)).await? else { continue };
        let now = Instant::now();
        let mut seen = seen.lock().expect("seen lock");
        if let Some(cause) = canonical.event.cause {
            seen.answered.entry(cause).or_insert(now);
        }
        seen.last_growth = Some(now);
        if canonical.event.key == output_key {
            seen.outputs += 1;
            if seen.trades.len() < TRADES_SHOWN {
                let text = readable(&canonical.event, schemas.as_deref(), &mut cache);
                if let Ok(report) = serde_json::from_str::<Value>(&text) {
                    if report["type"] == "trade" {
                        seen.trades.push(report);
                    }
                }
            }
        }
    }
    Ok(())
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn print_results(
    seen: &Seen,
    summary: &LogSummary,
    letters: &[ReadDeadLetter],
    sent: &[(Offset, Instant)],
    killed: Option<&Kill>,
) {
    println!("\nfirst trades (canonical reports of `{TRANSFORMER}`):");
    for trade in &seen.trades {
        let text = |field: &str| trade[field].as_str().unwrap_or("?").to_string();
        let number = |field: &str| trade[field].as_u64().unwrap_or_default();
        let (verb, preposition) = if text("taker_side") == "sell" { ("sells", "to") } else { ("buys", "from") };
        println!(
            "  #{:<3} {:<5} {verb:<5} {:>2} @ {:<3} {preposition:<4} {:<5}  (taker {}, maker {})",
            number("trade_id"),
            text("taker_account"),
            number("quantity"),
            number("price"),
            text("maker_account"),
            text("taker_order_id"),
            text("maker_order_id")
        );
    }

    let output_key = EventSourceKey::new(TRANSFORMER).expect("a valid constant key");
    let stats = summary.key(&output_key);
    println!(
        "\nraces on `{TRANSFORMER}`: {} canonical reports, {} duplicates dropped, {} divergent; who wrote each canonical copy:",
        stats.canonical, stats.duplicates, stats.divergent
    );
    let writers = summary.writers(&output_key);
    let width = writers.iter().map(|(w, _)| w.len()).max().unwrap_or(0).max(7);
    println!("  {:<width$}  {:>6}  {:>6}  {:>6}", "replica", "won", "share", "lost");
    for (writer, tally) in &writers {
        let share = 100.0 * tally.won as f64 / stats.canonical.max(1) as f64;
        let note = match killed {
            Some(kill) if &kill.replica_id == writer => format!("  (SIGKILLed at {:.1} s)", kill.after.as_secs_f64()),
            _ => String::new(),
        };
        println!("  {writer:<width$}  {:>6}  {share:>5.1}%  {:>6}{note}", tally.won, tally.lost);
    }

    println!();
    for letter in letters {
        match letter {
            (_, _, Ok(letter)) => println!("dead letter: {}", letter.describe()),
            (offset, _, Err(raw)) => println!("dead letter at offset {offset}: {raw}"),
        }
    }
    if letters.is_empty() {
        println!("dead letter: none (unexpected: one order line was malformed)");
    }

    if let Some(Kill { orders_before, after, replica_id }) = killed {
        let latencies = |range: &[(Offset, Instant)]| {
            let mut ms: Vec<f64> = range
                .iter()
                .filter_map(|(offset, at)| {
                    seen.answered
                        .get(offset)
                        .map(|answered| answered.saturating_duration_since(*at).as_secs_f64() * 1000.0)
                })
                .collect();
            ms.sort_by(f64::total_cmp);
            let median = ms.get(ms.len() / 2).copied().unwrap_or_default();
            (ms.last().copied().unwrap_or_default(), median, ms.len())
        };
        let (before, after_kill) = sent.split_at((*orders_before).min(sent.len()));
        let (worst_before, median_before, _) = latencies(before);
        let (worst_after, median_after, answered_after) = latencies(after_kill);
        println!(
            "outputs kept flowing after the kill: {replica_id} died at {:.1} s and the 2 survivors answered all {answered_after} of the {} later orders; \
             order → first report took at most {worst_before:.0} ms before the kill and {worst_after:.0} ms after (median {median_before:.0} ms, {median_after:.0} ms)",
            after.as_secs_f64(),
            after_kill.len()
        );
    }
    println!();
}

/// SIGTERM to every replica, then waits for each to flush and exit 0.
async fn stop_replicas(mut replicas: Vec<Replica>) -> Result<(), Error> {
    for replica in &mut replicas {
        terminate(replica);
    }
    for mut replica in replicas {
        match tokio::time::timeout(STOP_TIMEOUT, replica.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                return Err(anyhow!(
                    "replica {} exited with {status} after SIGTERM; see {}",
                    replica.name,
                    replica.log_path.display()
                ))
            }
            Ok(Err(error)) => return Err(anyhow!("cannot wait for replica {} ({error})", replica.name)),
            Err(_) => {
                let _ = replica.child.start_kill();
                return Err(anyhow!(
                    "replica {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it",
                    replica.name
                ));
            }
        }
    }
    Ok(())
}

/// SIGTERM: the replica flushes what is in flight and exits 0.
#[cfg(unix)]
fn terminate(replica: &mut Replica) {
    // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
    unsafe {
        libc::kill(replica.pid as libc::pid_t, libc::SIGTERM);
    }
}

/// No SIGTERM here (`run` refuses to start): a plain kill.
#[cfg(not(unix))]
fn terminate(replica: &mut Replica) {
    let _ = replica.child.start_kill();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_orders_are_deterministic_json_but_for_one_line() {
        let orders = sample_orders(200);
        assert_eq!(orders, sample_orders(200));
        let broken: Vec<usize> =
            (0..orders.len()).filter(|&i| serde_json::from_slice::<Value>(&orders[i]).is_err()).collect();
        assert_eq!(broken, [120]);
        let kinds = |kind: &str| {
            orders.iter().filter(|o| String::from_utf8_lossy(o).contains(&format!("\"type\":\"{kind}\""))).count()
        };
        assert!(kinds("limit") > 100 && kinds("market") > 10 && kinds("cancel") > 10);
    }
}
