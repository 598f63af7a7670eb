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
//! - [`reading`]: canonical events, readable payloads and dead letters, for operators.
//! - [`redrive`]: `dead-letters redrive`, idempotent, with provenance.
//! - [`summary`]: the whole log's verdicts and race winners (pure, plus one read).
//! - [`ownership`]: a DET's streams are written by its replicas: refusals and reports.
//!
//! Signals and `run --processes` assume a Unix host; elsewhere Ctrl-C stops a command and
//! `--processes` is refused.

mod cli;
pub mod config;
mod ops;
pub mod ownership;
mod processes;
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
    /// Replica processes (`run --processes`) exited saying they diverged; each logged its
    /// divergence. Exit code 3.
    #[error("replica process(es) {} diverged and were not restarted", replica_ids.join(", "))]
    ProcessesDiverged {
        /// The replicas whose processes diverged.
        replica_ids: Vec<String>,
    },
}

impl Error {
    /// The process's exit code for this failure: [`EXIT_DIVERGED`] for a divergence, which
    /// a restart would only repeat, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Diverged { .. } | Error::ProcessesDiverged { .. } => EXIT_DIVERGED,
            _ => 1,
        }
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime ({error})");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, registry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Output(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints one line of a command's output on stdout.
fn out(line: std::fmt::Arguments<'_>) -> Result<(), Error> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}").map_err(Error::Output)
}

/// Exit code of a `run` whose replica diverged: restarting it would diverge again.
pub const EXIT_DIVERGED: u8 = 3;

async fn execute(command: cli::Command, registry: Registry) -> Result<(), Error> {
    use cli::{Command, DeadLettersCommand, TopicsCommand};
    match command {
        Command::Run(mut args) => {
            // Resolved and checked here, so `run` and its child processes get a valid one.
            args.replica_id = Some(replica_prefix(args.replica_id.take())?);
            supervise::run(registry, args).await
        }
        Command::Topics(TopicsCommand::Create(args)) => ops::topics(&args, true).await,
        Command::Topics(TopicsCommand::Check(args)) => ops::topics(&args, false).await,
        Command::Publish(args) => ops::publish(args, &registry).await,
        Command::Tail(args) => ops::tail(args).await,
        Command::Status(args) => ops::status(&args.log, &registry).await,
        Command::DeadLetters(DeadLettersCommand::List { log, transformer }) => {
            ops::dead_letters(&log, &transformer).await
        }
        Command::DeadLetters(DeadLettersCommand::Redrive(args)) => ops::redrive(args, &registry).await,
        Command::Export(args) => ops::export(args).await,
        Command::Schemas(cli::SchemasCommand::Register(args)) => schemas::run(&registry, &args, true).await,
        Command::Schemas(cli::SchemasCommand::Check(args)) => schemas::run(&registry, &args, false).await,
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
fn wall_clock_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let processes = Error::ProcessesDiverged { replica_ids: vec!["host-echo-1".into()] };
        assert_eq!(processes.exit_code(), EXIT_DIVERGED);
    }

    #[test]
    fn other_failures_exit_with_1() {
        let failed = Error::ReplicasFailed {
            replicas: 1,
            stopped: vec![StoppedReplica {
                replica_id: "host-echo-1".into(),
                reason: StopReason::Failed(missing_topic()),
            }],
        };
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(failed.divergences().count(), 0);
        assert_eq!(Error::Usage("wrong".into()).exit_code(), 1);
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
