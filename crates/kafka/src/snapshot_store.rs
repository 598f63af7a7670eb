//! The snapshot store: snapshots kept with Kafka alone, chunked on a topic beside the log and
//! found through a compacted index, with no scan of either.
//!
//! - **Chunks** live on `<log topic>.snapshots` ([`snapshots_topic`]), in the partition of the
//!   log's pipeline (pipeline `p`'s snapshots in partition `p` of both topics), in the
//!   log's own record format, so the canonical rule arbitrates the race between replicas
//!   storing the same snapshot. The snapshot of DET `d` at position `P` is the event-source
//!   key `d.snapshot.P` ([`snapshot_key`]): its **manifest** ([`Manifest`], JSON) at index 0,
//!   then chunk `j` of the encoded snapshot ([`Snapshot::encode`], cut by
//!   [`snapshot::chunks`]) at index `j + 1`, one event per record, each written with
//!   `exists_or_write`. The manifest goes first so a replica whose snapshot differs learns it
//!   from its first write, and writes nothing more under the key.
//! - **The index** is the compacted topic `<log topic>.snapshot-index` ([`index_topic`]): key
//!   the DET's name, value the JSON list of its newest [`INDEX_MANIFESTS_MAX`] stored
//!   manifests ([`StoredManifest`]), each with the offset of its canonical manifest record. A
//!   loader seeks there and reads forward with a fresh canonical rule: no event of that key
//!   comes before its canonical index 0.
//!
//! The index is written only once every chunk of a snapshot is canonical, by
//! read-merge-write: the merge keeps the newest positions, so a late writer of an old
//! snapshot never replaces a newer list. Two writers merging at the same moment may lose one
//! entry; every replica stores every snapshot, so the next store puts it back.
//!
//! Generic over the chunks' [`EventLog`] and the [`SnapshotIndex`], so tests run on the
//! core's `MemoryLog` and [`MemoryIndex`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use competing_transformers::canonical::{CanonicalRule, Verdict};
use competing_transformers::event::{Digest, Event, EventSourceKey, InvalidKey, Offset, CONTENT_TYPE_JSON};
use competing_transformers::record::RecordView;
use competing_transformers::snapshot::{self, Snapshot, SnapshotError};

use crate::client::{blocking, classify, creation_error, KafkaLogConfig, WriteMode};
use crate::error::LogError;
use crate::log::{EventLog, KafkaLog, Pipeline, WriteOutcome};

/// How many manifests the index keeps per DET, newest first: the newest, and two to fall
/// back on when it does not load.
pub const INDEX_MANIFESTS_MAX: usize = 3;
/// Content type of a chunk's payload: bytes of the encoded snapshot.
pub const CHUNK_CONTENT_TYPE: &str = "application/octet-stream";
/// How long one fetch waits for records before checking again.
const FETCH_WAIT: Duration = Duration::from_millis(100);
/// How long a read may go without progress before it gives up.
const READ_STALL_MS_MAX: u64 = 30_000;
/// How long one write to the index may take.
const INDEX_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The topic holding the snapshots of the log on `log_topic`.
pub fn snapshots_topic(log_topic: &str) -> String {
    format!("{log_topic}.snapshots")
}

/// The compacted topic indexing the snapshots of the log on `log_topic`.
pub fn index_topic(log_topic: &str) -> String {
    format!("{log_topic}.snapshot-index")
}

/// The event-source key of the snapshot of `det` at `position` on the snapshots topic.
pub fn snapshot_key(det: &str, position: Offset) -> Result<EventSourceKey, InvalidKey> {
    EventSourceKey::new(format!("{det}.snapshot.{position}"))
}

/// A client configuration of `log`'s cluster for `topic`: the partition of `log`'s pipeline,
/// record groups (never the log's transactional id, which would fence the log's producer).
fn beside(log: &KafkaLogConfig, topic: String) -> KafkaLogConfig {
    KafkaLogConfig { topic, mode: WriteMode::RecordGroups, ..log.clone() }
}

/// The snapshots topic's client configuration, for the log of `log`.
pub fn snapshots_config(log: &KafkaLogConfig) -> KafkaLogConfig {
    beside(log, snapshots_topic(&log.topic))
}

/// The index topic's client configuration, for the log of `log`.
pub fn index_config(log: &KafkaLogConfig) -> KafkaLogConfig {
    beside(log, index_topic(&log.topic))
}

/// What a stored snapshot is: the event at index 0 of its key, JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The DET's name.
    pub transformer: String,
    /// The snapshot's position ([`Snapshot::position`]).
    pub position: Offset,
    /// Canonical inputs applied ([`Snapshot::inputs`]).
    pub inputs: u64,
    /// Chunks, at indexes `1..=chunks`.
    pub chunks: u64,
    /// Bytes of the encoded snapshot, all chunks together.
    pub bytes: u64,
    /// [`Snapshot::digest_of`] the encoded snapshot, lowercase hex.
    pub digest: String,
}

impl Manifest {
    /// The manifest of `snapshot`, whose encoded bytes are `encoded`.
    pub fn of(snapshot: &Snapshot, encoded: &[u8]) -> Self {
        Self {
            transformer: snapshot.transformer.clone(),
            position: snapshot.position,
            inputs: snapshot.inputs,
            chunks: snapshot::chunks(encoded).count() as u64,
            bytes: encoded.len() as u64,
            digest: Snapshot::digest_of(encoded).to_string(),
        }
    }

    /// The digest, `None` when it is not 64 hex digits.
    pub fn digest(&self) -> Option<Digest> {
        let hex = self.digest.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Digest(digest))
    }

    /// Its key on the snapshots topic.
    pub fn key(&self) -> Result<EventSourceKey, InvalidKey> {
        snapshot_key(&self.transformer, self.position)
    }

    fn to_event(&self, key: &EventSourceKey) -> Event {
        let payload = serde_json::to_vec(self).expect("a manifest serializes");
        Event::new(key.clone(), Some(0), None, 0, CONTENT_TYPE_JSON, payload)
    }
}

/// A manifest whose chunks are all canonical, with where its canonical record sits: one
/// entry of the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredManifest {
    /// The manifest.
    #[serde(flatten)]
    pub manifest: Manifest,
    /// Offset of the canonical manifest record on the snapshots topic.
    pub offset: Offset,
}

/// What [`SnapshotStore::store`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The canonical manifest of the snapshot's key.
    pub canonical: StoredManifest,
    /// Whether our manifest record is the canonical one.
    pub won: bool,
    /// Whether the canonical digest is ours. When not, this replica's state differs from the
    /// one stored first: a state divergence, which the caller reports.
    pub matches: bool,
}

/// Why a snapshot could not be stored, or the index not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotStoreError {
    /// Reading or writing the snapshots topic failed.
    #[error("snapshots topic: {source}")]
    Chunks {
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// Reading or writing the index failed.
    #[error("snapshot index: {source}")]
    Index {
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// The DET's name and the position make no valid key.
    #[error("no snapshot key for `{transformer}` at {position}: {source}")]
    Key {
        /// The DET.
        transformer: String,
        /// The snapshot's position.
        position: Offset,
        /// Why the key is refused.
        #[source]
        source: InvalidKey,
    },
    /// The index's value for the DET is not a list of manifests.
    #[error("the snapshot index entry of `{transformer}` is not a list of manifests: {source}")]
    IndexMalformed {
        /// The DET.
        transformer: String,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The canonical manifest record cannot be read back as a manifest.
    #[error("the canonical manifest of `{key}` at offset {offset} is unreadable")]
    ManifestUnreadable {
        /// The snapshot's key.
        key: String,
        /// Where the record sits.
        offset: Offset,
    },
    /// A write to the snapshot's key had an outcome the protocol never produces: rejected,
    /// or a copy whose winner the rule no longer knows.
    #[error("writing index {index} of `{key}`: unexpected outcome {outcome:?}")]
    Unexpected {
        /// The snapshot's key.
        key: String,
        /// The index written.
        index: u64,
        /// What the write found.
        outcome: WriteOutcome,
    },
    /// The manifests agree but a canonical chunk differs from ours: the stored snapshot is
    /// corrupt (its loaders fall back), and it is not indexed.
    #[error("chunk {index} of `{key}` stored at offset {winner:?} differs from ours, though the manifests agree")]
    ChunkDiffers {
        /// The snapshot's key.
        key: String,
        /// The chunk's index under the key.
        index: u64,
        /// Where the canonical chunk is.
        winner: Option<Offset>,
    },
}

impl SnapshotStoreError {
    /// Whether a snapshot topic does not exist: replicas then run without snapshots.
    pub fn is_topic_missing(&self) -> bool {
        matches!(
            self,
            SnapshotStoreError::Chunks { source: LogError::TopicMissing { .. } }
                | SnapshotStoreError::Index { source: LogError::TopicMissing { .. } }
        )
    }
}

/// Why a stored snapshot did not load: the caller falls back to the manifest before.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading the snapshots topic failed (or the records there are gone).
    #[error("snapshots topic: {source}")]
    Log {
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// The manifest's digest is not hex, or its name and position make no key.
    #[error("the manifest of `{transformer}` at {position} is malformed")]
    ManifestMalformed {
        /// The DET.
        transformer: String,
        /// The snapshot's position.
        position: Offset,
    },
    /// The record at the indexed offset is not the canonical manifest the index holds.
    #[error("offset {offset} of the snapshots topic does not hold the manifest of `{key}` the index names")]
    ManifestDiffers {
        /// The snapshot's key.
        key: String,
        /// The offset the index gave.
        offset: Offset,
    },
    /// Chunks are missing from the topic.
    #[error("`{key}` has {found} of its {chunks} chunks on the snapshots topic")]
    Missing {
        /// The snapshot's key.
        key: String,
        /// Canonical chunks found.
        found: u64,
        /// Chunks the manifest names.
        chunks: u64,
    },
    /// The chunks do not make the snapshot the manifest names (corrupt, another format, or
    /// another DET's or position's).
    #[error("`{key}`: {source}")]
    Snapshot {
        /// The snapshot's key.
        key: String,
        /// Why.
        #[source]
        source: SnapshotError,
    },
    /// The read made no progress for 30 s (`READ_STALL_MS_MAX`).
    #[error("reading the snapshots topic stalled at offset {offset}")]
    Stalled {
        /// Where the reader stood.
        offset: Offset,
    },
}

impl From<LogError> for LoadError {
    fn from(source: LogError) -> Self {
        LoadError::Log { source }
    }
}

/// Where the index keeps its values: the latest value per DET name.
#[async_trait::async_trait]
pub trait SnapshotIndex: Send + Sync + 'static {
    /// The latest value written for `transformer`, if any.
    async fn read(&self, transformer: &str) -> Result<Option<Vec<u8>>, LogError>;
    /// Writes `value` for `transformer`, replacing the one before.
    async fn write(&self, transformer: &str, value: Vec<u8>) -> Result<(), LogError>;
    /// The latest value of every DET: the index is small, read whole.
    async fn read_all(&self) -> Result<BTreeMap<String, Vec<u8>>, LogError>;
}

/// An index in memory, for tests and the simulation. Clones share the entries.
#[derive(Clone, Debug, Default)]
pub struct MemoryIndex {
    entries: Arc<std::sync::Mutex<BTreeMap<String, Vec<u8>>>>,
}

#[async_trait::async_trait]
impl SnapshotIndex for MemoryIndex {
    async fn read(&self, transformer: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.entries.lock().expect("index lock").get(transformer).cloned())
    }

    async fn write(&self, transformer: &str, value: Vec<u8>) -> Result<(), LogError> {
        self.entries.lock().expect("index lock").insert(transformer.to_string(), value);
        Ok(())
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Vec<u8>>, LogError> {
        Ok(self.entries.lock().expect("index lock").clone())
    }
}

/// The index on its compacted Kafka topic ([`index_topic`]).
pub struct KafkaIndex {
    config: KafkaLogConfig,
    producer: FutureProducer,
}

impl KafkaIndex {
    /// Connects to the index of the log of `log`, checking its topic's layout.
    pub async fn connect(log: &KafkaLogConfig) -> Result<Self, LogError> {
        let config = index_config(log);
        crate::admin::check_index_topic(&config).await?;
        let producer = config.producer_config().create().map_err(|e| creation_error(&config, e))?;
        Ok(Self { config, producer })
    }

    fn failed(&self, error: KafkaError) -> LogError {
        classify(error, &self.config.topic, Some(self.config.partition), None)
    }
}

#[async_trait::async_trait]
impl SnapshotIndex for KafkaIndex {
    async fn read(&self, transformer: &str) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.read_all().await?.remove(transformer))
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Vec<u8>>, LogError> {
        let consumer: StreamConsumer =
            self.config.consumer_config().create().map_err(|e| creation_error(&self.config, e))?;
        let consumer = Arc::new(consumer);
        let (low, high) = {
            let (consumer, topic, partition) = (consumer.clone(), self.config.topic.clone(), self.config.partition);
            blocking(move || consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))).await?
        }
        .map_err(|e| self.failed(e))?;
        let mut values = BTreeMap::new();
        if high <= low {
            return Ok(values);
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&self.config.topic, self.config.partition, KafkaOffset::Offset(low))
            .map_err(|e| self.failed(e))?;
        consumer.assign(&assignment).map_err(|e| self.failed(e))?;
        // Compacted: the last value of a key up to the high watermark is its value.
        loop {
            let wait = Duration::from_millis(READ_STALL_MS_MAX);
            let message = match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => return Err(self.failed(KafkaError::MessageConsumption(RDKafkaErrorCode::OperationTimedOut))),
                Ok(message) => message.map_err(|e| self.failed(e))?,
            };
            if let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) {
                match message.payload() {
                    Some(value) => values.insert(key.to_string(), value.to_vec()),
                    None => values.remove(key),
                };
            }
            if message.offset() + 1 >= high {
                return Ok(values);
            }
        }
    }

    async fn write(&self, transformer: &str, value: Vec<u8>) -> Result<(), LogError> {
        let record =
            FutureRecord::to(&self.config.topic).partition(self.config.partition).key(transformer).payload(&value);
        match self.producer.send(record, INDEX_WRITE_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((error, _)) => Err(self.failed(error)),
        }
    }
}

/// Snapshots stored on a log of chunks, found through an index.
pub struct SnapshotStore<L: EventLog, I: SnapshotIndex> {
    chunks: Arc<L>,
    index: I,
    /// One pipeline per writer id, each keeping its own canonical rule over the chunks.
    pipelines: tokio::sync::Mutex<BTreeMap<String, Arc<Pipeline<L>>>>,
}

/// The store on Kafka: the snapshots topic and the index topic beside the log.
pub type KafkaSnapshotStore = SnapshotStore<KafkaLog, KafkaIndex>;

impl KafkaSnapshotStore {
    /// Connects to the snapshot topics of the log of `log`, checking their layouts.
    pub async fn connect(log: &KafkaLogConfig) -> Result<Self, SnapshotStoreError> {
        let chunks =
            KafkaLog::connect(snapshots_config(log)).await.map_err(|source| SnapshotStoreError::Chunks { source })?;
        let index = KafkaIndex::connect(log).await.map_err(|source| SnapshotStoreError::Index { source })?;
        Ok(Self::new(Arc::new(chunks), index))
    }

    /// [`KafkaSnapshotStore::connect`], but a missing snapshot topic is `None`, said once as
    /// a warning: the replica runs without snapshots.
    pub async fn connect_if_present(log: &KafkaLogConfig) -> Result<Option<Self>, SnapshotStoreError> {
        match Self::connect(log).await {
            Ok(store) => Ok(Some(store)),
            Err(error) if error.is_topic_missing() => {
                tracing::warn!(%error, "running without snapshots: every start replays the log from its start");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

impl<L: EventLog, I: SnapshotIndex> SnapshotStore<L, I> {
    /// A store keeping chunks on `chunks` and finding them through `index`.
    pub fn new(chunks: Arc<L>, index: I) -> Self {
        Self { chunks, index, pipelines: tokio::sync::Mutex::new(BTreeMap::new()) }
    }

    /// The log of chunks.
    pub fn chunks(&self) -> &Arc<L> {
        &self.chunks
    }

    async fn pipeline(&self, writer: &str) -> Arc<Pipeline<L>> {
        let mut pipelines = self.pipelines.lock().await;
        pipelines
            .entry(writer.to_string())
            .or_insert_with(|| Arc::new(Pipeline::new(self.chunks.clone(), writer)))
            .clone()
    }

    /// Stores `snapshot` racing other replicas, as `writer`: its manifest, then its chunks,
    /// each where no copy is canonical yet; then adds it to the index. Returns the canonical
    /// manifest: when its digest is not ours ([`Stored::matches`] false), nothing more is
    /// written and the caller reports a state divergence.
    pub async fn store(&self, snapshot: &Snapshot, writer: &str) -> Result<Stored, SnapshotStoreError> {
        let encoded = snapshot.encode();
        let ours = Manifest::of(snapshot, &encoded);
        let key = snapshot_key(&snapshot.transformer, snapshot.position).map_err(|source| SnapshotStoreError::Key {
            transformer: snapshot.transformer.clone(),
            position: snapshot.position,
            source,
        })?;
        let pipeline = self.pipeline(writer).await;
        let write = |index: u64, event: Event| {
            let (pipeline, key) = (pipeline.clone(), key.clone());
            async move {
                pipeline
                    .exists_or_write(&key, index, vec![event])
                    .await
                    .map_err(|source| SnapshotStoreError::Chunks { source })
            }
        };
        let unexpected = |index, outcome| SnapshotStoreError::Unexpected { key: key.to_string(), index, outcome };
        let (offset, won) = match write(0, ours.to_event(&key)).await? {
            WriteOutcome::Written { offset, .. } => (offset, true),
            WriteOutcome::Exists { winner: Some(winner), same_digest: Some(false), .. } => {
                let manifest = self.read_manifest(&key, winner).await?;
                let canonical = StoredManifest { manifest, offset: winner };
                return Ok(Stored { canonical, won: false, matches: false });
            }
            WriteOutcome::Exists { winner: Some(winner), .. } => (winner, false),
            outcome => return Err(unexpected(0, outcome)),
        };
        for (index, chunk) in (1..).zip(snapshot::chunks(&encoded)) {
            let event = Event::new(key.clone(), Some(index), None, 0, CHUNK_CONTENT_TYPE, chunk.to_vec());
            match write(index, event).await? {
                WriteOutcome::Written { .. } | WriteOutcome::Exists { same_digest: Some(true) | None, .. } => {}
                WriteOutcome::Exists { winner, .. } => {
                    return Err(SnapshotStoreError::ChunkDiffers { key: key.to_string(), index, winner });
                }
                outcome @ WriteOutcome::Rejected { .. } => return Err(unexpected(index, outcome)),
            }
        }
        let canonical = StoredManifest { manifest: ours, offset };
        self.add_to_index(&canonical).await?;
        Ok(Stored { canonical, won, matches: true })
    }

    /// The manifest of `key` whose canonical record sits at `offset`.
    async fn read_manifest(&self, key: &EventSourceKey, offset: Offset) -> Result<Manifest, SnapshotStoreError> {
        let unreadable = || SnapshotStoreError::ManifestUnreadable { key: key.to_string(), offset };
        let found = canonical_payloads(self.chunks.as_ref(), key, offset, 1).await.map_err(|error| match error {
            LoadError::Log { source } => SnapshotStoreError::Chunks { source },
            _ => unreadable(),
        })?;
        match found.first() {
            Some((at, payload)) if *at == offset => serde_json::from_slice(payload).map_err(|_| unreadable()),
            _ => Err(unreadable()),
        }
    }

    /// Adds `stored` to its DET's index entry, keeping the newest.
    async fn add_to_index(&self, stored: &StoredManifest) -> Result<(), SnapshotStoreError> {
        let transformer = &stored.manifest.transformer;
        let existing = match self.manifests(transformer).await {
            Ok(existing) => existing,
            // A value that does not parse is replaced: the writer knows a good one.
            Err(error @ SnapshotStoreError::IndexMalformed { .. }) => {
                tracing::warn!(%error, "replacing the malformed snapshot index entry");
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        let merged = merge(existing.clone(), stored.clone());
        if merged == existing {
            return Ok(());
        }
        let value = serde_json::to_vec(&merged).expect("manifests serialize");
        self.index.write(transformer, value).await.map_err(|source| SnapshotStoreError::Index { source })
    }

    /// The stored manifests of `transformer` the index holds, newest first.
    pub async fn manifests(&self, transformer: &str) -> Result<Vec<StoredManifest>, SnapshotStoreError> {
        let value = self.index.read(transformer).await.map_err(|source| SnapshotStoreError::Index { source })?;
        let Some(value) = value else { return Ok(Vec::new()) };
        let mut manifests: Vec<StoredManifest> = serde_json::from_slice(&value)
            .map_err(|source| SnapshotStoreError::IndexMalformed { transformer: transformer.to_string(), source })?;
        manifests.sort_by_key(|m| std::cmp::Reverse(m.manifest.position));
        Ok(manifests)
    }

    /// Every DET's stored manifests the index holds, newest first: for readers that look for
    /// a snapshot of some keys, whatever DET took it. An entry that does not parse is left
    /// out, with a warning.
    pub async fn all_manifests(&self) -> Result<Vec<StoredManifest>, SnapshotStoreError> {
        let values = self.index.read_all().await.map_err(|source| SnapshotStoreError::Index { source })?;
        let mut all = Vec::new();
        for (transformer, value) in values {
            match serde_json::from_slice::<Vec<StoredManifest>>(&value) {
                Ok(manifests) => all.extend(manifests),
                Err(error) => {
                    tracing::warn!(transformer, %error, "snapshot index entry is not a list of manifests; skipped")
                }
            }
        }
        all.sort_by_key(|m| std::cmp::Reverse(m.manifest.position));
        Ok(all)
    }

    /// Reads the snapshot `stored` names: its chunks from its manifest's offset on, checked
    /// against the manifest's digest.
    pub async fn load(&self, stored: &StoredManifest) -> Result<Snapshot, LoadError> {
        let manifest = &stored.manifest;
        let malformed =
            || LoadError::ManifestMalformed { transformer: manifest.transformer.clone(), position: manifest.position };
        let digest = manifest.digest().ok_or_else(malformed)?;
        let key = manifest.key().map_err(|_| malformed())?;
        let found = canonical_payloads(self.chunks.as_ref(), &key, stored.offset, manifest.chunks + 1).await?;
        let differs = || LoadError::ManifestDiffers { key: key.to_string(), offset: stored.offset };
        match found.first() {
            Some((at, payload)) if *at == stored.offset => {
                let read: Manifest = serde_json::from_slice(payload).map_err(|_| differs())?;
                if &read != manifest {
                    return Err(differs());
                }
            }
            _ => return Err(differs()),
        }
        let found_chunks = found.len() as u64 - 1;
        if found_chunks < manifest.chunks {
            return Err(LoadError::Missing { key: key.to_string(), found: found_chunks, chunks: manifest.chunks });
        }
        let bytes: Vec<u8> = found[1..].iter().flat_map(|(_, payload)| payload.iter().copied()).collect();
        let snapshot_error = |source| LoadError::Snapshot { key: key.to_string(), source };
        let snapshot = Snapshot::decode(&bytes, Some(digest)).map_err(snapshot_error)?;
        if snapshot.transformer != manifest.transformer || snapshot.position != manifest.position {
            let why = format!("it is of `{}` at {}", snapshot.transformer, snapshot.position);
            return Err(snapshot_error(SnapshotError::Invalid(why)));
        }
        Ok(snapshot)
    }

    /// [`load_newest`] from this store.
    pub async fn load_newest<T>(
        &self,
        transformer: &str,
        accept: impl FnMut(Snapshot) -> Result<T, String>,
    ) -> Result<Option<T>, SnapshotStoreError> {
        load_newest(self, transformer, accept).await
    }
}

/// The newest snapshot of `transformer` in `store` that loads and that `accept` takes (a
/// restore, say), newest first: each that does not is logged and the one before is tried.
/// `None` when none does: the caller starts from the log's start.
pub async fn load_newest<T>(
    store: &dyn Snapshots,
    transformer: &str,
    mut accept: impl FnMut(Snapshot) -> Result<T, String>,
) -> Result<Option<T>, SnapshotStoreError> {
    for stored in store.manifests(transformer).await? {
        let position = stored.manifest.position;
        match store.load(&stored).await {
            Ok(snapshot) => match accept(snapshot) {
                Ok(accepted) => return Ok(Some(accepted)),
                Err(why) => tracing::warn!(transformer, position, why, "snapshot refused; trying the one before"),
            },
            Err(error) => {
                tracing::warn!(transformer, position, %error, "snapshot does not load; trying the one before")
            }
        }
    }
    Ok(None)
}

/// The canonical counts `snapshot` holds at its position: of each input key, of the DET's
/// output key (its name) and of its dead-letter key. What a reader of those keys resumes
/// with.
pub fn snapshot_counts(snapshot: &Snapshot) -> Result<Vec<(EventSourceKey, u64)>, InvalidKey> {
    let output = EventSourceKey::new(snapshot.transformer.as_str())?;
    let mut counts = vec![(output.dead_letters(), snapshot.own_counts.dead_letters)];
    counts.push((output, snapshot.own_counts.output));
    for (key, count) in &snapshot.input_counts {
        counts.push((EventSourceKey::new(key.as_str())?, *count));
    }
    Ok(counts)
}

/// `existing` with `stored` added, newest first, at most [`INDEX_MANIFESTS_MAX`]: an entry
/// older than all of a full list is left out, so a late writer never replaces newer ones.
pub fn merge(mut existing: Vec<StoredManifest>, stored: StoredManifest) -> Vec<StoredManifest> {
    if !existing.iter().any(|m| m.manifest.position == stored.manifest.position) {
        existing.push(stored);
    }
    existing.sort_by_key(|m| std::cmp::Reverse(m.manifest.position));
    existing.truncate(INDEX_MANIFESTS_MAX);
    existing
}

/// The first `wanted` canonical events of `key` from `from` on, with their offsets, read with
/// a rule that starts at `from`: fewer when the log ends first.
async fn canonical_payloads<L: EventLog>(
    log: &L,
    key: &EventSourceKey,
    from: Offset,
    wanted: u64,
) -> Result<Vec<(Offset, Vec<u8>)>, LoadError> {
    let end = log.end_offset().await?;
    let mut cursor = log.cursor(from).await?;
    // Counts are all it needs: the smallest digest window.
    let mut rule = CanonicalRule::new(1);
    let mut found = Vec::new();
    let mut empty_batches = 0u64;
    while (found.len() as u64) < wanted && cursor.position() < end {
        let batch = cursor.next_batch(FETCH_WAIT).await?;
        if batch.is_empty() {
            // Each empty batch waited FETCH_WAIT: no clock needed to know how long it stalled.
            empty_batches += 1;
            if empty_batches * FETCH_WAIT.as_millis() as u64 > READ_STALL_MS_MAX {
                return Err(LoadError::Stalled { offset: cursor.position() });
            }
            continue;
        }
        empty_batches = 0;
        for fetched in &batch {
            let view = RecordView::parse_fetched(fetched);
            let Ok(verdicts) = rule.apply_view_where(fetched.offset, view.as_ref(), |k| k == key.as_str()) else {
                continue;
            };
            let view = view.expect("the rule applied it");
            for (event, verdict) in view.events.iter().zip(verdicts) {
                if matches!(verdict, Some(Verdict::Canonical { .. })) && (found.len() as u64) < wanted {
                    found.push((fetched.offset, event.payload.to_vec()));
                }
            }
        }
    }
    Ok(found)
}

/// A snapshot store as the replica driver uses it, whatever holds the chunks and the index.
#[async_trait::async_trait]
pub trait Snapshots: Send + Sync + 'static {
    /// [`SnapshotStore::store`].
    async fn store(&self, snapshot: &Snapshot, writer: &str) -> Result<Stored, SnapshotStoreError>;
    /// [`SnapshotStore::manifests`].
    async fn manifests(&self, transformer: &str) -> Result<Vec<StoredManifest>, SnapshotStoreError>;
    /// [`SnapshotStore::load`].
    async fn load(&self, stored: &StoredManifest) -> Result<Snapshot, LoadError>;
}

#[async_trait::async_trait]
impl<L: EventLog, I: SnapshotIndex> Snapshots for SnapshotStore<L, I> {
    async fn store(&self, snapshot: &Snapshot, writer: &str) -> Result<Stored, SnapshotStoreError> {
        SnapshotStore::store(self, snapshot, writer).await
    }
    async fn manifests(&self, transformer: &str) -> Result<Vec<StoredManifest>, SnapshotStoreError> {
        SnapshotStore::manifests(self, transformer).await
    }
    async fn load(&self, stored: &StoredManifest) -> Result<Snapshot, LoadError> {
        SnapshotStore::load(self, stored).await
    }
}

#[cfg(test)]
mod tests;
