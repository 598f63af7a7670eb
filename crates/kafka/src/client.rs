//! What every Kafka client of the log shares: where the log lives, the librdkafka
//! properties correctness depends on, and how librdkafka's errors are sorted.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::error::LogError;

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
    /// The partition holding the pipeline (0 for a one-partition log).
    pub partition: i32,
    /// How records are written.
    pub mode: WriteMode,
    /// librdkafka properties passed through to every client (security settings, say). The
    /// properties correctness depends on are set after these and cannot be overridden.
    pub client_properties: BTreeMap<String, String>,
    /// Write the `ct.*` summary headers (`docs/RECORD_FORMAT.md`) for Kafka-native tools.
    /// Off by default: no reader needs them, and for small records they cost a quarter of
    /// the throughput (BENCHMARKS.md).
    pub summary_headers: bool,
}

impl KafkaLogConfig {
    /// A record-group log of partition 0 of `topic`.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            topic: topic.into(),
            partition: 0,
            mode: WriteMode::RecordGroups,
            client_properties: BTreeMap::new(),
            summary_headers: false,
        }
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
        // An offset outside the log is an error, never a silent jump to its end.
        config.set("auto.offset.reset", "error");
        // librdkafka wants a group id for some calls even with manual assignment; no group
        // coordination happens since nothing subscribes or commits.
        config.set("group.id", "competing-transformers-reader");
        config
    }
}

/// Runs a blocking librdkafka call on the blocking pool.
pub(crate) async fn blocking<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> Result<R, LogError> {
    tokio::task::spawn_blocking(call).await.map_err(|e| LogError::Fatal(format!("a blocking Kafka call failed: {e}")))
}

pub(crate) fn config_error(config: &KafkaLogConfig, error: KafkaError) -> LogError {
    LogError::Config(format!(
        "cannot create a Kafka client for {} ({error}); check the client properties",
        config.bootstrap_servers
    ))
}

/// Sorts a Kafka error into transient (retry) or fatal (make a new client).
pub(crate) fn classify(error: KafkaError) -> LogError {
    use RDKafkaErrorCode::*;
    let transient = matches!(
        error.rdkafka_error_code(),
        Some(
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
    );
    if transient {
        LogError::Unavailable(error.to_string())
    } else {
        LogError::Fatal(error.to_string())
    }
}
