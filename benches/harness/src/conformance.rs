//! The check that the Kafka Streams peer's matching engine (`benches/kafka-streams`, Java) is
//! the same transform as the Rust one: after a run, its output topic must hold exactly the
//! reports that [`MatchingEngine`] makes of the same input topic, in the same order, each
//! keyed by its input's key.
//!
//! Two uses: after every `streams-matching*` scenario, on the benchmark's load (limit and market
//! orders that cross, nothing else); and `bench conformance`, on [`edge_orders`], which reach
//! every rule the load does not (cancels, rejections, the fill limit, u64 extremes, inputs the
//! framework dead-letters).
//!
//! The Rust engine runs in this process through [`Transform::apply`], as a replica calls it
//! (JSON decoding and encoding included). Reports are compared as parsed JSON values, not
//! bytes: two serializers may order an object's fields differently.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use competing_transformers::codec::NO_SCHEMAS;
use competing_transformers::event::CONTENT_TYPE_JSON;
use competing_transformers::{Digest, EventSourceKey, Input, Outputs, Transform};
use competing_transformers_kafka::{admin, KafkaLogConfig};
use matching_engine::{MatchingEngine, FILLS_PER_ORDER_MAX};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::framework::Det;
use crate::load;
use crate::procs::Proc;
use crate::raw::{self, PlainRecord};

/// The outcome of one check.
pub struct Verdict {
    /// Whether the two output sequences are equal.
    pub equal: bool,
    /// One line for the scenario's notes: yes or no, and the first difference.
    pub note: String,
}

/// Reads `input` and `output` (read_committed, partition 0, all of it) and compares the
/// outputs with the Rust engine's for the same inputs.
pub fn matching_engine(bootstrap: &str, input: &str, output: &str) -> anyhow::Result<Verdict> {
    let inputs = raw::read_all(bootstrap, input)?;
    let outputs = raw::read_all(bootstrap, output)?;
    Ok(compare(&rust_reports(&inputs), &outputs, inputs.len()))
}

/// One report of the Rust engine, keyed as the Java engine keys it: by its input's key.
struct Expected {
    key: Option<Vec<u8>>,
    report: Value,
}

/// Every report the Rust engine makes of `inputs`, in order. An input it rejects with an error
/// is dead-lettered by the framework: no report (the Java engine skips it too).
fn rust_reports(inputs: &[PlainRecord]) -> Vec<Expected> {
    let mut engine = MatchingEngine::new();
    let key = EventSourceKey::new("orders").expect("a valid constant key");
    let mut reports = Vec::new();
    for (index, record) in inputs.iter().enumerate() {
        let input = Input {
            key: &key,
            index: index as u64,
            offset: index as u64,
            effective_time_ms: 0,
            content_type: CONTENT_TYPE_JSON,
            payload: record.value.as_deref().unwrap_or_default(),
            digest: Digest([0; 32]),
            schemas: &NO_SCHEMAS,
        };
        let mut out = Outputs::default();
        if engine.apply(&input, &mut out).is_ok() {
            for event in out.into_events() {
                let report = serde_json::from_slice(&event.payload).expect("the engine writes JSON reports");
                reports.push(Expected { key: record.key.clone(), report });
            }
        }
    }
    reports
}

/// Compares the reports one by one and names the first that differs.
fn compare(expected: &[Expected], actual: &[PlainRecord], inputs: usize) -> Verdict {
    let seq = |key: &Option<Vec<u8>>| {
        key.as_deref().and_then(load::seq_of).map_or("no key".to_string(), |seq| format!("input {seq}"))
    };
    let text = |value: &Option<Vec<u8>>| value.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
    for (i, (want, got)) in expected.iter().zip(actual).enumerate() {
        let got_report = got.value.as_deref().map(serde_json::from_slice::<Value>);
        if want.key == got.key && matches!(&got_report, Some(Ok(report)) if *report == want.report) {
            continue;
        }
        return Verdict {
            equal: false,
            note: format!(
                "outputs equal the Rust engine's: no (first difference at report #{i}: Kafka Streams wrote {} for {}, the Rust engine {} for {})",
                text(&got.value),
                seq(&got.key),
                want.report,
                seq(&want.key)
            ),
        };
    }
    if expected.len() != actual.len() {
        let (longer, extra) = if actual.len() > expected.len() {
            ("Kafka Streams", text(&actual[expected.len()].value))
        } else {
            ("the Rust engine", expected[actual.len()].report.to_string())
        };
        return Verdict {
            equal: false,
            note: format!(
                "outputs equal the Rust engine's: no ({} reports from Kafka Streams, {} from the Rust engine for {inputs} inputs; the first {} are equal, then {longer} has {extra})",
                actual.len(),
                expected.len(),
                expected.len().min(actual.len())
            ),
        };
    }
    Verdict {
        equal: true,
        note: format!(
            "outputs equal the Rust engine's: yes ({} reports for {inputs} inputs, keys and JSON values)",
            actual.len()
        ),
    }
}

/// `bench conformance`: one Kafka Streams instance of the matching engine (`jar`) fed
/// [`edge_orders`], its output compared with the Rust engine's. Logs and state go under `work`.
pub async fn check_edges(bootstrap: &str, jar: &Path, work: &Path) -> anyhow::Result<Verdict> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    let app = format!("bench-conformance-{stamp}");
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    admin::create_topic(&KafkaLogConfig::new(bootstrap, &input)).await?;
    admin::create_topic(&KafkaLogConfig::new(bootstrap, &output)).await?;
    std::fs::create_dir_all(work)?;
    let args = crate::streams_args(jar, Det::MatchingEngine, bootstrap, &app, &input, &output, &work.join("ks-state"));
    let mut streams = Proc::spawn("ks", Path::new("java"), args, vec![], work.join("ks.log"))?;
    let checked = async {
        streams.wait_for("RUNNING active=1").await?;
        let orders = edge_orders();
        let producer: FutureProducer = raw::producer_config(bootstrap).create()?;
        for (seq, order) in orders.iter().enumerate() {
            let key = (seq as u64).to_be_bytes();
            let delivery = producer
                .send_result(FutureRecord::<[u8], [u8]>::to(&input).partition(0).key(&key).payload(order))
                .map_err(|(error, _)| error)?;
            // One at a time: this check is about what is computed, not how fast.
            delivery.await.context("producer dropped")?.map_err(|(error, _)| error)?;
        }
        let expected = orders.iter().enumerate().map(|(seq, order)| PlainRecord {
            key: Some((seq as u64).to_be_bytes().to_vec()),
            value: Some(order.clone()),
        });
        let expected = rust_reports(&expected.collect::<Vec<_>>()).len();
        // Until Kafka Streams has written as many reports, then a second more for any extra.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (bootstrap_, output_) = (bootstrap.to_string(), output.clone());
        let count = move || raw::read_all(&bootstrap_, &output_).map(|records| records.len());
        while tokio::task::spawn_blocking(count.clone()).await?? < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (bootstrap, input, output) = (bootstrap.to_string(), input.clone(), output.clone());
        tokio::task::spawn_blocking(move || matching_engine(&bootstrap, &input, &output)).await?
    }
    .await;
    streams.stop(Duration::from_secs(15)).await;
    checked
}

/// A fixed sequence of matching-engine inputs that reaches every rule: 2,000 seeded random
/// limit, market and cancel orders (reused ids, cancels of resting, filled and unknown ids,
/// zero quantities and prices); a sweep past [`FILLS_PER_ORDER_MAX`]; u64 extremes; JSON that
/// serde_json accepts in unusual shapes; and payloads the framework dead-letters (not JSON,
/// unknown type, bad types, `-0`, empty or over-long ids, trailing data, repeated fields, an
/// unpaired surrogate, a number out of range, nesting past serde_json's limit).
pub fn edge_orders() -> Vec<Vec<u8>> {
    let mut orders = random_orders();
    orders.extend(rule_orders());
    orders.extend(unusual_valid_orders());
    orders.extend(dead_lettered_orders());
    orders.into_iter().map(String::into_bytes).collect()
}

/// 2,000 seeded random limit, market and cancel orders: reused ids, cancels of resting, filled
/// and unknown ids, zero quantities and prices.
fn random_orders() -> Vec<String> {
    let mut orders: Vec<String> = Vec::new();
    // xorshift64: the same sequence on every run.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    for i in 0..2_000u64 {
        let id = if i > 0 && next(10) == 0 { format!("e{}", next(i)) } else { format!("e{i}") };
        let side = ["buy", "sell"][next(2) as usize];
        let account = ["alice", "bob", "carol", "dave"][next(4) as usize];
        let quantity = if next(30) == 0 { 0 } else { 1 + next(20) };
        let order = match next(20) {
            0..=9 => {
                let price = if next(30) == 0 { 0 } else { 95 + next(11) };
                json!({"type": "limit", "order_id": id, "account": account, "side": side, "price": price, "quantity": quantity})
            }
            10..=13 => {
                json!({"type": "market", "order_id": id, "account": account, "side": side, "quantity": quantity})
            }
            _ => json!({"type": "cancel", "order_id": format!("e{}", next(i + 5))}),
        };
        orders.push(order.to_string());
    }
    orders
}

/// A limit order of account `x`.
fn limit(id: &str, side: &str, price: u64, quantity: u64) -> String {
    json!({"type": "limit", "order_id": id, "account": "x", "side": side, "price": price, "quantity": quantity})
        .to_string()
}

/// A market order of account `y`.
fn market(id: &str, side: &str, quantity: u64) -> String {
    json!({"type": "market", "order_id": id, "account": "y", "side": side, "quantity": quantity}).to_string()
}

/// A cancel carrying an unknown field nested `depth` deep.
fn nested(id: &str, depth: usize) -> String {
    format!(r#"{{"type":"cancel","order_id":"{id}","junk":{}{}}}"#, "[".repeat(depth - 1), "]".repeat(depth - 1))
}

/// The fill limit and u64 extremes.
fn rule_orders() -> Vec<String> {
    // Empty the book, then one taker against more makers than it may fill.
    let mut orders = vec![market("sweep-b", "buy", 1_000_000), market("sweep-s", "sell", 1_000_000)];
    orders.extend((0..=FILLS_PER_ORDER_MAX).map(|k| limit(&format!("f{k}"), "sell", 100, 1)));
    orders.extend([limit("f-taker", "buy", 100, 1_000), market("f-rest", "buy", 5)]);
    // u64 extremes: a maker at the highest price, then quantities that only fit in a u64.
    orders.extend([
        limit("u-bid", "buy", u64::MAX, 1),
        limit("u-ask", "sell", 1, 2),
        json!({"type": "cancel", "order_id": "u-ask"}).to_string(),
        limit("u-big", "sell", u64::MAX, u64::MAX),
        market("u-take", "buy", u64::MAX - 1),
        market("u-rest", "buy", 3),
    ]);
    orders
}

/// Valid after all: fields in any order, unknown fields (repeated, nested, -0, a surrogate
/// pair), a field of another command type repeated, escapes, padding, 64-byte ids, JSON
/// nested as deep as serde_json goes.
fn unusual_valid_orders() -> Vec<String> {
    vec![
        r#"{"order_id":"t1","type":"cancel","note":"unknown","note":{"a":[-0,"\ud83d\ude00"]}}"#.to_string(),
        r#"{"type":"cancel","order_id":"t2","price":1,"price":2}"#.to_string(),
        "  {\"type\":\"cancel\",\"order_id\":\"\\u00e9t\\u00e9\"}\n".to_string(),
        limit(&"é".repeat(32), "buy", 1, 1),
        nested("t3", 127),
    ]
}

/// Dead-lettered by the framework: no report.
fn dead_lettered_orders() -> Vec<String> {
    let mut orders: Vec<String> = [
        "not json",
        "",
        "null",
        "[1,2]",
        r#"{"type":"nope","order_id":"d1"}"#,
        r#"{"type":"cancel"}"#,
        r#"{"type":"limit","order_id":"","account":"a","side":"buy","price":1,"quantity":1}"#,
        r#"{"type":"limit","order_id":"d2","account":"a","side":"up","price":1,"quantity":1}"#,
        r#"{"type":"limit","order_id":"d3","account":"a","side":"buy","price":1.5,"quantity":1}"#,
        r#"{"type":"limit","order_id":"d4","account":"a","side":"buy","price":1,"quantity":-1}"#,
        r#"{"type":"limit","order_id":"d5","account":"a","side":"buy","price":18446744073709551616,"quantity":1}"#,
        r#"{"type":"limit","order_id":"d6","account":"a","side":"buy","price":"1","quantity":1}"#,
        r#"{"type":"limit","order_id":"d7","account":"a","side":"buy","price":1}"#,
        r#"{"type":"limit","order_id":"d8","account":"a","side":"buy","price":1,"quantity":1e2}"#,
        r#"{"type":"cancel","order_id":"d9"} trailing"#,
        r#"{"type":"cancel","order_id":"d10","order_id":"d11"}"#,
        r#"{"type":"cancel","type":"cancel","order_id":"d12"}"#,
        r#"{"type":"cancel","order_id":"d13","junk":"\ud800"}"#,
        r#"{"type":"cancel","order_id":"d14","junk":1e400}"#,
        r#"{"type":"limit","order_id":"d15","account":"a","side":"buy","price":-0,"quantity":1}"#,
    ]
    .map(String::from)
    .to_vec();
    orders.push(nested("d16", 128));
    orders.push(limit(&"é".repeat(33), "buy", 1, 1));
    orders.push(limit("d17", "buy", 1, 1).replace("\"account\":\"x\"", &format!("\"account\":\"{}\"", "a".repeat(65))));
    orders
}
