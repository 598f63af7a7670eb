//! A dead letter is a function of the input and the DET alone: replicas of one DET that differ
//! in their `version()` or in the text their libraries give for an error write the same
//! digested dead letter, and that text goes to the record's advisory detail header.

use competing_transformers::codec::{self, CodecError, LibraryError};
use competing_transformers::dead_letter::{DeadLetter, Detail, Reason, PANIC_MESSAGE};
use competing_transformers::replica::{drive, run_to_end, ReplicaConfig, ReplicaCore};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, Transform, TransformError};
use proptest::prelude::*;

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Reads `{"n": u64}` from `in` with serde_json; `n` 13 is the DET's own error, `n` 0 a
/// panic, a payload that is not such JSON a codec error. `library` stands for the text another
/// build of a library would give: it replaces serde_json's as the codec error's source.
struct Counter {
    version: u32,
    library: Option<&'static str>,
}

#[derive(Debug, serde::Deserialize)]
struct Count {
    n: u64,
}

impl Transform for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![key("in")]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let count: Count = match (input.json::<Count>(), self.library) {
            (Ok(count), _) => count,
            (Err(TransformError::Codec(error)), Some(text)) => {
                let message = error.message().to_string();
                return Err(CodecError::Decode { message, source: Some(LibraryError::reply(text)) }.into());
            }
            (Err(error), _) => return Err(error),
        };
        match count.n {
            0 => panic!("{} divided by zero in v{}", input.index, self.version),
            13 => return Err(TransformError::Failed(format!("{} is unlucky", count.n))),
            n => out.emit_json(&serde_json::json!({ "n": n })),
        }
        Ok(())
    }
}

fn publish(log: &MemoryLog, payloads: &[&[u8]]) {
    for payload in payloads {
        log.publish(&key("in"), vec![Event::new(key("in"), None, None, 0, "application/json", payload.to_vec())]);
    }
}

/// The canonical dead letters of `counter` as bytes, with their details.
fn dead_letters(log: &MemoryLog) -> Vec<(Vec<u8>, Option<Detail>)> {
    let records = log.records();
    log.canonical_with_offsets(&key("counter.dead-letters"))
        .into_iter()
        .map(|(offset, event)| {
            let detail = Detail::find(&records[offset as usize].details, event.index.unwrap());
            (event.payload, detail)
        })
        .collect()
}

const INPUTS: [&[u8]; 5] = [br#"{"n":1}"#, br#"{"n":13}"#, b"{not json", br#"{"n":0}"#, br#"{"n":2}"#];

#[test]
fn replicas_of_other_versions_and_library_texts_write_the_same_dead_letters() {
    let alone = |transform: Counter| {
        let log = MemoryLog::new();
        publish(&log, &INPUTS);
        run_to_end(&log, transform);
        dead_letters(&log)
    };
    let old = alone(Counter { version: 1, library: None });
    let new = alone(Counter { version: 2, library: Some("expected ident at line 1 column 2 (another build)") });
    let bytes = |letters: &[(Vec<u8>, Option<Detail>)]| letters.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>();
    assert_eq!(old.len(), 3);
    assert_eq!(bytes(&old), bytes(&new), "byte for byte, whatever the version and the library's text");

    let letters: Vec<DeadLetter> = old.iter().map(|(b, _)| serde_json::from_slice(b).unwrap()).collect();
    let reasons: Vec<_> = letters.iter().map(|l| (l.reason, l.message.as_str())).collect();
    assert_eq!(
        reasons,
        [
            (Reason::Transform, "13 is unlucky"),
            (Reason::Decode, codec::NOT_JSON_FOR_THIS_INPUT),
            (Reason::Panic, PANIC_MESSAGE)
        ]
    );
    let serde_text = serde_json::from_slice::<Count>(b"{not json").unwrap_err().to_string();
    for (payload, _) in &old {
        let text = String::from_utf8_lossy(payload);
        assert!(!text.contains(&serde_text) && !text.contains("line 1") && !text.contains("version"), "{text}");
    }

    // What differs is in the details, outside the digest.
    let details =
        |letters: &[(Vec<u8>, Option<Detail>)]| letters.iter().map(|(_, d)| d.clone().unwrap()).collect::<Vec<_>>();
    let (old, new) = (details(&old), details(&new));
    assert_eq!(old[0], Detail { index: 0, version: 1, error: None });
    assert_eq!(old[1], Detail { index: 1, version: 1, error: Some(serde_text) });
    assert_eq!(new[1].error.as_deref(), Some("expected ident at line 1 column 2 (another build)"));
    assert_eq!(
        (old[2].error.as_deref(), new[2].error.as_deref()),
        (Some("3 divided by zero in v1"), Some("3 divided by zero in v2"))
    );
}

#[test]
fn a_replica_of_a_new_version_replaying_an_old_replicas_dead_letters_does_not_diverge() {
    let log = MemoryLog::new();
    publish(&log, &INPUTS);
    run_to_end(&log, Counter { version: 1, library: None });
    // A replica of a newer build with other library text starts live on the same log: it
    // computes every dead letter again and compares it with the canonical one.
    let newer = Counter { version: 7, library: Some("a different sentence") };
    let mut replica = ReplicaCore::new(newer, ReplicaConfig::new("newer"), 0);
    drive(&mut replica, &log);
    assert!(replica.divergence().is_none(), "{:?}", replica.divergence());
    assert_eq!(replica.stats().dead_letters, 3);
    assert_eq!(replica.stats().races_won, 0, "everything it computed was canonical already");
}

proptest! {
    /// Whatever the payload, two replicas whose versions and library texts differ write the
    /// same dead letter, and its bytes never hold the library's text.
    #[test]
    fn any_undecodable_payload_gives_one_dead_letter_whatever_the_build(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        versions in (0u32..100, 100u32..200),
    ) {
        prop_assume!(serde_json::from_slice::<Count>(&payload).is_err());
        let run = |version, library| {
            let log = MemoryLog::new();
            publish(&log, &[&payload]);
            run_to_end(&log, Counter { version, library });
            dead_letters(&log)
        };
        let (a, b) = (run(versions.0, None), run(versions.1, Some("text of another build")));
        prop_assert_eq!(a.len(), 1);
        prop_assert_eq!(&a[0].0, &b[0].0);
        let serde_text = serde_json::from_slice::<Count>(&payload).unwrap_err().to_string();
        prop_assert!(!String::from_utf8_lossy(&a[0].0).contains(&serde_text));
        prop_assert_eq!(a[0].1.as_ref().and_then(|d| d.error.clone()), Some(serde_text));
    }
}
