//! The plugin instance: its configurations, their state, and the events of its own context.

use std::fmt;
use std::time::Duration;

use crate::higress::{DomainSelector, PluginConfig};
use crate::host::{CallAnswer, CallId, Host, Level};
use crate::metrics::{Metric, Metrics};

use super::active::{Active, Current};
use super::discovery::Discovery;
use super::tokens::Tokens;
use super::waiting::{wake_released, Waiting};
use super::woken::Woken;

/// How often the plugin's timer ticks: held counts go to Envoy, the log level is read again,
/// orphaned token fetches are sent again, discovery looks whether a refresh is due, and
/// requests that waited `coalesce.max_wait_ms` go on.
pub const TICK: Duration = Duration::from_millis(500);

/// One configured instance of the filter.
pub struct Plugin {
    pub(super) domains: Vec<Domain>,
    pub(super) selector: DomainSelector,
    pub(super) metrics: Metrics,
    /// What each request woken after its project's token fetch takes ([`Plugin::on_woken`]).
    pub(super) woken: Woken,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("domains", &self.domains.len()).finish_non_exhaustive()
    }
}

/// One configuration (the only one, or a Higress domain rule's, or the global one) and its state.
pub(super) struct Domain {
    /// The configuration new requests get: discovery replaces it with each new mapping, and a
    /// request keeps the one it began with.
    pub(super) current: Current,
    /// Managed mode's tokens, in managed mode.
    pub(super) tokens: Option<Tokens>,
    /// Discovery's refresh, with `discover`.
    pub(super) discovery: Option<Discovery>,
    /// The identical GETs waiting for the one in flight, with `coalesce` on.
    pub(super) waiting: Option<Waiting>,
}

impl Plugin {
    /// Reads and compiles the plugin configuration, defines the metrics and logs what was
    /// configured; `Err` holds the one line that says what is wrong, for the adapter to report
    /// as its host does (Envoy then refuses the configuration).
    pub fn configure(host: &mut impl Host, json: &[u8]) -> Result<Plugin, String> {
        host.refresh();
        let started = host.now().ok();
        let PluginConfig { configs, selector } = PluginConfig::from_json(json).map_err(|e| format!("invalid configuration: {e}"))?;
        let metrics = Metrics::define(host).map_err(|e| format!("cannot define metrics: {e}"))?;
        let sender = host.call_sender();
        let mut domains = Vec::with_capacity(configs.len());
        for config in configs {
            let registry_counters = metrics.define_registries(host, &config).map_err(|e| format!("cannot define metrics: {e}"))?;
            let tokens = config.auth.managed.clone().map(|managed| Tokens::new(managed, sender));
            let discovery = config.discover.as_ref().map(|discover| Discovery::prepare(host, discover));
            let waiting = config.coalesce.enabled.then(|| Waiting::new(config.coalesce.max_wait_ms));
            domains.push(Domain { current: Current::new(Active::new(config, registry_counters)), tokens, discovery, waiting });
        }
        // Parse, compile and metric definitions, in whole microseconds.
        let took = started.and_then(|started| host.now().ok()?.checked_sub(started)).unwrap_or_default();
        let took = took.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(took.subsec_micros()));
        for (index, domain) in domains.iter().enumerate() {
            let active = domain.current.get();
            let config = &active.config;
            let (count, applies_to, mode) = (config.registries().len(), selector.describe(index), config.auth.describe());
            host.log(Level::Info, format_args!("configured {count} registries{applies_to} in {}.{:03} ms, {mode}", took / 1000, took % 1000));
        }
        let plugin = Plugin { domains, selector, metrics, woken: Woken::default() };
        plugin.track_memory(host, false);
        Ok(plugin)
    }

    /// Whether any configuration reads its registries from Harbor (it then needs the timer).
    pub fn discovers(&self) -> bool {
        self.domains.iter().any(|domain| domain.discovery.is_some())
    }

    /// Whether any configuration is in managed mode (its requests may pause for a token).
    pub fn manages(&self) -> bool {
        self.domains.iter().any(|domain| domain.tokens.is_some())
    }

    /// Whether any configuration coalesces identical GETs (its requests may pause for
    /// one another, at most `coalesce.max_wait_ms`: it then needs the timer).
    pub fn coalesces(&self) -> bool {
        self.domains.iter().any(|domain| domain.waiting.is_some())
    }

    /// The plugin's timer ticked: held counts go to the host, then each configuration's
    /// discovery and token fetches move on.
    pub fn on_tick(&self, host: &mut impl Host) {
        host.refresh();
        self.metrics.flush(host);
        self.track_memory(host, false);
        for domain in &self.domains {
            if let Some(discovery) = &domain.discovery {
                discovery.on_tick(&self.metrics, &domain.current, host);
            }
            if let Some(tokens) = &domain.tokens {
                tokens.on_tick(&self.metrics, &self.woken, host);
            }
            if let Some(waiting) = &domain.waiting {
                let expired = waiting.expire(host);
                wake_released(&self.metrics, &self.woken, host, expired, "waited coalesce.max_wait_ms for the identical request in flight");
                waiting.send_probes(host);
            }
        }
    }

    /// Call `call` was answered (or timed out, or failed): it is a storage check of a blob
    /// requests wait for, discovery's, or a token fetch's.
    pub fn on_call_answer(&self, host: &mut impl Host, call: CallId, answer: &impl CallAnswer) {
        for waiting in self.domains.iter().filter_map(|domain| domain.waiting.as_ref()) {
            if let Some(released) = waiting.probed(host, call, answer) {
                wake_released(&self.metrics, &self.woken, host, released, "harbor has stored the blob");
                return;
            }
        }
        for domain in &self.domains {
            if let Some(discovery) = domain.discovery.as_ref().filter(|discovery| discovery.owns(call)) {
                discovery.on_answer(&self.metrics, &domain.current, host, call, answer);
                return;
            }
        }
        for domain in &self.domains {
            if let Some(tokens) = &domain.tokens
                && tokens.on_answer(&self.metrics, &self.woken, host, call, answer)
            {
                return;
            }
        }
    }

    /// The plugin's context was woken by a request ([`CallSender::Plugin`]): send the queued
    /// token calls.
    ///
    /// [`CallSender::Plugin`]: crate::host::CallSender::Plugin
    pub fn on_plugin_woken(&self, host: &mut impl Host) {
        for domain in &self.domains {
            if let Some(tokens) = &domain.tokens {
                tokens.send_queued(&self.metrics, &self.woken, host);
            }
        }
    }

    /// The plugin stops: its held counts go to the host, and its memory off the gauge.
    pub fn on_stop(&self, host: &mut impl Host) {
        self.metrics.flush(host);
        self.track_memory(host, true);
    }

    fn track_memory(&self, host: &mut impl Host, stopping: bool) {
        if let Err(e) = self.metrics.track_memory(host, stopping) {
            host.log(Level::Warn, e);
        }
    }
}

impl Plugin {
    pub(super) fn count(&self, host: &mut impl Host, metric: Metric) {
        self.metrics.add_one(host, metric);
    }
}
