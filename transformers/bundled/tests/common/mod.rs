//! What the launcher's binary tests share: the binary, the broker, unique topics, a launcher
//! process killed if a test fails, polling, and `publish`. Each test file uses part of it.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The launcher binary under test.
pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_transformer-launcher");

/// The broker the tests run against.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP")
        .expect("no Kafka broker: set KAFKA_BOOTSTRAP=host:port, or run the tests with `scripts/test.sh` (scripts/kafka.sh start)")
}

/// A name no other test or run uses.
pub fn unique_topic(what: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Runs the launcher with `args` against the broker; its stdout, asserting success.
pub fn launcher(args: &[&str]) -> String {
    let output = Command::new(LAUNCHER).args(args).args(["--bootstrap", &bootstrap()]).output().unwrap();
    assert!(output.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Publishes `lines` under `orders` on `topic`, one event each, at effective time 1.
pub fn publish(topic: &str, lines: &[String]) {
    let mut child = Command::new(LAUNCHER)
        .args(["publish", "--key", "orders", "--topic", topic, "--bootstrap", &bootstrap(), "--effective-time-ms", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.join("\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "publish failed");
}

/// A launcher under test, killed if the test fails before stopping it (its replica
/// processes die with it).
pub struct Launcher(pub std::process::Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` until it holds, failing with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Limit orders `range` as JSON lines, of accounts `a0` to `a{accounts - 1}` in turn.
pub fn orders(range: std::ops::Range<usize>, accounts: usize) -> Vec<String> {
    range
        .map(|i| {
            let side = if i % 2 == 0 { "buy" } else { "sell" };
            format!(
                r#"{{"type":"limit","order_id":"o{i}","account":"a{}","side":"{side}","price":{},"quantity":{}}}"#,
                i % accounts,
                98 + i % 5,
                1 + i % 4
            )
        })
        .collect()
}
