//! The exporter on the real broker: canonical events of chosen keys copied to a plain topic
//! exactly once, in order, although exporters die mid-way (a panic after a batch is sent but
//! before its commit; an abort mid-run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::export::{BeforeCommit, ExportConfig, ExportRunOptions, Exporter};
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig, Pipeline};
use integration_tests::{fresh_log_config, raw_consumer, unique_topic};
use rdkafka::message::{Headers, Message};

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// One exported record as read back: key, payload and headers.
#[derive(Debug, PartialEq, Eq)]
struct Exported {
    key: String,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// Every committed record of `topic`, read `read_committed` until nothing new for 3 s.
async fn read_committed(topic: &str) -> Vec<Exported> {
    let consumer = raw_consumer(topic, &[("isolation.level", "read_committed")]).await;
    let mut records = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        let message = message.unwrap();
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        records.push(Exported {
            key: String::from_utf8(message.key().unwrap().to_vec()).unwrap(),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    records
}

fn header<'a>(record: &'a Exported, name: &str) -> &'a str {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no header {name}"))
}

/// Publishes `count` events spread over `orders`, `payments` and `noise`, in records of 1 to
/// 5 events, so batches must respect record boundaries.
async fn publish(config: &KafkaLogConfig, first: usize, count: usize) {
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    let mut i = first;
    while i < first + count {
        let size = 1 + i % 5;
        let name = ["orders", "payments", "noise"][i % 3];
        let events = (i..(i + size).min(first + count))
            .map(|n| Event::json(key(name), n as i64, &serde_json::json!({"n": n, "key": name})))
            .collect::<Vec<_>>();
        i += events.len();
        source.write(&key(name), events).await.unwrap();
    }
}

/// The canonical events of `keys` as the export must hold them: key, payload, index, offset.
async fn canonical(config: &KafkaLogConfig, keys: &[EventSourceKey]) -> Vec<(String, Vec<u8>, u64, u64)> {
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let events = reader.stream_events(keys, 0).await.unwrap().collect(100_000, Duration::from_secs(2)).await.unwrap();
    events.into_iter().map(|c| (c.event.key.to_string(), c.event.payload, c.event.index.unwrap(), c.offset)).collect()
}

fn assert_exactly_once(exported: &[Exported], want: &[(String, Vec<u8>, u64, u64)]) {
    assert_eq!(exported.len(), want.len(), "every canonical event exactly once");
    for (got, (key, payload, index, offset)) in exported.iter().zip(want) {
        assert_eq!((&got.key, &got.payload), (key, payload), "in log order");
        assert_eq!(header(got, "ct.key"), key);
        assert_eq!(header(got, "ct.index"), index.to_string());
        assert_eq!(header(got, "ct.offset"), offset.to_string());
        assert_eq!(header(got, "ct.content-type"), "application/json");
        header(got, "ct.effective-time-ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_exporter_restarts_and_the_target_holds_every_event_exactly_once_in_order() {
    let log_config = fresh_log_config("export").await;
    publish(&log_config, 0, 400).await;
    let keys = vec![key("orders"), key("payments")];
    let target = unique_topic("export-target");
    let mut config = ExportConfig::new(log_config.clone(), keys.clone(), &target);
    config.batch_events_max = 30;
    let log = Arc::new(KafkaLog::connect(log_config.clone()).await.unwrap());

    // Crash 1: the third batch is sent and flushed, then the exporter panics before committing.
    let crash = {
        let (config, log) = (config.clone(), log.clone());
        tokio::spawn(async move {
            let mut exporter = Exporter::start(config).await.unwrap();
            let hook: BeforeCommit = Arc::new(|batch| assert_ne!(batch, 3, "injected crash before commit of batch 3"));
            exporter.run(log, ExportRunOptions { before_commit: Some(hook), ..ExportRunOptions::default() }).await
        })
    };
    assert!(crash.await.unwrap_err().is_panic());

    // Crash 2: a slow exporter aborted mid-run, wherever it is.
    let slow = {
        let (config, log) = (config.clone(), log.clone());
        tokio::spawn(async move {
            let mut exporter = Exporter::start(config).await.unwrap();
            let resumed_at = exporter.position();
            assert!(resumed_at > 0, "the two committed batches are remembered");
            let hook: BeforeCommit = Arc::new(|_| std::thread::sleep(Duration::from_millis(100)));
            exporter.run(log, ExportRunOptions { before_commit: Some(hook), ..ExportRunOptions::default() }).await
        })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    slow.abort();
    let _ = slow.await;

    // Restart: resumes from the stored position and finishes.
    let start = Instant::now();
    let mut exporter = Exporter::start(config.clone()).await.unwrap();
    println!("restart resumes at log offset {} after {:?}", exporter.position(), start.elapsed());
    assert!(exporter.position() > 0);
    let stats = exporter.run(log.clone(), ExportRunOptions::default()).await.unwrap();
    println!("restart exported {stats:?}");

    let want = canonical(&log_config, &keys).await;
    assert!(want.len() > 200);
    let exported = read_committed(&target).await;
    assert_exactly_once(&exported, &want);

    // New events later: a further run exports only those.
    drop(exporter);
    publish(&log_config, 400, 50).await;
    let mut exporter = Exporter::start(config).await.unwrap();
    let more = exporter.run(log, ExportRunOptions::default()).await.unwrap();
    let want = canonical(&log_config, &keys).await;
    assert_eq!(more.events as usize, want.len() - exported.len());
    assert_exactly_once(&read_committed(&target).await, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_under_load_commits_no_position_past_an_unexported_event() {
    let log_config = fresh_log_config("export-stop").await;
    publish(&log_config, 0, 400).await;
    let keys = vec![key("orders"), key("payments")];
    let target = unique_topic("export-stop-target");
    let mut config = ExportConfig::new(log_config.clone(), keys.clone(), &target);
    config.batch_events_max = 10;
    let log = Arc::new(KafkaLog::connect(log_config.clone()).await.unwrap());

    // A source keeps writing while the exporter follows the log; the stop is requested as
    // the third batch commits, when the stream has read far more than the batch holds.
    let writer = tokio::spawn({
        let log_config = log_config.clone();
        async move { publish(&log_config, 400, 200).await }
    });
    let stop = Arc::new(competing_transformers_kafka::ShutdownTrigger::new());
    let hook: BeforeCommit = {
        let stop = stop.clone();
        Arc::new(move |batch| {
            if batch == 3 {
                stop.request();
            }
        })
    };
    let options = ExportRunOptions { follow: true, shutdown: stop.subscribe(), before_commit: Some(hook) };
    let mut exporter = Exporter::start(config.clone()).await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(60), exporter.run(log.clone(), options))
        .await
        .expect("the export stops once asked")
        .unwrap();
    println!("stopped after {stopped:?}");
    drop(exporter);

    // Everything before the committed position is in the target, and nothing after it.
    let exported = read_committed(&target).await;
    let before: Vec<_> =
        canonical(&log_config, &keys).await.into_iter().filter(|(.., offset)| *offset < stopped.position).collect();
    assert_eq!(stopped.events as usize, exported.len());
    assert_exactly_once(&exported, &before);

    // A second run finishes: the target holds every canonical event once, with no gap.
    writer.await.unwrap();
    let mut exporter = Exporter::start(config).await.unwrap();
    assert_eq!(exporter.position(), stopped.position, "the second run resumes at the committed position");
    exporter.run(log, ExportRunOptions::default()).await.unwrap();
    let want = canonical(&log_config, &keys).await;
    assert!(want.len() > 300);
    assert_exactly_once(&read_committed(&target).await, &want);
}
