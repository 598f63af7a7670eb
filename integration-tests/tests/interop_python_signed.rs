//! Signed records and protected keys read the same in another language: interop/reader.py,
//! given a launcher config's `[[trust.protected]]`, reaches the Rust reader's verdicts on a
//! log holding records signed by each of a key's two writers (a rotation), unsigned and
//! forged ones at the next index, one signed then changed, one claiming a writer's public key
//! it cannot sign for, a record mixing protected and unprotected events, signed records on
//! keys nobody protects, and a signed value cut short (malformed).

use std::time::Duration;

use competing_transformers::record::Record;
use competing_transformers::signature::{Signer, Trust, SEAL_BYTES};
use competing_transformers::{CanonicalRule, Event, EventSourceKey};
use integration_tests::{fetch_all, fresh_log_config, python_reader, raw_producer, rust_verdicts, unique_topic};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn event(k: &str, index: Option<u64>, payload: &str) -> Event {
    let event = Event::new(key(k), None, None, 0, "text/plain", payload.as_bytes().to_vec());
    match index {
        Some(index) => event.with_index(index),
        None => event,
    }
}

/// A record of `events` under the first one's key, signed by `signer` if given.
fn value(events: Vec<Event>, signer: Option<&Signer>) -> (Vec<u8>, Vec<u8>) {
    let record = Record { source: events[0].key.clone(), writer: "w".into(), events };
    let encoded = record.encode_signed(false, signer).unwrap();
    (encoded.key, encoded.value)
}

/// The log's records, as (Kafka key, value), in order.
fn records(old: &Signer, new: &Signer, forger: &Signer) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut tampered = value(vec![event("det", Some(2), "tampered")], Some(new));
    *tampered.1.last_mut().unwrap() ^= 1;
    // The forger's record, its seal's public key replaced by a writer's: its signature is
    // the forger's, so it verifies under no listed key.
    let mut claimed = value(vec![event("det", Some(2), "claimed")], Some(forger));
    let at = claimed.1.len() - SEAL_BYTES;
    claimed.1[at..at + 32].copy_from_slice(new.public_key().as_bytes());
    let mut cut = value(vec![event("det", Some(2), "cut")], Some(new));
    cut.1.truncate(40);
    vec![
        value(vec![event("det", Some(0), "forged")], None),
        value(vec![event("det", Some(0), "by old")], Some(old)),
        value(vec![event("det", Some(1), "forged")], Some(forger)),
        value(vec![event("det", Some(1), "by new")], Some(new)),
        tampered,
        claimed,
        cut,
        // Mixed: the unprotected event counts, the protected one does not.
        value(vec![event("orders", None, "o1"), event("det.dead-letters", Some(0), "forged")], None),
        value(vec![event("det.dead-letters", Some(0), "letter")], Some(old)),
        // Signed by anyone on a key nobody protects: read as if unsigned.
        value(vec![event("orders", None, "o2")], Some(forger)),
        value(vec![event("det", Some(2), "by old again")], Some(old)),
        // A copy of a writer's signed record, appended again: a duplicate.
        value(vec![event("det", Some(0), "by old")], Some(old)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_reader_applies_the_trust_table_as_the_rust_reader_does() {
    let config = fresh_log_config("interop-signed").await;
    let (old, new, forger) =
        (Signer::from_secret(&[1; 32]), Signer::from_secret(&[2; 32]), Signer::from_secret(&[3; 32]));
    let producer = raw_producer(&[]).await;
    for (kafka_key, value) in records(&old, &new, &forger) {
        let record = FutureRecord::<[u8], [u8]>::to(&config.topic).partition(0).key(&kafka_key).payload(&value);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    let writers = [old.public_key(), new.public_key()];
    let trust = Trust::new().protect(&key("det"), writers).protect(&key("det.dead-letters"), writers);
    let dir = std::env::temp_dir().join(unique_topic("interop-signed"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("launcher.toml");
    std::fs::write(
        &path,
        format!(
            "[[trust.protected]]\nkeys = [\"det\", \"det.dead-letters\"]\npublic_keys = [\"{}\", \"{}\"]\n",
            old.public_key(),
            new.public_key()
        ),
    )
    .unwrap();

    let rust = rust_verdicts(&fetch_all(&config).await, &mut CanonicalRule::default().with_trust(trust.clone()));
    assert_eq!(rust["malformed"], 1, "the signed value cut short");
    assert_eq!(
        rust["keys"]["det"],
        json!({"canonical": 3, "duplicates": 1, "divergent": 0, "rejected": 0, "unauthorized": 4})
    );
    assert_eq!(rust["keys"]["det.dead-letters"]["unauthorized"], 1);
    assert_eq!(rust["keys"]["orders"]["canonical"], 2);
    let path = path.display().to_string();
    let python: Value =
        serde_json::from_str(&python_reader(&["--trust", &path, &config.bootstrap_servers, &config.topic])).unwrap();
    assert_eq!(python, rust, "Python and Rust verdicts under the trust table");
    std::fs::remove_dir_all(&dir).unwrap();
}
