//! `dead-letters redrive` on the real broker: the original event goes back untouched with its
//! provenance, a retried redrive writes nothing twice, and neither do two redrives at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::event::Offset;
use competing_transformers::record::Record;
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::{run_replica, Delivery, EventLog, LogCursor, LogError, ReplicaStatus};
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

const BROKEN: &[u8] = br#"{"type":"transfer","id":"t1","from":"a","to":"b"}"#;

/// Three transfer commands, two of them bad, and a ledger replica that dead-letters those
/// two, then stops.
async fn two_dead_letters(log: &Arc<KafkaLog>) {
    let source = Pipeline::new(log.clone(), "source");
    let transfers = key(TRANSFERS_KEY);
    let broken = BROKEN.to_vec();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_writes_the_original_event_once_with_its_provenance() {
    let config = fresh_log_config("redrive").await;
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    two_dead_letters(&log).await;
    let source = Pipeline::new(log.clone(), "source");
    let transfers = key(TRANSFERS_KEY);
    let broken = BROKEN.to_vec();
    let reader = Pipeline::new(log.clone(), "reader");
    let ledger_key = key(LEDGER_KEY);
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

/// Which of the two racing redrives a [`Gated`] log serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Racer {
    /// Starts once `B` has looked, and runs free.
    A,
    /// Looks at the log first; whatever it does next waits until `A` has finished.
    B,
}

/// The log as one of two racing redrives sees it, holding it back so that the race goes the
/// way that once wrote a dead letter twice: B reads the dead letters and the target (two
/// looks at the log end) before A starts; B's next step, a third look or a write, marks
/// "B has looked" and then waits until A has redriven the dead letter.
struct Gated {
    inner: Arc<KafkaLog>,
    racer: Racer,
    looks: AtomicUsize,
    /// Set once B has read the log and is about to act on what it read.
    b_looked: Arc<watch::Sender<bool>>,
    /// Set once A's redrive has returned.
    a_done: Arc<watch::Sender<bool>>,
}

async fn opened(gate: &watch::Sender<bool>) {
    gate.subscribe().wait_for(|open| *open).await.unwrap();
}

#[async_trait::async_trait]
impl EventLog for Gated {
    fn append(&self, record: &Record) -> Delivery {
        let (inner, record) = (self.inner.clone(), record.clone());
        if self.racer == Racer::A {
            return Box::pin(async move { inner.append(&record).await });
        }
        self.b_looked.send_replace(true);
        let a_done = self.a_done.clone();
        Box::pin(async move {
            opened(&a_done).await;
            inner.append(&record).await
        })
    }

    async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError> {
        self.inner.cursor(from).await
    }

    async fn end_offset(&self) -> Result<Offset, LogError> {
        match self.racer {
            Racer::A => opened(&self.b_looked).await,
            Racer::B if self.looks.fetch_add(1, Ordering::SeqCst) >= 2 => {
                self.b_looked.send_replace(true);
                opened(&self.a_done).await;
            }
            Racer::B => {}
        }
        self.inner.end_offset().await
    }

    async fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        self.inner.flush(timeout).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_redrives_of_one_dead_letter_at_once_write_it_once() {
    let config = fresh_log_config("redrive-race").await;
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    two_dead_letters(&log).await;
    let (ledger_key, transfers) = (key(LEDGER_KEY), key(TRANSFERS_KEY));
    let reader = Pipeline::new(log.clone(), "reader");
    let before = canonical(&reader, &transfers).await.len();

    let (b_looked, a_done) = (Arc::new(watch::Sender::new(false)), Arc::new(watch::Sender::new(false)));
    let gated = |racer| {
        let (b_looked, a_done) = (b_looked.clone(), a_done.clone());
        Arc::new(Gated { inner: log.clone(), racer, looks: AtomicUsize::new(0), b_looked, a_done })
    };
    let (log_a, log_b) = (gated(Racer::A), gated(Racer::B));
    let ledger = ledger_key.clone();
    let b = tokio::spawn(async move { redrive(log_b, &ledger, Some(0), None, "op-b").await });
    let ledger = ledger_key.clone();
    let a = tokio::spawn(async move { redrive(log_a, &ledger, Some(0), None, "op-a").await });
    let a = tokio::time::timeout(Duration::from_secs(60), a).await.expect("redrive A finishes").unwrap().unwrap();
    a_done.send_replace(true);
    let b = tokio::time::timeout(Duration::from_secs(60), b).await.expect("redrive B finishes").unwrap().unwrap();

    assert_eq!(a.written + b.written, 1, "one of the two wrote the event");
    assert_eq!(a.existing + b.existing, 1, "the other found it");
    let inputs = canonical(&reader, &transfers).await;
    assert_eq!(inputs.len(), before + 1, "the dead letter's event is on the log once");
    assert_eq!(inputs.iter().filter(|(_, event)| event.payload == BROKEN).count(), 2, "the original and one redrive");
    let provenance = canonical(&reader, &redrives_key(&ledger_key)).await;
    assert_eq!(provenance.len(), 1, "one provenance event");
    let record: Redrive = serde_json::from_slice(&provenance[0].1.payload).unwrap();
    assert_eq!((record.dead_letter_index, record.to_index), (0, before as u64));
}
