//! Creating and checking the log's topic, and the two snapshot topics beside it
//! (`snapshot_store`): `<log>.snapshots`, laid out like the log, and the compacted
//! `<log>.snapshot-index`.
//!
//! The rules are a pure function of what the cluster reports ([`TopicFacts`]), so they are
//! tested without a broker; the functions around them talk to Kafka.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use competing_transformers::shard::Pipelines;

use crate::client::{blocking, classify, creation_error, AccessWatch, KafkaLogConfig};
use crate::error::{code_of, LayoutProblem, LogError};
use crate::snapshot_store;

/// How long an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the first metadata request may take: an unreachable broker is reported this soon.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP connection to a bootstrap server may take to open.
const CONNECT_TIMEOUT_MS: u64 = 3_000;

/// What the cluster says about a topic, as far as the log cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicFacts {
    /// The topic's name.
    pub topic: String,
    /// Number of partitions.
    pub partitions: usize,
    /// Replicas of its first partition.
    pub replication_factor: usize,
    /// Brokers in the cluster.
    pub brokers: usize,
    /// `cleanup.policy`.
    pub cleanup_policy: String,
    /// `retention.ms` (-1 is forever).
    pub retention_ms: i64,
    /// `retention.bytes` (-1 is unlimited).
    pub retention_bytes: i64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// Each partition's leader broker (by broker id), in partition order: pipeline `p`'s is
    /// `leaders[p]`; `None` while a partition has no leader.
    pub leaders: Vec<Option<i32>>,
}

/// The replication factor and `min.insync.replicas` the log wants on a cluster of `brokers`.
pub fn wanted_replication(brokers: usize) -> (usize, usize) {
    if brokers >= 3 {
        (3, 2)
    } else {
        (brokers.max(1), 1)
    }
}

/// Checks the layout rules: one partition, deletion never by policy, infinite retention,
/// and on three or more brokers replication factor 3 with `min.insync.replicas=2`. A
/// violation is a [`LogError::TopicLayout`] whose sentence names the fix.
pub fn check_layout(facts: &TopicFacts, pipelines: Pipelines) -> Result<(), LogError> {
    match layout_problem(facts, pipelines) {
        None => Ok(()),
        Some(problem) => Err(LogError::TopicLayout { topic: facts.topic.clone(), problem }),
    }
}

/// The first layout rule `facts` breaks, if any.
fn layout_problem(facts: &TopicFacts, pipelines: Pipelines) -> Option<LayoutProblem> {
    if let Some(problem) = partitions_problem(facts, pipelines) {
        Some(problem)
    } else if facts.cleanup_policy.split(',').any(|p| p.trim() == "compact") {
        Some(LayoutProblem::Compacted { cleanup_policy: facts.cleanup_policy.clone() })
    } else if facts.retention_ms != -1 {
        Some(LayoutProblem::RetentionTime { retention_ms: facts.retention_ms })
    } else if facts.retention_bytes != -1 {
        Some(LayoutProblem::RetentionSize { retention_bytes: facts.retention_bytes })
    } else {
        replication_problem(facts)
    }
}

/// A partition count other than the log's pipelines.
fn partitions_problem(facts: &TopicFacts, pipelines: Pipelines) -> Option<LayoutProblem> {
    (facts.partitions != pipelines.count() as usize)
        .then_some(LayoutProblem::Partitions { partitions: facts.partitions, pipelines: pipelines.count() })
}

/// Checks the snapshot index's layout: a partition per pipeline, compacted (its readers read
/// a pipeline's partition whole: compaction keeps that to one record per DET), replicated
/// like the log.
pub fn check_index_layout(facts: &TopicFacts, pipelines: Pipelines) -> Result<(), LogError> {
    let problem = if let Some(problem) = partitions_problem(facts, pipelines) {
        Some(problem)
    } else if !facts.cleanup_policy.split(',').any(|p| p.trim() == "compact") {
        Some(LayoutProblem::NotCompacted { cleanup_policy: facts.cleanup_policy.clone() })
    } else {
        replication_problem(facts)
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(LogError::TopicLayout { topic: facts.topic.clone(), problem }),
    }
}

/// The replication rule `facts` breaks, if any.
fn replication_problem(facts: &TopicFacts) -> Option<LayoutProblem> {
    let (wanted_replication, wanted_insync) = wanted_replication(facts.brokers);
    let brokers = facts.brokers;
    if brokers >= 3 && facts.replication_factor < wanted_replication {
        Some(LayoutProblem::ReplicationFactor {
            replication_factor: facts.replication_factor,
            brokers,
            wanted: wanted_replication,
        })
    } else if brokers >= 3 && facts.min_insync_replicas < wanted_insync {
        Some(LayoutProblem::MinInsyncReplicas {
            min_insync_replicas: facts.min_insync_replicas,
            brokers,
            wanted: wanted_insync,
        })
    } else {
        None
    }
}

fn admin_client(config: &KafkaLogConfig) -> Result<AdminClient<DefaultClientContext>, LogError> {
    config.base_client_config().create().map_err(|e| creation_error(config, e))
}

/// Reads the facts about the log's topic from the cluster. A principal denied
/// DescribeConfigs on the topic gets [`LogError::ConfigsDenied`].
pub async fn describe_topic(config: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    match describe(config).await? {
        (facts, true) => Ok(facts),
        (facts, false) => Err(LogError::ConfigsDenied { topic: facts.topic }),
    }
}

/// The topic's facts, and whether the broker showed its configuration: a denied
/// DescribeConfigs answers with an empty one (rdkafka drops the per-topic error code), which
/// must never read as a zero retention.
async fn describe(config: &KafkaLogConfig) -> Result<(TopicFacts, bool), LogError> {
    let admin = Arc::new(admin_client(config)?);
    let topic = config.topic.clone();
    let metadata = fetch_metadata(config, Some(&topic)).await?;
    let brokers = metadata.brokers().len();
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    let missing =
        || LogError::TopicMissing { topic: topic.clone(), bootstrap_servers: config.bootstrap_servers.clone() };
    let found = found.ok_or_else(missing)?;
    if let Some(error) = found.error() {
        return Err(match RDKafkaErrorCode::from(error) {
            RDKafkaErrorCode::UnknownTopicOrPartition => missing(),
            // Denied, or not ready yet (no leader): sorted like any other Kafka error.
            code => classify(KafkaError::MetadataFetch(code), &topic, None, None),
        });
    }
    let partitions = found.partitions().len();
    let leaders = partition_leaders(found);
    let replication_factor = found.partitions().first().map_or(0, |p| p.replicas().len());
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&topic)],
            &AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)),
        )
        .await
        .map_err(|e| classify(e, &topic, None, None))?;
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| LogError::Unavailable {
            topic: topic.clone(),
            partition: None,
            offset: None,
            code: None,
            source: Box::new(KafkaError::AdminOpCreation(
                "the broker's answer to describe_configs names no topic".into(),
            )),
        })?
        .map_err(|code| classify(KafkaError::AdminOp(code), &topic, None, None))?;
    let visible = !resource.entries.is_empty();
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone()).unwrap_or_default();
    let number = |name: &str, default: i64| value(name).parse::<i64>().unwrap_or(default);
    let facts = TopicFacts {
        topic,
        partitions,
        replication_factor,
        brokers,
        cleanup_policy: value("cleanup.policy"),
        retention_ms: number("retention.ms", 0),
        retention_bytes: number("retention.bytes", 0),
        min_insync_replicas: number("min.insync.replicas", 1) as usize,
        leaders,
    };
    Ok((facts, visible))
}

/// Each partition's leader broker in partition order (metadata lists them in any order);
/// `None` for one without a leader (librdkafka says -1).
fn partition_leaders(topic: &rdkafka::metadata::MetadataTopic) -> Vec<Option<i32>> {
    let mut leaders = vec![None; topic.partitions().len()];
    for partition in topic.partitions() {
        if let Some(slot) = usize::try_from(partition.id()).ok().and_then(|id| leaders.get_mut(id)) {
            *slot = (partition.leader() >= 0).then_some(partition.leader());
        }
    }
    leaders
}

/// The first metadata request failed: no broker answered.
pub(crate) fn unreachable_broker(config: &KafkaLogConfig, error: KafkaError) -> LogError {
    LogError::Unreachable { bootstrap_servers: config.bootstrap_servers.clone(), source: Box::new(error) }
}

/// The cluster's metadata (of `topic` only, when given), the first request of every command.
/// A refused password or a failed TLS handshake is told apart from an unreachable broker:
/// the probe's context hears librdkafka's error events, which the admin client never polls.
pub async fn fetch_metadata(config: &KafkaLogConfig, topic: Option<&str>) -> Result<Metadata, LogError> {
    let probe: BaseProducer<AccessWatch> = config
        .base_client_config()
        .create_with_context(AccessWatch::default())
        .map_err(|e| creation_error(config, e))?;
    let topic = topic.map(str::to_string);
    let (fetched, failure) = blocking(move || {
        let fetched = probe.client().fetch_metadata(topic.as_deref(), METADATA_TIMEOUT);
        if fetched.is_err() {
            // Serve the error events queued while the request waited.
            probe.poll(Duration::from_millis(100));
        }
        (fetched, probe.context().failure())
    })
    .await?;
    let bootstrap_servers = config.bootstrap_servers.clone();
    match (fetched, failure) {
        (Ok(metadata), _) => Ok(metadata),
        (Err(_), Some((code, reason))) => Err(LogError::Unauthenticated { bootstrap_servers, code, reason }),
        // A TLS broker that refuses the client's certificate just closes the connection.
        (Err(error), None) if speaks_tls(config) && takes_connections(&bootstrap_servers).await => {
            Err(LogError::Unauthenticated {
                bootstrap_servers,
                code: RDKafkaErrorCode::SSL,
                reason: format!("the broker takes TCP connections but closed each during the TLS handshake ({error}): it does not trust this client's certificate, or the listener speaks another protocol"),
            })
        }
        (Err(error), None) => Err(unreachable_broker(config, error)),
    }
}

/// Whether the client's `security.protocol` is SSL or SASL_SSL.
fn speaks_tls(config: &KafkaLogConfig) -> bool {
    config.client_properties.get("security.protocol").is_some_and(|p| p.to_ascii_lowercase().ends_with("ssl"))
}

/// Whether any of `servers` (`host:port,…`) takes a TCP connection.
async fn takes_connections(servers: &str) -> bool {
    let servers: Vec<String> = servers.split(',').map(|s| s.trim().to_string()).collect();
    blocking(move || {
        servers.iter().any(|server| {
            server.to_socket_addrs().into_iter().flatten().any(|address| {
                std::net::TcpStream::connect_timeout(&address, Duration::from_millis(CONNECT_TIMEOUT_MS)).is_ok()
            })
        })
    })
    .await
    .unwrap_or(false)
}

/// A topic creation the broker refused: an authorization or transient failure says so,
/// anything else is a [`LogError::TopicNotCreated`].
pub(crate) fn creation_refused(topic: String, code: RDKafkaErrorCode) -> LogError {
    match classify(KafkaError::AdminOp(code), &topic, None, None) {
        error if error.is_authorization() || error.is_transient() => error,
        _ => LogError::TopicNotCreated { topic, code, source: Box::new(KafkaError::AdminOp(code)) },
    }
}

/// Checks that the log's topic exists with the layout the log needs.
pub async fn check_topic(config: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    let facts = describe_topic(config).await?;
    check_layout(&facts, config.pipelines)?;
    Ok(facts)
}

/// Whether this client may write the log's topic, found out without writing anything: the
/// probe asks for `acks=2`, which the broker refuses (InvalidRequiredAcks) only after the
/// topic's Write ACL let the request through, so nothing is ever appended.
pub async fn probe_write(config: &KafkaLogConfig) -> Result<(), LogError> {
    let mut client = config.base_client_config();
    client.set("enable.idempotence", "false").set("acks", "2").set("message.timeout.ms", "10000");
    let producer: BaseProducer<AccessWatch> =
        client.create_with_context(AccessWatch::default()).map_err(|e| creation_error(config, e))?;
    let (topic, partition) = (config.topic.clone(), config.partition);
    let outcome = blocking(move || {
        let (tx, rx) = std::sync::mpsc::channel();
        let record: BaseRecord<'_, [u8], [u8], _> =
            BaseRecord::with_opaque_to(&topic, Box::new(tx)).partition(partition).payload(&[]);
        if let Err((error, _)) = producer.send(record) {
            return Err(error);
        }
        producer.flush(Duration::from_secs(15))?;
        rx.try_recv().unwrap_or(Err(KafkaError::Canceled))
    })
    .await?;
    match outcome {
        Err(error) if code_of(&error) == Some(RDKafkaErrorCode::InvalidRequiredAcks) => Ok(()),
        Err(error) => Err(classify(error, &config.topic, Some(config.partition), None)),
        // A broker that took acks=2 appended an empty record: readers count it as malformed.
        Ok(()) => Ok(()),
    }
}

/// Checks the log's topic as a client that only reads or writes it: a principal without
/// DescribeConfigs (an event source, a reader: docs/SECURITY.md) gets only the partition
/// count checked, and a warning that the retention rules were not.
pub async fn check_topic_as_client(config: &KafkaLogConfig) -> Result<(), LogError> {
    let (facts, visible) = describe(config).await?;
    if visible {
        return check_layout(&facts, config.pipelines);
    }
    tracing::warn!(
        topic = %facts.topic,
        "this principal lacks DescribeConfigs on the topic: its retention and cleanup policy were not checked (grant DescribeConfigs, or run `transformer-launcher topics check` as an operator)"
    );
    match partitions_problem(&facts, config.pipelines) {
        None => Ok(()),
        Some(problem) => Err(LogError::TopicLayout { topic: facts.topic, problem }),
    }
}

/// Creates the log's topic with the right layout, or checks it if it exists already.
pub async fn create_topic(config: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    let settings = [("cleanup.policy", "delete"), ("retention.ms", "-1"), ("retention.bytes", "-1")];
    create_then(config, &settings, Layout::Log).await
}

/// What the cluster says about the two snapshot topics of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTopicsFacts {
    /// `<log>.snapshots`: the chunks.
    pub snapshots: TopicFacts,
    /// `<log>.snapshot-index`: the index.
    pub index: TopicFacts,
}

/// Checks the snapshot index topic of `index` (its own configuration, see
/// `snapshot_store::index_config`).
pub async fn check_index_topic(index: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    let facts = describe_topic(index).await?;
    check_index_layout(&facts, index.pipelines)?;
    Ok(facts)
}

/// Checks that the snapshot topics of the log of `config` exist with their layouts.
pub async fn check_snapshot_topics(config: &KafkaLogConfig) -> Result<SnapshotTopicsFacts, LogError> {
    let snapshots = check_topic(&snapshot_store::snapshots_config(config)).await?;
    let index = check_index_topic(&snapshot_store::index_config(config)).await?;
    Ok(SnapshotTopicsFacts { snapshots, index })
}

/// Creates the snapshot topics of the log of `config`, or checks those that exist: the
/// snapshots topic laid out like the log (a snapshot must outlive the log it lets readers
/// skip), the index compacted.
pub async fn create_snapshot_topics(config: &KafkaLogConfig) -> Result<SnapshotTopicsFacts, LogError> {
    let log_settings = [("cleanup.policy", "delete"), ("retention.ms", "-1"), ("retention.bytes", "-1")];
    let snapshots = create_then(&snapshot_store::snapshots_config(config), &log_settings, Layout::Log).await?;
    let index_settings = [("cleanup.policy", "compact")];
    let index = create_then(&snapshot_store::index_config(config), &index_settings, Layout::Index).await?;
    Ok(SnapshotTopicsFacts { snapshots, index })
}

/// Which layout a created topic is checked against.
#[derive(Clone, Copy)]
enum Layout {
    /// The log's, and the snapshots topic's.
    Log,
    /// The snapshot index's.
    Index,
}

/// Creates `config`'s topic with a partition per pipeline (Kafka spreads their leaders over
/// the brokers), the replication the cluster calls for and
/// `settings`, then waits until it has `layout`.
async fn create_then(
    config: &KafkaLogConfig,
    settings: &[(&str, &str)],
    layout: Layout,
) -> Result<TopicFacts, LogError> {
    let admin = Arc::new(admin_client(config)?);
    let metadata = fetch_metadata(config, None).await?;
    let (replication, min_insync) = wanted_replication(metadata.brokers().len());
    let min_insync = min_insync.to_string();
    let topic = settings
        .iter()
        .fold(
            NewTopic::new(&config.topic, config.pipelines.count() as i32, TopicReplication::Fixed(replication as i32)),
            |topic, (name, value)| topic.set(name, value),
        )
        .set("min.insync.replicas", &min_insync);
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)))
        .await
        .map_err(|e| classify(e, &config.topic, None, None))?;
    let mut created = false;
    for result in results {
        match result {
            Ok(_) => created = true,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(creation_refused(name, code)),
        }
    }
    // Metadata may lag creation by a moment: the topic is missing, has no leader yet, or (on
    // a cluster) the broker asked for its configuration does not know it yet and answers
    // with none, which reads like a denied DescribeConfigs. A real denial still ends the wait.
    let mut last = None;
    for _ in 0..50 {
        let checked = match layout {
            Layout::Log => check_topic(config).await,
            Layout::Index => check_index_topic(config).await,
        };
        match checked {
            Ok(facts) => return Ok(facts),
            Err(error)
                if matches!(error, LogError::TopicMissing { .. })
                    || error.code() == Some(RDKafkaErrorCode::LeaderNotAvailable)
                    || (created && matches!(error, LogError::ConfigsDenied { .. })) =>
            {
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => return Err(other),
        }
    }
    Err(last.expect("loop ran"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(brokers: usize) -> TopicFacts {
        let (rf, isr) = wanted_replication(brokers);
        TopicFacts {
            topic: "log".into(),
            partitions: 1,
            replication_factor: rf,
            brokers,
            cleanup_policy: "delete".into(),
            retention_ms: -1,
            retention_bytes: -1,
            min_insync_replicas: isr,
            leaders: vec![Some(1)],
        }
    }

    /// The refusal's problem and its sentence.
    fn refusal(facts: TopicFacts) -> (LayoutProblem, String) {
        let error = check_layout(&facts, Pipelines::ONE).expect_err("a layout the log refuses");
        assert!(error.needs_operator() && !error.is_transient());
        let message = error.to_string();
        match error {
            LogError::TopicLayout { topic, problem } => {
                assert_eq!(topic, facts.topic);
                (problem, message)
            }
            other => panic!("expected a layout error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_layouts_it_creates() {
        for brokers in [1, 2, 3, 5] {
            check_layout(&good(brokers), Pipelines::ONE).unwrap();
        }
    }

    #[test]
    fn wants_a_partition_per_pipeline_and_says_why() {
        let (problem, message) = refusal(TopicFacts { partitions: 3, ..good(1) });
        assert_eq!(problem, LayoutProblem::Partitions { partitions: 3, pipelines: 1 });
        assert!(message.contains("has 3 partition(s)") && message.contains("`pipelines = 3`"), "{message}");
        let three = Pipelines::new(3).unwrap();
        check_layout(&TopicFacts { partitions: 3, ..good(3) }, three).unwrap();
        let error = check_layout(&good(3), three).unwrap_err();
        assert!(matches!(
            error,
            LogError::TopicLayout { problem: LayoutProblem::Partitions { partitions: 1, pipelines: 3 }, .. }
        ));
    }

    #[test]
    fn refuses_finite_retention_and_names_the_fix() {
        let (problem, message) = refusal(TopicFacts { retention_ms: 604_800_000, ..good(1) });
        assert_eq!(problem, LayoutProblem::RetentionTime { retention_ms: 604_800_000 });
        assert!(message.contains("retention.ms=604800000") && message.contains("retention.ms=-1"), "{message}");
        let (problem, message) = refusal(TopicFacts { retention_bytes: 1 << 30, ..good(1) });
        assert_eq!(problem, LayoutProblem::RetentionSize { retention_bytes: 1 << 30 });
        assert!(message.contains("retention.bytes=-1"), "{message}");
    }

    #[test]
    fn refuses_compaction() {
        let (problem, message) = refusal(TopicFacts { cleanup_policy: "compact,delete".into(), ..good(1) });
        assert_eq!(problem, LayoutProblem::Compacted { cleanup_policy: "compact,delete".into() });
        assert!(message.contains("cleanup.policy=delete"), "{message}");
        assert!(message.contains("--entity-name log --add-config cleanup.policy=delete"), "{message}");
    }

    #[test]
    fn on_three_brokers_wants_three_replicas_and_two_in_sync() {
        let (problem, message) = refusal(TopicFacts { replication_factor: 1, ..good(3) });
        assert_eq!(problem, LayoutProblem::ReplicationFactor { replication_factor: 1, brokers: 3, wanted: 3 });
        assert!(message.contains("replication factor 1"), "{message}");
        let (problem, message) = refusal(TopicFacts { min_insync_replicas: 1, ..good(3) });
        assert_eq!(problem, LayoutProblem::MinInsyncReplicas { min_insync_replicas: 1, brokers: 3, wanted: 2 });
        assert!(message.contains("min.insync.replicas=2"), "{message}");
    }

    #[test]
    fn the_snapshot_index_must_be_compacted_and_a_partition_per_pipeline() {
        let index = TopicFacts { cleanup_policy: "compact".into(), ..good(3) };
        let one = Pipelines::ONE;
        check_index_layout(&index, one).unwrap();
        let error =
            check_index_layout(&TopicFacts { cleanup_policy: "delete".into(), ..index.clone() }, one).unwrap_err();
        assert!(
            matches!(&error, LogError::TopicLayout { problem: LayoutProblem::NotCompacted { cleanup_policy }, .. } if cleanup_policy == "delete"),
            "{error:?}"
        );
        assert!(error.to_string().contains("cleanup.policy=compact"), "{error}");
        let error = check_index_layout(&TopicFacts { partitions: 2, ..index.clone() }, one).unwrap_err();
        assert!(matches!(
            error,
            LogError::TopicLayout { problem: LayoutProblem::Partitions { partitions: 2, .. }, .. }
        ));
        check_index_layout(&TopicFacts { partitions: 2, ..index.clone() }, Pipelines::new(2).unwrap()).unwrap();
        let error = check_index_layout(&TopicFacts { replication_factor: 1, ..index }, one).unwrap_err();
        assert!(matches!(error, LogError::TopicLayout { problem: LayoutProblem::ReplicationFactor { .. }, .. }));
    }

    #[test]
    fn a_missing_topic_and_a_denied_one_are_different_errors() {
        let missing = LogError::TopicMissing { topic: "log".into(), bootstrap_servers: "k:9092".into() };
        assert!(missing.to_string().contains("does not exist") && missing.needs_operator());
        assert!(!missing.is_authorization());
        let denied = classify(KafkaError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed), "log", None, None);
        assert!(
            matches!(&denied, LogError::Unauthorized { topic, code: RDKafkaErrorCode::TopicAuthorizationFailed, .. } if topic == "log"),
            "{denied:?}"
        );
        assert!(denied.needs_operator() && !denied.to_string().contains("does not exist"), "{denied}");
    }

    #[test]
    fn a_refused_creation_says_whether_it_was_denied() {
        let denied = creation_refused("log".into(), RDKafkaErrorCode::ClusterAuthorizationFailed);
        assert!(denied.is_authorization(), "{denied:?}");
        let invalid = creation_refused("log".into(), RDKafkaErrorCode::InvalidReplicationFactor);
        assert!(
            matches!(invalid, LogError::TopicNotCreated { code: RDKafkaErrorCode::InvalidReplicationFactor, .. }),
            "{invalid:?}"
        );
        assert!(invalid.needs_operator());
        let busy = creation_refused("log".into(), RDKafkaErrorCode::RequestTimedOut);
        assert!(busy.is_transient(), "{busy:?}");
    }
}
