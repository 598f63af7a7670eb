//! Who writes a DET's streams: its replicas, and no one else.
//!
//! A DET's output key `<name>` and its dead-letter key `<name>.dead-letters` take an index for
//! every group its replicas compute. An event another writer puts there takes an index the
//! replicas need: it came first, so it is canonical, their own group differs from it, and
//! every replica stops as diverged (at every start too, since a replica replays the log).
//! Kafka cannot refuse such a write (its ACLs are per topic), so the launcher's own tools
//! refuse it ([`Owners::refuse`]), and its reports tell such a write from a transform that is
//! not deterministic ([`stop_clause`], [`ForeignWrite`] in `status`).
//!
//! The defence is to protect the DET's keys (`[[trust.protected]]`, docs/DESIGN.md
//! "Authenticated writers"): an event there counts only in a record its replicas signed, so a
//! foreign write is unauthorized to every reader and stops nothing. [`check_signing`] makes
//! sure the replicas `run` starts can sign for the keys they write.

use std::fmt;

use competing_transformers::event::{EventSourceKey, Offset};
use competing_transformers::signature::{PublicKey, Trust};
use competing_transformers_kafka::schema_decisions::{RESERVED_PREFIX, SCHEMA_DECISIONS_KEY};

use crate::config::Config;
use crate::reading::ReadDeadLetter;
use crate::registry::Registry;
use crate::{Error, StopReason, StoppedReplica};

/// Where an operator reads what to do after a foreign write on a DET's stream.
pub const WAY_BACK: &str = "see docs/DESIGN.md 'A way back'";
/// How to have foreign writes on a DET's streams ignored from now on.
pub const PROTECT: &str =
    "protect the DET's keys with [[trust.protected]] so that every reader ignores such writes (docs/DESIGN.md 'Authenticated writers')";

/// Refuses to run replicas of `transformers` that could not sign for their protected keys:
/// their records would be unauthorized to every reader, so none of their groups would ever
/// become canonical. The keys a DET writes are `<name>` and `<name>.dead-letters`.
pub fn check_signing<'a>(
    trust: &Trust,
    signer: Option<PublicKey>,
    transformers: impl IntoIterator<Item = &'a str>,
) -> Result<(), Error> {
    for name in transformers {
        let Ok(output) = EventSourceKey::new(name) else { continue };
        for key in [output.clone(), output.dead_letters()] {
            if trust.writers(key.as_str()).is_none() || signer.is_some_and(|signer| trust.allows(key.as_str(), &signer))
            {
                continue;
            }
            let signs = match signer {
                Some(signer) => format!("its signing key's public key {signer} is not listed for it"),
                None => "this launcher has no signing key".to_string(),
            };
            return Err(Error::Usage(format!(
                "cannot run `{name}`: `{key}` is protected ([[trust.protected]]) and {signs}, so every reader would ignore its replicas' writes; pass --signing-key-file (or set TRANSFORMER_SIGNING_KEY_FILE, or [signing] key_file) with a key whose public key the table lists for `{key}`"
            )));
        }
    }
    Ok(())
}

/// One DET a launcher knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Det {
    /// The name its replicas run under (`[[transformer]] name`, part of their ids).
    pub name: String,
    /// Its output key: the transform's own name.
    pub output: EventSourceKey,
    /// The keys it reads, when the launcher registers it (empty otherwise).
    pub inputs: Vec<EventSourceKey>,
}

/// Which of a DET's streams a key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// `<name>`.
    Output,
    /// `<name>.dead-letters`.
    DeadLetters,
}

impl Det {
    /// Which of this DET's streams `key` is, if any.
    pub fn stream(&self, key: &EventSourceKey) -> Option<Stream> {
        if *key == self.output {
            Some(Stream::Output)
        } else if *key == self.output.dead_letters() {
            Some(Stream::DeadLetters)
        } else {
            None
        }
    }

    /// Whether `writer` has the id of one of this DET's replicas, `<prefix>-<name>-<n>`.
    /// Anyone may pick such an id: `status` also asks that each event name its cause.
    pub fn looks_like_its_replica(&self, writer: &str) -> bool {
        looks_like_replica(writer, &self.name) || looks_like_replica(writer, self.output.as_str())
    }
}

/// Whether `writer` has the shape of a replica id of the DET `det`: `<prefix>-<det>-<n>`, with
/// a non-empty prefix and `n` from 1 (see `supervise`).
pub fn looks_like_replica(writer: &str, det: &str) -> bool {
    let Some((stem, number)) = writer.rsplit_once('-') else { return false };
    let numbered = !number.is_empty() && !number.starts_with('0') && number.bytes().all(|b| b.is_ascii_digit());
    let prefix = stem.strip_suffix(det).and_then(|rest| rest.strip_suffix('-'));
    numbered && prefix.is_some_and(|prefix| !prefix.is_empty())
}

/// The launcher tools that write a key an operator names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `publish --key`.
    Publish,
    /// `dead-letters redrive --to`.
    Redrive,
}

/// The DETs whose streams only their replicas write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    dets: Vec<Det>,
}

impl Owners {
    /// Knows no DET.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the DET `name` writing `output`, reading `inputs`.
    pub fn with(mut self, name: &str, output: EventSourceKey, inputs: Vec<EventSourceKey>) -> Self {
        if !self.dets.iter().any(|det| det.output == output) {
            self.dets.push(Det { name: name.to_string(), output, inputs });
        }
        self
    }

    /// Every DET `registry` registers, and every `[[transformer]]` of `config` (whose output
    /// key is its name, by convention, when this launcher does not register it).
    pub fn known(registry: &Registry, config: &Config) -> Self {
        let mut owners = Self::new();
        for (name, output, inputs) in registry.streams() {
            owners = owners.with(name, output, inputs);
        }
        for entry in &config.transformers {
            if let Ok(output) = EventSourceKey::new(entry.name.as_str()) {
                owners = owners.with(&entry.name, output, Vec::new());
            }
        }
        owners
    }

    /// The DETs, in the order they were added.
    pub fn dets(&self) -> &[Det] {
        &self.dets
    }

    /// The DET one of whose streams `key` is, and which one.
    pub fn owner_of(&self, key: &EventSourceKey) -> Option<(&Det, Stream)> {
        self.dets.iter().find_map(|det| det.stream(key).map(|stream| (det, stream)))
    }

    /// Refuses to let `tool` write `key` if it is a DET's stream, saying why and where to
    /// write instead.
    pub fn refuse(&self, key: &EventSourceKey, tool: Tool) -> Result<(), Error> {
        let (verb, fix) = match tool {
            Tool::Publish => ("publish under", "publish to the DET's input key instead"),
            Tool::Redrive => ("redrive to", "redrive to the DET's input key with --to instead"),
        };
        if key.as_str().starts_with(RESERVED_PREFIX) {
            return Err(Error::Usage(format!(
                "refusing to {verb} `{key}`: names starting with `{RESERVED_PREFIX}` are the framework's own (`{SCHEMA_DECISIONS_KEY}` holds the log's Avro schema decisions); choose another key"
            )));
        }
        let Some((det, stream)) = self.owner_of(key) else { return Ok(()) };
        Err(Error::Usage(format!(
            "refusing to {verb} `{key}`: it is {}, which only the DET's replicas write (an event written there by anyone else becomes canonical and stops every replica as diverged); {fix}{}",
            describe(det, stream),
            inputs_of(det)
        )))
    }

    /// Refuses a redrive without `--to` of the dead letters chosen by `index` (all if `None`)
    /// whose event came from a DET's stream: it would go back there.
    pub fn refuse_redrive_home(&self, letters: &[ReadDeadLetter], index: Option<u64>) -> Result<(), Error> {
        let chosen = letters.iter().filter(|(_, i, _)| index.is_none_or(|wanted| *i == wanted));
        for (_, i, letter) in chosen {
            let Ok(letter) = letter else { continue };
            let Ok(key) = EventSourceKey::new(letter.input.key.as_str()) else { continue };
            if let Some((det, stream)) = self.owner_of(&key) {
                return Err(Error::Usage(format!(
                    "refusing to redrive dead letter {i} to its input key `{key}`: it is {}, which only the DET's replicas write (an event written there by anyone else becomes canonical and stops every replica as diverged); pass --to with a key the fixed transformer reads",
                    describe(det, stream)
                )));
            }
        }
        Ok(())
    }
}

fn describe(det: &Det, stream: Stream) -> String {
    match stream {
        Stream::Output => format!("the output key of the DET {}", det.name),
        Stream::DeadLetters => format!("the dead-letter key of the DET {}", det.name),
    }
}

fn inputs_of(det: &Det) -> String {
    if det.inputs.is_empty() {
        return String::new();
    }
    let inputs: Vec<String> = det.inputs.iter().map(|key| format!("`{key}`")).collect();
    format!(" ({} reads {})", det.name, inputs.join(", "))
}

/// The DET a key belongs to, by the name alone: `<name>` or `<name>.dead-letters`.
fn det_of_key(key: &EventSourceKey) -> &str {
    key.as_str().strip_suffix(".dead-letters").unwrap_or(key.as_str())
}

/// What follows a stopped replica's reason in the launcher's error: for a divergence, whether
/// the canonical copy's writer is one of the DET's replicas or a foreign writer, which is no
/// fault of the transform. `run` holds the replicas that stopped with it.
pub(crate) fn stop_clause(replica: &StoppedReplica, run: &[StoppedReplica]) -> String {
    let StopReason::Diverged(divergence) = &replica.reason else { return String::new() };
    let det = det_of_key(&divergence.key);
    let offset = divergence.canonical_offset;
    match &divergence.canonical_writer {
        None => format!(
            "; `status` shows who wrote the canonical copy at offset {offset}: a writer that is not a replica of {det} means a foreign write on the DET's stream, not a fault of the transform ({WAY_BACK})"
        ),
        Some(writer) if run.iter().any(|r| r.replica_id == *writer) || looks_like_replica(writer, det) => {
            format!("; the canonical copy at offset {offset} was written by `{writer}`, which looks like a replica of {det}")
        }
        Some(writer) => format!(
            "; the canonical copy at offset {offset} was written by `{writer}`, which is not a replica of {det}: a foreign write on the DET's stream, not a fault of the transform; {WAY_BACK}; {PROTECT}"
        ),
    }
}

/// Why a canonical event on a DET's stream is taken for a foreign write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// Its writer's id is not one of the DET's replicas'.
    NotAReplica,
    /// Its writer has a replica's id, but the event names no cause: a replica's outputs and
    /// dead letters always name the input they came from.
    NoCause,
}

/// Canonical events on a DET's stream from a writer that is not one of its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignWrite {
    /// The DET.
    pub det: String,
    /// Its stream.
    pub key: EventSourceKey,
    /// Who wrote them.
    pub writer: String,
    /// Why they are foreign.
    pub foreign: Foreign,
    /// How many.
    pub events: u64,
    /// The first one's offset.
    pub offset: Offset,
    /// The first one's index.
    pub index: u64,
}

impl fmt::Display for ForeignWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { det, key, writer, events, offset, index, .. } = self;
        let who = match self.foreign {
            Foreign::NotAReplica => format!("`{writer}`, which is not a replica of {det}"),
            Foreign::NoCause => format!("`{writer}` with no cause, which no replica of {det} writes"),
        };
        write!(
            f,
            "`{key}`: FOREIGN WRITE: event {index} at offset {offset} was written by {who} ({events} canonical event(s) of that writer): every replica of {det} stops as diverged when it computes that index; {WAY_BACK}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::dead_letter::{DeadLetter, FailedInput, Reason};
    use competing_transformers::replica::{drive, run_to_end, Divergence, DivergenceKind, ReplicaConfig, ReplicaCore};
    use competing_transformers::testing::Echo;
    use competing_transformers::transform::Transform;
    use competing_transformers::{Event, MemoryLog, Record};

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    fn owners() -> Owners {
        let registry = Registry::new().with("echo", || Echo("echo"));
        let config = Config::parse("[[transformer]]\nname = \"matching-engine\"\n", "launcher.toml").unwrap();
        Owners::known(&registry, &config)
    }

    #[test]
    fn a_registered_or_configured_dets_streams_are_refused_with_the_reason_and_the_fix() {
        let owners = owners();
        for (stream, tool) in [
            ("echo", Tool::Publish),
            ("echo.dead-letters", Tool::Publish),
            ("matching-engine", Tool::Publish),
            ("matching-engine.dead-letters", Tool::Redrive),
            ("echo", Tool::Redrive),
        ] {
            let error = owners.refuse(&key(stream), tool).unwrap_err().to_string();
            assert!(
                error.contains(&format!("`{stream}`")) && error.contains("only the DET's replicas write"),
                "{error}"
            );
            assert!(error.contains("input key"), "{error}");
            assert_eq!(error.lines().count(), 1);
        }
        let error = owners.refuse(&key("echo"), Tool::Publish).unwrap_err().to_string();
        assert!(error.starts_with("refusing to publish under `echo`: it is the output key of the DET echo"), "{error}");
        assert!(error.ends_with("publish to the DET's input key instead (echo reads `in`)"), "{error}");
        let error = owners.refuse(&key("matching-engine.dead-letters"), Tool::Redrive).unwrap_err().to_string();
        assert!(error.contains("the dead-letter key of the DET matching-engine") && error.contains("--to"), "{error}");
        for free in ["in", "orders", "echo.redrives", "echo-v2"] {
            assert!(owners.refuse(&key(free), Tool::Publish).is_ok(), "{free}");
        }
        let error = owners.refuse(&key("ct:schema-ids"), Tool::Publish).unwrap_err().to_string();
        assert!(error.contains("the framework's own"), "{error}");
    }

    #[test]
    fn the_output_key_is_the_transforms_own_name() {
        let registry = Registry::new().with("echo", || Echo("echo-v2"));
        let owners = Owners::known(&registry, &Config::default());
        assert!(owners.refuse(&key("echo-v2"), Tool::Publish).is_err());
        assert!(owners.refuse(&key("echo"), Tool::Publish).is_ok());
        assert!(owners.dets()[0].looks_like_its_replica("host-echo-1"), "replica ids use the registered name");
    }

    #[test]
    fn replica_ids_have_a_prefix_the_dets_name_and_a_number() {
        for replica in ["host-echo-1", "a-b-echo-12", "demo-a-matching-engine-3"] {
            assert!(looks_like_replica(replica, if replica.contains("matching") { "matching-engine" } else { "echo" }));
        }
        for other in [
            "host-publish",
            "host-redrive",
            "echo-1",
            "-echo-1",
            "host-echo-",
            "host-echo-01",
            "host-echo-x",
            "host-echoes-1",
            "host-other-1",
        ] {
            assert!(!looks_like_replica(other, "echo"), "{other}");
        }
    }

    fn stopped(replica_id: &str, writer: Option<&str>) -> StoppedReplica {
        let digest =
            |payload: &[u8]| Event::new(key("echo"), Some(4), Some(3), 0, "text/plain", payload.to_vec()).digest;
        let divergence = Divergence {
            key: key("echo"),
            index: 4,
            ours: digest(b"ours"),
            canonical: digest(b"theirs"),
            canonical_offset: 9,
            canonical_writer: writer.map(str::to_string),
            kind: DivergenceKind::Event,
        };
        StoppedReplica { replica_id: replica_id.into(), reason: StopReason::Diverged(divergence) }
    }

    #[test]
    fn a_divergence_names_a_foreign_writer_as_such() {
        let foreign = stopped("host-echo-1", Some("host-publish"));
        let clause = stop_clause(&foreign, std::slice::from_ref(&foreign));
        assert_eq!(
            clause,
            "; the canonical copy at offset 9 was written by `host-publish`, which is not a replica of echo: a foreign write on the DET's stream, not a fault of the transform; see docs/DESIGN.md 'A way back'; protect the DET's keys with [[trust.protected]] so that every reader ignores such writes (docs/DESIGN.md 'Authenticated writers')"
        );
        let replica = stopped("host-echo-1", Some("other-echo-2"));
        let clause = stop_clause(&replica, std::slice::from_ref(&replica));
        assert!(clause.ends_with("written by `other-echo-2`, which looks like a replica of echo"), "{clause}");
        // A replica of the same run is one, whatever its id looks like.
        let run = [stopped("x-1", Some("x-2")), stopped("x-2", Some("x-1"))];
        assert!(stop_clause(&run[0], &run).contains("looks like a replica of echo"));
        let unknown = stopped("host-echo-1", None);
        let clause = stop_clause(&unknown, std::slice::from_ref(&unknown));
        assert!(clause.starts_with("; `status` shows who wrote the canonical copy at offset 9"), "{clause}");
        assert!(clause.contains("'A way back'"), "{clause}");
    }

    #[test]
    fn the_launchers_error_says_a_foreign_writer_stopped_the_replicas() {
        let error = Error::Diverged {
            replicas: 2,
            stopped: vec![stopped("host-echo-1", Some("host-publish")), stopped("host-echo-2", Some("host-publish"))],
        };
        let sentence = error.to_string();
        assert!(
            sentence.starts_with("2 of 2 replica(s) stopped for good: host-echo-1 diverged: event 4 of `echo`"),
            "{sentence}"
        );
        assert_eq!(
            sentence.matches("which is not a replica of echo: a foreign write on the DET's stream").count(),
            2,
            "{sentence}"
        );
        assert_eq!(sentence.lines().count(), 1);
    }

    fn letter(input_key: &str) -> Result<DeadLetter, String> {
        let input = FailedInput {
            key: input_key.into(),
            index: 0,
            offset: 3,
            effective_time_ms: 0,
            content_type: "text/plain".into(),
            payload_base64: String::new(),
            payload_truncated: false,
            payload_bytes: None,
            payload_sha256: None,
        };
        Ok(DeadLetter {
            transformer: "ledger".into(),
            version: None,
            reason: Reason::Transform,
            message: "no".into(),
            input,
        })
    }

    #[test]
    fn a_redrive_without_to_refuses_to_send_a_dets_event_back_to_its_stream() {
        let owners = owners();
        let letters = [(10, 0, letter("in")), (11, 1, letter("echo")), (12, 2, Err("junk".to_string()))];
        assert!(owners.refuse_redrive_home(&letters, Some(0)).is_ok(), "`in` is an event source's key");
        assert!(owners.refuse_redrive_home(&letters, Some(2)).is_ok(), "an unreadable letter is redrive's to report");
        for chosen in [Some(1), None] {
            let error = owners.refuse_redrive_home(&letters, chosen).unwrap_err().to_string();
            assert!(
                error.starts_with(
                    "refusing to redrive dead letter 1 to its input key `echo`: it is the output key of the DET echo"
                ),
                "{error}"
            );
            assert!(error.ends_with("pass --to with a key the fixed transformer reads"), "{error}");
        }
    }

    fn input(log: &MemoryLog, payload: &[u8]) -> Offset {
        log.publish(&key("in"), vec![Event::new(key("in"), None, None, 0, "text/plain", payload.to_vec())])
    }

    /// Runs replicas `ids` of `transform()` over `log`, one after the other, to the end.
    fn replicas<T: Transform>(log: &MemoryLog, ids: &[&str], transform: impl Fn() -> T) -> Vec<ReplicaCore<T>> {
        let mut cores: Vec<_> =
            ids.iter().map(|id| ReplicaCore::new(transform(), ReplicaConfig::new(*id), 0)).collect();
        for core in &mut cores {
            drive(core, log);
        }
        cores
    }

    /// What an event says, wherever it is: its index, time, content type and payload.
    fn contents(events: Vec<Event>) -> Vec<(Option<u64>, i64, String, Vec<u8>)> {
        events.into_iter().map(|e| (e.index, e.effective_time_ms, e.content_type, e.payload)).collect()
    }

    /// docs/DESIGN.md "A way back": the forged event stays canonical on `echo` for good, so the
    /// same logic under a new name writes a new stream, from the log's start, and readers cut
    /// over to it.
    #[test]
    fn after_a_foreign_write_the_same_logic_under_a_new_name_writes_the_lone_replicas_stream() {
        let log = MemoryLog::new();
        input(&log, b"a");
        replicas(&log, &["host-echo-1", "host-echo-2"], || Echo("echo"));
        let forged = Event::new(key("echo"), Some(1), None, 0, "text/plain", b"forged".to_vec());
        log.append_now(&Record { source: key("echo"), writer: "host-publish".into(), events: vec![forged] }).unwrap();
        input(&log, b"b");
        input(&log, b"c");
        for replica in replicas(&log, &["host-echo-1", "host-echo-2"], || Echo("echo")) {
            let divergence = replica.divergence().expect("a foreign event at the next index stops every replica");
            assert_eq!((divergence.key.as_str(), divergence.index), ("echo", 1));
        }
        assert_eq!(log.canonical(&key("echo")).len(), 2, "the DET wrote nothing after the forged event");

        // The way back: the DET renamed, its replicas replaying the whole log onto `echo-v2`.
        let renamed = replicas(&log, &["host-echo-v2-1", "host-echo-v2-2"], || Echo("echo-v2"));
        assert!(renamed.iter().all(|replica| replica.divergence().is_none() && replica.is_settled()));
        let reference = MemoryLog::new();
        for payload in [b"a", b"b", b"c"] {
            input(&reference, payload);
        }
        run_to_end(&reference, Echo("echo"));
        assert_eq!(contents(log.canonical(&key("echo-v2"))), contents(reference.canonical(&key("echo"))));
        // Once the new name is registered, its streams are refused to tools too.
        let owners = Owners::known(&Registry::new().with("echo-v2", || Echo("echo-v2")), &Config::default());
        assert!(owners.refuse(&key("echo-v2"), Tool::Publish).is_err());
    }

    #[test]
    fn run_refuses_replicas_that_cannot_sign_for_their_protected_keys() {
        use competing_transformers::signature::Signer;
        let (writer, other) = (Signer::from_secret(&[1; 32]), Signer::from_secret(&[2; 32]));
        let trust = Trust::new().protect(&key("echo.dead-letters"), [writer.public_key()]);
        assert!(check_signing(&trust, Some(writer.public_key()), ["echo"]).is_ok());
        assert!(check_signing(&Trust::new(), None, ["echo"]).is_ok());
        let error = check_signing(&trust, None, ["echo"]).unwrap_err().to_string();
        assert!(error.contains("`echo.dead-letters` is protected") && error.contains("no signing key"), "{error}");
        let error = check_signing(&trust, Some(other.public_key()), ["echo"]).unwrap_err().to_string();
        assert!(error.contains(&other.public_key().to_base64()), "{error}");
    }
}
