//! `dead-letters redrive` on the real broker: the original event goes back untouched with its
//! provenance, and a retried redrive writes nothing twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::{run_replica, ReplicaStatus};
use competing_transformers_kafka::{KafkaLog, Pipeline, ShutdownTrigger};
use competing_transformers_launcher::redrive::{redrive, redriven_event, redrives_key, Redrive};
use integration_tests::fresh_log_config;
use ledger::{Ledger, LEDGER_KEY, TRANSFERS_KEY};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

async fn canonical(reader: &Pipeline<KafkaLog>, key: &EventSourceKey) -> Vec<(u64, Event)> {
    let events = reader
        .stream_events(std::slice::from_ref(key), 0)
        .await
        .unwrap()
        .collect(10_000, Duration::from_secs(2))
        .await
        .unwrap();
    events.into_iter().map(|c| (c.offset, c.event)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_writes_the_original_event_once_with_its_provenance() {
    let config = fresh_log_config("redrive").await;
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let source = Pipeline::new(log.clone(), "source");
    let transfers = key(TRANSFERS_KEY);
    let broken = br#"{"type":"transfer","id":"t1","from":"a","to":"b"}"#.to_vec();
    for (time, payload) in [
        (1, br#"{"type":"open","account":"a","initial":100}"#.to_vec()),
        (2, broken.clone()),
        (3, b"not json".to_vec()),
    ] {
        source
            .write(&transfers, vec![Event::new(transfers.clone(), None, None, time, "application/json", payload)])
            .await
            .unwrap();
    }
    // One ledger replica dead-letters the two bad commands, then stops.
    let shutdown = ShutdownTrigger::new();
    let shutdown_rx = shutdown.subscribe();
    let (status_tx, _status) = watch::channel(ReplicaStatus::default());
    let replica =
        tokio::spawn(run_replica(log.clone(), Ledger::new(), ReplicaConfig::new("r1"), shutdown_rx, status_tx));
    let reader = Pipeline::new(log.clone(), "reader");
    let ledger_key = key(LEDGER_KEY);
    let start = Instant::now();
    while reader.count(&ledger_key.dead_letters()).await.unwrap() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "no dead letters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.request();
    replica.await.unwrap().unwrap();
    let letters = canonical(&reader, &ledger_key.dead_letters()).await;
    let (letter_offset, letter) = (letters[0].0, serde_json::from_slice::<DeadLetter>(&letters[0].1.payload).unwrap());

    // Redrive dead letter 0 to its input key.
    let report = redrive(log.clone(), &ledger_key, Some(0), None, "op").await.unwrap();
    assert_eq!((report.written, report.existing), (1, 0));
    let inputs = canonical(&reader, &transfers).await;
    assert_eq!(inputs.len(), 4);
    let redriven = &inputs[3].1;
    assert_eq!(redriven.payload, broken, "the payload is untouched");
    assert_eq!((redriven.effective_time_ms, redriven.content_type.as_str()), (2, "application/json"));
    assert_eq!(redriven.cause, Some(letter_offset), "the cause is the dead letter's offset");
    let provenance = canonical(&reader, &redrives_key(&ledger_key)).await;
    assert_eq!(provenance.len(), 1);
    let record: Redrive = serde_json::from_slice(&provenance[0].1.payload).unwrap();
    assert_eq!((record.dead_letter_index, record.to_key.as_str(), record.to_index), (0, TRANSFERS_KEY, 3));
    assert_eq!(record.digest, redriven.digest.to_string());

    // A retry, and --all, write nothing twice; --all redrives only dead letter 1.
    let again = redrive(log.clone(), &ledger_key, Some(0), None, "op").await.unwrap();
    assert_eq!((again.written, again.existing), (0, 1));
    let all = redrive(log.clone(), &ledger_key, None, None, "op").await.unwrap();
    assert_eq!((all.written, all.existing), (1, 1));
    assert_eq!(canonical(&reader, &transfers).await.len(), 5);
    assert_eq!(canonical(&reader, &redrives_key(&ledger_key)).await.len(), 2);

    // A redrive that died after writing its event (here to another key): the retry finds
    // the event by digest and does not write it again.
    let other = key("retry-target");
    let orphan = redriven_event(&letter, letter_offset, &other).unwrap();
    source.write(&other, vec![orphan]).await.unwrap();
    let retried = redrive(log.clone(), &ledger_key, Some(0), Some(&other), "op").await.unwrap();
    assert_eq!((retried.written, retried.existing), (0, 1));
    assert_eq!(canonical(&reader, &other).await.len(), 1, "the event is not written twice");
}
