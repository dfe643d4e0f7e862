//! The module's counters and gauge, defined when Envoy creates the filter configuration (the
//! only time the ABI lets a module define metrics). With `metrics_namespace: harbor_mirror` in
//! the filter's `dynamic_module_config` (as `envoy/harbor-mirror-module.yaml` sets it), `/stats`
//! shows them as `harbor_mirror.<name>`, the names the wasm filter has after `wasmcustom.`.
//!
//! Counting is one native call into Envoy's stats (an atomic add), so requests count as they go.

use envoy_dynamic_module::log::Level;
use envoy_dynamic_module::{ConfigContext, CounterId, GaugeId, HttpFilterHandle, MetricsError};

use harbor_mirror_core::exchange::Count;
use harbor_mirror_core::Config;

use crate::log;

/// The metrics of one configuration.
pub struct Metrics {
    rewritten: CounterId,
    passed: CounterId,
    rejected: CounterId,
    /// `registry.<key>.rewritten` of each configured registry, sorted by key. Registries that
    /// discovery adds later have none: the ABI defines metrics only at configuration time.
    registry_rewritten: Vec<(String, CounterId)>,
    /// 401 challenges whose realm was pointed back at this proxy.
    pub challenges_rewritten: CounterId,
    /// Managed mode: token requests sent to Harbor.
    pub token_fetches: CounterId,
    /// Managed mode: requests served with a cached token.
    pub token_cache_hits: CounterId,
    /// Managed mode: token requests that gave no usable token.
    pub token_fetch_failures: CounterId,
    /// Discovery: refreshes that published a mapping.
    pub discovery_refreshes: CounterId,
    /// Discovery: refreshes that failed (the last good mapping stayed).
    pub discovery_failures: CounterId,
    /// Gauge: the registries of the discovered mapping.
    pub discovery_registries: GaugeId,
}

impl Metrics {
    /// Defines every metric of `config`.
    pub fn define(ctx: &mut ConfigContext<'_>, config: &Config) -> Result<Metrics, MetricsError> {
        let mut registry_rewritten = Vec::with_capacity(config.registries().len());
        for registry in config.registries() {
            registry_rewritten.push((registry.key.clone(), ctx.define_counter(&format!("registry.{}.rewritten", registry.key))?));
        }
        registry_rewritten.sort_by(|a, b| a.0.cmp(&b.0));
        registry_rewritten.dedup_by(|a, b| a.0 == b.0);
        Ok(Metrics {
            rewritten: ctx.define_counter("rewritten")?,
            passed: ctx.define_counter("passed")?,
            rejected: ctx.define_counter("rejected")?,
            registry_rewritten,
            challenges_rewritten: ctx.define_counter("challenges_rewritten")?,
            token_fetches: ctx.define_counter("token.fetches")?,
            token_cache_hits: ctx.define_counter("token.cache_hits")?,
            token_fetch_failures: ctx.define_counter("token.fetch_failures")?,
            discovery_refreshes: ctx.define_counter("discovery.refreshes")?,
            discovery_failures: ctx.define_counter("discovery.failures")?,
            discovery_registries: ctx.define_gauge("discovery.registries")?,
        })
    }

    /// Counts a request as the core's plan says.
    pub fn count(&self, envoy: &mut HttpFilterHandle<'_>, count: Count<'_>) {
        match count {
            Count::Nothing => {}
            Count::Rejected => increment(envoy, self.rejected),
            Count::Passed => increment(envoy, self.passed),
            Count::Rewritten(registry) => {
                increment(envoy, self.rewritten);
                if let Ok(at) = self.registry_rewritten.binary_search_by(|(key, _)| key.as_str().cmp(&registry.key)) {
                    increment(envoy, self.registry_rewritten[at].1);
                }
            }
        }
    }
}

/// Adds one to a counter from a request; a failure is logged, never passed on.
pub fn increment(envoy: &mut HttpFilterHandle<'_>, counter: CounterId) {
    if let Err(e) = envoy.increment_counter(counter, 1) {
        log(Level::Warn, &format!("counting: {e}"));
    }
}

/// Adds one to a counter from the main thread.
pub fn increment_here(ctx: &mut ConfigContext<'_>, counter: CounterId) {
    if let Err(e) = ctx.increment_counter(counter, 1) {
        log(Level::Warn, &format!("counting: {e}"));
    }
}
