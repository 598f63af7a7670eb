//! A reader in another language, written from docs/RECORD_FORMAT.md alone (interop/reader.py,
//! with Python's confluent-kafka), reaches the same verdicts as the Rust reader on a log
//! holding every kind of record: groups, races, divergent and rejected writes, and malformed
//! records.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::{KafkaLog, Pipeline};
use integration_tests::{fresh_log_config, raw_producer};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn event(payload: &str, cause: Option<u64>) -> Event {
    Event::new(key("unset"), None, cause, -42, "text/plain; charset=utf-8", payload.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_reader_following_the_docs_reaches_the_same_verdicts() {
    let config = fresh_log_config("interop").await;
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
    // Divergent and rejected copies, written past the Pipeline's own shortcut.
    let producer = raw_producer(&[]).await;
    let mut raw = Vec::new();
    for (index, payload) in [(2, "different"), (9, "ahead")] {
        let record = competing_transformers::Record {
            source: b.clone(),
            writer: "w3".into(),
            events: vec![Event { key: b.clone(), ..event(payload, Some(index)) }.with_index(index)],
        };
        raw.push(record.encode().unwrap().value);
    }
    let mut corrupt = raw[0].clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    raw.push(corrupt);
    raw.push(raw[1][..raw[1].len() - 3].to_vec());
    raw.push(b"not a record".to_vec());
    for value in &raw {
        producer
            .send(FutureRecord::<(), _>::to(&config.topic).partition(0).payload(value), Duration::from_secs(10))
            .await
            .unwrap();
    }
    writers[2].write(&a, vec![event("a2", None)]).await.unwrap();

    // The Rust reader.
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let rule = reader.snapshot().await.unwrap();
    let events = reader.stream_events(&[], 0).await.unwrap().collect(8, Duration::from_secs(10)).await.unwrap();
    let rust_canonical: Vec<Value> = events
        .iter()
        .map(|e| {
            serde_json::json!([e.offset, e.event.key.as_str(), e.event.index.unwrap(), e.event.digest.to_string()])
        })
        .collect();

    // The Python reader.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = Command::new("bash").arg(format!("{root}/scripts/python-env.sh")).output().unwrap();
    assert!(python.status.success(), "scripts/python-env.sh failed: {}", String::from_utf8_lossy(&python.stderr));
    let python = String::from_utf8(python.stdout).unwrap().trim().to_string();
    let output = Command::new(&python)
        .arg(format!("{root}/interop/reader.py"))
        .arg(&config.bootstrap_servers)
        .arg(&config.topic)
        .output()
        .unwrap();
    assert!(output.status.success(), "interop/reader.py failed: {}", String::from_utf8_lossy(&output.stderr));
    let python: Value = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(python["malformed"], rule.malformed(), "malformed records");
    assert_eq!(rule.malformed(), 3);
    for (k, stats) in rule.all_stats() {
        let theirs = &python["keys"][k.as_str()];
        assert_eq!(
            [&theirs["canonical"], &theirs["duplicates"], &theirs["divergent"], &theirs["rejected"]],
            [stats.canonical, stats.duplicates, stats.divergent, stats.rejected].map(Value::from).each_ref(),
            "verdict counts of `{k}`"
        );
    }
    assert_eq!((rule.stats(&b).divergent, rule.stats(&b).rejected, rule.stats(&b).duplicates), (1, 1, 5));
    assert_eq!(python["canonical"].as_array().unwrap(), &rust_canonical, "canonical events, offsets and digests");
    assert_eq!(rust_canonical.len(), 8);
    println!(
        "interop: Python and Rust agree on {} canonical events, {} malformed records",
        rust_canonical.len(),
        rule.malformed()
    );
}
