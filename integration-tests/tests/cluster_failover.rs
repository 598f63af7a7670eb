//! Failover on a real 3-node cluster: three writers race `exists_or_write` over one key while
//! the partition leader is SIGKILLed mid-run. Every acknowledged write must survive, and the
//! canonical stream must be exactly indexes 0..N, each once, with the payload every writer
//! agreed on.
//!
//! Needs the cluster of `scripts/kafka.sh cluster-start` (its bootstrap in
//! `KAFKA_CLUSTER_BOOTSTRAP`); it kills one node and restarts it before it returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use competing_transformers::{Event, EventSourceKey, Offset};
use competing_transformers_kafka::admin::create_topic;
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig, Pipeline, WriteOutcome};
use integration_tests::cluster::{self, kill_node, node_pid_file, partition_leaders, restart_node, RestartKilledNode};

/// Indexes 0..EVENTS are written.
const EVENTS: u64 = 300;
/// The leader is killed once some writer has reached this index.
const KILL_AT: u64 = 100;
/// The whole race, kill and recovery included, must finish within this.
const RACE_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause after a transient error before retrying.
const BACKOFF: Duration = Duration::from_millis(100);
const WRITERS: [&str; 3] = ["w1", "w2", "w3"];

/// What one writer saw.
#[derive(Default)]
struct WriterReport {
    id: String,
    /// index → offset of every `Written` outcome.
    acknowledged: BTreeMap<u64, Offset>,
    exists: u64,
    rejected: u64,
    transient: Vec<String>,
    /// When the first `Written` of a call started after the kill arrived.
    first_ack_after_kill: Option<Instant>,
    /// Longest time between two consecutive indexes done.
    longest_stall: Duration,
}

/// Shared by the writers and the killer.
struct Race {
    key: EventSourceKey,
    /// Per writer: the index it works on.
    at: [AtomicU64; 3],
    killed_at: Mutex<Option<Instant>>,
}

fn payload(index: u64) -> Vec<u8> {
    format!("v{index}").into_bytes()
}

async fn run_writer(slot: usize, config: KafkaLogConfig, race: Arc<Race>) -> WriterReport {
    let id = WRITERS[slot];
    let log = KafkaLog::connect(config).await.unwrap_or_else(|e| panic!("writer {id} cannot connect: {e}"));
    let pipeline = Pipeline::new(Arc::new(log), id);
    let mut report = WriterReport { id: id.to_string(), ..WriterReport::default() };
    let mut index = 0;
    let mut last_done = Instant::now();
    while index < EVENTS {
        let started = Instant::now();
        let event = Event::new(race.key.clone(), None, None, 0, "text/plain", payload(index));
        match pipeline.exists_or_write(&race.key, index, vec![event]).await {
            Ok(WriteOutcome::Written { offset, index: at }) => {
                assert_eq!(at, index, "writer {id} asked for index {index} but was written at {at}");
                report.acknowledged.insert(index, offset);
                let killed_at = *race.killed_at.lock().unwrap();
                if report.first_ack_after_kill.is_none() && killed_at.is_some_and(|k| started > k) {
                    report.first_ack_after_kill = Some(Instant::now());
                }
            }
            Ok(WriteOutcome::Exists { same_digest, winner, .. }) => {
                assert_ne!(
                    same_digest,
                    Some(false),
                    "writer {id}: index {index} exists at {winner:?} with a different payload (divergence)"
                );
                report.exists += 1;
            }
            Ok(WriteOutcome::Rejected { count, .. }) => {
                // The index was ahead of the count: re-read, then retry the same index.
                report.rejected += 1;
                eprintln!("writer {id}: index {index} rejected (count {count}); re-reading");
                if let Err(e) = pipeline.count(&race.key).await {
                    assert!(e.is_transient(), "writer {id}: fatal error re-reading: {e}");
                    report.transient.push(e.to_string());
                    tokio::time::sleep(BACKOFF).await;
                }
                continue;
            }
            Err(e) if e.is_transient() => {
                report.transient.push(e.to_string());
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
            Err(e) => panic!("writer {id}: fatal error at index {index}: {e}"),
        }
        let now = Instant::now();
        report.longest_stall = report.longest_stall.max(now - last_done);
        last_done = now;
        index += 1;
        race.at[slot].store(index, Ordering::Relaxed);
    }
    report
}

/// Waits until some writer reaches `KILL_AT`, then SIGKILLs `node`'s JVM.
async fn kill_leader_mid_race(node: i32, race: Arc<Race>, killed: Arc<Mutex<Option<i32>>>) {
    while race.at.iter().all(|a| a.load(Ordering::Relaxed) < KILL_AT) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill_node(node);
    *race.killed_at.lock().unwrap() = Some(Instant::now());
    *killed.lock().unwrap() = Some(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_conditional_writes_survive_the_leader_being_killed() {
    let bootstrap = cluster::bootstrap();
    let topic = integration_tests::unique_topic("cluster-failover");
    let config = KafkaLogConfig::new(bootstrap.clone(), topic.clone());
    let facts = create_topic(&config).await.expect("creating the test topic on the cluster");
    assert_eq!(
        (facts.brokers, facts.replication_factor, facts.min_insync_replicas),
        (3, 3, 2),
        "want 3 brokers, replication factor 3, min.insync.replicas 2 (is a node of the cluster down? `scripts/kafka.sh cluster-status`)"
    );
    let leader = partition_leaders(&bootstrap, &topic, 1).await[0];
    assert!(
        node_pid_file(leader).exists(),
        "no pid file for the leader, node {leader}: {}",
        node_pid_file(leader).display()
    );

    let killed = Arc::new(Mutex::new(None));
    let restart_guard = RestartKilledNode(killed.clone());
    let race = Arc::new(Race {
        key: EventSourceKey::new("failover").unwrap(),
        at: Default::default(),
        killed_at: Mutex::new(None),
    });
    let started = Instant::now();
    let writers: Vec<_> =
        (0..WRITERS.len()).map(|slot| tokio::spawn(run_writer(slot, config.clone(), race.clone()))).collect();
    let killer = tokio::spawn(kill_leader_mid_race(leader, race.clone(), killed.clone()));
    let finished = tokio::time::timeout(RACE_TIMEOUT, async {
        let mut reports = Vec::new();
        for writer in writers {
            reports.push(writer.await.expect("a writer panicked"));
        }
        killer.await.expect("the killer panicked");
        reports
    })
    .await;
    let reports = finished.unwrap_or_else(|_| {
        let at: Vec<_> = race.at.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        panic!(
            "the writers did not finish {EVENTS} indexes within {RACE_TIMEOUT:?} after the leader (node {leader}) was killed {}; w1..w3 were at indexes {at:?}",
            race.killed_at.lock().unwrap().map_or("(never killed)".into(), |k| format!("{:.1?} ago", k.elapsed()))
        )
    });
    let race_time = started.elapsed();
    let killed_at = race.killed_at.lock().unwrap().expect("the leader was killed");

    // Read everything back through a fresh reader.
    let reader =
        Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.expect("connecting the reader")), "reader");
    let mut stream = reader.stream_events(std::slice::from_ref(&race.key), 0).await.expect("opening the stream");
    // With a node down, librdkafka reports its failed connections as consumer errors (e.g.
    // BrokerTransportFailure): transient, the stream's state is kept, read on.
    let mut read_errors: Vec<String> = Vec::new();
    let mut canonical = Vec::new();
    let read_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < read_deadline,
            "reading back: {} of {EVENTS} canonical events after 30 s (errors: {read_errors:?})",
            canonical.len()
        );
        match stream.next_within(Duration::from_secs(2)).await {
            Ok(Some(event)) => canonical.push(event),
            Ok(None) if canonical.len() as u64 >= EVENTS => break,
            Ok(None) => {}
            Err(e) if e.is_transient() => {
                read_errors.push(e.to_string());
                tokio::time::sleep(BACKOFF).await;
            }
            Err(e) => panic!("reading back: {e}"),
        }
    }
    let indexes: Vec<u64> =
        canonical.iter().map(|c| c.event.index.expect("canonical events carry their index")).collect();
    assert_eq!(
        indexes,
        (0..EVENTS).collect::<Vec<_>>(),
        "the canonical sequence must be 0..{EVENTS}, no gap, no duplicate"
    );
    for c in &canonical {
        let i = c.event.index.unwrap();
        assert_eq!(c.event.payload, payload(i), "canonical payload at index {i}");
    }

    // No acknowledged write is lost: each is the canonical event at its index.
    let mut acknowledged_by: BTreeMap<u64, &str> = BTreeMap::new();
    for report in &reports {
        for (&index, &offset) in &report.acknowledged {
            if let Some(other) = acknowledged_by.insert(index, &report.id) {
                panic!("index {index} was acknowledged as written to both {other} and {}", report.id);
            }
            let found = &canonical[index as usize];
            assert_eq!(
                (found.offset, found.writer.as_str()),
                (offset, report.id.as_str()),
                "acknowledged write of {} at index {index} (offset {offset}) lost: the canonical event is another",
                report.id
            );
        }
    }
    // An index can be canonical with no writer told `Written`: a delivery reported failed
    // (or a read-back that errored) after the record had landed; the retry then saw `Exists`.
    let unacknowledged: Vec<String> = canonical
        .iter()
        .filter(|c| !acknowledged_by.contains_key(&c.event.index.unwrap()))
        .map(|c| format!("{}@{} by {}", c.event.index.unwrap(), c.offset, c.writer))
        .collect();

    let rule = loop {
        match reader.snapshot().await {
            Ok(rule) => break rule,
            Err(e) if e.is_transient() && Instant::now() < read_deadline => {
                read_errors.push(e.to_string());
                tokio::time::sleep(BACKOFF).await;
            }
            Err(e) => panic!("the reader's verdicts: {e}"),
        }
    };
    let stats = rule.stats(&race.key);
    assert_eq!((stats.canonical, stats.divergent, rule.malformed()), (EVENTS, 0, 0), "canonical, divergent, malformed");

    let recovered = reports.iter().filter_map(|r| r.first_ack_after_kill).min().map(|t| t - killed_at);
    let longest_stall = reports.iter().map(|r| r.longest_stall).max().unwrap_or_default();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for e in reports.iter().flat_map(|r| &r.transient) {
        *errors.entry(e.as_str()).or_default() += 1;
    }
    println!(
        "leader node {leader} SIGKILLed at index {KILL_AT}: acknowledged {} | exists {} | rejected {} | duplicates in log {} | first ack after kill +{} | longest stall {longest_stall:.2?} | race {race_time:.2?}",
        reports.iter().map(|r| format!("{}={}", r.id, r.acknowledged.len())).collect::<Vec<_>>().join(" "),
        reports.iter().map(|r| r.exists).sum::<u64>(),
        reports.iter().map(|r| r.rejected).sum::<u64>(),
        stats.duplicates,
        recovered.map_or("never".into(), |d| format!("{d:.2?}")),
    );
    if !unacknowledged.is_empty() {
        println!("  canonical but never acknowledged (landed, then reported failed): {}", unacknowledged.join(", "));
    }
    for e in &read_errors {
        *errors.entry(e.as_str()).or_default() += 1;
    }
    for (error, n) in &errors {
        println!("  transient error x{n} (writers and reader): {error}");
    }
    assert!(recovered.is_some(), "no write was acknowledged after the leader was killed");

    // A full cluster again for later tests (a failure here fails the test).
    let node = killed.lock().unwrap().take().expect("a node was killed");
    drop(restart_guard);
    restart_node(node).unwrap_or_else(|e| panic!("{e}"));
}
