//! The ledger on the real broker, projected into a real PostgreSQL by a sink that is killed
//! twice (a panic after applying a batch but before its commit, then an abort mid-run): the
//! restarted sink's balances equal the ledger's exactly, and money is conserved.
//!
//! PostgreSQL comes from `DATABASE_URL` (`scripts/postgres.sh start` prints it;
//! `scripts/test.sh` starts the server and sets it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::replica::ReplicaConfig;
use competing_transformers::{Event, EventSourceKey};
use competing_transformers_kafka::{run_replica, ReplicaStatus};
use competing_transformers_kafka::{KafkaLog, Pipeline, ShutdownTrigger};
use integration_tests::{fresh_log_config, ledger_reference, wait_for_count};
use ledger::{Ledger, LEDGER_KEY, TRANSFERS_KEY};
use ledger_projection::{Projection, RunOptions};
use serde_json::json;
use tokio::sync::watch;

fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "no PostgreSQL: set DATABASE_URL=postgres://…, e.g. from `scripts/postgres.sh start` (which prints it), or run the tests with `scripts/test.sh`, which starts one"
        )
    })
}

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Opens, then transfers between random accounts with random amounts (a fixed LCG): many
/// succeed, many are overdrafts; one command is malformed and becomes a dead letter.
fn commands(transfers: usize) -> Vec<serde_json::Value> {
    let mut all: Vec<_> =
        (0..8).map(|a| json!({"type": "open", "account": format!("acct{a}"), "initial": 500 + a * 100})).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |bound: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % bound
    };
    for t in 0..transfers {
        let (from, to, amount) = (next(8), next(8), 1 + next(400));
        all.push(json!({"type": "transfer", "id": format!("t{t}"), "from": format!("acct{from}"), "to": format!("acct{to}"), "amount": amount}));
        if t == transfers / 2 {
            all.push(json!({"type": "transfer", "id": "broken", "from": "acct1"}));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_projection_restarts_with_balances_exactly_equal_to_the_ledger() {
    let database_url = database_url();
    let config = fresh_log_config("ledger-pg").await;
    let commands = commands(600);
    let (want, entries) = ledger_reference(&commands);

    // Three racing ledger replicas.
    let mut replicas = Vec::new();
    for id in ["l1", "l2", "l3"] {
        let shutdown = ShutdownTrigger::new();
        let shutdown_rx = shutdown.subscribe();
        let (status_tx, _status) = watch::channel(ReplicaStatus::default());
        let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
        replicas.push((
            shutdown,
            tokio::spawn(run_replica(log, Ledger::new(), ReplicaConfig::new(id), shutdown_rx, status_tx)),
        ));
    }
    // Commands in records of up to 7 events, so a record's outputs may span a batch boundary.
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    let transfers = key(TRANSFERS_KEY);
    for (chunk_number, chunk) in commands.chunks(7).enumerate() {
        let events = chunk
            .iter()
            .enumerate()
            .map(|(i, c)| Event::json(transfers.clone(), (chunk_number * 7 + i) as i64, c))
            .collect();
        source.write(&transfers, events).await.unwrap();
    }
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    wait_for_count(&reader, &key(LEDGER_KEY), entries, Duration::from_secs(60)).await;
    wait_for_count(&reader, &key(LEDGER_KEY).dead_letters(), 1, Duration::from_secs(10)).await;

    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let schema = format!("ledger_test_{nanos}");
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let batch_events_max = 25;

    // Crash 1: a panic inside the third transaction, after its changes, before its commit.
    let crash = {
        let (log, url, schema, topic) = (log.clone(), database_url.clone(), schema.clone(), config.topic.clone());
        tokio::spawn(async move {
            let mut projection = Projection::connect(&url, &schema, &topic).await.unwrap();
            let before_commit: ledger_projection::BeforeCommit = Arc::new(|batch| {
                if batch == 3 {
                    panic!("injected crash before commit of batch 3");
                }
            });
            projection
                .run(log, RunOptions { batch_events_max, before_commit: Some(before_commit), ..RunOptions::default() })
                .await
        })
    };
    let crashed = crash.await.expect_err("the sink crashed");
    assert!(crashed.is_panic());
    let probe = Projection::connect(&database_url, &schema, &config.topic).await.unwrap();
    let after_crash = probe.stored_position().await.unwrap();
    assert_eq!(after_crash.events_applied, 2 * batch_events_max as u64, "two batches committed, the third rolled back");
    assert_eq!(after_crash.next_index, after_crash.events_applied);

    // Crash 2: a slow sink aborted wherever it is (between batches, or inside one).
    let slow = {
        let (log, url, schema, topic) = (log.clone(), database_url.clone(), schema.clone(), config.topic.clone());
        tokio::spawn(async move {
            let mut projection = Projection::connect(&url, &schema, &topic).await.unwrap();
            let slow: ledger_projection::BeforeCommit = Arc::new(|_| std::thread::sleep(Duration::from_millis(40)));
            projection
                .run(log, RunOptions { batch_events_max, before_commit: Some(slow), ..RunOptions::default() })
                .await
        })
    };
    let start = Instant::now();
    while probe.stored_position().await.unwrap().events_applied < 4 * batch_events_max as u64 {
        assert!(start.elapsed() < Duration::from_secs(30), "the second sink made no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slow.abort();
    assert!(slow.await.unwrap_err().is_cancelled());
    let after_abort = probe.stored_position().await.unwrap();
    assert!(after_abort.events_applied < entries, "the abort came before the end ({after_abort:?} of {entries})");

    // Restart: the sink resumes from the stored position and finishes.
    let mut projection = Projection::connect(&database_url, &schema, &config.topic).await.unwrap();
    let stats = projection.run(log.clone(), RunOptions { batch_events_max, ..RunOptions::default() }).await.unwrap();
    println!("crash left {after_crash:?}; abort left {after_abort:?}; restart applied {stats:?}");
    assert_eq!(stats.position.next_index, entries);
    assert_eq!(stats.position.events_applied, entries, "every ledger event applied exactly once");
    let got = projection.balances().await.unwrap();
    assert_eq!(got, want, "projected balances equal the ledger's");
    let opened: i64 = (0..8).map(|a| 500 + a * 100).sum();
    assert_eq!(got.values().sum::<i64>(), opened, "money is conserved");

    // Running again applies nothing.
    let again = projection.run(log, RunOptions::default()).await.unwrap();
    assert_eq!(again.events, 0);
    assert_eq!(projection.balances().await.unwrap(), want);

    for (shutdown, task) in replicas {
        shutdown.request();
        task.await.unwrap().expect("replica ran without error");
    }
}
