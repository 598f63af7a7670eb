//! A replica draining a backlog on the real broker with a tiny memory bound: it defers
//! inputs past the bound, reads ahead for its own outputs, comes back for the inputs with a
//! new cursor, and answers every input once, in order, as a replica with no bound does.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::replica::ReplicaConfig;
use competing_transformers::testing::Echo;
use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::{run_replica, KafkaLog, Pipeline, ReplicaStatus, ShutdownTrigger};
use integration_tests::{fresh_log_config, wait_for_count};
use tokio::sync::watch;

const INPUTS: usize = 3_000;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_memory_bound_is_deferred_and_every_input_answered_in_order() {
    let config = fresh_log_config("bounded-memory").await;
    let writer = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    for chunk in (0..INPUTS).collect::<Vec<_>>().chunks(500) {
        let events = chunk
            .iter()
            .map(|i| Event::new(key("in"), None, None, *i as i64, "text/plain", format!("{i}").into_bytes()))
            .collect();
        writer.write(&key("in"), events).await.unwrap();
    }

    let mut replica = ReplicaConfig::new("bounded-1");
    replica.pending_events_max = 100;
    let shutdown = ShutdownTrigger::new();
    let (status, mut statuses) = watch::channel(ReplicaStatus::default());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let task = tokio::spawn(run_replica(log, Echo::default(), replica, shutdown.subscribe(), status));

    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config).await.unwrap()), "reader");
    wait_for_count(&reader, &key("echo"), INPUTS as u64, Duration::from_secs(120)).await;
    let mut stream = reader.stream_events(&[key("echo")], 0).await.unwrap();
    let mut outputs = Vec::new();
    while let Some(canonical) = stream.next_within(Duration::from_secs(5)).await.unwrap() {
        outputs.push(canonical.event.payload);
        if outputs.len() == INPUTS {
            break;
        }
    }
    let inputs: Vec<Vec<u8>> = (0..INPUTS).map(|i| format!("{i}").into_bytes()).collect();
    assert_eq!(outputs, inputs, "every input answered once, in order");

    let stats = statuses.borrow_and_update().stats;
    shutdown.request();
    let last = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    assert!(stats.deferrals > 3 || last.stats.deferrals > 3, "the bound was reached: {:?}", last.stats);
    assert_eq!(last.stats.inputs_processed, INPUTS as u64, "each input transformed once, though read again");
}
