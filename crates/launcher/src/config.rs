//! The launcher's configuration: where the log is and which transformers to run.
//!
//! One TOML file, read and validated once at start; every error names the key (or the line)
//! and the fix:
//!
//! ```toml
//! [kafka]
//! bootstrap_servers = "127.0.0.1:9092"  # or --bootstrap / KAFKA_BOOTSTRAP, which win
//! topic = "pipeline"                    # or --topic / KAFKA_TOPIC, which win
//! summary_headers = true                # optional: ct.* headers for kcat and other tools
//!
//! properties_file = "kafka.properties"  # optional: more properties, e.g. secrets (key=value)
//!
//! [kafka.properties]                    # librdkafka properties, passed through as they are
//! "client.id" = "launcher-eu-1"
//! "socket.keepalive.enable" = true
//! # KAFKA_PROPERTY_SASL_PASSWORD=… in the environment sets sasl.password, winning over files
//!
//! [[transformer]]
//! name = "matching-engine"              # a name the launcher binary registers
//! replicas = 3                          # replicas of it in this process (--replicas wins)
//! racing = "adaptive"                   # optional: "adaptive" (default), "all" or "staggered"
//! hold_max_ms = 10                      # optional, adaptive: the longest a follower holds back
//! # stagger_ms = 5                      # "staggered": rank k (--stagger-rank) writes after k × 5 ms
//! pending_mib_max = 64                  # optional: outputs held unconfirmed; past it inputs wait
//! snapshot_every_inputs = 100000        # optional: 0 for no snapshots
//! codec = "avro"                        # optional: write Avro (default "json")
//!
//! [schema_registry]                     # needed for Avro; SCHEMA_REGISTRY_URL wins
//! url = "http://127.0.0.1:8081/apis/ccompat/v7"
//!
//! [metrics]                             # optional: `run` serves /metrics, /healthz, /readyz
//! listen = "127.0.0.1:9464"             # IP:port; --metrics-listen wins
//!
//! [[trust.protected]]                   # optional: keys only their writers' signed records count on
//! keys = ["matching-engine", "matching-engine.dead-letters"]
//! public_keys = ["<base64>"]            # from `transformer-launcher keys generate`; several to rotate
//!
//! [signing]                             # optional: this launcher's signing key, for the keys it writes
//! key_file = "launcher.key"             # a path, never the key; --signing-key-file,
//!                                       # TRANSFORMER_SIGNING_KEY_FILE or TRANSFORMER_SIGNING_KEY win
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::registry::Registry;
use competing_transformers::event::EventSourceKey;
use competing_transformers::replica::{Adaptive, Racing, Stagger};
use competing_transformers::shard::{Pipelines, PIPELINES_MAX};
use competing_transformers::signature::{KeyError, PublicKey, Signer, Trust};
use competing_transformers_kafka::KafkaLogConfig;

/// Where the log is when neither a flag, the environment nor the file says.
pub const BOOTSTRAP_DEFAULT: &str = "127.0.0.1:9092";
/// Most replicas of one transformer one launcher process runs: each holds a producer, a
/// consumer and the transform's whole state.
pub const REPLICAS_PER_TRANSFORMER_MAX: u32 = 64;
/// Inputs between snapshots when `snapshot_every_inputs` is not set.
pub const SNAPSHOT_EVERY_INPUTS_DEFAULT: u64 = 100_000;
/// The largest `pending_mib_max`: a replica holds about twice it (its groups, and the
/// producer's copies of those in flight).
pub const PENDING_MIB_MAX: u64 = 64 * 1024;

/// The configuration file, as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the log is.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// The `[[transformer]]` entries: what to run.
    #[serde(default, rename = "transformer")]
    pub transformers: Vec<TransformerSection>,
    /// Where Avro schemas live: needed to read Avro inputs and to write Avro outputs.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistrySection>,
    /// Where `run` serves its metrics and health endpoints, if anywhere.
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    /// Which keys only their writers' signed records count on: part of the log, like its
    /// topic, so every launcher and reader of the log must have the same table.
    #[serde(default)]
    pub trust: TrustSection,
    /// Where this launcher's signing key is.
    #[serde(default)]
    pub signing: Option<SigningSection>,
    /// Where the configuration came from, for error messages.
    #[serde(skip)]
    pub origin: String,
}

/// The `[kafka]` table.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `bootstrap.servers`: `host:port`, comma-separated.
    pub bootstrap_servers: Option<String>,
    /// The log's topic (a partition per pipeline, infinite retention).
    pub topic: Option<String>,
    /// How many pipelines the log has (1 by default): independent total orders, one
    /// partition each, that producers pick by shard key. Fixed for the log's life.
    pub pipelines: Option<u32>,
    /// librdkafka properties for every client (security settings, client id). The properties
    /// the log's correctness depends on are set by the log itself and win over these.
    #[serde(default)]
    pub properties: BTreeMap<String, Property>,
    /// Write the `ct.*` summary headers for Kafka-native tools (off by default).
    #[serde(default)]
    pub summary_headers: bool,
    /// A file of more librdkafka properties, `key=value` per line (`#` comments), read at
    /// start and winning over `[kafka.properties]`: secrets need not sit in this file.
    /// Relative to the config file; `KAFKA_PROPERTIES_FILE` wins.
    #[serde(default)]
    pub properties_file: Option<String>,
}

/// The environment variable naming a properties file (wins over `kafka.properties_file`).
pub const PROPERTIES_FILE_VAR: &str = "KAFKA_PROPERTIES_FILE";
/// The prefix of environment variables holding one librdkafka property each, winning over
/// every file: `KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password` (lower case, `_` for `.`).
pub const PROPERTY_VAR_PREFIX: &str = "KAFKA_PROPERTY_";

/// The librdkafka properties the environment sets (see [`PROPERTY_VAR_PREFIX`]).
pub fn environment_properties(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(PROPERTY_VAR_PREFIX)?;
            (!key.is_empty()).then(|| (key.to_ascii_lowercase().replace('_', "."), value))
        })
        .collect()
}

/// Parses a properties file: `key=value` per line; blank lines and `#` comments skipped.
/// An error names the line, never its value (it may be a secret).
fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, (usize, &'static str)> {
    let mut properties = BTreeMap::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or((number, "has no `=`; write key=value"))?;
        if key.trim().is_empty() {
            return Err((number, "has no key before `=`"));
        }
        properties.insert(key.trim().to_string(), value.trim().to_string());
    }
    Ok(properties)
}

/// A librdkafka property value: librdkafka takes text, TOML users write numbers and booleans.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Property {
    /// A string.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Property::Text(text) => f.write_str(text),
            Property::Integer(n) => write!(f, "{n}"),
            Property::Float(x) => write!(f, "{x}"),
            Property::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// One `[[transformer]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSection {
    /// The name the launcher binary registered it under.
    pub name: String,
    /// How many replicas of it this process runs.
    #[serde(default = "one")]
    pub replicas: u32,
    /// How its replicas race to write each group (default `adaptive`; `staggered` when
    /// only `stagger_ms` is set).
    #[serde(default)]
    pub racing: Option<RacingMode>,
    /// Adaptive racing: the longest a rank-1 follower holds a group back (default 10 ms):
    /// what a stalled leader costs at most before another replica writes. Raise it where
    /// copies land later than that on a healthy pipeline (a slow or crowded host), or
    /// followers write duplicates.
    #[serde(default)]
    pub hold_max_ms: Option<u64>,
    /// Staggered racing: replica of rank k (`--stagger-rank`) waits k × this many ms before
    /// writing a group, and skips it if another replica's copy is canonical by then.
    #[serde(default)]
    pub stagger_ms: Option<u64>,
    /// Most MiB of outputs a replica holds computed but not yet seen canonical (default 64):
    /// past it, inputs wait on the log instead of in memory, so a backlog of any length
    /// drains in bounded memory.
    #[serde(default)]
    pub pending_mib_max: Option<u64>,
    /// A snapshot after every this many inputs (default [`SNAPSHOT_EVERY_INPUTS_DEFAULT`]),
    /// when the transformer saves its state and the snapshot topics exist; 0: none.
    #[serde(default)]
    pub snapshot_every_inputs: Option<u64>,
    /// How it writes its outputs: `json` (the default) or `avro` (its output schema is
    /// registered at start, and an incompatible one refuses to start).
    #[serde(default)]
    pub codec: Codec,
}

/// How a transformer's replicas race (`racing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RacingMode {
    /// The replica that won lately writes at once, the others hold back for a time learnt
    /// from the log: about one copy of each group, no per-host setting.
    #[default]
    Adaptive,
    /// Every replica writes every group at once: about one copy per replica.
    All,
    /// Ranks per host (`--stagger-rank`) and `stagger_ms`.
    Staggered,
}

impl TransformerSection {
    /// The racing of its replica of rank `rank` (`--stagger-rank` and the replica's number),
    /// once [`Config::replica_plan`] has checked the entry.
    pub fn racing(&self, rank: u64) -> Racing {
        match (self.racing, self.stagger_ms) {
            (Some(RacingMode::All), _) => Racing::AllAtOnce,
            (None | Some(RacingMode::Staggered), Some(delay_ms)) => Racing::Staggered(Stagger { rank, delay_ms }),
            _ => {
                let mut adaptive = Adaptive::default();
                if let Some(hold_max_ms) = self.hold_max_ms {
                    adaptive.hold_max_ms = hold_max_ms;
                }
                Racing::Adaptive(adaptive)
            }
        }
    }
}

/// The payload codec of a transformer's outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// `application/json`.
    #[default]
    Json,
    /// Avro in the Confluent wire format.
    Avro,
}

/// The `[schema_registry]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistrySection {
    /// Base URL of the Confluent-compatible API (`SCHEMA_REGISTRY_URL` wins).
    pub url: String,
}

/// The `[metrics]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// The `IP:port` `run` listens on for `/metrics`, `/healthz` and `/readyz`
    /// (`--metrics-listen` wins).
    pub listen: std::net::SocketAddr,
}

/// The `[trust]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustSection {
    /// The `[[trust.protected]]` entries.
    #[serde(default)]
    pub protected: Vec<ProtectedSection>,
}

/// One `[[trust.protected]]` entry: keys, and the public keys that may write them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedSection {
    /// Event-source keys, e.g. a DET's `<name>` and `<name>.dead-letters`.
    pub keys: Vec<String>,
    /// Base64 Ed25519 public keys of their writers (`keys generate` prints one).
    pub public_keys: Vec<String>,
}

/// The `[signing]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    /// The file holding the base64 secret key, relative to the config file.
    pub key_file: String,
}

/// The environment variable naming the signing key's file (as `--signing-key-file`).
pub const SIGNING_KEY_FILE_VAR: &str = "TRANSFORMER_SIGNING_KEY_FILE";
/// The environment variable holding the signing key itself (base64), winning over files.
pub const SIGNING_KEY_VAR: &str = "TRANSFORMER_SIGNING_KEY";

/// A secret's text: compared and cloned, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

fn one() -> u32 {
    1
}

/// Values given on the command line or in the environment, which win over the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--bootstrap` / `KAFKA_BOOTSTRAP`.
    pub bootstrap_servers: Option<String>,
    /// `--topic` / `KAFKA_TOPIC`.
    pub topic: Option<String>,
    /// The log's pipeline count, over `[kafka] pipelines`.
    pub pipelines: Option<u32>,
    /// `KAFKA_PROPERTIES_FILE`.
    pub properties_file: Option<String>,
    /// `KAFKA_PROPERTY_*` variables ([`environment_properties`]).
    pub properties: BTreeMap<String, String>,
    /// `--signing-key-file` / `TRANSFORMER_SIGNING_KEY_FILE`.
    pub signing_key_file: Option<String>,
    /// `TRANSFORMER_SIGNING_KEY`: the key itself, base64.
    pub signing_key: Option<SecretText>,
}

/// Why the configuration cannot be used. Each is one sentence naming the key and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path} ({source}); check the path given to --config")]
    Read {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The signing key's file could not be read.
    #[error(
        "cannot read the signing key file {path} ({source}); check --signing-key-file, TRANSFORMER_SIGNING_KEY_FILE or [signing] key_file"
    )]
    ReadKey {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or holds an unknown key or a value of the wrong type.
    #[error("config file {origin}, line {line} (`{text}`): {message}; fix that line")]
    Syntax {
        /// The file.
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// The line's text, shortened.
        text: String,
        /// What the parser said.
        message: String,
    },
    /// A value is missing or out of range.
    #[error("{origin}: `{key}` {problem}")]
    Invalid {
        /// The file, or the flags.
        origin: String,
        /// The key, as a TOML path (`transformer[2].replicas`).
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// No topic was given anywhere.
    #[error("no topic given: pass --topic, set KAFKA_TOPIC, or set `topic` under [kafka] in the config file")]
    MissingTopic,
    /// A `[[transformer]]` names a transform this launcher does not register.
    #[error("{origin}: unknown transformer `{name}` in `transformer[{position}].name`; this launcher knows {known}: fix the name, or run a launcher binary that registers it")]
    UnknownTransformer {
        /// The file.
        origin: String,
        /// 1-based position of the entry.
        position: usize,
        /// The name asked for.
        name: String,
        /// The registered names, for the message.
        known: String,
    },
}

impl Config {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
        Self::parse(&text, &origin)
    }

    /// Parses TOML `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| syntax_error(text, origin, &error))?;
        config.origin = origin.to_string();
        Ok(config)
    }

    /// The log's client configuration: overrides first, then the file, then the defaults.
    pub fn log_config(&self, overrides: &Overrides) -> Result<KafkaLogConfig, ConfigError> {
        let invalid = |key: &str, problem: &str| ConfigError::Invalid {
            origin: self.origin_or_flags(),
            key: key.into(),
            problem: problem.into(),
        };
        let bootstrap = overrides
            .bootstrap_servers
            .clone()
            .or_else(|| self.kafka.bootstrap_servers.clone())
            .unwrap_or_else(|| BOOTSTRAP_DEFAULT.to_string());
        if bootstrap.trim().is_empty() {
            return Err(invalid(
                "kafka.bootstrap_servers",
                "is empty; give host:port of one or more brokers (or set KAFKA_BOOTSTRAP)",
            ));
        }
        let topic = overrides.topic.clone().or_else(|| self.kafka.topic.clone()).ok_or(ConfigError::MissingTopic)?;
        if topic.trim().is_empty() {
            return Err(invalid("kafka.topic", "is empty; name the log's topic"));
        }
        if self.kafka.properties.contains_key("bootstrap.servers") {
            return Err(invalid(
                "kafka.properties.\"bootstrap.servers\"",
                "duplicates `kafka.bootstrap_servers`; remove it from [kafka.properties]",
            ));
        }
        let mut config = KafkaLogConfig::new(bootstrap.trim(), topic.trim());
        config.client_properties = self.client_properties(overrides)?;
        if config.client_properties.contains_key("bootstrap.servers") {
            return Err(invalid(
                "bootstrap.servers",
                "is set in a properties file or KAFKA_PROPERTY_ variable; set kafka.bootstrap_servers (or KAFKA_BOOTSTRAP) instead",
            ));
        }
        let pipelines = overrides.pipelines.or(self.kafka.pipelines).unwrap_or(1);
        config.pipelines = Pipelines::new(pipelines).ok_or_else(|| {
            invalid("kafka.pipelines", &format!("is {pipelines}; give a count from 1 to {PIPELINES_MAX}"))
        })?;
        config.summary_headers = self.kafka.summary_headers;
        config.trust = self.trust()?;
        config.signer = self.signer(overrides)?;
        Ok(config)
    }

    /// The log's trust table from `[[trust.protected]]`: every key and public key checked.
    pub fn trust(&self) -> Result<Trust, ConfigError> {
        let mut trust = Trust::new();
        for (position, entry) in self.trust.protected.iter().enumerate().map(|(i, e)| (i + 1, e)) {
            let invalid = |key: String, problem: String| ConfigError::Invalid {
                origin: self.origin_or_flags(),
                key: format!("trust.protected[{position}].{key}"),
                problem,
            };
            if entry.keys.is_empty() || entry.public_keys.is_empty() {
                let which = if entry.keys.is_empty() { "keys" } else { "public_keys" };
                return Err(invalid(which.into(), "is empty; list at least one (or remove the entry)".into()));
            }
            let mut writers = Vec::with_capacity(entry.public_keys.len());
            for (at, text) in entry.public_keys.iter().enumerate() {
                let key = PublicKey::from_base64(text).map_err(|error| {
                    invalid(format!("public_keys[{}]", at + 1), format!("{error}; paste what `keys generate` printed"))
                })?;
                writers.push(key);
            }
            for (at, name) in entry.keys.iter().enumerate() {
                let key = EventSourceKey::new(name.as_str())
                    .map_err(|error| invalid(format!("keys[{}]", at + 1), format!("{error}")))?;
                trust = trust.protect(&key, writers.iter().copied());
            }
        }
        Ok(trust)
    }

    /// This launcher's signing key: `TRANSFORMER_SIGNING_KEY`, else the file of
    /// `--signing-key-file` / `TRANSFORMER_SIGNING_KEY_FILE`, else `[signing] key_file`
    /// (relative to the config file). Errors name where the key came from, never its text.
    pub fn signer(&self, overrides: &Overrides) -> Result<Option<Signer>, ConfigError> {
        let unusable = |origin: String, error: KeyError| ConfigError::Invalid {
            origin,
            key: "signing key".into(),
            problem: format!("{error}; write a new one with `transformer-launcher keys generate`"),
        };
        if let Some(SecretText(text)) = &overrides.signing_key {
            return Signer::from_base64(text).map(Some).map_err(|error| unusable(SIGNING_KEY_VAR.into(), error));
        }
        let path = match (&overrides.signing_key_file, &self.signing) {
            (Some(path), _) => std::path::PathBuf::from(path),
            (None, Some(signing)) => self.relative(&signing.key_file),
            (None, None) => return Ok(None),
        };
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadKey { path: origin.clone(), source })?;
        Signer::from_base64(&text).map(Some).map_err(|error| unusable(format!("signing key file {origin}"), error))
    }

    /// `path` as written in the config file: relative to the file's directory.
    fn relative(&self, path: &str) -> std::path::PathBuf {
        match Path::new(&self.origin).parent() {
            Some(dir) if !self.origin.is_empty() => dir.join(path),
            _ => Path::new(path).to_path_buf(),
        }
    }

    /// `[kafka.properties]`, then the properties file, then the environment's properties.
    fn client_properties(&self, overrides: &Overrides) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut properties: BTreeMap<String, String> =
            self.kafka.properties.iter().map(|(key, value)| (key.clone(), value.to_string())).collect();
        let file = match (&overrides.properties_file, &self.kafka.properties_file) {
            (Some(path), _) => Some(std::path::PathBuf::from(path)),
            (None, Some(path)) => Some(match Path::new(&self.origin).parent() {
                Some(dir) if !self.origin.is_empty() => dir.join(path),
                _ => Path::new(path).to_path_buf(),
            }),
            (None, None) => None,
        };
        if let Some(path) = file {
            let origin = path.display().to_string();
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
            let read = parse_properties(&text).map_err(|(line, problem)| ConfigError::Invalid {
                origin: format!("properties file {origin}"),
                key: format!("line {line}"),
                problem: problem.into(),
            })?;
            properties.extend(read);
        }
        properties.extend(overrides.properties.clone());
        Ok(properties)
    }

    /// What `run` starts: each transformer's name and replica count, checked against the
    /// registry. `replicas` (`--replicas`) replaces every entry's count.
    pub fn replica_plan(&self, registry: &Registry, replicas: Option<u32>) -> Result<Vec<(String, u32)>, ConfigError> {
        let origin = self.origin_or_flags();
        if self.transformers.is_empty() {
            return Err(ConfigError::Invalid {
                origin,
                key: "transformer".into(),
                problem: format!(
                    "has no entries; add one, e.g. `[[transformer]]` with `name = \"{}\"` and `replicas = 1`",
                    registry.names().first().copied().unwrap_or("my-transformer")
                ),
            });
        }
        let mut plan: Vec<(String, u32)> = Vec::with_capacity(self.transformers.len());
        for (position, entry) in self.transformers.iter().enumerate().map(|(i, e)| (i + 1, e)) {
            if !registry.contains(&entry.name) {
                let known = registry.names().iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
                return Err(ConfigError::UnknownTransformer {
                    origin,
                    position,
                    name: entry.name.clone(),
                    known: if known.is_empty() { "no transformers".into() } else { known },
                });
            }
            if plan.iter().any(|(name, _)| name == &entry.name) {
                return Err(ConfigError::Invalid {
                    origin,
                    key: format!("transformer[{position}].name"),
                    problem: format!("repeats `{}`; list each transformer once and set its `replicas`", entry.name),
                });
            }
            let count = replicas.unwrap_or(entry.replicas);
            if !(1..=REPLICAS_PER_TRANSFORMER_MAX).contains(&count) {
                let (key, source) = match replicas {
                    Some(_) => ("--replicas".to_string(), "the command line"),
                    None => (format!("transformer[{position}].replicas"), "the file"),
                };
                return Err(ConfigError::Invalid {
                    origin: if replicas.is_some() { "command line".into() } else { origin },
                    key,
                    problem: format!("is {count} in {source}; set it to 1 to {REPLICAS_PER_TRANSFORMER_MAX}"),
                });
            }
            check_racing(entry, position, &origin)?;
            if let Some(mib) = entry.pending_mib_max.filter(|mib| !(1..=PENDING_MIB_MAX).contains(mib)) {
                return Err(ConfigError::Invalid {
                    origin,
                    key: format!("transformer[{position}].pending_mib_max"),
                    problem: format!("is {mib}; set it to 1 to {PENDING_MIB_MAX} (MiB), or leave it out for 64"),
                });
            }
            plan.push((entry.name.clone(), count));
        }
        Ok(plan)
    }

    fn origin_or_flags(&self) -> String {
        if self.origin.is_empty() {
            "command line".into()
        } else {
            format!("config file {}", self.origin)
        }
    }
}

/// The pipelines a `run --pipelines LIST` selects on a log of `pipelines`: `LIST` is numbers
/// and ranges, comma-separated (`0-3,5`); `None` selects every pipeline. The numbers come
/// back ascending, each once. An empty or garbled list, a backward range or a number the log
/// does not have is refused with one sentence.
pub fn pipeline_selection(list: Option<&str>, pipelines: Pipelines) -> Result<Vec<u32>, String> {
    let Some(list) = list else { return Ok(pipelines.all().collect()) };
    let last = pipelines.count() - 1;
    let shape = format!("give pipeline numbers and ranges from 0 to {last}, e.g. `--pipelines 0-{last}`");
    if list.trim().is_empty() {
        return Err(format!("--pipelines is empty; {shape}"));
    }
    let number = |text: &str| text.trim().parse::<u32>().ok();
    let mut selected = std::collections::BTreeSet::new();
    for part in list.split(',') {
        let (first, end) = match part.split_once('-') {
            Some((first, end)) => (number(first), number(end)),
            None => (number(part), number(part)),
        };
        let (Some(first), Some(end)) = (first, end) else {
            return Err(format!(
                "`{}` in --pipelines `{list}` is not a pipeline number or a range like 0-3; {shape}",
                part.trim()
            ));
        };
        if first > end {
            return Err(format!(
                "the range `{}` in --pipelines `{list}` runs backwards; write it as {end}-{first}",
                part.trim()
            ));
        }
        if end > last {
            return Err(format!(
                "--pipelines `{list}` names pipeline {end}, but the log has {} pipeline(s), numbered 0 to {last}; {shape}",
                pipelines.count()
            ));
        }
        selected.extend(first..=end);
    }
    Ok(selected.into_iter().collect())
}

/// The id of replica `number` of `transformer` in pipeline `pipeline`: `<prefix>-<transformer>-<n>`
/// on a log of one pipeline (as before pipelines existed), `<prefix>-<transformer>-p<N>-<n>`
/// on a log of more, so every replica of a host has an id of its own.
pub fn replica_id(prefix: &str, transformer: &str, pipelines: Pipelines, pipeline: u32, number: u32) -> String {
    if pipelines.count() == 1 {
        format!("{prefix}-{transformer}-{number}")
    } else {
        format!("{prefix}-{transformer}-p{pipeline}-{number}")
    }
}

/// Refuses `racing`, `stagger_ms` and `hold_max_ms` that contradict each other.
fn check_racing(entry: &TransformerSection, position: usize, origin: &str) -> Result<(), ConfigError> {
    let invalid = |key: &str, problem: &str| ConfigError::Invalid {
        origin: origin.to_string(),
        key: format!("transformer[{position}].{key}"),
        problem: problem.into(),
    };
    let problem = match (entry.racing, entry.stagger_ms) {
        (Some(RacingMode::Staggered), None) => {
            Some("is \"staggered\" without `stagger_ms`; set `stagger_ms` (e.g. 5) or choose \"adaptive\"")
        }
        (Some(RacingMode::Adaptive), Some(_)) => {
            Some("is \"adaptive\" but `stagger_ms` is set; remove `stagger_ms` or set `racing = \"staggered\"`")
        }
        (Some(RacingMode::All), Some(_)) => {
            Some("is \"all\" but `stagger_ms` is set; remove `stagger_ms` or set `racing = \"staggered\"`")
        }
        _ => None,
    };
    if let Some(problem) = problem {
        return Err(invalid("racing", problem));
    }
    match entry.hold_max_ms {
        Some(_) if !matches!(entry.racing(0), Racing::Adaptive(_)) => {
            Err(invalid("hold_max_ms", "is set but racing is not adaptive; remove it"))
        }
        Some(ms) if ms < Adaptive::default().hold_min_ms => {
            Err(invalid("hold_max_ms", "is under the shortest hold (2 ms); raise it or leave it out for 10"))
        }
        _ => Ok(()),
    }
}

/// Turns a TOML error into one line: where, what, and the line's text.
fn syntax_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    const SHOWN_CHARS_MAX: usize = 60;
    let start = error.span().map_or(0, |span| span.start.min(text.len()));
    let line = text[..start].matches('\n').count() + 1;
    let shown = text.lines().nth(line - 1).unwrap_or("").trim();
    // A secret property's line shows its key only.
    let hidden;
    let shown = match shown.split_once('=') {
        Some((key, _)) if competing_transformers_kafka::client::is_secret_property(key.trim().trim_matches('"')) => {
            hidden = format!("{} = <value hidden>", key.trim());
            hidden.as_str()
        }
        _ => shown,
    };
    let shown: String = if shown.chars().count() > SHOWN_CHARS_MAX {
        shown.chars().take(SHOWN_CHARS_MAX).chain("…".chars()).collect()
    } else {
        shown.to_string()
    };
    let message = error.message().trim().replace('\n', " ");
    ConfigError::Syntax { origin: origin.to_string(), line, text: shown, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::testing::Echo;

    fn registry() -> Registry {
        Registry::new().with("echo", Echo::default)
    }

    const EXAMPLE: &str = r#"
[kafka]
bootstrap_servers = "k1:9092,k2:9092"
topic = "pipeline"

[kafka.properties]
"client.id" = "eu-1"
"socket.keepalive.enable" = true
"linger.ms" = 5

[[transformer]]
name = "echo"
replicas = 3
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "launcher.toml")
    }

    #[test]
    fn a_metrics_table_names_the_address_to_listen_on() {
        let config = parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(config.metrics.map(|m| m.listen.port()), Some(9464));
        assert!(parse("").unwrap().metrics.is_none());
        assert!(parse("[metrics]\nlisten = \"nowhere\"\n").is_err());
    }

    #[test]
    fn the_documented_example_parses_into_a_log_config_and_a_plan() {
        let config = parse(EXAMPLE).unwrap();
        let log = config.log_config(&Overrides::default()).unwrap();
        assert_eq!(log.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(log.topic, "pipeline");
        assert_eq!(log.client_properties.get("socket.keepalive.enable").map(String::as_str), Some("true"));
        assert_eq!(log.client_properties.get("linger.ms").map(String::as_str), Some("5"));
        assert_eq!(config.replica_plan(&registry(), None).unwrap(), [("echo".to_string(), 3)]);
    }

    #[test]
    fn flags_and_environment_win_over_the_file_and_the_default_bootstrap_applies_last() {
        let config = parse(EXAMPLE).unwrap();
        let overrides = Overrides {
            bootstrap_servers: Some("env:9092".into()),
            topic: Some("other".into()),
            ..Overrides::default()
        };
        let log = config.log_config(&overrides).unwrap();
        assert_eq!((log.bootstrap_servers.as_str(), log.topic.as_str()), ("env:9092", "other"));
        let bare = parse("[kafka]\ntopic = \"t\"\n").unwrap().log_config(&Overrides::default()).unwrap();
        assert_eq!(bare.bootstrap_servers, BOOTSTRAP_DEFAULT);
        assert_eq!(config.replica_plan(&registry(), Some(1)).unwrap(), [("echo".to_string(), 1)]);
    }

    #[test]
    fn an_unknown_key_names_the_line_and_the_key() {
        let error =
            parse("[kafka]\ntopic = \"t\"\n\n[[transformer]]\nname = \"echo\"\nreplica = 3\n").unwrap_err().to_string();
        assert!(error.contains("line 6") && error.contains("unknown field `replica`"), "{error}");
        assert!(error.starts_with("config file launcher.toml"), "{error}");
    }

    #[test]
    fn a_secret_on_a_bad_line_is_not_shown() {
        let error = parse("[kafka.properties]\n\"sasl.password\" = planted-secret\n").unwrap_err().to_string();
        assert!(error.contains("line 2") && error.contains("sasl.password"), "{error}");
        assert!(!error.contains("planted-secret"), "{error}");
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_line() {
        let error = parse("[[transformer]]\nname = \"echo\"\nreplicas = \"three\"\n").unwrap_err().to_string();
        assert!(error.contains("line 3") && error.contains("replicas = \"three\""), "{error}");
    }

    #[test]
    fn an_unknown_transformer_lists_the_known_ones() {
        let config = parse("[[transformer]]\nname = \"echo\"\n[[transformer]]\nname = \"matcher\"\n").unwrap();
        let error = config.replica_plan(&registry(), None).unwrap_err().to_string();
        assert!(
            error.contains("unknown transformer `matcher` in `transformer[2].name`") && error.contains("`echo`"),
            "{error}"
        );
    }

    #[test]
    fn racing_is_adaptive_unless_told_and_stagger_ms_alone_staggers() {
        let racing = |text: &str| {
            let config = parse(&format!("[[transformer]]\nname = \"echo\"\n{text}")).unwrap();
            config.replica_plan(&registry(), None).map(|_| config.transformers[0].racing(2)).map_err(|e| e.to_string())
        };
        assert_eq!(racing(""), Ok(Racing::default()));
        assert_eq!(racing("racing = \"adaptive\"\n"), Ok(Racing::default()));
        assert_eq!(racing("racing = \"all\"\n"), Ok(Racing::AllAtOnce));
        let staggered = Ok(Racing::Staggered(Stagger { rank: 2, delay_ms: 5 }));
        assert_eq!(racing("stagger_ms = 5\n"), staggered);
        assert_eq!(racing("racing = \"staggered\"\nstagger_ms = 5\n"), staggered);
        let error = racing("racing = \"staggered\"\n").unwrap_err();
        assert!(error.contains("`transformer[1].racing` is \"staggered\" without `stagger_ms`"), "{error}");
        let error = racing("racing = \"all\"\nstagger_ms = 5\n").unwrap_err();
        assert!(error.contains("remove `stagger_ms`"), "{error}");
        assert!(parse("[[transformer]]\nname = \"echo\"\nracing = \"first\"\n").is_err());
        let patient = Ok(Racing::Adaptive(Adaptive { hold_max_ms: 40, ..Adaptive::default() }));
        assert_eq!(racing("hold_max_ms = 40\n"), patient);
        assert!(racing("hold_max_ms = 1\n").unwrap_err().contains("under the shortest hold"));
        assert!(racing("racing = \"all\"\nhold_max_ms = 40\n").unwrap_err().contains("racing is not adaptive"));
    }

    #[test]
    fn replica_counts_out_of_range_and_repeated_names_are_refused() {
        let zero = parse("[[transformer]]\nname = \"echo\"\nreplicas = 0\n").unwrap();
        let error = zero.replica_plan(&registry(), None).unwrap_err().to_string();
        assert!(error.contains("`transformer[1].replicas` is 0") && error.contains("1 to 64"), "{error}");
        let error = parse(EXAMPLE).unwrap().replica_plan(&registry(), Some(65)).unwrap_err().to_string();
        assert!(error.contains("`--replicas` is 65"), "{error}");
        let twice = parse("[[transformer]]\nname = \"echo\"\n[[transformer]]\nname = \"echo\"\n").unwrap();
        assert!(twice.replica_plan(&registry(), None).unwrap_err().to_string().contains("repeats `echo`"));
        let none = parse("[kafka]\ntopic = \"t\"\n").unwrap();
        assert!(none.replica_plan(&registry(), None).unwrap_err().to_string().contains("has no entries"));
        let unbounded = parse("[[transformer]]\nname = \"echo\"\npending_mib_max = 0\n").unwrap();
        let error = unbounded.replica_plan(&registry(), None).unwrap_err().to_string();
        assert!(error.contains("`transformer[1].pending_mib_max` is 0"), "{error}");
    }

    #[test]
    fn properties_come_from_the_table_then_a_file_then_the_environment() {
        let dir = std::env::temp_dir().join(format!("ct-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.properties"), "# secrets\nsasl.password = from-file\nsasl.username=u\n")
            .unwrap();
        let text = "[kafka]\ntopic = \"t\"\nproperties_file = \"secret.properties\"\n[kafka.properties]\n\"sasl.username\" = \"table\"\n\"client.id\" = \"c\"\n";
        let config = Config::parse(text, &dir.join("launcher.toml").display().to_string()).unwrap();
        let log = config.log_config(&Overrides::default()).unwrap();
        let get = |log: &KafkaLogConfig, key: &str| log.client_properties.get(key).cloned();
        assert_eq!(get(&log, "sasl.password").as_deref(), Some("from-file"));
        assert_eq!(get(&log, "sasl.username").as_deref(), Some("u"));
        assert_eq!(get(&log, "client.id").as_deref(), Some("c"));
        let vars = [("KAFKA_PROPERTY_SASL_PASSWORD".to_string(), "from-env".to_string()), ("HOME".into(), "/".into())];
        let overrides = Overrides { properties: environment_properties(vars), ..Overrides::default() };
        assert_eq!(overrides.properties.len(), 1);
        assert_eq!(get(&config.log_config(&overrides).unwrap(), "sasl.password").as_deref(), Some("from-env"));
        std::fs::write(dir.join("secret.properties"), "sasl.password\n").unwrap();
        let error = config.log_config(&Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("line 1") && error.contains("key=value"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_topic_and_a_duplicated_bootstrap_property_are_refused() {
        assert!(matches!(parse("").unwrap().log_config(&Overrides::default()), Err(ConfigError::MissingTopic)));
        let config = parse("[kafka]\ntopic = \"t\"\n[kafka.properties]\n\"bootstrap.servers\" = \"x:1\"\n").unwrap();
        let error = config.log_config(&Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("bootstrap.servers") && error.contains("remove it"), "{error}");
    }

    #[test]
    fn the_trust_table_and_the_signing_key_come_from_the_config_and_the_environment() {
        let writer = Signer::from_secret(&[3; 32]);
        let dir = std::env::temp_dir().join(format!("ct-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("launcher.key"), format!("{}\n", writer.secret_base64())).unwrap();
        let text = format!(
            "[kafka]\ntopic = \"t\"\n[[trust.protected]]\nkeys = [\"echo\", \"echo.dead-letters\"]\npublic_keys = [\"{}\"]\n[signing]\nkey_file = \"launcher.key\"\n",
            writer.public_key()
        );
        let config = Config::parse(&text, &dir.join("launcher.toml").display().to_string()).unwrap();
        let log = config.log_config(&Overrides::default()).unwrap();
        assert_eq!(log.trust.writers("echo.dead-letters"), Some(&[writer.public_key()][..]));
        assert!(log.trust.writers("in").is_none());
        assert_eq!(log.signer.map(|s| s.public_key()), Some(writer.public_key()));
        // The environment's key wins over the file's.
        let other = Signer::from_secret(&[4; 32]);
        let overrides = Overrides { signing_key: Some(SecretText(other.secret_base64())), ..Overrides::default() };
        assert_eq!(config.signer(&overrides).unwrap().map(|s| s.public_key()), Some(other.public_key()));
        // A bad key names where it came from and never shows what it holds.
        std::fs::write(dir.join("launcher.key"), "planted-secret\n").unwrap();
        let error = config.log_config(&Overrides::default()).unwrap_err().to_string();
        assert!(error.contains("launcher.key") && error.contains("base64"), "{error}");
        assert!(!error.contains("planted-secret"), "{error}");
        assert!(!format!("{overrides:?}").contains(&other.secret_base64()));
        std::fs::remove_file(dir.join("launcher.key")).unwrap();
        let error = config.log_config(&Overrides::default()).unwrap_err().to_string();
        assert!(error.starts_with("cannot read the signing key file") && error.contains("launcher.key"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_protected_entry_with_a_bad_public_key_or_no_keys_is_refused() {
        let bad = parse("[[trust.protected]]\nkeys = [\"echo\"]\npublic_keys = [\"AAAA\"]\n").unwrap();
        let error = bad.trust().unwrap_err().to_string();
        assert!(error.contains("trust.protected[1].public_keys[1]") && error.contains("32 bytes"), "{error}");
        let empty = parse("[[trust.protected]]\nkeys = []\npublic_keys = []\n").unwrap();
        assert!(empty.trust().unwrap_err().to_string().contains("trust.protected[1].keys"));
        assert!(parse("").unwrap().trust().unwrap().is_empty());
    }

    #[test]
    fn a_pipeline_selection_takes_numbers_and_ranges_and_refuses_the_rest() {
        let four = Pipelines::new(4).unwrap();
        assert_eq!(pipeline_selection(None, four).unwrap(), [0, 1, 2, 3]);
        assert_eq!(pipeline_selection(Some("0-3"), four).unwrap(), [0, 1, 2, 3]);
        assert_eq!(pipeline_selection(Some("3,0-1,1"), four).unwrap(), [0, 1, 3]);
        assert_eq!(pipeline_selection(Some(" 2 "), four).unwrap(), [2]);
        assert_eq!(pipeline_selection(Some("0"), Pipelines::ONE).unwrap(), [0]);
        for (bad, says) in [
            ("", "is empty"),
            ("  ", "is empty"),
            ("1,", "`` in --pipelines `1,` is not a pipeline number"),
            ("a", "`a` in --pipelines `a` is not"),
            ("1-", "is not a pipeline number or a range"),
            ("-1", "is not a pipeline number or a range"),
            ("0-1-2", "is not a pipeline number or a range"),
            ("3-1", "runs backwards; write it as 1-3"),
            ("4", "names pipeline 4, but the log has 4 pipeline(s), numbered 0 to 3"),
            ("2-9", "names pipeline 9"),
        ] {
            let error = pipeline_selection(Some(bad), four).unwrap_err();
            assert!(error.contains(says), "{bad:?}: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }

    #[test]
    fn replica_ids_name_the_pipeline_only_on_a_log_of_several() {
        assert_eq!(replica_id("h", "echo", Pipelines::ONE, 0, 1), "h-echo-1");
        assert_eq!(replica_id("h", "echo", Pipelines::new(3).unwrap(), 2, 1), "h-echo-p2-1");
    }
}
