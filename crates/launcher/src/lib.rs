//! The launcher: runs replicas of registered transforms against the log, and the operator
//! commands around them.
//!
//! A launcher binary registers its transforms and hands over; it gets the whole CLI
//! (`run`, `topics`, `publish`, `tail`, `status`, `dead-letters`, `export`, `schemas`):
//!
//! ```no_run
//! # use competing_transformers_launcher::{self as launcher, Registry};
//! # #[derive(Default)] struct MyTransform;
//! # impl competing_transformers::Transform for MyTransform {
//! #     fn name(&self) -> &str { "my-transform" }
//! #     fn version(&self) -> u32 { 1 }
//! #     fn subscriptions(&self) -> Vec<competing_transformers::EventSourceKey> { vec![] }
//! #     fn apply(&mut self, _: &competing_transformers::Input<'_>, _: &mut competing_transformers::Outputs)
//! #         -> Result<(), competing_transformers::TransformError> { Ok(()) }
//! # }
//! fn main() -> std::process::ExitCode {
//!     launcher::main_with(Registry::new().with("my-transform", MyTransform::default))
//! }
//! ```
//!
//! - [`registry`]: the transforms a binary can run, by name.
//! - [`config`]: the TOML file and its validation.
//! - `cli`: the command line and its help.
//! - `supervise`: `run`: replicas in tasks, restarts with backoff, the race table.
//! - `processes`: `run --processes`: a child process per replica (Unix only).
//! - `restart`: when a failed replica starts again, for both.
//! - [`signals`]: SIGINT and SIGTERM: the first stops, a second exits at once.
//! - `ops`: `topics`, `publish`, `tail`, `status`, `dead-letters`, `export`.
//! - `doctor`: what the build supports; whether a configuration reaches the log.
//! - `metrics`: `run`'s `/metrics`, `/healthz` and `/readyz`.
//! - `progress`: progress bars on a terminal (catch-up, long scans, publish).
//! - [`reading`]: canonical events, readable payloads and dead letters, for operators.
//! - [`redrive`]: `dead-letters redrive`, idempotent, with provenance.
//! - [`summary`]: the whole log's verdicts and race winners (pure, plus one read).
//! - [`ownership`]: a DET's streams are written by its replicas: refusals and reports.
//!
//! Signals and `run --processes` assume a Unix host; elsewhere Ctrl-C stops a command and
//! `--processes` is refused.

mod cli;
pub mod config;
mod doctor;
mod keys;
mod metrics;
mod ops;
pub mod ownership;
mod processes;
mod progress;
pub mod reading;
pub mod redrive;
pub mod registry;
mod restart;
mod schemas;
pub mod signals;
pub mod summary;
mod supervise;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

pub use config::{Config, ConfigError};
pub use registry::Registry;

use competing_transformers::replica::Divergence;
use competing_transformers_kafka::error::{is_authentication_code, is_authorization_code};
use competing_transformers_kafka::schema_registry::RegistryError;
use competing_transformers_kafka::{LogError, ReplicaError};

/// Why a launcher command failed. Displayed as one sentence with the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log failed or refused.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The schema registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The schema registry failed on, or refused, a transformer's output schema.
    #[error("{}", output_schema_sentence(transformer, *version, *step, source))]
    OutputSchema {
        /// The transformer.
        transformer: String,
        /// Its version.
        version: u32,
        /// What was asked of the registry.
        step: SchemaStep,
        /// The registry's answer.
        source: RegistryError,
    },
    /// An argument or an input line is wrong.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("cannot read {path} ({source}); check the path")]
    Read {
        /// What was being read.
        path: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Writing the command's output failed; a closed pipe (`| head`) ends a command quietly.
    #[error("cannot write the output ({0})")]
    Output(std::io::Error),
    /// Replicas stopped for good, none of them because it diverged (a configuration or a
    /// topic the log refuses).
    #[error("{}", stopped_sentence(*replicas, stopped))]
    ReplicasFailed {
        /// How many replicas ran.
        replicas: usize,
        /// The ones that stopped for good, and why.
        stopped: Vec<StoppedReplica>,
    },
    /// Replicas stopped for good, at least one because it diverged: its transform is not
    /// deterministic. Exit code 3, so a parent launcher does not restart it.
    #[error("{}", stopped_sentence(*replicas, stopped))]
    Diverged {
        /// How many replicas ran.
        replicas: usize,
        /// The ones that stopped for good, and why (see [`StopReason::Diverged`]).
        stopped: Vec<StoppedReplica>,
    },
    /// Replica processes (`run --processes`) exited with a permanent code (see
    /// [`Exit::is_permanent`]); each logged why. They were not restarted, and the other
    /// replica processes were stopped.
    #[error("{}", processes_sentence(stopped))]
    ProcessesStopped {
        /// Each replica whose process exited with a permanent code, and that code.
        stopped: Vec<(String, Exit)>,
    },
    /// A reader needs a key's canonical count at a position: the log before its first offset
    /// is deleted and no snapshot at or after it holds that count.
    #[error("{reader} cannot read `{key}`: the log's records before offset {start} are deleted and no snapshot from offset {start} on holds `{key}`'s count; run a DET that reads or writes `{key}` with snapshots on (snapshot_every_inputs, and the snapshot topics `topics create` makes) until one is stored, or read a log that keeps its records")]
    NoSnapshot {
        /// The command reading.
        reader: String,
        /// The key it cannot judge.
        key: String,
        /// The log's first offset.
        start: u64,
    },
    /// A redrive could not place an event: other sources kept taking the index it tried.
    #[error("could not place the event on `{key}` in {attempts} attempts: other sources keep writing; retry (it is idempotent)")]
    Contended {
        /// The key written to.
        key: String,
        /// How many indexes were tried.
        attempts: u32,
    },
}

/// "replica process(es) host-echo-1 (4: configuration) exited for good; …".
fn processes_sentence(stopped: &[(String, Exit)]) -> String {
    let each: Vec<String> =
        stopped.iter().map(|(id, exit)| format!("{id} ({}: {})", exit.exit_code(), exit.label())).collect();
    format!(
        "replica process(es) {} exited with a permanent code and were not restarted; the others were stopped (each logged why)",
        each.join(", ")
    )
}

impl Error {
    /// Which class of failure this is: the process's [`Exit`].
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) | Error::NoSnapshot { .. } => Exit::Configuration,
            Error::Log(error) => Exit::of_log(error),
            Error::Registry(error) | Error::OutputSchema { source: error, .. } => Exit::of_registry(error),
            Error::Usage(_) | Error::Read { .. } => Exit::Usage,
            Error::Output(_) | Error::Contended { .. } => Exit::Runtime,
            Error::ReplicasFailed { stopped, .. } | Error::Diverged { stopped, .. } => {
                Exit::worst(stopped.iter().map(|replica| replica.reason.exit()))
            }
            Error::ProcessesStopped { stopped } => Exit::worst(stopped.iter().map(|(_, exit)| *exit)),
        }
    }

    /// The process's exit code for this failure: [`Error::exit`]'s.
    pub fn exit_code(&self) -> u8 {
        self.exit().exit_code()
    }

    /// Each divergence this failure carries, with the replica that found it.
    pub fn divergences(&self) -> impl Iterator<Item = (&str, &Divergence)> {
        let stopped = match self {
            Error::Diverged { stopped, .. } => stopped.as_slice(),
            _ => &[],
        };
        stopped.iter().filter_map(|replica| match &replica.reason {
            StopReason::Diverged(divergence) => Some((replica.replica_id.as_str(), divergence)),
            _ => None,
        })
    }
}

/// What the launcher asked the schema registry about a transformer's output schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaStep {
    /// `schemas register`.
    Register,
    /// `schemas check`.
    Check,
    /// `run`: registering it before the transformer's replicas start.
    Start,
}

fn output_schema_sentence(transformer: &str, version: u32, step: SchemaStep, source: &RegistryError) -> String {
    let refused = matches!(source, RegistryError::Incompatible { .. });
    match step {
        SchemaStep::Start if refused => format!("refusing to start {transformer} v{version}: {source}"),
        _ if refused => format!("refusing {transformer} v{version}: {source}"),
        SchemaStep::Check => format!("cannot check the output schema of {transformer} v{version}: {source}"),
        SchemaStep::Register | SchemaStep::Start => {
            format!("cannot register the output schema of {transformer} v{version}: {source}")
        }
    }
}

/// A replica that stopped for good.
#[derive(Debug)]
pub struct StoppedReplica {
    /// The replica.
    pub replica_id: String,
    /// Why.
    pub reason: StopReason,
}

/// Why a replica stopped for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StopReason {
    /// Its outputs differ from the canonical ones.
    #[error("diverged: {0}")]
    Diverged(Divergence),
    /// A failure a restart cannot fix.
    #[error("failed: {0}")]
    Failed(#[source] ReplicaError),
    /// The task supervising it ended (a bug in the launcher).
    #[error("its supervisor task failed: {0}")]
    Supervisor(#[source] tokio::task::JoinError),
}

impl StopReason {
    /// The class of this stop, as an exit code tells it.
    pub fn exit(&self) -> Exit {
        match self {
            StopReason::Diverged(_) | StopReason::Failed(ReplicaError::Diverged(_)) => Exit::Diverged,
            StopReason::Failed(ReplicaError::Log(error)) => Exit::of_log(error),
            StopReason::Failed(ReplicaError::Truncated { .. }) => Exit::Configuration,
            StopReason::Failed(_) | StopReason::Supervisor(_) => Exit::Runtime,
        }
    }
}

/// How a launcher process ended: the one table of its exit codes. `--help`, the README and
/// docs/DESIGN.md show it; a `run --processes` parent reads its children's with it.
///
/// Codes 2 to 5 are permanent: running the same command again fails the same way until
/// someone changes the code, the configuration, the topic or the ACLs, so a `--processes`
/// parent does not restart a child that exits with one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Exit {
    /// 0: the command succeeded; `run` or `export --follow` stopped by SIGINT or SIGTERM
    /// after flushing; output cut by a closed pipe.
    Success,
    /// 1: a failure at run time that may pass: the broker or the registry unreachable, a
    /// client failure, a panic. A `--processes` parent restarts a child that exits so.
    Runtime,
    /// 2: the command line, a flag's value, a file it names or an input line is wrong
    /// (clap's own parse errors use 2 too).
    Usage,
    /// 3: a replica diverged: its transform is not deterministic.
    Diverged,
    /// 4: the configuration is wrong: the config file, the client properties, a missing or
    /// misshapen topic, a schema the registry refuses.
    Configuration,
    /// 5: Kafka or the schema registry refused this client's credentials or denied it an
    /// ACL (authentication or authorization).
    Access,
    /// 130: a second SIGINT or SIGTERM: exited at once, without flushing.
    Interrupted,
}

impl Exit {
    /// Every exit, in the order of their codes.
    pub const ALL: [Exit; 7] = [
        Exit::Success,
        Exit::Runtime,
        Exit::Usage,
        Exit::Diverged,
        Exit::Configuration,
        Exit::Access,
        Exit::Interrupted,
    ];

    /// The process's exit code.
    pub const fn exit_code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Runtime => 1,
            Exit::Usage => 2,
            Exit::Diverged => 3,
            Exit::Configuration => 4,
            Exit::Access => 5,
            Exit::Interrupted => 130,
        }
    }

    /// The exit a process's code says, if it is one of the table's.
    pub fn from_code(code: i32) -> Option<Exit> {
        Exit::ALL.into_iter().find(|exit| i32::from(exit.exit_code()) == code)
    }

    /// Whether running the same command again would end the same way: a `--processes`
    /// parent does not restart a child that exits so.
    pub fn is_permanent(self) -> bool {
        matches!(self, Exit::Usage | Exit::Diverged | Exit::Configuration | Exit::Access)
    }

    /// One or two words naming the class.
    pub fn label(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Runtime => "runtime failure",
            Exit::Usage => "usage",
            Exit::Diverged => "divergence",
            Exit::Configuration => "configuration",
            Exit::Access => "access denied",
            Exit::Interrupted => "interrupted",
        }
    }

    /// When a process exits so, for the help's table.
    fn meaning(self) -> &'static str {
        match self {
            Exit::Success => "success; `run` or `export --follow` stopped by SIGINT or SIGTERM after flushing",
            Exit::Runtime => "runtime failure that may pass (broker or registry unreachable, a client failure)",
            Exit::Usage => "usage: the command line, a flag's value, a file it names or an input line is wrong",
            Exit::Diverged => "divergence: a replica's transform is not deterministic",
            Exit::Configuration => {
                "configuration: the config file, client properties, a missing or misshapen topic, a log truncated before a replica's snapshot, a refused schema"
            }
            Exit::Access => "access denied: Kafka or the registry refused the credentials or an ACL",
            Exit::Interrupted => "a second SIGINT or SIGTERM: exited without flushing",
        }
    }

    /// The exit codes as the help shows them.
    pub fn help_table() -> String {
        let mut table = String::from("Exit codes:\n");
        for exit in Exit::ALL {
            table.push_str(&format!("  {:<4} {}\n", exit.exit_code(), exit.meaning()));
        }
        table.push_str(
            "Codes 2 to 5 are permanent: run --processes does not restart a child that exits with one; it stops the other children and exits with that code.",
        );
        table
    }

    /// The class of a log failure: only what an operator must fix is permanent.
    pub fn of_log(error: &LogError) -> Exit {
        let denied = |code| is_authorization_code(code) || is_authentication_code(code);
        if error.is_authorization() || error.code().is_some_and(denied) {
            Exit::Access
        } else if error.needs_operator() {
            Exit::Configuration
        } else {
            Exit::Runtime
        }
    }

    /// The class of a schema registry failure.
    pub fn of_registry(error: &RegistryError) -> Exit {
        match error {
            RegistryError::Unavailable { .. }
            | RegistryError::UnknownSchema { .. }
            | RegistryError::BadSchema { .. } => Exit::Runtime,
            RegistryError::Refused { status: Some(401 | 403), .. } => Exit::Access,
            _ => Exit::Configuration,
        }
    }

    /// The most telling of several exits: a divergence, then denied access, then
    /// configuration, then usage, then a runtime failure.
    pub fn worst(exits: impl IntoIterator<Item = Exit>) -> Exit {
        let rank = |exit: &Exit| match exit {
            Exit::Diverged => 5,
            Exit::Access => 4,
            Exit::Configuration => 3,
            Exit::Usage => 2,
            Exit::Runtime | Exit::Interrupted => 1,
            Exit::Success => 0,
        };
        exits.into_iter().max_by_key(rank).unwrap_or(Exit::Runtime)
    }
}

/// "2 of 3 replica(s) stopped for good: a diverged: …; b failed: …".
fn stopped_sentence(replicas: usize, stopped: &[StoppedReplica]) -> String {
    let each: Vec<String> = stopped
        .iter()
        .map(|s| format!("{} {}{}", s.replica_id, s.reason, ownership::stop_clause(s, stopped)))
        .collect();
    format!("{} of {replicas} replica(s) stopped for good: {}", stopped.len(), each.join("; "))
}

/// Parses the command line, runs the command with `registry`'s transforms, prints a failure
/// as `error: <sentence>` and returns the process's exit code.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Run(_) => "info",
        _ => "warn",
    };
    init_logging(cli.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime ({error})");
            return ExitCode::FAILURE;
        }
    };
    let (mut command, log_format) = (cli.command, cli.log_format);
    if let cli::Command::Run(args) = &mut command {
        args.log_json = cli.log_format == cli::Format::Json;
    }
    match runtime.block_on(execute(command, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) if log_format == cli::Format::Json => {
            tracing::error!(exit_code = error.exit_code(), "{error}");
            ExitCode::from(error.exit_code())
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Log lines on stderr, as text or one JSON object each; `--processes` children inherit the
/// format through `LOG_FORMAT`.
fn init_logging(format: cli::Format, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| progress::LogWriter);
    match format {
        cli::Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        cli::Format::Json => {
            // Still one thread: no other reads the environment yet.
            std::env::set_var("LOG_FORMAT", "json");
            builder.json().with_current_span(false).with_ansi(false).init();
        }
    }
}

/// Writes `bytes` to stdout as they are.
fn write_stdout(bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush()).map_err(Error::Output)
}

/// Prints one line of a command's output on stdout.
fn out(line: std::fmt::Arguments<'_>) -> Result<(), Error> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}").map_err(Error::Output)
}

/// Exit code of a `run` whose replica diverged: restarting it would diverge again
/// ([`Exit::Diverged`]).
pub const EXIT_DIVERGED: u8 = Exit::Diverged.exit_code();

async fn execute(command: cli::Command, registry: Registry) -> Result<(), Error> {
    use cli::{Command, DeadLettersCommand, TopicsCommand};
    match command {
        Command::Run(mut args) => {
            // Resolved and checked here, so `run` and its child processes get a valid one.
            args.replica_id = Some(replica_prefix(args.replica_id.take())?);
            supervise::run(registry, args).await
        }
        Command::Topics(TopicsCommand::Create(args)) => ops::topics(&args.log, true, args.output).await,
        Command::Topics(TopicsCommand::Check(args)) => ops::topics(&args.log, false, args.output).await,
        Command::Publish(args) => ops::publish(args, &registry).await,
        Command::Tail(args) => ops::tail(args).await,
        Command::Status(args) => ops::status(&args, &registry).await,
        Command::DeadLetters(DeadLettersCommand::List { log, transformer, output, pipeline }) => {
            ops::dead_letters(&log, &transformer, output, pipeline).await
        }
        Command::DeadLetters(DeadLettersCommand::Redrive(args)) => ops::redrive(args, &registry).await,
        Command::Export(args) => ops::export(args).await,
        Command::Doctor(args) => doctor::doctor(&args).await,
        Command::Schemas(cli::SchemasCommand::Register(args)) => schemas::run(&registry, &args, true).await,
        Command::Schemas(cli::SchemasCommand::Check(args)) => schemas::run(&registry, &args, false).await,
        Command::Keys(cli::KeysCommand::Generate { secret_file }) => keys::generate(&secret_file),
        // Made in memory, then written: clap_complete panics on a write error such as a closed
        // pipe (`… | head`), which is a success here like any command's.
        Command::Completions { shell } => {
            let mut script = Vec::new();
            cli::completions(shell, &mut script);
            write_stdout(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            cli::man(&mut page).map_err(Error::Output)?;
            write_stdout(&page)
        }
    }
}

/// This machine's name, the default first part of replica and writer ids.
fn host_name() -> String {
    let name = system_host_name();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// gethostname(2), or empty if it fails.
#[cfg(unix)]
fn system_host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return String::new();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// Windows names the machine in the environment.
#[cfg(not(unix))]
fn system_host_name() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// [`host_name`], refused with the flag to pass instead if it holds a character a writer id
/// may not (see [`competing_transformers::record::check_writer`]).
fn checked_host_name() -> Result<String, Error> {
    let name = host_name();
    match competing_transformers::record::check_writer(&name) {
        Ok(()) => Ok(name),
        Err(reason) => Err(Error::Usage(format!(
            "this host's name {name:?} cannot start a writer id ({reason}); pass an id with --replica-id (run) or --writer (publish, redrive)"
        ))),
    }
}

/// The first part of a run's replica ids (`<prefix>-<transformer>-<n>`): `given`
/// (`--replica-id`), or the host name, checked as a writer id.
fn replica_prefix(given: Option<String>) -> Result<String, Error> {
    let prefix = match given {
        Some(prefix) => prefix,
        None => checked_host_name()?,
    };
    competing_transformers::record::check_writer(&prefix)
        .map_err(|reason| Error::Usage(format!("{reason}; pass a valid replica id prefix with --replica-id")))?;
    Ok(prefix)
}

/// The writer id of a tool's records: `given`, checked, or `<host name>-<tool>`.
fn writer_id(given: Option<String>, tool: &str) -> Result<String, Error> {
    let id = match given {
        Some(id) => id,
        None => format!("{}-{tool}", checked_host_name()?),
    };
    competing_transformers::record::check_writer(&id)
        .map_err(|reason| Error::Usage(format!("{reason}; pass a valid one with --writer")))?;
    Ok(id)
}

/// Milliseconds since the Unix epoch: event sources may read the clock, transforms may not.
pub fn wall_clock_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers_kafka::error::RDKafkaErrorCode;

    #[test]
    fn writer_ids_and_replica_prefixes_are_checked_with_the_fix_in_one_sentence() {
        assert_eq!(writer_id(Some("host-a-publish".into()), "publish").unwrap(), "host-a-publish");
        assert!(writer_id(None, "publish").unwrap().ends_with("-publish"), "this host's name makes a writer id");
        assert_eq!(replica_prefix(Some("demo-a".into())).unwrap(), "demo-a");
        for bad in ["", "host a", "host\nb", "h\u{200b}"] {
            let error = writer_id(Some(bad.into()), "publish").unwrap_err().to_string();
            assert!(error.ends_with("pass a valid one with --writer"), "{error}");
            let error = replica_prefix(Some(bad.into())).unwrap_err().to_string();
            assert!(error.ends_with("pass a valid replica id prefix with --replica-id"), "{error}");
            assert_eq!(error.lines().count(), 1);
        }
    }

    use competing_transformers::event::{Event, EventSourceKey};
    use competing_transformers::replica::DivergenceKind;

    fn divergence() -> Divergence {
        let key = EventSourceKey::new("echo").unwrap();
        let digest =
            |payload: &[u8]| Event::new(key.clone(), Some(0), Some(3), 0, "text/plain", payload.to_vec()).digest;
        Divergence {
            key: key.clone(),
            index: 0,
            ours: digest(b"ours"),
            canonical: digest(b"theirs"),
            canonical_offset: 7,
            canonical_writer: Some("host-echo-2".into()),
            kind: DivergenceKind::Event,
        }
    }

    fn missing_topic() -> ReplicaError {
        ReplicaError::Log(LogError::TopicMissing { topic: "log".into(), bootstrap_servers: "127.0.0.1:9092".into() })
    }

    #[test]
    fn a_divergence_exits_with_its_own_code_and_keeps_its_facts() {
        let error = Error::Diverged {
            replicas: 3,
            stopped: vec![
                StoppedReplica { replica_id: "host-echo-1".into(), reason: StopReason::Diverged(divergence()) },
                StoppedReplica { replica_id: "host-other-1".into(), reason: StopReason::Failed(missing_topic()) },
            ],
        };
        assert_eq!(error.exit_code(), EXIT_DIVERGED);
        let found: Vec<_> = error.divergences().collect();
        assert_eq!(found, [("host-echo-1", &divergence())]);
        let sentence = error.to_string();
        assert!(sentence.starts_with("2 of 3 replica(s) stopped for good: host-echo-1 diverged: event 0 of `echo` at offset 7 (written by host-echo-2)"), "{sentence}");
        assert!(sentence.contains("; host-other-1 failed: topic `log` does not exist"), "{sentence}");
        let processes = Error::ProcessesStopped {
            stopped: vec![("host-echo-1".into(), Exit::Diverged), ("host-echo-2".into(), Exit::Configuration)],
        };
        assert_eq!(processes.exit_code(), EXIT_DIVERGED);
        assert!(
            processes
                .to_string()
                .starts_with("replica process(es) host-echo-1 (3: divergence), host-echo-2 (4: configuration) exited"),
            "{processes}"
        );
    }

    fn kafka_error(code: RDKafkaErrorCode) -> Box<competing_transformers_kafka::error::KafkaError> {
        Box::new(competing_transformers_kafka::error::KafkaError::MetadataFetch(code))
    }

    fn failed(reasons: Vec<StopReason>) -> Error {
        let stopped = reasons
            .into_iter()
            .enumerate()
            .map(|(n, reason)| StoppedReplica { replica_id: format!("host-echo-{n}"), reason })
            .collect();
        Error::ReplicasFailed { replicas: 3, stopped }
    }

    #[test]
    fn each_failure_exits_with_its_class_code() {
        let unavailable = LogError::Unavailable {
            topic: "log".into(),
            partition: Some(0),
            offset: None,
            code: Some(RDKafkaErrorCode::RequestTimedOut),
            source: kafka_error(RDKafkaErrorCode::RequestTimedOut),
        };
        let denied = LogError::Unauthorized {
            topic: "log".into(),
            code: RDKafkaErrorCode::TopicAuthorizationFailed,
            source: kafka_error(RDKafkaErrorCode::TopicAuthorizationFailed),
        };
        let bad_password = LogError::Fatal {
            topic: "log".into(),
            partition: None,
            offset: None,
            code: Some(RDKafkaErrorCode::SaslAuthenticationFailed),
            source: kafka_error(RDKafkaErrorCode::SaslAuthenticationFailed),
        };
        let layout = LogError::TopicLayout {
            topic: "log".into(),
            problem: competing_transformers_kafka::error::LayoutProblem::Partitions { partitions: 3, pipelines: 1 },
        };
        let cases = [
            (Error::Log(unavailable.clone()), Exit::Runtime, 1),
            (Error::Output(std::io::Error::other("disk full")), Exit::Runtime, 1),
            (Error::Usage("wrong".into()), Exit::Usage, 2),
            (Error::Config(ConfigError::MissingTopic), Exit::Configuration, 4),
            (
                Error::Log(LogError::TopicMissing { topic: "log".into(), bootstrap_servers: "k:9092".into() }),
                Exit::Configuration,
                4,
            ),
            (Error::Log(layout), Exit::Configuration, 4),
            (Error::Log(denied.clone()), Exit::Access, 5),
            (Error::Log(bad_password), Exit::Access, 5),
            // Replicas that stopped for good: the most telling reason decides.
            (failed(vec![StopReason::Failed(missing_topic())]), Exit::Configuration, 4),
            (
                failed(vec![StopReason::Failed(missing_topic()), StopReason::Failed(ReplicaError::Log(denied))]),
                Exit::Access,
                5,
            ),
            (failed(vec![StopReason::Failed(ReplicaError::Log(unavailable))]), Exit::Runtime, 1),
            (
                Error::ProcessesStopped { stopped: vec![("host-echo-1".into(), Exit::Configuration)] },
                Exit::Configuration,
                4,
            ),
        ];
        for (error, exit, code) in cases {
            assert_eq!((error.exit(), error.exit_code()), (exit, code), "{error}");
        }
        assert_eq!(failed(vec![StopReason::Failed(missing_topic())]).divergences().count(), 0);
    }

    #[test]
    fn registry_failures_exit_by_class() {
        let refused = |status| RegistryError::Refused {
            url: "http://registry".into(),
            status,
            error_code: None,
            message: "no".into(),
            source: None,
        };
        assert_eq!(Error::Registry(refused(Some(401))).exit(), Exit::Access);
        assert_eq!(Error::Registry(refused(Some(403))).exit(), Exit::Access);
        assert_eq!(Error::Registry(refused(None)).exit(), Exit::Configuration, "a bad URL");
        let incompatible =
            RegistryError::Incompatible { subject: "s".into(), url: "u".into(), reason: "r".into(), source: None };
        let error = Error::OutputSchema {
            transformer: "echo".into(),
            version: 2,
            step: SchemaStep::Start,
            source: incompatible,
        };
        assert_eq!(error.exit_code(), 4);
    }

    #[test]
    fn the_exit_table_is_one_table() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|exit| exit.exit_code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 130]);
        for exit in Exit::ALL {
            assert_eq!(Exit::from_code(i32::from(exit.exit_code())), Some(exit));
        }
        assert_eq!(Exit::from_code(101), None);
        let permanent: Vec<u8> = Exit::ALL.iter().filter(|e| e.is_permanent()).map(|e| e.exit_code()).collect();
        assert_eq!(permanent, [2, 3, 4, 5]);
        assert_eq!(EXIT_DIVERGED, 3);
        assert_eq!(signals::EXIT_INTERRUPTED, 130);
    }

    #[test]
    fn the_readme_and_the_design_show_the_exit_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for doc in ["README.md", "docs/DESIGN.md"] {
            let text = std::fs::read_to_string(root.join(doc)).unwrap();
            for exit in Exit::ALL {
                let row = format!("| {} | ", exit.exit_code());
                assert!(text.contains(&row), "{doc} has no exit-code row `{row}`");
            }
        }
    }

    #[test]
    fn an_incompatible_output_schema_is_a_refusal_to_start() {
        let incompatible = RegistryError::Incompatible {
            subject: "echo-value".into(),
            url: "http://registry".into(),
            reason: "field removed".into(),
            source: None,
        };
        let error = Error::OutputSchema {
            transformer: "echo".into(),
            version: 2,
            step: SchemaStep::Start,
            source: incompatible,
        };
        let sentence = error.to_string();
        assert!(sentence.starts_with("refusing to start echo v2: the schema breaks"), "{sentence}");
        assert!(std::error::Error::source(&error).is_some_and(|s| s.is::<RegistryError>()));
    }
}
