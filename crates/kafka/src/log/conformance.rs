//! The conformance suite every [`EventLog`] backend must pass: the same test functions run
//! against the memory log and both Kafka modes (`event_log_conformance!`).
//!
//! Enabled by the `testing` feature. Functions panic on failure, like test assertions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{EventLog, Pipeline, WriteOutcome};
use competing_transformers::event::{Event, EventSourceKey};
use competing_transformers::record::Record;

/// How long a reader waits for events a test expects.
const READ_WAIT: Duration = Duration::from_secs(20);

/// What the suite needs from a backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The log type.
    type Log: EventLog;
    /// Makes a new, empty log for one test and returns its id.
    async fn create(&self, test: &str) -> String;
    /// A new client of log `id`: its own producer and readers, like another process.
    async fn connect(&self, id: &str) -> Self::Log;
    /// Starts appending `record` and dies before finishing (a crash mid-write).
    async fn append_and_die(&self, id: &str, record: &Record);
    /// Appends bytes that are not a record.
    async fn append_raw(&self, id: &str, value: Vec<u8>);
}

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).expect("test keys are valid")
}

fn text(payload: &str) -> Event {
    Event::new(key("unset"), None, None, 0, "text/plain", payload.as_bytes().to_vec())
}

async fn pipeline<B: Backend>(backend: &B, id: &str, writer: &str) -> Pipeline<B::Log> {
    Pipeline::new(Arc::new(backend.connect(id).await), writer)
}

fn payloads(events: &[super::CanonicalEvent]) -> Vec<String> {
    events.iter().map(|e| String::from_utf8(e.event.payload.clone()).unwrap()).collect()
}

/// Records from several writers form one order that every reader sees, with indexes 0, 1, …
pub async fn total_order<B: Backend>(backend: &B) {
    let id = backend.create("total-order").await;
    let writers = [pipeline(backend, &id, "w1").await, pipeline(backend, &id, "w2").await];
    let k = key("orders");
    for i in 0..10 {
        writers[i % 2].write(&k, vec![text(&format!("e{i}"))]).await.unwrap();
    }
    let mut seen = Vec::new();
    for reader in ["r1", "r2"] {
        let reader = pipeline(backend, &id, reader).await;
        let events =
            reader.stream_events(std::slice::from_ref(&k), 0).await.unwrap().collect(10, READ_WAIT).await.unwrap();
        let indexes: Vec<u64> = events.iter().map(|e| e.event.index.unwrap()).collect();
        assert_eq!(indexes, (0..10).collect::<Vec<_>>());
        assert!(events.windows(2).all(|w| w[0].offset < w[1].offset), "log order is offset order");
        seen.push(payloads(&events));
    }
    assert_eq!(seen[0], (0..10).map(|i| format!("e{i}")).collect::<Vec<_>>());
    assert_eq!(seen[0], seen[1], "every reader sees the same order");
}

/// Writers racing `exists_or_write` over the same indexes: exactly one winner per index,
/// the losers told where the winner is, and every reader agrees.
pub async fn racing_writers_get_one_winner_per_index<B: Backend>(backend: &B) {
    let id = backend.create("race").await;
    let k = key("race");
    let indexes = 30u64;
    let mut tasks = Vec::new();
    for w in 0..3 {
        let writer = pipeline(backend, &id, &format!("w{w}")).await;
        let k = k.clone();
        tasks.push(async move {
            let mut outcomes = Vec::new();
            for i in 0..indexes {
                // Same content on every writer, as deterministic replicas produce.
                let outcome = writer.exists_or_write(&k, i, vec![text(&format!("v{i}"))]).await.unwrap();
                outcomes.push(outcome);
            }
            outcomes
        });
    }
    let results = futures::future::join_all(tasks).await;
    let mut winners: BTreeMap<u64, usize> = BTreeMap::new();
    for outcomes in &results {
        for (i, outcome) in outcomes.iter().enumerate() {
            match outcome {
                WriteOutcome::Written { index, .. } => {
                    assert_eq!(*index, i as u64);
                    *winners.entry(*index).or_default() += 1;
                }
                WriteOutcome::Exists { same_digest, .. } => assert_ne!(*same_digest, Some(false)),
                WriteOutcome::Rejected { .. } => panic!("a writer that writes in index order is never ahead"),
            }
        }
    }
    assert_eq!(winners.len() as u64, indexes, "every index has a winner: {winners:?}");
    assert!(winners.values().all(|n| *n == 1), "exactly one winner per index: {winners:?}");
    let mut views = Vec::new();
    for reader in ["r1", "r2"] {
        let reader = pipeline(backend, &id, reader).await;
        let events = reader
            .stream_events(std::slice::from_ref(&k), 0)
            .await
            .unwrap()
            .collect(indexes as usize, READ_WAIT)
            .await
            .unwrap();
        assert_eq!(payloads(&events), (0..indexes).map(|i| format!("v{i}")).collect::<Vec<_>>());
        views.push(events);
    }
    assert_eq!(views[0], views[1], "readers agree on winners and positions");
}

/// A write ahead of the count is rejected and changes nothing; a different payload at a
/// taken index is reported as a digest mismatch.
pub async fn conditional_write_outcomes<B: Backend>(backend: &B) {
    let id = backend.create("outcomes").await;
    let log = pipeline(backend, &id, "w").await;
    let k = key("k");
    assert_eq!(
        log.exists_or_write(&k, 2, vec![text("early")]).await.unwrap(),
        WriteOutcome::Rejected { index: 2, count: 0 }
    );
    let first = log.exists_or_write(&k, 0, vec![text("a")]).await.unwrap();
    let WriteOutcome::Written { offset, index: 0 } = first else { panic!("expected a write, got {first:?}") };
    let other = pipeline(backend, &id, "w2").await;
    assert_eq!(
        other.exists_or_write(&k, 0, vec![text("b")]).await.unwrap(),
        WriteOutcome::Exists { index: 0, winner: Some(offset), same_digest: Some(false) }
    );
    assert_eq!(
        other.exists_or_write(&k, 0, vec![text("a")]).await.unwrap(),
        WriteOutcome::Exists { index: 0, winner: Some(offset), same_digest: Some(true) }
    );
    assert_eq!(log.count(&k).await.unwrap(), 1);
    let rule = log.snapshot().await.unwrap();
    // Rejected while `k` had no canonical event: counted, with no entry for the key.
    assert_eq!((rule.stats(&k).rejected, rule.rejected_on_unseen_keys()), (0, 1));
}

/// Unconditional writes take the next index of their key, whoever writes them.
pub async fn unconditional_writes_take_the_next_index<B: Backend>(backend: &B) {
    let id = backend.create("unconditional").await;
    let log = pipeline(backend, &id, "w").await;
    let k = key("k");
    log.exists_or_write(&k, 0, vec![text("a")]).await.unwrap();
    log.write(&k, vec![text("b"), text("c")]).await.unwrap();
    assert_eq!(log.count(&k).await.unwrap(), 3);
    let events = log.stream_events(std::slice::from_ref(&k), 0).await.unwrap().collect(3, READ_WAIT).await.unwrap();
    assert_eq!(payloads(&events), ["a", "b", "c"]);
    assert_eq!(events.iter().map(|e| e.event.index.unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(matches!(
        log.exists_or_write(&k, 3, vec![text("d")]).await.unwrap(),
        WriteOutcome::Written { index: 3, .. }
    ));
}

/// A group is seen whole or not at all, also when its writer dies while writing it.
pub async fn groups_are_atomic_even_when_the_writer_dies<B: Backend>(backend: &B) {
    let id = backend.create("atomic").await;
    let k = key("group");
    let dying = Record {
        source: k.clone(),
        writer: "dying".into(),
        events: (0..3).map(|i| Event { key: k.clone(), ..text(&format!("dead{i}")) }).collect(),
    };
    backend.append_and_die(&id, &dying).await;
    let log = pipeline(backend, &id, "w").await;
    log.write(&k, vec![text("x0"), text("x1"), text("x2")]).await.unwrap();
    let mut stream = log.stream_events(std::slice::from_ref(&k), 0).await.unwrap();
    let mut seen = Vec::new();
    while seen.iter().filter(|p: &&String| p.starts_with('x')).count() < 3 {
        let Some(event) = stream.next_within(READ_WAIT).await.unwrap() else { break };
        seen.push(String::from_utf8(event.event.payload).unwrap());
    }
    let dead: Vec<_> = seen.iter().filter(|p| p.starts_with("dead")).collect();
    assert!(dead.is_empty() || dead.len() == 3, "a dead writer's group is all or nothing: {seen:?}");
    assert_eq!(seen.iter().filter(|p| p.starts_with('x')).count(), 3, "the next group is whole: {seen:?}");
}

/// A subscription sees only its keys' events.
pub async fn subscriptions_filter_by_key<B: Backend>(backend: &B) {
    let id = backend.create("filter").await;
    let log = pipeline(backend, &id, "w").await;
    for i in 0..6 {
        let k = key(if i % 2 == 0 { "even" } else { "odd" });
        log.write(&k, vec![text(&format!("{i}"))]).await.unwrap();
    }
    let events = log.stream_events(&[key("odd")], 0).await.unwrap().collect(3, READ_WAIT).await.unwrap();
    assert_eq!(payloads(&events), ["1", "3", "5"]);
    assert!(events.iter().all(|e| e.event.key == key("odd")));
    let all = log.stream_events(&[], 0).await.unwrap().collect(6, READ_WAIT).await.unwrap();
    assert_eq!(all.len(), 6);
}

/// A stream can resume from a position and still number events from the start.
pub async fn streams_resume_from_a_position<B: Backend>(backend: &B) {
    let id = backend.create("resume").await;
    let log = pipeline(backend, &id, "w").await;
    let k = key("k");
    let mut offsets = Vec::new();
    for i in 0..5 {
        offsets.push(log.write(&k, vec![text(&format!("{i}"))]).await.unwrap());
    }
    let events =
        log.stream_events(std::slice::from_ref(&k), offsets[3]).await.unwrap().collect(2, READ_WAIT).await.unwrap();
    assert_eq!(payloads(&events), ["3", "4"]);
    assert_eq!(events.iter().map(|e| e.event.index.unwrap()).collect::<Vec<_>>(), [3, 4]);
}

/// Records that are not ours are skipped and counted; the log goes on.
pub async fn malformed_records_are_skipped_and_counted<B: Backend>(backend: &B) {
    let id = backend.create("malformed").await;
    let log = pipeline(backend, &id, "w").await;
    let k = key("k");
    log.write(&k, vec![text("before")]).await.unwrap();
    backend.append_raw(&id, b"{\"not\":\"a record\"}".to_vec()).await;
    backend.append_raw(&id, b"CT\x01garbage".to_vec()).await;
    // Well formed but for one payload byte: its digest does not match, on the stream's key
    // and on another (which a stream of `k` steps over without checking).
    for (source, payload) in [(k.clone(), "corrupt"), (key("other"), "other")] {
        // Unconditional: taken for real, it would be canonical and change what follows.
        let record =
            Record { source: source.clone(), writer: "w".into(), events: vec![Event { key: source, ..text(payload) }] };
        let mut value = record.encode().unwrap().value;
        *value.last_mut().unwrap() ^= 1;
        backend.append_raw(&id, value).await;
    }
    log.write(&k, vec![text("after")]).await.unwrap();
    let events = log.stream_events(std::slice::from_ref(&k), 0).await.unwrap().collect(2, READ_WAIT).await.unwrap();
    assert_eq!(payloads(&events), ["before", "after"]);
    assert_eq!(events.iter().map(|e| e.event.index.unwrap()).collect::<Vec<_>>(), [0, 1]);
    let rule = log.snapshot().await.unwrap();
    assert_eq!(rule.malformed(), 4);
    assert_eq!(rule.count(&k), 2);
}

/// Runs the whole suite as tests against a backend expression: one `#[tokio::test]` per
/// function, so test output names the backend module and the behaviour.
#[macro_export]
macro_rules! event_log_conformance {
    ($backend:expr) => {
        $crate::event_log_conformance!(@tests $backend;
            total_order,
            racing_writers_get_one_winner_per_index,
            conditional_write_outcomes,
            unconditional_writes_take_the_next_index,
            groups_are_atomic_even_when_the_writer_dies,
            subscriptions_filter_by_key,
            streams_resume_from_a_position,
            malformed_records_are_skipped_and_counted);
    };
    (@tests $backend:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::log::conformance::$name(&$backend).await;
            }
        )*
    };
}

/// The memory log as a conformance backend.
#[derive(Default)]
pub struct MemoryBackend {
    logs: std::sync::Mutex<BTreeMap<String, competing_transformers::MemoryLog>>,
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    type Log = competing_transformers::MemoryLog;
    async fn create(&self, test: &str) -> String {
        self.logs.lock().unwrap().insert(test.to_string(), competing_transformers::MemoryLog::new());
        test.to_string()
    }
    async fn connect(&self, id: &str) -> Self::Log {
        self.logs.lock().unwrap()[id].clone()
    }
    async fn append_and_die(&self, _id: &str, _record: &Record) {
        // A memory append is instantaneous: dying mid-way means dying before it.
    }
    async fn append_raw(&self, id: &str, value: Vec<u8>) {
        self.logs.lock().unwrap()[id].append_raw(None, Some(value));
    }
}

#[cfg(test)]
mod memory {
    crate::event_log_conformance!(super::MemoryBackend::default());
}
