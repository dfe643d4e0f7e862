//! The filter's metrics: the one table of their names, kinds and meanings ([`METRICS`]), and the
//! ids a host gave them ([`Metrics`]), with the counts held for hosts that hand them over on the
//! plugin's tick ([`Host::holds_counts`]).
//!
//! The proxy-wasm filter's metrics show as `wasmcustom.<name>` in `/stats` and `<name>` with `_`
//! for `.` in `/stats/prometheus`; the dynamic module defines them without the namespace
//! ([`Def::name_in_namespace`]), which its filter configuration's `metrics_namespace` adds back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::Config;
use crate::host::{Host, HostError, MetricId, MetricKind};

/// The namespace every metric name starts with (`harbor_mirror.`).
pub const NAMESPACE: &str = "harbor_mirror";

/// One metric, or one family of them (`<key>` stands for a registry key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    /// The name, with its namespace.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// What it counts, on one line.
    pub help: &'static str,
    /// The label a family's names carry (`key`), or `None` for one metric.
    pub label: Option<&'static str>,
    /// Whether it exists only in the proxy-wasm filter (its VMs' memory).
    pub wasm_only: bool,
}

impl Def {
    /// The name without `harbor_mirror.`, as a dynamic module defines it under its
    /// `metrics_namespace`.
    pub fn name_in_namespace(&self) -> &'static str {
        in_namespace(self.name)
    }
}

/// `name` without `harbor_mirror.`.
pub fn in_namespace(name: &str) -> &str {
    name.strip_prefix(NAMESPACE).and_then(|rest| rest.strip_prefix('.')).unwrap_or(name)
}

/// The metrics with one name each, in [`METRICS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Metric {
    /// `harbor_mirror.rewritten`.
    Rewritten,
    /// `harbor_mirror.passed`.
    Passed,
    /// `harbor_mirror.rejected`.
    Rejected,
    /// `harbor_mirror.challenges_rewritten`.
    ChallengesRewritten,
    /// `harbor_mirror.token.fetches`.
    TokenFetches,
    /// `harbor_mirror.token.cache_hits`.
    TokenCacheHits,
    /// `harbor_mirror.token.fetch_failures`.
    TokenFetchFailures,
    /// `harbor_mirror.discovery.refreshes`.
    DiscoveryRefreshes,
    /// `harbor_mirror.discovery.failures`.
    DiscoveryFailures,
    /// `harbor_mirror.discovery.registries`.
    DiscoveryRegistries,
    /// `harbor_mirror.wasm_memory_bytes`.
    WasmMemoryBytes,
    /// `harbor_mirror.coalesce.waited`.
    CoalesceWaited,
    /// `harbor_mirror.coalesce.released`.
    CoalesceReleased,
    /// `harbor_mirror.coalesce.waited_ms`.
    CoalesceWaitedMs,
}

const COUNTER: MetricKind = MetricKind::Counter;
const GAUGE: MetricKind = MetricKind::Gauge;

const fn def(name: &'static str, kind: MetricKind, help: &'static str) -> Def {
    Def { name, kind, help, label: None, wasm_only: false }
}

/// Every metric: those of [`Metric`], in its order, then the per-registry family.
pub const METRICS: [Def; 15] = [
    def("harbor_mirror.rewritten", COUNTER, "repository and token requests mapped to a Harbor project and forwarded"),
    def("harbor_mirror.passed", COUNTER, "requests forwarded without mapping (non-repository paths, prefixed names, no registry)"),
    def("harbor_mirror.rejected", COUNTER, "requests answered with an OCI error"),
    def("harbor_mirror.challenges_rewritten", COUNTER, "Harbor's 401 answers whose WWW-Authenticate was pointed back at the mirror"),
    def("harbor_mirror.token.fetches", COUNTER, "managed mode: token requests sent to Harbor"),
    def("harbor_mirror.token.cache_hits", COUNTER, "managed mode: requests served with a cached token"),
    def("harbor_mirror.token.fetch_failures", COUNTER, "managed mode: token requests that gave no usable token"),
    def("harbor_mirror.discovery.refreshes", COUNTER, "discovery: refreshes that read a complete mapping from Harbor"),
    def("harbor_mirror.discovery.failures", COUNTER, "discovery: refreshes that failed (the last good mapping stayed)"),
    def("harbor_mirror.discovery.registries", GAUGE, "discovery: the registries of the mapping applied"),
    Def { wasm_only: true, ..def("harbor_mirror.wasm_memory_bytes", GAUGE, "the linear memory of the plugin's VMs, summed") },
    def("harbor_mirror.coalesce.waited", COUNTER, "manifest and layer GETs that waited for the identical one in flight"),
    def("harbor_mirror.coalesce.released", COUNTER, "waiting GETs served by the burst: the first one's manifest, or the layer once harbor stored it"),
    def("harbor_mirror.coalesce.waited_ms", COUNTER, "the milliseconds waiting manifest GETs waited, summed"),
    Def { label: Some("key"), ..def(REGISTRY_REWRITTEN, COUNTER, "rewritten requests per registry") },
];

/// The per-registry family's name, `<key>` standing for the registry key.
pub const REGISTRY_REWRITTEN: &str = "harbor_mirror.registry.<key>.rewritten";

impl Metric {
    const ALL: [Metric; 14] = [
        Metric::Rewritten,
        Metric::Passed,
        Metric::Rejected,
        Metric::ChallengesRewritten,
        Metric::TokenFetches,
        Metric::TokenCacheHits,
        Metric::TokenFetchFailures,
        Metric::DiscoveryRefreshes,
        Metric::DiscoveryFailures,
        Metric::DiscoveryRegistries,
        Metric::WasmMemoryBytes,
        Metric::CoalesceWaited,
        Metric::CoalesceReleased,
        Metric::CoalesceWaitedMs,
    ];

    /// Its row of [`METRICS`].
    pub fn def(self) -> &'static Def {
        &METRICS[self as usize]
    }
}

/// The name of registry `key`'s counter.
pub fn registry_rewritten(key: &str) -> String {
    REGISTRY_REWRITTEN.replace("<key>", key)
}

/// A counter as a host defined it, with the counts held for it.
#[derive(Debug)]
pub struct Counter {
    id: MetricId,
    held: AtomicU64,
}

impl Counter {
    fn new(id: MetricId) -> Self {
        Counter { id, held: AtomicU64::new(0) }
    }

    /// Adds one, now or at the next [`Metrics::flush`].
    pub fn add_one(&self, host: &mut impl Host) {
        self.add(host, 1);
    }

    /// Adds `by`, now or at the next [`Metrics::flush`].
    pub fn add(&self, host: &mut impl Host, by: u64) {
        if host.holds_counts() {
            self.held.fetch_add(by, Ordering::Relaxed);
        } else {
            host.count(self.id, by);
        }
    }

    fn flush(&self, host: &mut impl Host) {
        let held = self.held.swap(0, Ordering::Relaxed);
        if held > 0 {
            host.count(self.id, held);
        }
    }
}

/// The ids of one plugin's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// By [`Metric`]; `None` for a metric this host does not have (`wasm_memory_bytes` without
    /// [`Host::memory_bytes`]).
    fixed: Vec<Option<Kept>>,
    /// Registry counters, sorted by key (discovery adds keys where the host can define them).
    registries: RwLock<Vec<(String, Arc<Counter>)>>,
    /// This instance's memory as last added to `wasm_memory_bytes`.
    memory_reported: AtomicU64,
}

#[derive(Debug)]
enum Kept {
    Counter(Counter),
    Gauge(MetricId),
}

impl Metrics {
    /// Defines every metric but the registries' counters ([`Metrics::define_registries`]).
    pub fn define(host: &mut impl Host) -> Result<Metrics, HostError> {
        let has_memory = host.memory_bytes().is_some();
        let mut fixed = Vec::with_capacity(Metric::ALL.len());
        for metric in Metric::ALL {
            let def = metric.def();
            if def.wasm_only && !has_memory {
                fixed.push(None);
                continue;
            }
            let id = host.define_metric(def.kind, def.name)?;
            fixed.push(id.map(|id| match def.kind {
                MetricKind::Counter => Kept::Counter(Counter::new(id)),
                MetricKind::Gauge => Kept::Gauge(id),
            }));
        }
        Ok(Metrics { fixed, registries: RwLock::default(), memory_reported: AtomicU64::new(0) })
    }

    /// Defines the counters of `config`'s registries that have none yet, where the host can,
    /// and gives each registry of `config` its counter, by index.
    pub fn define_registries(&self, host: &mut impl Host, config: &Config) -> Result<Vec<Option<Arc<Counter>>>, HostError> {
        let mut known = self.registries.write().unwrap_or_else(PoisonError::into_inner);
        let mut by_index = Vec::with_capacity(config.registries().len());
        for registry in config.registries() {
            let counter = match known.binary_search_by(|(key, _)| key.as_str().cmp(&registry.key)) {
                Ok(at) => known.get(at).map(|(_, counter)| counter.clone()),
                Err(at) => match host.define_metric(MetricKind::Counter, &registry_rewritten(&registry.key))? {
                    Some(id) => {
                        let counter = Arc::new(Counter::new(id));
                        known.insert(at, (registry.key.clone(), counter.clone()));
                        Some(counter)
                    }
                    None => None,
                },
            };
            by_index.push(counter);
        }
        Ok(by_index)
    }

    /// The counters `config`'s registries already have, by index (none defined).
    pub fn known_registries(&self, config: &Config) -> Vec<Option<Arc<Counter>>> {
        let known = self.registries.read().unwrap_or_else(PoisonError::into_inner);
        config
            .registries()
            .iter()
            .map(|registry| {
                let at = known.binary_search_by(|(key, _)| key.as_str().cmp(&registry.key)).ok()?;
                known.get(at).map(|(_, counter)| counter.clone())
            })
            .collect()
    }

    /// The counter `metric`, if this host has it.
    pub fn counter(&self, metric: Metric) -> Option<&Counter> {
        match self.fixed.get(metric as usize) {
            Some(Some(Kept::Counter(counter))) => Some(counter),
            _ => None,
        }
    }

    /// Adds one to counter `metric`.
    pub fn add_one(&self, host: &mut impl Host, metric: Metric) {
        if let Some(counter) = self.counter(metric) {
            counter.add_one(host);
        }
    }

    /// Adds `by` to counter `metric`.
    pub fn add(&self, host: &mut impl Host, metric: Metric, by: u64) {
        if let Some(counter) = self.counter(metric) {
            counter.add(host, by);
        }
    }

    /// The gauge `metric`, if this host has it.
    pub fn gauge(&self, metric: Metric) -> Option<MetricId> {
        match self.fixed.get(metric as usize) {
            Some(Some(Kept::Gauge(id))) => Some(*id),
            _ => None,
        }
    }

    /// Hands the held counts to the host: on every tick, and when the plugin stops.
    pub fn flush(&self, host: &mut impl Host) {
        for kept in self.fixed.iter().flatten() {
            if let Kept::Counter(counter) = kept {
                counter.flush(host);
            }
        }
        for (_, counter) in self.registries.read().unwrap_or_else(PoisonError::into_inner).iter() {
            counter.flush(host);
        }
    }

    /// Adds the growth of this instance's memory since the last call to `wasm_memory_bytes`
    /// (nothing without [`Host::memory_bytes`]); with `stopping`, takes its whole share off.
    pub fn track_memory(&self, host: &mut impl Host, stopping: bool) -> Result<(), HostError> {
        let (Some(gauge), Some(now)) = (self.gauge(Metric::WasmMemoryBytes), host.memory_bytes()) else {
            return Ok(());
        };
        let now = if stopping { 0 } else { now };
        let reported = self.memory_reported.swap(now, Ordering::Relaxed);
        if now == reported {
            return Ok(());
        }
        let delta = i64::try_from(now).unwrap_or(i64::MAX).saturating_sub(i64::try_from(reported).unwrap_or(i64::MAX));
        host.add_to_gauge(gauge, delta)
    }
}
