//! Three pipelines on the 3-node cluster, a partition leader each on its own broker, two
//! racing replicas per pipeline under steady load, and the broker leading pipeline 0
//! SIGKILLed mid-run. Pipeline 0 resumes after Kafka elects a new leader. The other two keep
//! their leaders, but on 3 brokers with replication factor 3 the dead broker follows them
//! too, and an acks=all write waits for every in-sync replica: they pause until their
//! leaders drop it from the ISR (`replica.lag.time.max.ms`), and no longer. Every
//! pipeline's canonical output is a lone replica's over that pipeline's inputs, and nothing
//! crosses pipelines.
//!
//! Needs the cluster of `scripts/kafka.sh cluster-start` (`KAFKA_CLUSTER_BOOTSTRAP`); it
//! kills one node and restarts it before it returns.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use competing_transformers::replica::{run_to_end, ReplicaConfig};
use competing_transformers::shard::Pipelines;
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, Transform, TransformError};
use competing_transformers_kafka::admin::create_topic;
use competing_transformers_kafka::{run_replica, KafkaLog, KafkaLogConfig, Pipeline, ReplicaStatus};
use competing_transformers_kafka::{ShutdownTrigger, WriteOutcome};
use integration_tests::cluster::{self, kill_node, partition_leaders, restart_node, RestartKilledNode};
use tokio::sync::watch;

const PIPELINES: u32 = 3;
/// Inputs per pipeline, written at `RATE_PER_S` each.
const INPUTS: u64 = 1_200;
const RATE_PER_S: u64 = 100;
/// Pipeline 0's leader is killed once its source has written this many inputs.
const KILL_AT: u64 = 400;
/// Every output of every pipeline must be read within this, kill and recovery included.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The cluster's `replica.lag.time.max.ms` (scripts/kafka.sh): how long an acks=all write
/// may wait for a dead follower before the leader drops it from the in-sync replicas.
const ISR_SHRINK: Duration = Duration::from_millis(5_000);

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Answers each input with its payload and its pipeline's running count: a state that a
/// crossed or lost input would change.
#[derive(Default)]
struct Tally {
    seen: u64,
}

impl Transform for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("inputs")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        self.seen += 1;
        let payload = format!("{} #{}", String::from_utf8_lossy(input.payload), self.seen);
        out.emit("text/plain", payload.into_bytes());
        Ok(())
    }
}

fn input(pipeline: u32, index: u64) -> Event {
    let payload = format!("p{pipeline}-{index}").into_bytes();
    Event::new(key("inputs"), None, None, 1_700_000_000_000 + index as i64, "text/plain", payload)
}

/// A lone replica's outputs over one pipeline's inputs.
fn reference(pipeline: u32) -> Vec<Vec<u8>> {
    let log = MemoryLog::new();
    for index in 0..INPUTS {
        log.publish(&key("inputs"), vec![input(pipeline, index)]);
    }
    run_to_end(&log, Tally::default());
    log.canonical(&key("tally")).into_iter().map(|e| e.payload).collect()
}

/// Writes a pipeline's inputs at a steady rate, each at its index, so a retry after a
/// failover never writes one twice.
async fn source(config: KafkaLogConfig, pipeline: u32, written: watch::Sender<u64>) {
    let log = KafkaLog::connect(config).await.expect("the source connects");
    let source = Pipeline::new(Arc::new(log), format!("source-{pipeline}"));
    let started = Instant::now();
    let mut index = 0;
    while index < INPUTS {
        let due = started + Duration::from_millis(index * 1_000 / RATE_PER_S);
        tokio::time::sleep_until(due.into()).await;
        match source.exists_or_write(&key("inputs"), index, vec![input(pipeline, index)]).await {
            Ok(WriteOutcome::Written { .. } | WriteOutcome::Exists { .. }) => {
                index += 1;
                written.send_replace(index);
            }
            Ok(WriteOutcome::Rejected { count, .. }) => {
                panic!("pipeline {pipeline}: index {index} rejected at count {count}")
            }
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("pipeline {pipeline}: the source failed for good at index {index}: {e}"),
        }
    }
}

/// What a reader of one pipeline's outputs saw: the payloads, and the longest wait between
/// two consecutive outputs.
struct Observed {
    payloads: Vec<Vec<u8>>,
    longest_gap: Duration,
}

async fn observe(config: KafkaLogConfig, want: usize) -> Observed {
    let log = KafkaLog::connect(config).await.expect("the reader connects");
    let reader = Pipeline::new(Arc::new(log), "reader");
    let mut stream = reader.stream_events(&[key("tally")], 0).await.expect("opening the stream");
    let (mut payloads, mut longest_gap, mut last) = (Vec::new(), Duration::ZERO, None::<Instant>);
    while payloads.len() < want {
        match stream.next_within(Duration::from_millis(200)).await {
            Ok(Some(event)) => {
                let now = Instant::now();
                if let Some(last) = last {
                    longest_gap = longest_gap.max(now - last);
                }
                last = Some(now);
                payloads.push(event.event.payload);
            }
            Ok(None) => {}
            // A dead broker's connections fail: transient, the stream keeps its state.
            Err(e) if e.is_transient() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("reading outputs: {e}"),
        }
    }
    Observed { payloads, longest_gap }
}

struct Replica {
    task: tokio::task::JoinHandle<Result<ReplicaStatus, competing_transformers_kafka::ReplicaError>>,
    shutdown: ShutdownTrigger,
}

async fn start_replica(config: KafkaLogConfig, id: String) -> Replica {
    let log = KafkaLog::connect(config).await.expect("a replica connects");
    let shutdown = ShutdownTrigger::new();
    let (status, _) = watch::channel(ReplicaStatus::default());
    let task = tokio::spawn(run_replica(
        Arc::new(log),
        Tally::default(),
        ReplicaConfig::new(id),
        shutdown.subscribe(),
        status,
    ));
    Replica { task, shutdown }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_broker_pauses_only_the_pipeline_it_led_and_each_pipeline_matches_a_lone_replica() {
    let bootstrap = cluster::bootstrap();
    let mut config = KafkaLogConfig::new(bootstrap.clone(), integration_tests::unique_topic("pipelines-cluster"));
    config.pipelines = Pipelines::new(PIPELINES).unwrap();
    let facts = create_topic(&config).await.expect("creating the 3-pipeline log on the cluster");
    assert_eq!((facts.partitions, facts.replication_factor, facts.min_insync_replicas), (3, 3, 2));
    let leaders = partition_leaders(&bootstrap, &config.topic, PIPELINES as usize).await;
    let mut distinct = leaders.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "Kafka spreads the 3 pipelines' leaders over the 3 brokers: {leaders:?}");

    let mut replicas = Vec::new();
    for pipeline in 0..PIPELINES {
        for n in 1..=2 {
            replicas.push(start_replica(config.pipeline(pipeline), format!("tally-p{pipeline}-{n}")).await);
        }
    }
    let (written, watching) = watch::channel(0);
    let mut sources = vec![tokio::spawn(source(config.pipeline(0), 0, written))];
    for pipeline in 1..PIPELINES {
        sources.push(tokio::spawn(source(config.pipeline(pipeline), pipeline, watch::channel(0).0)));
    }
    let observers: Vec<_> =
        (0..PIPELINES).map(|p| tokio::spawn(observe(config.pipeline(p), INPUTS as usize))).collect();

    let killed = Arc::new(Mutex::new(None));
    let _restart = RestartKilledNode(killed.clone());
    let mut watching = watching;
    watching.wait_for(|&n| n >= KILL_AT).await.expect("pipeline 0's source runs");
    kill_node(leaders[0]);
    *killed.lock().unwrap() = Some(leaders[0]);

    let observed = tokio::time::timeout(RUN_TIMEOUT, async {
        let mut observed = Vec::new();
        for observer in observers {
            observed.push(observer.await.expect("an observer panicked"));
        }
        observed
    })
    .await
    .unwrap_or_else(|_| panic!("not every pipeline answered its {INPUTS} inputs within {RUN_TIMEOUT:?} of the kill"));
    for source in sources {
        source.await.expect("a source panicked");
    }

    let gaps: Vec<Duration> = observed.iter().map(|o| o.longest_gap).collect();
    println!("largest output gap per pipeline, pipeline 0's leader (node {}) killed: {gaps:?}", leaders[0]);
    for (pipeline, seen) in observed.iter().enumerate() {
        assert!(
            seen.payloads == reference(pipeline as u32),
            "pipeline {pipeline}'s canonical outputs differ from a lone replica's over its own inputs"
        );
    }
    // Pipeline 0 waited for an election; the others at most for their leader to drop the
    // dead follower from the ISR, which it checks every half `replica.lag.time.max.ms` (the
    // margin covers the 2 shared cores). Measured here: 7.7 s for pipeline 0, 5.2 s for both
    // others.
    for (pipeline, gap) in gaps.iter().enumerate().skip(1) {
        assert!(
            *gap < ISR_SHRINK * 3 / 2 + Duration::from_secs(3),
            "pipeline {pipeline} (leader alive) paused {gap:?}, longer than its ISR shrink allows"
        );
    }

    for replica in replicas {
        replica.shutdown.request();
        let status = replica.task.await.expect("a replica panicked").expect("a replica failed");
        assert_eq!(status.stats.divergences, 0, "{}", status.replica_id);
    }
    let node = killed.lock().unwrap().take().expect("a node was killed");
    restart_node(node).unwrap_or_else(|e| panic!("{e}"));
}
