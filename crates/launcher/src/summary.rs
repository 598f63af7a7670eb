//! What the whole log says: verdicts per key and who won the races, for `status` and the demo;
//! and whether anyone but a DET's replicas wrote its streams.
//!
//! [`LogSummary::apply`] is pure (records in, tallies out); [`LogSummary::read`] feeds it the
//! log once, up to the end seen when it starts. [`LogSummary::read_from`] starts at a stored
//! position instead (a truncated log: `reading::start_for`): canonical counts are then the
//! whole log's, the other tallies only what came since, and keys the start holds no count of
//! are not summarised, only named.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use competing_transformers::canonical::{CanonicalRule, KeyStats, Verdict};
use competing_transformers::event::{EventSourceKey, Offset};
use competing_transformers::record::{FetchedRecord, RecordView};
use competing_transformers::signature::Trust;
use competing_transformers_kafka::{EventLog, LogError, Resume};

use crate::ownership::{Foreign, ForeignWrite, Owners};

/// How long one fetch waits while reading the log to its end.
const FETCH_WAIT: Duration = Duration::from_millis(200);
/// Most divergent copies kept per key, to show where they are; all are counted.
pub const DIVERGENT_COPIES_KEPT_MAX: usize = 10;
/// Most keys named as not summarised (no count known at the start); more are counted.
pub const UNSUMMARISED_KEPT_MAX: usize = 20;

/// Where an event sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// Its record's offset.
    pub offset: Offset,
    /// Its index on its key.
    pub index: u64,
}

/// A copy of an event whose digest differs from the canonical one's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DivergentCopy {
    /// Where the copy is.
    pub at: Place,
    /// Who wrote it.
    pub writer: String,
    /// Where the canonical event at its index is.
    pub canonical_offset: Offset,
}

/// One writer's events on one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterTally {
    /// Its copies that became canonical: races won (or plain writes).
    pub won: u64,
    /// Its copies that arrived second: races lost.
    pub lost: u64,
    /// Its copies with a digest different from the canonical one.
    pub divergent: u64,
    /// Its copies whose index was ahead of the count.
    pub rejected: u64,
    /// Its events on a protected key, in records not signed by one of the key's writers.
    pub unauthorized: u64,
    /// Its first canonical event.
    pub first_won: Option<Place>,
    /// Its canonical events that name no cause (event sources' events; never a replica's).
    pub won_uncaused: u64,
    /// The first of those.
    pub first_won_uncaused: Option<Place>,
}

/// The canonical rule over the whole log (or from a start), plus per writer tallies.
#[derive(Clone, Debug, Default)]
pub struct LogSummary {
    rule: CanonicalRule,
    start: Resume,
    writers: BTreeMap<(EventSourceKey, String), WriterTally>,
    divergent_copies: BTreeMap<EventSourceKey, Vec<DivergentCopy>>,
    /// Keys with events read whose count the start does not know (the first few).
    unsummarised: BTreeSet<String>,
    unsummarised_more: bool,
    records: u64,
}

impl LogSummary {
    /// A summary of the records from `start` on, applying the log's trust table (see
    /// [`CanonicalRule::with_trust`]).
    pub fn starting_at(start: Resume, trust: Trust) -> Self {
        Self { rule: start.rule().with_trust(trust), start, ..Self::default() }
    }

    /// Applies the rule to one record (in offset order) and tallies its events by writer.
    pub fn apply(&mut self, fetched: &FetchedRecord) {
        self.records += 1;
        let offset = fetched.offset;
        let decoded = RecordView::parse_fetched(fetched);
        let start = &self.start;
        let Ok(verdicts) = self.rule.apply_view_where(offset, decoded.as_ref(), |k| start.follows(k, offset)) else {
            return;
        };
        let record = decoded.expect("the rule judged it, so it decoded");
        for (event, verdict) in record.events.iter().zip(verdicts) {
            let Some(verdict) = verdict else {
                self.not_summarised(event.key);
                continue;
            };
            let key = EventSourceKey::checked(event.key);
            let tally = self.writers.entry((key.clone(), record.writer.to_string())).or_default();
            match verdict {
                Verdict::Canonical { index } => {
                    tally.won += 1;
                    tally.first_won.get_or_insert(Place { offset, index });
                    if event.cause.is_none() {
                        tally.won_uncaused += 1;
                        tally.first_won_uncaused.get_or_insert(Place { offset, index });
                    }
                }
                Verdict::Duplicate { .. } => tally.lost += 1,
                Verdict::Divergent { index, winner } => {
                    tally.divergent += 1;
                    let copies = self.divergent_copies.entry(key).or_default();
                    if copies.len() < DIVERGENT_COPIES_KEPT_MAX {
                        let at = Place { offset, index };
                        copies.push(DivergentCopy { at, writer: record.writer.to_string(), canonical_offset: winner });
                    }
                }
                Verdict::Rejected { .. } => tally.rejected += 1,
                Verdict::Unauthorized { .. } => tally.unauthorized += 1,
            }
        }
    }

    /// Notes `key`, whose count the start does not know (before its first offset, it is
    /// merely not yet followed).
    fn not_summarised(&mut self, key: &str) {
        if self.start.known(&EventSourceKey::checked(key)).is_some() || self.unsummarised.contains(key) {
            return;
        }
        if self.unsummarised.len() < UNSUMMARISED_KEPT_MAX {
            self.unsummarised.insert(key.to_string());
        } else {
            self.unsummarised_more = true;
        }
    }

    /// Reads `log` from its start to the end seen now.
    pub async fn read<L: EventLog>(log: &L) -> Result<Self, LogError> {
        Self::read_from(log, Resume::origin()).await
    }

    /// Reads `log` from `start` to the end seen now.
    pub async fn read_from<L: EventLog>(log: &L, start: Resume) -> Result<Self, LogError> {
        let end = log.end_offset().await?;
        let mut cursor = log.cursor(start.position()).await?;
        let mut summary = Self::starting_at(start, log.trust());
        while cursor.position() < end {
            for fetched in cursor.next_batch(FETCH_WAIT).await? {
                summary.apply(&fetched);
            }
        }
        Ok(summary)
    }

    /// Every key with its verdict counts, sorted by key.
    pub fn keys(&self) -> Vec<(EventSourceKey, KeyStats)> {
        self.rule.all_stats()
    }

    /// The verdict counts of `key`.
    pub fn key(&self, key: &EventSourceKey) -> KeyStats {
        self.rule.stats(key)
    }

    /// The writers of `key`, most races won first.
    pub fn writers(&self, key: &EventSourceKey) -> Vec<(String, WriterTally)> {
        let mut writers: Vec<(String, WriterTally)> = self
            .writers
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, writer), tally)| (writer.clone(), *tally))
            .collect();
        writers.sort_by(|a, b| b.1.won.cmp(&a.1.won).then_with(|| a.0.cmp(&b.0)));
        writers
    }

    /// The first [`DIVERGENT_COPIES_KEPT_MAX`] divergent copies of `key`, in log order.
    pub fn divergent_copies(&self, key: &EventSourceKey) -> &[DivergentCopy] {
        self.divergent_copies.get(key).map_or(&[], Vec::as_slice)
    }

    /// Canonical events on the streams of `owners`' DETs from writers that are not their
    /// replicas: not of a replica's id, or naming no cause. In log order.
    pub fn foreign_writes(&self, owners: &Owners) -> Vec<ForeignWrite> {
        let mut found = Vec::new();
        for det in owners.dets() {
            for key in [det.output.clone(), det.output.dead_letters()] {
                for (writer, tally) in self.writers(&key) {
                    let (foreign, events, first) = if !det.looks_like_its_replica(&writer) {
                        (Foreign::NotAReplica, tally.won, tally.first_won)
                    } else {
                        (Foreign::NoCause, tally.won_uncaused, tally.first_won_uncaused)
                    };
                    let Some(Place { offset, index }) = first else { continue };
                    let det = det.name.clone();
                    found.push(ForeignWrite { det, key: key.clone(), writer, foreign, events, offset, index });
                }
            }
        }
        found.sort_by_key(|write| write.offset);
        found
    }

    /// `status`'s lines on the streams of `owners`' DETs that are on the log: foreign writes,
    /// then divergent copies with who wrote them and where; nothing if none is on the log.
    pub fn streams_report(&self, owners: &Owners) -> Vec<String> {
        let keys: Vec<(EventSourceKey, KeyStats)> =
            self.keys().into_iter().filter(|(key, _)| owners.owner_of(key).is_some()).collect();
        if keys.is_empty() {
            return Vec::new();
        }
        let mut lines = vec![String::new(), "the DETs' streams: who wrote them".to_string()];
        lines.extend(self.foreign_writes(owners).iter().map(ToString::to_string));
        for (key, stats) in &keys {
            for copy in self.divergent_copies(key) {
                let (offset, index, writer) = (copy.at.offset, copy.at.index, &copy.writer);
                lines.push(format!(
                    "`{key}`: divergent copy of event {index} at offset {offset} by `{writer}`; the canonical copy is at offset {}",
                    copy.canonical_offset
                ));
            }
            let more = stats.divergent.saturating_sub(self.divergent_copies(key).len() as u64);
            if more > 0 {
                lines.push(format!("`{key}`: {more} more divergent copies"));
            }
        }
        if lines.len() == 2 {
            lines.push(format!("{} key(s), written by their DETs' replicas only, no divergent copies", keys.len()));
        }
        lines
    }

    /// `status --output json`: the whole summary as one JSON document (README.md, Operating
    /// it, describes each field).
    pub fn to_json(&self, topic: &str, owners: &Owners) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys()
            .into_iter()
            .map(|(key, stats)| {
                let writers: Vec<serde_json::Value> = self
                    .writers(&key)
                    .into_iter()
                    .map(|(writer, tally)| {
                        serde_json::json!({
                            "writer": writer, "won": tally.won, "lost": tally.lost,
                            "divergent": tally.divergent, "rejected": tally.rejected,
                            "unauthorized": tally.unauthorized,
                        })
                    })
                    .collect();
                let copies: Vec<serde_json::Value> = self
                    .divergent_copies(&key)
                    .iter()
                    .map(|copy| {
                        serde_json::json!({
                            "offset": copy.at.offset, "index": copy.at.index,
                            "writer": copy.writer, "canonical_offset": copy.canonical_offset,
                        })
                    })
                    .collect();
                serde_json::json!({
                    "key": key.as_str(), "canonical": stats.canonical, "duplicates": stats.duplicates,
                    "divergent": stats.divergent, "rejected": stats.rejected,
                    "unauthorized": stats.unauthorized, "writers": writers, "divergent_copies": copies,
                })
            })
            .collect();
        let foreign: Vec<serde_json::Value> = self
            .foreign_writes(owners)
            .into_iter()
            .map(|write| {
                let reason = match write.foreign {
                    Foreign::NotAReplica => "not_a_replica",
                    Foreign::NoCause => "no_cause",
                };
                serde_json::json!({
                    "det": write.det, "key": write.key.as_str(), "writer": write.writer, "reason": reason,
                    "events": write.events, "offset": write.offset, "index": write.index,
                })
            })
            .collect();
        serde_json::json!({
            "topic": topic, "records": self.records(), "malformed": self.malformed(),
            "keys": keys, "foreign_writes": foreign,
            "since_offset": self.since(), "not_summarised": self.unsummarised().0,
        })
    }

    /// The offset the summary reads from: 0 unless it started at a stored position.
    pub fn since(&self) -> Offset {
        self.start.position()
    }

    /// Keys with events read that are not summarised, the start holding no count of them (the
    /// first [`UNSUMMARISED_KEPT_MAX`]), and whether there are more.
    pub fn unsummarised(&self) -> (Vec<String>, bool) {
        (self.unsummarised.iter().cloned().collect(), self.unsummarised_more)
    }

    /// Records that did not decode.
    pub fn malformed(&self) -> u64 {
        self.rule.malformed()
    }

    /// Records read, malformed ones included.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// `status --output json` over the pipelines read: each pipeline's document (see
/// [`LogSummary::to_json`]) with its `"pipeline"`, under `"pipelines"`; at the top level the
/// one pipeline's document when `several` is false (a log of one: as it always was), else the
/// totals ([`totals_json`]).
pub fn status_json(topic: &str, several: bool, documents: Vec<(u32, serde_json::Value)>) -> serde_json::Value {
    let mut top = if several {
        totals_json(topic, &documents)
    } else {
        documents.first().map(|(_, document)| document.clone()).unwrap_or_default()
    };
    let pipelines: Vec<serde_json::Value> = documents
        .into_iter()
        .map(|(pipeline, mut document)| {
            document["pipeline"] = pipeline.into();
            document
        })
        .collect();
    top["pipelines"] = pipelines.into();
    top
}

/// The totals of several pipelines' `status` documents: records and malformed summed, each
/// key's counts summed (and each writer's on it), divergent copies and foreign writes listed
/// with their `"pipeline"`, keys not summarised in any; `"since_offset"` 0 when every
/// pipeline was read from its start, else null (offsets of two pipelines do not compare).
pub fn totals_json(topic: &str, documents: &[(u32, serde_json::Value)]) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let sum = |field: &str| documents.iter().map(|(_, d)| d[field].as_u64().unwrap_or(0)).sum::<u64>();
    let mut keys: BTreeMap<String, Value> = BTreeMap::new();
    let mut foreign = Vec::new();
    let mut unsummarised: Vec<Value> = Vec::new();
    for (pipeline, document) in documents {
        for key in document["keys"].as_array().into_iter().flatten() {
            let name = key["key"].as_str().unwrap_or_default().to_string();
            let total =
                keys.entry(name.clone()).or_insert_with(|| json!({"key": name, "writers": [], "divergent_copies": []}));
            add_counts(total, key);
            for writer in key["writers"].as_array().into_iter().flatten() {
                let writers = total["writers"].as_array_mut().expect("an array");
                match writers.iter_mut().find(|w| w["writer"] == writer["writer"]) {
                    Some(found) => add_counts(found, writer),
                    None => writers.push(writer.clone()),
                }
            }
            for copy in key["divergent_copies"].as_array().into_iter().flatten() {
                let mut copy = copy.clone();
                copy["pipeline"] = (*pipeline).into();
                total["divergent_copies"].as_array_mut().expect("an array").push(copy);
            }
        }
        for write in document["foreign_writes"].as_array().into_iter().flatten() {
            let mut write = write.clone();
            write["pipeline"] = (*pipeline).into();
            foreign.push(write);
        }
        for key in document["not_summarised"].as_array().into_iter().flatten() {
            if !unsummarised.contains(key) {
                unsummarised.push(key.clone());
            }
        }
    }
    let since = documents.iter().all(|(_, d)| d["since_offset"].as_u64() == Some(0));
    let mut top = Map::new();
    top.insert("topic".into(), topic.into());
    top.insert("records".into(), sum("records").into());
    top.insert("malformed".into(), sum("malformed").into());
    top.insert("keys".into(), keys.into_values().collect::<Vec<_>>().into());
    top.insert("foreign_writes".into(), foreign.into());
    top.insert("since_offset".into(), if since { 0.into() } else { Value::Null });
    top.insert("not_summarised".into(), unsummarised.into());
    Value::Object(top)
}

/// Adds the counts of `from` (every number it holds) to `total`'s.
fn add_counts(total: &mut serde_json::Value, from: &serde_json::Value) {
    for (field, value) in from.as_object().into_iter().flatten() {
        if let Some(number) = value.as_u64() {
            total[field] = (total[field].as_u64().unwrap_or(0) + number).into();
        }
    }
}

/// `status`' table of each key's counts: a header line, then a line per key.
pub fn key_table<'a>(keys: impl Iterator<Item = (&'a EventSourceKey, &'a KeyStats)> + Clone) -> Vec<String> {
    let width = keys.clone().map(|(k, _)| k.as_str().len()).max().unwrap_or(0).max(3);
    let row = |key: &str, counts: [String; 4]| {
        let [canonical, duplicates, divergent, rejected] = counts;
        format!("{key:<width$}  {canonical:>9}  {duplicates:>10}  {divergent:>9}  {rejected:>8}")
    };
    let header = row("key", ["canonical", "duplicates", "divergent", "rejected"].map(String::from));
    std::iter::once(header)
        .chain(keys.map(|(key, stats)| {
            let counts = [stats.canonical, stats.duplicates, stats.divergent, stats.rejected].map(|n| n.to_string());
            row(key.as_str(), counts)
        }))
        .collect()
}

/// `status`' text totals over several pipelines' summaries: records, and each key's counts
/// summed over the pipelines.
pub fn totals_lines(topic: &str, summaries: &[(u32, LogSummary)]) -> Vec<String> {
    let mut keys: BTreeMap<EventSourceKey, KeyStats> = BTreeMap::new();
    for (_, summary) in summaries {
        for (key, stats) in summary.keys() {
            let total = keys.entry(key).or_default();
            total.canonical += stats.canonical;
            total.duplicates += stats.duplicates;
            total.divergent += stats.divergent;
            total.rejected += stats.rejected;
            total.unauthorized += stats.unauthorized;
        }
    }
    let records: u64 = summaries.iter().map(|(_, s)| s.records()).sum();
    let malformed: u64 = summaries.iter().map(|(_, s)| s.malformed()).sum();
    let mut lines = vec![format!(
        "total over {} pipelines: {records} records in topic `{topic}`, {malformed} malformed",
        summaries.len()
    )];
    lines.extend(key_table(keys.iter()));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::event::Event;
    use competing_transformers::record::Record;
    use competing_transformers::MemoryLog;
    use competing_transformers_kafka::KnownCount;

    fn fetched(offset: u64, writer: &str, index: Option<u64>, payload: &[u8]) -> FetchedRecord {
        let key = EventSourceKey::new("out").unwrap();
        let event = Event::new(key.clone(), index, None, 0, "text/plain", payload.to_vec());
        let encoded = Record { source: key, writer: writer.into(), events: vec![event] }.encode().unwrap();
        FetchedRecord { offset, key: Some(encoded.key), value: Some(encoded.value), ..Default::default() }
    }

    #[test]
    fn status_of_several_pipelines_sums_each_key_and_keeps_each_pipelines_document() {
        let document = |records: u64, canonical: u64, since: u64| {
            serde_json::json!({
                "topic": "log", "records": records, "malformed": 1, "since_offset": since,
                "keys": [{"key": "k", "canonical": canonical, "duplicates": 1, "divergent": 0, "rejected": 0,
                          "unauthorized": 0, "writers": [{"writer": "w", "won": canonical, "lost": 1}],
                          "divergent_copies": []}],
                "foreign_writes": [], "not_summarised": ["n"],
            })
        };
        let one = status_json("log", false, vec![(0, document(5, 3, 0))]);
        assert_eq!(one["records"], 5, "one pipeline: its document at the top");
        assert_eq!(one["pipelines"][0]["pipeline"], 0);
        let two = status_json("log", true, vec![(0, document(5, 3, 0)), (1, document(7, 4, 9))]);
        assert_eq!((two["records"].as_u64(), two["malformed"].as_u64()), (Some(12), Some(2)));
        assert_eq!(two["keys"][0]["canonical"], 7);
        assert_eq!(two["keys"][0]["writers"][0]["won"], 7);
        assert_eq!(two["keys"][0]["writers"][0]["writer"], "w");
        assert_eq!(two["since_offset"], serde_json::Value::Null, "offsets of two pipelines do not compare");
        assert_eq!(two["not_summarised"], serde_json::json!(["n"]));
        assert_eq!(two["pipelines"][1]["pipeline"], 1);
        assert_eq!(two["pipelines"][1]["records"], 7);
    }

    #[test]
    fn races_are_credited_to_the_writer_of_the_canonical_copy() {
        let mut summary = LogSummary::default();
        summary.apply(&fetched(0, "a", Some(0), b"x"));
        summary.apply(&fetched(1, "b", Some(0), b"x"));
        summary.apply(&fetched(2, "b", Some(1), b"y"));
        summary.apply(&fetched(3, "a", Some(1), b"other"));
        summary.apply(&fetched(4, "a", Some(9), b"z"));
        summary.apply(&FetchedRecord { offset: 5, value: Some(b"junk".to_vec()), ..Default::default() });
        let key = EventSourceKey::new("out").unwrap();
        assert_eq!(
            summary.writers(&key),
            [
                ("a".to_string(), WriterTally { won: 1, lost: 0, divergent: 1, rejected: 1, ..tally(0, 0) }),
                ("b".to_string(), WriterTally { won: 1, lost: 1, divergent: 0, rejected: 0, ..tally(2, 1) }),
            ]
        );
        assert_eq!(summary.key(&key).canonical, 2);
        assert_eq!((summary.malformed(), summary.records()), (1, 6));
        let divergent = DivergentCopy { at: Place { offset: 3, index: 1 }, writer: "a".into(), canonical_offset: 2 };
        assert_eq!(summary.divergent_copies(&key), [divergent]);
    }

    /// The tally fields of a writer whose one canonical event, with no cause, is at `offset`.
    fn tally(offset: u64, index: u64) -> WriterTally {
        let first = Some(Place { offset, index });
        WriterTally { first_won: first, won_uncaused: 1, first_won_uncaused: first, ..Default::default() }
    }

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    /// Appends `writer`'s event `index` of `echo`, computed from the input at `cause`.
    fn append_echo(log: &MemoryLog, writer: &str, index: u64, cause: Option<u64>, payload: &[u8]) -> u64 {
        let event = Event::new(key("echo"), Some(index), cause, 0, "text/plain", payload.to_vec());
        log.append_now(&Record { source: key("echo"), writer: writer.into(), events: vec![event] }).unwrap()
    }

    /// The log of a forged record at the next index of the DET `echo`: its replicas' copies
    /// of that index, computed from the input, differ from it and are divergent.
    fn forged_log() -> MemoryLog {
        let log = MemoryLog::new();
        let input = |payload: &[u8]| Event::new(key("in"), None, None, 0, "text/plain", payload.to_vec());
        let first = log.publish(&key("in"), vec![input(b"a")]);
        append_echo(&log, "host-echo-1", 0, Some(first), b"a");
        append_echo(&log, "host-echo-2", 0, Some(first), b"a");
        let second = log.publish(&key("in"), vec![input(b"b")]);
        assert_eq!(append_echo(&log, "host-publish", 1, None, b"forged"), 4);
        append_echo(&log, "host-echo-2", 1, Some(second), b"b");
        append_echo(&log, "host-echo-1", 1, Some(second), b"b");
        // A replica's id, but no cause: what `publish --writer host-echo-3` would write.
        append_echo(&log, "host-echo-3", 2, None, b"forged too");
        log
    }

    fn owners() -> Owners {
        Owners::new().with("echo", key("echo"), vec![key("in")])
    }

    #[tokio::test]
    async fn a_forged_record_at_a_dets_next_index_is_a_foreign_write_and_the_replicas_copies_divergent() {
        let summary = LogSummary::read(&forged_log()).await.unwrap();
        let stats = summary.key(&key("echo"));
        assert_eq!((stats.canonical, stats.duplicates, stats.divergent), (3, 1, 2));
        let copies: Vec<_> = summary
            .divergent_copies(&key("echo"))
            .iter()
            .map(|c| (c.at.offset, c.writer.as_str(), c.canonical_offset))
            .collect();
        assert_eq!(copies, [(5, "host-echo-2", 4), (6, "host-echo-1", 4)]);
        let foreign: Vec<_> =
            summary.foreign_writes(&owners()).into_iter().map(|f| (f.writer, f.foreign, f.offset, f.index)).collect();
        assert_eq!(
            foreign,
            [
                ("host-publish".to_string(), Foreign::NotAReplica, 4, 1),
                ("host-echo-3".to_string(), Foreign::NoCause, 7, 2)
            ]
        );
        let report = summary.streams_report(&owners());
        assert_eq!(
            report,
            [
                "",
                "the DETs' streams: who wrote them",
                "`echo`: FOREIGN WRITE: event 1 at offset 4 was written by `host-publish`, which is not a replica of echo (1 canonical event(s) of that writer): every replica of echo stops as diverged when it computes that index; see docs/DESIGN.md 'A way back'",
                "`echo`: FOREIGN WRITE: event 2 at offset 7 was written by `host-echo-3` with no cause, which no replica of echo writes (1 canonical event(s) of that writer): every replica of echo stops as diverged when it computes that index; see docs/DESIGN.md 'A way back'",
                "`echo`: divergent copy of event 1 at offset 5 by `host-echo-2`; the canonical copy is at offset 4",
                "`echo`: divergent copy of event 1 at offset 6 by `host-echo-1`; the canonical copy is at offset 4",
            ]
        );
    }

    #[tokio::test]
    async fn streams_written_by_their_replicas_only_say_so_and_other_keys_are_not_judged() {
        let log = MemoryLog::new();
        let cause = log.publish(&key("in"), vec![Event::new(key("in"), None, None, 0, "text/plain", b"a".to_vec())]);
        append_echo(&log, "host-echo-1", 0, Some(cause), b"a");
        let summary = LogSummary::read(&log).await.unwrap();
        assert_eq!(
            summary.streams_report(&owners()),
            [
                "",
                "the DETs' streams: who wrote them",
                "1 key(s), written by their DETs' replicas only, no divergent copies"
            ]
        );
        assert!(summary.streams_report(&Owners::new()).is_empty(), "`in` is nobody's stream");
        assert!(LogSummary::read(&forged_log()).await.unwrap().foreign_writes(&Owners::new()).is_empty());
    }

    #[tokio::test]
    async fn a_summary_from_a_stored_start_has_the_whole_logs_counts_and_names_the_keys_it_cannot_judge() {
        let log = forged_log();
        log.publish(&key("noise"), vec![Event::new(key("noise"), None, None, 0, "text/plain", b"n".to_vec())]);
        let whole = LogSummary::read(&log).await.unwrap();
        // `echo`'s count before offset 4 is 1; `in` is taken up at offset 3 with its count 1.
        let start = Resume::per_key(
            3,
            [(key("echo"), KnownCount { from: 4, count: 1 }), (key("in"), KnownCount { from: 3, count: 1 })],
        );
        let since = LogSummary::read_from(&log, start).await.unwrap();
        assert_eq!(since.since(), 3);
        for k in ["echo", "in"] {
            assert_eq!(since.key(&key(k)).canonical, whole.key(&key(k)).canonical, "`{k}`");
        }
        assert_eq!(since.key(&key("echo")).divergent, whole.key(&key("echo")).divergent, "all after the start");
        assert_eq!(since.unsummarised(), (vec!["noise".to_string()], false));
        assert_eq!(since.key(&key("noise")), KeyStats::default());
    }

    #[tokio::test]
    async fn the_json_summary_holds_the_keys_divergent_copies_and_foreign_writes() {
        let summary = LogSummary::read(&forged_log()).await.unwrap();
        let json = summary.to_json("pipeline", &owners());
        assert_eq!((json["topic"].as_str(), json["records"].as_u64()), (Some("pipeline"), Some(summary.records())));
        let echo = json["keys"].as_array().unwrap().iter().find(|k| k["key"] == "echo").unwrap();
        assert_eq!((echo["canonical"].as_u64(), echo["divergent"].as_u64()), (Some(3), Some(2)));
        assert_eq!(echo["divergent_copies"][0]["writer"], "host-echo-2");
        assert_eq!(echo["divergent_copies"][0]["canonical_offset"], 4);
        let foreign = json["foreign_writes"].as_array().unwrap();
        assert_eq!(foreign.len(), 2);
        assert_eq!(
            (foreign[0]["writer"].as_str(), foreign[0]["reason"].as_str()),
            (Some("host-publish"), Some("not_a_replica"))
        );
        assert_eq!(foreign[1]["reason"], "no_cause");
        // What `status --output json` prints parses back to the same document.
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json.to_string()).unwrap(), json);
    }
}
