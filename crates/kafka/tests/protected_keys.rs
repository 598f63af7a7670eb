//! Protected keys through the log API and the replica driver, on the in-memory log: a
//! forged event on a DET's protected output key is hidden from subscribers and stops no
//! replica; a writer without a key the table lists is told so before it writes.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::event::{Event, EventSourceKey};
use competing_transformers::replica::ReplicaConfig;
use competing_transformers::signature::{Signer, Trust};
use competing_transformers::testing::Echo;
use competing_transformers::MemoryLog;
use competing_transformers_kafka::{run_replica, LogError, Pipeline, ReplicaStatus, ShutdownTrigger, WriteOutcome};
use tokio::sync::watch;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn text(k: &EventSourceKey, payload: &[u8]) -> Event {
    Event::new(k.clone(), None, None, 0, "text/plain", payload.to_vec())
}

/// A log whose `echo` streams only `writer` may write, as seen through a handle that signs
/// with `signer`.
fn log_protected_by(writer: &Signer, signer: Option<Signer>) -> MemoryLog {
    let output = key("echo");
    let trust =
        Trust::new().protect(&output, [writer.public_key()]).protect(&output.dead_letters(), [writer.public_key()]);
    MemoryLog::new().with_trust(trust).signed_by(signer)
}

#[tokio::test]
async fn a_writer_without_the_key_is_refused_before_it_writes() {
    let writer = Signer::from_secret(&[1; 32]);
    let log = log_protected_by(&writer, Some(Signer::from_secret(&[2; 32])));
    let pipeline = Pipeline::new(Arc::new(log.clone()), "source");
    let refused = pipeline.exists_or_write(&key("echo"), 0, vec![text(&key("echo"), b"x")]).await.unwrap_err();
    assert!(matches!(&refused, LogError::Unsigned { key, signer: Some(_) } if key == "echo"), "{refused:?}");
    assert!(refused.needs_operator());
    assert!(refused.to_string().contains("protected"), "{refused}");
    assert_eq!(log.end(), 0, "nothing written");
    // Unprotected keys are written as before, signed or not.
    assert!(pipeline.write(&key("in"), vec![text(&key("in"), b"a")]).await.is_ok());
    let signed = Pipeline::new(Arc::new(log.signed_by(Some(writer))), "replica");
    let outcome = signed.exists_or_write(&key("echo"), 0, vec![text(&key("echo"), b"x")]).await.unwrap();
    assert!(matches!(outcome, WriteOutcome::Written { index: 0, .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_forged_output_stops_no_replica_and_reaches_no_subscriber() {
    let writer = Signer::from_secret(&[1; 32]);
    let log = log_protected_by(&writer, None);
    let output = key("echo");
    log.publish(&key("in"), vec![text(&key("in"), b"a")]);
    // The forger writes index 0 of the output first, unsigned and signed with its own key.
    let forged = Event::new(output.clone(), Some(0), None, 0, "text/plain", b"forged".to_vec());
    log.append_now(&competing_transformers::Record {
        source: output.clone(),
        writer: "x".into(),
        events: vec![forged.clone()],
    })
    .unwrap();
    log.signed_by(Some(Signer::from_secret(&[9; 32])))
        .append_now(&competing_transformers::Record {
            source: output.clone(),
            writer: "x".into(),
            events: vec![forged],
        })
        .unwrap();
    let trigger = ShutdownTrigger::new();
    let (status, mut watch) = watch::channel(ReplicaStatus::default());
    let replica = tokio::spawn(run_replica(
        Arc::new(log.signed_by(Some(writer))),
        Echo::default(),
        ReplicaConfig::new("r"),
        trigger.subscribe(),
        status,
    ));
    let pipeline = Pipeline::new(Arc::new(log.clone()), "reader");
    let mut stream = pipeline.stream_events(std::slice::from_ref(&output), 0).await.unwrap();
    let first = stream.next_within(Duration::from_secs(10)).await.unwrap().expect("the replica's output");
    assert_eq!((first.event.index, first.event.payload.as_slice()), (Some(0), &b"a"[..]));
    assert_eq!(first.writer, "r");
    let _ = watch.wait_for(|status| status.stats.races_won > 0).await;
    trigger.request();
    let status = replica.await.unwrap().expect("the replica ran without stopping");
    assert_eq!(status.stats.divergences, 0);
    let rule = pipeline.snapshot().await.unwrap();
    assert_eq!((rule.count(&output), rule.stats(&output).unauthorized), (1, 2));
}
