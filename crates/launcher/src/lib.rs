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
//!
//! Signals and `run --processes` assume a Unix host; elsewhere Ctrl-C stops a command and
//! `--processes` is refused.

mod cli;
pub mod config;
mod ops;
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

use competing_transformers_kafka::LogError;

/// Why a launcher command failed. Displayed as one sentence with the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log failed or refused.
    #[error("{}", log_sentence(.0))]
    Log(#[from] LogError),
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
    /// Replicas stopped for good (a divergence, or a configuration the log refuses).
    #[error("{0}")]
    ReplicasFailed(String),
    /// A replica diverged: its transform is not deterministic. Exit code 3, so a parent
    /// launcher does not restart it.
    #[error("{0}")]
    Diverged(String),
}

/// An unreachable broker already reads as a full sentence with its fix; say it once.
fn log_sentence(error: &LogError) -> String {
    match error {
        LogError::Unavailable(message) if message.starts_with("cannot reach Kafka") => message.clone(),
        other => other.to_string(),
    }
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
            if matches!(error, Error::Diverged(_)) {
                ExitCode::from(EXIT_DIVERGED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints one line of a command's output on stdout.
fn out(line: std::fmt::Arguments<'_>) -> Result<(), Error> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}").map_err(Error::Output)
}

/// Exit code of a `run` whose replica diverged: restarting it would diverge again.
pub(crate) const EXIT_DIVERGED: u8 = 3;

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
        Command::Publish(args) => ops::publish(args).await,
        Command::Tail(args) => ops::tail(args).await,
        Command::Status(args) => ops::status(&args.log).await,
        Command::DeadLetters(DeadLettersCommand::List { log, transformer }) => {
            ops::dead_letters(&log, &transformer).await
        }
        Command::DeadLetters(DeadLettersCommand::Redrive(args)) => ops::redrive(args).await,
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
}
