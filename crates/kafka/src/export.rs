//! The exporter: an event sink copying canonical events of chosen keys to a plain Kafka
//! topic, exactly once, for Kafka-native tools.
//!
//! One Kafka record per canonical event, on partition p of the target topic for pipeline p's
//! events (partition 0 on a one-pipeline log, so the target keeps each pipeline's order): key = the event-source key, value = the event's payload, timestamp
//! = its effective time, and Kafka Connect-style headers (`ct.key`, `ct.index`, `ct.offset`,
//! `ct.content-type`, `ct.effective-time-ms`, `ct.writer`, `ct.digest`; and for a dead letter
//! the `__connect.errors.*` headers a Connect dead-letter queue carries).
//!
//! **Exactly once, by a Kafka transaction per batch.** Each batch's records and the exporter's
//! progress are committed in one transaction: the progress is the log offset to read next,
//! stored as the committed offset of the consumer group `export-<target>` on the log's
//! partition (`send_offsets_to_transaction`). Kafka's own mechanism was chosen over a progress
//! topic because it needs no extra topic, its offsets are fetched with `require_stable` (a
//! `read_committed` fetch waits out a pending transaction), and tools already show group lag.
//! The producer's `transactional.id` is also `export-<target>` (`export-<target>.pipeline-<p>`
//! for pipeline p > 0): a restarted exporter's
//! `init_transactions` fences any previous instance and aborts its open transaction, so a
//! crash at any point leaves the target holding exactly the committed batches, and the
//! restart resumes right after them.
//!
//! **Pipelines.** An [`Exporter`] exports one pipeline (its config's `log.partition`); a log
//! of P pipelines has P of them, each with a producer of its own, committing its progress as
//! the offset of its own partition of the log topic in the one group `export-<target>`, as a
//! consumer of several partitions does, each offset with its own counts as metadata. The
//! target is created with P partitions when missing; one with fewer is refused
//! ([`LogError::ExportTargetPartitions`]).
//!
//! A batch never splits a log record: a record can hold several canonical events (batched
//! groups), and the stored offset must mean "everything before it is exported".
//!
//! **Resuming, not replaying.** The committed offset's metadata string (written by
//! `send_offsets_to_transaction` in the same transaction) holds the canonical counts of the
//! exported keys at that offset ([`ResumeCounts`], JSON), so a restart opens its reader there
//! with the rule resumed (`Pipeline::resumed`) and reads only the log since: the log before
//! may be truncated. Kafka keeps at most `offset.metadata.max.bytes` (4096 by default,
//! [`OFFSET_METADATA_BYTES_MAX`]) of metadata: when the counts do not fit (an export of every
//! key on a log of many keys), the offset is committed without them, a warning says so, and
//! the next run reads the log from offset 0 up to its position as before. An offset committed
//! by an older exporter has no counts either: that run reads from offset 0 once.
//!
//! Cost, as the design says: an open export transaction delays only the target topic's
//! `read_committed` readers, never the event log's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use crate::admin::{creation_refused, unreachable_broker};
use crate::client::{blocking, classify, creation_error, KafkaLogConfig};
use crate::error::LogError;
use crate::log::{CanonicalEvent, EventLog, KafkaLog, Pipeline, Resume};
use crate::shutdown::Shutdown;
use competing_transformers::dead_letter::{DeadLetter, Detail, CONTENT_TYPE_DEAD_LETTER};
use competing_transformers::event::{EventSourceKey, Offset};

/// Most events one export transaction carries, unless configured otherwise.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 500;
/// How long the exporter waits for more events before committing what it has.
const IDLE_WAIT: Duration = Duration::from_millis(300);
/// How long a transaction call (init, offsets, commit) may take.
const TRANSACTION_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of committed-offset metadata a broker keeps by default
/// (`offset.metadata.max.bytes`); longer counts are not stored.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// The [`ResumeCounts`] format this build writes and reads.
pub const RESUME_COUNTS_FORMAT: u32 = 1;

/// The canonical counts at the committed offset, as its metadata string holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumeCounts {
    /// [`RESUME_COUNTS_FORMAT`].
    pub format: u32,
    /// Whether the export was of every key: keys absent from `counts` had no canonical event.
    pub every_key: bool,
    /// Each exported key's canonical count before the committed offset.
    pub counts: BTreeMap<String, u64>,
}

impl ResumeCounts {
    /// The metadata string, or `None` when it does not fit [`OFFSET_METADATA_BYTES_MAX`].
    pub fn encode(&self) -> Option<String> {
        let text = serde_json::to_string(self).expect("counts serialize");
        (text.len() <= OFFSET_METADATA_BYTES_MAX).then_some(text)
    }

    /// Reads a metadata string back; `None` for an empty one (an older exporter's, or counts
    /// that did not fit) or one this build does not read.
    pub fn decode(metadata: &str) -> Option<Self> {
        serde_json::from_str::<Self>(metadata).ok().filter(|counts| counts.format == RESUME_COUNTS_FORMAT)
    }

    /// Where a reader of `keys` (every key when empty) resumes at `position` with these
    /// counts; `None` when they do not cover `keys`.
    pub fn resume(&self, position: Offset, keys: &[EventSourceKey]) -> Option<Resume> {
        let counts = self.counts.iter().map(|(k, c)| EventSourceKey::new(k.as_str()).map(|k| (k, *c)));
        let counts: Vec<(EventSourceKey, u64)> = counts.collect::<Result<_, _>>().ok()?;
        if keys.is_empty() {
            return self.every_key.then(|| Resume::every_key(position, counts));
        }
        let covered = self.every_key || keys.iter().all(|k| self.counts.contains_key(k.as_str()));
        covered.then(|| Resume::every_key(position, counts).restricted(keys))
    }
}

/// What to export and where.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// The event log to read.
    pub log: KafkaLogConfig,
    /// The event-source keys whose canonical events are copied (all keys when empty).
    pub keys: Vec<EventSourceKey>,
    /// The plain Kafka topic written; created with a partition per pipeline if missing.
    pub target_topic: String,
    /// Log offset a first export starts at; a stored position always wins over it.
    pub from_offset: Offset,
    /// Most events per transaction.
    pub batch_events_max: usize,
    /// How long the broker lets an open export transaction live if the exporter dies.
    pub transaction_timeout_ms: u32,
}

impl ExportConfig {
    /// Exports `keys` of `log` to `target_topic` from the log's start.
    pub fn new(log: KafkaLogConfig, keys: Vec<EventSourceKey>, target_topic: impl Into<String>) -> Self {
        Self {
            log,
            keys,
            target_topic: target_topic.into(),
            from_offset: 0,
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            transaction_timeout_ms: 60_000,
        }
    }

    /// The consumer group holding the progress of every pipeline.
    pub fn group_id(&self) -> String {
        format!("export-{}", self.target_topic)
    }

    /// The producer's `transactional.id`: the group's name for pipeline 0, and a name of its
    /// own for each other pipeline, since two pipelines' exporters must never fence each other.
    pub fn transactional_id(&self) -> String {
        crate::client::pipeline_transactional_id(&self.group_id(), self.log.partition as u32)
    }
}

/// Called after a batch's records and progress are sent and flushed, before the commit, with
/// the batch's number (from 1, per run). For fault-injection tests.
pub type BeforeCommit = Arc<dyn Fn(u64) + Send + Sync>;

/// How [`Exporter::run`] runs.
#[derive(Clone, Default)]
pub struct ExportRunOptions {
    /// Keep going at the log end until `shutdown`; otherwise stop there.
    pub follow: bool,
    /// Once requested, the run exports what it has read and stops; never by default.
    pub shutdown: Shutdown,
    /// A fault hook (see [`BeforeCommit`]).
    pub before_commit: Option<BeforeCommit>,
}

/// What one [`Exporter::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Transactions committed.
    pub batches: u64,
    /// Events exported.
    pub events: u64,
    /// The log offset the next run starts at.
    pub position: Offset,
}

/// A transactional exporter with its stored position.
pub struct Exporter {
    config: ExportConfig,
    producer: FutureProducer,
    group: Arc<ConsumerGroupMetadata>,
    position: Offset,
    /// Where the next run's reader starts, with the rule's counts there.
    start: Resume,
}

impl Exporter {
    /// Creates the target topic if missing, starts the transactional producer (fencing any
    /// previous exporter to the same target and aborting its open transaction) and reads the
    /// stored position.
    pub async fn start(config: ExportConfig) -> Result<Self, LogError> {
        assert!(config.batch_events_max > 0, "a batch holds at least one event");
        ensure_target_topic(&config).await?;
        let group_id = config.group_id();
        let mut producer_config = config.log.base_client_config();
        // Exactly once: the batch's records and its progress commit or abort together, and a
        // restart with the same id fences the previous producer.
        producer_config.set("transactional.id", config.transactional_id());
        producer_config.set("enable.idempotence", "true");
        producer_config.set("acks", "all");
        producer_config.set("transaction.timeout.ms", config.transaction_timeout_ms.to_string());
        // librdkafka requires deliveries to time out no later than the transaction.
        producer_config.set("message.timeout.ms", config.transaction_timeout_ms.min(30_000).to_string());
        producer_config.set("linger.ms", "5");
        let producer: FutureProducer = producer_config.create().map_err(|e| creation_error(&config.log, e))?;

        let mut consumer_config = config.log.base_client_config();
        consumer_config.set("group.id", &group_id);
        // Offsets fetched with require_stable: a pending export transaction is waited out.
        consumer_config.set("isolation.level", "read_committed");
        // The position moves only inside export transactions.
        consumer_config.set("enable.auto.commit", "false");
        let progress: BaseConsumer = consumer_config.create().map_err(|e| creation_error(&config.log, e))?;
        let group = Arc::new(progress.group_metadata().ok_or_else(|| {
            let missing =
                KafkaError::ClientCreation(format!("the consumer of group `{group_id}` has no group metadata"));
            creation_error(&config.log, missing)
        })?);

        let init = producer.clone();
        blocking(move || init.init_transactions(TRANSACTION_CALL_TIMEOUT))
            .await?
            .map_err(|e| target_error(&config, e))?;

        let (topic, partition) = (config.log.topic.clone(), config.log.partition);
        let committed = blocking(move || {
            let mut wanted = TopicPartitionList::new();
            wanted.add_partition(&topic, partition);
            progress.committed_offsets(wanted, TRANSACTION_CALL_TIMEOUT)
        })
        .await?
        .map_err(|e| config.log.classify(e))?;
        let stored = committed.find_partition(&config.log.topic, config.log.partition).and_then(|p| match p.offset() {
            KafkaOffset::Offset(offset) if offset >= 0 => Some((offset as Offset, p.metadata().to_string())),
            _ => None,
        });
        let position = stored.as_ref().map_or(config.from_offset, |(offset, _)| *offset);
        let start = match &stored {
            Some((offset, metadata)) => resume_at(&config, *offset, metadata),
            None => Resume::origin(),
        };
        let resumed = !start.is_origin();
        tracing::info!(target = %config.target_topic, position, stored = stored.is_some(), resumed, "exporter started");
        Ok(Self { config, producer, group, position, start })
    }

    /// The log offset the exporter reads next: everything before it is exported.
    pub fn position(&self) -> Offset {
        self.position
    }

    /// Where its next run's reader opens, with the counts there: the log's start when the
    /// committed offset carries no counts.
    pub fn resume(&self) -> &Resume {
        &self.start
    }

    /// Exports canonical events from the position: until the log end seen at the start, or
    /// with `follow` until `shutdown`.
    pub async fn run(&mut self, log: Arc<KafkaLog>, options: ExportRunOptions) -> Result<ExportStats, LogError> {
        let end = log.end_offset().await?;
        let pipeline = Pipeline::resumed(log, format!("export-{}", self.config.target_topic), self.start.clone());
        let mut stream = pipeline.stream_events(&self.config.keys, self.position).await?;
        let mut stats = ExportStats { position: self.position, ..ExportStats::default() };
        let mut batch: Vec<CanonicalEvent> = Vec::new();
        loop {
            let stopping = options.shutdown.is_requested();
            // Stopping: no new fetch, but the events the stream has already read still go out,
            // since the position committed below steps past every record the stream has read.
            let wait = if stopping { Duration::ZERO } else { IDLE_WAIT };
            match stream.next_within(wait).await? {
                Some(event) => {
                    // Full, and this event starts a new record: the batch ends on a record boundary.
                    if batch.len() >= self.config.batch_events_max
                        && batch.last().is_some_and(|l| l.offset != event.offset)
                    {
                        let next_offset = batch.last().expect("non-empty").offset + 1;
                        // The counts before this event's record: it is the first of it handed out.
                        let mut counts = stream.counts_handed();
                        let index = event.event.index.expect("canonical events carry their index");
                        counts.retain(|(key, _)| key != &event.event.key);
                        counts.push((event.event.key.clone(), index));
                        let batch = std::mem::take(&mut batch);
                        self.commit(&batch, next_offset, counts, &options, &mut stats).await?;
                    }
                    batch.push(event);
                }
                None => {
                    // Nothing is waiting in the stream: every record read so far is complete.
                    if !batch.is_empty() {
                        let next_offset = stream.rule().next_offset();
                        let batch = std::mem::take(&mut batch);
                        self.commit(&batch, next_offset, stream.counts_handed(), &options, &mut stats).await?;
                    }
                    if stopping {
                        return Ok(stats);
                    }
                    if !options.follow {
                        // The stream's position steps over transaction markers, which no record holds.
                        if stream.position() >= end {
                            return Ok(stats);
                        }
                    }
                }
            }
        }
    }

    /// The progress committed with a batch: `next_offset`, and in its metadata the `counts`
    /// of the exported keys there when they fit.
    /// Returns the offsets to send and where a next run resumes.
    fn progress(
        &self,
        next_offset: Offset,
        counts: Vec<(EventSourceKey, u64)>,
    ) -> Result<(TopicPartitionList, Resume), LogError> {
        let every_key = self.config.keys.is_empty();
        let mut stored: BTreeMap<String, u64> = self.config.keys.iter().map(|k| (k.to_string(), 0)).collect();
        stored.extend(counts.into_iter().map(|(k, c)| (k.to_string(), c)));
        let counts = ResumeCounts { format: RESUME_COUNTS_FORMAT, every_key, counts: stored };
        let resume = counts.resume(next_offset, &self.config.keys);
        let metadata = counts.encode().filter(|_| resume.is_some()).unwrap_or_else(|| {
            tracing::warn!(
                target = %self.config.target_topic,
                keys = counts.counts.len(),
                "the counts of the exported keys exceed {OFFSET_METADATA_BYTES_MAX} bytes of offset metadata: committing the offset without them, so the next export reads the log from offset 0 to its position (export fewer keys to resume instead)"
            );
            String::new()
        });
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &self.config.log.topic,
                self.config.log.partition,
                KafkaOffset::Offset(next_offset as i64),
            )
            .map_err(|e| self.config.log.classify(e))?;
        if let Some(mut element) = offsets.find_partition(&self.config.log.topic, self.config.log.partition) {
            element.set_metadata(metadata.as_str());
        }
        let resume = if metadata.is_empty() { Resume::origin() } else { resume.unwrap_or_default() };
        Ok((offsets, resume))
    }

    /// One transaction: the batch's records, then the progress, then the commit.
    async fn commit(
        &mut self,
        batch: &[CanonicalEvent],
        next_offset: Offset,
        counts: Vec<(EventSourceKey, u64)>,
        options: &ExportRunOptions,
        stats: &mut ExportStats,
    ) -> Result<(), LogError> {
        debug_assert!(next_offset > self.position, "progress only moves forward");
        let producer = self.producer.clone();
        blocking(move || producer.begin_transaction()).await?.map_err(|e| target_error(&self.config, e))?;
        let mut deliveries = Vec::with_capacity(batch.len());
        for canonical in batch {
            let headers = export_headers(canonical, &self.config.log);
            let key = canonical.event.key.as_str().as_bytes();
            let record = FutureRecord::to(&self.config.target_topic)
                .partition(self.config.log.partition)
                .key(key)
                .payload(canonical.event.payload.as_slice())
                .timestamp(canonical.event.effective_time_ms)
                .headers(headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |all, (k, v)| {
                    all.insert(Header { key: k, value: Some(v.as_bytes()) })
                }));
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => return Err(self.abort(target_error(&self.config, error)).await),
            }
        }
        let (offsets, resume) = self.progress(next_offset, counts)?;
        let (producer, group) = (self.producer.clone(), self.group.clone());
        let sent = blocking(move || {
            // Flushing first costs nothing (the commit flushes anyway) and makes a crash
            // before the commit leave real, uncommitted records behind.
            producer.flush(TRANSACTION_CALL_TIMEOUT)?;
            producer.send_offsets_to_transaction(&offsets, &group, TRANSACTION_CALL_TIMEOUT)
        })
        .await?;
        if let Err(error) = sent {
            return Err(self.abort(target_error(&self.config, error)).await);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(self.abort(target_error(&self.config, error)).await),
                // The producer went away before it reported.
                Err(_) => return Err(target_error(&self.config, KafkaError::Canceled)),
            }
        }
        if let Some(hook) = &options.before_commit {
            hook(stats.batches + 1);
        }
        let producer = self.producer.clone();
        blocking(move || producer.commit_transaction(TRANSACTION_CALL_TIMEOUT))
            .await?
            .map_err(|e| target_error(&self.config, e))?;
        self.position = next_offset;
        self.start = resume;
        stats.batches += 1;
        stats.events += batch.len() as u64;
        stats.position = next_offset;
        Ok(())
    }

    /// Aborts the open transaction after `error`, and returns the error.
    async fn abort(&self, error: LogError) -> LogError {
        let producer = self.producer.clone();
        if let Ok(Err(abort)) = blocking(move || producer.abort_transaction(TRANSACTION_CALL_TIMEOUT)).await {
            tracing::warn!(%abort, "aborting the export transaction failed; the next start fences it");
        }
        error
    }
}

/// Where an export whose committed offset is `offset`, with `metadata`, resumes: there with
/// the stored counts, or from offset 0 (hiding what is before `offset`) when it has none.
fn resume_at(config: &ExportConfig, offset: Offset, metadata: &str) -> Resume {
    match ResumeCounts::decode(metadata).and_then(|counts| counts.resume(offset, &config.keys)) {
        Some(start) => start,
        None => {
            tracing::info!(
                target = %config.target_topic,
                offset,
                "the committed offset carries no counts of the exported keys (an older exporter's, too many keys, or other keys): reading the log from offset 0 to it once"
            );
            Resume::origin()
        }
    }
}

/// The headers of one exported event: `ct.*` for every event, and for a dead letter the
/// `__connect.errors.*` headers of a Kafka Connect dead-letter queue.
pub fn export_headers(canonical: &CanonicalEvent, log: &KafkaLogConfig) -> Vec<(String, String)> {
    let event = &canonical.event;
    let mut headers = vec![
        ("ct.key".to_string(), event.key.to_string()),
        ("ct.index".to_string(), event.index.expect("canonical events carry their index").to_string()),
        ("ct.offset".to_string(), canonical.offset.to_string()),
        ("ct.content-type".to_string(), event.content_type.clone()),
        ("ct.effective-time-ms".to_string(), event.effective_time_ms.to_string()),
        ("ct.writer".to_string(), canonical.writer.clone()),
        ("ct.digest".to_string(), event.digest.to_string()),
    ];
    if event.content_type == CONTENT_TYPE_DEAD_LETTER {
        if let Ok(letter) = serde_json::from_slice::<DeadLetter>(&event.payload) {
            let reason = serde_json::to_value(letter.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            headers.extend([
                ("__connect.errors.topic".to_string(), log.topic.clone()),
                ("__connect.errors.partition".to_string(), log.partition.to_string()),
                ("__connect.errors.offset".to_string(), letter.input.offset.to_string()),
                ("__connect.errors.connector.name".to_string(), connector_name(&letter, canonical.detail.as_ref())),
                ("__connect.errors.exception.class.name".to_string(), reason),
                ("__connect.errors.exception.message".to_string(), letter.message.clone()),
                ("ct.input.key".to_string(), letter.input.key.clone()),
                ("ct.input.index".to_string(), letter.input.index.to_string()),
            ]);
        }
    }
    headers
}

/// The transformer and, when known, the version that computed the dead letter: from its
/// detail, or from the payload of a dead letter an older build wrote.
fn connector_name(letter: &DeadLetter, detail: Option<&Detail>) -> String {
    match detail.map(|d| d.version).or(letter.version) {
        Some(version) => format!("{} v{version}", letter.transformer),
        None => letter.transformer.clone(),
    }
}

/// Creates the target topic with a partition per pipeline if it does not exist; refuses one
/// with fewer.
async fn ensure_target_topic(config: &ExportConfig) -> Result<(), LogError> {
    let admin: AdminClient<DefaultClientContext> =
        config.log.base_client_config().create().map_err(|e| creation_error(&config.log, e))?;
    let metadata_admin = Arc::new(admin);
    let probe = metadata_admin.clone();
    let target = config.target_topic.clone();
    let metadata = blocking(move || probe.inner().fetch_metadata(Some(&target), Duration::from_secs(10)))
        .await?
        .map_err(|e| unreachable_broker(&config.log, e))?;
    let pipelines = config.log.pipelines.count();
    let existing = metadata
        .topics()
        .iter()
        .find(|t| t.name() == config.target_topic && t.error().is_none() && !t.partitions().is_empty());
    if let Some(existing) = existing {
        let partitions = existing.partitions().len();
        if partitions < pipelines as usize {
            return Err(LogError::ExportTargetPartitions { topic: config.target_topic.clone(), partitions, pipelines });
        }
        return Ok(());
    }
    let replication = metadata.brokers().len().clamp(1, 3) as i32;
    let topic = NewTopic::new(&config.target_topic, pipelines as i32, TopicReplication::Fixed(replication));
    let results = metadata_admin
        .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(15))))
        .await
        .map_err(|e| classify(e, &config.target_topic, None, None))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(creation_refused(topic, code)),
        }
    }
    Ok(())
}

/// A failure of the export producer, which writes its pipeline's partition of the target
/// topic. A newer exporter of the same pipeline to the same target fences this one
/// ([`LogError::Fenced`]).
fn target_error(config: &ExportConfig, error: KafkaError) -> LogError {
    classify(error, &config.target_topic, Some(config.log.partition), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    #[test]
    fn stored_counts_resume_the_keys_they_cover_and_only_those() {
        let counts = ResumeCounts {
            format: RESUME_COUNTS_FORMAT,
            every_key: false,
            counts: [("a".to_string(), 3), ("b".to_string(), 0)].into(),
        };
        let read = ResumeCounts::decode(&counts.encode().unwrap()).unwrap();
        assert_eq!(read, counts);
        let start = read.resume(10, &[key("a"), key("b")]).unwrap();
        assert_eq!(start.position(), 10);
        assert_eq!(start.known(&key("a")).map(|k| k.count), Some(3));
        assert_eq!(start.known(&key("b")).map(|k| k.count), Some(0));
        assert_eq!(start.known(&key("c")), None, "a key not exported is not followed");
        assert!(read.resume(10, &[key("a"), key("c")]).is_none(), "a key added since is not covered");
        assert!(read.resume(10, &[]).is_none(), "nor every key");
        let every = ResumeCounts { every_key: true, ..counts };
        assert_eq!(every.resume(10, &[]).unwrap().known(&key("c")).map(|k| k.count), Some(0));
        assert!(ResumeCounts::decode("").is_none(), "an older exporter's offset");
    }

    #[test]
    fn each_pipeline_exports_with_a_producer_of_its_own_into_one_group() {
        let mut log = KafkaLogConfig::new("127.0.0.1:9092", "log");
        log.pipelines = competing_transformers::shard::Pipelines::new(3).unwrap();
        let ids: Vec<(String, String)> = log
            .each_pipeline()
            .map(|log| ExportConfig::new(log, vec![], "out"))
            .map(|config| (config.group_id(), config.transactional_id()))
            .collect();
        assert_eq!(ids[0], ("export-out".to_string(), "export-out".to_string()), "one pipeline: as before");
        assert_eq!(ids[2], ("export-out".to_string(), "export-out.pipeline-2".to_string()));
    }

    #[test]
    fn counts_longer_than_the_brokers_metadata_limit_are_not_stored() {
        let counts = (0..400).map(|i| (format!("key-{i}"), i)).collect();
        let many = ResumeCounts { format: RESUME_COUNTS_FORMAT, every_key: true, counts };
        assert_eq!(many.encode(), None);
    }
}
