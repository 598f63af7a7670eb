//! Snapshots on the real broker: a matching engine replica takes snapshots as it goes and
//! stores them beside the log; a replica started later resumes from the newest, transforms
//! only the inputs after it, and the canonical stream is what a lone replica replaying the
//! log from offset 0 writes.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::replica::{run_to_end, ReplicaConfig};
use competing_transformers::{Event, EventSourceKey, MemoryLog};
use competing_transformers_kafka::admin::create_snapshot_topics;
use competing_transformers_kafka::snapshot_store::{KafkaSnapshotStore, Snapshots};
use competing_transformers_kafka::{
    run_replica_with, KafkaLog, KafkaLogConfig, LogError, Pipeline, ReplicaError, ReplicaServices, ReplicaStatus,
    ShutdownTrigger,
};
use integration_tests::fresh_log_config;
use matching_engine::MatchingEngine;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Order `i`: buys and sells crossing now and then, so the book holds state.
fn order(i: u64) -> Event {
    let side = if i.is_multiple_of(3) { "sell" } else { "buy" };
    let payload = serde_json::json!({"type": "limit", "order_id": format!("o{i}"), "account": "a",
        "side": side, "price": 100 + i % 5, "quantity": 1 + i % 4});
    Event::new(
        key("orders"),
        None,
        None,
        1_700_000_000_000 + i as i64,
        "application/json",
        payload.to_string().into_bytes(),
    )
}

async fn publish(config: &KafkaLogConfig, range: std::ops::Range<u64>) {
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    for i in range {
        source.write(&key("orders"), vec![order(i)]).await.unwrap();
    }
}

/// The engine's outputs for orders `0..inputs`, as a lone replica replaying from 0 writes them.
fn reference(inputs: u64) -> Vec<Vec<u8>> {
    let log = MemoryLog::new();
    for i in 0..inputs {
        log.publish(&key("orders"), vec![order(i)]);
    }
    run_to_end(&log, MatchingEngine::new());
    log.canonical(&key("matching-engine")).into_iter().map(|e| e.payload).collect()
}

type Replica =
    (tokio::task::JoinHandle<Result<ReplicaStatus, ReplicaError>>, ShutdownTrigger, watch::Receiver<ReplicaStatus>);

/// Starts replica `id` of the engine, a snapshot every 20 inputs.
async fn start(config: &KafkaLogConfig, services: ReplicaServices, id: &str) -> Replica {
    let mut replica = ReplicaConfig::new(id);
    replica.snapshot_every_inputs = Some(20);
    let shutdown = ShutdownTrigger::new();
    let (status, statuses) = watch::channel(ReplicaStatus::default());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let task =
        tokio::spawn(run_replica_with(log, MatchingEngine::new(), replica, services, shutdown.subscribe(), status));
    (task, shutdown, statuses)
}

/// Runs replica `id` until the engine's output stream holds `outputs` events; its last status.
async fn run_until(config: &KafkaLogConfig, store: &Arc<dyn Snapshots>, id: &str, outputs: u64) -> ReplicaStatus {
    let (task, shutdown, statuses) =
        start(config, ReplicaServices { registry: None, snapshots: Some(store.clone()) }, id).await;
    // The replica's own count of canonical outputs: a reader from offset 0 cannot read a
    // truncated log.
    let started = std::time::Instant::now();
    while statuses.borrow().outputs < outputs {
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", statuses.borrow());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the last snapshot reach the store.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.request();
    tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().expect("no divergence")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_resumes_from_a_stored_snapshot_and_writes_what_a_replay_from_zero_writes() {
    let config = fresh_log_config("snapshots-resume").await;
    create_snapshot_topics(&config).await.unwrap();
    let store: Arc<dyn Snapshots> = Arc::new(KafkaSnapshotStore::connect(&config).await.unwrap());

    let want = reference(150);
    publish(&config, 0..100).await;
    let first = run_until(&config, &store, "first", reference(100).len() as u64).await;
    assert_eq!(first.stats.inputs_processed, 100);
    let newest = store.manifests("matching-engine").await.unwrap();
    assert_eq!(newest.first().map(|m| m.manifest.inputs), Some(100), "{newest:?}");

    publish(&config, 100..150).await;
    let second = run_until(&config, &store, "second", want.len() as u64).await;
    assert_eq!(second.stats.inputs_processed, 50, "only the inputs after the snapshot");

    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config).await.unwrap()), "check");
    let mut stream = reader.stream_events(&[key("matching-engine")], 0).await.unwrap();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(stream.next_within(Duration::from_secs(10)).await.unwrap().expect("an output").event.payload);
    }
    assert_eq!(got, want, "byte for byte what a replay from offset 0 writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_truncated_log_a_replica_with_a_snapshot_goes_on_and_one_without_is_told_the_fix() {
    let config = fresh_log_config("snapshots-truncated").await;
    create_snapshot_topics(&config).await.unwrap();
    let store: Arc<dyn Snapshots> = Arc::new(KafkaSnapshotStore::connect(&config).await.unwrap());
    publish(&config, 0..60).await;
    run_until(&config, &store, "first", reference(60).len() as u64).await;
    let position = store.manifests("matching-engine").await.unwrap()[0].manifest.position;

    // Retention deletes everything before the snapshot.
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &config.bootstrap_servers).create().unwrap();
    let mut before = TopicPartitionList::new();
    before.add_partition_offset(&config.topic, 0, KafkaOffset::Offset(position as i64)).unwrap();
    admin.delete_records(&before, &AdminOptions::new()).await.unwrap();
    publish(&config, 60..80).await;

    // A reader from offset 0 is told, in one sentence, not left with librdkafka's code.
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let error = reader.count(&key("orders")).await.unwrap_err();
    assert!(matches!(error, LogError::Truncated { offset: 0, .. }), "{error}");
    assert!(error.to_string().contains("its older records were deleted"), "{error}");

    let (without, _, _) = start(&config, ReplicaServices::default(), "no-snapshot").await;
    let error = tokio::time::timeout(Duration::from_secs(20), without).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(error, ReplicaError::Truncated { needed: 0, start, .. } if start == position), "{error}");
    assert!(error.to_string().contains("store snapshots beside the log"), "{error}");

    let second = run_until(&config, &store, "second", reference(80).len() as u64).await;
    assert_eq!(second.stats.inputs_processed, 20, "from the snapshot on");
}
