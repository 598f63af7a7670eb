//! The snapshot store on the real broker: topics created and checked beside the log,
//! replicas racing to store the same multi-chunk snapshot, a divergent one told so, the
//! compacted index found without a scan, and a log without snapshot topics still usable.

use competing_transformers::Offset;
use competing_transformers_kafka::admin::{check_snapshot_topics, create_snapshot_topics};
use competing_transformers_kafka::snapshot_store::{snapshot_key, KafkaSnapshotStore};
use competing_transformers_kafka::{LogError, Pipeline};
use integration_tests::{engine_snapshot as snapshot, fresh_log_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_snapshot_topics_a_replica_runs_without_snapshots() {
    let config = fresh_log_config("snapshot-none").await;
    let missing = check_snapshot_topics(&config).await.unwrap_err();
    assert!(matches!(&missing, LogError::TopicMissing { topic, .. } if topic.ends_with(".snapshots")), "{missing:?}");
    assert!(KafkaSnapshotStore::connect_if_present(&config).await.unwrap().is_none());
    let error = KafkaSnapshotStore::connect(&config).await.err().expect("no topics");
    assert!(error.is_topic_missing(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_topics_are_created_with_their_layouts() {
    let config = fresh_log_config("snapshot-topics").await;
    let created = create_snapshot_topics(&config).await.unwrap();
    assert_eq!(created.snapshots.topic, format!("{}.snapshots", config.topic));
    assert_eq!((created.snapshots.partitions, created.snapshots.retention_ms), (1, -1));
    assert_eq!(created.snapshots.cleanup_policy, "delete");
    assert_eq!(created.index.topic, format!("{}.snapshot-index", config.topic));
    assert_eq!((created.index.partitions, created.index.cleanup_policy.as_str()), (1, "compact"));
    // Creating again checks what exists.
    assert_eq!(create_snapshot_topics(&config).await.unwrap(), created);
    assert_eq!(check_snapshot_topics(&config).await.unwrap(), created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_store_one_canonical_copy_and_a_divergent_one_is_told() {
    let config = fresh_log_config("snapshot-race").await;
    create_snapshot_topics(&config).await.unwrap();
    let (a, b) =
        (KafkaSnapshotStore::connect(&config).await.unwrap(), KafkaSnapshotStore::connect(&config).await.unwrap());
    let original = snapshot(1_000, 1_500_000, 3);
    let (first, second) = tokio::join!(a.store(&original, "replica-a"), b.store(&original, "replica-b"));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.matches && second.matches);
    assert!(first.won != second.won, "one manifest record is canonical: {first:?} {second:?}");
    assert_eq!(first.canonical, second.canonical);
    assert!(first.canonical.manifest.chunks >= 3, "{:?}", first.canonical.manifest);

    // Each index of the key holds one canonical event.
    let reader = Pipeline::new(a.chunks().clone(), "reader");
    let key = snapshot_key("engine", 1_000).unwrap();
    assert_eq!(reader.count(&key).await.unwrap(), first.canonical.manifest.chunks + 1);

    // A fresh process finds it through the index and loads it.
    let fresh = KafkaSnapshotStore::connect(&config).await.unwrap();
    let manifests = fresh.manifests("engine").await.unwrap();
    assert_eq!(manifests, vec![first.canonical.clone()]);
    assert_eq!(fresh.load(&manifests[0]).await.unwrap(), original);

    // A replica whose state differs learns the canonical digest, and does not index its own.
    let divergent = fresh.store(&snapshot(1_000, 1_500_000, 4), "replica-c").await.unwrap();
    assert!(!divergent.matches && !divergent.won);
    assert_eq!(divergent.canonical, first.canonical);
    assert_eq!(fresh.manifests("engine").await.unwrap(), manifests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_keeps_the_newest_three_and_the_loader_falls_back() {
    let config = fresh_log_config("snapshot-index").await;
    create_snapshot_topics(&config).await.unwrap();
    let store = KafkaSnapshotStore::connect(&config).await.unwrap();
    for position in [10, 20, 30, 40] {
        store.store(&snapshot(position, 100, position), "replica-a").await.unwrap();
    }
    // A late writer of an old snapshot leaves the newest alone.
    store.store(&snapshot(5, 100, 5), "replica-b").await.unwrap();
    let manifests = KafkaSnapshotStore::connect(&config).await.unwrap().manifests("engine").await.unwrap();
    let positions: Vec<Offset> = manifests.iter().map(|m| m.manifest.position).collect();
    assert_eq!(positions, [40, 30, 20]);
    // A restore that refuses the newest gets the one before.
    let loaded = store
        .load_newest("engine", |s| if s.position == 40 { Err("refused".to_string()) } else { Ok(s.position) })
        .await
        .unwrap();
    assert_eq!(loaded, Some(30));
}
