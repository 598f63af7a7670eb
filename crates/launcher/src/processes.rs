//! `run --processes`: each replica in a child process of its own, so killing one is a real
//! crash (its producer session, memory and threads die with it).
//!
//! A child is this same executable running `run` for exactly one replica of one pipeline
//! (`--pipelines N`): a log of several pipelines gets a child per replica per chosen pipeline. A child that
//! crashes or fails at run time (exit code 1, a signal) is started again with backoff; one
//! that exits with a permanent code ([`Exit::is_permanent`]: usage, divergence,
//! configuration, denied access) is not, since it would fail the same way: the other
//! children are stopped and this process exits with that code. SIGINT or SIGTERM is passed
//! on to every child, which flushes and exits; on Linux a child also dies with this process.
//!
//! Unix only: a child is stopped with SIGTERM, which other systems do not have.

use std::sync::Arc;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::cli::RunArgs;
use crate::restart::Restarts;
use crate::supervise::Selected;
use crate::{signals, Error, Exit};
use competing_transformers::shard::Pipelines;
use competing_transformers_kafka::{Shutdown, ShutdownTrigger};

/// Starts and watches one child per planned replica of each chosen pipeline until a signal,
/// or until one exits with a permanent code (of any pipeline: all stop).
pub(super) async fn run(
    args: &RunArgs,
    plan: &[(String, u32)],
    prefix: &str,
    pipelines: &Selected,
) -> Result<(), Error> {
    if cfg!(not(unix)) {
        return Err(Error::Usage(
            "--processes needs a Unix host (children are stopped with SIGTERM); run the replicas as tasks without it"
                .into(),
        ));
    }
    let mut signalled = signals::listen()?;
    // Every child stops on a signal, or when one of them exits for good.
    let stop = Arc::new(ShutdownTrigger::new());
    let forward = {
        let stop = stop.clone();
        tokio::spawn(async move {
            signalled.requested().await;
            stop.request();
        })
    };
    let mut children = Vec::new();
    for (transformer, replicas) in plan {
        for &pipeline in &pipelines.chosen {
            for n in args.first_number..args.first_number + replicas {
                let child = ChildReplica {
                    args: args.clone(),
                    transformer: transformer.clone(),
                    number: n,
                    prefix: prefix.to_string(),
                    pipeline,
                    pipelines: pipelines.count,
                };
                children.push(tokio::spawn(child.supervise(stop.clone())));
            }
        }
    }
    tracing::info!("started {} replica process(es)", children.len());
    let mut stopped = Vec::new();
    for child in children {
        if let Ok(Some(ended)) = child.await {
            stopped.push(ended);
        }
    }
    forward.abort();
    if stopped.is_empty() {
        Ok(())
    } else {
        Err(Error::ProcessesStopped { stopped })
    }
}

/// The exit a child's code says, when it is permanent: the child is not started again.
fn permanent_exit(code: Option<i32>) -> Option<Exit> {
    code.and_then(Exit::from_code).filter(|exit| exit.is_permanent())
}

struct ChildReplica {
    args: RunArgs,
    transformer: String,
    number: u32,
    prefix: String,
    /// The pipeline the child runs its replica in.
    pipeline: u32,
    /// The log's pipeline count, passed on so the child needs no other source for it.
    pipelines: Pipelines,
}

impl ChildReplica {
    fn replica_id(&self) -> String {
        crate::config::replica_id(&self.prefix, &self.transformer, self.pipelines, self.pipeline, self.number)
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let exe = std::env::current_exe()?;
        let mut command = Command::new(exe);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.args.config)
            // Only a launcher holding its replicas' status serves metrics; children must not
            // contend for the config's port.
            .arg("--no-metrics")
            .args(["--only", &self.transformer, "--replicas", "1", "--replica-id", &self.prefix])
            .args(["--first-number", &self.number.to_string(), "--stagger-rank", &self.args.stagger_rank.to_string()])
            .args(["--pipelines", &self.pipeline.to_string()])
            .args(["--pipeline-count", &self.pipelines.count().to_string()])
            .kill_on_drop(true);
        if let Some(bootstrap) = &self.args.kafka.bootstrap {
            command.args(["--bootstrap", bootstrap]);
        }
        if let Some(topic) = &self.args.kafka.topic {
            command.args(["--topic", topic]);
        }
        if let Some(key_file) = &self.args.kafka.signing_key_file {
            command.arg("--signing-key-file").arg(key_file);
        }
        die_with_parent(&mut command);
        command.spawn()
    }

    /// Runs the child again and again until `stop` is requested; if it exits with a
    /// permanent code, requests `stop` (the other children end) and returns its id and exit.
    async fn supervise(self, stop: Arc<ShutdownTrigger>) -> Option<(String, Exit)> {
        let id = self.replica_id();
        let mut shutdown = stop.subscribe();
        let mut restarts = Restarts::new();
        loop {
            let started = Instant::now();
            let ended = match self.spawn() {
                Ok(child) => self.watch(child, &mut shutdown).await,
                Err(error) => Err(format!("cannot start the replica process ({error})")),
            };
            let why = match ended {
                Ok(None) => return None,
                Ok(Some(exit)) => {
                    tracing::error!(
                        replica = %id,
                        "replica process exited with {} ({}), which a restart would repeat: not restarted; stopping the other replica processes",
                        exit.exit_code(),
                        exit.label()
                    );
                    stop.request();
                    return Some((id, exit));
                }
                Err(why) => why,
            };
            let wait = restarts.wait_after(started.elapsed());
            tracing::warn!(replica = %id, "{why}; restarting in {wait:?}");
            if shutdown.requested_within(wait).await {
                return None;
            }
        }
    }

    /// One life of the child: `Ok(None)` when stopped by `shutdown`, `Ok(Some(exit))` when it
    /// exited with a permanent code, else why it ended (it is restarted).
    async fn watch(&self, mut child: Child, shutdown: &mut Shutdown) -> Result<Option<Exit>, String> {
        tracing::info!(replica = %self.replica_id(), pid = child.id(), "replica process started");
        let status = tokio::select! {
            status = child.wait() => status,
            () = shutdown.requested() => {
                stop_child(&mut child).await;
                return Ok(None);
            }
        };
        match status {
            Ok(status) => match permanent_exit(status.code()) {
                Some(exit) => Ok(Some(exit)),
                None => Err(format!("replica process ended ({status})")),
            },
            Err(error) => Err(format!("lost the replica process ({error})")),
        }
    }
}

/// Asks the kernel to SIGKILL the child when this process dies, so no replica outlives its
/// launcher. Linux only: elsewhere a child is not killed with its parent.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Elsewhere a child is not killed with its parent: a launcher killed without a chance to
/// stop its children leaves them running.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

/// SIGTERM, so the child flushes and exits; then waits for it.
async fn stop_child(child: &mut Child) {
    #[cfg(unix)]
    {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped before the wait below.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_exiting_with_a_permanent_code_is_not_restarted() {
        for exit in [Exit::Usage, Exit::Diverged, Exit::Configuration, Exit::Access] {
            assert_eq!(permanent_exit(Some(i32::from(exit.exit_code()))), Some(exit));
        }
        // A runtime failure, a crash (killed by a signal: no code), a panic (101), a second
        // signal or a clean exit the parent did not ask for: restarted.
        for code in [Some(0), Some(1), None, Some(101), Some(130)] {
            assert_eq!(permanent_exit(code), None, "{code:?}");
        }
    }
}
