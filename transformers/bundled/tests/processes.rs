//! `transformer-launcher run --processes` on the real broker: a replica process SIGKILLed
//! mid-stream is started again, the output equals a lone replica's, and SIGTERM stops every
//! child; a child that exits with a permanent code (a configuration error) is not started
//! again, the others are stopped and the launcher exits with that code. Needs
//! `KAFKA_BOOTSTRAP` (`scripts/test.sh` sets it).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use competing_transformers::replica::run_to_end;
use competing_transformers::{Event, EventSourceKey, MemoryLog};
use matching_engine::MatchingEngine;

mod common;

use common::{bootstrap, launcher, orders, publish, unique_topic, wait_for, Launcher, LAUNCHER};

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

/// The number of canonical `matching-engine` reports, as `status` prints it.
fn canonical_reports(topic: &str) -> u64 {
    let status = launcher(&["status", "--topic", topic]);
    status
        .lines()
        .find(|line| line.starts_with("matching-engine ") && !line.contains('%'))
        .and_then(|line| line.split_whitespace().nth(1))
        .map_or(0, |n| n.parse().unwrap())
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
    wait_for("the launcher did not start 3 replica processes", Duration::from_secs(20), || {
        children_of(parent.id()).len() >= 3
    });
    let all = orders(0..60, 3);
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

    wait_for("the replicas did not answer every order", Duration::from_secs(60), || canonical_reports(&topic) >= want);
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

/// Runs `run --processes` with `config` until it exits on its own (at most `limit`), and
/// returns its exit code and its stderr (its children's too).
fn run_processes_until_exit(config: &str, limit: Duration) -> (Option<i32>, String) {
    let path = std::env::temp_dir().join(format!("{}.toml", unique_topic("permanent")));
    std::fs::write(&path, config).unwrap();
    let mut parent = Launcher(
        Command::new(LAUNCHER)
            .args(["run", "--processes", "--replica-id", "perm", "--bootstrap", &bootstrap(), "--config"])
            .arg(&path)
            // No registry anywhere, whatever the test's environment says.
            .env_remove("SCHEMA_REGISTRY_URL")
            .env_remove("KAFKA_TOPIC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read on a thread, so a chatty launcher never blocks on a full pipe.
    let mut stderr = parent.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = parent.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = parent.0.kill();
            let _ = parent.0.wait();
            panic!("the launcher still runs after {limit:?}; its stderr:\n{}", reader.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(path);
    (status.code(), reader.join().unwrap())
}

#[test]
fn a_child_with_a_missing_topic_is_not_restarted_and_the_launcher_exits_with_the_configuration_code() {
    let missing = unique_topic("never-created");
    let config = format!("[kafka]\ntopic = {missing:?}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 2\n");
    let started = Instant::now();
    let (code, stderr) = run_processes_until_exit(&config, Duration::from_secs(30));
    assert_eq!(code, Some(4), "exit code 4 (configuration); stderr:\n{stderr}");
    assert_eq!(stderr.matches("replica process started").count(), 2, "each child started once, none again:\n{stderr}");
    assert!(!stderr.contains("restarting in"), "{stderr}");
    assert!(stderr.contains("does not exist"), "the child said why:\n{stderr}");
    println!("exited {code:?} after {:?}", started.elapsed());
}

#[test]
fn a_child_with_a_configuration_error_stops_the_healthy_ones_and_is_not_restarted() {
    let topic = unique_topic("permanent");
    launcher(&["topics", "create", "--topic", &topic]);
    // `ledger` writes Avro but no schema registry is configured: its child exits 4 as it
    // starts, while the matching engine's child runs.
    let config = format!(
        "[kafka]\ntopic = {topic:?}\n\n[[transformer]]\nname = \"matching-engine\"\nreplicas = 1\n\n[[transformer]]\nname = \"ledger\"\nreplicas = 1\ncodec = \"avro\"\n"
    );
    let (code, stderr) = run_processes_until_exit(&config, Duration::from_secs(30));
    assert_eq!(code, Some(4), "exit code 4 (configuration); stderr:\n{stderr}");
    assert_eq!(stderr.matches("replica process started").count(), 2, "each child started once, none again:\n{stderr}");
    assert!(!stderr.contains("restarting in"), "{stderr}");
    assert!(stderr.contains("no schema registry is configured"), "the child said why:\n{stderr}");
    assert!(stderr.contains("stopping the other replica processes"), "{stderr}");
    assert!(
        stderr.contains("perm-ledger-1 (4: configuration)"),
        "the launcher names the child that stopped it:\n{stderr}"
    );
}
