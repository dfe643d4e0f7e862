//! The configuration's error: where the mistake is and what is wrong, on one line.

use std::fmt;

use crate::wire;

/// A configuration mistake: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, key or index path, e.g. `registries["quay.io"].project`.
    pub at: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(at: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::one_line(at.into(), &message)
    }

    /// Not generic, so that the many kinds of `at` and `message` share its code.
    fn one_line(at: String, message: &dyn fmt::Display) -> Self {
        // Envoy logs one line per error; regex errors span several.
        let text = message.to_string();
        let mut message = String::with_capacity(text.len());
        for word in text.split_whitespace() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(word);
        }
        ConfigError { at, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<wire::ReadError> for ConfigError {
    fn from(error: wire::ReadError) -> Self {
        ConfigError::new(error.at, error.error)
    }
}

