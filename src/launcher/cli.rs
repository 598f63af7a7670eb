//! The command line: what each command takes, and the help an operator reads.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::config::Overrides;
use crate::event::EventSourceKey;

/// The launcher's command line.
#[derive(Parser, Debug)]
#[command(
    name = "transformer-launcher",
    version,
    about = "Run and operate racing replicas of deterministic event transforms on one Kafka partition",
    long_about = "Run and operate racing replicas of deterministic event transforms (DETs) on one \
Kafka partition.\n\n\
The event log is one topic with one partition and infinite retention. Event sources append \
events under an event-source key; every replica of a transform reads the same partition, \
computes the same outputs and races to append them; readers keep the first copy of each event \
(the canonical rule) and drop the rest, so a replica that stalls or dies holds nobody back.\n\n\
Start with `demo` against a local broker. In production run `run --config FILE` once per host \
with `--replica-id HOST --replicas 1`.\n\n\
Every command taking --bootstrap and --topic also reads KAFKA_BOOTSTRAP and KAFKA_TOPIC, and \
the [kafka] table of --config FILE (TRANSFORMER_LAUNCHER_CONFIG); flags win over the \
environment, which wins over the file."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run replicas of the configured transformers until SIGINT or SIGTERM.
    #[command(long_about = "Run replicas of the configured transformers until SIGINT or SIGTERM.\n\n\
Each replica has its own Kafka producer and consumer, replays the log from offset 0, then \
transforms each new input and races the other replicas to append the outputs. A replica that \
fails (broker trouble, a panic) is restarted with exponential backoff; a replica that diverges \
(its outputs differ from the canonical ones: the transform is not deterministic) is stopped for \
good and the launcher exits non-zero when it ends. On SIGINT or SIGTERM the replicas flush what \
is in flight and the launcher exits 0. Every 2 s, when anything changed, and at exit, a race \
table goes to stderr.\n\n\
Replica ids are <replica-id>-<transformer>-<n>, n from 1; <replica-id> defaults to the host \
name. Ids must differ between hosts: they say who won each race.")]
    Run(RunArgs),
    /// Create or check the log's topic.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Append JSON events, one per line, from a file or stdin.
    #[command(long_about = "Append JSON events, one per line, from a file or stdin, under an \
event-source key.\n\n\
Each non-empty line must be one JSON value; it is appended as it is, one record per line. \
Without --start-index every line is an unconditional write and takes the key's next index. With \
--start-index N the i-th event (from 0, blank lines skipped) is written only if index N+i is \
still free (exists_or_write), so publishing the same file again with the same N and \
--effective-time-ms changes nothing: each line says written, exists or rejected.")]
    Publish(PublishArgs),
    /// Print the canonical events of one key.
    #[command(long_about = "Print the canonical events of one key as \
`offset index writer payload` lines, in log order: what every subscriber sees. Duplicates, \
rejected and malformed records are not printed (see `status`). Stops at the log end unless \
--follow is given.")]
    Tail(TailArgs),
    /// Summarise the whole log: verdicts per key and who won the races.
    #[command(long_about = "Read the whole log once and print, per event-source key, the \
canonical events, duplicates (races lost), divergent copies (a non-deterministic transform) and \
rejected writes; the malformed records; and, per key, each writer's share of the canonical \
events (races won).")]
    Status(StatusArgs),
    /// List the dead letters of a transformer.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Show racing replicas surviving a crash, against a local broker, in under a minute.
    #[command(long_about = "Show racing replicas surviving a crash, against a broker at \
--bootstrap, in under a minute.\n\n\
Creates a fresh topic demo-<unix time>, starts 3 replicas of the matching engine as separate \
processes, publishes sample orders in bursts (one of them malformed), SIGKILLs the replica that \
won the most races so far while orders keep coming, waits until every order is answered, prints \
the first trades, the share of races each replica won, the dead letter, and how quickly orders \
were answered before and after the kill, then stops the survivors with SIGTERM. The topic is \
kept, to explore with `status`, `tail` and `dead-letters`.")]
    Demo(DemoArgs),
}

/// Where the log is.
#[derive(Args, Debug, Clone, Default)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…] [default: the config file's, else 127.0.0.1:9092]
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "SERVERS")]
    pub bootstrap: Option<String>,
    /// The log's topic [default: the config file's]
    #[arg(long, env = "KAFKA_TOPIC")]
    pub topic: Option<String>,
}

impl KafkaArgs {
    /// As overrides of the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides { bootstrap_servers: self.bootstrap.clone(), topic: self.topic.clone() }
    }
}

/// Where the log is, optionally from a config file.
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Config file whose [kafka] table (servers, topic, librdkafka properties) to use
    #[arg(long, env = "TRANSFORMER_LAUNCHER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The launcher's TOML config: [kafka] and one [[transformer]] per transform to run
    #[arg(long, env = "TRANSFORMER_LAUNCHER_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// First part of every replica id [default: the host name]
    #[arg(long, env = "REPLICA_ID", value_name = "ID")]
    pub replica_id: Option<String>,
    /// Replicas of each transformer in this process, instead of the config's `replicas`
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// With `stagger_ms`: the rank of this process's first replica (the others follow);
    /// give each host its own, 0 on the host that should write first
    #[arg(long, env = "STAGGER_RANK", value_name = "K", default_value_t = 0)]
    pub stagger_rank: u64,
}

/// `topics`.
#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create the log's topic: 1 partition, infinite retention, replication for the cluster.
    #[command(long_about = "Create the log's topic, or check it if it exists: 1 partition (one \
total order), cleanup.policy=delete with retention.ms=-1 and retention.bytes=-1 (nothing is ever \
deleted, so replicas can replay), and on 3 or more brokers replication factor 3 with \
min.insync.replicas=2. Prints what the cluster reports.")]
    Create(LogArgs),
    /// Check that the log's topic has the layout the log needs.
    #[command(long_about = "Check that the log's topic exists with the layout the log needs \
(1 partition, no compaction, infinite retention, enough replication), print what the cluster \
reports, and exit non-zero with the fix if anything is off.")]
    Check(LogArgs),
}

/// `publish`.
#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// The event-source key to append under (e.g. orders)
    #[arg(long)]
    pub key: EventSourceKey,
    /// Read events from FILE instead of stdin
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Business time of every event, ms since the Unix epoch [default: the wall clock at each line]
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub effective_time_ms: Option<i64>,
    /// Write the i-th event only if index N+i is still free: a retried publish is idempotent
    #[arg(long, value_name = "N")]
    pub start_index: Option<u64>,
    /// Writer id recorded in each record [default: <host name>-publish]
    #[arg(long, value_name = "ID")]
    pub writer: Option<String>,
}

/// `tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// The event-source key to print
    pub key: EventSourceKey,
    #[command(flatten)]
    pub log: LogArgs,
    /// Print only events whose record is at this offset or later
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub from: u64,
    /// Keep printing new events as they become canonical, until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub log: LogArgs,
}

/// `dead-letters`.
#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// Print each canonical dead letter of a transformer as one sentence.
    #[command(long_about = "Print each canonical dead letter of a transformer (the events of \
`<NAME>.dead-letters`) as one sentence: where the failed input is, which transformer and \
version failed on it, and why.")]
    List {
        #[command(flatten)]
        log: LogArgs,
        /// The transformer's name (its output key)
        #[arg(long, value_name = "NAME")]
        transformer: EventSourceKey,
    },
}

/// `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// A running broker, host:port
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "SERVERS", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// How many sample orders to publish
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(20..=5_000))]
    pub orders: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
