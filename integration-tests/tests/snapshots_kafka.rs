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
    run_replica_with, KafkaLog, KafkaLogConfig, Pipeline, ReplicaServices, ReplicaStatus, ShutdownTrigger,
};
use integration_tests::{fresh_log_config, wait_for_count};
use matching_engine::MatchingEngine;
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

/// Runs replica `id` until the engine's output stream holds `outputs` events; its last status.
async fn run_until(config: &KafkaLogConfig, store: &Arc<dyn Snapshots>, id: &str, outputs: u64) -> ReplicaStatus {
    let mut replica = ReplicaConfig::new(id);
    replica.snapshot_every_inputs = Some(20);
    let services = ReplicaServices { registry: None, snapshots: Some(store.clone()) };
    let shutdown = ShutdownTrigger::new();
    let (status, _) = watch::channel(ReplicaStatus::default());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let task =
        tokio::spawn(run_replica_with(log, MatchingEngine::new(), replica, services, shutdown.subscribe(), status));
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    wait_for_count(&reader, &key("matching-engine"), outputs, Duration::from_secs(60)).await;
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

    let reference = MemoryLog::new();
    for i in 0..150 {
        reference.publish(&key("orders"), vec![order(i)]);
    }
    run_to_end(&reference, MatchingEngine::new());
    let want: Vec<Vec<u8>> = reference.canonical(&key("matching-engine")).into_iter().map(|e| e.payload).collect();
    let outputs_of = |inputs: usize| {
        reference.canonical(&key("matching-engine")).iter().filter(|e| e.cause.unwrap() < inputs as u64).count() as u64
    };

    publish(&config, 0..100).await;
    let first = run_until(&config, &store, "first", outputs_of(100)).await;
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
