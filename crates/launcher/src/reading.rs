//! Reading the log for operators: canonical events up to the log end, payloads as text,
//! dead letters. Shared by the operator commands, redrive and the demo.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::codec::{self, SchemaCache};
use competing_transformers::dead_letter::DeadLetter;
use competing_transformers::event::{Event, EventSourceKey, Offset};
use competing_transformers_kafka::schema_registry::SchemaRegistry;
use competing_transformers_kafka::{CanonicalEvent, EventLog, EventStream, Pipeline};

use crate::Error;

/// How long a reader waits for more events before deciding it has reached the log end.
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Hands canonical events from `stream` to `visit` until the log end seen at `end` (or
/// forever with `follow`).
pub async fn each_canonical(
    stream: &mut EventStream,
    end: Offset,
    follow: bool,
    mut visit: impl FnMut(CanonicalEvent) -> Result<(), Error>,
) -> Result<(), Error> {
    loop {
        match stream.next_within(IDLE_WAIT).await? {
            Some(event) => visit(event)?,
            None if follow => {}
            // The stream's position steps over transaction markers, which no record holds.
            None if stream.position() >= end => return Ok(()),
            None => {}
        }
    }
}

/// A payload as text: JSON as it is, Avro decoded to JSON through the schema registry (when
/// `SCHEMA_REGISTRY_URL` is set), anything else as lossy UTF-8.
pub fn readable(event: &Event, registry: Option<&SchemaRegistry>, schemas: &mut SchemaCache) -> String {
    if event.content_type.starts_with(codec::CONTENT_TYPE_AVRO) {
        let Some(registry) = registry else {
            return format!("<Avro, {} bytes: set SCHEMA_REGISTRY_URL to decode>", event.payload.len());
        };
        if let Ok((id, _)) = codec::schema_id(&event.payload) {
            // A blocking wait inside the visitor: tail prints in order, one event at a time.
            let resolved = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(registry.resolve([id], schemas))
            });
            if let Err(e) = resolved {
                return format!("<Avro: {e}>");
            }
        }
        return match codec::decode::<serde_json::Value>(&event.content_type, &event.payload, schemas, None) {
            Ok(json) => json.to_string(),
            Err(e) => format!("<Avro: {e}>"),
        };
    }
    String::from_utf8_lossy(&event.payload).replace('\n', "\\n")
}

/// A dead letter as read back: its record's offset, its index, and the letter (or its raw
/// text if it does not parse).
pub type ReadDeadLetter = (Offset, u64, Result<DeadLetter, String>);

/// Every canonical dead letter of `key`, up to the log end.
pub async fn read_dead_letters<L: EventLog>(log: Arc<L>, key: &EventSourceKey) -> Result<Vec<ReadDeadLetter>, Error> {
    let end = log.end_offset().await?;
    let pipeline = Pipeline::new(log, "dead-letters");
    let mut stream = pipeline.stream_events(std::slice::from_ref(key), 0).await?;
    let mut letters = Vec::new();
    each_canonical(&mut stream, end, false, |canonical| {
        let index = canonical.event.index.expect("canonical events carry their index");
        let letter = serde_json::from_slice::<DeadLetter>(&canonical.event.payload)
            .map_err(|_| String::from_utf8_lossy(&canonical.event.payload).into_owned());
        letters.push((canonical.offset, index, letter));
        Ok(())
    })
    .await?;
    Ok(letters)
}
