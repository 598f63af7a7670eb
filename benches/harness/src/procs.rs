//! Child processes (replicas, Kafka Streams instances) and the faults done to them: SIGSTOP
//! and SIGCONT stalls, SIGKILL and restart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// How long a child may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One child process, restartable with the same command line.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    pub log: PathBuf,
    child: Child,
    pub pid: i32,
    /// Appended to at each restart, so ready checks look at the newest life only.
    log_len_at_start: usize,
}

impl Proc {
    /// Starts `program args…`, stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let (child, pid, len) = start(program, &args, &envs, &log)?;
        Ok(Self { name: name.into(), program: program.into(), args, envs, log, child, pid, log_len_at_start: len })
    }

    /// Waits until `needle` appears in the log of this life of the process.
    pub async fn wait_for(&mut self, needle: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.get(self.log_len_at_start..).unwrap_or("").contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before `{needle}`; see {}", self.name, self.log.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not print `{needle}` within {READY_TIMEOUT:?}; see {}", self.name, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log of this life of the process.
    pub fn current_log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.get(self.log_len_at_start..).unwrap_or("").to_string()
    }

    /// Sends `signal`, unless the child has exited and been reaped (its pid may belong to
    /// someone else by now).
    pub fn signal(&mut self, signal: i32) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: kill(2) on a pid this process spawned and has not reaped (checked above).
        unsafe {
            libc::kill(self.pid, signal);
        }
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// Starts the same command again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let (child, pid, len) = start(&self.program, &self.args, &self.envs, &self.log)?;
        (self.child, self.pid, self.log_len_at_start) = (child, pid, len);
        Ok(())
    }

    /// SIGTERM (after SIGCONT, in case it is stopped), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            eprintln!("  {} did not exit within {grace:?} of SIGTERM; killing it", self.name);
            self.kill().await;
        }
    }
}

fn start(
    program: &Path,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
) -> anyhow::Result<(Child, i32, usize)> {
    let len = std::fs::metadata(log).map(|m| m.len() as usize).unwrap_or(0);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
    for (key, value) in envs {
        command.env(key, value);
    }
    let child = command.spawn().with_context(|| format!("start {}", program.display()))?;
    let pid = child.id().context("a just-spawned child has a pid")? as i32;
    Ok((child, pid, len))
}

/// A fault done to one process while the load runs.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub enum Fault {
    None,
    /// SIGSTOP for `stall_ms` in every `every_ms`, from the first second of the load on.
    Stall {
        stall_ms: u64,
        every_ms: u64,
    },
    /// SIGKILL at `at_fraction` of the load; started again after `restart_after_ms` (never if None).
    Kill {
        at_fraction: f64,
        restart_after_ms: Option<u64>,
    },
    /// On a cluster: SIGKILL of the broker leading the log's partition at `at_fraction` of
    /// the load, started again once the scenario has drained (`cluster::kill_leader`).
    KillLeader {
        at_fraction: f64,
    },
}

impl Fault {
    pub fn label(&self) -> String {
        match *self {
            Fault::None => "none".into(),
            Fault::Stall { stall_ms, every_ms } => format!("SIGSTOP {stall_ms} ms every {every_ms} ms"),
            Fault::Kill { restart_after_ms: Some(ms), .. } => format!("SIGKILL, restart after {ms} ms"),
            Fault::Kill { restart_after_ms: None, .. } => "SIGKILL (no restart)".into(),
            Fault::KillLeader { .. } => "SIGKILL of the partition leader's broker".into(),
        }
    }
}

/// Which process a fault strikes each time: the index into the processes.
pub type Pick = Box<dyn Fn(&[Proc]) -> usize + Send>;

/// Does `fault` until `stop` to the process `pick` names at each strike (each stall, the
/// kill); `load_secs` places a kill.
pub async fn inflict(
    fault: Fault,
    procs: &mut [Proc],
    pick: Pick,
    load_secs: f64,
    ready_line: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let start = Instant::now();
    match fault {
        // Strikes a broker, not a process: `cluster::kill_leader`.
        Fault::None | Fault::KillLeader { .. } => {}
        Fault::Stall { stall_ms, every_ms } => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut stalled = Vec::new();
            while !stop.load(Ordering::Relaxed) && start.elapsed().as_secs_f64() < load_secs {
                let victim = &mut procs[pick(procs).min(procs.len() - 1)];
                victim.signal(libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(stall_ms)).await;
                victim.signal(libc::SIGCONT);
                stalled.push(victim.name.clone());
                tokio::time::sleep(Duration::from_millis(every_ms - stall_ms)).await;
            }
            notes.push(format!("stalled {} times: {}", stalled.len(), stalled.join(" ")));
        }
        Fault::Kill { at_fraction, restart_after_ms } => {
            tokio::time::sleep(Duration::from_secs_f64(load_secs * at_fraction)).await;
            let victim = &mut procs[pick(procs).min(procs.len() - 1)];
            victim.kill().await;
            notes.push(format!("{} killed at {:.1} s", victim.name, start.elapsed().as_secs_f64()));
            if let Some(ms) = restart_after_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                victim.restart()?;
                let restarted = Instant::now();
                victim.wait_for(ready_line).await?;
                notes.push(format!(
                    "{} restarted at {:.1} s, ready after {:.0} ms",
                    victim.name,
                    start.elapsed().as_secs_f64(),
                    restarted.elapsed().as_secs_f64() * 1000.0
                ));
            }
        }
    }
    Ok(notes)
}
