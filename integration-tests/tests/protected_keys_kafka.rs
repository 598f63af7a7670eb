//! Authenticated writers on the real broker: the ledger's streams are protected (the
//! launcher config's `[[trust.protected]]`, its replicas signing with `[signing] key_file`)
//! and a forger that may write the topic writes their next index before and while the
//! replicas run, unsigned, signed with a key of its own, or signed by the writer's key and
//! then changed. The replicas never stop, and
//! every reader ignores the forged events alike: `tail`'s stream, `status`'s summary, the
//! exporter, the ledger projection (PostgreSQL from `DATABASE_URL`) and `interop/reader.py`,
//! whose verdicts equal the Rust reader's. A reader without the table is fooled, as before.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::record::Record;
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::signature::{Signer, Trust};
use competing_transformers::{CanonicalRule, Event, EventSourceKey};
use competing_transformers_kafka::export::{ExportConfig, ExportRunOptions, Exporter};
use competing_transformers_kafka::ShutdownTrigger;
use competing_transformers_kafka::{run_replica, EventLog, KafkaLog, KafkaLogConfig, Pipeline, ReplicaStatus};
use competing_transformers_launcher::config::{Config, Overrides};
use competing_transformers_launcher::summary::LogSummary;
use integration_tests::{
    fetch_all, fresh_log_config, ledger_reference, python_reader, raw_consumer, raw_producer, rust_verdicts,
    unique_topic, wait_for_count,
};
use ledger::{Ledger, LEDGER_KEY, TRANSFERS_KEY};
use ledger_projection::{Projection, RunOptions};
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use serde_json::{json, Value};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Opens and transfers, one of them malformed (a dead letter).
fn commands() -> Vec<Value> {
    let mut all: Vec<Value> =
        (0..4).map(|a| json!({"type": "open", "account": format!("acct{a}"), "initial": 1000})).collect();
    for t in 0..40u64 {
        all.push(json!({"type": "transfer", "id": format!("t{t}"), "from": format!("acct{}", t % 4), "to": format!("acct{}", (t + 1) % 4), "amount": 10 + t}));
    }
    all.push(json!({"type": "transfer", "id": "broken", "from": "acct1"}));
    all
}

/// A launcher config protecting the ledger's streams by `writer`, its secret in a key file
/// beside it: the replicas' log config (signing) and a reader's (the table only).
fn protected_configs(log: &KafkaLogConfig, writer: &Signer) -> (KafkaLogConfig, KafkaLogConfig, String) {
    let dir = std::env::temp_dir().join(unique_topic("protected-config"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("writer.key"), writer.secret_base64()).unwrap();
    let path = dir.join("launcher.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ntopic = \"{}\"\n\n[[trust.protected]]\nkeys = [\"{LEDGER_KEY}\", \"{LEDGER_KEY}.dead-letters\"]\npublic_keys = [\"{}\"]\n\n[signing]\nkey_file = \"writer.key\"\n",
            log.bootstrap_servers,
            log.topic,
            writer.public_key()
        ),
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    let replicas = config.log_config(&Overrides::default()).unwrap();
    assert!(replicas.signer.is_some() && !replicas.trust.is_empty());
    let reader = KafkaLogConfig { signer: None, ..replicas.clone() };
    (replicas, reader, path.display().to_string())
}

/// Writes a forged event at `index` of `stream` through a client that knows no trust table
/// (so nothing stops it), signed by `signer` if given.
async fn forge(log: &KafkaLogConfig, stream: &EventSourceKey, index: u64, signer: Option<&Signer>) {
    let config = KafkaLogConfig { trust: Trust::default(), signer: signer.cloned(), ..log.clone() };
    let forger = KafkaLog::connect(config).await.unwrap();
    let event = Event::json(stream.clone(), 0, &json!({"forged": true})).with_index(index);
    forger.append(&Record { source: stream.clone(), writer: "forger".into(), events: vec![event] }).await.unwrap();
}

/// Appends a record the writer signed whose signature was then changed in one bit: it
/// claims the writer's key, and no reader may take it for the writer's.
async fn append_tampered(log: &KafkaLogConfig, stream: &EventSourceKey, writer: &Signer) {
    let event = Event::json(stream.clone(), 0, &json!({"forged": "tampered"})).with_index(0);
    let record = Record { source: stream.clone(), writer: "forger".into(), events: vec![event] };
    let mut encoded = record.encode_signed(false, Some(writer)).unwrap();
    *encoded.value.last_mut().unwrap() ^= 1;
    let producer = raw_producer(&[]).await;
    let sent = FutureRecord::<[u8], [u8]>::to(&log.topic).partition(0).key(&encoded.key).payload(&encoded.value);
    producer.send(sent, Duration::from_secs(10)).await.unwrap();
}

/// Every payload exported to `topic`, read until nothing new for 3 s.
async fn exported(topic: &str) -> Vec<Vec<u8>> {
    let consumer = raw_consumer(topic, &[("isolation.level", "read_committed")]).await;
    let mut payloads = Vec::new();
    while let Ok(message) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        payloads.push(message.unwrap().payload().unwrap_or_default().to_vec());
    }
    payloads
}

/// Two ledger replicas signing with the launcher config's key.
async fn start_replicas(
    config: &KafkaLogConfig,
) -> Vec<(ShutdownTrigger, tokio::task::JoinHandle<Result<ReplicaStatus, competing_transformers_kafka::ReplicaError>>)>
{
    let mut replicas = Vec::new();
    for id in ["host-ledger-1", "host-ledger-2"] {
        let shutdown = ShutdownTrigger::new();
        let (status, _) = watch::channel(ReplicaStatus::default());
        let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
        let task = tokio::spawn(run_replica(log, Ledger::new(), ReplicaConfig::new(id), shutdown.subscribe(), status));
        replicas.push((shutdown, task));
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_events_on_a_protected_det_are_ignored_by_every_reader_and_stop_no_replica() {
    let log = fresh_log_config("protected").await;
    let (writer, forger) = (Signer::from_secret(&[7; 32]), Signer::from_secret(&[8; 32]));
    let (replica_config, reader_config, config_path) = protected_configs(&log, &writer);
    let (ledger, dead_letters, transfers) = (key(LEDGER_KEY), key(LEDGER_KEY).dead_letters(), key(TRANSFERS_KEY));
    let commands = commands();
    let (balances, entries) = ledger_reference(&commands);

    // Before any replica runs: the next index of both streams, unsigned and by the forger's key.
    forge(&log, &ledger, 0, None).await;
    forge(&log, &ledger, 0, Some(&forger)).await;
    forge(&log, &dead_letters, 0, None).await;
    append_tampered(&log, &ledger, &writer).await;
    let replicas = start_replicas(&replica_config).await;
    let source = Pipeline::new(Arc::new(KafkaLog::connect(reader_config.clone()).await.unwrap()), "source");
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(reader_config.clone()).await.unwrap()), "reader");
    for (n, chunk) in commands.chunks(5).enumerate() {
        let events = chunk.iter().map(|c| Event::json(transfers.clone(), n as i64, c)).collect();
        source.write(&transfers, events).await.unwrap();
        if n % 3 == 1 {
            // While they run: the ledger's next index, as the forger sees it.
            let next = reader.count(&ledger).await.unwrap();
            forge(&log, &ledger, next, if n % 2 == 0 { None } else { Some(&forger) }).await;
        }
    }
    wait_for_count(&reader, &ledger, entries, Duration::from_secs(60)).await;
    wait_for_count(&reader, &dead_letters, 1, Duration::from_secs(20)).await;
    for (shutdown, task) in replicas {
        shutdown.request();
        let status = task.await.unwrap().expect("a replica ran to its shutdown, never stopped by a forgery");
        assert_eq!(status.stats.divergences, 0, "{}", status.replica_id);
    }

    // `tail`'s stream: the replicas' events only.
    let mut stream = reader.stream_events(&[ledger.clone(), dead_letters.clone()], 0).await.unwrap();
    let events = stream.collect(entries as usize + 1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(events.len() as u64, entries + 1);
    assert!(events.iter().all(|e| e.writer.starts_with("host-ledger-")), "only the replicas' events");
    assert!(!events.iter().any(|e| e.event.payload.windows(6).any(|w| w == b"forged")));

    // `status`: every forged event counted as unauthorized, none canonical.
    let summary = LogSummary::read(reader.log().as_ref()).await.unwrap();
    let forged_events = summary.key(&ledger).unauthorized + summary.key(&dead_letters).unauthorized;
    assert!(forged_events >= 6, "{forged_events} forged events counted");
    assert_eq!(summary.key(&ledger).canonical, entries);
    assert_eq!(summary.key(&ledger).divergent, 0);

    // A reader without the table takes the forger's first event as the ledger's index 0.
    let fooled = Pipeline::new(Arc::new(KafkaLog::connect(log.clone()).await.unwrap()), "fooled");
    let mut fooled_stream = fooled.stream_events(std::slice::from_ref(&ledger), 0).await.unwrap();
    assert_eq!(fooled_stream.collect(1, Duration::from_secs(10)).await.unwrap()[0].writer, "forger");

    // The exporter copies the replicas' events only.
    let target = unique_topic("protected-export");
    let mut exporter =
        Exporter::start(ExportConfig::new(reader_config.clone(), vec![ledger.clone()], &target)).await.unwrap();
    exporter.run(reader.log().clone(), ExportRunOptions::default()).await.unwrap();
    let copied = exported(&target).await;
    assert_eq!(copied.len() as u64, entries);
    assert!(!copied.iter().any(|payload| payload.windows(6).any(|w| w == b"forged")));

    // interop/reader.py, given the same launcher config, reaches the same verdicts.
    let records = fetch_all(&log).await;
    let rust = rust_verdicts(&records, &mut CanonicalRule::default().with_trust(reader_config.trust.clone()));
    let python: Value =
        serde_json::from_str(&python_reader(&["--trust", &config_path, &log.bootstrap_servers, &log.topic])).unwrap();
    assert_eq!(python, rust, "Python and Rust verdicts under the trust table");
    assert_eq!(rust["keys"][LEDGER_KEY]["unauthorized"], summary.key(&ledger).unauthorized);

    // The ledger projection's balances are the ledger's, untouched by the forgeries.
    let database_url = std::env::var("DATABASE_URL").expect("DATABASE_URL: run with scripts/test.sh");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut projection = Projection::connect(&database_url, &format!("protected_{nanos}"), &log.topic).await.unwrap();
    projection.run(reader.log().clone(), RunOptions::default()).await.unwrap();
    assert_eq!(projection.balances().await.unwrap(), balances);
    println!("protected keys: {forged_events} forged events ignored by the replicas, tail, status, the exporter, the projection and reader.py");
}
