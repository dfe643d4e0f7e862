//! The token cache a plugin's instances share (the data every worker shares): its keys and entries, a
//! token or a remembered refusal of the robot's credentials, each with the time it holds until.

use crate::config::Managed;
use crate::harbor::Grant;
use crate::oci::ErrorCode;
use crate::refusal::Refusal;

use super::grant::{FetchFailure, CREDENTIALS_BACKOFF_SECS};

/// The shared-data key of the cached token for `project`, per Harbor and robot so that a
/// configuration change never reuses another account's token.
pub fn cache_key(managed: &Managed, project: &str) -> String {
    format!("harbor_mirror.token/{}/{}/{project}", managed.authority, managed.username)
}

/// An entry of the token cache the plugin's instances share: a token, or a remembered refusal of
/// the robot's credentials, each with the time (Unix seconds) until which it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEntry<'a> {
    /// A bearer token, used until `fresh_until`.
    Token {
        /// Unix seconds after which the token is fetched again.
        fresh_until: u64,
        /// The bearer token.
        token: &'a str,
    },
    /// Harbor refused the robot's credentials: requests until `until` get this message.
    Failure {
        /// Unix seconds after which a token is fetched again.
        until: u64,
        /// The refusal's message.
        message: &'a str,
    },
}

impl<'a> CacheEntry<'a> {
    /// The entry for a grant received at `now`: used until shortly before it expires, so that a
    /// request never reaches Harbor with a token that lapses on the way.
    pub fn for_grant(grant: &'a Grant, now: u64) -> Self {
        let margin = (grant.expires_in / 10).min(60);
        CacheEntry::Token { fresh_until: now.saturating_add(grant.expires_in - margin), token: &grant.token }
    }

    /// The entry remembering `failure` at `now`, if it is one to remember.
    pub fn for_failure(failure: &'a FetchFailure, now: u64) -> Option<Self> {
        failure
            .credentials
            .then(|| CacheEntry::Failure { until: now.saturating_add(CREDENTIALS_BACKOFF_SECS), message: &failure.refusal.message })
    }

    /// The shared-data value: `t <fresh_until> <token>` or `f <until> <message>`.
    pub fn encode(&self) -> String {
        match self {
            CacheEntry::Token { fresh_until, token } => format!("t {fresh_until} {token}"),
            CacheEntry::Failure { until, message } => format!("f {until} {message}"),
        }
    }

    /// Reads a shared-data value; `None` if it is not one this filter wrote.
    pub fn decode(value: &'a [u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let (kind, rest) = value.split_once(' ')?;
        let (until, text) = rest.split_once(' ')?;
        let until = until.parse().ok()?;
        if text.is_empty() {
            return None;
        }
        match kind {
            "t" => Some(CacheEntry::Token { fresh_until: until, token: text }),
            "f" => Some(CacheEntry::Failure { until, message: text }),
            _ => None,
        }
    }

    /// Unix seconds until which the entry holds.
    pub fn until(&self) -> u64 {
        match self {
            CacheEntry::Token { fresh_until, .. } => *fresh_until,
            CacheEntry::Failure { until, .. } => *until,
        }
    }

    /// Whether this entry should replace `old`, the one the cache holds: not when `old` is a
    /// token that holds at least as long (another instance fetched it meanwhile).
    pub fn replaces(&self, old: Option<&CacheEntry<'_>>) -> bool {
        !matches!(old, Some(old @ CacheEntry::Token { .. }) if old.until() >= self.until())
    }

    /// Whether the entry still holds at `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.until()
    }

    /// The answer for a request that finds this entry fresh: its token, or its refusal.
    pub fn answer(&self) -> Result<&'a str, Refusal> {
        match *self {
            CacheEntry::Token { token, .. } => Ok(token),
            CacheEntry::Failure { message, .. } => Err(Refusal::new(503, ErrorCode::Unavailable, message.to_owned())),
        }
    }
}
