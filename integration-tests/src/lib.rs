//! Shared helpers for tests against a real Kafka broker.
//!
//! The broker comes from `KAFKA_BOOTSTRAP` (the README's test command starts one and sets
//! it), or from testcontainers where a Docker engine runs. With neither, tests fail loudly
//! with the command that starts a broker: never a silent skip.

pub mod cluster;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use competing_transformers::record::Record;
use competing_transformers::EventSourceKey;
use competing_transformers_kafka::admin::create_topic;
use competing_transformers_kafka::log::conformance::Backend;
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig, Pipeline, WriteMode};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::TopicPartitionList;
use tokio::sync::OnceCell;

static BOOTSTRAP: OnceCell<String> = OnceCell::const_new();
static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Transaction timeout for transactional logs in tests: short, so a dead writer's open
/// transaction stops blocking readers soon.
pub const TEST_TRANSACTION_TIMEOUT_MS: u32 = 3_000;

/// The broker's bootstrap servers.
pub async fn bootstrap() -> String {
    BOOTSTRAP
        .get_or_init(|| async {
            if let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP") {
                return servers;
            }
            if docker_available() {
                return start_container().await;
            }
            panic!(
                "no Kafka broker: set KAFKA_BOOTSTRAP=host:port, or run the tests with `scripts/test.sh`, which starts one (scripts/kafka.sh start)"
            );
        })
        .await
        .clone()
}

fn docker_available() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn start_container() -> String {
    use testcontainers_modules::kafka::apache::Kafka;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::ImageExt;
    // One broker per test process, kept for the process's lifetime. Transactions need the
    // transaction log's replication factor at 1 on a single node.
    let container = Kafka::default()
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .start()
        .await
        .expect("starting Kafka with testcontainers failed");
    let port =
        container.get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT).await.expect("kafka port");
    Box::leak(Box::new(container));
    format!("127.0.0.1:{port}")
}

/// Waits until `key` has `count` canonical events, or fails after `limit`.
pub async fn wait_for_count(reader: &Pipeline<KafkaLog>, key: &EventSourceKey, count: u64, limit: Duration) {
    let start = std::time::Instant::now();
    loop {
        let now = reader.count(key).await.unwrap();
        if now >= count {
            return;
        }
        assert!(start.elapsed() < limit, "`{key}` has {now} canonical events after {limit:?}, expected {count}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A topic name no other test or run uses.
pub fn unique_topic(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{test}-{}-{nanos}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// Creates a fresh log topic for `test` and returns its config (record-group mode).
pub async fn fresh_log_config(test: &str) -> KafkaLogConfig {
    let config = KafkaLogConfig::new(bootstrap().await, unique_topic(test));
    create_topic(&config).await.expect("creating the test topic");
    config
}

/// A transactional config for `topic`, with a fresh transactional id.
pub fn transactional(config: &KafkaLogConfig) -> KafkaLogConfig {
    let mut config = config.clone();
    config.mode = WriteMode::Transactional {
        transactional_id: unique_topic("txn"),
        transaction_timeout_ms: TEST_TRANSACTION_TIMEOUT_MS,
    };
    config
}

/// A raw rdkafka producer on the broker, for writing what the framework never would.
pub async fn raw_producer(extra: &[(&str, &str)]) -> FutureProducer {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap().await);
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("raw producer")
}

/// A raw rdkafka consumer of partition 0 of `topic` from its beginning, in a group of its
/// own, for reading what the framework wrote as any Kafka tool would.
pub async fn raw_consumer(topic: &str, extra: &[(&str, &str)]) -> StreamConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap().await)
        .set("group.id", unique_topic("raw-reader"))
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let consumer: StreamConsumer = config.create().expect("raw consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).expect("a valid assignment");
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// The Kafka log, in one write mode, as a conformance backend.
pub struct KafkaBackend {
    transactional: bool,
}

impl KafkaBackend {
    /// Record groups: the default mode.
    pub fn record_groups() -> Self {
        Self { transactional: false }
    }
    /// One event per record in a Kafka transaction.
    pub fn transactional() -> Self {
        Self { transactional: true }
    }
    async fn config(&self, topic: &str) -> KafkaLogConfig {
        let config = KafkaLogConfig::new(bootstrap().await, topic);
        if self.transactional {
            transactional(&config)
        } else {
            config
        }
    }
}

#[async_trait::async_trait]
impl Backend for KafkaBackend {
    type Log = KafkaLog;

    async fn create(&self, test: &str) -> String {
        fresh_log_config(test).await.topic
    }

    async fn connect(&self, id: &str) -> KafkaLog {
        KafkaLog::connect(self.config(id).await).await.expect("connecting to the test log")
    }

    async fn append_and_die(&self, id: &str, record: &Record) {
        if self.transactional {
            // Open a transaction, write part of the group, and vanish without committing:
            // the broker aborts it when its timeout passes.
            let timeout = TEST_TRANSACTION_TIMEOUT_MS.to_string();
            let txn_id = unique_topic("dying");
            let producer = raw_producer(&[("transactional.id", &txn_id), ("transaction.timeout.ms", &timeout)]).await;
            let events = record.events.clone();
            let source = record.source.clone();
            let topic = id.to_string();
            tokio::task::spawn_blocking(move || {
                producer.init_transactions(Duration::from_secs(30)).unwrap();
                producer.begin_transaction().unwrap();
                for event in &events[..events.len() - 1] {
                    let one = Record { source: source.clone(), writer: "dying".into(), events: vec![event.clone()] }
                        .encode()
                        .unwrap();
                    let _ =
                        producer.send_result(FutureRecord::to(&topic).partition(0).key(&one.key).payload(&one.value));
                }
                producer.flush(Duration::from_secs(10)).unwrap();
                // A crash: no commit, no abort, no clean close.
                std::mem::forget(producer);
            })
            .await
            .unwrap();
        } else {
            // The record is handed to the producer, which is dropped at once: it lands whole
            // or not at all.
            let producer = raw_producer(&[("enable.idempotence", "true")]).await;
            let encoded = record.encode().unwrap();
            let _ = producer.send_result(FutureRecord::to(id).partition(0).key(&encoded.key).payload(&encoded.value));
            drop(producer);
        }
    }

    async fn append_raw(&self, id: &str, value: Vec<u8>) {
        let producer = raw_producer(&[]).await;
        producer
            .send(FutureRecord::<(), _>::to(id).partition(0).payload(&value), Duration::from_secs(10))
            .await
            .expect("raw append");
    }
}

/// The schema registry's base URL, from `SCHEMA_REGISTRY_URL` (set by `scripts/test.sh`,
/// which starts Apicurio Registry with `scripts/registry.sh start`). Never a silent skip.
pub fn schema_registry_url() -> String {
    match std::env::var(competing_transformers_kafka::schema_registry::SCHEMA_REGISTRY_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "no schema registry: set SCHEMA_REGISTRY_URL=http://host:port/apis/ccompat/v7, or run the tests with `scripts/test.sh`, which starts one (scripts/registry.sh start)"
        ),
    }
}

/// A client of the test schema registry.
pub fn schema_registry() -> std::sync::Arc<competing_transformers_kafka::schema_registry::SchemaRegistry> {
    let url = schema_registry_url();
    std::sync::Arc::new(
        competing_transformers_kafka::schema_registry::SchemaRegistry::new(&url)
            .unwrap_or_else(|e| panic!("SCHEMA_REGISTRY_URL: {e}")),
    )
}

/// The repository's root.
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Runs interop/reader.py with `args` in the project's Python environment; its standard
/// output.
pub fn python_reader(args: &[&str]) -> String {
    use std::process::Command;
    let python = Command::new("bash").arg(format!("{ROOT}/scripts/python-env.sh")).output().unwrap();
    assert!(python.status.success(), "scripts/python-env.sh failed: {}", String::from_utf8_lossy(&python.stderr));
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    let output = Command::new(&python).arg(format!("{ROOT}/interop/reader.py")).args(args).output().unwrap();
    assert!(output.status.success(), "reader.py failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A snapshot of the DET `engine` at `position` whose state is `state_bytes` of noise from
/// `seed` (base64's alphabet, so the field is valid as it is).
pub fn engine_snapshot(
    position: competing_transformers::Offset,
    state_bytes: usize,
    seed: u64,
) -> competing_transformers::snapshot::Snapshot {
    use competing_transformers::snapshot::{Snapshot, Streams, SNAPSHOT_FORMAT};
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = seed | 1;
    let state = (0..state_bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect();
    Snapshot {
        format: SNAPSHOT_FORMAT,
        transformer: "engine".into(),
        position,
        inputs: position,
        state_base64: state,
        input_counts: vec![("orders".into(), position)],
        next_index: Streams { output: position, dead_letters: 0 },
        own_counts: Streams { output: position, dead_letters: 0 },
        pending: Vec::new(),
    }
}

/// Every record of the log, as the Rust reader fetches them.
pub async fn fetch_all(config: &KafkaLogConfig) -> Vec<competing_transformers::record::FetchedRecord> {
    use competing_transformers_kafka::EventLog;
    let log = KafkaLog::connect(config.clone()).await.unwrap();
    let end = log.end_offset().await.unwrap();
    let mut cursor = log.cursor(0).await.unwrap();
    let mut records = Vec::new();
    while cursor.position() < end {
        records.extend(cursor.next_batch(Duration::from_secs(1)).await.unwrap());
    }
    records
}

/// The Rust reader's verdicts on `records` through `rule`, in the shape interop/reader.py
/// prints them (its `unauthorized` counts only when the rule has a trust table, as there).
pub fn rust_verdicts(
    records: &[competing_transformers::record::FetchedRecord],
    rule: &mut competing_transformers::CanonicalRule,
) -> serde_json::Value {
    use competing_transformers::record::RecordView;
    use competing_transformers::Verdict;
    use serde_json::json;
    let mut canonical = Vec::new();
    for fetched in records {
        let decoded = RecordView::parse_fetched(fetched);
        let Ok(verdicts) = rule.apply_view(fetched.offset, decoded.as_ref()) else { continue };
        for (event, verdict) in decoded.expect("judged, so decoded").events.iter().zip(verdicts) {
            if let Verdict::Canonical { index } = verdict {
                canonical.push(json!([fetched.offset, event.key, index, event.digest.to_string()]));
            }
        }
    }
    let trusted = !rule.trust().is_empty();
    let keys: serde_json::Map<String, serde_json::Value> = rule
        .all_stats()
        .into_iter()
        .map(|(key, s)| {
            let mut stats = json!({"canonical": s.canonical, "duplicates": s.duplicates, "divergent": s.divergent, "rejected": s.rejected});
            if trusted {
                stats["unauthorized"] = json!(s.unauthorized);
            }
            (key.to_string(), stats)
        })
        .collect();
    json!({
        "malformed": rule.malformed(),
        "rejected_on_unseen_keys": rule.rejected_on_unseen_keys(),
        "keys": keys,
        "canonical": canonical
    })
}

/// The ledger's balances and entry count after `commands`, computed without the log: what a
/// replica's outputs and a projection must come to.
pub fn ledger_reference(commands: &[serde_json::Value]) -> (std::collections::BTreeMap<String, i64>, u64) {
    let mut ledger = ledger::Ledger::new();
    let mut entries = 0;
    for command in commands {
        if let Ok(command) = serde_json::from_value::<ledger::Command>(command.clone()) {
            ledger.execute(command).expect("valid commands decide");
            entries += 1;
        }
    }
    (ledger.balances().iter().map(|(a, b)| (a.clone(), *b as i64)).collect(), entries)
}

/// The `transformer-launcher` binary next to the running test's (`cargo test --workspace`
/// builds it), or a panic naming the command that builds it.
pub fn launcher_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("transformer-launcher");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p bundled-transformers --bin transformer-launcher`",
        path.display()
    );
    path
}
