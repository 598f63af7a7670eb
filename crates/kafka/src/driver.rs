//! Runs a [`ReplicaCore`] over an [`EventLog`]: the only part of a replica that does I/O
//! or reads a clock.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::LogError;
use crate::log::{EventLog, LogCursor};
use crate::schema_registry::SchemaRegistry;
use crate::shutdown::Shutdown;
use competing_transformers::codec::{avro_ids_to_resolve, SchemaCache};
use competing_transformers::event::{EventSourceKey, Offset};
use competing_transformers::record::FetchedRecord;
use competing_transformers::replica::{Divergence, Phase, ReplicaConfig, ReplicaCore, ReplicaStats};
use competing_transformers::transform::Transform;

/// How long a fetch waits on the log before the loop looks at its other work.
const FETCH_WAIT: Duration = Duration::from_millis(50);
/// How often time is fed to the core and the status published.
const TICK: Duration = Duration::from_millis(100);
/// How often the log end is asked for, to report lag.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long a catch-up goes between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long shutdown waits for writes in flight.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);

/// What a running replica reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The replica's id.
    pub replica_id: String,
    /// Race accounting.
    pub stats: ReplicaStats,
    /// Reader's next offset.
    pub position: Offset,
    /// Log end at the last check.
    pub log_end: Offset,
    /// Whether it is still catching up.
    pub catching_up: bool,
    /// Canonical outputs so far.
    pub outputs: u64,
    /// Canonical dead letters so far.
    pub dead_letters: u64,
}

impl ReplicaStatus {
    /// Records between the reader and the log end.
    pub fn lag(&self) -> u64 {
        self.log_end.saturating_sub(self.position)
    }
}

/// Why a replica stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// Its outputs differ from the canonical ones: restarting would not help.
    #[error("replica diverged: {0}")]
    Diverged(Divergence),
    /// The log failed in a way retrying cannot fix.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Runs one replica until `shutdown` is requested (then flushes what is in flight) or an
/// unrecoverable error. Transient log errors are retried with backoff. `status` receives the
/// replica's accounting about every 100 ms.
pub async fn run_replica<T: Transform, L: EventLog>(
    log: Arc<L>,
    transform: T,
    config: ReplicaConfig,
    shutdown: Shutdown,
    status: watch::Sender<ReplicaStatus>,
) -> Result<ReplicaStatus, ReplicaError> {
    run_replica_with_registry(log, transform, config, None, shutdown, status).await
}

/// [`run_replica`] with a schema registry: before each fetched batch reaches the core, the
/// writer schemas of its Avro inputs are looked up (cached) so the core can decode them
/// without I/O. While the registry is unreachable or failing (5xx) the batch waits and the
/// lookup is retried with backoff; an id the registry does not have reaches the core as
/// such and its events are dead-lettered with reason `schema`.
pub async fn run_replica_with_registry<T: Transform, L: EventLog>(
    log: Arc<L>,
    transform: T,
    config: ReplicaConfig,
    registry: Option<Arc<SchemaRegistry>>,
    mut shutdown: Shutdown,
    status: watch::Sender<ReplicaStatus>,
) -> Result<ReplicaStatus, ReplicaError> {
    let mut schemas = SchemaCache::new();
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let replica_id = config.replica_id.clone();
    let end = retry(&mut shutdown, || log.end_offset()).await?;
    let mut core = ReplicaCore::new(transform, config, end.unwrap_or(0));
    let Some(mut cursor) = retry(&mut shutdown, || log.cursor(0)).await? else {
        return Ok(ReplicaStatus { replica_id, ..Default::default() });
    };
    tracing::info!(replica = %replica_id, log_end = end.unwrap_or(0), "replica starting: catching up from offset 0");
    let mut deliveries = FuturesUnordered::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut log_end = end.unwrap_or(0);
    let log_ends = watch_log_end(log.clone(), log_end);
    let mut last_progress = Instant::now();
    let mut backoff = Backoff::for_retries();
    let mut was_catching_up = matches!(core.phase(), Phase::CatchingUp { .. });
    loop {
        tokio::select! {
            biased;
            () = shutdown.requested() => break,
            Some((write_id, outcome)) = deliveries.next(), if !deliveries.is_empty() => {
                let outcome: Result<Offset, LogError> = outcome;
                if let Err(error) = &outcome {
                    tracing::warn!(replica = %replica_id, %error, "a write failed; it will be re-sent");
                }
                core.on_delivery(write_id, outcome.map_err(|_| ()));
            }
            batch = next_batch(cursor.as_mut()), if core.wants_input() => {
                match batch {
                    Ok(records) => {
                        backoff.reset();
                        if let Some(registry) = &registry {
                            let subscriptions = core.subscriptions().to_vec();
                            if !resolve_schemas(registry, &records, &subscriptions, &mut schemas, &mut shutdown, &replica_id).await {
                                break;
                            }
                        }
                        core.on_fetched_with(&records, cursor.position(), &schemas);
                    }
                    Err(error) if error.is_transient() => {
                        let wait = backoff.next_wait();
                        tracing::warn!(replica = %replica_id, %error, "reading the log failed; retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            // A held group's turn: the poll below releases it.
            _ = sleep_until_ms(start, core.next_release_ms()) => {}
            _ = tick.tick() => {
                core.on_tick(now_ms());
                log_end = *log_ends.borrow();
                let catching_up = matches!(core.phase(), Phase::CatchingUp { .. });
                if catching_up && last_progress.elapsed() >= PROGRESS_EVERY {
                    last_progress = Instant::now();
                    if let Phase::CatchingUp { until } = core.phase() {
                        tracing::info!(replica = %replica_id, position = core.position(), until,
                            "catching up: {:.0}%", 100.0 * core.position() as f64 / until.max(1) as f64);
                    }
                }
                if was_catching_up && !catching_up {
                    tracing::info!(replica = %replica_id, position = core.position(), "caught up; live");
                }
                was_catching_up = catching_up;
                status.send_replace(snapshot(&core, log_end));
            }
        }
        if let Some(divergence) = core.divergence() {
            status.send_replace(snapshot(&core, log_end));
            return Err(ReplicaError::Diverged(divergence.clone()));
        }
        while let Some(write) = core.poll_write(now_ms()) {
            let delivery = log.append(&write.record);
            deliveries.push(async move { (write.write_id, delivery.await) });
        }
    }
    // Shutdown: let in-flight writes finish so nothing is left unknown.
    let flushed = tokio::time::timeout(SHUTDOWN_FLUSH, async {
        while let Some((write_id, outcome)) = deliveries.next().await {
            core.on_delivery(write_id, outcome.map_err(|_| ()));
        }
    })
    .await;
    if flushed.is_err() {
        tracing::warn!(replica = %replica_id, "shutdown: some writes were still in flight; other replicas or a restart will write them");
    }
    let last = snapshot(&core, log_end);
    status.send_replace(last.clone());
    tracing::info!(replica = %replica_id, "replica stopped");
    Ok(last)
}

/// Asks for the log end every [`LAG_EVERY`] on a task of its own (a broker round trip the
/// replica's loop must not wait for), until the receiver is dropped.
fn watch_log_end<L: EventLog>(log: Arc<L>, start: Offset) -> watch::Receiver<Offset> {
    let (sender, receiver) = watch::channel(start);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(LAG_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !sender.is_closed() {
            every.tick().await;
            if let Ok(end) = log.end_offset().await {
                sender.send_replace(end);
            }
        }
    });
    receiver
}

/// Sleeps until `at_ms` after `start`, or forever when there is nothing to wake for.
async fn sleep_until_ms(start: Instant, at_ms: Option<u64>) {
    match at_ms {
        Some(at) => tokio::time::sleep_until(start + Duration::from_millis(at)).await,
        None => std::future::pending().await,
    }
}

/// Resolves the writer schemas of the Avro inputs among `records` into `schemas`, retrying
/// with backoff while the registry is unavailable. False if shutdown came first.
async fn resolve_schemas(
    registry: &SchemaRegistry,
    records: &[FetchedRecord],
    subscriptions: &[EventSourceKey],
    schemas: &mut SchemaCache,
    shutdown: &mut Shutdown,
    replica_id: &str,
) -> bool {
    let ids = avro_ids_to_resolve(records, subscriptions, schemas);
    if ids.is_empty() {
        return true;
    }
    let mut backoff = Backoff::for_retries();
    loop {
        if shutdown.is_requested() {
            return false;
        }
        match registry.resolve(ids.iter().copied(), schemas).await {
            Ok(()) => return true,
            Err(error) => {
                let wait = backoff.next_wait();
                tracing::warn!(replica = %replica_id, %error, "cannot resolve Avro schemas; the batch waits, retrying in {wait:?}");
                shutdown.requested_within(wait).await;
            }
        }
    }
}

async fn next_batch(
    cursor: &mut dyn LogCursor,
) -> Result<Vec<competing_transformers::record::FetchedRecord>, LogError> {
    cursor.next_batch(FETCH_WAIT).await
}

fn snapshot<T: Transform>(core: &ReplicaCore<T>, log_end: Offset) -> ReplicaStatus {
    ReplicaStatus {
        replica_id: core.replica_id().to_string(),
        stats: core.stats(),
        position: core.position(),
        log_end: log_end.max(core.position()),
        catching_up: matches!(core.phase(), Phase::CatchingUp { .. }),
        outputs: core.rule().count(core.output_key()),
        dead_letters: core.rule().count(core.dead_letter_key()),
    }
}

/// Retries a transient failure with backoff until it succeeds, fails for good, or shutdown
/// is asked for (`None`).
async fn retry<F, Fut, V>(shutdown: &mut Shutdown, mut call: F) -> Result<Option<V>, LogError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<V, LogError>>,
{
    let mut backoff = Backoff::for_retries();
    loop {
        if shutdown.is_requested() {
            return Ok(None);
        }
        match call().await {
            Ok(value) => return Ok(Some(value)),
            Err(error) if error.is_transient() => {
                let wait = backoff.next_wait();
                tracing::warn!(%error, "retrying in {wait:?}");
                shutdown.requested_within(wait).await;
            }
            Err(error) => return Err(error),
        }
    }
}
