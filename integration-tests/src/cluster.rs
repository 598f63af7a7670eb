//! The 3-node cluster of `scripts/kafka.sh cluster-start`: its bootstrap, partition leaders,
//! and killing and restarting a node.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// `KAFKA_CLUSTER_BOOTSTRAP`, or a panic naming the command that starts the cluster.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_CLUSTER_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KAFKA_CLUSTER_BOOTSTRAP is not set: start the 3-node cluster with `scripts/kafka.sh cluster-start` and export what it prints (or run `scripts/test.sh`, which runs everything)."
        )
    })
}

fn kafka_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka.sh")
}

/// Where `scripts/kafka.sh` keeps node N's pid (same default and override as the script).
pub fn node_pid_file(node: i32) -> PathBuf {
    let dir = std::env::var_os("KAFKA_CLUSTER_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/competing-transformers/run/cluster")
    });
    dir.join(format!("node-{node}")).join("broker.pid")
}

/// The node id leading each partition of `topic`, in partition order, once all `partitions`
/// have one.
pub async fn partition_leaders(bootstrap: &str, topic: &str, partitions: usize) -> Vec<i32> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("metadata client");
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(metadata) = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) {
                let mut leaders: Vec<(i32, i32)> = metadata
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic)
                    .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
                    .collect();
                leaders.sort_unstable();
                if leaders.len() == partitions && leaders.iter().all(|(_, leader)| (1..=3).contains(leader)) {
                    return leaders.into_iter().map(|(_, leader)| leader).collect();
                }
            }
            assert!(
                Instant::now() < deadline,
                "`{topic}` lacks a leader for each of {partitions} partitions after 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("metadata task")
}

/// SIGKILLs node `node`'s JVM: a crash, not a controlled shutdown.
pub fn kill_node(node: i32) {
    let pid_file = node_pid_file(node);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("cannot read node {node}'s pid file {}: {e}", pid_file.display()));
    let pid = pid.trim().to_string();
    let status = Command::new("kill").args(["-9", &pid]).status().expect("running kill");
    assert!(status.success(), "kill -9 {pid} (node {node}) failed: {status}");
}

/// Starts node `node` again on its data.
pub fn restart_node(node: i32) -> Result<(), String> {
    let status = Command::new("bash")
        .arg(kafka_script())
        .args(["cluster-restart-node", &node.to_string()])
        .status()
        .map_err(|e| format!("cannot run scripts/kafka.sh: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("`scripts/kafka.sh cluster-restart-node {node}` failed ({status})"))
}

/// Restarts the killed node when dropped, so a failing test still leaves a full cluster.
pub struct RestartKilledNode(pub Arc<Mutex<Option<i32>>>);

impl Drop for RestartKilledNode {
    fn drop(&mut self) {
        if let Some(node) = self.0.lock().unwrap().take() {
            if let Err(e) = restart_node(node) {
                eprintln!("could not restart the killed node {node}: {e}");
            }
        }
    }
}
