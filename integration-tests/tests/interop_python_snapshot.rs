//! A reader in another language, written from docs/RECORD_FORMAT.md ("Snapshots") alone
//! (interop/reader.py), finds a DET's newest snapshot through the index topic, reassembles its
//! chunks, checks its digest, and falls back past a corrupt one: it reads what the Rust store
//! stored.

use competing_transformers::snapshot;
use competing_transformers::Event;
use competing_transformers_kafka::admin::create_snapshot_topics;
use competing_transformers_kafka::snapshot_store::{
    KafkaIndex, KafkaSnapshotStore, Manifest, SnapshotIndex, StoredManifest, CHUNK_CONTENT_TYPE,
};
use competing_transformers_kafka::{Pipeline, WriteOutcome};
use integration_tests::{engine_snapshot as snapshot, fresh_log_config, python_reader};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_reader_following_the_docs_loads_the_newest_good_snapshot() {
    let config = fresh_log_config("interop-snapshot").await;
    create_snapshot_topics(&config).await.unwrap();
    let store = KafkaSnapshotStore::connect(&config).await.unwrap();
    let good = snapshot(100, 1_200_000, 1);
    let stored = store.store(&good, "replica-a").await.unwrap().canonical;
    assert!(stored.manifest.chunks >= 3);

    // A newer snapshot whose one chunk is corrupt, indexed as if complete.
    let newer = snapshot(200, 10, 2);
    let encoded = newer.encode();
    let manifest = Manifest::of(&newer, &encoded);
    let key = manifest.key().unwrap();
    let pipeline = Pipeline::new(store.chunks().clone(), "faulty");
    let payload = serde_json::to_vec(&manifest).unwrap();
    let event = Event::new(key.clone(), Some(0), None, 0, "application/json", payload);
    let WriteOutcome::Written { offset, .. } = pipeline.exists_or_write(&key, 0, vec![event]).await.unwrap() else {
        panic!("the manifest is the first of its key")
    };
    let mut corrupt = snapshot::chunks(&encoded).next().unwrap().to_vec();
    corrupt[3] ^= 1;
    let chunk = Event::new(key.clone(), Some(1), None, 0, CHUNK_CONTENT_TYPE, corrupt);
    pipeline.exists_or_write(&key, 1, vec![chunk]).await.unwrap();
    let entries = vec![StoredManifest { manifest, offset }, stored.clone()];
    KafkaIndex::connect(&config).await.unwrap().write("engine", serde_json::to_vec(&entries).unwrap()).await.unwrap();

    let read: Value =
        serde_json::from_str(&python_reader(&["snapshot", &config.bootstrap_servers, &config.topic, "engine"]))
            .unwrap();
    assert_eq!(read["skipped"], serde_json::json!([200]), "the corrupt newest is skipped");
    assert_eq!(read["manifest"], serde_json::to_value(&stored).unwrap());
    assert_eq!(read["snapshot"], serde_json::to_value(&good).unwrap(), "Python reads the bytes Rust stored");
    let missing: Value =
        serde_json::from_str(&python_reader(&["snapshot", &config.bootstrap_servers, &config.topic, "nobody"]))
            .unwrap();
    assert_eq!(missing["snapshot"], Value::Null);
}
