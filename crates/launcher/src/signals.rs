//! SIGINT and SIGTERM, for every command that runs until stopped: the first asks for a
//! shutdown (replicas and the exporter flush what is in flight), a second exits at once.

use competing_transformers_kafka::{Shutdown, ShutdownTrigger};

/// Exit code after a second signal: 128 + SIGINT, what a shell reports for an interrupt.
pub const EXIT_INTERRUPTED: i32 = crate::Exit::Interrupted.exit_code() as i32;

/// A [`Shutdown`] requested by the first SIGINT or SIGTERM (Ctrl-C where there are no Unix
/// signals); a second one exits the process with [`EXIT_INTERRUPTED`] without waiting for
/// flushes. Call it inside a tokio runtime.
pub fn shutdown_on_signals() -> std::io::Result<Shutdown> {
    let mut signals = Signals::listen()?;
    let trigger = ShutdownTrigger::new();
    let shutdown = trigger.subscribe();
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::info!("{name}: stopping once the writes in flight are flushed; send it again to exit at once");
        trigger.request();
        signals.next().await;
        eprintln!("second signal: exiting without waiting for the writes in flight");
        std::process::exit(EXIT_INTERRUPTED);
    });
    Ok(shutdown)
}

/// [`shutdown_on_signals`], failing as the launcher's usage error.
pub(crate) fn listen() -> Result<Shutdown, crate::Error> {
    shutdown_on_signals().map_err(|error| crate::Error::Usage(format!("cannot listen for signals ({error})")))
}

/// The signals that stop a command.
#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Without Unix signals, Ctrl-C is the one that stops a command.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn listen() -> std::io::Result<Self> {
        Ok(Self)
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        // An error means no handler could be installed: no Ctrl-C will come.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}
