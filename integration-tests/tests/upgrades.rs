//! Upgrades (docs/DESIGN.md, "Upgrades"): a rolling restart of 3 replicas onto a build with
//! a new `version()` under load, on the real broker; and the cut-over of a reader from a
//! DET's stream to the stream of its successor under a new name, on the in-memory log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::replica::{run_to_end, ReplicaConfig};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Offset, Outputs, Transform, TransformError};
use competing_transformers_kafka::{run_replica, KafkaLog, Pipeline, ReplicaError, ReplicaStatus, ShutdownTrigger};
use integration_tests::{fresh_log_config, wait_for_count};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Echoes each input of `in` under `echo`, in every version alike: a new build that bumps
/// `version()` and changes nothing else. `bad` is a transform error (a dead letter).
#[derive(Clone, Copy, Debug)]
struct Echo {
    version: u32,
}

impl Transform for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("in")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        if input.payload == b"bad" {
            return Err(TransformError::Failed("bad input".into()));
        }
        out.emit("text/plain", input.payload.to_vec());
        Ok(())
    }
}

/// The successor of [`Echo`] with other outputs (upper case), so it runs under a new name.
struct Shout;

impl Transform for Shout {
    fn name(&self) -> &str {
        "echo-upper"
    }
    fn version(&self) -> u32 {
        1
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("in")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        out.emit("text/plain", input.payload.to_ascii_uppercase());
        Ok(())
    }
}

/// Input `i` of the rolling restart: a few are dead-lettered, across the version bump.
fn input(i: u64) -> Event {
    let bad = i % 50 == 7;
    let payload = if bad { b"bad".to_vec() } else { format!("m{i}").into_bytes() };
    Event::new(key("in"), None, None, 1_700_000_000_000 + i as i64, "text/plain", payload)
}

/// Input `i` of the cut-over: none is dead-lettered by either DET.
fn plain_input(i: u64) -> Event {
    Event::new(key("in"), None, None, 1_700_000_000_000 + i as i64, "text/plain", format!("m{i}").into_bytes())
}

struct Running {
    task: tokio::task::JoinHandle<Result<ReplicaStatus, ReplicaError>>,
    shutdown: ShutdownTrigger,
    status: watch::Receiver<ReplicaStatus>,
}

async fn start(log: KafkaLog, transform: Echo, id: &str) -> Running {
    let shutdown = ShutdownTrigger::new();
    let shutdown_rx = shutdown.subscribe();
    let (status_tx, status) = watch::channel(ReplicaStatus::default());
    let task = tokio::spawn(run_replica(Arc::new(log), transform, ReplicaConfig::new(id), shutdown_rx, status_tx));
    Running { task, shutdown, status }
}

/// Stops a replica as SIGTERM does (in-flight writes flushed) and returns its last status;
/// it must not have diverged.
async fn stop(replica: Running) -> ReplicaStatus {
    replica.shutdown.request();
    let status = replica.task.await.unwrap().expect("a replica stops without error, never diverged");
    assert_eq!(status.stats.divergences, 0, "{} saw a divergence", status.replica_id);
    status
}

/// Waits until a restarted replica has caught up with the log and writes again: only then
/// does the procedure restart the next one.
async fn wait_live(replica: &Running, limit: Duration) {
    let start = Instant::now();
    loop {
        let status = replica.status.borrow().clone();
        if !status.catching_up && status.log_end > 0 && status.lag() < 100 {
            return;
        }
        assert!(start.elapsed() < limit, "{} did not catch up within {limit:?}: {status:?}", status.replica_id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The procedure of docs/DESIGN.md, "Upgrades": while inputs keep coming, each of 3
/// replicas in turn is stopped, started again on the new build (same id, `version()` 2),
/// and left to catch up before the next. Every input must have exactly its output
/// canonical, in order, equal to what a lone replica computes; no replica diverges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_onto_a_new_version_under_load_has_no_divergence_and_no_gap() {
    let config = fresh_log_config("rolling-upgrade").await;
    let ids = ["echo-1", "echo-2", "echo-3"];
    let mut replicas = Vec::new();
    for id in ids {
        replicas.push(start(KafkaLog::connect(config.clone()).await.unwrap(), Echo { version: 1 }, id).await);
    }
    // Load: inputs keep coming, one every few ms, through the whole procedure.
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    let stop_publishing = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let stop_publishing = stop_publishing.clone();
        async move {
            let mut published = 0;
            while !stop_publishing.load(Ordering::Relaxed) || published < 300 {
                source.write(&key("in"), vec![input(published)]).await.unwrap();
                published += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            published
        }
    });
    let output = key("echo");
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    for (n, id) in ids.iter().enumerate() {
        // Each replica has served under load for a while before its turn.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = reader.count(&output).await.unwrap();
        let status = stop(replicas.remove(n)).await;
        println!("{id} stopped on version 1 at offset {}: {:?}", status.position, status.stats);
        let upgraded = start(KafkaLog::connect(config.clone()).await.unwrap(), Echo { version: 2 }, id).await;
        wait_live(&upgraded, Duration::from_secs(60)).await;
        replicas.insert(n, upgraded);
        let after = reader.count(&output).await.unwrap();
        assert!(after > before, "outputs went on while {id} restarted ({before} then {after})");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_publishing.store(true, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    let dead_lettered = (0..published).filter(|&i| input(i).payload == b"bad").count() as u64;
    let expected = published - dead_lettered;
    wait_for_count(&reader, &output, expected, Duration::from_secs(60)).await;
    check_outputs(&reader, published, &output).await;
    for replica in replicas {
        let status = stop(replica).await;
        println!("{} on version 2: {:?}", status.replica_id, status.stats);
    }
    let rule = reader.snapshot().await.unwrap();
    assert_eq!(rule.stats(&output).divergent, 0);
    assert_eq!(rule.stats(&output.dead_letters()).divergent, 0);
    assert_eq!(rule.count(&output.dead_letters()), dead_lettered, "one dead letter per bad input");
    println!(
        "rolling restart under load: {published} inputs, {} canonical outputs, {} duplicates, no divergence",
        rule.stats(&output).canonical,
        rule.stats(&output).duplicates
    );
}

/// Every input has exactly its output canonical, in input order and caused by it, and
/// nothing more; the stream equals what a lone replica computes from the same inputs.
async fn check_outputs(reader: &Pipeline<KafkaLog>, published: u64, output: &EventSourceKey) {
    let inputs = reader.stream_events(&[key("in")], 0).await.unwrap();
    let inputs = collect_all(inputs, published as usize + 1).await;
    assert_eq!(inputs.len() as u64, published, "every input once");
    let answered: Vec<_> = inputs.iter().filter(|i| i.event.payload != b"bad").collect();
    let outputs = reader.stream_events(std::slice::from_ref(output), 0).await.unwrap();
    let outputs = collect_all(outputs, answered.len() + 1).await;
    assert_eq!(outputs.len(), answered.len(), "exactly one output per input, nothing beyond");
    for (position, (out, input)) in outputs.iter().zip(&answered).enumerate() {
        assert_eq!(out.event.index, Some(position as u64));
        assert_eq!(out.event.cause, Some(input.offset), "output {position} answers input {position}");
        assert_eq!(out.event.payload, input.event.payload);
    }
    let lone = MemoryLog::new();
    for i in 0..published {
        lone.publish(&key("in"), vec![input(i)]);
    }
    run_to_end(&lone, Echo { version: 1 });
    let want: Vec<_> = lone.canonical(output).into_iter().map(|e| (e.payload, e.effective_time_ms)).collect();
    let got: Vec<_> = outputs.into_iter().map(|e| (e.event.payload, e.event.effective_time_ms)).collect();
    assert!(got == want, "the canonical stream differs from a lone replica's");
}

async fn collect_all(
    mut stream: competing_transformers_kafka::EventStream,
    count_max: usize,
) -> Vec<competing_transformers_kafka::CanonicalEvent> {
    stream.collect(count_max, Duration::from_secs(3)).await.unwrap()
}

/// A reader of `stream`'s outputs: what it consumed, each output with the input it answers.
#[derive(Default)]
struct Reader {
    consumed: Vec<(Offset, Vec<u8>)>,
}

impl Reader {
    /// Reads the canonical outputs of `stream` caused by inputs at offsets `from..until`.
    fn read(&mut self, log: &MemoryLog, stream: &EventSourceKey, from: Offset, until: Offset) {
        let mut outputs = log.canonical(stream);
        outputs.retain(|e| (from..until).contains(&e.cause.unwrap()));
        self.consumed.extend(outputs.into_iter().map(|e| (e.cause.unwrap(), e.payload)));
    }
}

/// A change of outputs runs under a new name beside the old DET, both computing from the
/// same inputs; the reader cuts over at an input offset: the old stream's outputs caused by
/// inputs before it, the new stream's from it on. Then the old DET stops. No input is
/// answered twice or never.
#[test]
fn a_reader_cuts_over_from_the_old_stream_to_the_new_one_at_an_input_offset() {
    let log = MemoryLog::new();
    let (old, new) = (key("echo"), key("echo-upper"));
    let publish = |from: u64, to: u64| {
        for i in from..to {
            log.publish(&key("in"), vec![plain_input(i)]);
        }
    };
    publish(0, 40);
    run_to_end(&log, Echo { version: 1 });
    // The new DET starts beside the old one; it computes its stream from the first input.
    publish(40, 60);
    run_to_end(&log, Echo { version: 1 });
    run_to_end(&log, Shout);
    assert_eq!(log.canonical(&new).len(), 60, "the new stream caught up with every input so far");
    // The cut-over point: the log end once the new stream caught up.
    let cut_over = log.end();
    publish(60, 80);
    run_to_end(&log, Echo { version: 1 });
    run_to_end(&log, Shout);
    let mut reader = Reader::default();
    reader.read(&log, &old, 0, cut_over);
    // The old DET may stop once every reader has cut over; the new one goes on alone.
    publish(80, 100);
    run_to_end(&log, Shout);
    reader.read(&log, &new, cut_over, Offset::MAX);

    let inputs = log.canonical_with_offsets(&key("in"));
    assert_eq!(reader.consumed.len(), inputs.len(), "one output per input, none twice, none missed");
    for ((offset, input), (cause, payload)) in inputs.iter().zip(&reader.consumed) {
        assert_eq!(cause, offset, "in input order");
        let want = if *offset < cut_over { input.payload.clone() } else { input.payload.to_ascii_uppercase() };
        assert_eq!(payload, &want, "old outputs before the cut-over, new ones after");
    }
    assert_eq!(log.canonical(&old).len(), 80, "the old stream stopped with the old DET");
}
