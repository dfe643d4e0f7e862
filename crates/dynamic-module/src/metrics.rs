//! Metric ids and the errors of metrics calls, shared by the configuration (which defines
//! metrics) and the filter (which counts).

use std::fmt;

use crate::abi;

/// A counter defined by [`ConfigContext::define_counter`](crate::ConfigContext::define_counter). `Copy + Send + Sync`: keep it in the
/// configuration and use it from any filter made from that configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterId(pub(crate) usize);

/// A gauge defined by [`ConfigContext::define_gauge`](crate::ConfigContext::define_gauge). `Copy + Send + Sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GaugeId(pub(crate) usize);

impl CounterId {
    /// The id as a number, for a caller that keeps ids of several kinds in one type.
    pub fn raw(self) -> u64 {
        self.0 as u64
    }

    /// An id from [`CounterId::raw`]. Any number is safe to use: Envoy answers an id it did not
    /// give with [`MetricsError::NotFound`].
    pub fn from_raw(raw: u64) -> Self {
        CounterId(usize::try_from(raw).unwrap_or(usize::MAX))
    }
}

impl GaugeId {
    /// The id as a number, for a caller that keeps ids of several kinds in one type.
    pub fn raw(self) -> u64 {
        self.0 as u64
    }

    /// An id from [`GaugeId::raw`]. Any number is safe to use: Envoy answers an id it did not
    /// give with [`MetricsError::NotFound`].
    pub fn from_raw(raw: u64) -> Self {
        GaugeId(usize::try_from(raw).unwrap_or(usize::MAX))
    }
}

/// Counting and setting gauges, alike from a stream's hook
/// ([`HttpFilterHandle`](crate::HttpFilterHandle)) and from a configuration's
/// ([`ConfigContext`](crate::ConfigContext)).
pub trait RecordMetrics {
    /// Adds `by` to a counter defined by the configuration.
    fn increment_counter(&mut self, counter: CounterId, by: u64) -> Result<(), MetricsError>;

    /// Sets a gauge defined by the configuration.
    fn set_gauge(&mut self, gauge: GaugeId, value: u64) -> Result<(), MetricsError>;
}

/// Why a metrics call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsError {
    /// The id is unknown to this configuration.
    NotFound,
    /// Label values do not match the definition (this crate defines metrics without labels).
    InvalidLabels,
    /// Metrics can be defined only while the configuration is created (in `Module::new_config`).
    Frozen,
    /// A code this crate does not know.
    Unknown(i32),
}

impl MetricsError {
    pub(crate) fn from_raw(code: abi::CEnum) -> Result<(), MetricsError> {
        match code {
            abi::METRICS_SUCCESS => Ok(()),
            abi::METRICS_NOT_FOUND => Err(MetricsError::NotFound),
            abi::METRICS_INVALID_LABELS => Err(MetricsError::InvalidLabels),
            abi::METRICS_FROZEN => Err(MetricsError::Frozen),
            other => Err(MetricsError::Unknown(other)),
        }
    }
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::NotFound => f.write_str("metric not found"),
            MetricsError::InvalidLabels => f.write_str("metric labels do not match"),
            MetricsError::Frozen => f.write_str("metrics can only be defined while the configuration is created"),
            MetricsError::Unknown(code) => write!(f, "metrics call failed with unknown code {code}"),
        }
    }
}

impl std::error::Error for MetricsError {}
