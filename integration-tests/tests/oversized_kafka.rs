//! An input too large to copy whole into a dead letter, on the real broker: two replicas of
//! the matching engine write one dead letter that fits (a prefix of the input, its size and
//! its SHA-256), answer the next order, and stop when asked. Before, the dead letter was over
//! the producer's size limit and each replica re-sent it in a hot loop, for ever.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::dead_letter::{DeadLetter, Reason, PAYLOAD_KEPT_BYTES_MAX};
use competing_transformers::replica::{run_to_end, ReplicaConfig};
use competing_transformers::{Event, EventSourceKey, MemoryLog};
use competing_transformers_kafka::{run_replica, KafkaLog, Pipeline, ReplicaError, ReplicaStatus, ShutdownTrigger};
use integration_tests::{fresh_log_config, wait_for_count};
use matching_engine::MatchingEngine;
use tokio::sync::watch;

/// The size of the undecodable input: legal under the broker's 1 MB record limit, too large
/// for a dead letter to copy whole (base64 makes it ~1 MB).
const POISON_BYTES: usize = 750_000;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn order(id: &str, side: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"type": "limit", "order_id": id, "account": "alice", "side": side,
        "price": 100, "quantity": 5}))
    .unwrap()
}

/// Not JSON, deterministic, the size of [`POISON_BYTES`].
fn poison() -> Vec<u8> {
    (0..POISON_BYTES).map(|i| b"<not json at all>"[i % 17]).collect()
}

fn order_event(payload: &[u8], i: usize) -> Event {
    Event::new(key("orders"), None, None, 1_700_000_000_000 + i as i64, "application/json", payload.to_vec())
}

/// A dead letter with its input's offset cleared: where the input sits differs between the
/// broker and the reference run, nothing else may.
fn placeless(payload: &[u8]) -> DeadLetter {
    let mut letter: DeadLetter = serde_json::from_slice(payload).unwrap();
    letter.input.offset = 0;
    letter
}

type Replica = (tokio::task::JoinHandle<Result<ReplicaStatus, ReplicaError>>, ShutdownTrigger);

fn start(log: KafkaLog, id: &str) -> Replica {
    let shutdown = ShutdownTrigger::new();
    let (status, _) = watch::channel(ReplicaStatus::default());
    let task = tokio::spawn(run_replica(
        Arc::new(log),
        MatchingEngine::new(),
        ReplicaConfig::new(id),
        shutdown.subscribe(),
        status,
    ));
    (task, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_750_kb_poison_input_is_one_dead_letter_that_fits_and_the_next_order_is_answered() {
    let config = fresh_log_config("oversized").await;
    let inputs = [order("o1", "sell"), poison(), order("o2", "buy")];
    let output = key("matching-engine");
    let dead_letters = output.dead_letters();
    let reference = MemoryLog::new();
    for (i, payload) in inputs.iter().enumerate() {
        reference.publish(&key("orders"), vec![order_event(payload, i)]);
    }
    run_to_end(&reference, MatchingEngine::new());
    let want: Vec<Vec<u8>> = reference.canonical(&output).into_iter().map(|e| e.payload).collect();
    let want_letter = placeless(&reference.canonical(&dead_letters)[0].payload);

    let mut replicas = Vec::new();
    for id in ["oversized-1", "oversized-2"] {
        replicas.push(start(KafkaLog::connect(config.clone()).await.unwrap(), id));
    }
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    for (i, payload) in inputs.iter().enumerate() {
        source.write(&key("orders"), vec![order_event(payload, i)]).await.unwrap();
    }

    // The order after the poison is answered: every output of the reference is canonical.
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    wait_for_count(&reader, &output, want.len() as u64, Duration::from_secs(60)).await;
    let mut stream = reader.stream_events(std::slice::from_ref(&output), 0).await.unwrap();
    let got = stream.collect(want.len() + 1, Duration::from_secs(2)).await.unwrap();
    assert!(got.into_iter().map(|e| e.event.payload).eq(want.iter().cloned()), "outputs differ from a lone replica's");

    // Exactly one canonical dead letter, the reference's byte for byte but for the offset.
    wait_for_count(&reader, &dead_letters, 1, Duration::from_secs(30)).await;
    let mut stream = reader.stream_events(std::slice::from_ref(&dead_letters), 0).await.unwrap();
    let letters = stream.collect(2, Duration::from_secs(2)).await.unwrap();
    assert_eq!(letters.len(), 1, "two replicas, one canonical dead letter");
    let letter = placeless(&letters[0].event.payload);
    assert_eq!(letter, want_letter, "the canonical dead letter is a lone replica's");
    assert_eq!(letter.reason, Reason::Decode);
    assert_eq!((letter.input.key.as_str(), letter.input.index), ("orders", 1));
    assert!(letter.input.payload_truncated);
    assert_eq!(letter.input.payload_bytes, Some(POISON_BYTES as u64));
    // The digest's value is checked in the core's tests; here: present, and the reference's.
    assert!(letter.input.payload_sha256.as_ref().is_some_and(|h| h.len() == 64), "{:?}", letter.input.payload_sha256);
    assert_eq!(letter.kept_payload().unwrap(), &inputs[1][..PAYLOAD_KEPT_BYTES_MAX]);
    let raw: DeadLetter = serde_json::from_slice(&letters[0].event.payload).unwrap();
    println!("{} ({} bytes on the log)", raw.describe(), letters[0].event.payload.len());

    // Both replicas stop when asked, having written a few records, not a hot loop's worth.
    for (task, shutdown) in replicas {
        shutdown.request();
        let status = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the replica stops on shutdown")
            .unwrap()
            .expect("the replica ran without error");
        println!("{}: {:?}", status.replica_id, status.stats);
        assert_eq!(status.stats.delivery_failures, 0, "no write failed");
        assert!(status.stats.records_written <= 6, "{} records written", status.stats.records_written);
        assert_eq!(status.stats.dead_letters, 1);
    }
}
