//! A real Prometheus (Debian's package, `scripts/prometheus.sh`) scrapes a launcher under
//! load, and its HTTP API answers for the replicas' lag and races won. Needs `KAFKA_BOOTSTRAP`,
//! `PROMETHEUS_URL` and `PROMETHEUS_TARGETS_DIR` (`scripts/test.sh` sets them all); fails,
//! never skips, without them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{publish, unique_topic, wait_for, Launcher, LAUNCHER};

/// Orders published while the launcher runs: enough to keep it busy across several scrapes.
const ORDERS: usize = 5_000;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: this test needs a Kafka broker and a real Prometheus; run it with `scripts/test.sh`, or start them with `scripts/kafka.sh start` and `eval \"export $(scripts/prometheus.sh start)\"`")
    })
}

fn publish_orders(topic: &str) {
    let lines: Vec<String> = (0..ORDERS)
        .map(|i| {
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            format!(
                r#"{{"type":"limit","order_id":"o{i}","account":"a{}","side":"{side}","price":{},"quantity":1}}"#,
                i % 7,
                100 + i % 5
            )
        })
        .collect();
    publish(topic, &lines);
}

/// Characters of a PromQL query that stay as they are in a URL's query string.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// Prometheus's answer to an instant query: each series' labels and value.
fn query(prometheus: &str, promql: &str) -> Vec<(serde_json::Value, f64)> {
    let address = prometheus.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("Prometheus at {prometheus}: {error}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // HTTP/1.0: the server closes the connection after one answer, never chunked.
    let request = format!("GET /api/v1/query?query={} HTTP/1.0\r\nHost: {address}\r\n\r\n", url_encode(promql));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|error| panic!("{error}: {answer}"));
    assert_eq!(json["status"], "success", "{promql}: {json}");
    json["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|series| (series["metric"].clone(), series["value"][1].as_str().unwrap().parse().unwrap()))
        .collect()
}

/// The launcher under test and its scrape target file, both removed however the test ends.
struct Scraped {
    _launcher: Launcher,
    target: std::path::PathBuf,
}

impl Drop for Scraped {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.target);
    }
}

#[test]
fn a_real_prometheus_scrapes_lag_and_races_won() {
    let (bootstrap, prometheus, targets) =
        (env("KAFKA_BOOTSTRAP"), env("PROMETHEUS_URL"), env("PROMETHEUS_TARGETS_DIR"));
    let topic = unique_topic("prometheus");
    let created = Command::new(LAUNCHER)
        .args(["topics", "create", "--topic", &topic, "--bootstrap", &bootstrap])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let config = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(
        &config,
        format!("[kafka]\ntopic = {topic:?}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 2\n\n[metrics]\nlisten = {address:?}\n"),
    )
    .unwrap();
    let launcher = Command::new(LAUNCHER)
        .args(["run", "--replica-id", "prom", "--bootstrap", &bootstrap, "--config"])
        .arg(&config)
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("KAFKA_TOPIC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Written whole, then renamed in: Prometheus never reads half a file.
    let target = std::path::Path::new(&targets).join(format!("{topic}.json"));
    let _scraped = Scraped { _launcher: Launcher(launcher), target: target.clone() };
    let partial = target.with_extension("tmp");
    std::fs::write(&partial, format!(r#"[{{"targets":["{address}"],"labels":{{"test":"{topic}"}}}}]"#)).unwrap();
    std::fs::rename(&partial, &target).unwrap();

    let selector = format!(r#"{{test="{topic}"}}"#);
    wait_for("Prometheus never scraped the launcher up", Duration::from_secs(60), || {
        query(&prometheus, &format!("up{selector}")).first().is_some_and(|(_, up)| *up == 1.0)
    });
    publish_orders(&topic);
    let applied = format!("transformer_inputs_applied_total{selector}");
    wait_for("Prometheus never saw both replicas apply every order", Duration::from_secs(120), || {
        let series = query(&prometheus, &applied);
        series.len() == 2 && series.iter().all(|(_, value)| *value == ORDERS as f64)
    });
    // Every canonical event on the engine's streams was won by exactly one replica.
    let won_query = format!("sum(transformer_races_won_total{selector})");
    let streams_query =
        format!("max(transformer_outputs_total{selector}) + max(transformer_dead_letters_total{selector})");
    let mut won = 0.0;
    wait_for("no race won, or races won never matched the canonical events", Duration::from_secs(30), || {
        won = query(&prometheus, &won_query).first().map_or(-1.0, |series| series.1);
        // Outputs are read back after their inputs are applied: wait for them too.
        won > 0.0 && query(&prometheus, &streams_query).first().is_some_and(|streams| streams.1 == won)
    });
    // Lag: one series per replica, scraped through the load; caught up at the end.
    wait_for("the replicas' lag never reached 0", Duration::from_secs(30), || {
        let lag = query(&prometheus, &format!("transformer_lag_records{selector}"));
        lag.len() == 2 && lag.iter().all(|(_, value)| *value == 0.0)
    });
    let lag_seen = query(&prometheus, &format!("max_over_time(transformer_lag_records{selector}[5m])"));
    assert_eq!(lag_seen.len(), 2, "{lag_seen:?}");
    for (labels, _) in &lag_seen {
        assert_eq!(labels["transformer"], "matching-engine", "{labels}");
        assert!(labels["replica"].as_str().unwrap().starts_with("prom-matching-engine-"), "{labels}");
    }
    // Input→canonical-output latency, and librdkafka's own statistics (every 5 s).
    let latency = query(&prometheus, &format!("sum(transformer_output_latency_seconds_count{selector})"));
    assert!(latency.first().is_some_and(|series| series.1 > 0.0), "no latency observed: {latency:?}");
    wait_for("librdkafka's statistics never reached Prometheus", Duration::from_secs(30), || {
        query(&prometheus, &format!("transformer_kafka_broker_rtt_seconds{selector}")).len() == 2
    });
    let _ = std::fs::remove_file(config);
}
