//! Dead letters on the real broker: two replicas of different versions race on an
//! undecodable input and write byte-identical dead letters (no divergence); the library's
//! text and the version that computed the canonical copy travel in its record's
//! `ct.dead-letter.detail` header, which `dead-letters list` reads back, in both write modes.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::dead_letter::{DeadLetter, Reason};
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::{codec, Event, EventSourceKey, Input, Outputs, Transform, TransformError};
use competing_transformers_kafka::{run_replica, KafkaLog, KafkaLogConfig, Pipeline, ReplicaStatus, ShutdownTrigger};
use competing_transformers_launcher::reading::{dead_letter_line, read_dead_letters_with_details};
use integration_tests::{fresh_log_config, transactional, wait_for_count};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Reads `{"n": u64}` JSON from `in` and echoes it; its version is whatever it is built with.
struct Reader(u32);

#[derive(serde::Deserialize, serde::Serialize)]
struct Count {
    n: u64,
}

impl Transform for Reader {
    fn name(&self) -> &str {
        "reader"
    }
    fn version(&self) -> u32 {
        self.0
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("in")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let count: Count = input.json()?;
        out.emit_json(&count);
        Ok(())
    }
}

async fn race_on_an_undecodable_input(config: KafkaLogConfig) {
    let log = Arc::new(KafkaLog::connect(config).await.unwrap());
    let source = Pipeline::new(log.clone(), "source");
    for payload in [&br#"{"n":1}"#[..], b"{not json"] {
        let event = Event::new(key("in"), None, None, 0, "application/json", payload.to_vec());
        source.write(&key("in"), vec![event]).await.unwrap();
    }
    let shutdown = ShutdownTrigger::new();
    let replicas: Vec<_> = [(1, "r-v1"), (2, "r-v2")]
        .into_iter()
        .map(|(version, id)| {
            let (status, _) = watch::channel(ReplicaStatus::default());
            let config = ReplicaConfig::new(id);
            tokio::spawn(run_replica(log.clone(), Reader(version), config, shutdown.subscribe(), status))
        })
        .collect();
    let reader = Pipeline::new(log.clone(), "reader");
    wait_for_count(&reader, &key("reader.dead-letters"), 1, Duration::from_secs(30)).await;
    wait_for_count(&reader, &key("reader"), 1, Duration::from_secs(30)).await;
    // Both replicas computed the dead letter; give the slower copy time to land, then stop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.request();
    for replica in replicas {
        replica.await.unwrap().expect("no replica diverged: their dead letters are the same bytes");
    }

    let letters = read_dead_letters_with_details(log.clone(), &key("reader.dead-letters")).await.unwrap();
    assert_eq!(letters.len(), 1);
    let ((_, index, letter), detail) = &letters[0];
    let letter: &DeadLetter = letter.as_ref().unwrap();
    assert_eq!((*index, letter.reason, letter.message.as_str()), (0, Reason::Decode, codec::NOT_JSON_FOR_THIS_INPUT));
    assert_eq!(letter.version, None);
    let serde_text = serde_json::from_slice::<Count>(b"{not json").err().unwrap().to_string();
    let detail = detail.as_ref().expect("the canonical copy's record carries its detail");
    assert_eq!((detail.index, detail.error.as_deref()), (0, Some(serde_text.as_str())));
    assert!([1, 2].contains(&detail.version), "{detail:?}");
    let line = dead_letter_line(&letters[0].0, Some(detail));
    assert!(line.contains(&serde_text) && line.contains(codec::NOT_JSON_FOR_THIS_INPUT), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_replicas_of_two_versions_agree_and_the_detail_shows_the_library_text() {
    race_on_an_undecodable_input(fresh_log_config("dead-letter-detail").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_travels_in_transactional_mode_too() {
    race_on_an_undecodable_input(transactional(&fresh_log_config("dead-letter-detail-txn").await)).await;
}
