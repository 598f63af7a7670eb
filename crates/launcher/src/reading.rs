//! Reading the log for operators: canonical events up to the log end, payloads as text,
//! dead letters. Shared by the operator commands, redrive and the demo.
//!
//! **Where a reader starts** ([`start_for`]). A key's events are judged from its canonical
//! count, so a reader takes each key up either at offset 0 (count 0) or at a snapshot that
//! holds its count: any DET's replica snapshot holds the counts of the DET's input keys,
//! output key and dead-letter key at its position, found through the snapshot index beside
//! the log. [`StartFrom::LogStart`] reads every record still on the log (offset 0, or on a
//! truncated log each key from the oldest snapshot at or after the log's first offset);
//! [`StartFrom::NewestSnapshot`] only what came after the newest snapshot holding the key. A
//! key no usable snapshot holds, on a truncated log, is [`Error::NoSnapshot`]: one sentence
//! naming the fix.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use competing_transformers::codec::{self, SchemaCache};
use competing_transformers::dead_letter::{DeadLetter, Detail};
use competing_transformers::event::{Event, EventSourceKey, Offset};
use competing_transformers::shard::Pipelines;
use competing_transformers_kafka::schema_registry::SchemaRegistry;
use competing_transformers_kafka::snapshot_store::{snapshot_counts, KafkaSnapshotStore, Snapshots, StoredManifest};
use competing_transformers_kafka::{CanonicalEvent, EventLog, EventStream, KafkaLog, KnownCount, Pipeline, Resume};

use crate::Error;

/// Where a reader takes its keys up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// Every record still on the log: offset 0 when the log keeps its records; on a truncated
    /// log, each key at the oldest snapshot from the log's first offset on holding its count.
    LogStart,
    /// Each key at the newest snapshot at or before `up_to` holding its count; offset 0 for a
    /// key none holds, on a log that keeps its records.
    Newest {
        /// The latest snapshot position wanted.
        up_to: Offset,
    },
}

/// Snapshots a reader may start from: the stored manifests (any order) and where they load.
pub struct SnapshotSource<'a> {
    /// Loads a manifest's snapshot.
    pub store: &'a dyn Snapshots,
    /// Every DET's stored manifests.
    pub manifests: Vec<StoredManifest>,
}

/// Where `reader` reading `keys` (every key a snapshot holds when `None`) starts on a log
/// whose first offset is `log_start`. Snapshots before `log_start` are of no use: the records
/// after them are gone. One that does not load is logged and skipped.
pub async fn start_for(
    log_start: Offset,
    snapshots: Option<SnapshotSource<'_>>,
    reader: &str,
    keys: Option<&[EventSourceKey]>,
    from: StartFrom,
) -> Result<Resume, Error> {
    if log_start == 0 && from == StartFrom::LogStart {
        return Ok(Resume::origin());
    }
    let mut known: BTreeMap<EventSourceKey, KnownCount> = BTreeMap::new();
    let wanted = |key: &EventSourceKey| keys.is_none_or(|keys| keys.contains(key));
    if let Some(SnapshotSource { store, mut manifests }) = snapshots {
        manifests.retain(|m| m.manifest.position >= log_start);
        match from {
            StartFrom::LogStart => manifests.sort_by_key(|m| m.manifest.position),
            StartFrom::Newest { up_to } => {
                manifests.retain(|m| m.manifest.position <= up_to);
                manifests.sort_by_key(|m| std::cmp::Reverse(m.manifest.position));
            }
        }
        for stored in manifests {
            if keys.is_some_and(|keys| keys.iter().all(|k| known.contains_key(k))) {
                break;
            }
            let (transformer, position) = (&stored.manifest.transformer, stored.manifest.position);
            let counts = match store.load(&stored).await {
                Ok(snapshot) => snapshot_counts(&snapshot),
                Err(error) => {
                    tracing::warn!(transformer, position, %error, "snapshot does not load; not reading from it");
                    continue;
                }
            };
            for (key, count) in counts.into_iter().flatten() {
                if wanted(&key) && !known.contains_key(&key) {
                    tracing::info!(reader, key = %key, transformer, position, count, "reading the key from a snapshot");
                    known.insert(key, KnownCount { from: position, count });
                }
            }
        }
    }
    for key in keys.into_iter().flatten() {
        if known.contains_key(key) {
            continue;
        }
        if log_start > 0 {
            return Err(Error::NoSnapshot { reader: reader.to_string(), key: key.to_string(), start: log_start });
        }
        known.insert(key.clone(), KnownCount { from: 0, count: 0 });
    }
    if keys.is_none() && known.is_empty() && log_start == 0 {
        // Every key, and no snapshot holds any: the log's start is the only place to begin.
        return Ok(Resume::origin());
    }
    let position = known.values().map(|k| k.from).min().unwrap_or(log_start);
    Ok(Resume::per_key(position, known))
}

/// [`start_for`] on Kafka: the log's first offset, and the snapshot index beside the log when
/// it is needed. Snapshot topics that are missing or refuse this client are only an error
/// on a truncated log.
pub async fn kafka_start(
    log: &KafkaLog,
    reader: &str,
    keys: Option<&[EventSourceKey]>,
    from: StartFrom,
) -> Result<Resume, Error> {
    let log_start = log.start_offset().await?;
    if log_start == 0 && from == StartFrom::LogStart {
        return Ok(Resume::origin());
    }
    let store = match KafkaSnapshotStore::connect(log.config()).await {
        Ok(store) => Some(store),
        // A log without snapshot topics is common, and read from offset 0 quietly.
        Err(error) if error.is_topic_missing() && log_start == 0 => {
            tracing::debug!(%error, "no snapshots to start from");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "no snapshots to start from");
            None
        }
    };
    let manifests = match &store {
        Some(store) => store.all_manifests().await.unwrap_or_else(|error| {
            tracing::warn!(%error, "the snapshot index does not read; no snapshots to start from");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let source = store.as_ref().map(|store| SnapshotSource { store: store as &dyn Snapshots, manifests });
    start_for(log_start, source, reader, keys, from).await
}

/// The pipelines a reader reads: `only`, or every pipeline of a log of `pipelines`. A number
/// past the log's last pipeline is a usage error.
pub fn chosen_pipelines(pipelines: Pipelines, only: Option<u32>) -> Result<Vec<u32>, Error> {
    match only {
        None => Ok(pipelines.all().collect()),
        Some(pipeline) if pipeline < pipelines.count() => Ok(vec![pipeline]),
        Some(pipeline) => Err(Error::Usage(format!(
            "--pipeline {pipeline} is not a pipeline of this log, which has {} (0 to {})",
            pipelines.count(),
            pipelines.count() - 1
        ))),
    }
}

/// What starts each text line about `pipeline`: `p<N> ` on a log of several pipelines, nothing
/// on a log of one (whose output is as it always was).
pub fn line_prefix(pipelines: Pipelines, pipeline: u32) -> String {
    if pipelines.count() > 1 {
        format!("p{pipeline} ")
    } else {
        String::new()
    }
}

/// How long a reader waits for more events before deciding it has reached the log end.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Hands canonical events from `stream` to `visit` until the log end seen at `end` (or
/// forever with `follow`).
pub async fn each_canonical(
    stream: &mut EventStream,
    end: Offset,
    follow: bool,
    mut visit: impl FnMut(CanonicalEvent) -> Result<(), Error>,
) -> Result<(), Error> {
    loop {
        match stream.next_within(IDLE_WAIT).await? {
            Some(event) => visit(event)?,
            None if follow => {}
            // The stream's position steps over transaction markers, which no record holds.
            None if stream.position() >= end => return Ok(()),
            None => {}
        }
    }
}

/// A payload as text: JSON as it is, Avro decoded to JSON through the schema registry (when
/// `SCHEMA_REGISTRY_URL` is set), anything else as lossy UTF-8.
pub fn readable(event: &Event, registry: Option<&SchemaRegistry>, schemas: &mut SchemaCache) -> String {
    if event.content_type.starts_with(codec::CONTENT_TYPE_AVRO) {
        let Some(registry) = registry else {
            return format!("<Avro, {} bytes: set SCHEMA_REGISTRY_URL to decode>", event.payload.len());
        };
        if let Ok((id, _)) = codec::schema_id(&event.payload) {
            // A blocking wait inside the visitor: tail prints in order, one event at a time.
            let resolved = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(registry.resolve([id], schemas))
            });
            if let Err(e) = resolved {
                return format!("<Avro: {e}>");
            }
        }
        return match codec::decode::<serde_json::Value>(&event.content_type, &event.payload, schemas, None) {
            Ok(json) => json.to_string(),
            Err(e) => format!("<Avro: {e}>"),
        };
    }
    String::from_utf8_lossy(&event.payload).replace('\n', "\\n")
}

/// A dead letter as read back: its record's offset, its index, and the letter (or its raw
/// text if it does not parse).
pub type ReadDeadLetter = (Offset, u64, Result<DeadLetter, String>);

/// A dead letter as read back, with the advisory detail the canonical copy's record carries
/// for it (the version that computed it, a library's or panic's text), if any.
pub type DetailedDeadLetter = (ReadDeadLetter, Option<Detail>);

/// Every canonical dead letter of `key`, up to the log end.
pub async fn read_dead_letters<L: EventLog>(log: Arc<L>, key: &EventSourceKey) -> Result<Vec<ReadDeadLetter>, Error> {
    Ok(read_dead_letters_with_details(log, key).await?.into_iter().map(|(letter, _)| letter).collect())
}

/// Every canonical dead letter of `key`, up to the log end, with its detail.
pub async fn read_dead_letters_with_details<L: EventLog>(
    log: Arc<L>,
    key: &EventSourceKey,
) -> Result<Vec<DetailedDeadLetter>, Error> {
    read_dead_letters_from(log, key, Resume::origin()).await
}

/// Every canonical dead letter of `key` from `start` up to the log end, with its detail.
pub async fn read_dead_letters_from<L: EventLog>(
    log: Arc<L>,
    key: &EventSourceKey,
    start: Resume,
) -> Result<Vec<DetailedDeadLetter>, Error> {
    let end = log.end_offset().await?;
    let pipeline = Pipeline::resumed(log, "dead-letters", start);
    let mut stream = pipeline.stream_events(std::slice::from_ref(key), 0).await?;
    let mut letters = Vec::new();
    each_canonical(&mut stream, end, false, |canonical| {
        let index = canonical.event.index.expect("canonical events carry their index");
        let letter = serde_json::from_slice::<DeadLetter>(&canonical.event.payload)
            .map_err(|_| String::from_utf8_lossy(&canonical.event.payload).into_owned());
        letters.push(((canonical.offset, index, letter), canonical.detail));
        Ok(())
    })
    .await?;
    Ok(letters)
}

/// One line of `dead-letters list`: the dead letter's sentence (what every replica agrees
/// on), then its detail (outside the digest) when its record carries one.
pub fn dead_letter_line((offset, index, letter): &ReadDeadLetter, detail: Option<&Detail>) -> String {
    let mut line = match letter {
        Ok(letter) => format!("{index} (offset {offset}): {}", letter.describe()),
        Err(raw) => format!("{index} (offset {offset}): not a dead letter this launcher can read: {raw}"),
    };
    if let Some(detail) = detail {
        line.push_str(&format!(" [detail, not digested: {}]", detail.describe().replace('\n', "\\n")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::replica::run_to_end;
    use competing_transformers::testing::Echo;
    use competing_transformers::MemoryLog;

    use competing_transformers::snapshot::{Snapshot, Streams, SNAPSHOT_FORMAT};
    use competing_transformers_kafka::snapshot_store::{MemoryIndex, SnapshotStore};

    /// A snapshot of `echo` at `position` holding `in`'s count `count`.
    fn snapshot(position: Offset, count: u64) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            transformer: "echo".into(),
            position,
            inputs: count,
            state_base64: String::new(),
            input_counts: vec![("in".into(), count)],
            next_index: Streams { output: count, dead_letters: 0 },
            own_counts: Streams { output: count, dead_letters: 0 },
            pending: Vec::new(),
        }
    }

    async fn store(positions: &[(Offset, u64)]) -> SnapshotStore<MemoryLog, MemoryIndex> {
        let store = SnapshotStore::new(Arc::new(MemoryLog::new()), MemoryIndex::default());
        for (position, count) in positions {
            store.store(&snapshot(*position, *count), "r").await.unwrap();
        }
        store
    }

    async fn start(
        store: &SnapshotStore<MemoryLog, MemoryIndex>,
        log_start: Offset,
        keys: &[EventSourceKey],
        from: StartFrom,
    ) -> Result<Resume, Error> {
        let source = SnapshotSource { store, manifests: store.all_manifests().await.unwrap() };
        start_for(log_start, Some(source), "test", Some(keys), from).await
    }

    #[test]
    fn a_reader_reads_every_pipeline_or_the_one_asked_for_and_prefixes_lines_only_among_several() {
        let three = Pipelines::new(3).unwrap();
        assert_eq!(chosen_pipelines(three, None).unwrap(), [0, 1, 2]);
        assert_eq!(chosen_pipelines(three, Some(2)).unwrap(), [2]);
        let error = chosen_pipelines(three, Some(3)).unwrap_err();
        assert!(matches!(error, Error::Usage(_)), "{error}");
        assert_eq!(error.exit_code(), 2);
        assert_eq!(chosen_pipelines(Pipelines::ONE, None).unwrap(), [0]);
        assert_eq!(line_prefix(three, 1), "p1 ");
        assert_eq!(line_prefix(Pipelines::ONE, 0), "");
    }

    #[tokio::test]
    async fn a_reader_takes_each_key_up_at_the_snapshot_its_start_asks_for() {
        let store = store(&[(4, 2), (6, 3), (9, 5)]).await;
        let keys = [EventSourceKey::new("in").unwrap()];
        let known = |start: Resume| start.known(&keys[0]).map(|k| (k.from, k.count));
        let newest = StartFrom::Newest { up_to: Offset::MAX };
        assert!(start(&store, 0, &keys, StartFrom::LogStart).await.unwrap().is_origin(), "a whole log: from 0");
        assert_eq!(known(start(&store, 5, &keys, StartFrom::LogStart).await.unwrap()), Some((6, 3)));
        assert_eq!(known(start(&store, 5, &keys, newest).await.unwrap()), Some((9, 5)));
        assert_eq!(known(start(&store, 0, &keys, StartFrom::Newest { up_to: 8 }).await.unwrap()), Some((6, 3)));
        let dead_letters = [EventSourceKey::new("echo.dead-letters").unwrap()];
        assert_eq!(start(&store, 5, &dead_letters, newest).await.unwrap().known(&dead_letters[0]).unwrap().count, 0);
    }

    #[tokio::test]
    async fn a_key_no_snapshot_holds_is_read_from_zero_or_on_a_truncated_log_is_one_sentence() {
        let store = store(&[(6, 3)]).await;
        let other = [EventSourceKey::new("other").unwrap()];
        let newest = StartFrom::Newest { up_to: Offset::MAX };
        let whole = start(&store, 0, &other, newest).await.unwrap();
        assert_eq!(whole.known(&other[0]).map(|k| (k.from, k.count)), Some((0, 0)));
        let error = start(&store, 7, &[EventSourceKey::new("in").unwrap()], StartFrom::LogStart).await.unwrap_err();
        assert!(matches!(&error, Error::NoSnapshot { key, start: 7, .. } if key == "in"), "{error}");
        assert!(error.to_string().contains("with snapshots on"), "{error}");
    }

    #[tokio::test]
    async fn a_reader_of_every_key_starts_at_the_newest_snapshots_or_at_zero_without_any() {
        let store = store(&[(4, 2), (9, 5)]).await;
        let newest = StartFrom::Newest { up_to: Offset::MAX };
        let recent = start_for(
            0,
            Some(SnapshotSource { store: &store, manifests: store.all_manifests().await.unwrap() }),
            "test",
            None,
            newest,
        )
        .await
        .unwrap();
        assert_eq!(recent.position(), 9, "every key the newest snapshot holds, from there");
        assert_eq!(recent.known(&EventSourceKey::new("in").unwrap()).map(|k| k.count), Some(5));
        assert!(
            recent.known(&EventSourceKey::new("other").unwrap()).is_none(),
            "a key no snapshot holds is not followed"
        );
        let empty = SnapshotStore::new(Arc::new(MemoryLog::new()), MemoryIndex::default());
        let none = SnapshotSource { store: &empty, manifests: Vec::new() };
        assert!(start_for(0, Some(none), "test", None, newest).await.unwrap().is_origin(), "no snapshot: from 0");
    }

    #[tokio::test]
    async fn a_listed_dead_letter_shows_its_detail_beside_what_is_digested() {
        let log = MemoryLog::new();
        let key = |name: &str| EventSourceKey::new(name).unwrap();
        for payload in [&b"boom"[..], b"bad"] {
            log.publish(&key("in"), vec![Event::new(key("in"), None, None, 0, "text/plain", payload.to_vec())]);
        }
        run_to_end(&log, Echo::default());
        let letters = read_dead_letters_with_details(Arc::new(log), &key("echo.dead-letters")).await.unwrap();
        let lines: Vec<String> =
            letters.iter().map(|(letter, detail)| dead_letter_line(letter, detail.as_ref())).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].ends_with("because the transform panicked: the transform panicked [detail, not digested: computed by v1: boom on 0]"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("the transform returned an error: bad input [detail, not digested: computed by v1]"),
            "{}",
            lines[1]
        );
    }
}
