//! `run`: replicas as tasks of this process, restarted when they fail, stopped by signals.
//!
//! Each replica gets its own [`KafkaLog`] (its own producer session and consumer) and a fresh
//! transform from the registry each time it starts. On a log of several pipelines each
//! (pipeline, transformer, replica) is a slot of its own: the client and snapshot store of its
//! pipeline, its own supervisor and restarts; a slot that stops for good stops alone, as on a
//! log of one pipeline, and `run` exits with its code when the others end. What ends a
//! replica decides what happens:
//!
//! - shutdown (SIGINT or SIGTERM): `run_replica` flushes what is in flight; the replica stops;
//! - a transient failure (broker trouble, a fatal client error, a panic): restart after an
//!   exponential backoff, reset by a long enough healthy run;
//! - a divergence: stopped for good, logged loudly, and `run` exits non-zero at the end,
//!   since restarting a non-deterministic transform would only diverge again;
//! - what only an operator can fix (a configuration, a missing topic, a layout the log
//!   refuses, denied credentials or ACLs: a permanent [`Exit::of_log`]): stopped for good,
//!   like a divergence; `run` exits with that class's code when it ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cli::RunArgs;
use crate::config::Codec;
use crate::config::{Config, ConfigError, SNAPSHOT_EVERY_INPUTS_DEFAULT};
use crate::metrics;
use crate::progress;
use crate::registry::Registry;
use crate::restart::Restarts;
use crate::{host_name, signals, Error, Exit, SchemaStep, StopReason, StoppedReplica};
use competing_transformers::codec::OutputCodec;
use competing_transformers::panic::panic_message;
use competing_transformers::record::WRITER_BYTES_MAX;
use competing_transformers::replica::{Divergence, ReplicaConfig};
use competing_transformers::shard::Pipelines;
use competing_transformers_kafka::schema_registry::SchemaRegistry;
use competing_transformers_kafka::snapshot_store::{KafkaSnapshotStore, Snapshots};
use competing_transformers_kafka::{admin, EventLog, KafkaLog, KafkaLogConfig, LogError, Shutdown};
use competing_transformers_kafka::{run_replica_with, ReplicaError, ReplicaServices, ReplicaStatus};

/// How often librdkafka reports its statistics when metrics are served.
const CLIENT_STATISTICS_EVERY_MS: u64 = 5_000;
/// How often the catch-up bars are redrawn.
const CATCH_UP_DRAW_EVERY: Duration = Duration::from_millis(250);
/// How often the race table is printed, when anything in it changed.
const RACE_TABLE_EVERY: Duration = Duration::from_secs(2);

/// Where a supervised replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Restarting,
    Stopped,
    Diverged,
    Failed,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Stopped => "stopped",
            State::Diverged => "DIVERGED",
            State::Failed => "failed",
        }
    }
}

/// One supervised replica, as the race table sees it.
struct Slot {
    replica_id: String,
    /// The pipeline it reads and writes.
    pipeline: u32,
    /// What each run of the replica starts with.
    config: ReplicaConfig,
    /// The schema registry Avro inputs are resolved with, when one is configured.
    services: ReplicaServices,
    transformer: String,
    state: State,
    restarts: u32,
    /// The current run's status; a restarted replica counts from zero again.
    status: Option<watch::Receiver<ReplicaStatus>>,
}

type SharedSlot = Arc<Mutex<Slot>>;

/// How a supervised replica ended.
enum Ending {
    Stopped,
    /// For good: the transform is not deterministic.
    Diverged(Divergence),
    /// For good: a restart cannot fix it.
    Failed(ReplicaError),
}

/// Why one run of a replica ended early.
enum Failure {
    Diverged(Divergence),
    Permanent(ReplicaError),
    /// Restarted after a backoff; only logged.
    Transient(Box<dyn std::error::Error + Send + Sync>),
}

impl Failure {
    /// A failure only an operator can fix (its exit is permanent) stops the replica; a
    /// restart (a new client) gets past any other.
    fn from_log(error: LogError) -> Self {
        if Exit::of_log(&error).is_permanent() {
            Failure::Permanent(ReplicaError::Log(error))
        } else {
            Failure::Transient(error.into())
        }
    }
}

/// The schema registry of `SCHEMA_REGISTRY_URL` or the config's `[schema_registry]`, if any.
fn schema_registry(config: &Config) -> Result<Option<Arc<SchemaRegistry>>, Error> {
    let url =
        std::env::var("SCHEMA_REGISTRY_URL").ok().or_else(|| config.schema_registry.as_ref().map(|s| s.url.clone()));
    Ok(url.map(|url| SchemaRegistry::new(&url)).transpose()?.map(Arc::new))
}

/// Registers `name`'s output schema and returns the codec its replicas write with; an
/// incompatible schema refuses to start. `origin` and `key` name the config's setting.
async fn avro_output(
    registry: &Registry,
    name: &str,
    schemas: Option<&SchemaRegistry>,
    (origin, key): (&str, String),
) -> Result<OutputCodec, Error> {
    let invalid =
        |problem: String| Error::Config(ConfigError::Invalid { origin: origin.into(), key: key.clone(), problem });
    let Some(schemas) = schemas else {
        return Err(invalid(
            "is \"avro\" but no schema registry is configured; set [schema_registry] url or SCHEMA_REGISTRY_URL".into(),
        ));
    };
    let transform = registry.create(name).ok_or_else(|| Error::Usage(format!("unknown transformer `{name}`")))?;
    let (version, schema) = (transform.version(), transform.output_schema().map(str::to_string));
    let schema = schema.ok_or_else(|| {
        invalid(format!(
            "is \"avro\" but `{name}` v{version} declares no Avro output schema; set codec = \"json\" for it"
        ))
    })?;
    let output = schemas.output_codec(name, &schema).await.map_err(|source| Error::OutputSchema {
        transformer: name.into(),
        version,
        step: SchemaStep::Start,
        source,
    })?;
    Ok(OutputCodec::Avro(output))
}

/// The pipelines a `run` serves: which of how many.
pub(crate) struct Selected {
    /// The log's pipeline count.
    pub count: Pipelines,
    /// The pipelines this process runs replicas of, ascending.
    pub chosen: Vec<u32>,
}

impl Selected {
    /// " in pipelines 0, 1, 2 of 3" for the start line, nothing on a log of one pipeline.
    fn described(&self) -> String {
        if self.count == Pipelines::ONE {
            return String::new();
        }
        let chosen: Vec<String> = self.chosen.iter().map(u32::to_string).collect();
        format!(" in pipeline(s) {} of {}", chosen.join(", "), self.count.count())
    }
}

/// Gives each slot the snapshot store of its pipeline, connected once per pipeline.
async fn attach_snapshot_stores(log_config: &KafkaLogConfig, slots: &[SharedSlot]) {
    let mut stores: BTreeMap<u32, Option<Arc<dyn Snapshots>>> = BTreeMap::new();
    for slot in slots {
        let pipeline = slot.lock().expect("slot lock").pipeline;
        if let std::collections::btree_map::Entry::Vacant(vacant) = stores.entry(pipeline) {
            vacant.insert(snapshot_store(&log_config.pipeline(pipeline)).await);
        }
        slot.lock().expect("slot lock").services.snapshots = stores[&pipeline].clone();
    }
}

/// The snapshot store beside the log, if its topics exist: replicas run without snapshots,
/// said once, when they do not or cannot be reached.
async fn snapshot_store(log_config: &KafkaLogConfig) -> Option<Arc<dyn Snapshots>> {
    match KafkaSnapshotStore::connect_if_present(log_config).await {
        Ok(store) => store.map(|store| Arc::new(store) as Arc<dyn Snapshots>),
        Err(error) => {
            tracing::warn!(%error, "running without snapshots: every start replays the log from its start");
            None
        }
    }
}

/// `run`: the replicas of the configured transformers until a signal, or until all have
/// stopped for good.
pub(super) async fn run(registry: Registry, args: RunArgs) -> Result<(), Error> {
    let config = Config::load(&args.config)?;
    let mut log_config = config.log_config(&args.kafka.overrides())?;
    if metrics_address(&config, &args).is_some() {
        // librdkafka's statistics feed a few of the metrics; a configured interval wins.
        log_config
            .client_properties
            .entry("statistics.interval.ms".into())
            .or_insert_with(|| CLIENT_STATISTICS_EVERY_MS.to_string());
    }
    let mut plan = config.replica_plan(&registry, args.replicas)?;
    if let Some(only) = &args.only {
        plan.retain(|(name, _)| name == only);
    }
    crate::ownership::check_signing(
        &log_config.trust,
        log_config.signer.as_ref().map(|signer| signer.public_key()),
        plan.iter().map(|(name, _)| name.as_str()),
    )?;
    let prefix = args.replica_id.clone().unwrap_or_else(host_name);
    let pipelines = Selected {
        count: log_config.pipelines,
        chosen: crate::config::pipeline_selection(args.pipelines.as_deref(), log_config.pipelines)
            .map_err(Error::Usage)?,
    };
    if args.processes {
        if metrics_address(&config, &args).is_some() {
            tracing::warn!("metrics are not served with --processes: only replicas run as tasks publish their status");
        }
        return crate::processes::run(&args, &plan, &prefix, &pipelines).await;
    }
    let schemas = schema_registry(&config)?;
    let codecs = output_codecs(&registry, &config, &plan, schemas.as_deref()).await?;
    let slots = plan_slots(&config, &args, (&plan, &pipelines), &prefix, &codecs, schemas.as_ref())?;
    // A missing topic, a wrong layout or an unreachable broker stops the launcher at once.
    let facts = admin::check_topic(&log_config).await?;
    tracing::info!(
        topic = %facts.topic, bootstrap = %log_config.bootstrap_servers, brokers = facts.brokers,
        replicas = slots.len(), "starting replicas: {}{}",
        plan.iter().map(|(name, n)| format!("{n} × {name}")).collect::<Vec<_>>().join(", "),
        pipelines.described()
    );
    attach_snapshot_stores(&log_config, &slots).await;
    let metrics = serve_metrics(&config, &args, &slots).await?;
    let shutdown = signals::listen()?;
    let tasks = start_supervisors(registry, &log_config, &slots, &shutdown);
    let tables = (args.race_table && !args.log_json).then(|| tokio::spawn(print_race_tables(slots.clone())));
    let catch_up = progress::wanted().then(|| tokio::spawn(show_catch_up(slots.clone())));
    let endings = await_endings(tasks, &slots).await;
    for task in tables.into_iter().chain(catch_up) {
        task.abort();
    }
    if !args.log_json {
        eprint!("{}", render_race_table(&slots));
    }
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    endings
}

/// The output codec of each planned transformer configured with `codec = "avro"`, its
/// schema registered. One not in the plan (a `--processes` child runs one) is left alone.
async fn output_codecs(
    registry: &Registry,
    config: &Config,
    plan: &[(String, u32)],
    schemas: Option<&SchemaRegistry>,
) -> Result<BTreeMap<String, OutputCodec>, Error> {
    let planned = |name: &str| plan.iter().any(|(planned, _)| planned == name);
    let mut codecs = BTreeMap::new();
    for (position, entry) in
        config.transformers.iter().enumerate().filter(|(_, entry)| entry.codec == Codec::Avro && planned(&entry.name))
    {
        let setting = (config.origin.as_str(), format!("transformer[{}].codec", position + 1));
        codecs.insert(entry.name.clone(), avro_output(registry, &entry.name, schemas, setting).await?);
    }
    Ok(codecs)
}

/// One slot per planned replica in each chosen pipeline, with its id (see
/// [`crate::config::replica_id`]). Each pipeline's replicas race among themselves, so
/// every pipeline's ranks for staggering start at `--stagger-rank`.
fn plan_slots(
    config: &Config,
    args: &RunArgs,
    (plan, pipelines): (&[(String, u32)], &Selected),
    prefix: &str,
    codecs: &BTreeMap<String, OutputCodec>,
    schemas: Option<&Arc<SchemaRegistry>>,
) -> Result<Vec<SharedSlot>, Error> {
    let mut slots = Vec::new();
    for (transformer, replicas) in plan {
        for &pipeline in &pipelines.chosen {
            for n in args.first_number..args.first_number + *replicas {
                let replica_id = crate::config::replica_id(prefix, transformer, pipelines.count, pipeline, n);
                if prefix.trim().is_empty() || replica_id.len() > WRITER_BYTES_MAX {
                    return Err(Error::Usage(format!(
                        "replica id `{replica_id}` must have a non-empty prefix and at most {WRITER_BYTES_MAX} bytes; pass a shorter --replica-id"
                    )));
                }
                let replica = replica_config(config, args, (transformer, n), replica_id.clone(), codecs);
                let slot = Slot {
                    replica_id,
                    pipeline,
                    config: replica,
                    services: ReplicaServices { registry: schemas.cloned(), snapshots: None },
                    transformer: transformer.clone(),
                    state: State::Starting,
                    restarts: 0,
                    status: None,
                };
                slots.push(Arc::new(Mutex::new(slot)));
            }
        }
    }
    Ok(slots)
}

/// What replica `n` of `transformer` starts each run with, from its config entry.
fn replica_config(
    config: &Config,
    args: &RunArgs,
    (transformer, n): (&str, u32),
    replica_id: String,
    codecs: &BTreeMap<String, OutputCodec>,
) -> ReplicaConfig {
    let entry = config.transformers.iter().find(|entry| entry.name == transformer);
    let mut replica = ReplicaConfig::new(replica_id);
    if let Some(entry) = entry {
        replica.racing = entry.racing(args.stagger_rank + u64::from(n - 1));
    }
    if let Some(mib) = entry.and_then(|entry| entry.pending_mib_max) {
        replica.pending_bytes_max = usize::try_from(mib).unwrap_or(usize::MAX >> 20) << 20;
    }
    replica.output_codec = codecs.get(transformer).cloned().unwrap_or_default();
    replica.snapshot_every_inputs =
        Some(entry.and_then(|entry| entry.snapshot_every_inputs).unwrap_or(SNAPSHOT_EVERY_INPUTS_DEFAULT))
            .filter(|every| *every > 0);
    replica
}

/// A supervisor task per slot, each connecting its own log client to its slot's pipeline.
fn start_supervisors(
    registry: Registry,
    log_config: &KafkaLogConfig,
    slots: &[SharedSlot],
    shutdown: &Shutdown,
) -> Vec<JoinHandle<Ending>> {
    let registry = Arc::new(registry);
    slots
        .iter()
        .map(|slot| {
            let log_config = log_config.pipeline(slot.lock().expect("slot lock").pipeline);
            let connect = move || KafkaLog::connect(log_config.clone());
            tokio::spawn(supervise(registry.clone(), connect, slot.clone(), shutdown.clone()))
        })
        .collect()
}

/// Waits for every supervisor; an error names the replicas that stopped for good.
async fn await_endings(tasks: Vec<JoinHandle<Ending>>, slots: &[SharedSlot]) -> Result<(), Error> {
    let mut stopped = Vec::new();
    for (task, slot) in tasks.into_iter().zip(slots) {
        let reason = match task.await {
            Ok(Ending::Stopped) => continue,
            Ok(Ending::Diverged(divergence)) => StopReason::Diverged(divergence),
            Ok(Ending::Failed(error)) => StopReason::Failed(error),
            Err(error) => StopReason::Supervisor(error),
        };
        stopped.push(StoppedReplica { replica_id: slot.lock().expect("slot lock").replica_id.clone(), reason });
    }
    if stopped.is_empty() {
        return Ok(());
    }
    let (replicas, diverged) = (slots.len(), stopped.iter().any(|s| matches!(s.reason, StopReason::Diverged(_))));
    Err(if diverged { Error::Diverged { replicas, stopped } } else { Error::ReplicasFailed { replicas, stopped } })
}

/// Runs one replica again and again until shutdown or a failure that a restart cannot fix.
/// `connect` opens a fresh log client (a new producer session) for each life.
async fn supervise<L, C, F>(registry: Arc<Registry>, connect: C, slot: SharedSlot, mut shutdown: Shutdown) -> Ending
where
    L: EventLog,
    C: Fn() -> F,
    F: Future<Output = Result<L, LogError>>,
{
    let set_state = |state: State| slot.lock().expect("slot lock").state = state;
    let (replica_id, transformer) = {
        let slot = slot.lock().expect("slot lock");
        (slot.replica_id.clone(), slot.transformer.clone())
    };
    let mut restarts = Restarts::new();
    loop {
        let started = Instant::now();
        let reason = match run_once(&registry, &connect, &slot, &shutdown).await {
            Ok(()) => {
                set_state(State::Stopped);
                return Ending::Stopped;
            }
            Err(Failure::Diverged(divergence)) => {
                tracing::error!(
                    replica = %replica_id,
                    "DIVERGED, NOT RESTARTED: {divergence}. `{transformer}` gave this replica other outputs than the canonical ones; \
                     find what makes it non-deterministic (clock, randomness, hash-map order, floats) and deploy the fix"
                );
                set_state(State::Diverged);
                return Ending::Diverged(divergence);
            }
            Err(Failure::Permanent(error)) => {
                tracing::error!(replica = %replica_id, "stopped, not restarted: {error}");
                set_state(State::Failed);
                return Ending::Failed(error);
            }
            Err(Failure::Transient(why)) => why,
        };
        if shutdown.is_requested() {
            set_state(State::Stopped);
            return Ending::Stopped;
        }
        let wait = restarts.wait_after(started.elapsed());
        tracing::warn!(replica = %replica_id, "{reason}; restarting in {wait:?}");
        {
            let mut slot = slot.lock().expect("slot lock");
            slot.state = State::Restarting;
            slot.restarts += 1;
        }
        // The loop's next turn sees a shutdown requested meanwhile: `run_once` returns at once.
        shutdown.requested_within(wait).await;
    }
}

/// One life of a replica: connect, run until it returns or panics.
async fn run_once<L, C, F>(
    registry: &Registry,
    connect: &C,
    slot: &SharedSlot,
    shutdown: &Shutdown,
) -> Result<(), Failure>
where
    L: EventLog,
    C: Fn() -> F,
    F: Future<Output = Result<L, LogError>>,
{
    let (replica_id, transformer, config, services) = {
        let slot = slot.lock().expect("slot lock");
        (slot.replica_id.clone(), slot.transformer.clone(), slot.config.clone(), slot.services.clone())
    };
    let mut stop = shutdown.clone();
    let log = tokio::select! {
        connected = connect() => connected.map_err(Failure::from_log)?,
        () = stop.requested() => return Ok(()),
    };
    let transform = registry.create(&transformer).expect("the plan only names registered transformers");
    let (status, status_receiver) =
        watch::channel(ReplicaStatus { replica_id: replica_id.clone(), ..Default::default() });
    {
        let mut slot = slot.lock().expect("slot lock");
        slot.status = Some(status_receiver);
        slot.state = State::Running;
    }
    // A task of its own, so a panic ends this run instead of the launcher.
    let replica = tokio::spawn(run_replica_with(Arc::new(log), transform, config, services, shutdown.clone(), status));
    match replica.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(ReplicaError::Diverged(divergence))) => Err(Failure::Diverged(*divergence)),
        Ok(Err(ReplicaError::Log(error))) => Err(Failure::from_log(error)),
        Ok(Err(other)) => Err(Failure::Permanent(other)),
        Err(error) if error.is_panic() => {
            Err(Failure::Transient(format!("panicked: {}", panic_message(error.into_panic().as_ref())).into()))
        }
        Err(error) => Err(Failure::Transient(format!("its task ended: {error}").into())),
    }
}

/// Where metrics are served: `--metrics-listen`, else the config's `[metrics] listen`; nowhere
/// for a `--processes` child.
fn metrics_address(config: &Config, args: &RunArgs) -> Option<std::net::SocketAddr> {
    if args.no_metrics {
        return None;
    }
    args.metrics_listen.or_else(|| config.metrics.as_ref().map(|metrics| metrics.listen))
}

/// Starts serving `/metrics`, `/healthz` and `/readyz` on the configured address, if any; an
/// address it cannot listen on stops the launcher before any replica starts.
async fn serve_metrics(config: &Config, args: &RunArgs, slots: &[SharedSlot]) -> Result<Option<JoinHandle<()>>, Error> {
    let Some(address) = metrics_address(config, args) else { return Ok(None) };
    let listener = metrics::bind(address).await.map_err(|error| {
        let origin = if args.metrics_listen.is_some() { "--metrics-listen".into() } else { config.origin.clone() };
        Error::Config(ConfigError::Invalid {
            origin,
            key: "metrics.listen".into(),
            problem: format!("cannot listen on {address} ({error}); choose a free port"),
        })
    })?;
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    let exporter = Arc::new(metrics::Exporter::new(replica_views(slots.to_vec())));
    Ok(Some(tokio::spawn(metrics::serve(listener, exporter))))
}

/// The exporter's window on the slots: each replica's status watch and readiness.
fn replica_views(slots: Vec<SharedSlot>) -> metrics::Views {
    Arc::new(move || {
        slots
            .iter()
            .map(|slot| {
                let slot = slot.lock().expect("slot lock");
                let catching_up = slot.status.as_ref().is_none_or(|status| status.borrow().catching_up);
                let readiness = match slot.state {
                    State::Running if !catching_up => metrics::Readiness::Live,
                    State::Diverged | State::Failed => metrics::Readiness::Stopped,
                    _ => metrics::Readiness::NotYet,
                };
                metrics::ReplicaView {
                    transformer: slot.transformer.clone(),
                    pipeline: slot.pipeline,
                    replica: slot.replica_id.clone(),
                    status: slot.status.clone(),
                    restarts: slot.restarts,
                    readiness,
                }
            })
            .collect()
    })
}

/// A bar per replica while it catches up (on a terminal only: `progress`), gone once it is
/// live; a restarted replica's catch-up gets a new one.
async fn show_catch_up(slots: Vec<SharedSlot>) {
    let group = progress::group();
    let mut bars: Vec<Option<indicatif::ProgressBar>> = slots.iter().map(|_| None).collect();
    let mut every = tokio::time::interval(CATCH_UP_DRAW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for (slot, bar) in slots.iter().zip(bars.iter_mut()) {
            let (replica_id, status) = {
                let slot = slot.lock().expect("slot lock");
                (slot.replica_id.clone(), slot.status.as_ref().map(|status| status.borrow().clone()))
            };
            match status {
                Some(status) if status.catching_up => {
                    let bar = bar.get_or_insert_with(|| {
                        group.add(progress::offsets(&format!("{replica_id} catching up"), status.log_end))
                    });
                    bar.set_length(status.log_end);
                    bar.set_position(status.position);
                }
                _ => {
                    if let Some(done) = bar.take() {
                        done.finish_and_clear();
                    }
                }
            }
        }
    }
}

/// Prints the race table every [`RACE_TABLE_EVERY`] when it changed.
async fn print_race_tables(slots: Vec<SharedSlot>) {
    let mut last = String::new();
    let mut every = tokio::time::interval(RACE_TABLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let table = render_race_table(&slots);
        if table != last {
            eprint!("{table}");
            last = table;
        }
    }
}

/// One line per replica: what it processed, the races it won and lost on its own keys, the
/// groups it did not need to write, its dead letters, and how far behind the log end it reads.
fn render_race_table(slots: &[SharedSlot]) -> String {
    let rows: Vec<(String, State, u32, ReplicaStatus)> = slots
        .iter()
        .map(|slot| {
            let slot = slot.lock().expect("slot lock");
            let status = slot.status.as_ref().map(|s| s.borrow().clone()).unwrap_or_default();
            let state = match slot.state {
                State::Running if status.catching_up => State::Starting,
                state => state,
            };
            (slot.replica_id.clone(), state, slot.restarts, status)
        })
        .collect();
    let width = rows.iter().map(|(id, ..)| id.len()).max().unwrap_or(0).max(7);
    let mut table = format!(
        "race table (events of each replica's own keys; since its last start)\n{:<width$}  {:<10}  {:>8}  {:>8}  {:>8}  {:>8}  {:>5}  {:>6}  {:>8}\n",
        "replica", "state", "inputs", "won", "lost", "skipped", "dead", "lag", "restarts"
    );
    for (id, state, restarts, status) in rows {
        let stats = status.stats;
        let label = if state == State::Starting && status.catching_up { "catch-up" } else { state.label() };
        table.push_str(&format!(
            "{id:<width$}  {label:<10}  {:>8}  {:>8}  {:>8}  {:>8}  {:>5}  {:>6}  {restarts:>8}\n",
            stats.inputs_processed,
            stats.races_won,
            stats.races_lost,
            stats.writes_skipped,
            stats.dead_letters,
            status.lag(),
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::event::{Event, EventSourceKey};
    use competing_transformers::record::Record;
    use competing_transformers::transform::{Input, Outputs, Transform, TransformError};
    use competing_transformers::MemoryLog;
    use competing_transformers_kafka::ShutdownTrigger;

    /// Answers every input with `reply`; a `name` that is not a valid key makes the replica
    /// panic as it starts.
    struct Fixed {
        name: &'static str,
        reply: &'static [u8],
    }

    impl Transform for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn version(&self) -> u32 {
            1
        }
        fn subscriptions(&self) -> Vec<EventSourceKey> {
            vec![key("in")]
        }
        fn apply(&mut self, _: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
            out.emit("text/plain", self.reply.to_vec());
            Ok(())
        }
    }

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    fn slot(transformer: &str) -> SharedSlot {
        let replica_id = format!("test-{transformer}-1");
        Arc::new(Mutex::new(Slot {
            config: ReplicaConfig::new(replica_id.clone()),
            replica_id,
            pipeline: 0,
            services: ReplicaServices::default(),
            transformer: transformer.into(),
            state: State::Starting,
            restarts: 0,
            status: None,
        }))
    }

    fn start(
        registry: Registry,
        log: &MemoryLog,
        slot: &SharedSlot,
        shutdown: &Shutdown,
    ) -> tokio::task::JoinHandle<Ending> {
        let log = log.clone();
        let connect = move || {
            let log = log.clone();
            async move { Ok::<_, LogError>(log) }
        };
        tokio::spawn(supervise(Arc::new(registry), connect, slot.clone(), shutdown.clone()))
    }

    #[tokio::test]
    async fn a_panicking_replica_is_restarted_with_backoff_until_shutdown() {
        let registry = Registry::new().with("broken", || Fixed { name: "not,a key", reply: b"x" });
        let stop = ShutdownTrigger::new();
        let shutdown = stop.subscribe();
        let slot = slot("broken");
        let task = start(registry, &MemoryLog::new(), &slot, &shutdown);
        // The second failure comes after the first backoff, 0.5 s.
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.lock().unwrap().restarts < 2 {
            assert!(Instant::now() < deadline, "the replica was not restarted twice");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.request();
        assert!(matches!(task.await.unwrap(), Ending::Stopped));
        assert_eq!(slot.lock().unwrap().state, State::Stopped);
    }

    #[tokio::test]
    async fn a_diverged_replica_is_stopped_for_good() {
        let log = MemoryLog::new();
        let input = log.publish(&key("in"), vec![Event::new(key("in"), None, None, 0, "text/plain", b"go".to_vec())]);
        // Another writer already answered the input differently.
        let theirs = Event::new(key("echo"), Some(0), Some(input), 0, "text/plain", b"theirs".to_vec());
        let theirs_digest = theirs.digest;
        log.append_now(&Record { source: key("echo"), writer: "other".into(), events: vec![theirs] }).unwrap();
        let registry = Registry::new().with("echo", || Fixed { name: "echo", reply: b"ours" });
        let shutdown = Shutdown::never();
        let slot = slot("echo");
        let ending = tokio::time::timeout(Duration::from_secs(10), start(registry, &log, &slot, &shutdown))
            .await
            .unwrap()
            .unwrap();
        let Ending::Diverged(divergence) = &ending else { panic!("expected a divergence") };
        assert_eq!((divergence.key.as_str(), divergence.index), ("echo", 0));
        assert_eq!(divergence.canonical, theirs_digest);
        assert!(divergence.to_string().contains("not deterministic"), "{divergence}");
        let slot = slot.lock().unwrap();
        assert_eq!((slot.state, slot.restarts), (State::Diverged, 0));
    }

    #[test]
    fn only_what_an_operator_must_fix_stops_a_replica_for_good() {
        let missing = LogError::TopicMissing { topic: "log".into(), bootstrap_servers: "k:9092".into() };
        assert!(matches!(
            Failure::from_log(missing),
            Failure::Permanent(ReplicaError::Log(LogError::TopicMissing { .. }))
        ));
        let timed_out = LogError::Unavailable {
            topic: "log".into(),
            partition: Some(0),
            offset: None,
            code: None,
            source: Box::new(competing_transformers_kafka::error::KafkaError::Canceled),
        };
        assert!(matches!(Failure::from_log(timed_out), Failure::Transient(_)));
        // Credentials the cluster refuses: a new client would be refused too.
        let refused = LogError::Fatal {
            topic: "log".into(),
            partition: None,
            offset: None,
            code: Some(competing_transformers_kafka::error::RDKafkaErrorCode::SaslAuthenticationFailed),
            source: Box::new(competing_transformers_kafka::error::KafkaError::Canceled),
        };
        assert!(matches!(Failure::from_log(refused), Failure::Permanent(_)));
    }
}
