//! The errors of the log and its clients.
//!
//! Each Kafka failure keeps librdkafka's [`KafkaError`] as its `source()` and carries the
//! [`RDKafkaErrorCode`], the topic and, where known, the partition and offset: callers match
//! on variants and codes, never on message text. How a [`KafkaError`] becomes a variant is
//! decided once, in `client::classify`.
//!
//! The `KafkaError` is boxed (it is 80 bytes; a boxed one keeps every `Result<_, LogError>`
//! small), so a `source()` chain holds a `Box<KafkaError>`: read it from the variant's
//! `source` field, or downcast to `Box<KafkaError>`.

use std::sync::Arc;

/// librdkafka's error and its codes, for callers that match on [`LogError::code`] or read
/// a source without depending on rdkafka themselves.
pub use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use competing_transformers::event::Offset;
use competing_transformers::record::EncodeError;

/// What went wrong talking to the log.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// No broker answered the first metadata request: retry with backoff.
    #[error(
        "cannot reach Kafka at {bootstrap_servers} ({source}); start a broker (scripts/kafka.sh start) or fix bootstrap.servers"
    )]
    Unreachable {
        /// The `bootstrap.servers` tried.
        bootstrap_servers: String,
        /// What librdkafka said (boxed: it is large, and this is the cold path).
        source: Box<KafkaError>,
    },
    /// The broker refused this client's credentials, or the TLS handshake failed (an
    /// untrusted certificate on either side): only an operator can fix it.
    #[error("{}", unauthenticated_sentence(bootstrap_servers, *code, reason))]
    Unauthenticated {
        /// The `bootstrap.servers` tried.
        bootstrap_servers: String,
        /// [`RDKafkaErrorCode::Authentication`], [`RDKafkaErrorCode::SaslAuthenticationFailed`]
        /// or [`RDKafkaErrorCode::SSL`].
        code: RDKafkaErrorCode,
        /// librdkafka's own account of the failure (never holds a secret).
        reason: String,
    },
    /// A request timed out, a broker went away or a partition's leader moved: retry with
    /// backoff.
    #[error("the event log is unavailable on topic `{topic}` ({source}); is the broker running and reachable?")]
    Unavailable {
        /// The topic the call was about.
        topic: String,
        /// The partition, when the call was about one.
        partition: Option<i32>,
        /// The offset a reader was at, when it was one.
        offset: Option<Offset>,
        /// librdkafka's code, when the error has one.
        code: Option<RDKafkaErrorCode>,
        /// What librdkafka said (boxed: it is large, and this is the cold path).
        source: Box<KafkaError>,
    },
    /// A reader asked for an offset the log no longer holds: retention (or an operator)
    /// deleted the records before it.
    #[error(
        "topic `{topic}` no longer holds offset {offset}: its older records were deleted; a reader must start at or after the log's first offset: replicas, tail, status and dead-letters start from a snapshot, export and the ledger projection from their stored position (docs/DESIGN.md \"Snapshots\"), and a new export or projection needs a log that keeps its records"
    )]
    Truncated {
        /// The topic.
        topic: String,
        /// The offset the reader asked for.
        offset: Offset,
        /// What librdkafka said.
        source: Box<KafkaError>,
    },
    /// The client cannot go on (librdkafka says so, or the error is not one a retry fixes):
    /// make a new one.
    #[error("event log client failed on topic `{topic}`: {source}")]
    Fatal {
        /// The topic the call was about.
        topic: String,
        /// The partition, when the call was about one.
        partition: Option<i32>,
        /// The offset a reader was at, when it was one.
        offset: Option<Offset>,
        /// librdkafka's code, when the error has one.
        code: Option<RDKafkaErrorCode>,
        /// What librdkafka said (boxed: it is large, and this is the cold path).
        source: Box<KafkaError>,
    },
    /// A newer transactional producer with the same `transactional.id` took over; this one
    /// is done.
    #[error("{source}; another producer with the same transactional.id took over writing to `{topic}` (fenced)")]
    Fenced {
        /// The topic this producer wrote to.
        topic: String,
        /// [`RDKafkaErrorCode::Fenced`] or [`RDKafkaErrorCode::ProducerFenced`].
        code: RDKafkaErrorCode,
        /// What librdkafka said (boxed: it is large, and this is the cold path).
        source: Box<KafkaError>,
    },
    /// The cluster denied this client's principal an ACL (topic, group, cluster or
    /// transactional id): only an operator can fix it.
    #[error(
        "Kafka denied this client {} while using topic `{topic}` ({source}); grant its principal that ACL (docs/SECURITY.md lists the ACLs of each role) or fix the security settings in the client properties",
        missing_permission(*code)
    )]
    Unauthorized {
        /// The topic the call was about.
        topic: String,
        /// Which authorization failed (see [`is_authorization_code`]).
        code: RDKafkaErrorCode,
        /// What librdkafka said (boxed: it is large, and this is the cold path).
        source: Box<KafkaError>,
    },
    /// The broker showed no configuration of the topic: the principal lacks DescribeConfigs.
    #[error(
        "Kafka shows this client no configuration of topic `{topic}`: its principal lacks the DescribeConfigs permission on the topic, needed to check that the log keeps its events forever; grant it (kafka-acls --add --allow-principal User:NAME --operation DescribeConfigs --topic {topic}) or run this as an operator"
    )]
    ConfigsDenied {
        /// The topic.
        topic: String,
    },
    /// The log's topic does not exist.
    #[error(
        "topic `{topic}` does not exist on {bootstrap_servers}; create it with `transformer-launcher topics create`"
    )]
    TopicMissing {
        /// The topic.
        topic: String,
        /// The cluster asked.
        bootstrap_servers: String,
    },
    /// The topic does not have the layout the log needs.
    #[error("{}", problem.sentence(topic))]
    TopicLayout {
        /// The topic.
        topic: String,
        /// What is wrong with it.
        problem: LayoutProblem,
    },
    /// An export's target topic has fewer partitions than the log has pipelines: pipeline p
    /// is exported to partition p.
    #[error("the export target `{topic}` has {partitions} partition(s) but the log has {pipelines} pipeline(s), each exported to the partition of its number; export to a new topic (created with {pipelines}) or add partitions to `{topic}`")]
    ExportTargetPartitions {
        /// The target topic.
        topic: String,
        /// How many partitions it has.
        partitions: usize,
        /// How many pipelines the log has.
        pipelines: u32,
    },
    /// The cluster refused to create a topic.
    #[error("cannot create topic `{topic}` ({source}); create it yourself with one partition")]
    TopicNotCreated {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
        /// The answer as librdkafka reports it.
        source: Box<KafkaError>,
    },
    /// librdkafka refused the client properties.
    #[error("cannot create a Kafka client for {bootstrap_servers} ({source}); check the client properties")]
    ClientCreation {
        /// The `bootstrap.servers` of the client.
        bootstrap_servers: String,
        /// What librdkafka said (boxed: it is large, and this is the cold path).
        source: Box<KafkaError>,
    },
    /// The record could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The key is protected (the log's trust table) and this writer does not sign with one of
    /// its writers' keys: every reader would ignore what it writes there.
    #[error("{}", unsigned_sentence(key, signer.as_deref()))]
    Unsigned {
        /// The protected key.
        key: String,
        /// This writer's public key (base64), if it signs at all.
        signer: Option<String>,
    },
    /// A Kafka call could not run: a blocking call panicked, or a thread could not start.
    #[error("cannot run a Kafka call ({source})")]
    Runtime {
        /// Why.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl LogError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Unreachable { .. } | LogError::Unavailable { .. })
    }

    /// Whether the log refused the record itself: it cannot be encoded, or the broker or the
    /// producer finds it too large or invalid. No client, old or new, would ever write it.
    pub fn is_refused_record(&self) -> bool {
        matches!(self, LogError::Encode(_))
            || matches!(
                self.code(),
                Some(
                    RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessageSize
                        | RDKafkaErrorCode::MessageBatchTooLarge
                        | RDKafkaErrorCode::InvalidRecord
                )
            )
    }

    /// Whether the cluster denied an ACL ([`LogError::Unauthorized`]).
    pub fn is_authorization(&self) -> bool {
        matches!(self, LogError::Unauthorized { .. } | LogError::ConfigsDenied { .. })
    }

    /// Whether only an operator can fix it (client properties, a missing or misshapen topic,
    /// a missing ACL): neither a retry nor a new client would get further.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            LogError::ClientCreation { .. }
                | LogError::TopicMissing { .. }
                | LogError::TopicLayout { .. }
                | LogError::ExportTargetPartitions { .. }
                | LogError::TopicNotCreated { .. }
                | LogError::Unauthorized { .. }
                | LogError::ConfigsDenied { .. }
                | LogError::Unauthenticated { .. }
                | LogError::Truncated { .. }
                | LogError::Unsigned { .. }
        )
    }

    /// librdkafka's error code, when the failure came with one.
    pub fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            LogError::Unavailable { code, .. } | LogError::Fatal { code, .. } => *code,
            LogError::Fenced { code, .. }
            | LogError::Unauthorized { code, .. }
            | LogError::Unauthenticated { code, .. }
            | LogError::TopicNotCreated { code, .. } => Some(*code),
            LogError::Unreachable { source, .. } | LogError::ClientCreation { source, .. } => code_of(source),
            _ => None,
        }
    }
}

/// "`ledger` is protected …; give this writer a key the trust table lists".
fn unsigned_sentence(key: &str, signer: Option<&str>) -> String {
    let signs = match signer {
        Some(public_key) => {
            format!("this writer signs with public key {public_key}, which the table does not list for it")
        }
        None => "this writer signs nothing".to_string(),
    };
    format!(
        "`{key}` is a protected key of the log (its [[trust.protected]] table): every reader ignores an event there unless its record is signed by one of the key's writers, and {signs}; give this writer the key's signing key (--signing-key-file or TRANSFORMER_SIGNING_KEY_FILE)"
    )
}

/// "Kafka at k:9093 refused this client's credentials (…); fix …".
fn unauthenticated_sentence(bootstrap_servers: &str, code: RDKafkaErrorCode, reason: &str) -> String {
    if code == RDKafkaErrorCode::SSL {
        format!(
            "the TLS handshake with Kafka at {bootstrap_servers} failed ({reason}); check that ssl.ca.location names the CA that signed the broker's certificate, and that the broker trusts the client certificate (ssl.certificate.location, ssl.key.location)"
        )
    } else {
        format!(
            "Kafka at {bootstrap_servers} refused this client's credentials ({reason}); check sasl.mechanism, sasl.username and sasl.password (or the OAUTHBEARER settings) in the client properties"
        )
    }
}

/// Whether `code` says the broker refused the client's credentials or its TLS handshake.
pub fn is_authentication_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::SSL
    )
}

/// The error code of a [`KafkaError`]; unlike [`KafkaError::rdkafka_error_code`] it includes
/// an admin operation's.
pub(crate) fn code_of(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    match error {
        KafkaError::AdminOp(code) => Some(*code),
        other => other.rdkafka_error_code(),
    }
}

/// The permission an authorization failure's code says is missing.
fn missing_permission(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => {
            "an ACL on the topic (Describe to see it, Read to read it, Write to write it)"
        }
        RDKafkaErrorCode::GroupAuthorizationFailed => "an ACL on a consumer group (Read and Describe)",
        RDKafkaErrorCode::ClusterAuthorizationFailed => {
            "an ACL on the cluster (IdempotentWrite, which Write on the topic implies, to write; Create to create topics)"
        }
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
            "an ACL on its transactional id (Write and Describe)"
        }
        _ => "an ACL",
    }
}

/// Whether `code` says the cluster denied an ACL.
pub fn is_authorization_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
    )
}

/// What is wrong with a topic's layout (see `admin::check_layout`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutProblem {
    /// Not a partition per pipeline.
    Partitions {
        /// How many it has.
        partitions: usize,
        /// How many pipelines the log is configured with (`[kafka] pipelines`).
        pipelines: u32,
    },
    /// `cleanup.policy` includes compaction.
    Compacted {
        /// The policy it has.
        cleanup_policy: String,
    },
    /// `cleanup.policy` lacks compaction, which the snapshot index needs.
    NotCompacted {
        /// The policy it has.
        cleanup_policy: String,
    },
    /// `retention.ms` is not -1.
    RetentionTime {
        /// The value it has.
        retention_ms: i64,
    },
    /// `retention.bytes` is not -1.
    RetentionSize {
        /// The value it has.
        retention_bytes: i64,
    },
    /// Fewer replicas than the cluster's size calls for.
    ReplicationFactor {
        /// What it has.
        replication_factor: usize,
        /// Brokers in the cluster.
        brokers: usize,
        /// What the log needs there.
        wanted: usize,
    },
    /// `min.insync.replicas` lower than the cluster's size calls for.
    MinInsyncReplicas {
        /// What it has.
        min_insync_replicas: usize,
        /// Brokers in the cluster.
        brokers: usize,
        /// What the log needs there.
        wanted: usize,
    },
}

impl LayoutProblem {
    /// One sentence saying what is wrong with `topic` and how to fix it.
    pub fn sentence(&self, topic: &str) -> String {
        let alter = |setting: String| {
            format!("kafka-configs --alter --entity-type topics --entity-name {topic} --add-config {setting}")
        };
        match self {
            LayoutProblem::Partitions { partitions, pipelines } => format!(
                "topic `{topic}` has {partitions} partition(s) but the log is configured with {pipelines} pipeline(s), one partition each; set `pipelines = {partitions}` under [kafka] (or pass --pipeline-count {partitions}, or KAFKA_PIPELINES={partitions}) if that is the log's count (it is fixed for the log's life: the shard function depends on it), or point the log at a topic `transformer-launcher topics create` made with {pipelines}"
            ),
            LayoutProblem::Compacted { cleanup_policy } => format!(
                "topic `{topic}` has cleanup.policy={cleanup_policy} which drops superseded records and breaks replay; set cleanup.policy=delete ({})",
                alter("cleanup.policy=delete".into())
            ),
            LayoutProblem::NotCompacted { cleanup_policy } => format!(
                "topic `{topic}` has cleanup.policy={cleanup_policy} but the snapshot index must be compacted, or every reader reads each update it ever had; set cleanup.policy=compact ({})",
                alter("cleanup.policy=compact".into())
            ),
            LayoutProblem::RetentionTime { retention_ms } => format!(
                "topic `{topic}` has finite retention (retention.ms={retention_ms}), so old events would vanish and replicas could not replay the log; set retention.ms=-1 ({})",
                alter("retention.ms=-1".into())
            ),
            LayoutProblem::RetentionSize { retention_bytes } => format!(
                "topic `{topic}` has finite retention (retention.bytes={retention_bytes}), so old events would vanish; set retention.bytes=-1 ({})",
                alter("retention.bytes=-1".into())
            ),
            LayoutProblem::ReplicationFactor { replication_factor, brokers, wanted } => format!(
                "topic `{topic}` has replication factor {replication_factor} on a cluster of {brokers} brokers; the event log needs {wanted} so acknowledged events survive a broker's loss: recreate it with `transformer-launcher topics create`"
            ),
            LayoutProblem::MinInsyncReplicas { min_insync_replicas, brokers, wanted } => format!(
                "topic `{topic}` has min.insync.replicas={min_insync_replicas} on a cluster of {brokers} brokers; set min.insync.replicas={wanted} so an acknowledged write is on two brokers ({})",
                alter(format!("min.insync.replicas={wanted}"))
            ),
        }
    }
}
