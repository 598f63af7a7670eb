//! Racing replicas on the real broker: killed, paused, fed poison, and beside a
//! non-deterministic transform. Each test asserts on the canonical streams read back from
//! Kafka.

use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::dead_letter::{DeadLetter, Reason};
use competing_transformers::record::{FetchedRecord, Record};
use competing_transformers::replica::{run_to_end, ReplicaConfig};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Offset, Outputs, Transform, TransformError};
use competing_transformers_kafka::{run_replica, ReplicaError, ReplicaStatus};
use competing_transformers_kafka::{EventLog, LogCursor, LogError};
use competing_transformers_kafka::{KafkaLog, Pipeline, ShutdownTrigger};
use integration_tests::{fresh_log_config, wait_for_count};
use matching_engine::MatchingEngine;
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// A deterministic stream of orders around a mid price, with cancels and market orders.
fn orders(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            let json = match i % 10 {
                7 => serde_json::json!({"type": "market", "order_id": format!("o{i}"), "account": format!("a{}", i % 5), "side": side, "quantity": 1 + i % 4}),
                9 => serde_json::json!({"type": "cancel", "order_id": format!("o{}", i - 3)}),
                _ => serde_json::json!({"type": "limit", "order_id": format!("o{i}"), "account": format!("a{}", i % 5), "side": side,
                        "price": 100 + (i * 7 % 9) as u64 - 4, "quantity": 1 + (i * 3 % 7) as u64}),
            };
            serde_json::to_vec(&json).unwrap()
        })
        .collect()
}

fn order_event(payload: &[u8], i: usize) -> Event {
    Event::new(key("orders"), None, None, 1_700_000_000_000 + i as i64, "application/json", payload.to_vec())
}

/// The outputs one replica alone produces for these inputs: the reference.
fn reference_outputs(inputs: &[Vec<u8>], transform: impl Transform, output: &EventSourceKey) -> Vec<Vec<u8>> {
    let log = MemoryLog::new();
    for (i, payload) in inputs.iter().enumerate() {
        log.publish(&key("orders"), vec![order_event(payload, i)]);
    }
    run_to_end(&log, transform);
    log.canonical(output).into_iter().map(|e| e.payload).collect()
}

/// A log whose reader can be paused, as a stalled replica stops reading and so computes
/// and writes nothing new.
struct Pausable {
    inner: KafkaLog,
    paused: watch::Receiver<bool>,
}

struct PausableCursor {
    inner: Box<dyn LogCursor>,
    paused: watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl EventLog for Pausable {
    fn append(&self, record: &Record) -> competing_transformers_kafka::Delivery {
        self.inner.append(record)
    }
    async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError> {
        Ok(Box::new(PausableCursor { inner: self.inner.cursor(from).await?, paused: self.paused.clone() }))
    }
    async fn end_offset(&self) -> Result<Offset, LogError> {
        self.inner.end_offset().await
    }
    async fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        self.inner.flush(timeout).await
    }
}

#[async_trait::async_trait]
impl LogCursor for PausableCursor {
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<FetchedRecord>, LogError> {
        if *self.paused.borrow() {
            tokio::time::sleep(max_wait).await;
            return Ok(Vec::new());
        }
        self.inner.next_batch(max_wait).await
    }
    fn position(&self) -> Offset {
        self.inner.position()
    }
}

struct Running {
    task: tokio::task::JoinHandle<Result<ReplicaStatus, ReplicaError>>,
    shutdown: ShutdownTrigger,
    status: watch::Receiver<ReplicaStatus>,
}

async fn start<T: Transform, L: EventLog>(log: L, transform: T, id: &str) -> Running {
    let shutdown = ShutdownTrigger::new();
    let shutdown_rx = shutdown.subscribe();
    let (status_tx, status) = watch::channel(ReplicaStatus::default());
    let task = tokio::spawn(run_replica(Arc::new(log), transform, ReplicaConfig::new(id), shutdown_rx, status_tx));
    Running { task, shutdown, status }
}

async fn canonical_payloads(reader: &Pipeline<KafkaLog>, key: &EventSourceKey, count: usize) -> Vec<Vec<u8>> {
    let events = reader
        .stream_events(std::slice::from_ref(key), 0)
        .await
        .unwrap()
        .collect(count, Duration::from_secs(10))
        .await
        .unwrap();
    events.into_iter().map(|e| e.event.payload).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_one_killed_and_one_paused_match_a_lone_replica() {
    let config = fresh_log_config("replicas-kill-pause").await;
    let inputs = orders(300);
    let output = key("matching-engine");
    let want = reference_outputs(&inputs, MatchingEngine::new(), &output);

    let (pause, paused) = watch::channel(false);
    let killed = start(KafkaLog::connect(config.clone()).await.unwrap(), MatchingEngine::new(), "killed").await;
    let stalled_log = Pausable { inner: KafkaLog::connect(config.clone()).await.unwrap(), paused };
    let stalled = start(stalled_log, MatchingEngine::new(), "stalled").await;
    let steady = start(KafkaLog::connect(config.clone()).await.unwrap(), MatchingEngine::new(), "steady").await;

    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    for (i, payload) in inputs.iter().enumerate() {
        if i == 100 {
            killed.task.abort();
            pause.send_replace(true);
        }
        source.write(&key("orders"), vec![order_event(payload, i)]).await.unwrap();
    }
    // While one replica is dead and one paused, the third alone carries every output.
    wait_for_count(&reader, &output, want.len() as u64, Duration::from_secs(60)).await;
    let paused_at = stalled.status.borrow().position;
    pause.send_replace(false);

    let got = canonical_payloads(&reader, &output, want.len()).await;
    assert_eq!(got.len(), want.len());
    assert!(got == want, "canonical outputs on Kafka differ from a lone replica's");
    let extra = reader
        .stream_events(std::slice::from_ref(&output), 0)
        .await
        .unwrap()
        .collect(want.len() + 1, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(extra.len(), want.len(), "no output beyond the reference's");

    // The paused replica catches up and agrees without writing anything twice as canonical.
    let start = Instant::now();
    while stalled.status.borrow().outputs < want.len() as u64 {
        assert!(start.elapsed() < Duration::from_secs(30), "the resumed replica did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for replica in [stalled, steady] {
        replica.shutdown.request();
        let status = replica.task.await.unwrap().expect("replica ran without error");
        println!("{}: {:?} (paused at offset {paused_at})", status.replica_id, status.stats);
        assert_eq!(status.stats.divergences, 0);
    }
    let rule = reader.snapshot().await.unwrap();
    let stats = rule.stats(&output);
    println!(
        "matching-engine on Kafka: {} canonical, {} duplicates, {} rejected",
        stats.canonical, stats.duplicates, stats.rejected
    );
    assert_eq!(stats.canonical, want.len() as u64);
    assert_eq!(stats.divergent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_dead_lettered_once_and_the_pipeline_goes_on() {
    let config = fresh_log_config("replicas-poison").await;
    let mut inputs = orders(40);
    inputs.insert(20, b"{\"type\":\"limit\",\"order_id\":".to_vec());
    let output = key("matching-engine");
    let want = reference_outputs(&inputs, MatchingEngine::new(), &output);
    let mut replicas = Vec::new();
    for id in ["p1", "p2", "p3"] {
        replicas.push(start(KafkaLog::connect(config.clone()).await.unwrap(), MatchingEngine::new(), id).await);
    }
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    for (i, payload) in inputs.iter().enumerate() {
        source.write(&key("orders"), vec![order_event(payload, i)]).await.unwrap();
    }
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    wait_for_count(&reader, &output, want.len() as u64, Duration::from_secs(60)).await;
    assert!(canonical_payloads(&reader, &output, want.len()).await == want);

    let dead_letters = output.dead_letters();
    wait_for_count(&reader, &dead_letters, 1, Duration::from_secs(10)).await;
    let letters = reader
        .stream_events(std::slice::from_ref(&dead_letters), 0)
        .await
        .unwrap()
        .collect(2, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "three replicas, one canonical dead letter");
    let letter: DeadLetter = serde_json::from_slice(&letters[0].event.payload).unwrap();
    assert_eq!(letter.reason, Reason::Decode);
    assert_eq!((letter.input.key.as_str(), letter.input.index), ("orders", 20));
    assert_eq!(letter.payload().unwrap(), inputs[20], "the dead letter keeps the input untouched");
    println!("{}", letter.describe());
    for replica in replicas {
        replica.shutdown.request();
        replica.task.await.unwrap().unwrap();
    }
}

/// Emits a value that differs between instances: the kind of bug divergence detection is for.
struct NotDeterministic {
    nonce: u64,
}

impl Transform for NotDeterministic {
    fn name(&self) -> &str {
        "flaky"
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("orders")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        out.emit_json(&serde_json::json!({ "input": input.index, "nonce": self.nonce }));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_deterministic_transform_is_caught_and_stops_writing_while_a_correct_one_goes_on() {
    let config = fresh_log_config("replicas-divergence").await;
    let inputs = orders(60);
    let output = key("matching-engine");
    let want = reference_outputs(&inputs, MatchingEngine::new(), &output);
    let flaky: Vec<Running> = futures::future::join_all((1..=2).map(|n| {
        let config = config.clone();
        async move {
            start(KafkaLog::connect(config).await.unwrap(), NotDeterministic { nonce: n }, &format!("flaky-{n}")).await
        }
    }))
    .await;
    let correct: Vec<Running> =
        futures::future::join_all((1..=2).map(|n| {
            let config = config.clone();
            async move {
                start(KafkaLog::connect(config).await.unwrap(), MatchingEngine::new(), &format!("engine-{n}")).await
            }
        }))
        .await;
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    for (i, payload) in inputs.iter().enumerate() {
        source.write(&key("orders"), vec![order_event(payload, i)]).await.unwrap();
    }
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    wait_for_count(&reader, &output, want.len() as u64, Duration::from_secs(60)).await;
    assert!(canonical_payloads(&reader, &output, want.len()).await == want, "the correct transform is unaffected");

    // Whichever flaky replica loses a race sees a canonical event it did not compute.
    let mut diverged = 0;
    for replica in flaky {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !replica.task.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica.shutdown.request();
        match replica.task.await.unwrap() {
            Err(ReplicaError::Diverged(divergence)) => {
                diverged += 1;
                assert_eq!(divergence.key, key("flaky"));
                println!("caught: {divergence}");
            }
            other => println!("flaky replica ended with {other:?}"),
        }
    }
    assert!(diverged >= 1, "a non-deterministic replica must be caught");
    let rule = reader.snapshot().await.unwrap();
    assert_eq!(rule.stats(&output).divergent, 0, "no divergence on the correct transform's stream");
    for replica in correct {
        replica.shutdown.request();
        replica.task.await.unwrap().unwrap();
    }
}
