//! `run --processes`: each replica in a child process of its own, so killing one is a real
//! crash (its producer session, memory and threads die with it).
//!
//! A child is this same executable running `run` for exactly one replica. A child that
//! crashes or fails is started again with backoff; one that exits with the divergence code
//! is not (its transform is not deterministic). SIGINT or SIGTERM is passed on to every
//! child, which flushes and exits; a child also dies with this process.

use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::RunArgs;
use crate::supervise::shutdown_on_signals;
use crate::{Error, EXIT_DIVERGED};

/// First wait before starting a crashed child again; doubles on each crash in a row.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait before starting a crashed child again.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long before crashing is started again after the shortest wait.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Starts and watches one child per planned replica until a signal.
pub(super) async fn run(args: &RunArgs, plan: &[(String, u32)], prefix: &str) -> Result<(), Error> {
    let shutdown = shutdown_on_signals()?;
    let mut children = Vec::new();
    for (transformer, replicas) in plan {
        for n in args.first_number..args.first_number + replicas {
            let child = ChildReplica {
                args: args.clone(),
                transformer: transformer.clone(),
                number: n,
                prefix: prefix.to_string(),
            };
            children.push(tokio::spawn(child.supervise(shutdown.clone())));
        }
    }
    tracing::info!("started {} replica process(es)", children.len());
    let mut diverged = Vec::new();
    for child in children {
        if let Ok(Some(replica)) = child.await {
            diverged.push(replica);
        }
    }
    if diverged.is_empty() {
        Ok(())
    } else {
        Err(Error::ProcessesDiverged { replica_ids: diverged })
    }
}

struct ChildReplica {
    args: RunArgs,
    transformer: String,
    number: u32,
    prefix: String,
}

impl ChildReplica {
    fn replica_id(&self) -> String {
        format!("{}-{}-{}", self.prefix, self.transformer, self.number)
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.args.config)
            .args(["--only", &self.transformer, "--replicas", "1", "--replica-id", &self.prefix])
            .args(["--first-number", &self.number.to_string(), "--stagger-rank", &self.args.stagger_rank.to_string()])
            .kill_on_drop(true);
        if let Some(bootstrap) = &self.args.kafka.bootstrap {
            command.args(["--bootstrap", bootstrap]);
        }
        if let Some(topic) = &self.args.kafka.topic {
            command.args(["--topic", topic]);
        }
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child
        // when this process dies, so no replica outlives its launcher.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command.spawn()
    }

    /// Runs the child again and again until shutdown; returns its id if it diverged.
    async fn supervise(self, mut shutdown: watch::Receiver<bool>) -> Option<String> {
        let id = self.replica_id();
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(error) => {
                    tracing::error!(replica = %id, "cannot start the replica process ({error}); trying again in {backoff:?}");
                    if wait_or_stop(&mut shutdown, backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
                    continue;
                }
            };
            let pid = child.id();
            tracing::info!(replica = %id, pid, "replica process started");
            let ended = tokio::select! {
                status = child.wait() => Some(status),
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(status) = ended else {
                if let Some(pid) = pid {
                    // SAFETY: signalling our own child by its pid.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                let _ = child.wait().await;
                return None;
            };
            match status {
                Ok(status) if status.code() == Some(i32::from(EXIT_DIVERGED)) => {
                    tracing::error!(replica = %id, "replica process diverged; not restarted");
                    return Some(id);
                }
                Ok(status) => {
                    tracing::warn!(replica = %id, %status, "replica process ended; restarting in {backoff:?}")
                }
                Err(error) => {
                    tracing::warn!(replica = %id, %error, "lost the replica process; restarting in {backoff:?}")
                }
            }
            if started.elapsed() >= HEALTHY_RUN {
                backoff = RESTART_BACKOFF_MIN;
            }
            if wait_or_stop(&mut shutdown, backoff).await {
                return None;
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
        }
    }
}

/// Waits `delay`; true if shutdown came first.
async fn wait_or_stop(shutdown: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown.wait_for(|stop| *stop) => true,
    };
    stopped || *shutdown.borrow()
}
