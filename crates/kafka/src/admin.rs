//! Creating and checking the log's topic.
//!
//! The rules are a pure function of what the cluster reports ([`TopicFacts`]), so they are
//! tested without a broker; the functions around them talk to Kafka.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::client::{blocking, classify, KafkaLogConfig};
use crate::error::LogError;

/// How long an admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the first metadata request may take: an unreachable broker is reported this soon.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

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
/// and on three or more brokers replication factor 3 with `min.insync.replicas=2`. Each
/// violation is one sentence with the fix.
pub fn check_layout(facts: &TopicFacts) -> Result<(), LogError> {
    let topic = &facts.topic;
    let fail = |message: String| Err(LogError::TopicLayout(message));
    if facts.partitions != 1 {
        return fail(format!(
            "topic `{topic}` has {} partitions but the event log needs exactly 1 (one partition is one totally ordered pipeline); delete it and run `transformer-launcher topics create`, or point the log at a one-partition topic",
            facts.partitions
        ));
    }
    if facts.cleanup_policy.split(',').any(|p| p.trim() == "compact") {
        return fail(format!(
            "topic `{topic}` has cleanup.policy={} which drops superseded records and breaks replay; set cleanup.policy=delete (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=delete)",
            facts.cleanup_policy
        ));
    }
    if facts.retention_ms != -1 {
        return fail(format!(
            "topic `{topic}` has finite retention (retention.ms={}), so old events would vanish and replicas could not replay the log; set retention.ms=-1 (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config retention.ms=-1)",
            facts.retention_ms
        ));
    }
    if facts.retention_bytes != -1 {
        return fail(format!(
            "topic `{topic}` has finite retention (retention.bytes={}), so old events would vanish; set retention.bytes=-1 (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config retention.bytes=-1)",
            facts.retention_bytes
        ));
    }
    let (replication, min_insync) = wanted_replication(facts.brokers);
    if facts.brokers >= 3 && facts.replication_factor < replication {
        return fail(format!(
            "topic `{topic}` has replication factor {} on a cluster of {} brokers; the event log needs {replication} so acknowledged events survive a broker's loss: recreate it with `transformer-launcher topics create`",
            facts.replication_factor, facts.brokers
        ));
    }
    if facts.brokers >= 3 && facts.min_insync_replicas < min_insync {
        return fail(format!(
            "topic `{topic}` has min.insync.replicas={} on a cluster of {} brokers; set min.insync.replicas={min_insync} so an acknowledged write is on two brokers (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config min.insync.replicas={min_insync})",
            facts.min_insync_replicas, facts.brokers
        ));
    }
    Ok(())
}

fn admin_client(config: &KafkaLogConfig) -> Result<AdminClient<DefaultClientContext>, LogError> {
    config.base_client_config().create().map_err(|e| {
        LogError::Config(format!(
            "cannot create a Kafka admin client for {} ({e}); check the client properties",
            config.bootstrap_servers
        ))
    })
}

/// Reads the facts about the log's topic from the cluster.
pub async fn describe_topic(config: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    let admin = Arc::new(admin_client(config)?);
    let topic = config.topic.clone();
    let metadata = {
        let (admin, topic) = (admin.clone(), topic.clone());
        blocking(move || admin.inner().fetch_metadata(Some(&topic), METADATA_TIMEOUT)).await?
    }
    .map_err(|e| unreachable_broker(config, e))?;
    let brokers = metadata.brokers().len();
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    let Some(found) = found.filter(|t| t.error().is_none()) else {
        return Err(LogError::TopicLayout(format!(
            "topic `{topic}` does not exist on {}; create it with `transformer-launcher topics create`",
            config.bootstrap_servers
        )));
    };
    let partitions = found.partitions().len();
    let replication_factor = found.partitions().first().map_or(0, |p| p.replicas().len());
    let described = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(&topic)],
            &AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT)),
        )
        .await
        .map_err(classify)?;
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| LogError::Unavailable("no answer to describe_configs".into()))?
        .map_err(|code| LogError::Unavailable(format!("describe_configs of `{topic}` failed: {code}")))?;
    let value = |name: &str| resource.get(name).and_then(|e| e.value.clone()).unwrap_or_default();
    let number = |name: &str, default: i64| value(name).parse::<i64>().unwrap_or(default);
    Ok(TopicFacts {
        topic,
        partitions,
        replication_factor,
        brokers,
        cleanup_policy: value("cleanup.policy"),
        retention_ms: number("retention.ms", 0),
        retention_bytes: number("retention.bytes", 0),
        min_insync_replicas: number("min.insync.replicas", 1) as usize,
    })
}

fn unreachable_broker(config: &KafkaLogConfig, error: rdkafka::error::KafkaError) -> LogError {
    LogError::Unavailable(format!(
        "cannot reach Kafka at {} ({error}); start a broker (scripts/kafka.sh start) or fix bootstrap.servers",
        config.bootstrap_servers
    ))
}

/// Checks that the log's topic exists with the layout the log needs.
pub async fn check_topic(config: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    let facts = describe_topic(config).await?;
    check_layout(&facts)?;
    Ok(facts)
}

/// Creates the log's topic with the right layout, or checks it if it exists already.
pub async fn create_topic(config: &KafkaLogConfig) -> Result<TopicFacts, LogError> {
    let admin = Arc::new(admin_client(config)?);
    let metadata = {
        let admin = admin.clone();
        blocking(move || admin.inner().fetch_metadata(None, METADATA_TIMEOUT)).await?
    }
    .map_err(|e| unreachable_broker(config, e))?;
    let (replication, min_insync) = wanted_replication(metadata.brokers().len());
    let min_insync = min_insync.to_string();
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(replication as i32))
        .set("cleanup.policy", "delete")
        .set("retention.ms", "-1")
        .set("retention.bytes", "-1")
        .set("min.insync.replicas", &min_insync);
    let results = admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)))
        .await
        .map_err(classify)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(LogError::Fatal(format!("cannot create topic `{name}`: {code}")));
            }
        }
    }
    // Metadata may lag creation by a moment.
    let mut last = None;
    for _ in 0..50 {
        match check_topic(config).await {
            Ok(facts) => return Ok(facts),
            Err(LogError::TopicLayout(message)) if message.contains("does not exist") => {
                last = Some(LogError::TopicLayout(message));
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
        }
    }

    fn refusal(facts: TopicFacts) -> String {
        match check_layout(&facts) {
            Err(LogError::TopicLayout(message)) => message,
            other => panic!("expected a layout error, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_layouts_it_creates() {
        for brokers in [1, 2, 3, 5] {
            check_layout(&good(brokers)).unwrap();
        }
    }

    #[test]
    fn refuses_more_than_one_partition_and_says_why() {
        let message = refusal(TopicFacts { partitions: 3, ..good(1) });
        assert!(message.contains("has 3 partitions") && message.contains("exactly 1"), "{message}");
    }

    #[test]
    fn refuses_finite_retention_and_names_the_fix() {
        let message = refusal(TopicFacts { retention_ms: 604_800_000, ..good(1) });
        assert!(message.contains("retention.ms=604800000") && message.contains("retention.ms=-1"), "{message}");
        let message = refusal(TopicFacts { retention_bytes: 1 << 30, ..good(1) });
        assert!(message.contains("retention.bytes=-1"), "{message}");
    }

    #[test]
    fn refuses_compaction() {
        let message = refusal(TopicFacts { cleanup_policy: "compact,delete".into(), ..good(1) });
        assert!(message.contains("cleanup.policy=delete"), "{message}");
    }

    #[test]
    fn on_three_brokers_wants_three_replicas_and_two_in_sync() {
        let message = refusal(TopicFacts { replication_factor: 1, ..good(3) });
        assert!(message.contains("replication factor 1"), "{message}");
        let message = refusal(TopicFacts { min_insync_replicas: 1, ..good(3) });
        assert!(message.contains("min.insync.replicas=2"), "{message}");
    }
}
