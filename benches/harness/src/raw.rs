//! Plain rdkafka clients: the physical limit (produce → consume on one partition, with and
//! without transactions), the observer of plain topics (raw limit, Kafka Streams), and the
//! reader that measures write amplification on a framework log.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use competing_transformers::canonical::{CanonicalRule, Verdict};
use competing_transformers::record::{FetchedRecord, Record};
use competing_transformers::EventSourceKey;
use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::load::{self, Load};
use crate::measure::SharedTimeline;

/// The producer settings of the framework's log (`crates/kafka/src/log/kafka.rs`), so the limit is
/// measured with the same client configuration.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000")
        .set("retry.backoff.ms", "20");
    config
}

/// The consumer settings of the framework's readers: read_committed, 5 ms fetch wait.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "5")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("group.id", "bench-observer");
    config
}

fn assigned<C: Consumer>(consumer: &C, topic: &str) -> anyhow::Result<()> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(())
}

/// Where a plain record carries the sequence number of the input it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqFrom {
    /// The first 8 bytes of the payload ([`load::payload`]): the identity load, copied as is.
    Payload,
    /// The record key, 8 bytes big-endian: a transform that rewrites the payload (the matching
    /// engine on Kafka Streams) keys each output with its input's key.
    Key,
}

impl SeqFrom {
    fn of<M: Message>(self, message: &M) -> Option<u64> {
        match self {
            SeqFrom::Payload => message.payload().and_then(load::seq_of),
            SeqFrom::Key => message.key().and_then(load::seq_of),
        }
    }
}

/// Reads `topic` (read_committed) until `stop`, noting the sequence number of the first record
/// that answers each input (a matching-engine input has several).
pub async fn observe_plain(
    bootstrap: String,
    topic: String,
    seq_from: SeqFrom,
    timeline: SharedTimeline,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = consumer_config(&bootstrap).create()?;
    assigned(&consumer, &topic)?;
    let mut answered = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let message = match tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await {
            Err(_) => continue,
            Ok(Err(error)) => {
                eprintln!("  observer: {error}");
                continue;
            }
            Ok(Ok(message)) => message,
        };
        let now = Instant::now();
        let mut seen = vec![];
        let mut note = |seq: Option<u64>| {
            if let Some(seq) = seq.filter(|seq| answered.insert(*seq)) {
                seen.push((seq, now));
            }
        };
        note(seq_from.of(&message));
        // Drain what is here without waiting.
        while let Some(Ok(more)) = consumer.recv().now_or_never() {
            note(seq_from.of(&more));
        }
        timeline.lock().expect("timeline").seen.extend(seen);
    }
    Ok(())
}

/// The send function of an idempotent, non-transactional producer writing `payload(seq)` to
/// partition 0 of `topic`, keyed by `seq` (8 bytes big-endian) if `seq_in` is [`SeqFrom::Key`];
/// an event's id is its sequence number.
pub fn plain_sender(
    bootstrap: &str,
    topic: &str,
    seq_in: SeqFrom,
    payload: fn(u64) -> Vec<u8>,
) -> anyhow::Result<load::Send> {
    let producer: FutureProducer = producer_config(bootstrap).create()?;
    let topic = topic.to_string();
    Ok(Arc::new(move |seq| {
        let (key, payload) = (seq.to_be_bytes(), payload(seq));
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic).partition(0).payload(&payload);
        if seq_in == SeqFrom::Key {
            record = record.key(&key);
        }
        let delivery = producer.send_result(record).map_err(|(error, _)| error);
        async move {
            match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(seq),
                    Ok(Err((error, _))) => Err(error.into()),
                    Err(_) => Err(anyhow::anyhow!("producer dropped")),
                },
                Err(error) => Err(error.into()),
            }
        }
        .boxed()
    }))
}

/// A record of a plain topic, as [`read_all`] returns it.
pub struct PlainRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Every record of partition 0 of `topic` (read_committed), in offset order: what a scenario's
/// transform read or wrote, to check it after the run.
pub fn read_all(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<PlainRecord>> {
    let consumer: BaseConsumer = consumer_config(bootstrap).create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    assigned(&consumer, topic)?;
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Transaction markers take offsets: done when the consumer has passed the end.
        let at = consumer.position()?.find_partition(topic, 0).and_then(|p| p.offset().to_raw()).unwrap_or(0);
        if at >= high {
            return Ok(records);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{topic}: read {} records, still short of offset {high} after 60 s",
            records.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message?;
            records.push(PlainRecord {
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
            });
            if message.offset() + 1 >= high {
                return Ok(records);
            }
        }
    }
}

/// The limit with transactions: a transactional producer that sends what is due (at most
/// `TXN_RECORDS_MAX`) in one transaction, commits, and repeats. Runs on its own thread, since
/// the transaction calls block. Returns the number of events sent.
///
/// `await_deliveries_first`: wait for the transaction's deliveries before `commit_transaction`.
/// rust-rdkafka's `commit_transaction` first calls its `flush`, which polls in steps of 100 ms
/// while anything is undelivered (the FutureProducer's own thread serves the delivery
/// reports, so the poll only returns at its timeout): a commit issued with records in flight
/// takes at least ~100 ms. `false` reproduces that (what `crates/kafka/src/log/kafka.rs` does today).
pub fn generate_transactional(
    bootstrap: &str,
    topic: &str,
    load: Load,
    timeline: SharedTimeline,
    await_deliveries_first: bool,
) -> anyhow::Result<(u64, String)> {
    let producer = transactional_producer(bootstrap, topic)?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(load.secs());
    let mut seq = 0u64;
    let mut commits: Vec<f64> = Vec::new();
    while Instant::now() < end {
        let due = match due(load, start, seq) {
            Due::Wait => {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            Due::Until(due) => due,
            Due::Done => break,
        };
        producer.begin_transaction()?;
        let (sent, deliveries) = send_until(&producer, topic, &mut seq, due);
        if await_deliveries_first {
            for delivery in deliveries {
                if let Ok(Err((error, _))) = futures::executor::block_on(delivery) {
                    anyhow::bail!("a transactional send failed: {error}");
                }
            }
        } else {
            drop(deliveries);
        }
        let committing = Instant::now();
        producer.commit_transaction(Duration::from_secs(30)).context("commit_transaction")?;
        commits.push(committing.elapsed().as_secs_f64() * 1000.0);
        timeline.lock().expect("timeline").sent.extend(sent);
    }
    Ok((seq, commit_note(commits, seq)))
}

/// Most records in one transaction of the raw transactional limit.
const TXN_RECORDS_MAX: u64 = 1_000;

/// The framework's producer settings, transactional, with its transactions initialised.
fn transactional_producer(bootstrap: &str, topic: &str) -> anyhow::Result<FutureProducer> {
    let mut config = producer_config(bootstrap);
    config
        .set("transactional.id", format!("bench-raw-{topic}"))
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000");
    if let Ok(debug) = std::env::var("BENCH_TXN_DEBUG") {
        config.set("debug", debug);
    }
    let producer: FutureProducer = config.create()?;
    producer.init_transactions(Duration::from_secs(30)).context("init_transactions")?;
    Ok(producer)
}

/// What the next transaction of the raw transactional limit sends.
enum Due {
    /// Nothing is due yet.
    Wait,
    /// The events before this sequence number.
    Until(u64),
    /// The load is all sent.
    Done,
}

/// What is due at this moment of `load`, started at `start`, with `seq` events sent.
fn due(load: Load, start: Instant, seq: u64) -> Due {
    match load {
        Load::Rate { per_s, .. } => {
            let due = (start.elapsed().as_secs_f64() * per_s as f64) as u64 + 1;
            if due <= seq {
                return Due::Wait;
            }
            Due::Until(due.min(seq + TXN_RECORDS_MAX))
        }
        Load::Flat { .. } => Due::Until(seq + TXN_RECORDS_MAX),
        Load::Backlog { events } if seq < events => Due::Until((seq + TXN_RECORDS_MAX).min(events)),
        Load::Backlog { .. } => Due::Done,
    }
}

/// Sends the events from `seq` up to `due` (advancing `seq`), retrying while the producer's
/// queue is full; returns when each was handed over, and their deliveries.
fn send_until(
    producer: &FutureProducer,
    topic: &str,
    seq: &mut u64,
    due: u64,
) -> (Vec<(u64, Instant)>, Vec<DeliveryFuture>) {
    let mut sent = Vec::with_capacity((due - *seq) as usize);
    let mut deliveries = Vec::with_capacity((due - *seq) as usize);
    while *seq < due {
        let payload = load::payload(*seq);
        let at = Instant::now();
        loop {
            match producer.send_result(FutureRecord::<[u8], [u8]>::to(topic).partition(0).payload(&payload)) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((error, _)) => {
                    // A full queue: let it drain.
                    eprintln!("  raw txn: {error}; retrying");
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        sent.push((*seq, at));
        *seq += 1;
    }
    (sent, deliveries)
}

/// How many transactions, how large, and how long their commits took.
fn commit_note(mut commits: Vec<f64>, seq: u64) -> String {
    commits.sort_by(f64::total_cmp);
    let at = |q: f64| commits.get(((commits.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    format!(
        "{} transactions of {:.1} events on average; commit_transaction took p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        commits.len(),
        seq as f64 / commits.len().max(1) as f64,
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Bytes and events on a framework log, by who wrote them: the measure of write amplification.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Amplification {
    /// Records the replicas wrote (read_committed: aborted transactions not counted).
    pub replica_records: u64,
    /// Events in them.
    pub replica_events: u64,
    /// Bytes of those records: key + value + headers.
    pub replica_bytes: u64,
    /// Canonical events of the DET's output stream.
    pub canonical_events: u64,
    /// Their share of their records' bytes: what one perfect writer would have written.
    pub canonical_bytes: f64,
    /// Their payload bytes alone.
    pub canonical_payload_bytes: u64,
    /// replica_bytes ÷ canonical_bytes: the cost of racing.
    pub by_bytes: f64,
    /// replica_events ÷ canonical_events.
    pub by_count: f64,
    /// replica_bytes ÷ canonical_payload_bytes: racing and the record envelope together.
    pub over_payload: f64,
    /// Per writer: events written, and how many of them were canonical (races won).
    pub writers: BTreeMap<String, (u64, u64)>,
    /// Where the time goes, from the records' create times (ms resolution, set by each
    /// producer's clock, all on this machine): input record → its canonical output record.
    /// The rest of the end-to-end latency is the observer's read.
    pub input_to_output_record_ms: Option<Percentiles>,
}

/// A few percentiles, in ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Reads the whole log (read_committed) and sorts its bytes by writer and verdict.
pub fn amplification(
    bootstrap: &str,
    topic: &str,
    output: &EventSourceKey,
    load_writer: &str,
) -> anyhow::Result<Amplification> {
    let consumer: BaseConsumer = consumer_config(bootstrap).create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    assigned(&consumer, topic)?;
    let mut rule = CanonicalRule::default();
    let mut out = Amplification::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut position = 0i64;
    let mut input_created: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    let mut hops: Vec<i64> = Vec::new();
    while position < high - 1 && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            // Transaction markers take offsets: stop when the consumer has passed the end.
            let at = consumer.position()?.find_partition(topic, 0).and_then(|p| p.offset().to_raw()).unwrap_or(0);
            if at >= high {
                break;
            }
            continue;
        };
        let message = message?;
        position = message.offset();
        let header_bytes: usize =
            message.headers().map_or(0, |hs| hs.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len)).sum());
        let bytes = message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len) + header_bytes;
        let fetched = FetchedRecord {
            offset: message.offset() as u64,
            timestamp_ms: None,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            details: Vec::new(),
        };
        let decoded = Record::decode_fetched(&fetched);
        let Ok(verdicts) = rule.apply(fetched.offset, decoded.as_ref()) else { continue };
        let record = decoded.expect("decoded");
        let created = message.timestamp().to_millis();
        if record.writer == load_writer {
            if let Some(created) = created {
                input_created.insert(fetched.offset, created);
            }
            continue;
        }
        out.replica_records += 1;
        out.replica_events += record.events.len() as u64;
        out.replica_bytes += bytes as u64;
        let share = bytes as f64 / record.events.len() as f64;
        let writer = out.writers.entry(record.writer.clone()).or_default();
        for (event, verdict) in record.events.iter().zip(verdicts) {
            writer.0 += 1;
            if matches!(verdict, Verdict::Canonical { .. }) && &event.key == output {
                writer.1 += 1;
                out.canonical_events += 1;
                out.canonical_bytes += share;
                out.canonical_payload_bytes += event.payload.len() as u64;
                if let (Some(cause), Some(created)) = (event.cause, created) {
                    if let Some(input) = input_created.remove(&cause) {
                        hops.push(created - input);
                    }
                }
            }
        }
    }
    hops.sort_unstable();
    if !hops.is_empty() {
        let at = |q: f64| hops[((hops.len() - 1) as f64 * q) as usize] as f64;
        out.input_to_output_record_ms =
            Some(Percentiles { p50: at(0.5), p99: at(0.99), p999: at(0.999), max: at(1.0) });
    }
    out.by_bytes = out.replica_bytes as f64 / out.canonical_bytes.max(1.0);
    out.by_count = out.replica_events as f64 / out.canonical_events.max(1) as f64;
    out.over_payload = out.replica_bytes as f64 / out.canonical_payload_bytes.max(1) as f64;
    Ok(out)
}

/// `bench relay`: the identity transform as plain clients do it, with no framework: a
/// consumer of `from` (the framework's reader settings) hands each record's payload to an
/// idempotent producer on `to` (the framework's writer settings), one record per event,
/// until SIGTERM. With the load generator and observer, the two-hop limit the framework's
/// replica is compared with.
pub async fn relay(bootstrap: String, from: String, to: String) -> anyhow::Result<()> {
    let consumer: StreamConsumer = consumer_config(&bootstrap).set("group.id", "bench-relay").create()?;
    assigned(&consumer, &from)?;
    let producer: FutureProducer = producer_config(&bootstrap).create()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("relay starting: {from} -> {to}");
    loop {
        let message = tokio::select! {
            _ = terminate.recv() => break,
            message = consumer.recv() => message?,
        };
        let payload = message.payload().unwrap_or_default();
        // Enqueued, not awaited: the producer batches; a full queue waits for room.
        loop {
            match producer.send_result(FutureRecord::<[u8], [u8]>::to(&to).partition(0).payload(payload)) {
                Ok(_delivery) => break,
                Err((error, _)) if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Deletes every topic whose name starts with `prefix` (a scenario's log, its input and
/// output topics, Kafka Streams' internal topics): a full run would otherwise leave
/// gigabytes on the broker.
pub async fn delete_topics(bootstrap: &str, prefix: &str) -> anyhow::Result<usize> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<String> =
        metadata.topics().iter().map(|t| t.name().to_string()).filter(|n| n.starts_with(prefix)).collect();
    if !names.is_empty() {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        admin.delete_topics(&names, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?;
    }
    Ok(names.len())
}
