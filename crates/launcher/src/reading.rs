//! Reading the log for operators: canonical events up to the log end, payloads as text,
//! dead letters. Shared by the operator commands, redrive and the demo.

use std::sync::Arc;
use std::time::Duration;

use competing_transformers::codec::{self, SchemaCache};
use competing_transformers::dead_letter::{DeadLetter, Detail};
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

/// A dead letter as read back, with the advisory detail the canonical copy's record carries
/// for it (the version that computed it, a library's or panic's text), if any.
pub type DetailedDeadLetter = (ReadDeadLetter, Option<Detail>);

/// Every canonical dead letter of `key`, up to the log end.
pub async fn read_dead_letters<L: EventLog>(log: Arc<L>, key: &EventSourceKey) -> Result<Vec<ReadDeadLetter>, Error> {
    Ok(read_dead_letters_with_details(log, key).await?.into_iter().map(|(letter, _)| letter).collect())
}

/// Every canonical dead letter of `key`, up to the log end, with its detail.
pub async fn read_dead_letters_with_details<L: EventLog>(
    log: Arc<L>,
    key: &EventSourceKey,
) -> Result<Vec<DetailedDeadLetter>, Error> {
    let end = log.end_offset().await?;
    let pipeline = Pipeline::new(log, "dead-letters");
    let mut stream = pipeline.stream_events(std::slice::from_ref(key), 0).await?;
    let mut letters = Vec::new();
    each_canonical(&mut stream, end, false, |canonical| {
        let index = canonical.event.index.expect("canonical events carry their index");
        let letter = serde_json::from_slice::<DeadLetter>(&canonical.event.payload)
            .map_err(|_| String::from_utf8_lossy(&canonical.event.payload).into_owned());
        letters.push(((canonical.offset, index, letter), canonical.detail));
        Ok(())
    })
    .await?;
    Ok(letters)
}

/// One line of `dead-letters list`: the dead letter's sentence (what every replica agrees
/// on), then its detail (outside the digest) when its record carries one.
pub fn dead_letter_line((offset, index, letter): &ReadDeadLetter, detail: Option<&Detail>) -> String {
    let mut line = match letter {
        Ok(letter) => format!("{index} (offset {offset}): {}", letter.describe()),
        Err(raw) => format!("{index} (offset {offset}): not a dead letter this launcher can read: {raw}"),
    };
    if let Some(detail) = detail {
        line.push_str(&format!(" [detail, not digested: {}]", detail.describe().replace('\n', "\\n")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use competing_transformers::replica::run_to_end;
    use competing_transformers::testing::Echo;
    use competing_transformers::MemoryLog;

    #[tokio::test]
    async fn a_listed_dead_letter_shows_its_detail_beside_what_is_digested() {
        let log = MemoryLog::new();
        let key = |name: &str| EventSourceKey::new(name).unwrap();
        for payload in [&b"boom"[..], b"bad"] {
            log.publish(&key("in"), vec![Event::new(key("in"), None, None, 0, "text/plain", payload.to_vec())]);
        }
        run_to_end(&log, Echo::default());
        let letters = read_dead_letters_with_details(Arc::new(log), &key("echo.dead-letters")).await.unwrap();
        let lines: Vec<String> =
            letters.iter().map(|(letter, detail)| dead_letter_line(letter, detail.as_ref())).collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].ends_with("because the transform panicked: the transform panicked [detail, not digested: computed by v1: boom on 0]"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("the transform returned an error: bad input [detail, not digested: computed by v1]"),
            "{}",
            lines[1]
        );
    }
}
