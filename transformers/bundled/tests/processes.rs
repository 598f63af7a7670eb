//! `transformer-launcher run --processes` on the real broker: a replica process SIGKILLed
//! mid-stream is started again, the output equals a lone replica's, and SIGTERM stops every
//! child. Needs `KAFKA_BOOTSTRAP` (`scripts/test.sh` sets it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use competing_transformers::replica::run_to_end;
use competing_transformers::{Event, EventSourceKey, MemoryLog};
use matching_engine::MatchingEngine;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_transformer-launcher");

fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP")
        .expect("no Kafka broker: set KAFKA_BOOTSTRAP=host:port, or run the tests with `scripts/test.sh` (scripts/kafka.sh start)")
}

fn launcher(args: &[&str]) -> String {
    let output = Command::new(LAUNCHER).args(args).args(["--bootstrap", &bootstrap()]).output().unwrap();
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn publish(topic: &str, lines: &[String]) {
    let mut child = Command::new(LAUNCHER)
        .args(["publish", "--key", "orders", "--topic", topic, "--bootstrap", &bootstrap(), "--effective-time-ms", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A process's children, from every one of its threads (each thread lists those it made).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut children: Vec<u32> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().map(|p| p.parse().unwrap()).collect::<Vec<u32>>())
        .collect();
    children.sort();
    children
}

fn orders(range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| {
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            format!(
                r#"{{"type":"limit","order_id":"o{i}","account":"a{}","side":"{side}","price":{},"quantity":{}}}"#,
                i % 3,
                98 + i % 5,
                1 + i % 4
            )
        })
        .collect()
}

/// The number of canonical `matching-engine` reports, as `status` prints it.
fn canonical_reports(topic: &str) -> u64 {
    let status = launcher(&["status", "--topic", topic]);
    status
        .lines()
        .find(|line| line.starts_with("matching-engine ") && !line.contains('%'))
        .and_then(|line| line.split_whitespace().nth(1))
        .map_or(0, |n| n.parse().unwrap())
}

/// The launcher under test, killed if the test fails before stopping it (its replica
/// processes die with it).
struct Launcher(std::process::Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_replica_process_is_restarted_and_the_output_matches_a_lone_replica() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let topic = format!("processes-{}-{nanos}", std::process::id());
    launcher(&["topics", "create", "--topic", &topic]);
    let config = std::env::temp_dir().join(format!("{topic}.toml"));
    std::fs::write(
        &config,
        format!("[kafka]\ntopic = {topic:?}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 3\n"),
    )
    .unwrap();
    let mut parent = Launcher(
        Command::new(LAUNCHER)
            .args(["run", "--processes", "--replica-id", "proc", "--bootstrap", &bootstrap(), "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let parent = &mut parent.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while children_of(parent.id()).len() < 3 {
        assert!(Instant::now() < deadline, "the launcher did not start 3 replica processes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = orders(0..60);
    publish(&topic, &all[..30]);
    let victim = children_of(parent.id())[0];
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    publish(&topic, &all[30..]);

    // The reference: one replica alone over the same inputs.
    let reference = MemoryLog::new();
    let key = EventSourceKey::new("orders").unwrap();
    for line in &all {
        reference
            .publish(&key, vec![Event::new(key.clone(), None, None, 1, "application/json", line.as_bytes().to_vec())]);
    }
    run_to_end(&reference, MatchingEngine::new());
    let want = reference.canonical(&EventSourceKey::new("matching-engine").unwrap()).len() as u64;

    let deadline = Instant::now() + Duration::from_secs(60);
    while canonical_reports(&topic) < want {
        assert!(Instant::now() < deadline, "the replicas did not answer every order");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let children = children_of(parent.id());
        if children.len() == 3 && !children.contains(&victim) {
            break;
        }
        assert!(Instant::now() < deadline, "the killed replica process was not started again: {children:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tail = launcher(&["tail", "matching-engine", "--topic", &topic]);
    let got: Vec<&str> = tail.lines().map(|line| line.splitn(4, ' ').nth(3).unwrap()).collect();
    let expected: Vec<String> = reference
        .canonical(&EventSourceKey::new("matching-engine").unwrap())
        .into_iter()
        .map(|e| String::from_utf8(e.payload).unwrap())
        .collect();
    assert_eq!(got, expected, "the canonical reports equal a lone replica's");

    assert!(Command::new("kill").args(["-TERM", &parent.id().to_string()]).status().unwrap().success());
    let status = parent.wait().unwrap();
    assert!(status.success(), "the launcher exits 0 on SIGTERM: {status}");
    assert!(children_of(parent.id()).is_empty());
    let _ = std::fs::remove_file(config);
}
