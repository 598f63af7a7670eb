//! What every Kafka client of the log shares: where the log lives, the librdkafka
//! properties correctness depends on, and how librdkafka's errors are sorted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};

use competing_transformers::event::Offset;
use competing_transformers::shard::Pipelines;
use competing_transformers::signature::{Signer, Trust};

use crate::error::{code_of, is_authentication_code, is_authorization_code, LogError};

/// How a [`KafkaLog`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// One record per atomic group, idempotent producer, no transactions.
    RecordGroups,
    /// One event per record, each group in a Kafka transaction under this id (one id per
    /// replica: two producers with one id fence each other).
    Transactional {
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// How long the broker lets an open transaction hold back readers before aborting it.
        transaction_timeout_ms: u32,
    },
}

/// Where the log lives and how to reach it.
#[derive(Clone, Debug)]
pub struct KafkaLogConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// The log's topic.
    pub topic: String,
    /// The pipeline this client reads and writes: a partition of the topic, and of the
    /// snapshot topics (see [`KafkaLogConfig::pipeline`]).
    pub partition: i32,
    /// How many pipelines the log has: its topics have exactly this many partitions.
    pub pipelines: Pipelines,
    /// How records are written.
    pub mode: WriteMode,
    /// librdkafka properties passed through to every client (security settings, say). The
    /// properties correctness depends on are set after these and cannot be overridden.
    pub client_properties: BTreeMap<String, String>,
    /// Write the `ct.*` summary headers (`docs/RECORD_FORMAT.md`) for Kafka-native tools.
    /// Off by default: no reader needs them, and for small records they cost a quarter of
    /// the throughput (BENCHMARKS.md).
    pub summary_headers: bool,
    /// The log's trust table: which keys count only in records their writers signed. Part of
    /// the log's configuration, like the topic: every reader of the log must use the same.
    pub trust: Trust,
    /// The key this client signs every record it writes with (format version 2), if any.
    /// Its `Debug` shows the public key only.
    pub signer: Option<Signer>,
}

/// The `transactional.id` of pipeline `pipeline` for a writer configured with `base`: `base`
/// itself for pipeline 0 (as on a log of one pipeline), `<base>.pipeline-<p>` for the others.
pub fn pipeline_transactional_id(base: &str, pipeline: u32) -> String {
    match pipeline {
        0 => base.to_string(),
        pipeline => format!("{base}.pipeline-{pipeline}"),
    }
}

impl KafkaLogConfig {
    /// A record-group log of partition 0 of `topic`.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            partition: 0,
            pipelines: Pipelines::ONE,
            mode: WriteMode::RecordGroups,
            client_properties: BTreeMap::new(),
            summary_headers: false,
            trust: Trust::default(),
            signer: None,
        }
    }

    /// This log's pipeline `pipeline`: its partition, and for a transactional writer a
    /// transactional id of its own (pipeline 0 keeps the configured one), since two
    /// pipelines' writers must never fence each other.
    pub fn pipeline(&self, pipeline: u32) -> KafkaLogConfig {
        let mode = match &self.mode {
            WriteMode::Transactional { transactional_id, transaction_timeout_ms } => WriteMode::Transactional {
                transactional_id: pipeline_transactional_id(transactional_id, pipeline),
                transaction_timeout_ms: *transaction_timeout_ms,
            },
            mode => mode.clone(),
        };
        KafkaLogConfig { partition: pipeline as i32, mode, ..self.clone() }
    }

    /// Every pipeline of this log, in order.
    pub fn each_pipeline(&self) -> impl Iterator<Item = KafkaLogConfig> + '_ {
        self.pipelines.all().map(|pipeline| self.pipeline(pipeline))
    }

    /// The client properties every client starts from.
    pub(crate) fn base_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.client_properties {
            config.set(key, value);
        }
        config.set("bootstrap.servers", &self.bootstrap_servers);
        config
    }

    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        // No duplicates or reordering from retries within one producer session.
        config.set("enable.idempotence", "true");
        // A write counts once every in-sync replica has it: acknowledged writes survive a
        // leader's death.
        config.set("acks", "all");
        // Send as soon as there is something to send; under load the queue batches.
        config.set("linger.ms", "0");
        // A delivery that cannot finish in this time fails, and the writer re-sends from the
        // canonical count.
        config.set("message.timeout.ms", "30000");
        config.set("retry.backoff.ms", "20");
        if let WriteMode::Transactional { transactional_id, transaction_timeout_ms } = &self.mode {
            config.set("transactional.id", transactional_id);
            config.set("transaction.timeout.ms", transaction_timeout_ms.to_string());
            // librdkafka requires deliveries to time out no later than the transaction.
            config.set("message.timeout.ms", (*transaction_timeout_ms).min(30_000).to_string());
        }
        config
    }

    pub(crate) fn consumer_config(&self) -> ClientConfig {
        let mut config = self.base_client_config();
        // Never see records of open or aborted transactions.
        config.set("isolation.level", "read_committed");
        // Positions live in the reader's own state, never in Kafka's group offsets.
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        // A reader waits at most this long on the broker for new records: latency, not batching.
        config.set("fetch.wait.max.ms", "5");
        config.set("enable.partition.eof", "false");
        // librdkafka prefetches up to 64 MiB by default; a replica's memory bound
        // (`pending_bytes_max`) would be dwarfed by it. A `[kafka.properties]` value wins.
        if config.get("queued.max.messages.kbytes").is_none() {
            config.set("queued.max.messages.kbytes", "16384");
        }
        // An offset outside the log is an error, never a silent jump to its end.
        config.set("auto.offset.reset", "error");
        // librdkafka wants a group id to assign partitions by hand; nothing subscribes or
        // commits, so no group right is needed (a denied coordinator lookup is ignored by the
        // cursor, docs/SECURITY.md).
        config.set("group.id", "competing-transformers-reader");
        config
    }
}

/// A few of librdkafka's statistics (`statistics.interval.ms`) of one log's clients, as plain
/// numbers; `None` until a client has reported one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStatistics {
    /// Records between the reader's position and the partition's high watermark, as
    /// librdkafka's consumer last saw them (`consumer_lag`).
    pub consumer_lag_records: Option<i64>,
    /// Records in the producer's queue: waiting to be sent or awaiting their acknowledgement
    /// (`msg_cnt`).
    pub producer_queue_records: Option<u64>,
    /// The largest of the brokers' average request round-trip times, in microseconds, over
    /// librdkafka's last statistics window (`brokers[].rtt.avg`).
    pub broker_rtt_avg_us: Option<i64>,
}

/// Which of a log's clients a [`LogContext`] serves: what its statistics say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientRole {
    Producer,
    Reader,
}

/// Where a log's clients leave their statistics for [`crate::EventLog::client_statistics`].
pub(crate) type StatisticsSink = Arc<Mutex<ClientStatistics>>;

/// The context of the log's producers and readers. librdkafka's global errors go to the
/// log; a denied ACL only at debug level, since it also fails the call that needs it, while a
/// reader's unused group and a read-only principal's producer id are denied without harm.
/// With a sink, its statistics are kept there.
#[derive(Clone, Debug, Default)]
pub struct LogContext {
    statistics: Option<(StatisticsSink, ClientRole)>,
}

impl LogContext {
    /// A context whose client leaves its statistics, as `role` sees them, in `sink`.
    pub(crate) fn reporting(sink: &StatisticsSink, role: ClientRole) -> Self {
        Self { statistics: Some((sink.clone(), role)) }
    }
}

impl ClientContext for LogContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some((sink, role)) = &self.statistics else { return };
        let rtt = statistics.brokers.values().filter_map(|broker| broker.rtt.as_ref()).map(|rtt| rtt.avg).max();
        let mut kept = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match role {
            ClientRole::Producer => kept.producer_queue_records = Some(statistics.msg_cnt),
            ClientRole::Reader => {
                // One assigned partition; librdkafka's internal -1 partition has no lag.
                let lag = statistics
                    .topics
                    .values()
                    .flat_map(|topic| topic.partitions.values())
                    .filter(|partition| partition.partition >= 0 && partition.consumer_lag >= 0)
                    .map(|partition| partition.consumer_lag)
                    .max();
                kept.consumer_lag_records = lag.or(kept.consumer_lag_records);
            }
        }
        if rtt.is_some_and(|rtt| rtt > 0) {
            kept.broker_rtt_avg_us = rtt;
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(code) if is_authorization_code(code) => {
                tracing::debug!(%error, reason, "librdkafka: denied; the call that needs it reports it")
            }
            _ => tracing::warn!(%error, reason, "librdkafka reported an error"),
        }
    }
}

impl ConsumerContext for LogContext {}

/// A client context that remembers the first authentication or TLS failure librdkafka
/// reports: a wrong password or an untrusted certificate otherwise reads only as a broker
/// that never answers.
#[derive(Default)]
pub(crate) struct AccessWatch {
    seen: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl AccessWatch {
    /// The first authentication or TLS failure seen, with librdkafka's reason.
    pub(crate) fn failure(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl ClientContext for AccessWatch {
    /// The probe's failures end in one sentence ([`LogError::Unauthenticated`] or
    /// [`LogError::Unreachable`]): librdkafka's own lines about them only at debug level.
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        tracing::debug!(?level, facility, message, "librdkafka");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(code) if is_authentication_code(code) => {
                let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                seen.get_or_insert_with(|| (code, reason.to_string()));
            }
            _ => tracing::debug!(%error, reason, "librdkafka reported an error"),
        }
    }
}

/// A probe's deliveries report to the sender each record carries.
impl ProducerContext for AccessWatch {
    type DeliveryOpaque = Box<std::sync::mpsc::Sender<Result<(), KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let _ = reply.send(result.as_ref().map(|_| ()).map_err(|(error, _)| error.clone()));
    }
}

/// What this build's librdkafka supports: its version and `builtin.features` (e.g.
/// `ssl,sasl,sasl_scram,sasl_oauthbearer,oidc,zstd`).
pub fn build_features() -> (String, String) {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|native| native.get("builtin.features"))
        .unwrap_or_else(|error| format!("unknown ({error})"));
    (version, features)
}

/// Runs a blocking librdkafka call on the blocking pool.
pub(crate) async fn blocking<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> Result<R, LogError> {
    tokio::task::spawn_blocking(call).await.map_err(|e| LogError::Runtime { source: Arc::new(e) })
}

/// librdkafka refused to create a client from `config`'s properties. Its error names the
/// property and echoes the value: the value, and every secret property's value, is hidden.
pub(crate) fn creation_error(config: &KafkaLogConfig, error: KafkaError) -> LogError {
    let secrets: Vec<&str> = config
        .client_properties
        .iter()
        .filter(|(key, value)| is_secret_property(key) && !value.is_empty())
        .map(|(_, value)| value.as_str())
        .collect();
    let hide = |text: &str, extra: &str| {
        let mut text = text.to_string();
        for secret in secrets.iter().copied().chain((!extra.is_empty()).then_some(extra)) {
            text = text.replace(secret, HIDDEN);
        }
        text
    };
    let error = match error {
        KafkaError::ClientConfig(code, description, key, value) => {
            KafkaError::ClientConfig(code, hide(&description, &value), key, HIDDEN.to_string())
        }
        KafkaError::ClientCreation(text) => KafkaError::ClientCreation(hide(&text, "")),
        other => other,
    };
    LogError::ClientCreation { bootstrap_servers: config.bootstrap_servers.clone(), source: Box::new(error) }
}

/// What an error shows in place of a property's value.
const HIDDEN: &str = "<value hidden>";

/// Whether a librdkafka property holds a secret (a password, a private key, a token, a
/// JAAS line): its value is never shown.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", "oauthbearer.config", "key.pem", "ssl.key", "keystore"]
        .iter()
        .any(|word| key.contains(word))
}

impl KafkaLogConfig {
    /// [`classify`] for a call about the log's partition.
    pub(crate) fn classify(&self, error: KafkaError) -> LogError {
        classify(error, &self.topic, Some(self.partition), None)
    }
}

/// Sorts a Kafka error about `topic` (and `partition`, `offset` where known) into the
/// [`LogError`] that says what to do: retry, make a new client, or tell an operator.
///
/// Transient or not is librdkafka's call wherever it makes one: a transaction error carries
/// `is_fatal`, `is_retriable` and `txn_requires_abort` (abort, then try again), and
/// `MessageConsumptionFatal` marks a consumer that is done. A bare error code carries no
/// such flag in librdkafka's API, so for those the list in [`is_transient_code`] decides
/// (and `RDKafkaErrorCode::Fatal`, librdkafka's "the client is done", is not on it).
/// Authorization and fencing are told apart by their codes.
pub(crate) fn classify(error: KafkaError, topic: &str, partition: Option<i32>, offset: Option<Offset>) -> LogError {
    let code = code_of(&error);
    let topic = topic.to_string();
    match code {
        Some(code) if is_authorization_code(code) => {
            return LogError::Unauthorized { topic, code, source: Box::new(error) }
        }
        Some(code @ (RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)) => {
            return LogError::Fenced { topic, code, source: Box::new(error) }
        }
        // `auto.offset.reset=error`: the offset asked for is gone.
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) => {
            return LogError::Truncated { topic, offset: offset.unwrap_or_default(), source: Box::new(error) }
        }
        _ => {}
    }
    let transient = match &error {
        KafkaError::Transaction(inner) => {
            !inner.is_fatal() && (inner.is_retriable() || inner.txn_requires_abort() || is_transient_code(inner.code()))
        }
        KafkaError::MessageConsumptionFatal(_) => false,
        _ => code.is_some_and(is_transient_code),
    };
    if transient {
        LogError::Unavailable { topic, partition, offset, code, source: Box::new(error) }
    } else {
        LogError::Fatal { topic, partition, offset, code, source: Box::new(error) }
    }
}

/// The codes of failures a later retry may get past: timeouts, lost brokers, leadership
/// moving, full queues, a coordinator loading, a topic's metadata not there yet.
fn is_transient_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageTimedOut
            | RequestTimedOut
            | OperationTimedOut
            | AllBrokersDown
            | BrokerTransportFailure
            | NetworkException
            | NotLeaderForPartition
            | LeaderNotAvailable
            | NotEnoughReplicas
            | NotEnoughReplicasAfterAppend
            | QueueFull
            | CoordinatorNotAvailable
            | NotCoordinator
            | CoordinatorLoadInProgress
            | ConcurrentTransactions
            | UnknownTopicOrPartition
            | PurgeQueue
            | PurgeInflight
    )
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::{BaseProducer, Producer};

    use super::*;

    fn sorted(error: KafkaError) -> LogError {
        classify(error, "log", Some(0), Some(42))
    }

    #[test]
    fn timeouts_and_moving_leaders_are_transient_and_keep_where_they_happened() {
        for code in [RDKafkaErrorCode::MessageTimedOut, RDKafkaErrorCode::NotLeaderForPartition] {
            let error = sorted(KafkaError::MessageProduction(code));
            assert!(error.is_transient(), "{error:?}");
            assert_eq!(error.code(), Some(code));
            let LogError::Unavailable { topic, partition, offset, .. } = &error else { panic!("{error:?}") };
            assert_eq!((topic.as_str(), *partition, *offset), ("log", Some(0), Some(42)));
            let source = std::error::Error::source(&error).expect("the Kafka error is the source");
            assert_eq!(
                source.downcast_ref::<Box<KafkaError>>().map(|b| &**b),
                Some(&KafkaError::MessageProduction(code))
            );
        }
    }

    #[test]
    fn a_fatal_client_and_unknown_failures_are_fatal() {
        for error in [
            KafkaError::MessageProduction(RDKafkaErrorCode::Fatal),
            KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::MessageTimedOut),
            KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage),
            KafkaError::Canceled,
        ] {
            let sorted = sorted(error);
            assert!(matches!(sorted, LogError::Fatal { .. }), "{sorted:?}");
            assert!(!sorted.is_transient() && !sorted.needs_operator());
        }
    }

    #[test]
    fn denied_acls_are_authorization_failures_an_operator_fixes() {
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::GroupAuthorizationFailed,
            RDKafkaErrorCode::ClusterAuthorizationFailed,
        ] {
            let error = sorted(KafkaError::AdminOp(code));
            assert!(error.is_authorization() && error.needs_operator() && !error.is_transient(), "{error:?}");
            assert_eq!(error.code(), Some(code));
            assert!(error.to_string().contains("ACLs"), "{error}");
        }
    }

    #[test]
    fn a_refused_property_never_shows_its_value_nor_a_secret() {
        let mut config = KafkaLogConfig::new("127.0.0.1:1", "log");
        config.client_properties.insert("sasl.password".into(), "planted-secret-1".into());
        config.client_properties.insert("sasl.jaas.config".into(), "planted-secret-2".into());
        let refused = config.base_client_config().create::<BaseProducer>().map(|_| ()).expect_err("a Java property");
        let shown = creation_error(&config, refused).to_string();
        assert!(shown.contains("sasl.jaas.config"), "{shown}");
        assert!(!shown.contains("planted-secret"), "{shown}");
        assert!(is_secret_property("ssl.key.password") && !is_secret_property("security.protocol"));
    }

    #[test]
    fn a_fenced_producer_is_told_apart() {
        let error = sorted(KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced));
        assert!(matches!(error, LogError::Fenced { code: RDKafkaErrorCode::ProducerFenced, .. }), "{error:?}");
        assert!(!error.is_transient());
    }

    /// librdkafka's own verdict on a transaction error: a call in the wrong state is neither
    /// retriable nor abortable, so it is not transient.
    #[test]
    fn a_transaction_error_follows_librdkafkas_flags() {
        let mut config = KafkaLogConfig::new("127.0.0.1:1", "log");
        config.mode = WriteMode::Transactional { transactional_id: "t".into(), transaction_timeout_ms: 10_000 };
        let producer: BaseProducer = config.producer_config().create().unwrap();
        let error = producer.begin_transaction().expect_err("no init_transactions yet");
        let KafkaError::Transaction(inner) = &error else { panic!("{error:?}") };
        assert!(!inner.is_retriable() && !inner.txn_requires_abort() && !inner.is_fatal());
        let sorted = sorted(error);
        assert!(matches!(sorted, LogError::Fatal { code: Some(RDKafkaErrorCode::State), .. }), "{sorted:?}");
    }
}
