//! Refusals: the status and OCI error of a reply the filter makes itself, and how client text
//! is quoted in their messages.

use std::fmt;

use crate::oci::{self, ErrorCode};

/// A refusal: the status and the OCI error of the local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u32,
    /// OCI error code.
    pub code: ErrorCode,
    /// Human-readable cause, also logged.
    pub message: String,
}

impl Refusal {
    /// A refusal with this status, code and message.
    pub fn new(status: u32, code: ErrorCode, message: String) -> Self {
        Refusal { status, code, message }
    }

    /// What a client gets when the filter itself failed (a host call did; the log says which).
    pub fn filter_failed() -> Self {
        Refusal::new(500, ErrorCode::Unsupported, "the mirror filter failed; see the proxy log".to_owned())
    }

    /// The OCI error body of the reply.
    pub fn body(&self) -> String {
        oci::error_body(self.code, &self.message)
    }
}

/// Client text in a message or log line: quoted, and cut to its first 64 characters so that a
/// hostile request cannot make either large.
pub struct Clipped<'a>(pub &'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}
