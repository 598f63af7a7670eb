//! A reader in another language, written from docs/RECORD_FORMAT.md alone (interop/reader.py,
//! with Python's confluent-kafka), reaches the same verdicts as the Rust reader on a log
//! holding every kind of record: groups, races, divergent and rejected writes, malformed
//! records, and records that break the format's rules (a forbidden character in a key, a
//! source or a writer id; a null or mismatching Kafka key; a null or empty value). With the
//! format's digest window and with a small one: they agree on the advisory divergence split
//! too.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::record::Record;
use competing_transformers::{CanonicalRule, Event, EventSourceKey};
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig, Pipeline};
use integration_tests::{fetch_all, fresh_log_config, python_reader, raw_producer, rust_verdicts, ROOT};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn event(payload: &str, cause: Option<u64>) -> Event {
    Event::new(key("unset"), None, cause, -42, "text/plain; charset=utf-8", payload.as_bytes().to_vec())
}

/// A record's Kafka key and value, each possibly null.
type Raw = (Option<Vec<u8>>, Option<Vec<u8>>);

/// `record` encoded, with `from` (found once in the value) overwritten by `to`, as long: the
/// digest covers neither names nor writer, so only the name rule can catch it.
fn tampered(record: &Record, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut value = record.encode().unwrap().value;
    let found: Vec<usize> =
        value.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(at, _)| at).collect();
    assert_eq!(found.len(), 1, "{from:?} occurs once");
    value[found[0]..found[0] + to.len()].copy_from_slice(to);
    value
}

/// What the framework never writes: copies past the Pipeline's own shortcut, corrupt and
/// foreign values, and records that break the format's rules. Each rule-breaking record holds
/// an unconditional write, which a reader skipping the rule would take as canonical.
fn raw_records(a: &EventSourceKey, b: &EventSourceKey) -> Vec<Raw> {
    let on_b = |writer: &str, events: Vec<Event>| Record { source: b.clone(), writer: writer.into(), events };
    let mut values = Vec::new();
    for (index, payload) in [(2, "different"), (9, "ahead")] {
        let record = on_b("w3", vec![Event { key: b.clone(), ..event(payload, Some(index)) }.with_index(index)]);
        values.push(record.encode().unwrap().value);
    }
    let mut corrupt = values[0].clone();
    *corrupt.last_mut().unwrap() ^= 0xff;
    let truncated = values[1][..values[1].len() - 3].to_vec();
    let taken = on_b("w3", vec![Event { key: b.clone(), ..event("taken", None) }]);
    let taken_value = taken.encode().unwrap().value;
    let b_key = || Some(b.as_str().as_bytes().to_vec());
    let space_in_key = on_b("w3", vec![Event { key: key("b-c"), ..event("key", None) }]);
    let odd_source =
        Record { source: key("qqq"), ..on_b("w3", vec![Event { key: b.clone(), ..event("source", None) }]) };
    let zero_width = "\u{200b}".as_bytes();
    let newline_writer = on_b("w-x", vec![Event { key: b.clone(), ..event("writer", None) }]);
    let empty_payload = Record {
        source: a.clone(),
        writer: "w3".into(),
        events: vec![Event::new(a.clone(), None, None, 0, "", vec![])],
    };
    vec![
        (b_key(), Some(values[0].clone())),                                // divergent
        (b_key(), Some(values[1].clone())),                                // rejected
        (b_key(), Some(corrupt)),                                          // malformed: digest
        (b_key(), Some(truncated)),                                        // malformed: truncated
        (None, Some(b"not a record".to_vec())),                            // malformed: magic
        (Some(a.as_str().as_bytes().to_vec()), Some(taken_value.clone())), // malformed: Kafka key
        (None, Some(taken_value)),                                         // malformed: no Kafka key
        (b_key(), None),                                                   // malformed: null value
        (b_key(), Some(Vec::new())),                                       // malformed: empty value
        (b_key(), Some(tampered(&space_in_key, b"b-c", b"b c"))),          // malformed: key
        (Some(zero_width.to_vec()), Some(tampered(&odd_source, b"qqq", zero_width))), // malformed: source
        (b_key(), Some(tampered(&newline_writer, b"w-x", b"w\nx"))),       // malformed: writer
        (Some(empty_payload.encode().unwrap().key), Some(empty_payload.encode().unwrap().value)), // canonical
    ]
}

async fn write_log(config: &KafkaLogConfig) {
    let writers: Vec<Pipeline<KafkaLog>> = futures::future::join_all(["w1", "w2", "w3"].map(|w| {
        let config = config.clone();
        async move { Pipeline::new(Arc::new(KafkaLog::connect(config).await.unwrap()), w) }
    }))
    .await;
    let (a, b) = (key("a"), key("b"));
    writers[0].write(&a, vec![event("a0", None), event("a1", None)]).await.unwrap();
    for i in 0..5 {
        for writer in &writers[..2] {
            writer.exists_or_write(&b, i, vec![event(&format!("b{i}"), Some(i))]).await.unwrap();
        }
    }
    let producer = raw_producer(&[]).await;
    for (kafka_key, value) in raw_records(&a, &b) {
        let mut record = FutureRecord::<[u8], [u8]>::to(&config.topic).partition(0);
        if let Some(kafka_key) = &kafka_key {
            record = record.key(kafka_key);
        }
        if let Some(value) = &value {
            record = record.payload(value);
        }
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    writers[2].write(&a, vec![event("a2", None)]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_reader_following_the_docs_reaches_the_same_verdicts() {
    // The spec's worked examples (digests, a whole record) read the same in Python.
    python_reader(&["vectors", &format!("{ROOT}/docs/RECORD_FORMAT.md")]);

    let config = fresh_log_config("interop").await;
    write_log(&config).await;
    let records = fetch_all(&config).await;

    // The Rust reader: the Pipeline's, and the rule over the fetched records.
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let snapshot = reader.snapshot().await.unwrap();
    let rust = rust_verdicts(&records, &mut CanonicalRule::default());
    assert_eq!(rust["malformed"], snapshot.malformed());
    assert_eq!(rust["malformed"], 10, "3 broken values and 7 records breaking the format's rules");
    let events = reader.stream_events(&[], 0).await.unwrap().collect(9, Duration::from_secs(10)).await.unwrap();
    let streamed: Vec<Value> = events
        .iter()
        .map(|e| json!([e.offset, e.event.key.as_str(), e.event.index.unwrap(), e.event.digest.to_string()]))
        .collect();
    assert_eq!(rust["canonical"].as_array().unwrap(), &streamed, "the pipeline streams the canonical events");
    assert_eq!(streamed.len(), 9);
    let b = snapshot.stats(&key("b"));
    assert_eq!((b.canonical, b.duplicates, b.divergent, b.rejected), (5, 5, 1, 1));

    // The Python reader, with the format's digest window.
    let python: Value = serde_json::from_str(&python_reader(&[&config.bootstrap_servers, &config.topic])).unwrap();
    assert_eq!(python, rust, "Python and Rust verdicts, with the format's digest window");

    // With a window of 2 digests, the divergent copy of b's index 2 (3 behind the count) is
    // older than the window: both call it a plain duplicate, and nothing else changes.
    let rust_narrow = rust_verdicts(&records, &mut CanonicalRule::new(2));
    assert_eq!(rust_narrow["keys"]["b"], json!({"canonical": 5, "duplicates": 6, "divergent": 0, "rejected": 1}));
    assert_eq!(rust_narrow["canonical"], rust["canonical"]);
    let python_narrow: Value =
        serde_json::from_str(&python_reader(&[&config.bootstrap_servers, &config.topic, "2"])).unwrap();
    assert_eq!(python_narrow, rust_narrow, "Python and Rust verdicts, with a digest window of 2");
    println!(
        "interop: Python and Rust agree on {} canonical events and {} malformed records, with either digest window",
        streamed.len(),
        snapshot.malformed()
    );
}

/// The shard function in Python (interop/reader.py `pipeline_of`) routes every key as the
/// Rust one does: the documented examples, and keys of every kind over several counts.
#[test]
fn a_python_producer_routes_each_shard_key_to_the_rust_pipeline() {
    use competing_transformers::shard::{pipeline_of, Pipelines};
    let shard = |key: &str, count: u32| python_reader(&["--shard", key, "--pipelines", &count.to_string()]);
    assert_eq!(shard("account-42", 4).trim(), "1");
    assert_eq!(shard("book-eu", 4).trim(), "0");
    assert_eq!(shard("account-42", 3).trim(), "0");
    assert_eq!(shard("book-eu", 3).trim(), "1");
    for key in ["account-0", "account-7", "book-us", "tenant:ß", "x", "a-much-longer-shard-key.with.dots"] {
        for count in [1, 2, 3, 7, 1024] {
            let rust = pipeline_of(key.as_bytes(), Pipelines::new(count).unwrap());
            assert_eq!(shard(key, count).trim(), rust.to_string(), "`{key}` over {count} pipelines");
        }
    }
}
