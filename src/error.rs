//! A call to another HTTP API that did not succeed: the Docker engine's (for
//! the engine handle) or berth's own admin API (for the CLI). Both are told
//! apart only by where they come from; the status decides what happens next.

/// The status the API answered (`None`: it was not reached, or answered
/// nothing usable) and what went wrong, naming what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub status: Option<u16>,
    pub message: String,
}

impl CallError {
    /// An error that carries no status: the API was not reached.
    pub fn unreached(message: impl Into<String>) -> CallError {
        CallError {
            status: None,
            message: message.into(),
        }
    }

    /// The target does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

impl From<String> for CallError {
    fn from(message: String) -> CallError {
        CallError::unreached(message)
    }
}
