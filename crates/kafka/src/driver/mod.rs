//! Runs a [`ReplicaCore`] over an [`EventLog`]: the only part of a replica that does I/O
//! or reads a clock.
//!
//! Shaped like quinn's connection driver around quinn-proto: one short loop waits for what
//! comes first (shutdown, a delivery, the core's deadline, the status timer, a fetched
//! batch), hands it to the core in one `drive_*` step, lets the core write
//! (`Driver::drive_writes`) and sleeps to the core's one deadline
//! ([`ReplicaCore::poll_timeout_ms`]). The call order is the core's (`replica::core`).
//!
//! A failed write is sorted by its error ([`LogError`]): a transient one goes back to the
//! core, which writes again once its backoff has passed; any other ends this replica's run,
//! since sending the same record again could never succeed: a record the log refuses as such
//! ([`ReplicaError::Unwritable`], for good), a denied ACL (for good, `needs_operator`), a
//! fatal or fenced producer (the supervisor restarts the replica with a new client).

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

mod latency;
mod snapshots;

pub use latency::{LatencyHistogram, LATENCY_BOUNDS_US};

use crate::backoff::Backoff;
use crate::client::ClientStatistics;
use crate::error::LogError;
use crate::log::{Delivery, EventLog, LogCursor};
use crate::schema_decisions::{DecisionError, SchemaDecisions};
use crate::schema_registry::SchemaRegistry;
use crate::shutdown::Shutdown;
use crate::snapshot_store::Snapshots;
use competing_transformers::codec::{avro_ids_to_resolve, SchemaCache};
use competing_transformers::event::Offset;
use competing_transformers::record::FetchedRecord;
use competing_transformers::replica::{Divergence, Phase, ReplicaConfig, ReplicaCore, ReplicaStats};
use competing_transformers::transform::Transform;

/// How long a fetch waits on the log before the loop looks at its other work.
const FETCH_WAIT: Duration = Duration::from_millis(50);
/// How often the status is published (the core's own timers are its deadline).
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// How often the log end is asked for, to report lag.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long a catch-up goes between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Most schema ids a replica keeps parsed; past it the cache starts over.
const SCHEMAS_CACHED_MAX: usize = 1_024;
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
    /// How long this run waited from reading an input live to reading its canonical answer,
    /// on its own clock (`driver::latency` says why not from the record's timestamp).
    pub output_latency: LatencyHistogram,
    /// The log position of the newest snapshot this run resumed from or stored.
    pub snapshot_position: Option<Offset>,
    /// When this run stored that snapshot, in ms since the Unix epoch on this host's clock;
    /// `None` while its newest is the one it resumed from.
    pub snapshot_stored_at_ms: Option<u64>,
    /// What librdkafka last reported of the log's clients (with `statistics.interval.ms`).
    pub client: Option<ClientStatistics>,
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
    Diverged(Box<Divergence>),
    /// The log failed in a way retrying cannot fix.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log no longer holds the records the replica must read first: retention deleted
    /// them, and it has no snapshot at or after the log's first offset.
    #[error(
        "replica `{replica_id}` must read the log from offset {needed}, but the log starts at offset {start} (older records were deleted); store snapshots beside the log (`topics create` makes their topics; `snapshot_every_inputs`) before retention deletes records, or keep the log topic's retention infinite"
    )]
    Truncated {
        /// The replica.
        replica_id: String,
        /// Where it must start reading.
        needed: Offset,
        /// The log's first offset.
        start: Offset,
    },
    /// The log refused a record as such (too large, or not encodable): sending it again, or
    /// from a new client, would fail the same way. The core sizes and checks every record, so
    /// this is a bug, or a broker whose `message.max.bytes` is below the replica's
    /// `record_bytes_max`.
    #[error(
        "replica `{replica_id}` cannot write a record ({source}); it stops rather than send it again: check the broker's and producer's message.max.bytes against record_bytes_max"
    )]
    Unwritable {
        /// The replica.
        replica_id: String,
        /// Why the log refused it.
        source: LogError,
    },
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
    shutdown: Shutdown,
    status: watch::Sender<ReplicaStatus>,
) -> Result<ReplicaStatus, ReplicaError> {
    let services = ReplicaServices { registry, snapshots: None };
    run_replica_with(log, transform, config, services, shutdown, status).await
}

/// What a replica may use beside its log.
#[derive(Clone, Default)]
pub struct ReplicaServices {
    /// Where Avro writer schemas are looked up (see [`run_replica_with_registry`]).
    pub registry: Option<Arc<SchemaRegistry>>,
    /// Where snapshots are stored and found. With `snapshot_every_inputs` set, the replica
    /// starts from the newest that loads (the one before if not, then offset 0) and stores
    /// those it takes; a stored one whose digest differs from its own at the same position
    /// is a state divergence.
    pub snapshots: Option<Arc<dyn Snapshots>>,
}

/// [`run_replica`] with the services of [`ReplicaServices`].
pub async fn run_replica_with<T: Transform, L: EventLog>(
    log: Arc<L>,
    transform: T,
    config: ReplicaConfig,
    services: ReplicaServices,
    mut shutdown: Shutdown,
    status: watch::Sender<ReplicaStatus>,
) -> Result<ReplicaStatus, ReplicaError> {
    let replica_id = config.replica_id.clone();
    let Some(mut driver) = Driver::start(log, transform, config, services, status, &mut shutdown).await? else {
        return Ok(ReplicaStatus { replica_id, ..Default::default() });
    };
    let mut status_every = tokio::time::interval(STATUS_EVERY);
    status_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = driver.core.poll_timeout_ms();
        // Timers before the fetch: a log that always has records must not starve them.
        tokio::select! {
            biased;
            () = shutdown.requested() => break,
            Some((write_id, outcome)) = driver.deliveries.next(), if !driver.deliveries.is_empty() => {
                driver.drive_delivery(write_id, outcome)?;
            }
            _ = sleep_until_ms(driver.start, deadline) => driver.drive_timers(),
            _ = status_every.tick() => driver.drive_status(),
            () = driver.keeper.stored(&mut driver.core), if driver.keeper.is_storing() => {}
            batch = next_batch(driver.cursor.as_mut()) => {
                if driver.drive_fetch(batch, &mut shutdown).await?.is_break() {
                    break;
                }
            }
        }
        driver.drive_divergence()?;
        driver.drive_writes();
        driver.keeper.store_next(&mut driver.core);
    }
    Ok(driver.shut_down().await)
}

/// One running replica: its core and the I/O around it, between turns of the loop.
struct Driver<T: Transform, L: EventLog> {
    log: Arc<L>,
    core: ReplicaCore<T>,
    cursor: Box<dyn LogCursor>,
    registry: Option<Arc<SchemaRegistry>>,
    schemas: SchemaCache,
    decisions: SchemaDecisions,
    keeper: snapshots::Keeper,
    deliveries: FuturesUnordered<InFlight>,
    /// The zero of the core's clock.
    start: Instant,
    replica_id: String,
    status: watch::Sender<ReplicaStatus>,
    log_ends: watch::Receiver<Offset>,
    log_end: Offset,
    backoff: Backoff,
    last_progress: Instant,
    was_catching_up: bool,
    latency: latency::LatencyTracker,
    /// The newest snapshot resumed from at the start, if any.
    resumed_at: Option<Offset>,
    /// Non-empty batches read: with the records written, how much each turn of the loop
    /// carries.
    batches_fetched: u64,
}

impl<T: Transform, L: EventLog> Driver<T, L> {
    /// Reads the log end the catch-up runs to and opens a cursor at offset 0, retrying
    /// transient errors. `None` if shutdown came first.
    async fn start(
        log: Arc<L>,
        transform: T,
        config: ReplicaConfig,
        services: ReplicaServices,
        status: watch::Sender<ReplicaStatus>,
        shutdown: &mut Shutdown,
    ) -> Result<Option<Self>, ReplicaError> {
        let replica_id = config.replica_id.clone();
        log.prepare_writes()?;
        let mut config = config;
        // The log's trust table is every reader's, the replica's too.
        if !log.trust().is_empty() {
            config.trust = log.trust();
        }
        let Some(end) = retry(shutdown, || log.end_offset()).await? else { return Ok(None) };
        let core = snapshots::resume_or_start(services.snapshots.as_deref(), transform, config, end).await;
        let from = core.position();
        let Some(start) = retry(shutdown, || log.start_offset()).await? else { return Ok(None) };
        if from < start {
            return Err(ReplicaError::Truncated { replica_id, needed: from, start });
        }
        let Some(cursor) = retry(shutdown, || log.cursor(from)).await? else { return Ok(None) };
        let registry = services.registry;
        Ok(Some(Self {
            keeper: snapshots::Keeper::new(services.snapshots, replica_id.clone()),
            log_ends: watch_log_end(log.clone(), end),
            log,
            was_catching_up: matches!(core.phase(), Phase::CatchingUp { .. }),
            core,
            cursor,
            registry,
            schemas: SchemaCache::new(),
            decisions: SchemaDecisions::new(replica_id.clone()),
            deliveries: FuturesUnordered::new(),
            start: Instant::now(),
            replica_id,
            status,
            log_end: end,
            backoff: Backoff::for_retries(),
            last_progress: Instant::now(),
            latency: latency::LatencyTracker::default(),
            resumed_at: Some(from).filter(|from| *from > 0),
            batches_fetched: 0,
        }))
    }

    /// The core's clock: ms since the driver started.
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A fetched batch (or the error fetching it) into the core, its Avro writer schemas
    /// resolved first. Break if shutdown came while the registry was being waited for.
    async fn drive_fetch(
        &mut self,
        batch: Result<Vec<FetchedRecord>, LogError>,
        shutdown: &mut Shutdown,
    ) -> Result<ControlFlow<()>, ReplicaError> {
        match batch {
            Ok(records) => {
                self.backoff.reset();
                self.batches_fetched += u64::from(!records.is_empty());
                if !self.resolve_schemas(&records, shutdown).await? {
                    return Ok(ControlFlow::Break(()));
                }
                let live = !matches!(self.core.phase(), Phase::CatchingUp { .. });
                let answers = [self.core.output_key(), self.core.dead_letter_key()];
                self.latency.on_batch(&records, self.core.subscriptions(), answers, live, Instant::now());
                self.core.on_fetched_with(&records, self.cursor.position(), &self.schemas);
                if self.core.position() != self.cursor.position() {
                    return self.reopen_cursor(shutdown).await;
                }
            }
            Err(error) if error.is_transient() => {
                let wait = self.backoff.next_wait();
                tracing::warn!(replica = %self.replica_id, %error, "reading the log failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Reads from where the core wants to read next: back to deferred inputs, or ahead past
    /// them (`replica::core`, "Deferring"). Break if shutdown came first.
    async fn reopen_cursor(&mut self, shutdown: &mut Shutdown) -> Result<ControlFlow<()>, ReplicaError> {
        let from = self.core.position();
        tracing::debug!(replica = %self.replica_id, from, deferring = self.core.is_deferring(), "reading from another offset");
        match retry(shutdown, || self.log.cursor(from)).await? {
            Some(cursor) => {
                self.cursor = cursor;
                Ok(ControlFlow::Continue(()))
            }
            None => Ok(ControlFlow::Break(())),
        }
    }

    /// Resolves the writer schemas of the Avro inputs among `records` as the log decides
    /// them ([`SchemaDecisions`]), retrying with backoff while the registry or the log is
    /// unavailable. False if shutdown came first.
    async fn resolve_schemas(&mut self, records: &[FetchedRecord], shutdown: &mut Shutdown) -> Result<bool, LogError> {
        let Some(registry) = &self.registry else { return Ok(true) };
        if self.schemas.len() > SCHEMAS_CACHED_MAX {
            // Forged ids must not grow a replica: what the log decided is kept in
            // `decisions` and parsed again when met again.
            self.schemas = SchemaCache::new();
        }
        let ids: Vec<u32> =
            avro_ids_to_resolve(records, self.core.subscriptions(), &self.schemas).into_iter().collect();
        if ids.is_empty() {
            return Ok(true);
        }
        let mut backoff = Backoff::for_retries();
        loop {
            if shutdown.is_requested() {
                return Ok(false);
            }
            let error = match self.decisions.resolve(&self.log, registry, &ids, &mut self.schemas).await {
                Ok(()) => return Ok(true),
                Err(DecisionError::Log(error)) if !error.is_transient() => return Err(error),
                Err(error) => error,
            };
            let wait = backoff.next_wait();
            tracing::warn!(replica = %self.replica_id, %error, "cannot resolve Avro schemas; the batch waits, retrying in {wait:?}");
            shutdown.requested_within(wait).await;
        }
    }

    /// A write's outcome into the core. A transient failure is the core's to retry after its
    /// backoff; any other ends the replica's run (see the module's documentation).
    fn drive_delivery(&mut self, write_id: u64, outcome: Result<Offset, LogError>) -> Result<(), ReplicaError> {
        let error = match outcome {
            Ok(offset) => {
                self.core.on_delivery(write_id, Ok(offset));
                return Ok(());
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(replica = %self.replica_id, %error, "a write failed; it will be sent again after a backoff");
                self.core.on_delivery(write_id, Err(()));
                return Ok(());
            }
            Err(error) => error,
        };
        self.core.on_delivery(write_id, Err(()));
        self.status.send_replace(self.status_now());
        tracing::error!(replica = %self.replica_id, %error, "a write failed in a way sending it again cannot fix; the replica stops");
        Err(if error.is_refused_record() {
            ReplicaError::Unwritable { replica_id: self.replica_id.clone(), source: error }
        } else {
            ReplicaError::Log(error)
        })
    }

    /// The core's deadline has come: let it see the time.
    fn drive_timers(&mut self) {
        self.core.on_timeout(self.now_ms());
    }

    /// Publishes the status, with the log end last seen and progress lines.
    fn drive_status(&mut self) {
        self.log_end = *self.log_ends.borrow();
        let catching_up = matches!(self.core.phase(), Phase::CatchingUp { .. });
        if catching_up && self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            if let Phase::CatchingUp { until } = self.core.phase() {
                let position = self.core.input_position();
                tracing::info!(replica = %self.replica_id, position, until,
                    "catching up: {:.0}%", 100.0 * position as f64 / until.max(1) as f64);
            }
        }
        if self.was_catching_up && !catching_up {
            tracing::info!(replica = %self.replica_id, position = self.core.input_position(), "caught up; live");
        }
        self.was_catching_up = catching_up;
        self.status.send_replace(self.status_now());
    }

    /// The status now: the core's counts, the log end last seen, the latencies, the newest
    /// snapshot and the clients' statistics.
    fn status_now(&self) -> ReplicaStatus {
        let stored = self.keeper.last_stored();
        ReplicaStatus {
            output_latency: self.latency.histogram.clone(),
            snapshot_position: stored.map(|(position, _)| position).or(self.resumed_at),
            snapshot_stored_at_ms: stored.map(|(_, at_ms)| at_ms),
            client: self.log.client_statistics(),
            ..snapshot(&self.core, self.log_end)
        }
    }

    /// Stops the replica once its core has seen a divergence.
    fn drive_divergence(&self) -> Result<(), ReplicaError> {
        match self.core.divergence() {
            Some(divergence) => {
                self.status.send_replace(self.status_now());
                Err(ReplicaError::Diverged(Box::new(divergence.clone())))
            }
            None => Ok(()),
        }
    }

    /// Appends every record the core has to write now.
    fn drive_writes(&mut self) {
        let now_ms = self.now_ms();
        while let Some(write) = self.core.poll_write(now_ms) {
            let delivery = self.log.append_with_details(&write.record, &write.details);
            self.deliveries.push(InFlight { write_id: write.write_id, delivery });
        }
    }

    /// Shutdown: lets in-flight writes finish so nothing is left unknown, and publishes the
    /// last status.
    async fn shut_down(mut self) -> ReplicaStatus {
        let flushed = tokio::time::timeout(SHUTDOWN_FLUSH, async {
            while let Some((write_id, outcome)) = self.deliveries.next().await {
                self.core.on_delivery(write_id, outcome.map_err(|_| ()));
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(replica = %self.replica_id, "shutdown: some writes were still in flight; other replicas or a restart will write them");
        }
        let last = self.status_now();
        self.status.send_replace(last.clone());
        tracing::info!(replica = %self.replica_id, inputs = last.stats.inputs_processed,
            records_written = last.stats.records_written, batches_fetched = self.batches_fetched, "replica stopped");
        last
    }
}

/// A write in flight: its delivery, tagged with the id the core knows the write by.
struct InFlight {
    write_id: u64,
    delivery: Delivery,
}

impl Future for InFlight {
    type Output = (u64, Result<Offset, LogError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let write_id = self.write_id;
        self.delivery.as_mut().poll(cx).map(|outcome| (write_id, outcome))
    }
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

async fn next_batch(cursor: &mut dyn LogCursor) -> Result<Vec<FetchedRecord>, LogError> {
    cursor.next_batch(FETCH_WAIT).await
}

fn snapshot<T: Transform>(core: &ReplicaCore<T>, log_end: Offset) -> ReplicaStatus {
    ReplicaStatus {
        replica_id: core.replica_id().to_string(),
        stats: core.stats(),
        position: core.input_position(),
        log_end: log_end.max(core.input_position()),
        catching_up: matches!(core.phase(), Phase::CatchingUp { .. }),
        outputs: core.own_rule().count(core.output_key()),
        dead_letters: core.own_rule().count(core.dead_letter_key()),
        ..ReplicaStatus::default()
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{KafkaError, RDKafkaErrorCode};
    use crate::shutdown::ShutdownTrigger;
    use competing_transformers::record::Record;
    use competing_transformers::testing::Echo;
    use competing_transformers::EventSourceKey;
    use competing_transformers::{Event, MemoryLog};

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    /// A memory log whose `n`-th append fails with `refuse(n)` when it says so.
    struct Refusing {
        log: MemoryLog,
        appends: AtomicUsize,
        refuse: fn(usize) -> Option<LogError>,
    }

    #[async_trait::async_trait]
    impl EventLog for Refusing {
        fn append(&self, record: &Record) -> Delivery {
            match (self.refuse)(self.appends.fetch_add(1, Ordering::SeqCst)) {
                Some(error) => Box::pin(async move { Err(error) }),
                None => self.log.append(record),
            }
        }
        async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError> {
            self.log.cursor(from).await
        }
        async fn end_offset(&self) -> Result<Offset, LogError> {
            self.log.end_offset().await
        }
        async fn flush(&self, timeout: Duration) -> Result<(), LogError> {
            self.log.flush(timeout).await
        }
    }

    fn unavailable() -> LogError {
        let code = RDKafkaErrorCode::RequestTimedOut;
        LogError::Unavailable {
            topic: "log".into(),
            partition: Some(0),
            offset: None,
            code: Some(code),
            source: Box::new(KafkaError::MessageProduction(code)),
        }
    }

    fn fatal(code: RDKafkaErrorCode) -> LogError {
        LogError::Fatal {
            topic: "log".into(),
            partition: Some(0),
            offset: None,
            code: Some(code),
            source: Box::new(KafkaError::MessageProduction(code)),
        }
    }

    fn unauthorized() -> LogError {
        let code = RDKafkaErrorCode::TopicAuthorizationFailed;
        LogError::Unauthorized { topic: "log".into(), code, source: Box::new(KafkaError::MessageProduction(code)) }
    }

    /// Runs a replica of `Echo` over a log holding one input, whose appends fail by
    /// `refuse`, for at most `run_for`; then shuts it down. Its result and the log.
    async fn run(
        refuse: fn(usize) -> Option<LogError>,
        run_for: Duration,
    ) -> (Result<ReplicaStatus, ReplicaError>, Arc<Refusing>) {
        let log = Arc::new(Refusing { log: MemoryLog::new(), appends: AtomicUsize::new(0), refuse });
        log.log.publish(&key("in"), vec![Event::new(key("in"), None, None, 7, "text/plain", b"a".to_vec())]);
        let trigger = ShutdownTrigger::new();
        let (status, _) = watch::channel(ReplicaStatus::default());
        let mut task = tokio::spawn(run_replica(
            log.clone(),
            Echo::default(),
            ReplicaConfig::new("r"),
            trigger.subscribe(),
            status,
        ));
        let ended = tokio::time::timeout(run_for, &mut task).await;
        let result = match ended {
            Ok(result) => result,
            Err(_) => {
                trigger.request();
                tokio::time::timeout(Duration::from_secs(15), task).await.expect("the replica stops on shutdown")
            }
        };
        (result.expect("the replica's task ends without panicking"), log)
    }

    #[tokio::test]
    async fn a_write_that_keeps_failing_transiently_is_sent_again_only_after_a_backoff() {
        let (result, log) = run(|_| Some(unavailable()), Duration::from_secs(1)).await;
        let status = result.expect("transient failures do not stop the replica");
        let appends = log.appends.load(Ordering::SeqCst);
        // Waits of 100, 200, 400 ms nominal (up to twice that each): a handful in a second,
        // not one per turn of the loop.
        assert!((2..=5).contains(&appends), "{appends} appends in a second");
        assert_eq!(status.stats.delivery_failures, appends as u64);
    }

    #[tokio::test]
    async fn a_write_that_fails_transiently_lands_once_the_log_takes_it() {
        let (result, log) = run(|n| (n < 2).then(unavailable), Duration::from_secs(3)).await;
        result.expect("transient failures do not stop the replica");
        assert_eq!(log.log.canonical(&key("echo")).len(), 1);
        assert_eq!(log.appends.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_record_the_log_refuses_stops_the_replica_instead_of_being_sent_again() {
        let (result, log) = run(|_| Some(fatal(RDKafkaErrorCode::MessageSizeTooLarge)), Duration::from_secs(5)).await;
        assert!(matches!(result, Err(ReplicaError::Unwritable { .. })), "{result:?}");
        assert_eq!(log.appends.load(Ordering::SeqCst), 1, "never sent again");
        let (result, _) = run(
            |_| Some(LogError::Encode(competing_transformers::record::EncodeError::NoEvents)),
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(result, Err(ReplicaError::Unwritable { source: LogError::Encode(_), .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_denied_acl_stops_the_replica_for_an_operator() {
        let (result, log) = run(|_| Some(unauthorized()), Duration::from_secs(5)).await;
        assert!(matches!(&result, Err(ReplicaError::Log(error)) if error.needs_operator()), "{result:?}");
        assert_eq!(log.appends.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_fatal_producer_ends_the_replica_s_run_for_a_new_client() {
        let (result, log) = run(|_| Some(fatal(RDKafkaErrorCode::Fatal)), Duration::from_secs(5)).await;
        assert!(
            matches!(&result, Err(ReplicaError::Log(error @ LogError::Fatal { .. })) if !error.needs_operator()),
            "{result:?}"
        );
        assert_eq!(log.appends.load(Ordering::SeqCst), 1);
    }
}
