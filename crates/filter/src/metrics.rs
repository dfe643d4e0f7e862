//! The filter's counters and its memory gauge, defined once at configure. Envoy shows them as
//! `wasmcustom.harbor_mirror.*` in `/stats` and `harbor_mirror_*` in `/stats/prometheus`.
//!
//! Counting costs requests no host call: each VM adds up its counts and hands them to Envoy on
//! its root context's tick ([`Metrics::flush`]), and when it stops. Envoy's figures are at most a
//! tick behind.

use std::cell::{Cell, RefCell};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};

use super::host::{host, log, HostError};
use harbor_mirror_core::exchange::Count;
use harbor_mirror_core::Config;

/// A counter: Envoy's metric id, and the counts not yet handed to Envoy.
pub struct Counter {
    id: u32,
    pending: Cell<u64>,
}

impl Counter {
    fn define(name: &str) -> Result<Counter, HostError> {
        Ok(Counter { id: host("define_metric", hostcalls::define_metric(MetricType::Counter, name))?, pending: Cell::new(0) })
    }

    /// Hands the pending counts to Envoy, in one host call if there are any.
    fn flush(&self) {
        let pending = self.pending.replace(0);
        if pending > 0 && let Err(e) = host("increment_metric", hostcalls::increment_metric(self.id, i64::try_from(pending).unwrap_or(i64::MAX))) {
            log(LogLevel::Warn, &e.to_string());
        }
    }
}

/// The metrics.
pub struct Metrics {
    rewritten: Counter,
    passed: Counter,
    rejected: Counter,
    /// `harbor_mirror.registry.<key>.rewritten`, sorted by key (discovery adds keys).
    registry_rewritten: RefCell<Vec<(String, Counter)>>,
    /// 401 challenges whose realm was pointed back at this proxy.
    pub challenges_rewritten: Counter,
    /// Managed mode: token requests sent to Harbor.
    pub token_fetches: Counter,
    /// Managed mode: requests served with a cached token.
    pub token_cache_hits: Counter,
    /// Managed mode: token requests that gave no usable token.
    pub token_fetch_failures: Counter,
    /// Discovery: refreshes that published a mapping.
    pub discovery_refreshes: Counter,
    /// Discovery: refreshes that failed (the last good mapping stayed).
    pub discovery_failures: Counter,
    /// Gauge: the registries of the discovered mapping.
    pub discovery_registries: u32,
    /// Gauge: the linear memory of this plugin's VMs, summed; each VM adds its own growth.
    wasm_memory: u32,
    /// This VM's memory as last added to the gauge.
    wasm_memory_reported: Cell<u64>,
}

impl Metrics {
    pub fn define(config: &Config) -> Result<Metrics, HostError> {
        let counter = Counter::define;
        let gauge = |name: &str| host("define_metric", hostcalls::define_metric(MetricType::Gauge, name));
        let metrics = Metrics {
            rewritten: counter("harbor_mirror.rewritten")?,
            passed: counter("harbor_mirror.passed")?,
            rejected: counter("harbor_mirror.rejected")?,
            registry_rewritten: RefCell::new(Vec::new()),
            challenges_rewritten: counter("harbor_mirror.challenges_rewritten")?,
            token_fetches: counter("harbor_mirror.token.fetches")?,
            token_cache_hits: counter("harbor_mirror.token.cache_hits")?,
            token_fetch_failures: counter("harbor_mirror.token.fetch_failures")?,
            discovery_refreshes: counter("harbor_mirror.discovery.refreshes")?,
            discovery_failures: counter("harbor_mirror.discovery.failures")?,
            discovery_registries: gauge("harbor_mirror.discovery.registries")?,
            wasm_memory: gauge("harbor_mirror.wasm_memory_bytes")?,
            wasm_memory_reported: Cell::new(0),
        };
        metrics.define_registries(config)?;
        Ok(metrics)
    }

    /// Defines `harbor_mirror.registry.<key>.rewritten` for the registries of `config` that have
    /// none yet (discovery brings new ones).
    pub fn define_registries(&self, config: &Config) -> Result<(), HostError> {
        let mut ids = self.registry_rewritten.borrow_mut();
        for registry in config.registries() {
            if let Err(at) = ids.binary_search_by(|(key, _)| key.as_str().cmp(&registry.key)) {
                let counter = Counter::define(&format!("harbor_mirror.registry.{}.rewritten", registry.key))?;
                ids.insert(at, (registry.key.clone(), counter));
            }
        }
        Ok(())
    }

    /// Sets a gauge; a failure is logged, never passed on.
    pub fn record(&self, id: u32, value: u64) {
        if let Err(e) = host("record_metric", hostcalls::record_metric(id, value)) {
            log(LogLevel::Warn, &e.to_string());
        }
    }

    /// Adds this VM's memory growth since the last call to the memory gauge. Costs a host call
    /// only when the memory grew, which a VM in its steady state never does.
    pub fn track_memory(&self) {
        let now = u64::try_from(std::arch::wasm32::memory_size::<0>()).unwrap_or(u64::MAX).saturating_mul(65536);
        let reported = self.wasm_memory_reported.replace(now);
        if now != reported {
            let delta = i64::try_from(now).unwrap_or(i64::MAX).saturating_sub(i64::try_from(reported).unwrap_or(i64::MAX));
            if let Err(e) = host("increment_metric", hostcalls::increment_metric(self.wasm_memory, delta)) {
                log(LogLevel::Warn, &e.to_string());
            }
        }
    }

    /// Takes this VM's memory off the gauge, when the VM is stopped.
    pub fn forget_memory(&self) {
        let reported = self.wasm_memory_reported.replace(0);
        let delta = i64::try_from(reported).unwrap_or(i64::MAX);
        if delta != 0 && let Err(e) = host("increment_metric", hostcalls::increment_metric(self.wasm_memory, -delta)) {
            log(LogLevel::Warn, &e.to_string());
        }
    }

    /// Adds one to a counter, for the next [`Metrics::flush`].
    pub fn increment(&self, counter: &Counter) {
        counter.pending.set(counter.pending.get().saturating_add(1));
    }

    /// Counts a request.
    pub fn count(&self, count: Count<'_>) {
        match count {
            Count::Nothing => {}
            Count::Rejected => self.increment(&self.rejected),
            Count::Rewritten(registry) => {
                self.increment(&self.rewritten);
                let ids = self.registry_rewritten.borrow();
                if let Ok(at) = ids.binary_search_by(|(key, _)| key.as_str().cmp(&registry.key))
                    && let Some((_, counter)) = ids.get(at)
                {
                    self.increment(counter);
                }
            }
            Count::Passed => self.increment(&self.passed),
        }
    }

    /// Hands every counter's pending counts to Envoy: on the root context's tick, and when the
    /// VM stops.
    pub fn flush(&self) {
        for counter in [
            &self.rewritten,
            &self.passed,
            &self.rejected,
            &self.challenges_rewritten,
            &self.token_fetches,
            &self.token_cache_hits,
            &self.token_fetch_failures,
            &self.discovery_refreshes,
            &self.discovery_failures,
        ] {
            counter.flush();
        }
        for (_, counter) in self.registry_rewritten.borrow().iter() {
            counter.flush();
        }
    }
}
