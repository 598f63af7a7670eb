//! The command line: what each command takes, and the help an operator reads.

use std::path::PathBuf;

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::Overrides;
use competing_transformers::event::EventSourceKey;

/// The launcher's command line.
#[derive(Parser, Debug)]
#[command(
    name = "transformer-launcher",
    version,
    about = "Run and operate racing replicas of deterministic event transforms on Kafka partitions",
    long_about = "Run and operate racing replicas of deterministic event transforms (DETs) on Kafka \
partitions.\n\n\
The event log is one topic with infinite retention and a partition per pipeline (one unless \
[kafka] pipelines says more), each a total order of its own. Event sources append \
events under an event-source key; every replica of a transform reads the same partition, \
computes the same outputs and races to append them; readers keep the first copy of each event \
(the canonical rule) and drop the rest, so a replica that stalls or dies holds nobody back.\n\n\
Try it with `scripts/demo.sh` against a local broker. In production run `run --config FILE` once per host \
with `--replica-id HOST --replicas 1`.\n\n\
Every command taking --bootstrap and --topic also reads KAFKA_BOOTSTRAP and KAFKA_TOPIC, and \
the [kafka] table of --config FILE (TRANSFORMER_LAUNCHER_CONFIG); flags win over the \
environment, which wins over the file. librdkafka properties (security settings) come from \
[kafka.properties], then a key=value file (kafka.properties_file or KAFKA_PROPERTIES_FILE), then \
KAFKA_PROPERTY_<NAME> variables (KAFKA_PROPERTY_SASL_PASSWORD sets sasl.password), so no secret \
need sit in the config file; no value of them is ever printed (docs/SECURITY.md).",
    after_help = crate::Exit::help_table()
)]
pub struct Cli {
    /// How log lines on stderr look: `text` for people, `json` (one object a line: timestamp,
    /// level, target, fields) for log collectors
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = Format::Text)]
    pub log_format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How a command writes what it says: for people, or for programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// JSON for programs.
    Json,
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
is in flight and the launcher exits 0. At exit a race table (per replica: inputs, races won \
and lost, dead letters, lag) goes to stderr; with --race-table also every 2 s when anything \
changed. Never with --log-format json, which keeps stderr one JSON object a line; /metrics has \
the same numbers.\n\n\
Replica ids are <replica-id>-<transformer>-<n>, n from 1; <replica-id> defaults to the host \
name. Ids must differ between hosts: they say who won each race.\n\n\
On a log of several pipelines (`pipelines` in the config, --pipeline-count) each transformer \
runs its replicas in every pipeline, or in those --pipelines 0-3,5 selects (give each host its \
share): each replica of each pipeline has its own Kafka clients, snapshots and restarts, and \
its id is <replica-id>-<transformer>-p<N>-<n>. The race table, /metrics (a `pipeline` label) \
and /readyz cover every one. A replica of any pipeline that diverges or stops for good stops \
as it would on a log of one: the other pipelines' replicas run on and `run` exits with its \
code when they end; with --processes it stops every child, of every pipeline.\n\n\
With --metrics-listen IP:PORT (or [metrics] listen in the config) it serves, over HTTP on that \
address: /metrics (Prometheus metrics per transformer and replica: inputs applied, outputs, \
races won and lost, lag, catching up, input-to-output latency, snapshot age, librdkafka's \
statistics; see README.md, Operating it), /healthz (200 while the \
process runs) and /readyz (200 while every replica has caught up and runs live, 503 while any \
starts, catches up, restarts or has stopped for good). Not served with --processes.")]
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
--effective-time-ms changes nothing: each line says written, exists or rejected.\n\n\
On a log of several pipelines (`pipelines` in the config, --pipeline-count) each line goes to one \
pipeline, chosen by --shard-key TEXT (every line to the pipeline of TEXT), --shard-field POINTER \
(each line to the pipeline of its field at that JSON pointer: a string's text, a number's JSON \
text; a line without the field is refused) or --pipeline N; without one of them nothing is \
written. Lines stay in order within each pipeline; with several pipelines each output line \
starts with `p<N> `, and the closing sentence says how many lines each pipeline got. \
--start-index counts within one pipeline, so it is refused with --shard-field over several.\n\n\
The output and dead-letter keys of a DET this launcher registers, or that --config FILE names, \
are refused: only the DET's replicas write them; publish to its input key.")]
    Publish(PublishArgs),
    /// Print the canonical events of one key.
    #[command(long_about = "Print the canonical events of one key as \
`offset index writer payload` lines, in log order: what every subscriber sees. Duplicates, \
rejected and malformed records are not printed (see `status`). Stops at the log end unless \
--follow is given.\n\n\
Like `tail -f`, it starts at the newest replica snapshot holding the key's count (found \
through the snapshot index beside the log; offset 0 when none does): --from-start prints every \
event still on the log, --from OFFSET those from an offset on.")]
    Tail(TailArgs),
    /// Summarise the whole log: verdicts per key and who won the races.
    #[command(long_about = "Read the whole log once and print, per event-source key, the \
canonical events, duplicates (races lost), divergent copies (a non-deterministic transform) and \
rejected writes; the malformed records; and, per key, each writer's share of the canonical \
events (races won).\n\n\
For the streams of each DET this launcher registers or --config FILE names: every canonical \
event from a writer that is not one of its replicas (FOREIGN WRITE: it stops the DET's \
replicas as diverged), and its divergent copies with who wrote them and where.\n\n\
On a truncated log it reads each key from the oldest snapshot at or after the log's first \
offset holding its count, says \"since offset P\" (canonical counts are the whole log's, the \
rest what came since) and names the keys no snapshot holds.")]
    Status(StatusArgs),
    /// List the dead letters of a transformer.
    #[command(name = "dead-letters", subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Copy canonical events of chosen keys to a plain Kafka topic, exactly once.
    #[command(long_about = "Copy the canonical events of chosen keys to a plain Kafka topic, \
exactly once, for Kafka-native tools (consumers, Connect sinks, kcat).\n\n\
One record per event on partition 0 of --to (partition p for pipeline p's events on a log of \
several; created with a partition per pipeline if missing): key = \
the event-source key, value = the payload, timestamp = the effective time, headers ct.key, \
ct.index, ct.offset, ct.content-type, ct.effective-time-ms, ct.writer, ct.digest, and for dead \
letters the __connect.errors.* headers of a Connect dead-letter queue. Each batch is one Kafka \
transaction holding its records and the progress (the committed offset of consumer group \
export-<TOPIC> on the log's partition of the pipeline), so a killed export neither loses nor duplicates anything and the \
next run resumes where the last committed one stopped. Read the target with \
isolation.level=read_committed. Stops at the log end unless --follow is given.")]
    Export(ExportArgs),
    /// Say what this build supports and check a configuration against the log.
    #[command(long_about = "Say what this build of librdkafka supports (TLS, SASL mechanisms, \
OAUTHBEARER/OIDC, compression: its builtin.features), then check the configuration against the \
log, one line each: reachable (a TCP connection), authenticated (the cluster answers with its \
metadata), topic readable (its layout as far as the principal may see it, and a fetch from its \
start), topic writable (a write the broker refuses only after the topic's Write ACL let it \
through: nothing is appended). The first failure prints its one-sentence error and exits with \
its code (5: credentials or an ACL; see docs/SECURITY.md).")]
    Doctor(LogArgs),
    /// Register or check a transformer's Avro output schema in the schema registry.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Make signing keys for protected keys (docs/DESIGN.md "Authenticated writers").
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print a shell completion script for this command line.
    #[command(long_about = "Print a completion script for SHELL on stdout, generated from this \
command line, e.g.\n\n\
  transformer-launcher completions bash > /etc/bash_completion.d/transformer-launcher\n\
  transformer-launcher completions zsh > \"${fpath[1]}/_transformer-launcher\"")]
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) for this command line.
    #[command(long_about = "Print the man page of transformer-launcher (roff, section 1) on \
stdout, generated from this command line, e.g.\n\n\
  transformer-launcher man > /usr/local/share/man/man1/transformer-launcher.1")]
    Man,
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "transformer-launcher", out);
}

/// Writes the man page to `out`.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// `keys`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a new Ed25519 secret key to a new file (mode 0600) and print its public key.
    #[command(long_about = "Write a new Ed25519 secret key (base64) to a new file readable by \
this user only, and print its public key (base64) on stdout. The writers of a protected key \
sign with the secret (--signing-key-file, TRANSFORMER_SIGNING_KEY_FILE or [signing] key_file); \
every launcher and reader of the log lists the public key under [[trust.protected]]. An \
existing file is never replaced.")]
    Generate {
        /// The new file for the secret key
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
    },
}

/// `schemas`.
#[derive(Subcommand, Debug)]
pub enum SchemasCommand {
    /// Register the transformer's output schema under the subject `<name>-value`.
    #[command(long_about = "Register the transformer's Avro output schema (schemas/*.avsc, \
built into the binary) under the subject `<name>-value` and print its id. Registering the same \
schema again is harmless. A schema that breaks the subject's compatibility setting (BACKWARD \
by default) is refused, and the command exits non-zero saying why.")]
    Register(SchemasArgs),
    /// Check, without registering, that the output schema is compatible with the subject.
    Check(SchemasArgs),
}

/// `schemas register|check`.
#[derive(Args, Debug)]
pub struct SchemasArgs {
    /// The transformer whose output schema to register or check
    #[arg(long, value_name = "NAME")]
    pub transformer: String,
    /// The schema registry's base URL (for Apicurio: http://HOST:PORT/apis/ccompat/v7)
    #[arg(long, env = "SCHEMA_REGISTRY_URL", hide_env_values = true, value_name = "URL")]
    pub registry: String,
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
    /// How many pipelines (partitions) the log has [default: the config file's `pipelines`, else 1]
    #[arg(long, env = "KAFKA_PIPELINES", value_name = "P")]
    pub pipeline_count: Option<u32>,
    /// File holding this writer's signing key, for keys the log protects
    /// ([[trust.protected]]); TRANSFORMER_SIGNING_KEY (the key itself) wins [default: the
    /// config's [signing] key_file]
    #[arg(long, env = "TRANSFORMER_SIGNING_KEY_FILE", hide_env_values = true, value_name = "FILE")]
    pub signing_key_file: Option<PathBuf>,
}

impl KafkaArgs {
    /// As overrides of the config file, with the client properties the environment sets
    /// (`KAFKA_PROPERTIES_FILE`, `KAFKA_PROPERTY_*`: secrets stay out of files and flags).
    pub fn overrides(&self) -> Overrides {
        Overrides {
            bootstrap_servers: self.bootstrap.clone(),
            topic: self.topic.clone(),
            pipelines: self.pipeline_count,
            properties_file: std::env::var(crate::config::PROPERTIES_FILE_VAR).ok().filter(|p| !p.is_empty()),
            properties: crate::config::environment_properties(std::env::vars()),
            signing_key_file: self.signing_key_file.as_ref().map(|path| path.display().to_string()),
            signing_key: std::env::var(crate::config::SIGNING_KEY_VAR)
                .ok()
                .filter(|key| !key.trim().is_empty())
                .map(crate::config::SecretText),
        }
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
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The launcher's TOML config: [kafka] and one [[transformer]] per transform to run
    #[arg(long, env = "TRANSFORMER_LAUNCHER_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// First part of every replica id [default: the host name]
    #[arg(long, env = "REPLICA_ID", value_name = "ID")]
    pub replica_id: Option<String>,
    /// Replicas of each transformer in this process (in each chosen pipeline), instead of
    /// the config's `replicas`
    #[arg(long, value_name = "N")]
    pub replicas: Option<u32>,
    /// With `stagger_ms`: the rank of this process's first replica (the others follow);
    /// give each host its own, 0 on the host that should write first
    #[arg(long, env = "STAGGER_RANK", value_name = "K", default_value_t = 0)]
    pub stagger_rank: u64,
    /// Run each replica as its own child process (killing one is a real crash), restarted
    /// when it crashes or fails at run time; a child exiting with a permanent code (2 to 5)
    /// stops them all and the launcher exits with it; SIGINT/SIGTERM stop them all
    #[arg(long)]
    pub processes: bool,
    /// Serve /metrics, /healthz and /readyz over HTTP on this IP:PORT [default: the config's
    /// [metrics] listen; none when neither is set]
    #[arg(long, env = "METRICS_LISTEN", value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve no metrics, whatever the config says (used for --processes children)
    #[arg(long, hide = true)]
    pub no_metrics: bool,
    /// Run only this transformer of the config (used for --processes children)
    #[arg(long, value_name = "NAME", hide = true)]
    pub only: Option<String>,
    /// Print the race table to stderr every 2 s when anything changed, not only at exit
    /// (never with --log-format json)
    #[arg(long, env = "RACE_TABLE")]
    pub race_table: bool,
    /// Whether log lines are JSON (from the global --log-format): the race table, text for
    /// people, is then left out of stderr; /metrics has the same numbers.
    #[arg(skip)]
    pub log_json: bool,
    /// Number of this process's first replica (used for --processes children)
    #[arg(long, value_name = "N", default_value_t = 1, hide = true)]
    pub first_number: u32,
    /// The pipelines whose replicas this process runs: numbers and ranges, comma-separated
    /// (e.g. 0-3,5); give each host its share [default: every pipeline of the log]
    #[arg(long, env = "RUN_PIPELINES", value_name = "LIST")]
    pub pipelines: Option<String>,
}

/// `topics`.
#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Create the log's topic: a partition per pipeline, infinite retention, replication for the cluster.
    #[command(long_about = "Create the log's topic, or check it if it exists: a partition per \
pipeline (1 by default: one total order; `pipelines` in the config or --pipeline-count P for \
more, each partition its own total order, their leaders spread over the brokers), cleanup.policy=delete with retention.ms=-1 and retention.bytes=-1 (nothing is ever \
deleted, so replicas can replay), and on 3 or more brokers replication factor 3 with \
min.insync.replicas=2; the snapshot topics beside it likewise. Prints what the cluster \
reports; on a log of several pipelines also each partition's leader broker.")]
    Create(TopicsArgs),
    /// Check that the log's topic has the layout the log needs.
    #[command(long_about = "Check that the log's topic exists with the layout the log needs \
(a partition per pipeline, no compaction, infinite retention, enough replication), print what \
the cluster reports (with several pipelines, each partition's leader broker), and exit non-zero \
with the fix if anything is off.")]
    Check(TopicsArgs),
}

/// `topics create|check`.
#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// `text` for people; `json` for one JSON document on stdout: {"topic", "bootstrap",
    /// "partitions", "replication_factor", "brokers", "min_insync_replicas",
    /// "cleanup_policy", "retention_ms", "retention_bytes", "pipelines", "leaders": [{"pipeline",
    /// "partition", "leader" (a broker id, null without one)}], "snapshot_topics": {"snapshots":
    /// {"topic", "cleanup_policy"}, "index": {…}} or null when missing}
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
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
    /// On a log of several pipelines: write every line to the pipeline of this shard key
    /// (e.g. a book or an account)
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["shard_field", "pipeline"])]
    pub shard_key: Option<String>,
    /// On a log of several pipelines: write each line to the pipeline of the field at this
    /// JSON pointer (e.g. /account): a string's text or a number's JSON text is the shard key
    #[arg(long, value_name = "POINTER", conflicts_with = "pipeline")]
    pub shard_field: Option<String>,
    /// Write every line to pipeline N (from 0)
    #[arg(long, value_name = "N")]
    pub pipeline: Option<u32>,
}

/// `tail`.
#[derive(Args, Debug, Clone)]
pub struct TailArgs {
    /// The event-source key to print
    pub key: EventSourceKey,
    #[command(flatten)]
    pub log: LogArgs,
    /// Print only events whose record is at this offset or later (read from the newest
    /// snapshot at or before it) [default: from the newest snapshot holding the key's count,
    /// else offset 0]
    #[arg(long, value_name = "OFFSET", conflicts_with = "from_start")]
    pub from: Option<u64>,
    /// Print every event still on the log: from offset 0, or on a truncated log from the
    /// oldest snapshot at or after its first offset
    #[arg(long)]
    pub from_start: bool,
    /// Keep printing new events as they become canonical, until interrupted (every pipeline
    /// at once, lines interleaved as they come)
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Read only this pipeline (partition) of a log of several [default: every pipeline]
    #[arg(long, value_name = "N")]
    pub pipeline: Option<u32>,
    /// `text` for `offset index writer payload` lines (each starting `p<N> `, its pipeline,
    /// on a log of several); `json` for one JSON object a line: {"pipeline", "offset",
    /// "index", "key", "writer", "effective_time_ms", "content_type", "payload" (the JSON
    /// value for a JSON or decoded Avro payload, else a string)}
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

/// `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// `text` for people; `json` for one JSON document on stdout: {"topic", "records",
    /// "malformed", "keys": [{"key", "canonical", "duplicates", "divergent", "rejected",
    /// "writers": [{"writer", "won", "lost", "divergent", "rejected"}], "divergent_copies":
    /// [{"offset", "index", "writer", "canonical_offset"}]}], "foreign_writes": [{"det", "key",
    /// "writer", "reason" ("not_a_replica" or "no_cause"), "events", "offset", "index"}],
    /// "since_offset", "not_summarised": [key], "pipelines": [the same document of each
    /// pipeline, with its "pipeline"]}; on a log of several pipelines the top level holds the
    /// totals: counts summed per key and writer, copies and foreign writes with their
    /// "pipeline", "since_offset" 0 when every pipeline is read from its start (else null).
    /// Text output has a section per pipeline, each line starting `p<N> `, then the totals
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Read only this pipeline (partition) of a log of several [default: every pipeline]
    #[arg(long, value_name = "N")]
    pub pipeline: Option<u32>,

    /// Summarise each key from its newest replica snapshot, not from the log's start: quick
    /// on a long log. Canonical counts stay the whole log's; duplicates, races and
    /// divergences count what came since; keys no snapshot holds are named, not counted
    #[arg(long)]
    pub recent: bool,
}

/// `dead-letters`.
#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// Print each canonical dead letter of a transformer as one sentence.
    #[command(long_about = "Print each canonical dead letter of a transformer (the events of \
`<NAME>.dead-letters`) as one sentence: where the failed input is, which transformer failed \
on it, and why; then, in brackets, its detail when its record carries one: the version that \
computed it and the library's, panic's or registry's own text, which is not digested.\n\n\
On a truncated log it reads from the oldest snapshot of the transformer at or after the log's \
first offset: dead letters before that snapshot cannot be numbered and are not listed.")]
    List {
        #[command(flatten)]
        log: LogArgs,
        /// The transformer's name (its output key)
        #[arg(long, value_name = "NAME")]
        transformer: EventSourceKey,
        /// `text` for one sentence a dead letter (starting `p<N> `, its pipeline, on a log of
        /// several); `json` for one JSON object a line: {"pipeline", "offset", "index",
        /// "dead_letter" (the letter as stored, or null if unreadable), "raw" (its text when
        /// unreadable), "detail" ({"index", "version", "error"} or null)}
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
        /// List only this pipeline's dead letters [default: every pipeline's]
        #[arg(long, value_name = "N")]
        pipeline: Option<u32>,
    },
    /// Write dead letters' original events back, as new events, for a fixed transformer.
    #[command(long_about = "Write the original event of a dead letter (or of all) back to the \
log as a new event on its original input key (or --to): payload, content type and effective \
time untouched, its cause set to the dead letter's offset. A provenance event on \
<NAME>.redrives records which dead letter went where. Idempotent: a retried redrive finds the \
event it wrote (by digest) and writes nothing twice, and of two redrives of one dead letter at \
once only one writes it.\n\n\
A DET's output and dead-letter keys are refused as the target, --to or a dead letter's input \
key: only the DET's replicas write them.")]
    Redrive(RedriveArgs),
}

/// `dead-letters redrive`.
#[derive(Args, Debug)]
pub struct RedriveArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// The transformer's name (its output key)
    #[arg(long, value_name = "NAME")]
    pub transformer: EventSourceKey,
    /// The dead letter's index (the first column of `dead-letters list`)
    #[arg(long, value_name = "I", conflicts_with = "all")]
    pub index: Option<u64>,
    /// Every dead letter of the transformer
    #[arg(long)]
    pub all: bool,
    /// Write to this key instead of the dead letter's input key
    #[arg(long, value_name = "KEY")]
    pub to: Option<EventSourceKey>,
    /// Writer id recorded in each record [default: <host name>-redrive]
    #[arg(long, value_name = "ID")]
    pub writer: Option<String>,
    /// Redrive only this pipeline's dead letters, each into its own pipeline [default: every
    /// pipeline's]; needed with --index on a log of several (each numbers its own)
    #[arg(long, value_name = "N")]
    pub pipeline: Option<u32>,
}

/// `export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Event-source keys to copy, comma-separated (e.g. orders,matching-engine.dead-letters)
    #[arg(long, value_name = "K1,K2", value_delimiter = ',', required = true)]
    pub keys: Vec<EventSourceKey>,
    /// The plain Kafka topic to write
    #[arg(long, value_name = "TOPIC")]
    pub to: String,
    /// Log offset a first export starts at; a stored position always wins
    #[arg(long, value_name = "OFFSET")]
    pub from_offset: Option<u64>,
    /// Most events per Kafka transaction
    #[arg(long, value_name = "N", default_value_t = competing_transformers_kafka::export::BATCH_EVENTS_MAX_DEFAULT)]
    pub batch_events_max: usize,
    /// Keep exporting new events until SIGINT or SIGTERM
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_and_the_man_page_come_from_the_command_line() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("transformer-launcher"), "{shell}: {script}");
            assert!(script.contains("dead-letters") && script.contains("metrics-listen"), "{shell}");
        }
        let mut page = Vec::new();
        man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH transformer-launcher 1"), "{page}");
        assert!(page.contains("Exit codes"), "the man page carries the exit codes");
    }

    #[test]
    fn the_help_shows_every_exit_code() {
        let help = Cli::command().render_long_help().to_string();
        let table = &help[help.find("Exit codes:").expect("the help has the exit codes")..];
        for exit in crate::Exit::ALL {
            let line = format!("\n  {:<4} ", exit.exit_code());
            assert!(table.contains(&line), "exit code {} is missing from the help:\n{table}", exit.exit_code());
        }
        assert!(table.contains("permanent"), "{table}");
    }
}
