//! The replicated cluster of `scripts/kafka.sh cluster-start` (3 nodes, each broker and
//! controller): which node leads a partition, killing it under load and bringing it back.
//!
//! A node's broker id is its node number (`node.id=N` in `DIR/node-N/server.properties`),
//! its pid is in `DIR/node-N/broker.pid`, and `scripts/kafka.sh cluster-restart-node N`
//! starts it again on its data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// How long a restarted node may take to rejoin every partition's in-sync replicas.
const ISR_WAIT_MAX: Duration = Duration::from_secs(120);
/// How long a restarted node is left to warm up before the next scenario starts.
const RESTARTED_SETTLE: Duration = Duration::from_secs(15);

/// One cluster: where its clients connect and where `scripts/kafka.sh` keeps its nodes.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub bootstrap: String,
    /// `KAFKA_CLUSTER_DIR`: `node-1` … `node-3` under it.
    pub dir: PathBuf,
}

impl Cluster {
    /// Checks that every node under `dir` listens on a port of `bootstrap`, so that a fault
    /// never strikes a cluster other than the one the scenarios run on.
    pub fn new(bootstrap: &str, dir: &Path) -> anyhow::Result<Self> {
        let cluster = Self { bootstrap: bootstrap.into(), dir: dir.into() };
        for node in 1..=3 {
            let (port, _) = cluster.ports(node)?;
            if !bootstrap.split(',').any(|address| address.trim().ends_with(&format!(":{port}"))) {
                bail!(
                    "node {node} under {} listens on port {port}, which is not in the cluster's bootstrap {bootstrap}: \
                     give the KAFKA_CLUSTER_DIR of that cluster (--cluster-dir)",
                    dir.display()
                );
            }
        }
        Ok(cluster)
    }

    fn node_dir(&self, node: i32) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    /// Node `node`'s client and controller ports, from its generated config.
    fn ports(&self, node: i32) -> anyhow::Result<(u16, u16)> {
        let path = self.node_dir(node).join("server.properties");
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let listeners = text
            .lines()
            .find_map(|line| line.strip_prefix("listeners="))
            .with_context(|| format!("no listeners= in {}", path.display()))?;
        let port = |name: &str| -> anyhow::Result<u16> {
            let listener = listeners
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}://")))
                .with_context(|| format!("no {name} listener in {}", path.display()))?;
            Ok(listener.rsplit(':').next().unwrap_or_default().parse()?)
        };
        Ok((port("PLAINTEXT")?, port("CONTROLLER")?))
    }

    /// The broker id (= node number) leading partition 0 of `topic`.
    pub fn leader(&self, topic: &str) -> anyhow::Result<i32> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let partition = metadata
            .topics()
            .first()
            .and_then(|t| t.partitions().first())
            .with_context(|| format!("{topic} has no partition 0 in the cluster's metadata"))?;
        Ok(partition.leader())
    }

    /// The pid of node `node`'s running broker, if it runs: the pid file's process, if its
    /// command line is that node's broker (as `scripts/kafka.sh` checks it).
    fn broker_pid(&self, node: i32) -> Option<i32> {
        let dir = self.node_dir(node);
        let pid: i32 = std::fs::read_to_string(dir.join("broker.pid")).ok()?.trim().parse().ok()?;
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let command_line = String::from_utf8_lossy(&command_line).replace('\0', " ");
        let config = format!("kafka.Kafka {}", dir.join("server.properties").display());
        command_line.contains(&config).then_some(pid)
    }

    /// SIGKILL of node `node`'s broker; returns once it is gone.
    pub async fn kill(&self, node: i32) -> anyhow::Result<()> {
        let Some(pid) = self.broker_pid(node) else {
            bail!("node {node} of the cluster in {} is not running", self.dir.display());
        };
        // SAFETY: kill(2) of the broker JVM of this node, checked just above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        while self.broker_pid(node).is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// `scripts/kafka.sh cluster-restart-node N`, then waits until every partition of the
    /// cluster has all its replicas in sync again; returns how long that took.
    pub async fn restart(&self, node: i32) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (port, controller_port) = self.ports(1)?;
        let status = tokio::process::Command::new("scripts/kafka.sh")
            .args(["cluster-restart-node", &node.to_string()])
            .env("KAFKA_CLUSTER_DIR", &self.dir)
            .env("KAFKA_CLUSTER_PORT", port.to_string())
            .env("KAFKA_CLUSTER_CONTROLLER_PORT", controller_port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .context("run scripts/kafka.sh cluster-restart-node")?;
        if !status.success() {
            bail!(
                "scripts/kafka.sh cluster-restart-node {node} failed ({status}); see {}",
                self.node_dir(node).display()
            );
        }
        while !self.all_in_sync()? {
            if started.elapsed() > ISR_WAIT_MAX {
                bail!("node {node} did not rejoin every partition's in-sync replicas within {ISR_WAIT_MAX:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(started.elapsed())
    }

    /// Starts again any node that is not running (a scenario that failed between its kill and
    /// its restart).
    pub async fn make_whole(&self) -> anyhow::Result<()> {
        for node in 1..=3 {
            if self.broker_pid(node).is_none() {
                eprintln!("  node {node} of the cluster is down: starting it again");
                self.restart(node).await?;
            }
        }
        Ok(())
    }

    /// Whether every partition of every topic has all its replicas in sync.
    fn all_in_sync(&self) -> anyhow::Result<bool> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
        Ok(metadata.brokers().len() >= 3
            && metadata.topics().iter().flat_map(|t| t.partitions()).all(|p| p.isr().len() == p.replicas().len()))
    }
}

/// The leader-kill fault: at `at` into the load, SIGKILL the node leading partition 0 of
/// `topic`; once `stop` is set (the scenario has drained), start it again and wait until the
/// cluster is whole, so the next scenario runs on three nodes. Returns what happened.
pub async fn kill_leader(
    cluster: Cluster,
    topic: String,
    at: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    tokio::time::sleep(at).await;
    let node = cluster.leader(&topic)?;
    if !(1..=3).contains(&node) {
        bail!("{topic} has no leader (broker {node}) to kill");
    }
    cluster.kill(node).await?;
    let mut notes = vec![format!("node {node}, leader of {topic}, killed at {:.1} s", started.elapsed().as_secs_f64())];
    let new_leader = wait_for_new_leader(&cluster, &topic, node).await;
    notes.push(match new_leader {
        Some((leader, after)) => {
            format!("node {leader} leads {topic} {:.0} ms after the kill", after.as_secs_f64() * 1e3)
        }
        None => format!("no new leader of {topic} was seen within 60 s of the kill"),
    });
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = cluster.restart(node).await?;
    notes.push(format!("node {node} restarted after the run; all replicas in sync {:.1} s later", took.as_secs_f64()));
    // A JVM just started compiles its hot code for a while: on shared cores that would land
    // on whichever scenario runs next.
    tokio::time::sleep(RESTARTED_SETTLE).await;
    Ok(notes)
}

/// The node that leads `topic` after `killed`, and how long after the kill the metadata said so.
async fn wait_for_new_leader(cluster: &Cluster, topic: &str, killed: i32) -> Option<(i32, Duration)> {
    let killed_at = Instant::now();
    while killed_at.elapsed() < Duration::from_secs(60) {
        if let Ok(leader) = cluster.leader(topic) {
            if leader != killed && leader > 0 {
                return Some((leader, killed_at.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
