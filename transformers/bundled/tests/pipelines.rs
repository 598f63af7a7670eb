//! A log of several pipelines on the real broker: `topics create --pipeline-count 3`,
//! `publish --shard-field` and `--shard-key` route each line to its pipeline, and
//! `run --pipelines` runs replicas in the chosen pipelines only; each pipeline's canonical
//! output answers exactly that pipeline's inputs, as a lone replica's would. A log of one
//! pipeline keeps its outputs and its text. Needs `KAFKA_BOOTSTRAP` (`scripts/test.sh` sets it).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use competing_transformers::replica::run_to_end;
use competing_transformers::shard::{pipeline_of, Pipelines};
use competing_transformers::{Event, EventSourceKey, MemoryLog};
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig, Pipeline};
use matching_engine::MatchingEngine;

mod common;

use common::{bootstrap, launcher, orders, unique_topic, wait_for, Launcher, LAUNCHER};

const PIPELINES: u32 = 3;
/// The shard key of the lines published with `--shard-key`.
const BOOK: &str = "book-eu";

fn key(name: &str) -> EventSourceKey {
    EventSourceKey::new(name).unwrap()
}

/// Runs `publish` with `extra` flags on `lines`: its exit code, stdout and stderr.
fn publish_with(topic: &str, extra: &[&str], lines: &[String]) -> (Option<i32>, String, String) {
    let mut child = Command::new(LAUNCHER)
        .args(["publish", "--key", "orders", "--topic", topic, "--bootstrap", &bootstrap(), "--effective-time-ms", "1"])
        .args(extra)
        .env_remove("KAFKA_PIPELINES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

/// The matching engine's canonical reports over `inputs`, from one replica alone.
fn reference(inputs: &[String]) -> Vec<Vec<u8>> {
    let log = MemoryLog::new();
    let orders = key("orders");
    for line in inputs {
        log.publish(
            &orders,
            vec![Event::new(orders.clone(), None, None, 1, "application/json", line.as_bytes().to_vec())],
        );
    }
    run_to_end(&log, MatchingEngine::new());
    log.canonical(&key("matching-engine")).into_iter().map(|event| event.payload).collect()
}

/// The canonical payloads of `name` in pipeline `pipeline`, read with the library.
fn canonical(topic: &str, pipelines: u32, pipeline: u32, name: &str) -> Vec<Vec<u8>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut config = KafkaLogConfig::new(bootstrap(), topic);
        config.pipelines = Pipelines::new(pipelines).unwrap();
        let log = Arc::new(KafkaLog::connect(config.pipeline(pipeline)).await.unwrap());
        let reader = Pipeline::new(log, "pipelines-test");
        let count = reader.count(&key(name)).await.unwrap() as usize;
        let mut stream = reader.stream_events(&[key(name)], 0).await.unwrap();
        let events = stream.collect(count, Duration::from_secs(10)).await.unwrap();
        events.into_iter().map(|canonical| canonical.event.payload).collect()
    })
}

/// A port nobody listens on now.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A GET over plain HTTP/1.1: the status code and the body.
fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// A `run` of the matching engine, 2 replicas per chosen pipeline, stderr read on a thread.
struct Run {
    launcher: Launcher,
    stderr: std::thread::JoinHandle<String>,
}

fn run(config: &std::path::Path, pipelines: &str) -> Run {
    let mut child = Command::new(LAUNCHER)
        .args(["run", "--replica-id", "pt", "--bootstrap", &bootstrap(), "--pipelines", pipelines, "--config"])
        .arg(config)
        .env_remove("SCHEMA_REGISTRY_URL")
        .env_remove("KAFKA_TOPIC")
        .env_remove("KAFKA_PIPELINES")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    Run { launcher: Launcher(child), stderr }
}

impl Run {
    /// SIGTERM, a clean exit, and what it said.
    fn stop(mut self) -> String {
        let pid = self.launcher.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.launcher.0.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        assert!(status.success(), "run exits 0 on SIGTERM: {status}\n{stderr}");
        stderr
    }
}

/// Publishes orders to a log of three pipelines by `--shard-field /account`, then by
/// `--shard-key`; returns each pipeline's inputs, checked on the log, in publishing order.
fn publish_three_ways(topic: &str) -> Vec<Vec<String>> {
    let count = PIPELINES.to_string();
    // Without a route nothing is written.
    let (code, _, stderr) = publish_with(topic, &["--pipeline-count", &count], &orders(0..3, 6));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--shard-key TEXT") && stderr.contains("--shard-field POINTER"), "{stderr}");

    let three = Pipelines::new(PIPELINES).unwrap();
    let by_field = orders(0..36, 6);
    let (code, stdout, stderr) =
        publish_with(topic, &["--pipeline-count", &count, "--shard-field", "/account"], &by_field);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.lines().all(|line| line.starts_with('p')), "each line names its pipeline:\n{stdout}");
    assert!(
        stderr.contains("published 36 event(s) under `orders`") && stderr.contains("lines per pipeline: p"),
        "{stderr}"
    );
    let by_key = orders(36..48, 6);
    let (code, stdout, stderr) = publish_with(topic, &["--pipeline-count", &count, "--shard-key", BOOK], &by_key);
    assert_eq!(code, Some(0), "{stderr}");
    let book = pipeline_of(BOOK.as_bytes(), three);
    assert!(stdout.lines().all(|line| line.starts_with(&format!("p{book} line "))), "{stdout}");
    assert!(stderr.contains(&format!("lines per pipeline: p{book} 12")), "{stderr}");

    // Each pipeline's inputs, in the order they were published.
    let inputs: Vec<Vec<String>> = three
        .all()
        .map(|pipeline| {
            let routed = by_field.iter().filter(|line| {
                let account = serde_json::from_str::<serde_json::Value>(line).unwrap()["account"].clone();
                pipeline_of(account.as_str().unwrap().as_bytes(), three) == pipeline
            });
            let keyed = by_key.iter().filter(|_| book == pipeline);
            routed.chain(keyed).cloned().collect()
        })
        .collect();
    for (pipeline, lines) in inputs.iter().enumerate() {
        let on_log = canonical(topic, PIPELINES, pipeline as u32, "orders");
        let want: Vec<&[u8]> = lines.iter().map(|line| line.as_bytes()).collect();
        assert_eq!(on_log.iter().map(Vec::as_slice).collect::<Vec<_>>(), want, "pipeline {pipeline}'s inputs");
    }
    assert!(inputs.iter().filter(|lines| !lines.is_empty()).count() >= 2, "the accounts spread: {inputs:?}");
    inputs
}

/// Waits for `/readyz` to answer 200, and checks every replica of every pipeline has its
/// metrics with its `pipeline` label.
fn check_readiness_and_metrics(address: &str) {
    wait_for("/readyz never turned 200", Duration::from_secs(30), || {
        get(address, "/readyz").is_some_and(|(code, _)| code == 200)
    });
    let metrics = get(address, "/metrics").unwrap().1;
    for pipeline in 0..PIPELINES {
        for n in [1, 2] {
            let labels = format!(
                r#"transformer_lag_records{{transformer="matching-engine",replica="pt-matching-engine-p{pipeline}-{n}",pipeline="{pipeline}"}}"#
            );
            assert!(metrics.contains(&labels), "{labels} in\n{metrics}");
        }
    }
}

#[test]
fn each_pipeline_answers_exactly_its_own_inputs() {
    let topic = unique_topic("pipelines");
    let count = PIPELINES.to_string();
    let created = launcher(&["topics", "create", "--topic", &topic, "--pipeline-count", &count]);
    assert!(
        created.contains("3 partitions (a pipeline each)") && created.contains("leaders: p0 on broker"),
        "{created}"
    );
    let inputs = publish_three_ways(&topic);
    let three = Pipelines::new(PIPELINES).unwrap();

    let config = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntopic = {topic:?}\npipelines = {PIPELINES}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 2\n"
        ),
    )
    .unwrap();
    let answered = |pipeline: u32| {
        let want = reference(&inputs[pipeline as usize]);
        canonical(&topic, PIPELINES, pipeline, "matching-engine") == want
    };

    // Pipeline 1 alone: the others stay unanswered.
    let only = run(&config, "1");
    wait_for("pipeline 1 was not answered", Duration::from_secs(60), || answered(1));
    let stderr = only.stop();
    assert!(stderr.contains("pt-matching-engine-p1-1") && stderr.contains("pt-matching-engine-p1-2"), "{stderr}");
    assert!(!stderr.contains("-p0-") && !stderr.contains("-p2-"), "{stderr}");
    for pipeline in [0, 2] {
        assert!(canonical(&topic, PIPELINES, pipeline, "matching-engine").is_empty(), "pipeline {pipeline} ran");
    }

    // Every pipeline: each answers exactly its own inputs, as one replica alone would; the
    // metrics and the readiness cover every replica of every pipeline.
    let address = free_address();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[metrics]\nlisten = {address:?}\n"));
    std::fs::write(&config, text).unwrap();
    let all = run(&config, "0-2");
    wait_for("not every pipeline was answered", Duration::from_secs(90), || three.all().all(answered));
    check_readiness_and_metrics(&address);
    let stderr = all.stop();
    for pipeline in three.all() {
        assert!(stderr.contains(&format!("pt-matching-engine-p{pipeline}-2")), "{stderr}");
    }
    let _ = std::fs::remove_file(config);
}

#[test]
fn a_log_of_one_pipeline_keeps_its_outputs_and_text() {
    let topic = unique_topic("one-pipeline");
    let created = launcher(&["topics", "create", "--topic", &topic]);
    assert!(created.contains(": 1 partition, replication factor") && !created.contains("leaders:"), "{created}");
    let lines = orders(0..12, 6);
    let (code, stdout, stderr) = publish_with(&topic, &[], &lines);
    assert_eq!(code, Some(0), "{stderr}");
    let want: Vec<String> = (0..12).map(|n| format!("line {}: written at offset {n}", n + 1)).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want);
    assert!(stderr.ends_with("published 12 event(s) under `orders` from stdin\n"), "{stderr}");

    let config = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(
        &config,
        format!("[kafka]\ntopic = {topic:?}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 1\n"),
    )
    .unwrap();
    let one = run(&config, "0");
    let want = reference(&lines);
    wait_for("the orders were not answered", Duration::from_secs(60), || {
        canonical(&topic, 1, 0, "matching-engine") == want
    });
    let stderr = one.stop();
    assert!(stderr.contains("pt-matching-engine-1 ") && !stderr.contains("-p0-"), "ids keep their shape: {stderr}");
    let tail = launcher(&["tail", "matching-engine", "--topic", &topic]);
    let got: Vec<&str> = tail.lines().map(|line| line.splitn(4, ' ').nth(3).unwrap()).collect();
    let want: Vec<String> = want.into_iter().map(|payload| String::from_utf8(payload).unwrap()).collect();
    assert_eq!(got, want, "tail prints the same reports, unprefixed");
    let _ = std::fs::remove_file(config);
}
