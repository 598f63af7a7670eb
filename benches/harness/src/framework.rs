//! The framework under test: its load sender, its observer, and the replica process of the
//! transactional write mode (the launcher's config has no write-mode setting).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::event::CONTENT_TYPE_JSON;
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::{Event, EventSourceKey, Record};
use competing_transformers_kafka::EventLog;
use competing_transformers_kafka::{run_replica, ReplicaStatus};
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig, Pipeline, WriteMode};
use futures::FutureExt;
use tokio::sync::watch;

use crate::load;
use crate::measure::SharedTimeline;
use crate::raw;

/// The writer id of the load generator's records.
pub const LOAD_WRITER: &str = "bench-load";
/// Content type of the identity DET's binary payloads.
pub const CONTENT_TYPE_BYTES: &str = "application/octet-stream";

/// Which DET a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Det {
    Identity,
    MatchingEngine,
}

impl Det {
    pub fn name(self) -> &'static str {
        match self {
            Det::Identity => bench_harness::IDENTITY,
            Det::MatchingEngine => "matching-engine",
        }
    }
    pub fn input_key(self) -> EventSourceKey {
        EventSourceKey::new(match self {
            Det::Identity => bench_harness::IDENTITY_INPUT,
            Det::MatchingEngine => "orders",
        })
        .expect("valid constant key")
    }
    pub fn output_key(self) -> EventSourceKey {
        EventSourceKey::new(self.name()).expect("valid constant key")
    }
    /// Event `seq` of the load: a 100-byte payload, or an order that often crosses the book.
    pub fn event(self, seq: u64) -> Event {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        match self {
            Det::Identity => Event::new(self.input_key(), None, None, now_ms, CONTENT_TYPE_BYTES, load::payload(seq)),
            Det::MatchingEngine => Event::new(self.input_key(), None, None, now_ms, CONTENT_TYPE_JSON, order_json(seq)),
        }
    }

    /// What a plain (non-framework) record of event `seq` carries, and where its sequence
    /// number is: in the payload for identity; in the key for the matching engine, whose
    /// input is an order and whose outputs are reports.
    pub fn plain(self) -> (raw::SeqFrom, fn(u64) -> Vec<u8>) {
        match self {
            Det::Identity => (raw::SeqFrom::Payload, load::payload),
            Det::MatchingEngine => (raw::SeqFrom::Key, order_json),
        }
    }
}

/// Order `seq` of the matching engine's load, JSON: limit orders around 100 on both sides and
/// every tenth a market order, so that most cross the book.
pub fn order_json(seq: u64) -> Vec<u8> {
    let side = if seq % 2 == 0 { "buy" } else { "sell" };
    let account = ["alice", "bob", "carol", "dave"][(seq % 4) as usize];
    let order = if seq % 10 == 9 {
        serde_json::json!({"type": "market", "order_id": format!("o{seq}"), "account": account, "side": side, "quantity": 1 + seq % 5})
    } else {
        let price = 98 + (seq * 7) % 5;
        serde_json::json!({"type": "limit", "order_id": format!("o{seq}"), "account": account, "side": side, "price": price, "quantity": 1 + (seq * 3) % 10})
    };
    serde_json::to_vec(&order).expect("JSON")
}

/// Appends each event as its own record, without waiting; its id is the offset it lands at.
pub fn sender(log: Arc<KafkaLog>, det: Det) -> load::Send {
    let key = det.input_key();
    Arc::new(move |seq| {
        let record = Record { source: key.clone(), writer: LOAD_WRITER.into(), events: vec![det.event(seq)] };
        let delivery = log.append(&record);
        async move { Ok(delivery.await?) }.boxed()
    })
}

/// Most outputs the observer stamps with the moment of the fetch that brought the first.
const SAME_MOMENT_EVENTS_MAX: usize = 4_096;

/// Follows the DET's canonical outputs (read_committed, through the canonical rule, as any
/// subscriber) until `stop`, noting the first output of each input (by its cause offset).
pub async fn observe(
    log: Arc<KafkaLog>,
    det: Det,
    timeline: SharedTimeline,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut stream = Pipeline::new(log, "bench-observer").stream_events(&[det.output_key()], 0).await?;
    let mut answered = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(first) = stream.next_within(Duration::from_millis(50)).await? else { continue };
        let now = Instant::now();
        let mut seen = Vec::new();
        let mut writer = first.writer;
        let mut note = |cause: Option<u64>| {
            if let Some(cause) = cause {
                if answered.insert(cause) {
                    seen.push((cause, now));
                }
            }
        };
        note(first.event.cause);
        // Whatever is already decoded came with the same fetch: same moment. A few thousand
        // at most, or a reader that never catches up (a long backlog draining) would never
        // let the timeline see any of them.
        for _ in 0..SAME_MOMENT_EVENTS_MAX {
            let Some(more) = stream.next_within(Duration::ZERO).await? else { break };
            note(more.event.cause);
            writer = more.writer;
        }
        let mut timeline = timeline.lock().expect("timeline");
        timeline.seen.extend(seen);
        timeline.latest_writer = Some(writer);
    }
    Ok(())
}

/// `bench replica`: one replica in this process, in the given write mode, until SIGTERM.
pub async fn run_one_replica(
    bootstrap: String,
    topic: String,
    replica_id: String,
    det: Det,
    transactional: bool,
) -> anyhow::Result<()> {
    let mut config = KafkaLogConfig::new(bootstrap, topic);
    if transactional {
        // The timeout is what a killed writer that is never restarted costs every reader.
        config.mode = WriteMode::Transactional { transactional_id: replica_id.clone(), transaction_timeout_ms: 10_000 };
    }
    let log = Arc::new(KafkaLog::connect(config).await?);
    let shutdown = competing_transformers_launcher::signals::shutdown_on_signals()?;
    let (status, _status) = watch::channel(ReplicaStatus::default());
    let config = ReplicaConfig::new(replica_id);
    let ended = match det {
        Det::Identity => run_replica(log, bench_harness::Identity, config, shutdown, status).await,
        Det::MatchingEngine => run_replica(log, matching_engine::MatchingEngine::new(), config, shutdown, status).await,
    };
    ended?;
    Ok(())
}
