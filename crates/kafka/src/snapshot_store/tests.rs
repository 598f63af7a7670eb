//! The store on the in-memory log and index.

use competing_transformers::snapshot::{Streams, CHUNK_BYTES_MAX, SNAPSHOT_FORMAT};
use competing_transformers::MemoryLog;

use super::*;

type MemoryStore = SnapshotStore<MemoryLog, MemoryIndex>;

fn store_on(log: &Arc<MemoryLog>, index: &MemoryIndex) -> MemoryStore {
    SnapshotStore::new(log.clone(), index.clone())
}

fn snapshot(position: Offset, state: &[u8]) -> Snapshot {
    Snapshot {
        format: SNAPSHOT_FORMAT,
        transformer: "engine".into(),
        position,
        inputs: position / 2,
        state_base64: text(state),
        input_counts: vec![("orders".into(), position / 2)],
        next_index: Streams { output: position / 2, dead_letters: 0 },
        own_counts: Streams { output: position / 2, dead_letters: 0 },
        pending: Vec::new(),
    }
}

/// `state` as base64-alphabet text (the store never decodes it).
fn text(state: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    state.iter().map(|b| ALPHABET[usize::from(b % 64)] as char).collect()
}

/// Bytes no compression or repetition hides: a simple generator, seeded.
fn noise(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_stored_snapshot_is_found_in_the_index_and_loads_back() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    let original = snapshot(10, b"state");
    let stored = store.store(&original, "replica-a").await.unwrap();
    assert!(stored.won && stored.matches);
    assert_eq!(stored.canonical.manifest.digest(), Some(Snapshot::digest_of(&original.encode())));
    let manifests = store.manifests("engine").await.unwrap();
    assert_eq!(manifests, vec![stored.canonical.clone()]);
    assert_eq!(store.load(&manifests[0]).await.unwrap(), original);
    assert!(store.manifests("other").await.unwrap().is_empty());
}

#[tokio::test]
async fn two_writers_of_the_same_bytes_leave_one_canonical_copy_of_each_index() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let (a, b) = (store_on(&log, &index), store_on(&log, &index));
    let state = noise(CHUNK_BYTES_MAX + 1000, 7);
    let original = snapshot(20, &state);
    let (first, second) = tokio::join!(a.store(&original, "replica-a"), b.store(&original, "replica-b"));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.matches && second.matches);
    assert!(first.won != second.won, "exactly one manifest record is canonical");
    assert_eq!(first.canonical, second.canonical);
    let key = snapshot_key("engine", 20).unwrap();
    let canonical = log.canonical(&key);
    let chunks = stored_chunks(&original);
    assert_eq!(canonical.len() as u64, chunks + 1, "a manifest and its chunks, each once");
    assert_eq!(canonical.iter().map(|e| e.index).collect::<Vec<_>>(), (0..=chunks).map(Some).collect::<Vec<_>>());
    assert_eq!(a.load(&first.canonical).await.unwrap(), original);
    assert_eq!(a.manifests("engine").await.unwrap().len(), 1);
}

fn stored_chunks(snapshot: &Snapshot) -> u64 {
    snapshot::chunks(&snapshot.encode()).count() as u64
}

#[tokio::test]
async fn a_writer_of_different_bytes_learns_the_canonical_digest_and_writes_nothing_more() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    let theirs = snapshot(30, b"their state");
    let first = store.store(&theirs, "replica-a").await.unwrap();
    let end = log.end();
    let ours = snapshot(30, b"our state, which differs");
    let second = store_on(&log, &index).store(&ours, "replica-b").await.unwrap();
    assert!(!second.matches && !second.won);
    assert_eq!(second.canonical, first.canonical);
    assert_ne!(second.canonical.manifest.digest(), Some(Snapshot::digest_of(&ours.encode())));
    assert_eq!(log.end(), end + 1, "only the divergent manifest was written");
    assert_eq!(store.load(&second.canonical).await.unwrap(), theirs);
}

#[tokio::test]
async fn a_snapshot_of_several_chunks_round_trips() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    let original = snapshot(40, &noise(3 << 19, 11));
    assert!(original.encode().len() > 1 << 20);
    let stored = store.store(&original, "replica-a").await.unwrap();
    assert_eq!(stored.canonical.manifest.chunks, stored_chunks(&original));
    assert!(stored.canonical.manifest.chunks >= 3);
    assert_eq!(store.load(&stored.canonical).await.unwrap(), original);
}

#[tokio::test]
async fn a_corrupt_snapshot_does_not_load_and_the_one_before_does() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    let older = snapshot(50, b"older");
    store.store(&older, "replica-a").await.unwrap();
    // A newer snapshot whose canonical chunk is not what its manifest says.
    let newer = snapshot(60, b"newer");
    let encoded = newer.encode();
    let manifest = Manifest::of(&newer, &encoded);
    let key = manifest.key().unwrap();
    let pipeline = Pipeline::new(log.clone(), "faulty");
    let written = pipeline.exists_or_write(&key, 0, vec![manifest.to_event(&key)]).await.unwrap();
    let WriteOutcome::Written { offset, .. } = written else { panic!("{written:?}") };
    let mut corrupt = encoded.clone();
    corrupt[5] ^= 1;
    let chunk = Event::new(key.clone(), Some(1), None, 0, CHUNK_CONTENT_TYPE, corrupt);
    pipeline.exists_or_write(&key, 1, vec![chunk]).await.unwrap();
    store.add_to_index(&StoredManifest { manifest, offset }).await.unwrap();

    let manifests = store.manifests("engine").await.unwrap();
    assert_eq!(manifests.iter().map(|m| m.manifest.position).collect::<Vec<_>>(), [60, 50]);
    let error = store.load(&manifests[0]).await.unwrap_err();
    assert!(matches!(error, LoadError::Snapshot { source: SnapshotError::Digest { .. }, .. }), "{error:?}");
    assert_eq!(store.load(&manifests[1]).await.unwrap(), older);
    let loaded = store.load_newest("engine", Ok::<_, String>).await.unwrap();
    assert_eq!(loaded, Some(older.clone()));
    // A replica storing the right bytes finds the corrupt chunk.
    let error = store_on(&log, &index).store(&newer, "replica-b").await.unwrap_err();
    assert!(matches!(error, SnapshotStoreError::ChunkDiffers { index: 1, .. }), "{error:?}");
    // A refused restore falls back too, then to the log's start.
    let refused = store.load_newest("engine", |_| Err::<(), _>("no".to_string())).await.unwrap();
    assert_eq!(refused, None);
}

#[tokio::test]
async fn a_manifest_whose_chunks_are_missing_or_elsewhere_does_not_load() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    let stored = store.store(&snapshot(70, b"state"), "replica-a").await.unwrap().canonical;
    let more_chunks = StoredManifest { manifest: Manifest { chunks: 2, ..stored.manifest.clone() }, ..stored.clone() };
    assert!(matches!(store.load(&more_chunks).await, Err(LoadError::ManifestDiffers { .. })));
    let elsewhere = StoredManifest { offset: stored.offset + 1, ..stored.clone() };
    assert!(matches!(store.load(&elsewhere).await, Err(LoadError::ManifestDiffers { .. })));
    let bad_digest = StoredManifest { manifest: Manifest { digest: "zz".into(), ..stored.manifest.clone() }, ..stored };
    assert!(matches!(store.load(&bad_digest).await, Err(LoadError::ManifestMalformed { .. })));
}

#[tokio::test]
async fn the_index_keeps_the_newest_three_and_a_late_writer_never_replaces_them() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    for position in [100, 200, 300, 400] {
        store.store(&snapshot(position, b"s"), "replica-a").await.unwrap();
    }
    let positions = |all: Vec<StoredManifest>| all.iter().map(|m| m.manifest.position).collect::<Vec<_>>();
    assert_eq!(positions(store.manifests("engine").await.unwrap()), [400, 300, 200]);
    // A slow replica stores an old snapshot now.
    store_on(&log, &index).store(&snapshot(150, b"s"), "replica-b").await.unwrap();
    assert_eq!(positions(store.manifests("engine").await.unwrap()), [400, 300, 200]);
    // A malformed entry is replaced by the next store.
    index.write("engine", b"not json".to_vec()).await.unwrap();
    assert!(matches!(store.manifests("engine").await, Err(SnapshotStoreError::IndexMalformed { .. })));
    store.store(&snapshot(500, b"s"), "replica-a").await.unwrap();
    assert_eq!(positions(store.manifests("engine").await.unwrap()), [500]);
}

#[test]
fn a_name_too_long_for_a_key_is_an_error_not_a_panic() {
    let long = "d".repeat(250);
    assert!(snapshot_key(&long, 123_456).is_err());
    assert_eq!(snapshot_key("engine", 42).unwrap().as_str(), "engine.snapshot.42");
}

#[test]
fn the_manifest_digest_is_hex_and_reads_back() {
    let original = snapshot(1, b"x");
    let encoded = original.encode();
    let manifest = Manifest::of(&original, &encoded);
    assert_eq!(manifest.digest.len(), 64);
    assert_eq!(manifest.digest(), Some(Snapshot::digest_of(&encoded)));
    let json = serde_json::to_value(StoredManifest { manifest, offset: 9 }).unwrap();
    let mut fields: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["bytes", "chunks", "digest", "inputs", "offset", "position", "transformer"]);
}

#[tokio::test]
async fn a_manifest_without_its_chunks_does_not_load() {
    let (log, index) = (Arc::new(MemoryLog::new()), MemoryIndex::default());
    let store = store_on(&log, &index);
    let original = snapshot(80, b"state");
    let manifest = Manifest::of(&original, &original.encode());
    let key = manifest.key().unwrap();
    // A writer that stopped after the manifest.
    let written = Pipeline::new(log.clone(), "stopped").exists_or_write(&key, 0, vec![manifest.to_event(&key)]).await;
    let Ok(WriteOutcome::Written { offset, .. }) = written else { panic!("{written:?}") };
    let error = store.load(&StoredManifest { manifest, offset }).await.unwrap_err();
    assert!(matches!(error, LoadError::Missing { found: 0, chunks: 1, .. }), "{error:?}");
    // Another replica completes it.
    let stored = store.store(&original, "replica-b").await.unwrap();
    assert!(!stored.won && stored.matches && stored.canonical.offset == offset);
    assert_eq!(store.load(&stored.canonical).await.unwrap(), original);
}
