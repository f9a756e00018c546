//! The error of every capability's configuration check.
//!
//! Each capability validates its own section (`SessionsConfig::validate`,
//! `StreamsConfig::validate`, …) and the server reports the first failure at start-up, before
//! it listens. One type for all of them, so the server prints them alike and a section can
//! include another's check (`?`) without converting.

/// A configuration that cannot be served; the message names the key to fix and why
/// (`streams.max_list_limit must be > 0`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A failure whose message names the key.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }

    /// The same failure with `context` (usually the key) in front: `context: message`.
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        ConfigError(format!("{context}: {}", self.0))
    }
}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError(message.to_owned())
    }
}
