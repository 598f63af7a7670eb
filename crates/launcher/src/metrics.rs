//! `run`'s observability endpoint: Prometheus metrics, liveness and readiness, over HTTP on
//! one listener.
//!
//! The replicas already publish their [`ReplicaStatus`] on a `watch`; each scrape reads the
//! latest of every replica, so nothing is counted twice and the replicas do no extra work.
//! A restarted replica counts from zero again: the exporter carries what the ended run had
//! counted, so every `_total` stays monotonic for the life of the process. It also samples
//! between scrapes, more often than the shortest restart backoff, so it sees every run.
//!
//! The HTTP side is a few lines over tokio: three GET routes answered with
//! `Connection: close`, which is all Prometheus and Kubernetes probes need.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use competing_transformers_kafka::driver::{LatencyHistogram, LATENCY_BOUNDS_US};
use competing_transformers_kafka::ReplicaStatus;

/// Most bytes of a request read before answering: a GET's request line and headers.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How often the replicas' status is read between scrapes: a restarted run's counts are
/// carried on only if the exporter saw its watch, so it looks more often than replicas restart.
const SAMPLE_EVERY_MS: u64 = 250;
/// The content type of the OpenMetrics text `prometheus-client` writes.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a replica counts as ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Running and caught up: transforming new inputs as they come.
    Live,
    /// Starting, catching up, restarting or stopped by shutdown.
    NotYet,
    /// Stopped for good (diverged, or a failure only an operator can fix).
    Stopped,
}

/// One replica as the supervisor sees it at a scrape.
pub(crate) struct ReplicaView {
    /// The transformer it runs.
    pub transformer: String,
    /// Its replica id.
    pub replica: String,
    /// The pipeline it reads and writes (0 on a log of one).
    pub pipeline: u32,
    /// Its current run's status, once it has started.
    pub status: Option<watch::Receiver<ReplicaStatus>>,
    /// Restarts so far.
    pub restarts: u32,
    /// Whether it is ready.
    pub readiness: Readiness,
}

/// What the supervisor hands the exporter: every replica's view, read at each scrape.
pub(crate) type Views = Arc<dyn Fn() -> Vec<ReplicaView> + Send + Sync>;

/// The labels of every per-replica metric; `pipeline` is always there ("0" on a log of one
/// pipeline), so dashboards need no second shape.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    transformer: String,
    replica: String,
    pipeline: String,
}

/// A count a replica's status holds, and how it behaves across the replica's restarts.
struct CounterSpec {
    /// The metric's name, without the `_total` the encoder appends.
    name: &'static str,
    help: &'static str,
    read: fn(&ReplicaStatus) -> u64,
    /// Work this run did (summed over runs), or a position on the log that a new run reaches
    /// again by replaying (the largest seen).
    summed: bool,
}

/// The counters, in the order they are exported.
const COUNTERS: &[CounterSpec] = &[
    CounterSpec {
        name: "transformer_inputs_applied",
        help: "Canonical inputs the replica transformed, replays after a restart included",
        read: |s| s.stats.inputs_processed,
        summed: true,
    },
    CounterSpec {
        name: "transformer_outputs",
        help: "Canonical outputs on the transformer's output stream, as far as the replica has read",
        read: |s| s.outputs,
        summed: false,
    },
    CounterSpec {
        name: "transformer_dead_letters",
        help: "Canonical dead letters on the transformer's dead-letter stream, as far as the replica has read",
        read: |s| s.dead_letters,
        summed: false,
    },
    CounterSpec {
        name: "transformer_races_won",
        help: "The replica's events that became canonical",
        read: |s| s.stats.races_won,
        summed: true,
    },
    CounterSpec {
        name: "transformer_races_lost",
        help: "The replica's events another replica wrote first (duplicates written)",
        read: |s| s.stats.races_lost,
        summed: true,
    },
    CounterSpec {
        name: "transformer_records_written",
        help: "Records the replica appended, first sends and re-sends",
        read: |s| s.stats.records_written,
        summed: true,
    },
    CounterSpec {
        name: "transformer_groups_resent",
        help: "Output groups the replica sent again after a loss",
        read: |s| s.stats.groups_resent,
        summed: true,
    },
    CounterSpec {
        name: "transformer_writes_skipped",
        help: "Output groups not written because they were already canonical",
        read: |s| s.stats.writes_skipped,
        summed: true,
    },
    CounterSpec {
        name: "transformer_writes_rejected",
        help: "The replica's events rejected as ahead of the stream's count",
        read: |s| s.stats.writes_rejected,
        summed: true,
    },
    CounterSpec {
        name: "transformer_delivery_failures",
        help: "Records whose delivery failed",
        read: |s| s.stats.delivery_failures,
        summed: true,
    },
    CounterSpec {
        name: "transformer_divergences",
        help: "Canonical events on the replica's own streams that differ from what it computed",
        read: |s| s.stats.divergences,
        summed: true,
    },
    CounterSpec {
        name: "transformer_deferrals",
        help: "Times inputs waited because the output groups held reached the memory bound",
        read: |s| s.stats.deferrals,
        summed: true,
    },
];

/// One replica's counts across its runs in this process.
#[derive(Default)]
struct Tracked {
    /// The run seen last; kept so its final counts are read once a new run replaces it.
    run: Option<watch::Receiver<ReplicaStatus>>,
    /// Per [`COUNTERS`] entry: summed over ended runs, or the largest seen.
    carried: Vec<u64>,
    /// The latencies of ended runs, added up.
    latency_carried: LatencyHistogram,
}

/// What [`Tracked::observe`] reads: each counter's value and the latencies, over all runs.
struct Observed {
    counters: Vec<u64>,
    latency: LatencyHistogram,
}

impl Tracked {
    /// Follows `current` (the replica's run now) and returns each counter's value.
    fn observe(&mut self, current: Option<&watch::Receiver<ReplicaStatus>>) -> Observed {
        self.carried.resize(COUNTERS.len(), 0);
        if let Some(current) = current {
            match &self.run {
                Some(run) if run.same_channel(current) => {}
                Some(ended) => {
                    let last = ended.borrow().clone();
                    self.latency_carried = self.latency_carried.plus(&last.output_latency);
                    for (carried, spec) in self.carried.iter_mut().zip(COUNTERS) {
                        *carried = if spec.summed {
                            *carried + (spec.read)(&last)
                        } else {
                            (*carried).max((spec.read)(&last))
                        };
                    }
                    self.run = Some(current.clone());
                }
                None => self.run = Some(current.clone()),
            }
        }
        let now = self.run.as_ref().map(|run| run.borrow().clone()).unwrap_or_default();
        let counters = COUNTERS
            .iter()
            .zip(&self.carried)
            .map(
                |(spec, carried)| {
                    if spec.summed {
                        carried + (spec.read)(&now)
                    } else {
                        (*carried).max((spec.read)(&now))
                    }
                },
            )
            .collect();
        Observed { counters, latency: self.latency_carried.plus(&now.output_latency) }
    }
}

/// The input→canonical-output latency histogram of one replica, set whole at each sample
/// from the numbers the driver keeps (it has no Prometheus types).
#[derive(Clone, Debug, Default)]
struct Latency(Arc<Mutex<LatencyHistogram>>);

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let histogram = self.0.lock().expect("latency lock").clone();
        let bounds = LATENCY_BOUNDS_US.iter().map(|bound| *bound as f64 / 1e6).chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(histogram.buckets).collect();
        encoder.encode_histogram::<NoLabelSet>(histogram.sum_us as f64 / 1e6, histogram.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

/// Gauges read from a replica's status, each absent until its value is known.
struct GaugeSpec {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    read: fn(&ReplicaStatus, now_ms: u64) -> Option<f64>,
}

/// The gauges beyond lag and catch-up: snapshot age and librdkafka's statistics.
const GAUGES: &[GaugeSpec] = &[
    GaugeSpec {
        name: "transformer_snapshot_age_records",
        help: "Log records between the newest snapshot the replica resumed from or stored and its read position",
        unit: None,
        read: |s, _| s.snapshot_position.map(|at| s.position.saturating_sub(at) as f64),
    },
    GaugeSpec {
        name: "transformer_snapshot_age",
        help: "Seconds since the replica last stored a snapshot, on this host's clock",
        unit: Some(Unit::Seconds),
        read: |s, now_ms| s.snapshot_stored_at_ms.map(|at| now_ms.saturating_sub(at) as f64 / 1e3),
    },
    GaugeSpec {
        name: "transformer_kafka_consumer_lag_records",
        help:
            "Records behind the partition's high watermark, as librdkafka's consumer reports (statistics consumer_lag)",
        unit: None,
        read: |s, _| s.client.and_then(|c| c.consumer_lag_records).map(|lag| lag as f64),
    },
    GaugeSpec {
        name: "transformer_kafka_producer_queue_records",
        help: "Records in the producer's queue, unsent or unacknowledged (librdkafka statistics msg_cnt)",
        unit: None,
        read: |s, _| s.client.and_then(|c| c.producer_queue_records).map(|n| n as f64),
    },
    GaugeSpec {
        name: "transformer_kafka_broker_rtt",
        help: "The largest broker's average request round-trip time over librdkafka's last statistics window",
        unit: Some(Unit::Seconds),
        read: |s, _| s.client.and_then(|c| c.broker_rtt_avg_us).map(|us| us as f64 / 1e6),
    },
];

/// The metrics of every replica, refreshed from their views at each scrape.
pub(crate) struct Exporter {
    views: Views,
    registry: Registry,
    counters: Vec<Family<Labels, Counter>>,
    restarts: Family<Labels, Counter>,
    lag: Family<Labels, Gauge>,
    catching_up: Family<Labels, Gauge>,
    latency: Family<Labels, Latency>,
    gauges: Vec<Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>>,
    tracked: Mutex<BTreeMap<String, Tracked>>,
}

impl Exporter {
    /// An exporter of the replicas `views` lists.
    pub(crate) fn new(views: Views) -> Self {
        let mut registry = Registry::default();
        let counters: Vec<Family<Labels, Counter>> = COUNTERS
            .iter()
            .map(|spec| {
                let family = Family::default();
                registry.register(spec.name, spec.help, family.clone());
                family
            })
            .collect();
        let (restarts, lag, catching_up) = (Family::default(), Family::default(), Family::default());
        registry.register("transformer_replica_restarts", "Times the launcher restarted the replica", restarts.clone());
        registry.register(
            "transformer_lag_records",
            "Records between the replica's read position and the log end",
            lag.clone(),
        );
        registry.register(
            "transformer_catching_up",
            "1 while the replica replays the log before going live, else 0",
            catching_up.clone(),
        );
        let latency = Family::default();
        registry.register_with_unit(
            "transformer_output_latency",
            "Time from the replica reading an input live to reading its canonical output or dead letter, on its own clock",
            Unit::Seconds,
            latency.clone(),
        );
        let gauges = GAUGES
            .iter()
            .map(|spec| {
                let family = Family::default();
                match &spec.unit {
                    Some(unit) => registry.register_with_unit(spec.name, spec.help, unit.clone(), family.clone()),
                    None => registry.register(spec.name, spec.help, family.clone()),
                }
                family
            })
            .collect();
        let tracked = Mutex::new(BTreeMap::new());
        Exporter { views, registry, counters, restarts, lag, catching_up, latency, gauges, tracked }
    }

    /// The metrics now, as OpenMetrics text.
    pub(crate) fn render(&self) -> String {
        self.sample();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Reads every replica's status into the metrics.
    fn sample(&self) {
        let mut tracked = self.tracked.lock().expect("exporter lock");
        for view in (self.views)() {
            let labels = Labels {
                transformer: view.transformer,
                replica: view.replica.clone(),
                pipeline: view.pipeline.to_string(),
            };
            let observed = tracked.entry(view.replica).or_default().observe(view.status.as_ref());
            *self.latency.get_or_create(&labels).0.lock().expect("latency lock") = observed.latency;
            for (family, value) in self.counters.iter().zip(observed.counters) {
                family.get_or_create(&labels).inner().store(value, std::sync::atomic::Ordering::Relaxed);
            }
            self.restarts
                .get_or_create(&labels)
                .inner()
                .store(u64::from(view.restarts), std::sync::atomic::Ordering::Relaxed);
            let status = view.status.as_ref().map(|s| s.borrow().clone()).unwrap_or_default();
            self.lag.get_or_create(&labels).set(i64::try_from(status.lag()).unwrap_or(i64::MAX));
            let catching_up = view.status.is_none() || status.catching_up;
            self.catching_up.get_or_create(&labels).set(i64::from(catching_up));
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
            for (family, spec) in self.gauges.iter().zip(GAUGES) {
                match (spec.read)(&status, now_ms) {
                    Some(value) => {
                        family.get_or_create(&labels).set(value);
                    }
                    None => {
                        family.remove(&labels);
                    }
                }
            }
        }
    }

    /// Samples every [`SAMPLE_EVERY_MS`] between scrapes, so a run that ends between two
    /// scrapes still hands its counts on to the next; until the task is aborted.
    pub(crate) async fn sample_periodically(&self) {
        let mut every = tokio::time::interval(Duration::from_millis(SAMPLE_EVERY_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.sample();
        }
    }

    /// `Ok` when every replica is live; else the replicas that are not, and why.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        let views = (self.views)();
        let waiting: Vec<String> = views
            .iter()
            .filter(|view| view.readiness != Readiness::Live)
            .map(|view| {
                let why = if view.readiness == Readiness::Stopped { "stopped for good" } else { "not live yet" };
                format!("{} {why}", view.replica)
            })
            .collect();
        if views.is_empty() {
            return Err("no replicas".into());
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(waiting.join(", "))
        }
    }
}

/// Listens on `address`, or says why it cannot.
pub(crate) async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Answers every connection `listener` accepts, sampling the replicas meanwhile, until the
/// task is aborted.
pub(crate) async fn serve(listener: TcpListener, exporter: Arc<Exporter>) {
    tokio::select! {
        () = exporter.sample_periodically() => {}
        () = accept(listener, exporter.clone()) => {}
    }
}

/// Hands each accepted connection to a task of its own.
async fn accept(listener: TcpListener, exporter: Arc<Exporter>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let exporter = exporter.clone();
                tokio::spawn(async move {
                    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
                    if let Ok(Err(error)) = tokio::time::timeout(timeout, answer(stream, &exporter)).await {
                        tracing::debug!(%error, "metrics request failed");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "metrics listener cannot accept; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request and writes its answer.
async fn answer(mut stream: TcpStream, exporter: &Exporter) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_BYTES_MAX {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, content_type, body) = route(method, target.split('?').next().unwrap_or(""), exporter);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// The status line's code and reason, the content type and the body for a request.
fn route(method: &str, path: &str, exporter: &Exporter) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "only GET and HEAD\n".into());
    }
    match path {
        "/metrics" => ("200 OK", METRICS_CONTENT_TYPE, exporter.render()),
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => match exporter.readiness() {
            Ok(()) => ("200 OK", TEXT, "ready\n".into()),
            Err(why) => ("503 Service Unavailable", TEXT, format!("not ready: {why}\n")),
        },
        _ => ("404 Not Found", TEXT, "not found; try /metrics, /healthz or /readyz\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::replica::ReplicaStats;

    fn status(inputs: u64, outputs: u64) -> ReplicaStatus {
        ReplicaStatus {
            replica_id: "h-echo-1".into(),
            stats: ReplicaStats { inputs_processed: inputs, races_won: inputs, ..Default::default() },
            outputs,
            ..Default::default()
        }
    }

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines().find(|line| line.starts_with(name)).and_then(|line| line.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn counters_stay_monotonic_across_a_restart() {
        let (first, first_rx) = watch::channel(status(5, 5));
        let view = Arc::new(Mutex::new((Some(first_rx), Readiness::Live)));
        let views: Views = {
            let view = view.clone();
            Arc::new(move || {
                let (status, readiness) = view.lock().unwrap().clone();
                vec![ReplicaView {
                    transformer: "echo".into(),
                    replica: "h-echo-1".into(),
                    pipeline: 0,
                    status,
                    restarts: 0,
                    readiness,
                }]
            })
        };
        let exporter = Exporter::new(views);
        let text = exporter.render();
        assert_eq!(value(&text, "transformer_inputs_applied_total{"), Some(5.0), "{text}");
        assert!(exporter.readiness().is_ok());
        first.send_replace(status(7, 7));
        // A new run: it replays from zero, its counts restart.
        let (_second, second_rx) = watch::channel(ReplicaStatus { catching_up: true, ..status(2, 2) });
        *view.lock().unwrap() = (Some(second_rx), Readiness::NotYet);
        let text = exporter.render();
        assert_eq!(value(&text, "transformer_inputs_applied_total{"), Some(9.0), "{text}");
        assert_eq!(value(&text, "transformer_outputs_total{"), Some(7.0), "{text}");
        assert_eq!(value(&text, "transformer_catching_up{"), Some(1.0), "{text}");
        assert!(text.contains("transformer=\"echo\",replica=\"h-echo-1\",pipeline=\"0\""), "{text}");
        assert!(exporter.readiness().unwrap_err().contains("h-echo-1 not live yet"));
    }

    #[test]
    fn latency_snapshot_age_and_client_statistics_are_exported() {
        let mut latest = status(3, 3);
        latest.output_latency.observe(1_500);
        latest.position = 120;
        latest.snapshot_position = Some(100);
        latest.client = Some(competing_transformers_kafka::client::ClientStatistics {
            consumer_lag_records: Some(4),
            producer_queue_records: Some(2),
            broker_rtt_avg_us: Some(250),
        });
        let (_sender, receiver) = watch::channel(latest);
        let views: Views = Arc::new(move || {
            vec![ReplicaView {
                transformer: "echo".into(),
                replica: "h-echo-1".into(),
                pipeline: 2,
                status: Some(receiver.clone()),
                restarts: 0,
                readiness: Readiness::Live,
            }]
        });
        let text = Exporter::new(views).render();
        assert!(text.contains("# TYPE transformer_output_latency_seconds histogram"), "{text}");
        assert_eq!(value(&text, "transformer_output_latency_seconds_bucket{le=\"0.001\","), Some(0.0), "{text}");
        assert_eq!(value(&text, "transformer_output_latency_seconds_bucket{le=\"0.0025\","), Some(1.0), "{text}");
        assert_eq!(value(&text, "transformer_output_latency_seconds_count{"), Some(1.0), "{text}");
        assert_eq!(value(&text, "transformer_snapshot_age_records{"), Some(20.0), "{text}");
        assert_eq!(value(&text, "transformer_snapshot_age_seconds{"), None, "stored by no run: {text}");
        assert_eq!(value(&text, "transformer_kafka_consumer_lag_records{"), Some(4.0), "{text}");
        assert_eq!(value(&text, "transformer_kafka_producer_queue_records{"), Some(2.0), "{text}");
        assert_eq!(value(&text, "transformer_kafka_broker_rtt_seconds{"), Some(0.00025), "{text}");
        assert!(
            text.contains("transformer_lag_records{transformer=\"echo\",replica=\"h-echo-1\",pipeline=\"2\"}"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_endpoints_answer_over_http() {
        let exporter = Arc::new(Exporter::new(Arc::new(Vec::new)));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, exporter));
        for (path, expected) in [("/healthz", "200"), ("/readyz", "503"), ("/metrics", "200"), ("/nope", "404")] {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with(&format!("HTTP/1.1 {expected}")), "{path}: {answer}");
        }
        server.abort();
    }
}
