//! What a scenario measured, and how it is summarised: latency histograms, throughput, the
//! largest gap between consecutive outputs.
//!
//! Every time here is a monotonic [`Instant`] taken in the orchestrator process: the load
//! generator stamps an event when it hands it to the producer, the observer stamps it when
//! its first canonical output is read. Both live in one process, so no clocks are compared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency histograms hold microseconds from 1 µs to 10 minutes, 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 600_000_000;

/// The raw timeline of one scenario, filled by the load generator and the observer.
#[derive(Default)]
pub struct Timeline {
    /// (event id, when it was handed to the producer). The id is the input's offset for the
    /// framework (outputs name it as their cause) and a sequence number in the payload for
    /// raw Kafka and Kafka Streams.
    pub sent: Vec<(u64, Instant)>,
    /// (event id, when an output of it was read), in reading order; several per id for a
    /// transform with several outputs per input.
    pub seen: Vec<(u64, Instant)>,
    /// The writer of the latest canonical output read (the framework's observer only).
    pub latest_writer: Option<String>,
}

/// A timeline shared by the generator's and the observer's tasks.
pub type SharedTimeline = Arc<Mutex<Timeline>>;

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// (percentile, ms) points of the whole distribution, for the plot.
    pub curve: Vec<(f64, f64)>,
}

/// The summary of one timeline.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Events handed to the producer (all, warm-up included).
    pub sent: usize,
    /// Of those, how many were answered (an output seen).
    pub answered: usize,
    /// Events measured: answered and sent after the warm-up.
    pub measured: usize,
    /// Answered events per second while the pipeline was busy (see `analyze`).
    pub throughput_eps: f64,
    pub latency: Latency,
    /// Largest time between two consecutive outputs after the warm-up, while input kept
    /// coming: how long readers saw nothing.
    pub gap_max_ms: f64,
    /// The 99th percentile of those gaps, for scale.
    pub gap_p99_ms: f64,
    /// When the largest gap began, in seconds from the start of the load.
    pub gap_max_at_s: f64,
}

/// Summarises a timeline: events sent before `warmup_until` are left out of latency and
/// throughput; throughput counts the outputs read from `warmup_until` to the last one.
pub fn analyze(timeline: &Timeline, load_started: Instant, warmup_until: Instant) -> Summary {
    let first_seen = first_seen(timeline);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid bounds");
    let mut answered = 0;
    let mut measured_seen: Vec<Instant> = Vec::new();
    let mut last_sent = warmup_until;
    for (id, sent_at) in &timeline.sent {
        last_sent = last_sent.max(*sent_at);
        let Some(seen_at) = first_seen.get(id) else { continue };
        answered += 1;
        if *sent_at < warmup_until {
            continue;
        }
        let us = seen_at.saturating_duration_since(*sent_at).as_micros() as u64;
        histogram.saturating_record(us.max(1));
        measured_seen.push(*seen_at);
    }
    measured_seen.sort();
    let throughput_eps = match (measured_seen.first(), measured_seen.last()) {
        (Some(_), Some(last)) if *last > warmup_until => {
            measured_seen.len() as f64 / last.duration_since(warmup_until).as_secs_f64()
        }
        _ => 0.0,
    };
    // Gaps between consecutive first outputs, from the warm-up to the last input sent.
    let mut all_seen: Vec<Instant> = first_seen.values().copied().filter(|t| *t >= warmup_until).collect();
    all_seen.sort();
    let mut gaps = Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid bounds");
    let mut gap_max = Duration::ZERO;
    let mut gap_max_at = load_started;
    for pair in all_seen.windows(2) {
        if pair[0] > last_sent {
            break;
        }
        let gap = pair[1] - pair[0];
        if gap > gap_max {
            (gap_max, gap_max_at) = (gap, pair[0]);
        }
        gaps.saturating_record((gap.as_micros() as u64).max(1));
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let latency = if histogram.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1000.0,
            curve: curve(&histogram),
        }
    };
    Summary {
        sent: timeline.sent.len(),
        answered,
        measured: histogram.len() as usize,
        throughput_eps,
        latency,
        gap_max_ms: gap_max.as_secs_f64() * 1000.0,
        gap_p99_ms: if gaps.is_empty() { 0.0 } else { ms(gaps.value_at_quantile(0.99)) },
        gap_max_at_s: gap_max_at.saturating_duration_since(load_started).as_secs_f64(),
    }
}

/// Inputs answered per second from `from` to the last first answer: how fast a backlog that
/// was complete at `from` was worked through.
pub fn rate_since(timeline: &Timeline, from: Instant) -> f64 {
    let first_seen = first_seen(timeline);
    match first_seen.values().max() {
        Some(last) if *last > from => first_seen.len() as f64 / last.duration_since(from).as_secs_f64(),
        _ => 0.0,
    }
}

/// When each id was first answered.
fn first_seen(timeline: &Timeline) -> HashMap<u64, Instant> {
    let mut first_seen = HashMap::with_capacity(timeline.sent.len());
    for (id, at) in &timeline.seen {
        first_seen.entry(*id).or_insert(*at);
    }
    first_seen
}

/// The distribution at fixed percentiles, log-spaced towards the tail.
fn curve(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    for nines in 0..=40 {
        // 0, 0.25, …: percentiles 1 - 10^(-nines/10), up to 99.99.
        let quantile = 1.0 - 10f64.powf(-(nines as f64) / 10.0);
        if quantile > 0.9999 {
            break;
        }
        points.push((quantile * 100.0, histogram.value_at_quantile(quantile) as f64 / 1000.0));
    }
    points.push((100.0, histogram.max() as f64 / 1000.0));
    points
}
