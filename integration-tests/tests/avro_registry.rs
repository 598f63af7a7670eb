//! Avro events against a real schema registry (`SCHEMA_REGISTRY_URL`: Apicurio Registry,
//! started by `scripts/test.sh` through `scripts/registry.sh`): schema evolution, refusal of
//! an incompatible schema, dead letters for unknown ids and corrupt bodies, and a replica on
//! Kafka reading Avro and writing Avro.

use std::sync::Arc;
use std::time::{Duration, Instant};

use competing_transformers::codec::apache_avro::Schema;
use competing_transformers::codec::{
    self, avro_ids_to_resolve, AvroOutput, OutputCodec, SchemaCache, CONTENT_TYPE_AVRO,
};
use competing_transformers::dead_letter::{DeadLetter, Detail, Reason};
use competing_transformers::replica::{run_to_end, ReplicaConfig, ReplicaCore};
use competing_transformers::{Event, EventSourceKey, Input, MemoryLog, Outputs, Transform, TransformError};
use competing_transformers_kafka::schema_registry::{subject_for, RegistryError, SchemaRegistry};
use competing_transformers_kafka::{run_replica_with_registry, ReplicaStatus};
use competing_transformers_kafka::{KafkaLog, Pipeline, ShutdownTrigger};
use integration_tests::{fresh_log_config, schema_registry, unique_topic};
use matching_engine::{Command, MatchingEngine, Report, COMMAND_SCHEMA, REPORT_SCHEMA};
use tokio::sync::watch;

const ORDER_V1: &str = r#"{"type":"record","name":"Order","namespace":"ct.test","fields":[
    {"name":"id","type":"string"},{"name":"qty","type":"long"}]}"#;
/// v1 plus a field with a default: BACKWARD compatible.
const ORDER_V2: &str = r#"{"type":"record","name":"Order","namespace":"ct.test","fields":[
    {"name":"id","type":"string"},{"name":"qty","type":"long"},{"name":"note","type":"string","default":"none"}]}"#;
/// `qty` changes type: not BACKWARD compatible.
const ORDER_V3: &str = r#"{"type":"record","name":"Order","namespace":"ct.test","fields":[
    {"name":"id","type":"string"},{"name":"qty","type":"string"}]}"#;

#[derive(serde::Serialize)]
struct OrderV1 {
    id: String,
    qty: u64,
}

#[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
struct OrderV2 {
    id: String,
    qty: u64,
    note: String,
}

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

fn avro_event(input: &EventSourceKey, payload: Vec<u8>, i: usize) -> Event {
    Event::new(input.clone(), None, None, 1_700_000_000_000 + i as i64, CONTENT_TYPE_AVRO, payload)
}

/// A DET built against ORDER_V2: echoes each order (as JSON), note included.
struct NoteReader {
    input: EventSourceKey,
    reader: Schema,
}

impl Transform for NoteReader {
    fn name(&self) -> &str {
        "note-reader"
    }
    fn version(&self) -> u32 {
        2
    }
    fn subscriptions(&self) -> Vec<EventSourceKey> {
        vec![self.input.clone()]
    }
    fn apply(&mut self, input: &Input<'_>, out: &mut Outputs) -> Result<(), TransformError> {
        let order: OrderV2 = input.decode_as(&self.reader)?;
        out.emit_value(&order)
    }
}

/// Runs a fresh replica of `transform` over everything in `log`, as the Kafka driver would:
/// the writer schemas of the batch's Avro inputs are resolved from the real registry first.
async fn run_with_registry<T: Transform>(registry: &SchemaRegistry, log: &MemoryLog, transform: T) -> ReplicaCore<T> {
    let records = log.records();
    let mut schemas = SchemaCache::new();
    let ids = avro_ids_to_resolve(&records, &transform.subscriptions(), &schemas);
    registry.resolve(ids, &mut schemas).await.expect("the registry is reachable");
    let mut core = ReplicaCore::new(transform, ReplicaConfig::new("local"), 0);
    core.on_fetched_with(&records, records.len() as u64, &schemas);
    while let Some(write) = core.poll_write(0) {
        let outcome = log.append_now_with_details(&write.record, &write.details).map_err(|_| ());
        core.on_delivery(write.write_id, outcome);
    }
    core
}

fn dead_letters(log: &MemoryLog, transformer: &str) -> Vec<DeadLetter> {
    log.canonical(&key(transformer).dead_letters())
        .iter()
        .map(|e| serde_json::from_slice(&e.payload).unwrap())
        .collect()
}

/// The advisory details of `transformer`'s canonical dead letters, from their records.
fn details(log: &MemoryLog, transformer: &str) -> Vec<Option<Detail>> {
    let records = log.records();
    log.canonical_with_offsets(&key(transformer).dead_letters())
        .iter()
        .map(|(offset, e)| Detail::find(&records[*offset as usize].details, e.index.unwrap()))
        .collect()
}

#[tokio::test]
async fn events_written_with_v1_are_read_by_a_det_built_with_v2() {
    let registry = schema_registry();
    let input = key(&unique_topic("orders-evolve"));
    let subject = subject_for(input.as_str());
    let v1_id = registry.register(&subject, ORDER_V1).await.unwrap();
    let v1 = AvroOutput { schema_id: v1_id, schema: Arc::new(codec::parse_schema(ORDER_V1).unwrap()) };
    // The producer moves to v2 later: the registry accepts it as BACKWARD compatible.
    let v2_id = registry.register(&subject, ORDER_V2).await.expect("v2 adds a field with a default");
    assert_ne!(v1_id, v2_id);

    let log = MemoryLog::new();
    for (i, qty) in [3u64, 5].into_iter().enumerate() {
        let payload = codec::encode_avro(&OrderV1 { id: format!("o{i}"), qty }, &v1).unwrap();
        log.publish(&input, vec![avro_event(&input, payload, i)]);
    }
    let reader = codec::parse_schema(ORDER_V2).unwrap();
    run_with_registry(&registry, &log, NoteReader { input: input.clone(), reader }).await;

    assert!(dead_letters(&log, "note-reader").is_empty(), "{:?}", dead_letters(&log, "note-reader"));
    let read: Vec<OrderV2> =
        log.canonical(&key("note-reader")).iter().map(|e| serde_json::from_slice(&e.payload).unwrap()).collect();
    assert_eq!(
        read,
        [
            OrderV2 { id: "o0".into(), qty: 3, note: "none".into() },
            OrderV2 { id: "o1".into(), qty: 5, note: "none".into() }
        ],
        "v1 events read with the v2 schema get the new field's default"
    );
}

#[tokio::test]
async fn an_incompatible_v3_is_refused_with_a_clear_message() {
    let registry = schema_registry();
    let subject = subject_for(&unique_topic("orders-refuse"));
    registry.register(&subject, ORDER_V1).await.unwrap();
    registry.check(&subject, ORDER_V2).await.expect("v2 is compatible");

    let checked = registry.check(&subject, ORDER_V3).await.unwrap_err();
    assert!(matches!(checked, RegistryError::Incompatible { .. }), "{checked}");
    let refused = registry.register(&subject, ORDER_V3).await.unwrap_err();
    let message = refused.to_string();
    println!("refusal: {message}");
    assert!(matches!(refused, RegistryError::Incompatible { .. }), "{message}");
    assert!(
        message.contains(&format!("subject `{subject}`")) && message.contains("breaks the compatibility setting"),
        "{message}"
    );
    // The registry's own reason travels in the sentence: which field, which types.
    assert!(message.contains("STRING") && message.contains("LONG"), "{message}");
    assert!(!refused.is_transient());
}

#[tokio::test]
async fn an_unknown_schema_id_is_dead_lettered_with_reason_schema() {
    let registry = schema_registry();
    let input = key(&unique_topic("orders-unknown"));
    let log = MemoryLog::new();
    // Apicurio numbers content ids from 1: this one is never handed out in a test run.
    let unknown_id = 2_000_000_000;
    log.publish(&input, vec![avro_event(&input, codec::frame(unknown_id, &[2, b'a', 6]), 0)]);
    let reader = codec::parse_schema(ORDER_V2).unwrap();
    run_with_registry(&registry, &log, NoteReader { input: input.clone(), reader }).await;

    let letters = dead_letters(&log, "note-reader");
    assert_eq!(letters.len(), 1);
    println!("dead letter: {}", letters[0].describe());
    assert_eq!(letters[0].reason, Reason::Schema);
    assert_eq!(
        letters[0].message,
        format!("schema id {unknown_id} is not in the schema registry; register the schema before producing with it"),
        "a dead letter says nothing of the registry's address or reply"
    );
    assert!(!letters[0].message.contains(registry.url()), "{}", letters[0].message);
    assert_eq!(letters[0].payload().unwrap(), codec::frame(unknown_id, &[2, b'a', 6]), "the original payload is kept");
    // The registry's reply is in the advisory detail, outside the digest; its address is not.
    let detail = details(&log, "note-reader").remove(0).expect("a detail");
    let reply = detail.error.expect("the registry's reply");
    println!("detail: {reply}");
    assert!(!reply.is_empty() && !reply.contains(registry.url()), "{reply}");
}

#[tokio::test]
async fn a_malformed_avro_body_is_dead_lettered_with_the_avro_error() {
    let registry = schema_registry();
    let input = key(&unique_topic("orders-corrupt"));
    let v1_id = registry.register(&subject_for(input.as_str()), ORDER_V1).await.unwrap();
    let log = MemoryLog::new();
    // The id's string claims 20 bytes (zig-zag 40) but 2 follow.
    log.publish(&input, vec![avro_event(&input, codec::frame(v1_id, &[40, b'a', b'b']), 0)]);
    let reader = codec::parse_schema(ORDER_V2).unwrap();
    run_with_registry(&registry, &log, NoteReader { input: input.clone(), reader }).await;

    let letters = dead_letters(&log, "note-reader");
    assert_eq!(letters.len(), 1);
    println!("dead letter: {}", letters[0].describe());
    assert_eq!(letters[0].reason, Reason::Schema);
    assert_eq!(letters[0].message, format!("the Avro payload with schema id {v1_id} does not decode with that schema"));
    let detail = details(&log, "note-reader").remove(0).expect("a detail");
    println!("detail: {}", detail.describe());
    assert!(detail.error.is_some_and(|text| !text.is_empty()), "apache-avro's error is in the detail");
}

/// Commands of every kind, as the engine's serde type.
fn commands(count: usize) -> Vec<Command> {
    (0..count)
        .map(|i| {
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            let json = match i % 10 {
                7 => serde_json::json!({"type": "market", "order_id": format!("o{i}"), "account": format!("a{}", i % 5), "side": side, "quantity": 1 + i % 4}),
                9 => serde_json::json!({"type": "cancel", "order_id": format!("o{}", i - 3)}),
                _ => serde_json::json!({"type": "limit", "order_id": format!("o{i}"), "account": format!("a{}", i % 5), "side": side,
                        "price": 100 + (i * 7 % 9) as u64 - 4, "quantity": 1 + (i * 3 % 7) as u64}),
            };
            serde_json::from_value(json).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_kafka_reads_avro_commands_writes_avro_reports_and_dead_letters_bad_ones() {
    let registry = schema_registry();
    let config = fresh_log_config("avro-replica").await;
    let input = key("orders");
    let engine_name = key(&unique_topic("matching-engine-avro"));
    let command_id = registry.register(&subject_for(&unique_topic("orders")), COMMAND_SCHEMA).await.unwrap();
    let command_codec =
        AvroOutput { schema_id: command_id, schema: Arc::new(codec::parse_schema(COMMAND_SCHEMA).unwrap()) };
    let report_codec = registry.output_codec(engine_name.as_str(), REPORT_SCHEMA).await.unwrap();

    // The reference: the same commands as JSON through a lone in-memory replica.
    let commands = commands(60);
    let reference_log = MemoryLog::new();
    for (i, command) in commands.iter().enumerate() {
        reference_log
            .publish(&input, vec![Event::json(input.clone(), i as i64, &serde_json::to_value(command).unwrap())]);
    }
    run_to_end(&reference_log, MatchingEngine::with_names(engine_name.clone(), input.clone()));
    let want: Vec<Report> =
        reference_log.canonical(&engine_name).iter().map(|e| serde_json::from_slice(&e.payload).unwrap()).collect();

    let mut replica_config = ReplicaConfig::new("avro-1");
    replica_config.output_codec = OutputCodec::Avro(report_codec.clone());
    let shutdown = ShutdownTrigger::new();
    let shutdown_rx = shutdown.subscribe();
    let (status_tx, _status) = watch::channel(ReplicaStatus::default());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let task = tokio::spawn(run_replica_with_registry(
        log,
        MatchingEngine::with_names(engine_name.clone(), input.clone()),
        replica_config,
        Some(registry.clone()),
        shutdown_rx,
        status_tx,
    ));

    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    for (i, command) in commands.iter().enumerate() {
        let payload = codec::encode_avro(command, &command_codec).unwrap();
        source.write(&input, vec![avro_event(&input, payload, i)]).await.unwrap();
        if i == 20 {
            source.write(&input, vec![avro_event(&input, codec::frame(2_000_000_001, &[0]), 1000)]).await.unwrap();
            source.write(&input, vec![avro_event(&input, codec::frame(command_id, &[9, 9, 9]), 1001)]).await.unwrap();
        }
    }

    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader.count(&engine_name).await.unwrap() < want.len() as u64
        || reader.count(&engine_name.dead_letters()).await.unwrap() < 2
    {
        assert!(Instant::now() < deadline, "the replica did not answer every command within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.request();
    let status = task.await.unwrap().expect("the replica ran without error");
    assert_eq!(status.stats.dead_letters, 2);

    let outputs = reader
        .stream_events(std::slice::from_ref(&engine_name), 0)
        .await
        .unwrap()
        .collect(want.len(), Duration::from_secs(10))
        .await
        .unwrap();
    let mut schemas = SchemaCache::new();
    registry.resolve([report_codec.schema_id], &mut schemas).await.unwrap();
    let got: Vec<Report> = outputs
        .iter()
        .map(|e| {
            assert_eq!(e.event.content_type, CONTENT_TYPE_AVRO);
            codec::decode(&e.event.content_type, &e.event.payload, &schemas, None).unwrap()
        })
        .collect();
    assert_eq!(got, want, "Avro in, Avro out: the same reports as the JSON reference");

    let letters = reader
        .stream_events(&[engine_name.dead_letters()], 0)
        .await
        .unwrap()
        .collect(2, Duration::from_secs(10))
        .await
        .unwrap();
    let letters: Vec<DeadLetter> = letters.iter().map(|e| serde_json::from_slice(&e.event.payload).unwrap()).collect();
    for letter in &letters {
        println!("dead letter: {}", letter.describe());
        assert_eq!(letter.reason, Reason::Schema);
    }
    assert!(
        letters[0].message.contains("schema id 2000000001 is not in the schema registry"),
        "{}",
        letters[0].message
    );
    assert!(
        letters[1].message == format!("the Avro payload with schema id {command_id} does not decode with that schema"),
        "{}",
        letters[1].message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_holds_the_batch_back_instead_of_dead_lettering() {
    let config = fresh_log_config("avro-registry-down").await;
    let input = key("orders");
    let engine_name = key("matching-engine");
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    source.write(&input, vec![avro_event(&input, codec::frame(1, &[0]), 0)]).await.unwrap();

    // Nothing listens on port 1: every lookup is refused at once, a transient failure.
    let down = Arc::new(SchemaRegistry::new("http://127.0.0.1:1/apis/ccompat/v7").unwrap());
    let shutdown = ShutdownTrigger::new();
    let shutdown_rx = shutdown.subscribe();
    let (status_tx, status) = watch::channel(ReplicaStatus::default());
    let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
    let task = tokio::spawn(run_replica_with_registry(
        log,
        MatchingEngine::new(),
        ReplicaConfig::new("waiting"),
        Some(down),
        shutdown_rx,
        status_tx,
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = status.borrow().clone();
    assert_eq!(seen.stats.inputs_processed, 0, "the batch waits for the registry: {seen:?}");
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    assert_eq!(
        reader.count(&engine_name.dead_letters()).await.unwrap(),
        0,
        "an unreachable registry is never a dead letter"
    );
    shutdown.request();
    let stopped =
        tokio::time::timeout(Duration::from_secs(15), task).await.expect("shutdown ends the retries").unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
}

/// A registry that has never heard of any schema, as a replica pointed at the wrong
/// registry sees it.
async fn registry_knowing_nothing() -> Arc<SchemaRegistry> {
    let body = r#"{"error_code":40403,"message":"No content with that id"}"#;
    Arc::new(competing_transformers_kafka::testing::registry_answering(vec![("404 Not Found", body)]).await)
}

#[tokio::test]
async fn replicas_whose_registries_disagree_follow_the_schema_decision_on_the_log() {
    let registry = schema_registry();
    let config = fresh_log_config("avro-decisions").await;
    let input = key(&unique_topic("orders-decided"));
    let v1_id = registry.register(&subject_for(input.as_str()), ORDER_V1).await.unwrap();
    let source = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "source");
    let order = codec::frame(v1_id, &[2, b'a', 6]);
    source.write(&input, vec![avro_event(&input, order.clone(), 0)]).await.unwrap();
    let reader = Pipeline::new(Arc::new(KafkaLog::connect(config.clone()).await.unwrap()), "reader");
    let (outputs, letters) = (key("note-reader"), key("note-reader").dead_letters());

    // The first replica's registry has never heard of the id: the log decides "unknown".
    let mut replicas = Vec::new();
    for (id, registry) in [("wrong-registry", registry_knowing_nothing().await), ("right-registry", registry.clone())] {
        let shutdown = ShutdownTrigger::new();
        let (status, statuses) = watch::channel(ReplicaStatus::default());
        let transform = NoteReader { input: input.clone(), reader: codec::parse_schema(ORDER_V2).unwrap() };
        let log = Arc::new(KafkaLog::connect(config.clone()).await.unwrap());
        let mut replica = ReplicaConfig::new(id);
        replica.output_codec = OutputCodec::Json;
        let task = tokio::spawn(run_replica_with_registry(
            log,
            transform,
            replica,
            Some(registry),
            shutdown.subscribe(),
            status,
        ));
        integration_tests::wait_for_count(&reader, &letters, 1, Duration::from_secs(30)).await;
        let started = Instant::now();
        while statuses.borrow().stats.inputs_processed == 0 && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replicas.push((task, shutdown, statuses));
    }
    // The second replica's registry knows the schema, yet it follows the log's decision:
    // the input is a dead letter on both, never an output on one of them.
    for (_, _, statuses) in &replicas {
        assert_eq!(statuses.borrow().stats.inputs_processed, 1);
        assert_eq!(statuses.borrow().stats.dead_letters, 1, "{:?}", statuses.borrow().stats);
    }
    assert_eq!(reader.count(&outputs).await.unwrap(), 0, "one input, one fate");
    for (task, shutdown, _) in replicas {
        shutdown.request();
        let stopped = tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap();
        assert!(stopped.is_ok(), "no replica diverged: {stopped:?}");
    }
}
