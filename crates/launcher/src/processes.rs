//! `run --processes`: each replica in a child process of its own, so killing one is a real
//! crash (its producer session, memory and threads die with it).
//!
//! A child is this same executable running `run` for exactly one replica. A child that
//! crashes or fails is started again with backoff; one that exits with the divergence code
//! is not (its transform is not deterministic). SIGINT or SIGTERM is passed on to every
//! child, which flushes and exits; on Linux a child also dies with this process.
//!
//! Unix only: a child is stopped with SIGTERM, which other systems do not have.

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::cli::RunArgs;
use crate::restart::Restarts;
use crate::{signals, Error, EXIT_DIVERGED};
use competing_transformers_kafka::Shutdown;

/// Starts and watches one child per planned replica until a signal.
pub(super) async fn run(args: &RunArgs, plan: &[(String, u32)], prefix: &str) -> Result<(), Error> {
    if cfg!(not(unix)) {
        return Err(Error::Usage(
            "--processes needs a Unix host (children are stopped with SIGTERM); run the replicas as tasks without it"
                .into(),
        ));
    }
    let shutdown = signals::listen()?;
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
        die_with_parent(&mut command);
        command.spawn()
    }

    /// Runs the child again and again until shutdown; returns its id if it diverged.
    async fn supervise(self, mut shutdown: Shutdown) -> Option<String> {
        let id = self.replica_id();
        let mut restarts = Restarts::new();
        loop {
            let started = Instant::now();
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(error) => {
                    let wait = restarts.wait_after(started.elapsed());
                    tracing::error!(replica = %id, "cannot start the replica process ({error}); trying again in {wait:?}");
                    if shutdown.requested_within(wait).await {
                        return None;
                    }
                    continue;
                }
            };
            let pid = child.id();
            tracing::info!(replica = %id, pid, "replica process started");
            let ended = tokio::select! {
                status = child.wait() => Some(status),
                () = shutdown.requested() => None,
            };
            let Some(status) = ended else {
                stop_child(&mut child).await;
                return None;
            };
            let wait = restarts.wait_after(started.elapsed());
            match status {
                Ok(status) if status.code() == Some(i32::from(EXIT_DIVERGED)) => {
                    tracing::error!(replica = %id, "replica process diverged; not restarted");
                    return Some(id);
                }
                Ok(status) => {
                    tracing::warn!(replica = %id, %status, "replica process ended; restarting in {wait:?}")
                }
                Err(error) => {
                    tracing::warn!(replica = %id, %error, "lost the replica process; restarting in {wait:?}")
                }
            }
            if shutdown.requested_within(wait).await {
                return None;
            }
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
