//! The readers across pipelines (issue 16, item 2): on a log of 3 pipelines, each with its own
//! commands and a ledger replica of its own, `tail`, `status`, `dead-letters list`, `redrive`
//! and `export` read every pipeline, say which pipeline each line is of, and nothing crosses
//! from one pipeline to another; the ledger projection over 2 pipelines, restarted mid-way,
//! comes to the reference balances of both pipelines' commands; a projection schema of the
//! single-pipeline layout is migrated in place.
//!
//! The operator commands run as the `transformer-launcher` binary next to this test's (build
//! it with `cargo build -p bundled-transformers --bin transformer-launcher`). PostgreSQL
//! comes from `DATABASE_URL`.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::replica::ReplicaConfig;
use competing_transformers::shard::Pipelines;
use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::{
    admin, run_replica, EventLog, KafkaLog, KafkaLogConfig, Pipeline, ReplicaStatus, ShutdownTrigger,
};
use integration_tests::{bootstrap, ledger_reference, unique_topic};
use ledger::{Ledger, LEDGER_KEY, TRANSFERS_KEY};
use ledger_projection::{Projection, RunOptions};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use serde_json::{json, Value};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// A fresh log of `pipelines` pipelines (each topic with a partition per pipeline).
async fn fresh_pipelines(test: &str, pipelines: u32) -> KafkaLogConfig {
    let mut config = KafkaLogConfig::new(bootstrap().await, unique_topic(test));
    config.pipelines = Pipelines::new(pipelines).unwrap();
    admin::create_topic(&config).await.unwrap();
    config
}

/// Pipeline `p`'s commands `first..first + count`: it opens its own accounts (names unique
/// across pipelines), then moves money between them; with `broken`, one command the ledger
/// dead-letters.
fn commands(p: u32, first: u64, count: u64, broken: bool) -> Vec<Value> {
    let mut commands: Vec<Value> = (first..first + count)
        .map(|i| {
            if i < 3 {
                json!({"type": "open", "account": format!("p{p}-a{i}"), "initial": 1000 * (p as u64 + 1)})
            } else {
                let (from, to) = (i % 3, (i + 1) % 3);
                json!({"type": "transfer", "id": format!("p{p}-t{i}"), "from": format!("p{p}-a{from}"), "to": format!("p{p}-a{to}"), "amount": 1 + i % 7})
            }
        })
        .collect();
    if broken {
        commands.push(json!({"type": "transfer", "id": format!("p{p}-broken"), "from": format!("p{p}-a0")}));
    }
    commands
}

/// Writes `commands` on pipeline `log`'s `transfers`.
async fn publish(log: &Arc<KafkaLog>, commands: &[Value]) {
    let source = Pipeline::new(log.clone(), "source");
    let transfers = key(TRANSFERS_KEY);
    for command in commands {
        source.write(&transfers, vec![Event::json(transfers.clone(), 1, command)]).await.unwrap();
    }
}

/// Runs a ledger replica on pipeline `log` until it has answered `inputs` commands.
async fn run_ledger(log: &Arc<KafkaLog>, id: &str, inputs: u64) {
    let shutdown = ShutdownTrigger::new();
    let (status, _statuses) = watch::channel(ReplicaStatus::default());
    let task =
        tokio::spawn(run_replica(log.clone(), Ledger::new(), ReplicaConfig::new(id), shutdown.subscribe(), status));
    let reader = Pipeline::new(log.clone(), "reader");
    let ledger = key(LEDGER_KEY);
    let started = Instant::now();
    while reader.count(&ledger).await.unwrap() + reader.count(&ledger.dead_letters()).await.unwrap() < inputs {
        assert!(started.elapsed() < Duration::from_secs(60), "the ledger of `{id}` answered too few");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.request();
    tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().expect("no divergence");
}

/// The `transformer-launcher` binary next to this test's, on `config`'s log.
fn launcher(config: &KafkaLogConfig, args: &[&str]) -> Output {
    Command::new(integration_tests::launcher_binary())
        .args(args)
        .args(["--topic", &config.topic, "--pipeline-count", &config.pipelines.count().to_string()])
        .env("KAFKA_BOOTSTRAP", &config.bootstrap_servers)
        .env_remove("TRANSFORMER_LAUNCHER_CONFIG")
        .env_remove("KAFKA_PIPELINES")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The JSON lines of a successful command.
fn json_lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", text(output));
    String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Each pipeline's payloads of `tail`'s JSON lines, in order.
fn payloads_by_pipeline(lines: &[Value]) -> BTreeMap<u64, Vec<Value>> {
    let mut by: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
    for line in lines {
        by.entry(line["pipeline"].as_u64().unwrap()).or_default().push(line["payload"].clone());
    }
    by
}

/// Each of the first `partitions` partitions' records of `topic` (read committed): payloads
/// as JSON, in order.
async fn exported(topic: &str, partitions: i32) -> BTreeMap<i32, Vec<Value>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap().await)
        .set("group.id", unique_topic("pipelines-export-check"))
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
        let message = message.unwrap();
        records
            .entry(message.partition())
            .or_default()
            .push(serde_json::from_slice(message.payload().unwrap()).unwrap());
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reader_reads_each_pipeline_on_its_own_and_says_which() {
    let config = fresh_pipelines("pipelines-readers", 3).await;
    let mut logs = Vec::new();
    let mut written = BTreeMap::new();
    for p in 0..3u32 {
        let log = Arc::new(KafkaLog::connect(config.pipeline(p)).await.unwrap());
        let commands = commands(p, 0, 4 + 2 * u64::from(p), p == 1);
        publish(&log, &commands).await;
        run_ledger(&log, &format!("ledger-p{p}"), commands.len() as u64).await;
        written.insert(u64::from(p), commands);
        logs.push(log);
    }

    // `tail`: every pipeline's events, each with its pipeline; one pipeline with --pipeline.
    let tail = json_lines(&launcher(&config, &["tail", TRANSFERS_KEY, "--from-start", "--output", "json"]));
    assert_eq!(payloads_by_pipeline(&tail), written, "each pipeline's commands, in order, under its number");
    let one = json_lines(&launcher(&config, &["tail", TRANSFERS_KEY, "--output", "json", "--pipeline", "2"]));
    assert_eq!(
        payloads_by_pipeline(&one),
        written.iter().filter(|(p, _)| **p == 2).map(|(p, c)| (*p, c.clone())).collect()
    );
    let lines = launcher(&config, &["tail", TRANSFERS_KEY, "--from-start"]);
    assert!(lines.status.success(), "{}", text(&lines));
    let stdout = String::from_utf8_lossy(&lines.stdout).to_string();
    for p in 0..3 {
        let count = stdout.lines().filter(|line| line.starts_with(&format!("p{p} "))).count();
        assert_eq!(count, written[&p].len(), "{stdout}");
    }
    let past = launcher(&config, &["tail", TRANSFERS_KEY, "--pipeline", "3"]);
    assert_eq!(past.status.code(), Some(2), "{}", text(&past));

    // `status`: a document per pipeline, and the totals.
    let status = launcher(&config, &["status", "--output", "json"]);
    assert!(status.status.success(), "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let canonical = |document: &Value, wanted: &str| {
        document["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key"] == wanted)
            .map_or(0, |k| k["canonical"].as_u64().unwrap())
    };
    for p in 0..3 {
        let document = &status["pipelines"][p as usize];
        assert_eq!(document["pipeline"], p);
        assert_eq!(canonical(document, TRANSFERS_KEY), written[&p].len() as u64, "{document}");
        assert_eq!(canonical(document, "ledger.dead-letters"), u64::from(p == 1), "{document}");
    }
    let total: usize = written.values().map(Vec::len).sum();
    assert_eq!(canonical(&status, TRANSFERS_KEY), total as u64);
    let status_text = launcher(&config, &["status"]);
    assert!(String::from_utf8_lossy(&status_text.stdout).contains("total over 3 pipelines"), "{}", text(&status_text));

    // `dead-letters list`: the one dead letter, in pipeline 1.
    let letters =
        json_lines(&launcher(&config, &["dead-letters", "list", "--transformer", LEDGER_KEY, "--output", "json"]));
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["pipeline"], 1);
    assert_eq!(letters[0]["index"], 0);

    // `redrive`: into pipeline 1 only, once; --index needs --pipeline among several.
    let ambiguous = launcher(&config, &["dead-letters", "redrive", "--transformer", LEDGER_KEY, "--index", "0"]);
    assert_eq!(ambiguous.status.code(), Some(2), "{}", text(&ambiguous));
    let redrive = launcher(&config, &["dead-letters", "redrive", "--transformer", LEDGER_KEY, "--all"]);
    assert!(redrive.status.success(), "{}", text(&redrive));
    assert!(String::from_utf8_lossy(&redrive.stdout).starts_with("p1 dead letter 0"), "{}", text(&redrive));
    let again =
        launcher(&config, &["dead-letters", "redrive", "--transformer", LEDGER_KEY, "--pipeline", "1", "--index", "0"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already redriven"), "{}", text(&again));
    for (p, log) in logs.iter().enumerate() {
        let count = Pipeline::new(log.clone(), "check").count(&key(TRANSFERS_KEY)).await.unwrap();
        let want = written[&(p as u64)].len() as u64 + u64::from(p == 1);
        assert_eq!(count, want, "pipeline {p}: the redrive went into its own pipeline only");
    }
    let redriven = written[&1].last().unwrap().clone();
    written.get_mut(&1).unwrap().push(redriven);

    // `export`: pipeline p into partition p, its offsets committed per partition.
    let target = unique_topic("pipelines-export");
    let export = launcher(&config, &["export", "--keys", TRANSFERS_KEY, "--to", &target]);
    assert!(export.status.success(), "{}", text(&export));
    let by_partition: BTreeMap<u64, Vec<Value>> =
        exported(&target, 3).await.into_iter().map(|(p, records)| (p as u64, records)).collect();
    assert_eq!(by_partition, written, "each pipeline's events in the partition of its number, once");
    let progress: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("export-{target}"))
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for p in 0..3 {
        wanted.add_partition(&config.topic, p);
    }
    let committed = progress.committed_offsets(wanted, Duration::from_secs(10)).unwrap();
    for p in 0..3 {
        let element = committed.find_partition(&config.topic, p).unwrap();
        let end = logs[p as usize].end_offset().await.unwrap() as i64;
        let offset = element.offset().to_raw().unwrap_or(-1);
        assert!(offset > 0 && offset <= end, "pipeline {p}'s progress: {offset} of {end}");
        assert!(element.metadata().contains("\"transfers\""), "its own counts: {}", element.metadata());
    }
    let narrow = unique_topic("pipelines-export-narrow");
    admin::create_topic(&KafkaLogConfig::new(config.bootstrap_servers.clone(), narrow.clone())).await.unwrap();
    let refused = launcher(&config, &["export", "--keys", TRANSFERS_KEY, "--to", &narrow]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("has 1 partition(s) but the log has 3 pipeline(s)"), "{}", text(&refused));
}

fn database_url() -> String {
    std::env::var("DATABASE_URL").expect("no PostgreSQL: set DATABASE_URL, or run the tests with scripts/test.sh")
}

fn schema_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}_{nanos}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_of_two_pipelines_restarted_mid_way_comes_to_both_pipelines_balances() {
    let (url, schema) = (database_url(), schema_name("pipelines"));
    let config = fresh_pipelines("pipelines-projection", 2).await;
    let logs: Vec<Arc<KafkaLog>> = vec![
        Arc::new(KafkaLog::connect(config.pipeline(0)).await.unwrap()),
        Arc::new(KafkaLog::connect(config.pipeline(1)).await.unwrap()),
    ];
    let mut all = Vec::new();
    let options = || RunOptions { batch_events_max: 3, ..RunOptions::default() };
    for (round, (first, count)) in [(0, 11), (11, 9)].into_iter().enumerate() {
        for (p, log) in logs.iter().enumerate() {
            let commands = commands(p as u32, first, count + p as u64, p == 0 && round == 0);
            publish(log, &commands).await;
            let answered = Pipeline::new(log.clone(), "check");
            let before = answered.count(&key(LEDGER_KEY)).await.unwrap()
                + answered.count(&key(LEDGER_KEY).dead_letters()).await.unwrap();
            run_ledger(log, &format!("ledger-{round}-p{p}"), before + commands.len() as u64).await;
            all.extend(commands);
        }
        // A projection per round: the second resumes from each pipeline's stored position.
        let mut projection = Projection::connect_pipelines(&url, &schema, &config.topic, 2).await.unwrap();
        projection.run_pipelines(logs.clone(), options()).await.unwrap();
    }
    let projection = Projection::connect_pipelines(&url, &schema, &config.topic, 2).await.unwrap();
    let (balances, entries) = ledger_reference(&all);
    assert_eq!(projection.balances().await.unwrap(), balances);
    let positions = projection.stored_positions().await.unwrap();
    assert_eq!(positions.len(), 2);
    assert_eq!(positions.iter().map(|p| p.events_applied).sum::<u64>(), entries, "every entry applied once");
    assert!(positions.iter().all(|p| p.next_index > 0 && p.resume_count.is_some()), "{positions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_pipeline_projection_schema_is_migrated_in_place_as_pipeline_zero() {
    let (url, schema) = (database_url(), schema_name("single_row"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // The layout before pipelines, with a position stored.
    client
        .batch_execute(&format!(
            r#"CREATE SCHEMA "{schema}";
               CREATE TABLE "{schema}".balances (account text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
               CREATE TABLE "{schema}".position (
                   only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
                   log_topic text NOT NULL, next_index bigint NOT NULL, resume_offset bigint NOT NULL,
                   events_applied bigint NOT NULL, resume_count bigint);
               INSERT INTO "{schema}".position (log_topic, next_index, resume_offset, events_applied, resume_count)
                   VALUES ('the-log', 7, 12, 7, 6);
               INSERT INTO "{schema}".balances VALUES ('a', 5);"#
        ))
        .await
        .unwrap();
    let projection = Projection::connect_pipelines(&url, &schema, "the-log", 2).await.unwrap();
    assert!(projection.migrated());
    let positions = projection.stored_positions().await.unwrap();
    assert_eq!((positions[0].next_index, positions[0].resume_offset, positions[0].resume_count), (7, 12, Some(6)));
    assert_eq!((positions[1].next_index, positions[1].events_applied), (0, 0), "a new pipeline starts at 0");
    assert_eq!(projection.balances().await.unwrap(), BTreeMap::from([("a".to_string(), 5)]));
    // Once migrated, connecting again changes nothing.
    let again = Projection::connect(&url, &schema, "the-log").await.unwrap();
    assert!(!again.migrated());
    assert_eq!(again.stored_position().await.unwrap().next_index, 7);
}
