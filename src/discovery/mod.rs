//! Discovery: the mapping from upstream registry to proxy-cache project, read from Harbor's own
//! API (`discover` in the configuration), so that the filter's configuration can be Harbor's
//! address alone.
//!
//! [`mapping`] reads Harbor's answers into the mapping, [`refresh`] is one refresh as a state
//! machine. The mapping is shared by every plugin instance of an Envoy (each wasm VM, or the
//! module's one) through the data its workers share: [`Published`] is its entry, and a lease
//! ([`Lease`]) lets one instance refresh it per interval, whichever finds it due first. The
//! [`driver`](crate::driver) runs it.

pub mod mapping;
pub mod refresh;

pub use mapping::Mapping;


/// How long an instance holds the lease of a refresh it runs: others wait this long before
/// taking over from one that went away.
pub const LEASE_SECS: u64 = 120;

/// How long after a failed refresh the next one starts (or the interval, if shorter).
pub const RETRY_SECS: u64 = 5;

/// The mapping as the plugin's instances share it: when it was read, and what it is.
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

/// The refresh lease: until when an instance holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Unix seconds until which no other instance starts a refresh.
    pub until: u64,
}

impl Lease {
    /// The lease an instance takes at `now` to refresh.
    pub fn take(now: u64) -> Lease {
        Lease { until: now.saturating_add(LEASE_SECS) }
    }

    /// The lease an instance leaves after a failed refresh at `now`: the next one waits a little.
    pub fn after_failure(now: u64, interval: u64) -> Lease {
        Lease { until: now.saturating_add(RETRY_SECS.min(interval)) }
    }

    /// The lease an instance leaves after a refresh that published: free at once.
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

    /// Whether another instance may take the lease at `now`.
    pub fn is_free(&self, now: u64) -> bool {
        now >= self.until
    }
}

/// Whether an instance should start a refresh at `now`: the shared mapping is missing or due, and the
/// lease is free (missing, expired, or left free).
pub fn should_refresh(now: u64, interval: u64, published: Option<&Published>, lease: Option<&Lease>) -> bool {
    let due = published.is_none_or(|published| published.is_due(now, interval));
    due && lease.is_none_or(|lease| lease.is_free(now))
}
