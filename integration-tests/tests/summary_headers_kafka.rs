//! The `ct.*` summary headers on the real broker: written only when the log is configured
//! for them, and never needed to read the log.

use std::time::Duration;

use competing_transformers::{Event, EventSourceKey, Record};
use competing_transformers_kafka::{EventLog, KafkaLog, Pipeline};
use integration_tests::{fresh_log_config, raw_consumer};
use rdkafka::message::{Headers, Message};

/// The header names of each record of `topic`, in order.
async fn header_names(topic: &str, records: usize) -> Vec<Vec<String>> {
    let consumer = raw_consumer(topic, &[]).await;
    let mut names = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while names.len() < records {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {records} records came back", names.len()))
            .unwrap();
        names.push(message.headers().map(|hs| hs.iter().map(|h| h.key.to_string()).collect()).unwrap_or_default());
    }
    names
}

#[tokio::test]
async fn summary_headers_are_written_only_when_asked_for_and_readers_never_need_them() {
    let plain = fresh_log_config("headers").await;
    let mut with_headers = plain.clone();
    with_headers.summary_headers = true;
    let key = EventSourceKey::new("orders").unwrap();
    let event =
        |n: u64| Event::new(key.clone(), Some(n), None, 0, "application/json", format!("{{\"n\":{n}}}").into_bytes());
    for (n, config) in [(0, plain.clone()), (1, with_headers)] {
        let log = KafkaLog::connect(config).await.unwrap();
        log.append(&Record { source: key.clone(), writer: format!("writer-{n}"), events: vec![event(n)] })
            .await
            .unwrap();
    }
    let names = header_names(&plain.topic, 2).await;
    assert_eq!(names[0], Vec::<String>::new(), "off by default");
    assert_eq!(names[1], ["ct.format", "ct.writer", "ct.events", "ct.keys", "ct.indexes"]);
    // Both records read the same through the canonical rule.
    let reader = Pipeline::new(std::sync::Arc::new(KafkaLog::connect(plain).await.unwrap()), "reader");
    let mut stream = reader.stream_events(std::slice::from_ref(&key), 0).await.unwrap();
    let read = stream.collect(2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(read.iter().map(|c| c.event.index).collect::<Vec<_>>(), [Some(0), Some(1)]);
    assert_eq!(read.iter().map(|c| c.writer.as_str()).collect::<Vec<_>>(), ["writer-0", "writer-1"]);
}
