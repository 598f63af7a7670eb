//! The stop signal every long-running task takes: a replica, a supervisor, the exporter, a
//! sink, the demo's watcher.
//!
//! [`ShutdownTrigger`] asks once; every [`Shutdown`] (cloned as often as needed, before or
//! after the request) sees it. Asking again is harmless. Dropping the trigger without asking
//! asks nothing: a task holding a [`Shutdown`] of a dropped trigger runs until it ends on its
//! own, which is what [`Shutdown::never`] gives tests and one-shot runs.

use std::time::Duration;

use tokio::sync::watch;

/// The side that requests a shutdown.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl ShutdownTrigger {
    /// A trigger nobody has pulled yet.
    pub fn new() -> Self {
        Self { sender: watch::Sender::new(false) }
    }

    /// A receiver of this trigger's request; one made after the request sees it too.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown { receiver: self.sender.subscribe() }
    }

    /// Requests the shutdown; a second request changes nothing.
    pub fn request(&self) {
        self.sender.send_replace(true);
    }

    /// Whether the shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.sender.borrow()
    }
}

impl Default for ShutdownTrigger {
    fn default() -> Self {
        Self::new()
    }
}

/// The side that waits for a shutdown: cheap to clone, one per task.
#[derive(Clone, Debug)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// A shutdown that is never requested: the task ends on its own.
    pub fn never() -> Self {
        ShutdownTrigger::new().subscribe()
    }

    /// Whether the shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Returns once the shutdown is requested (at once if it already was); never if the
    /// trigger is dropped without a request. Cancel safe, so it can be a `select!` branch.
    pub async fn requested(&mut self) {
        if self.receiver.wait_for(|requested| *requested).await.is_err() {
            // The trigger is gone and never asked: nothing will.
            std::future::pending::<()>().await;
        }
    }

    /// Waits `duration` unless the shutdown is requested first; true if it was requested.
    pub async fn requested_within(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = self.requested() => true,
            () = tokio::time::sleep(duration) => self.is_requested(),
        }
    }
}

impl Default for Shutdown {
    /// [`Shutdown::never`].
    fn default() -> Self {
        Self::never()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_clone_made_before_the_request_sees_it_and_a_second_request_is_harmless() {
        let trigger = ShutdownTrigger::new();
        let mut early = trigger.subscribe();
        let mut clone = early.clone();
        assert!(!early.is_requested() && !trigger.is_requested());
        let waiting = tokio::spawn(async move { clone.requested().await });
        trigger.request();
        trigger.request();
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the clone saw the request").unwrap();
        assert!(early.is_requested() && trigger.is_requested());
        // Already requested: returns at once, again and again.
        early.requested().await;
        early.requested().await;
        let mut late = trigger.subscribe();
        assert!(late.is_requested());
        assert!(late.requested_within(Duration::from_secs(60)).await);
    }

    #[tokio::test]
    async fn never_is_never_requested() {
        let mut never = Shutdown::never();
        assert!(!never.requested_within(Duration::from_millis(20)).await);
        assert!(!never.is_requested());
        let mut dropped = {
            let trigger = ShutdownTrigger::new();
            trigger.subscribe()
        };
        assert!(!dropped.requested_within(Duration::from_millis(20)).await);
    }
}
