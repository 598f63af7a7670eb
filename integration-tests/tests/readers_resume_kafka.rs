//! Every reader other than a replica on a truncated log (issue 12, items 5 and 6): a ledger
//! replica takes snapshots, the log is truncated at one, and the ledger projection and the
//! exporter resume from their stored positions, while `tail`, `status`, `dead-letters list`
//! and `redrive` start from the snapshots: each reads what a read of the untruncated log from
//! offset 0 reads there. A reader with neither gets one sentence naming the fix.
//!
//! PostgreSQL comes from `DATABASE_URL` (`scripts/test.sh` starts one and sets it).

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::replica::ReplicaConfig;
use competing_transformers::{Event, EventSourceKey, Offset};
use competing_transformers_kafka::admin::create_snapshot_topics;
use competing_transformers_kafka::export::{ExportConfig, ExportRunOptions, Exporter};
use competing_transformers_kafka::snapshot_store::{KafkaSnapshotStore, Snapshots};
use competing_transformers_kafka::{
    run_replica_with, EventLog, KafkaLog, KafkaLogConfig, LogError, Pipeline, ReplicaServices, ReplicaStatus, Resume,
    ShutdownTrigger,
};
use competing_transformers_launcher::reading::{kafka_start, read_dead_letters_from, StartFrom};
use competing_transformers_launcher::redrive::redrive_from;
use competing_transformers_launcher::summary::LogSummary;
use competing_transformers_launcher::Error;
use integration_tests::{fresh_log_config, raw_consumer, unique_topic};
use ledger::{Ledger, LEDGER_KEY, TRANSFERS_KEY};
use ledger_projection::{Projection, ProjectionError, RunOptions};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use serde_json::json;
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn database_url() -> String {
    std::env::var("DATABASE_URL").expect("no PostgreSQL: set DATABASE_URL, or run the tests with scripts/test.sh")
}

/// Commands `first..first + count`: opens first, then transfers; every 9th is broken and
/// becomes a dead letter. Written in records of up to 3 commands, with an event of `noise`
/// (a key no DET reads) now and then.
async fn publish(log: &Arc<KafkaLog>, first: u64, count: u64) {
    let source = Pipeline::new(log.clone(), "source");
    let transfers = key(TRANSFERS_KEY);
    let command = |i: u64| {
        if i % 9 == 4 {
            json!({"type": "transfer", "id": format!("t{i}"), "from": "a0"})
        } else if i < 6 {
            json!({"type": "open", "account": format!("a{i}"), "initial": 1000})
        } else {
            json!({"type": "transfer", "id": format!("t{i}"), "from": format!("a{}", i % 6), "to": format!("a{}", (i / 6) % 6), "amount": 1 + i % 50})
        }
    };
    let mut i = first;
    while i < first + count {
        let size = (1 + i % 3).min(first + count - i);
        let events = (i..i + size).map(|n| Event::json(transfers.clone(), n as i64, &command(n))).collect();
        source.write(&transfers, events).await.unwrap();
        if i.is_multiple_of(4) {
            source.write(&key("noise"), vec![Event::json(key("noise"), 0, &json!({"n": i}))]).await.unwrap();
        }
        i += size;
    }
}

/// Runs a ledger replica taking a snapshot every 20 inputs until it has answered `inputs`
/// commands (read from offset 0: the log is whole yet), then lets its last snapshot reach the
/// store and stops it.
async fn run_ledger(config: &KafkaLogConfig, store: &Arc<dyn Snapshots>, id: &str, inputs: u64) {
    let mut replica = ReplicaConfig::new(id);
    replica.snapshot_every_inputs = Some(20);
    let shutdown = ShutdownTrigger::new();
    let (status, statuses) = watch::channel(ReplicaStatus::default());
    let services = ReplicaServices { registry: None, snapshots: Some(store.clone()) };
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let task = tokio::spawn(run_replica_with(log, Ledger::new(), replica, services, shutdown.subscribe(), status));
    let started = Instant::now();
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let ledger = key(LEDGER_KEY);
    while reader.count(&ledger).await.unwrap() + reader.count(&ledger.dead_letters()).await.unwrap() < inputs {
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", statuses.borrow());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.request();
    tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().expect("no divergence");
}

/// The canonical events of `keys` as a reader of the whole log from `start` sees them:
/// offset, key, index, payload.
async fn canonical(log: &Arc<KafkaLog>, keys: &[EventSourceKey], start: Resume) -> Vec<(Offset, String, u64, Vec<u8>)> {
    let end = log.end_offset().await.unwrap();
    let pipeline = Pipeline::resumed(log.clone(), "check", start);
    let mut stream = pipeline.stream_events(keys, 0).await.unwrap();
    let mut events = Vec::new();
    while stream.position() < end {
        if let Some(c) = stream.next_within(Duration::from_millis(500)).await.unwrap() {
            events.push((c.offset, c.event.key.to_string(), c.event.index.unwrap(), c.event.payload));
        }
    }
    while let Some(c) = stream.next_within(Duration::ZERO).await.unwrap() {
        events.push((c.offset, c.event.key.to_string(), c.event.index.unwrap(), c.event.payload));
    }
    events
}

/// Deletes the log's records before `offset`, as retention does.
async fn truncate(config: &KafkaLogConfig, offset: Offset) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create().unwrap();
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(&config.topic, 0, KafkaOffset::Offset(offset as i64)).unwrap();
    admin.delete_records(&before, &AdminOptions::new()).await.unwrap();
}

/// Keys and payloads of every committed record of `topic`.
async fn exported(topic: &str) -> Vec<(String, Vec<u8>)> {
    let consumer = raw_consumer(topic, &[("isolation.level", "read_committed")]).await;
    let mut records = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        let message = message.unwrap();
        records
            .push((String::from_utf8(message.key().unwrap().to_vec()).unwrap(), message.payload().unwrap().to_vec()));
    }
    records
}

async fn export(config: &KafkaLogConfig, log: &Arc<KafkaLog>, target: &str) -> Result<Exporter, LogError> {
    let keys = vec![key(LEDGER_KEY), key(LEDGER_KEY).dead_letters()];
    let mut exporter = Exporter::start(ExportConfig::new(config.clone(), keys, target)).await?;
    exporter.run(log.clone(), ExportRunOptions::default()).await?;
    Ok(exporter)
}

async fn project(
    url: &str,
    schema: &str,
    config: &KafkaLogConfig,
    log: &Arc<KafkaLog>,
) -> Result<Projection, ProjectionError> {
    let mut projection = Projection::connect(url, schema, &config.topic).await?;
    projection.run(log.clone(), RunOptions { batch_events_max: 7, ..RunOptions::default() }).await?;
    Ok(projection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_truncated_log_every_reader_resumes_and_reads_what_a_read_from_zero_reads() {
    let url = database_url();
    let config = fresh_log_config("readers-resume").await;
    create_snapshot_topics(&config).await.unwrap();
    let store: Arc<dyn Snapshots> = Arc::new(KafkaSnapshotStore::connect(&config).await.unwrap());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (resumed, older, fresh) =
        (format!("resume_{nanos}"), format!("resume_old_{nanos}"), format!("resume_fresh_{nanos}"));
    let target = unique_topic("readers-resume-export");

    // Phase 1: 60 commands in two runs, so the outputs of the first 40 come before the cut;
    // the projection and the exporter read them all.
    publish(&log, 0, 40).await;
    run_ledger(&config, &store, "first", 40).await;
    publish(&log, 40, 20).await;
    run_ledger(&config, &store, "first-again", 60).await;
    let cut = store.manifests(LEDGER_KEY).await.unwrap()[0].manifest.position;
    project(&url, &resumed, &config, &log).await.unwrap();
    project(&url, &older, &config, &log).await.unwrap();
    export(&config, &log, &target).await.unwrap();

    // A position row of the older layout, without the count: read from 0 once, then stored.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!(r#"UPDATE "{older}".position SET resume_count = NULL"#)).await.unwrap();

    // Phase 2: 40 more, snapshots after them (the index keeps three per DET: the cut's too).
    publish(&log, 60, 40).await;
    run_ledger(&config, &store, "second", 100).await;
    let projection = project(&url, &older, &config, &log).await.unwrap();
    assert!(projection.stored_position().await.unwrap().resume_count.is_some(), "the older row now has its count");

    // What readers of the whole log from offset 0 see.
    let ledger_keys = [key(LEDGER_KEY), key(LEDGER_KEY).dead_letters()];
    let whole = canonical(&log, &ledger_keys, Resume::origin()).await;
    let whole_status = LogSummary::read(log.as_ref()).await.unwrap();
    let whole_projection = project(&url, &fresh, &config, &log).await.unwrap().balances().await.unwrap();

    // Retention deletes everything before the newest snapshot of phase 1.
    truncate(&config, cut).await;
    assert_eq!(log.start_offset().await.unwrap(), cut);
    let after_cut = |events: &[(Offset, String, u64, Vec<u8>)], key: &EventSourceKey| -> Vec<_> {
        events.iter().filter(|e| e.0 >= cut && e.1 == key.as_str()).cloned().collect()
    };

    // The projection and the exporter resume at their positions, after the cut: not from 0.
    let projection = project(&url, &resumed, &config, &log).await.unwrap();
    assert_eq!(projection.balances().await.unwrap(), whole_projection, "the same balances as from offset 0");
    let exporter = export(&config, &log, &target).await.unwrap();
    assert!(!exporter.resume().is_origin(), "the exporter resumed from its committed counts");
    let want: Vec<(String, Vec<u8>)> = whole.iter().map(|e| (e.1.clone(), e.3.clone())).collect();
    assert_eq!(exported(&target).await, want, "every ledger event exported once, in order");

    // `tail` (every event still on the log, and by default from the newest snapshot).
    let ledger = key(LEDGER_KEY);
    let from_start = kafka_start(&log, "tail", Some(std::slice::from_ref(&ledger)), StartFrom::LogStart).await.unwrap();
    assert_eq!(from_start.position(), cut);
    assert!(from_start.known(&ledger).unwrap().count > 0, "the counts at the cut are the snapshot's, not 0");
    let tail = canonical(&log, std::slice::from_ref(&ledger), from_start).await;
    assert_eq!(tail, after_cut(&whole, &ledger), "the same events at the same indexes");
    let newest = StartFrom::Newest { up_to: Offset::MAX };
    let newest = kafka_start(&log, "tail", Some(std::slice::from_ref(&ledger)), newest).await.unwrap();
    assert!(newest.position() > cut);
    let tail = canonical(&log, std::slice::from_ref(&ledger), newest.clone()).await;
    let since: Vec<_> = whole.iter().filter(|e| e.0 >= newest.position() && e.1 == LEDGER_KEY).cloned().collect();
    assert_eq!(tail, since);

    // `dead-letters list`.
    let dead_letters = key(LEDGER_KEY).dead_letters();
    let keys = std::slice::from_ref(&dead_letters);
    let start = kafka_start(&log, "dead-letters list", Some(keys), StartFrom::LogStart).await.unwrap();
    let letters = read_dead_letters_from(log.clone(), &dead_letters, start).await.unwrap();
    let listed: Vec<(Offset, u64)> = letters.iter().map(|((offset, index, _), _)| (*offset, *index)).collect();
    let want: Vec<(Offset, u64)> = after_cut(&whole, &dead_letters).iter().map(|e| (e.0, e.2)).collect();
    assert!(!want.is_empty() && want[0].1 > 0, "{want:?}");
    assert_eq!(listed, want, "every dead letter still on the log, at its index");

    // `status`: the whole log's counts, since the cut.
    let status =
        LogSummary::read_from(log.as_ref(), kafka_start(&log, "status", None, StartFrom::LogStart).await.unwrap())
            .await
            .unwrap();
    assert_eq!(status.since(), cut);
    for key in [key(LEDGER_KEY), dead_letters.clone(), key(TRANSFERS_KEY)] {
        assert_eq!(status.key(&key).canonical, whole_status.key(&key).canonical, "`{key}`");
    }
    assert_eq!(status.unsummarised().0, ["noise"], "a key no snapshot holds is named, not summarised");

    // `redrive` of a dead letter after the cut: once, with its provenance once.
    let ledger_name = key(LEDGER_KEY);
    let redrive = || {
        let reader = log.clone();
        let start = move |keys: Vec<EventSourceKey>| {
            let log = reader.clone();
            async move { kafka_start(&log, "redrive", Some(&keys), StartFrom::LogStart).await }
        };
        redrive_from(log.clone(), &ledger_name, Some(want[0].1), None, "redriver", start)
    };
    assert_eq!(redrive().await.unwrap().written, 1);
    assert_eq!(redrive().await.unwrap().existing, 1, "found, not written twice");
    let redrives = key("ledger.redrives");
    let provenance = canonical(&log, std::slice::from_ref(&redrives), Resume::at(cut, [(redrives.clone(), 0)])).await;
    assert_eq!(provenance.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_with_no_snapshot_or_position_on_a_truncated_log_is_told_the_fix() {
    let url = database_url();
    let config = fresh_log_config("readers-none").await;
    create_snapshot_topics(&config).await.unwrap();
    let store: Arc<dyn Snapshots> = Arc::new(KafkaSnapshotStore::connect(&config).await.unwrap());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    publish(&log, 0, 40).await;
    run_ledger(&config, &store, "only", 40).await;
    let cut = store.manifests(LEDGER_KEY).await.unwrap()[0].manifest.position;
    let whole = canonical(&log, &[key(LEDGER_KEY)], Resume::origin()).await;
    truncate(&config, cut).await;
    let source = Pipeline::new(log.clone(), "source");
    source.write(&key("noise"), vec![Event::json(key("noise"), 0, &json!({"after": "the cut"}))]).await.unwrap();
    the_commands_say_where_they_read(&config, cut, whole.iter().filter(|e| e.0 >= cut).count());

    // `noise` is in no snapshot: tail, status's line and the others name the fix.
    let noise = [key("noise")];
    let error = kafka_start(&log, "tail", Some(&noise), StartFrom::LogStart).await.unwrap_err();
    assert!(matches!(&error, Error::NoSnapshot { key, start, .. } if key == "noise" && *start == cut), "{error}");
    let sentence = error.to_string();
    assert!(sentence.contains("run a DET that reads or writes `noise` with snapshots on"), "{sentence}");
    assert_eq!(error.exit_code(), 4);

    // A new projection or export has no position: the log's one sentence.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let error = project(&url, &format!("resume_none_{nanos}"), &config, &log).await.err().unwrap();
    assert!(matches!(error, ProjectionError::Log(LogError::Truncated { offset: 0, .. })), "{error}");
    let error = export(&config, &log, &unique_topic("readers-none-export")).await.err().unwrap();
    assert!(matches!(error, LogError::Truncated { offset: 0, .. }), "{error}");
}

/// The `transformer-launcher` binary next to this test's (`cargo test --workspace` builds it).
fn launcher(config: &KafkaLogConfig, args: &[&str]) -> Output {
    Command::new(integration_tests::launcher_binary())
        .args(args)
        .args(["--topic", &config.topic])
        .env("KAFKA_BOOTSTRAP", &config.bootstrap_servers)
        .env_remove("TRANSFORMER_LAUNCHER_CONFIG")
        .output()
        .unwrap()
}

/// The operator commands on a log truncated at `cut`, where `ledger` has `events` events.
fn the_commands_say_where_they_read(config: &KafkaLogConfig, cut: Offset, events: usize) {
    let text = |output: &Output| {
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    };
    let tail = launcher(config, &["tail", LEDGER_KEY, "--from-start"]);
    assert!(tail.status.success(), "{}", text(&tail));
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), events, "{}", text(&tail));
    let noise = launcher(config, &["tail", "noise"]);
    assert_eq!(noise.status.code(), Some(4), "{}", text(&noise));
    assert!(text(&noise).contains("run a DET that reads or writes `noise` with snapshots on"), "{}", text(&noise));
    let status = launcher(config, &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains(&format!("since offset {cut}:")), "{}", text(&status));
    assert!(text(&status).contains("not summarised: `noise`"), "{}", text(&status));
    let letters = launcher(config, &["dead-letters", "list", "--transformer", LEDGER_KEY]);
    assert!(letters.status.success(), "{}", text(&letters));
    let both = launcher(config, &["tail", LEDGER_KEY, "--from-start", "--from", "3"]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both));
}
