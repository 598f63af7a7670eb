//! The Kafka backend: one partition of one topic, through rdkafka.
//!
//! Two write modes:
//! - [`WriteMode::RecordGroups`] (the default): an idempotent, non-transactional producer
//!   writes one record per atomic group. The broker appends a record atomically, and no
//!   writer ever holds back the partition's last stable offset, so a stalled or dead writer
//!   delays nobody.
//! - [`WriteMode::Transactional`]: one event per record, a group made atomic by a Kafka
//!   transaction. Kept to measure what it costs: an open transaction of a stalled writer
//!   holds back every `read_committed` reader until it ends or times out.
//!
//! Its clients are configured, and Kafka errors classified, once, in [`crate::client`].

use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use tokio::sync::oneshot;

use competing_transformers::event::Offset;
use competing_transformers::record::{headers, EncodedRecord, FetchedRecord, Record};
use competing_transformers::signature::{PublicKey, Signer, Trust};

use super::{Delivery, EventLog, LogCursor};
use crate::client::{
    blocking, classify, creation_error, ClientRole, ClientStatistics, KafkaLogConfig, LogContext, StatisticsSink,
    WriteMode,
};
use crate::error::LogError;

/// One partition of a Kafka topic as an [`EventLog`].
pub struct KafkaLog {
    /// Shared with the pending deliveries, which name the topic when they fail.
    config: Arc<KafkaLogConfig>,
    writer: Writer,
    watermarks: Arc<BaseConsumer<LogContext>>,
    /// Where its producer and readers leave librdkafka's statistics.
    statistics: StatisticsSink,
}

enum Writer {
    /// Made at the first write: a read-only principal (a sink) never asks for a producer id.
    Groups(OnceLock<Result<FutureProducer<LogContext>, LogError>>),
    Transactional(mpsc::Sender<(EncodedBatch, oneshot::Sender<Result<Offset, LogError>>)>),
}

type EncodedBatch = Vec<EncodedRecord>;

impl KafkaLog {
    /// Connects to the log: checks the topic's layout (as far as the principal may see it:
    /// `admin::check_topic_as_client`) and starts a producer.
    pub async fn connect(config: KafkaLogConfig) -> Result<Self, LogError> {
        crate::admin::check_topic_as_client(&config).await?;
        Self::connect_unchecked(config).await
    }

    /// Connects without checking the topic's layout (tests of the check itself).
    pub async fn connect_unchecked(config: KafkaLogConfig) -> Result<Self, LogError> {
        let statistics = StatisticsSink::default();
        let writer = match &config.mode {
            WriteMode::RecordGroups => Writer::Groups(OnceLock::new()),
            WriteMode::Transactional { .. } => {
                Writer::Transactional(spawn_transactional_writer(&config, &statistics).await?)
            }
        };
        let watermarks = Arc::new(
            config
                .consumer_config()
                .create_with_context(LogContext::default())
                .map_err(|e| creation_error(&config, e))?,
        );
        Ok(Self { config: Arc::new(config), writer, watermarks, statistics })
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &KafkaLogConfig {
        &self.config
    }

    /// The record-group producer, made at the first write.
    fn producer<'a>(
        &self,
        cell: &'a OnceLock<Result<FutureProducer<LogContext>, LogError>>,
    ) -> Result<&'a FutureProducer<LogContext>, LogError> {
        let made = cell.get_or_init(|| {
            let context = LogContext::reporting(&self.statistics, ClientRole::Producer);
            self.config.producer_config().create_with_context(context).map_err(|e| creation_error(&self.config, e))
        });
        made.as_ref().map_err(Clone::clone)
    }

    /// The partition's first offset and its end (the last stable offset).
    async fn watermarks(&self) -> Result<(Offset, Offset), LogError> {
        let consumer = self.watermarks.clone();
        let (topic, partition) = (self.config.topic.clone(), self.config.partition);
        // A blocking metadata call: keep it off the async workers.
        blocking(move || consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10)))
            .await?
            .map(|(low, high)| (low.max(0) as Offset, high.max(0) as Offset))
            .map_err(|e| self.config.classify(e))
    }

    fn to_kafka_record<'a>(&'a self, encoded: &'a EncodedRecord) -> FutureRecord<'a, [u8], [u8]> {
        let record = FutureRecord::to(&self.config.topic)
            .partition(self.config.partition)
            .key(encoded.key.as_slice())
            .payload(encoded.value.as_slice());
        if encoded.headers.is_empty() {
            record
        } else {
            record.headers(to_headers(&encoded.headers))
        }
    }
}

/// What made the producer fatal, if it is: librdkafka then fails the queued records with a
/// bare "purged" code (a principal denied the producer id: IdempotentWrite or Write).
fn fatal_cause(producer: &FutureProducer<LogContext>) -> Option<KafkaError> {
    producer.client().fatal_error().map(|(code, _)| KafkaError::MessageProduction(code))
}

fn to_headers(headers: &[(&str, Vec<u8>)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new_with_capacity(headers.len()), |all, (key, value)| {
        all.insert(Header { key, value: Some(value) })
    })
}

#[async_trait::async_trait]
impl EventLog for KafkaLog {
    fn prepare_writes(&self) -> Result<(), LogError> {
        // An idempotent producer asks for its id as it is made; a first attempt made before
        // its connection is up is retried only after 500 ms.
        match &self.writer {
            Writer::Groups(producer) => self.producer(producer).map(drop),
            Writer::Transactional(_) => Ok(()),
        }
    }

    fn append(&self, record: &Record) -> Delivery {
        self.append_with_details(record, &[])
    }

    fn append_with_details(&self, record: &Record, details: &[Vec<u8>]) -> Delivery {
        // Details are not summaries: written whatever `summary_headers` says.
        let encode = |record: &Record| {
            record
                .encode_signed(self.config.summary_headers, self.config.signer.as_ref())
                .map(|encoded| encoded.with_details(details))
        };
        match &self.writer {
            Writer::Groups(producer) => {
                let encoded =
                    match encode(record).map_err(LogError::from).and_then(|e| Ok((self.producer(producer)?, e))) {
                        Ok(encoded) => encoded,
                        Err(e) => return Box::pin(async move { Err(e) }),
                    };
                let (producer, encoded) = encoded;
                match producer.send_result(self.to_kafka_record(&encoded)) {
                    Ok(delivery) => {
                        let (config, producer) = (self.config.clone(), producer.clone());
                        Box::pin(async move {
                            match delivery.await {
                                Ok(Ok(done)) => Ok(done.offset as Offset),
                                Ok(Err((error, _))) => Err(config.classify(fatal_cause(&producer).unwrap_or(error))),
                                // The producer went away before it reported.
                                Err(_) => Err(config.classify(KafkaError::Canceled)),
                            }
                        })
                    }
                    Err((error, _)) => {
                        let error = self.config.classify(error);
                        Box::pin(async move { Err(error) })
                    }
                }
            }
            Writer::Transactional(queue) => {
                // One event per record; the transaction makes the group atomic. Each record
                // carries every detail: a detail names its dead letter's index.
                let batch: Result<EncodedBatch, _> = record
                    .events
                    .iter()
                    .map(|event| {
                        encode(&Record {
                            source: record.source.clone(),
                            writer: record.writer.clone(),
                            events: vec![event.clone()],
                        })
                    })
                    .collect();
                let (reply, answer) = oneshot::channel();
                // A closed channel means the writer thread, and its producer, are gone.
                let config = self.config.clone();
                let queued = match batch {
                    Ok(batch) => queue.send((batch, reply)).map_err(|_| config.classify(KafkaError::Canceled)),
                    Err(e) => Err(e.into()),
                };
                Box::pin(async move {
                    queued?;
                    answer.await.unwrap_or_else(|_| Err(config.classify(KafkaError::Canceled)))
                })
            }
        }
    }

    fn trust(&self) -> Trust {
        self.config.trust.clone()
    }

    fn signer(&self) -> Option<PublicKey> {
        self.config.signer.as_ref().map(Signer::public_key)
    }

    async fn cursor(&self, from: Offset) -> Result<Box<dyn LogCursor>, LogError> {
        let consumer: StreamConsumer<LogContext> = self
            .config
            .consumer_config()
            .create_with_context(LogContext::reporting(&self.statistics, ClientRole::Reader))
            .map_err(|e| creation_error(&self.config, e))?;
        let (topic, partition) = (&self.config.topic, self.config.partition);
        let failed = |error| classify(error, topic, Some(partition), Some(from));
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, KafkaOffset::Offset(from as i64)).map_err(failed)?;
        consumer.assign(&assignment).map_err(failed)?;
        Ok(Box::new(KafkaCursor {
            consumer,
            topic: self.config.topic.clone(),
            partition: self.config.partition,
            next: from,
        }))
    }

    async fn end_offset(&self) -> Result<Offset, LogError> {
        Ok(self.watermarks().await?.1)
    }

    async fn start_offset(&self) -> Result<Offset, LogError> {
        Ok(self.watermarks().await?.0)
    }

    async fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        match &self.writer {
            Writer::Groups(producer) => match producer.get() {
                Some(Ok(producer)) => {
                    let producer = producer.clone();
                    blocking(move || producer.flush(timeout)).await?.map_err(|e| self.config.classify(e))
                }
                _ => Ok(()),
            },
            Writer::Transactional(_) => Ok(()),
        }
    }

    fn client_statistics(&self) -> Option<ClientStatistics> {
        Some(*self.statistics.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

struct KafkaCursor {
    consumer: StreamConsumer<LogContext>,
    topic: String,
    partition: i32,
    next: Offset,
}

/// Most records one batch returns.
const BATCH_RECORDS_MAX: usize = 2_000;
/// Bytes after which a batch takes no more records: with the consumer's queue limit, what
/// bounds the memory a reader holds in records.
const BATCH_BYTES_MAX: usize = 8 << 20;

fn to_fetched<M: Message>(message: &M) -> FetchedRecord {
    FetchedRecord {
        offset: message.offset() as Offset,
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        details: details_of(message),
    }
}

/// The values of a message's dead-letter detail headers, in order; other headers are skipped.
fn details_of<M: Message>(message: &M) -> Vec<Vec<u8>> {
    let Some(all) = message.headers() else { return Vec::new() };
    all.iter()
        .filter(|header| header.key == headers::DEAD_LETTER_DETAIL)
        .filter_map(|header| header.value.map(<[u8]>::to_vec))
        .collect()
}

#[async_trait::async_trait]
impl LogCursor for KafkaCursor {
    async fn next_batch(&mut self, max_wait: Duration) -> Result<Vec<FetchedRecord>, LogError> {
        let mut batch = match tokio::time::timeout(max_wait, self.consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Err(error)) => return self.consumer_error(error).map(|()| Vec::new()),
            Ok(Ok(message)) => vec![to_fetched(&message)],
        };
        // Drain what is already here without waiting again, through one stream: each
        // `recv` registers and unregisters a waker under a lock, twice a record.
        let mut bytes = 0;
        let mut here = self.consumer.stream();
        while batch.len() < BATCH_RECORDS_MAX && bytes < BATCH_BYTES_MAX {
            match here.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    bytes += message.payload_len();
                    batch.push(to_fetched(&message));
                }
                Some(Some(Err(error))) => {
                    self.consumer_error(error)?;
                    break;
                }
                Some(None) | None => break,
            }
        }
        self.next = batch.last().map_or(self.next, |r| r.offset + 1);
        Ok(batch)
    }

    fn position(&self) -> Offset {
        // librdkafka's position steps over transaction markers; the last record may not.
        let reported = self
            .consumer
            .position()
            .ok()
            .and_then(|list| list.find_partition(&self.topic, self.partition).and_then(|p| p.offset().to_raw()))
            .filter(|o| *o >= 0)
            .map(|o| o as Offset);
        reported.map_or(self.next, |o| o.max(self.next))
    }
}

impl KafkaCursor {
    /// A consumer error: librdkafka reports lost connections and keeps reconnecting by
    /// itself, so transient ones are only logged; others end the read.
    fn consumer_error(&self, error: KafkaError) -> Result<(), LogError> {
        match classify(error, &self.topic, Some(self.partition), Some(self.next)) {
            error if error.is_transient() => {
                tracing::debug!(%error, "transient consumer error; librdkafka retries");
                Ok(())
            }
            // The reader assigns its partition by hand and never joins, commits to or reads
            // its group: librdkafka still looks up the group's coordinator, and a principal
            // without rights on the group (a least-privilege reader) is refused that lookup.
            error if error.code() == Some(RDKafkaErrorCode::GroupAuthorizationFailed) => {
                tracing::debug!(%error, "the reader's unused consumer group is denied; reading goes on");
                Ok(())
            }
            other => Err(other),
        }
    }
}

/// Starts the thread that owns a transactional producer: the transaction calls block, so
/// they stay off the async workers. Groups are committed in arrival order; whatever queued
/// up while a transaction was open goes into the next one.
async fn spawn_transactional_writer(
    config: &KafkaLogConfig,
    statistics: &StatisticsSink,
) -> Result<mpsc::Sender<(EncodedBatch, oneshot::Sender<Result<Offset, LogError>>)>, LogError> {
    let producer: FutureProducer<LogContext> = config
        .producer_config()
        .create_with_context(LogContext::reporting(statistics, ClientRole::Producer))
        .map_err(|e| creation_error(config, e))?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (queue, incoming) = mpsc::channel::<(EncodedBatch, oneshot::Sender<Result<Offset, LogError>>)>();
    let (topic, partition) = (config.topic.clone(), config.partition);
    let producer = Arc::new(producer);
    std::thread::Builder::new()
        .name("transactional-writer".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            if let Err(error) = producer.init_transactions(Duration::from_secs(30)) {
                let _ = ready_tx.send(Err(classify(error, &topic, Some(partition), None)));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            // Once the producer cannot go on, every later group gets the error that ended it.
            let mut fatal: Option<LogError> = None;
            while let Ok(first) = incoming.recv() {
                let mut groups = vec![first];
                groups.extend(incoming.try_iter().take(999));
                if let Some(error) = &fatal {
                    for (_, reply) in groups {
                        let _ = reply.send(Err(error.clone()));
                    }
                    continue;
                }
                let outcome = commit_groups(&producer, &runtime, &topic, partition, &groups);
                match outcome {
                    Ok(offsets) => {
                        for ((_, reply), offset) in groups.into_iter().zip(offsets) {
                            let _ = reply.send(Ok(offset));
                        }
                    }
                    Err(error) => {
                        if !error.is_transient() {
                            fatal = Some(error.clone());
                        }
                        for (_, reply) in groups {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        })
        .map_err(|e| LogError::Runtime { source: Arc::new(e) })?;
    ready_rx.await.map_err(|_| config.classify(KafkaError::Canceled))??;
    Ok(queue)
}

fn commit_groups(
    producer: &FutureProducer<LogContext>,
    runtime: &tokio::runtime::Runtime,
    topic: &str,
    partition: i32,
    groups: &[(EncodedBatch, oneshot::Sender<Result<Offset, LogError>>)],
) -> Result<Vec<Offset>, LogError> {
    let failed = |error: KafkaError| classify(error, topic, Some(partition), None);
    producer.begin_transaction().map_err(failed)?;
    // Every record's delivery, with the first of each group marked: its offset is the group's.
    let mut deliveries = Vec::new();
    for (batch, _) in groups {
        for (position, encoded) in batch.iter().enumerate() {
            let record = FutureRecord::to(topic)
                .partition(partition)
                .key(encoded.key.as_slice())
                .payload(encoded.value.as_slice());
            let record = if encoded.headers.is_empty() { record } else { record.headers(to_headers(&encoded.headers)) };
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((position == 0, delivery)),
                Err((error, _)) => {
                    let _ = producer.abort_transaction(Duration::from_secs(30));
                    return Err(failed(error));
                }
            }
        }
    }
    // Wait for the deliveries before committing: the client's commit flushes first, in
    // 100 ms steps while anything is undelivered, which would floor every commit at 100 ms.
    let delivered = runtime.block_on(async {
        let mut offsets = Vec::with_capacity(groups.len());
        for (first, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(done)) if first => offsets.push(done.offset as Offset),
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(failed(error)),
                Err(_) => return Err(failed(KafkaError::Canceled)),
            }
        }
        Ok(offsets)
    });
    let offsets = match delivered {
        Ok(offsets) => offsets,
        Err(error) => {
            let _ = producer.abort_transaction(Duration::from_secs(30));
            return Err(error);
        }
    };
    if let Err(error) = producer.commit_transaction(Duration::from_secs(30)) {
        let error = failed(error);
        // A producer that can go on must end the transaction before the next one.
        if error.is_transient() {
            let _ = producer.abort_transaction(Duration::from_secs(30));
        }
        return Err(error);
    }
    Ok(offsets)
}
