//! The engine over Avro: the checked-in schemas mirror the JSON shapes, so the same commands
//! give the same reports whichever codec carries them.

use std::sync::Arc;

use competing_transformers::codec::{self, AvroOutput, OutputCodec, SchemaCache, CONTENT_TYPE_AVRO, NO_SCHEMAS};
use competing_transformers::{Digest, EventSourceKey, Input, Outputs, Transform};
use matching_engine::{Command, MatchingEngine, Report, COMMAND_SCHEMA, REPORT_SCHEMA};

const COMMAND_ID: u32 = 11;
const REPORT_ID: u32 = 12;

fn commands() -> Vec<serde_json::Value> {
    serde_json::from_str(
        r#"[
        {"type":"limit","order_id":"s1","account":"alice","side":"sell","price":101,"quantity":5},
        {"type":"limit","order_id":"s2","account":"carol","side":"sell","price":103,"quantity":2},
        {"type":"market","order_id":"b1","account":"bob","side":"buy","quantity":9},
        {"type":"limit","order_id":"b2","account":"bob","side":"buy","price":99,"quantity":4},
        {"type":"cancel","order_id":"b2"},
        {"type":"cancel","order_id":"nope"},
        {"type":"limit","order_id":"s1","account":"alice","side":"sell","price":101,"quantity":1},
        {"type":"limit","order_id":"z","account":"alice","side":"sell","price":0,"quantity":1}
    ]"#,
    )
    .unwrap()
}

fn schema(text: &str, id: u32) -> AvroOutput {
    AvroOutput { schema_id: id, schema: Arc::new(codec::parse_schema(text).unwrap()) }
}

/// Runs the engine over `payloads` of `content_type`, writing with `output`.
fn run(content_type: &str, payloads: &[Vec<u8>], schemas: &SchemaCache, output: OutputCodec) -> Vec<(String, Vec<u8>)> {
    let key = EventSourceKey::new("orders").unwrap();
    let mut engine = MatchingEngine::new();
    let mut written = Vec::new();
    for (index, payload) in payloads.iter().enumerate() {
        let input = Input {
            key: &key,
            index: index as u64,
            offset: index as u64,
            effective_time_ms: 0,
            content_type,
            payload,
            digest: Digest([0; 32]),
            schemas,
        };
        let mut out = Outputs::with_codec(output.clone());
        engine.apply(&input, &mut out).unwrap();
        written.extend(out.into_events().into_iter().map(|o| (o.content_type, o.payload)));
    }
    written
}

#[test]
fn avro_commands_give_the_same_reports_as_json_ones_and_reports_round_trip_through_their_schema() {
    let json_payloads: Vec<Vec<u8>> = commands().iter().map(|c| serde_json::to_vec(c).unwrap()).collect();
    let command_schema = schema(COMMAND_SCHEMA, COMMAND_ID);
    let avro_payloads: Vec<Vec<u8>> = commands()
        .iter()
        .map(|c| codec::encode_avro(&serde_json::from_value::<Command>(c.clone()).unwrap(), &command_schema).unwrap())
        .collect();
    let mut schemas = SchemaCache::new();
    schemas.insert(COMMAND_ID, command_schema.schema.clone());
    schemas.insert(REPORT_ID, schema(REPORT_SCHEMA, REPORT_ID).schema);

    let from_json = run("application/json", &json_payloads, &NO_SCHEMAS, OutputCodec::Json);
    let from_avro = run(CONTENT_TYPE_AVRO, &avro_payloads, &schemas, OutputCodec::Json);
    assert_eq!(from_json, from_avro, "the codec of the input changes nothing");
    let kinds: std::collections::BTreeSet<String> = from_json
        .iter()
        .map(|(_, p)| serde_json::from_slice::<serde_json::Value>(p).unwrap()["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.len(), 6, "every kind of report is exercised: {kinds:?}");

    let avro_out =
        run(CONTENT_TYPE_AVRO, &avro_payloads, &schemas, OutputCodec::Avro(schema(REPORT_SCHEMA, REPORT_ID)));
    assert_eq!(avro_out.len(), from_json.len());
    for ((content_type, payload), (_, json)) in avro_out.iter().zip(&from_json) {
        assert_eq!(content_type, CONTENT_TYPE_AVRO);
        assert_eq!(codec::schema_id(payload).unwrap().0, REPORT_ID);
        let report: Report = codec::decode(content_type, payload, &schemas, None).unwrap();
        assert_eq!(report, serde_json::from_slice::<Report>(json).unwrap());
    }
}

#[test]
fn the_engine_declares_its_report_schema_for_registration() {
    assert_eq!(MatchingEngine::new().output_schema(), Some(REPORT_SCHEMA));
}
