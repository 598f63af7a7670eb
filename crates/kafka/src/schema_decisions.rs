//! Avro writer schemas as the log decides them, not as one replica's registry answers.
//!
//! A registry is outside the log: replicas pointed at different registries, or asking
//! before and after an id was registered, would get different answers, and one input could
//! become a dead letter on one replica and outputs on another. So the first time a replica
//! meets a schema id, it appends what its registry said to the reserved ESK
//! [`SCHEMA_DECISIONS_KEY`] (the schema, or that the registry does not know the id), and
//! every replica decodes with the **first decision for that id in log order**, whoever wrote
//! it. A decision is final for the log: an id decided unknown stays unknown, so an input can
//! never have both an output and a dead letter canonical (`docs/DESIGN.md`, "Dead letters").
//!
//! Decisions are unconditional writes: several replicas may write one for the same id, and
//! the later ones change nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use competing_transformers::codec::{SchemaCache, Unresolved};
use competing_transformers::event::Offset;
use competing_transformers::record::Record;
use competing_transformers::{Event, EventSourceKey};
use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::log::{EventLog, EventStream, Pipeline};
use crate::schema_registry::{RegistryError, SchemaRegistry};

/// What begins the names of the framework's own ESKs: no tool publishes under them.
pub const RESERVED_PREFIX: &str = "ct:";
/// The ESK decisions are written to.
pub const SCHEMA_DECISIONS_KEY: &str = "ct:schema-ids";
/// Content type of a decision's payload.
pub const CONTENT_TYPE_SCHEMA_DECISION: &str = "application/vnd.competing-transformers.schema-decision+json";
/// How long one read of the log waits for records.
const FETCH_WAIT: Duration = Duration::from_millis(50);

/// One decision's payload: the schema of `id` as JSON text, or why the registry has none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The registry id.
    pub id: u32,
    /// The writer schema (apache-avro's JSON form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Why there is none: a sentence from the id alone, what its inputs' dead letters say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// Why a decision could not be reached: the log or the registry failed in a way the caller
/// retries with backoff, or cannot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecisionError {
    /// Reading or writing the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The registry could not be asked (unreachable, refused): nothing is decided.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The decisions read so far, and the reader that follows them. They are log state, one
/// entry per decided id (a refusal is a sentence; a schema, its text), as every canonical
/// event costs a reader; the parsed schemas are the driver's cache, which it bounds.
pub struct SchemaDecisions {
    key: EventSourceKey,
    writer: String,
    stream: Option<EventStream>,
    first: BTreeMap<u32, Decision>,
}

impl SchemaDecisions {
    /// Decisions of a replica that writes them as `writer`; nothing read yet.
    pub fn new(writer: impl Into<String>) -> Self {
        Self {
            key: EventSourceKey::new(SCHEMA_DECISIONS_KEY).expect("a valid constant key"),
            writer: writer.into(),
            stream: None,
            first: BTreeMap::new(),
        }
    }

    /// Fills `cache` with the decided schema of every id in `ids`: read from the log, or,
    /// for an id the log has no decision for, asked of `registry`, written, and read back.
    /// A registry that cannot be asked leaves the ids undecided: the caller retries.
    pub async fn resolve<L: EventLog>(
        &mut self,
        log: &Arc<L>,
        registry: &SchemaRegistry,
        ids: &[u32],
        cache: &mut SchemaCache,
    ) -> Result<(), DecisionError> {
        self.read_to_end(log).await?;
        let undecided: Vec<u32> = ids.iter().copied().filter(|id| !self.first.contains_key(id)).collect();
        if !undecided.is_empty() {
            let mut decisions = Vec::with_capacity(undecided.len());
            for id in &undecided {
                decisions.push(ask(registry, *id).await?);
            }
            let events = decisions.iter().map(|decision| self.event(decision)).collect();
            let at = log.append(&Record { source: self.key.clone(), writer: self.writer.clone(), events }).await?;
            self.read_to(log, at + 1).await?;
        }
        for id in ids {
            fill(cache, self.first.get(id).expect("decided: ours at least is on the log"));
        }
        Ok(())
    }

    fn event(&self, decision: &Decision) -> Event {
        let payload = serde_json::to_vec(decision).expect("a decision serializes");
        Event::new(self.key.clone(), None, None, 0, CONTENT_TYPE_SCHEMA_DECISION, payload)
    }

    async fn read_to_end<L: EventLog>(&mut self, log: &Arc<L>) -> Result<(), LogError> {
        let end = log.end_offset().await?;
        self.read_to(log, end).await
    }

    /// Reads decisions from every record below `until`.
    async fn read_to<L: EventLog>(&mut self, log: &Arc<L>, until: Offset) -> Result<(), LogError> {
        if self.stream.is_none() {
            let pipeline = Pipeline::new(log.clone(), self.writer.clone());
            self.stream = Some(pipeline.stream_events(std::slice::from_ref(&self.key), 0).await?);
        }
        let stream = self.stream.as_mut().expect("just opened");
        let mut wait = FETCH_WAIT;
        loop {
            // Past `until`, only what the last fetch already decoded is taken.
            if stream.position() >= until {
                wait = Duration::ZERO;
            }
            let Some(canonical) = stream.next_within(wait).await? else {
                if wait.is_zero() {
                    return Ok(());
                }
                continue;
            };
            // A payload that is not a decision decides nothing.
            if let Ok(decision) = serde_json::from_slice::<Decision>(&canonical.event.payload) {
                self.first.entry(decision.id).or_insert(decision);
            }
        }
    }
}

/// What `registry` says of `id`: a decision, or the failure that decides nothing.
async fn ask(registry: &SchemaRegistry, id: u32) -> Result<Decision, RegistryError> {
    match registry.writer_schema(id).await {
        Ok(schema) => {
            let text = serde_json::to_string(schema.as_ref()).expect("an Avro schema serializes");
            Ok(Decision { id, schema: Some(text), refusal: None })
        }
        Err(error) => match error.on_the_log() {
            Some(refusal) => {
                tracing::warn!(%error, "the registry has no usable schema id {id}; deciding so on the log");
                Ok(Decision { id, schema: None, refusal: Some(refusal) })
            }
            None => Err(error),
        },
    }
}

/// Puts the log's decision on `id` into `cache`.
fn fill(cache: &mut SchemaCache, decision: &Decision) {
    let id = decision.id;
    if cache.contains(id) {
        return;
    }
    let unresolved = |message: String, reply: Option<String>| Unresolved { message, reply };
    match decision.schema.as_deref().map(apache_avro::Schema::parse_str) {
        Some(Ok(schema)) => cache.insert(id, Arc::new(schema)),
        Some(Err(error)) => cache.insert_unresolved(
            id,
            unresolved(format!("schema id {id} is not a usable Avro schema"), Some(error.to_string())),
        ),
        None => cache.insert_unresolved(
            id,
            unresolved(decision.refusal.clone().unwrap_or_else(|| format!("schema id {id} has no schema")), None),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::registry_answering;
    use competing_transformers::MemoryLog;

    const UNKNOWN: (&str, &str) = ("404 Not Found", r#"{"error_code":40403,"message":"No content with id 5"}"#);
    const KNOWN: (&str, &str) = ("200 OK", r#"{"schema":"\"string\""}"#);

    /// What a replica asking `registry` ends up with for id 5 on `log`.
    async fn decide(log: &Arc<MemoryLog>, registry: &SchemaRegistry, writer: &str) -> Result<(), String> {
        let mut cache = SchemaCache::new();
        SchemaDecisions::new(writer).resolve(log, registry, &[5], &mut cache).await.unwrap();
        match cache.get(5).expect("decided") {
            Ok(_) => Ok(()),
            Err(unresolved) => Err(unresolved.message.clone()),
        }
    }

    #[tokio::test]
    async fn the_first_decision_on_the_log_wins_over_every_later_registry_answer() {
        let log = Arc::new(MemoryLog::new());
        let unknown = decide(&log, &registry_answering(vec![UNKNOWN]).await, "a").await;
        assert!(
            unknown.as_ref().is_err_and(|m| m.contains("schema id 5 is not in the schema registry")),
            "{unknown:?}"
        );
        // Registered later, or another replica's registry knows it: the log has decided.
        let later = decide(&log, &registry_answering(vec![KNOWN]).await, "b").await;
        assert_eq!(later, unknown, "one input can never be a dead letter on one replica and outputs on another");
        assert_eq!(log.canonical(&EventSourceKey::new(SCHEMA_DECISIONS_KEY).unwrap()).len(), 1, "decided once");
    }

    #[tokio::test]
    async fn a_replica_whose_registry_does_not_know_a_decided_schema_decodes_with_it() {
        let log = Arc::new(MemoryLog::new());
        assert_eq!(decide(&log, &registry_answering(vec![KNOWN]).await, "a").await, Ok(()));
        assert_eq!(decide(&log, &registry_answering(vec![UNKNOWN]).await, "b").await, Ok(()));
    }

    #[tokio::test]
    async fn a_registry_that_cannot_be_asked_decides_nothing() {
        let log = Arc::new(MemoryLog::new());
        let registry = SchemaRegistry::new("http://127.0.0.1:1").unwrap();
        let error = SchemaDecisions::new("a").resolve(&log, &registry, &[5], &mut SchemaCache::new()).await;
        assert!(matches!(error, Err(DecisionError::Registry(ref e)) if e.is_transient()), "{error:?}");
        assert_eq!(log.end(), 0, "nothing written");
    }
}
