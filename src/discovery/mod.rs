//! Discovery: the mapping from upstream registry to proxy-cache project, read from Harbor's own
//! API (`discover` in the configuration), so that the filter's configuration can be Harbor's
//! address alone.
//!
//! [`mapping`] reads Harbor's answers into the mapping, [`refresh`] is one refresh as a state
//! machine. The mapping is shared by every VM of the plugin through proxy-wasm shared data:
//! [`Published`] is its entry, and a lease ([`Lease`]) lets one VM refresh it per interval,
//! whichever VM finds it due first.

pub mod mapping;
pub mod refresh;

pub use mapping::Mapping;

use crate::config::Discovered;
use crate::{Config, ConfigError};

/// How long a VM holds the lease of a refresh it runs: other VMs wait this long before taking
/// over from a VM that went away.
pub const LEASE_SECS: u64 = 120;

/// How long after a failed refresh the next one starts (or the interval, if shorter).
pub const RETRY_SECS: u64 = 5;

/// The mapping as the plugin's VMs share it: when it was read, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Unix seconds of the refresh that read it.
    pub at: u64,
    /// The mapping.
    pub mapping: Mapping,
}

impl Published {
    /// The shared-data value: `<at>\n` and the mapping's lines.
    pub fn encode(&self) -> String {
        format!("{}\n{}", self.at, self.mapping.encode())
    }

    /// Reads [`Published::encode`]'s form; `None` if it is not that.
    pub fn decode(value: &[u8]) -> Option<Published> {
        let text = std::str::from_utf8(value).ok()?;
        let (at, lines) = text.split_once('\n')?;
        Some(Published { at: at.parse().ok()?, mapping: Mapping::decode(lines)? })
    }

    /// Whether a refresh is due at `now`, `interval` seconds after this one.
    pub fn is_due(&self, now: u64, interval: u64) -> bool {
        now >= self.at.saturating_add(interval)
    }
}

/// The refresh lease: until when a VM holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Unix seconds until which no other VM starts a refresh.
    pub until: u64,
}

impl Lease {
    /// The lease a VM takes at `now` to refresh.
    pub fn take(now: u64) -> Lease {
        Lease { until: now.saturating_add(LEASE_SECS) }
    }

    /// The lease a VM leaves after a failed refresh at `now`: the next one waits a little.
    pub fn after_failure(now: u64, interval: u64) -> Lease {
        Lease { until: now.saturating_add(RETRY_SECS.min(interval)) }
    }

    /// The lease a VM leaves after a refresh that published: free at once.
    pub fn released(now: u64) -> Lease {
        Lease { until: now }
    }

    /// The shared-data value.
    pub fn encode(&self) -> String {
        self.until.to_string()
    }

    /// Reads a shared-data value; `None` if it is not one.
    pub fn decode(value: &[u8]) -> Option<Lease> {
        Some(Lease { until: std::str::from_utf8(value).ok()?.parse().ok()? })
    }

    /// Whether another VM may take the lease at `now`.
    pub fn is_free(&self, now: u64) -> bool {
        now >= self.until
    }
}

/// Whether a VM should start a refresh at `now`: the shared mapping is missing or due, and the
/// lease is free (missing, expired, or left free).
pub fn should_refresh(now: u64, interval: u64, published: Option<&Published>, lease: Option<&Lease>) -> bool {
    let due = published.is_none_or(|published| published.is_due(now, interval));
    due && lease.is_none_or(|lease| lease.is_free(now))
}

/// A configuration with a mapping read from Harbor applied, and what changed.
#[derive(Debug)]
pub struct Applied {
    /// The configuration new requests get.
    pub config: Config,
    /// The info line to log: registries added, removed or changed; on the first mapping with no
    /// proxy-cache project, that Harbor has none; `None` when nothing changed.
    pub note: Option<String>,
}

/// Applies `mapping` to `current`, the configuration requests get now.
pub fn apply(current: &Config, mapping: &Mapping) -> Result<Applied, ConfigError> {
    let (old, first) = match &current.discovered {
        Discovered::Applied(old) => (old.clone(), false),
        _ => (Mapping::default(), true),
    };
    let config = current.with_mapping(mapping)?;
    let note = match mapping.changes_from(&old) {
        Some(changes) => Some(format!("discovery: registries {changes}")),
        None if first => Some("discovery: harbor has no proxy-cache project this mirror can see".to_owned()),
        None => None,
    };
    Ok(Applied { config, note })
}

/// The warning for a refresh that failed with `message`, under `current`: what requests keep.
pub fn failure_note(current: &Config, message: &str) -> String {
    let kept = match &current.discovered {
        Discovered::Applied(mapping) => format!("keeping the last good mapping: {mapping}"),
        _ => "no mapping yet: requests that need one get 503".to_owned(),
    };
    format!("discovery: {message}; {kept}")
}
