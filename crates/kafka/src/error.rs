//! The errors of the log and its clients.

use competing_transformers::record::EncodeError;

/// What went wrong talking to the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The broker is unreachable, or a request timed out: retry with backoff.
    #[error("the event log is unavailable ({0}); is the broker running and reachable?")]
    Unavailable(String),
    /// The client cannot go on (fenced, unauthorized, misconfigured): make a new one.
    #[error("event log client failed: {0}")]
    Fatal(String),
    /// The record could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The topic does not have the layout the log needs.
    #[error("{0}")]
    TopicLayout(String),
    /// A configuration value is wrong.
    #[error("bad event log configuration: {0}")]
    Config(String),
}

impl LogError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Unavailable(_))
    }
}
