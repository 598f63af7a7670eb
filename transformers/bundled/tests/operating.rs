//! Operating the launcher like a Kafka service, on the real broker: `run` serves Prometheus
//! metrics and readiness, logs JSON lines with `--log-format json`, and `status --output json`
//! prints one JSON document. Needs `KAFKA_BOOTSTRAP` (`scripts/test.sh` sets it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{bootstrap, launcher, publish, unique_topic, wait_for, Launcher, LAUNCHER};

const ORDERS: usize = 12;

fn publish_orders(topic: &str) {
    let lines: Vec<String> = (0..ORDERS)
        .map(|i| {
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            format!(
                r#"{{"type":"limit","order_id":"o{i}","account":"a{}","side":"{side}","price":100,"quantity":1}}"#,
                i % 3
            )
        })
        .collect();
    publish(topic, &lines);
}

/// A GET over plain HTTP/1.1: the status code and the body.
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The values of one metric, one per replica, from the exposition text.
fn values(metrics: &str, name: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// A port nobody listens on now.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn run_serves_metrics_and_readiness_and_logs_json() {
    let topic = unique_topic("operating");
    launcher(&["topics", "create", "--topic", &topic]);
    let address = free_address();
    let config = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntopic = {topic:?}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 2\n\n[metrics]\nlisten = {address:?}\n"
        ),
    )
    .unwrap();
    let mut run = Launcher(
        Command::new(LAUNCHER)
            .args(["run", "--log-format", "json", "--replica-id", "ops", "--bootstrap", &bootstrap(), "--config"])
            .arg(&config)
            .env_remove("SCHEMA_REGISTRY_URL")
            .env_remove("KAFKA_TOPIC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = run.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    wait_for("/healthz never answered 200", Duration::from_secs(20), || {
        get(&address, "/healthz").is_some_and(|(code, _)| code == 200)
    });
    wait_for("/readyz never turned 200", Duration::from_secs(30), || {
        get(&address, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    publish_orders(&topic);
    let mut metrics = String::new();
    wait_for("the replicas did not apply every order", Duration::from_secs(60), || {
        metrics = get(&address, "/metrics").map(|(_, body)| body).unwrap_or_default();
        let applied = values(&metrics, "transformer_inputs_applied_total");
        // Races are counted once a replica reads its outputs back: every canonical event on
        // the DET's streams was won by exactly one replica.
        let won: f64 = values(&metrics, "transformer_races_won_total").iter().sum();
        let first = |name: &str| values(&metrics, name).first().copied().unwrap_or(0.0);
        let streams = first("transformer_outputs_total") + first("transformer_dead_letters_total");
        applied.len() == 2 && applied.iter().all(|n| *n == ORDERS as f64) && won > 0.0 && won == streams
    });
    assert!(values(&metrics, "transformer_races_won_total").iter().sum::<f64>() > 0.0, "{metrics}");
    assert_eq!(values(&metrics, "transformer_catching_up"), [0.0, 0.0], "{metrics}");
    assert_eq!(values(&metrics, "transformer_divergences_total"), [0.0, 0.0], "{metrics}");
    assert!(metrics.contains(r#"transformer="matching-engine",replica="ops-matching-engine-1""#), "{metrics}");
    assert!(metrics.contains("# TYPE transformer_lag_records gauge"), "{metrics}");

    assert!(Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status().unwrap().success());
    assert!(run.0.wait().unwrap().success());
    let stderr = reader.join().unwrap();
    // Every line is one JSON object: the race table, text for people, is left out.
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    assert!(logs.iter().any(|log| log["level"] == "INFO" && log["fields"]["message"].is_string()), "{stderr}");
    let _ = std::fs::remove_file(config);
}

#[test]
fn status_prints_one_json_document() {
    let topic = unique_topic("status-json");
    launcher(&["topics", "create", "--topic", &topic]);
    publish_orders(&topic);
    let text = launcher(&["status", "--topic", &topic, "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"));
    assert_eq!(status["topic"], topic.as_str());
    assert_eq!(status["records"], ORDERS as u64);
    assert_eq!(status["malformed"], 0);
    let orders = status["keys"].as_array().unwrap().iter().find(|key| key["key"] == "orders").unwrap();
    assert_eq!(orders["canonical"], ORDERS as u64);
    assert_eq!(orders["writers"][0]["won"], ORDERS as u64);
    assert_eq!(status["foreign_writes"].as_array().map(Vec::len), Some(0));
}

#[test]
fn a_failure_is_one_json_line_with_log_format_json() {
    let output = Command::new(LAUNCHER)
        .args(["--log-format", "json", "topics", "check", "--bootstrap", "127.0.0.1:1", "--topic", "nowhere"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let last = lines.last().unwrap_or_else(|| panic!("no log line: {stderr}"));
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["fields"]["exit_code"], 1);
    assert!(last["fields"]["message"].as_str().unwrap().contains("cannot reach Kafka"), "{stderr}");
}

/// Each line of `text` as one JSON object, or a panic naming the line.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))).collect()
}

#[test]
fn tail_dead_letters_and_topics_print_json() {
    let topic = unique_topic("json-output");
    let created: serde_json::Value =
        serde_json::from_str(&launcher(&["topics", "create", "--topic", &topic, "--output", "json"])).unwrap();
    assert_eq!(created["topic"], topic.as_str());
    assert_eq!(created["partitions"], 1);
    assert_eq!(created["retention_ms"], -1);
    assert!(created["snapshot_topics"]["snapshots"]["topic"].is_string(), "{created}");
    let checked: serde_json::Value =
        serde_json::from_str(&launcher(&["topics", "check", "--topic", &topic, "--output", "json"])).unwrap();
    assert_eq!(checked, created);

    publish_orders(&topic);
    let events = json_lines(&launcher(&["tail", "orders", "--topic", &topic, "--output", "json"]));
    assert_eq!(events.len(), ORDERS);
    assert_eq!(events[0]["index"], 0);
    assert_eq!(events[0]["key"], "orders");
    assert_eq!(events[0]["content_type"], "application/json");
    assert_eq!(events[0]["payload"]["order_id"], "o0", "the payload is JSON, not a string: {}", events[0]);
    assert_eq!(events[ORDERS - 1]["payload"]["order_id"], format!("o{}", ORDERS - 1));

    // Dead letters of a DET this launcher does not register: anyone may write them.
    let letter = r#"{"transformer":"fixture","reason":"decode","message":"not JSON","input":{"key":"in","index":3,"offset":7,"effective_time_ms":1,"content_type":"text/plain","payload_base64":"eA=="}}"#;
    let mut child = Command::new(LAUNCHER)
        .args(["publish", "--key", "fixture.dead-letters", "--topic", &topic, "--bootstrap", &bootstrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{letter}\n\"unreadable\"\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let letters = json_lines(&launcher(&[
        "dead-letters",
        "list",
        "--transformer",
        "fixture",
        "--topic",
        &topic,
        "--output",
        "json",
    ]));
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["index"], 0);
    assert_eq!(letters[0]["dead_letter"]["reason"], "decode");
    assert_eq!(letters[0]["dead_letter"]["input"]["offset"], 7);
    assert!(letters[0]["raw"].is_null() && letters[0]["detail"].is_null(), "{}", letters[0]);
    assert!(letters[1]["dead_letter"].is_null(), "{}", letters[1]);
    assert_eq!(letters[1]["raw"], "\"unreadable\"");
}

#[test]
fn completions_and_the_man_page_print_from_the_binary() {
    for (args, expected) in [
        (&["completions", "bash"][..], "_transformer__launcher()"),
        (&["completions", "fish"][..], "complete -c transformer-launcher"),
        (&["man"][..], ".TH transformer-launcher 1"),
    ] {
        let output = Command::new(LAUNCHER).args(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains(expected), "{args:?} printed no {expected:?}");
    }
}
