//! The load generator: hands events to a producer at a fixed rate or flat out, and notes
//! when each went and which id it got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::measure::SharedTimeline;

/// How hard to push.
#[derive(Clone, Copy, Debug, Serialize)]
pub enum Load {
    /// `per_s` events a second, evenly spaced (sent in bursts when the timer is late).
    Rate { per_s: u32, secs: f64 },
    /// As fast as the pipeline answers, with at most `unanswered_max` events sent but not
    /// yet answered (closed loop): the throughput ceiling without an unbounded backlog.
    Flat { secs: f64, unanswered_max: usize },
    /// `events` events sent as fast as the producer takes them while whatever transforms
    /// them is stopped (SIGSTOP), then let go: how fast it works through a backlog, with the
    /// generator no longer sharing the cores.
    Backlog { events: u64 },
}

impl Load {
    pub fn secs(&self) -> f64 {
        match *self {
            Load::Rate { secs, .. } | Load::Flat { secs, .. } => secs,
            // No fault is placed in a backlog run; a bound for the loop below.
            Load::Backlog { .. } => 600.0,
        }
    }
    pub fn label(&self) -> String {
        match *self {
            Load::Rate { per_s, .. } => format!("{per_s}/s"),
            Load::Flat { .. } => "flat out".into(),
            Load::Backlog { events } => format!("backlog of {events}"),
        }
    }
}

/// Enqueues event `seq` and returns the future of its id (delivered offset, or `seq`).
/// Must enqueue before returning, so events go out in `seq` order.
pub type Send = Arc<dyn Fn(u64) -> BoxFuture<'static, anyhow::Result<u64>> + std::marker::Send + Sync>;

/// Payload bytes of every benchmark event (identity and raw Kafka).
pub const PAYLOAD_BYTES: usize = 100;

/// `seq` big-endian, then padding to [`PAYLOAD_BYTES`].
pub fn payload(seq: u64) -> Vec<u8> {
    let mut bytes = seq.to_be_bytes().to_vec();
    bytes.resize(PAYLOAD_BYTES, b'.');
    bytes
}

/// The sequence number at the front of a [`payload`].
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    payload.get(..8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// Runs `load` through `send`; returns when every event is enqueued and delivered (or failed).
pub async fn generate(load: Load, send: Send, timeline: SharedTimeline) -> anyhow::Result<u64> {
    // Under librdkafka's default queue of 100,000 messages, so a backlog load never fills it.
    let in_flight_max = 50_000;
    let permits = Arc::new(Semaphore::new(in_flight_max));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(load.secs());
    let mut seq = 0u64;
    let mut failures = 0u64;
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let now = Instant::now();
        if now >= end || matches!(load, Load::Backlog { events } if seq >= events) {
            break;
        }
        match load {
            Load::Backlog { .. } => {}
            Load::Rate { per_s, .. } => {
                let due = start + Duration::from_secs_f64(seq as f64 / per_s as f64);
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            Load::Flat { unanswered_max, .. } => {
                // The observer keeps one entry per answered event.
                while seq.saturating_sub(timeline.lock().expect("timeline").seen.len() as u64) >= unanswered_max as u64
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let at = Instant::now();
        let delivery = send(seq);
        let (timeline, failed) = (timeline.clone(), failed.clone());
        tokio::spawn(async move {
            match delivery.await {
                Ok(id) => timeline.lock().expect("timeline").sent.push((id, at)),
                Err(_) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        seq += 1;
        if seq % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Every delivery has settled once all permits are back.
    let _all = permits.acquire_many(in_flight_max as u32).await.expect("never closed");
    failures += failed.load(std::sync::atomic::Ordering::Relaxed);
    if failures > 0 {
        eprintln!("  load: {failures} of {seq} sends failed");
    }
    Ok(seq)
}
