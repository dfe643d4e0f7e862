//! The driver: every flow of the filter, run against the [`host`](crate::host) interface, so that
//! the proxy-wasm filter and the dynamic module only bind it to Envoy.
//!
//! A [`Plugin`] is one configured instance of the filter: one per wasm VM (each worker's, and
//! the main thread's), one for the whole Envoy in the dynamic module. It holds the compiled
//! configurations (one, or one per Higress domain rule), the metrics, managed mode's fetches and
//! discovery's refresh. The adapter hands it Envoy's events:
//!
//! | event | method | where it runs |
//! | --- | --- | --- |
//! | the plugin is configured | [`Plugin::configure`] | the plugin's context |
//! | a request's headers arrive | [`Plugin::on_request_headers`] | the request's |
//! | a paused request is woken | [`Plugin::on_woken`] | the request's |
//! | the answer's headers arrive | [`Plugin::on_response_headers`] | the request's |
//! | the request ends | [`Plugin::on_stream_end`] | the request's (or none: it is dropped) |
//! | the timer ticks | [`Plugin::on_tick`] | the plugin's |
//! | a call is answered | [`Plugin::on_call_answer`] | the context that sent it |
//! | the plugin is woken to send calls | [`Plugin::on_plugin_woken`] | the plugin's |
//! | the plugin stops | [`Plugin::on_stop`] | the plugin's |
//!
//! `exchange` is one request's flow, `tokens` managed mode's token cache and fetches,
//! `discovery` the refresh of the mapping; each reads the data every worker shares through
//! [`Host::shared_data`].

mod discovery;
mod exchange;
mod tokens;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::higress::{DomainSelector, PluginConfig};
use crate::host::{CallAnswer, CallId, Host, HostError, Level, RequestId};
use crate::metrics::{Counter, Metric, Metrics};
use crate::refusal::Refusal;

pub use exchange::{Exchange, ORIGINAL_PATH_KEY};

use discovery::Discovery;
use tokens::Tokens;

/// How often the plugin's timer ticks: held counts go to Envoy, the log level is read again,
/// orphaned token fetches are sent again, and discovery looks whether a refresh is due.
pub const TICK: Duration = Duration::from_millis(500);

/// Every line the filter logs starts with this.
pub const LOG_PREFIX: &str = "harbor-mirror: ";

/// One configured instance of the filter.
pub struct Plugin {
    domains: Vec<Domain>,
    selector: DomainSelector,
    metrics: Metrics,
    /// What each request woken after its project's token fetch takes ([`Plugin::on_woken`]):
    /// a few at a time, so a list.
    woken: Mutex<Vec<(RequestId, Outcome)>>,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("domains", &self.domains.len()).finish_non_exhaustive()
    }
}

/// One configuration (the only one, or a Higress domain rule's, or the global one) and its state.
struct Domain {
    /// The configuration new requests get: discovery replaces it with each new mapping, and a
    /// request keeps the one it began with.
    active: RwLock<Arc<Active>>,
    /// Managed mode's tokens, in managed mode.
    tokens: Option<Tokens>,
    /// Discovery's refresh, with `discover`.
    discovery: Option<Discovery>,
}

/// A configuration as requests get it, with each registry's counter.
#[derive(Debug)]
pub struct Active {
    /// The compiled configuration.
    pub config: Config,
    /// `harbor_mirror.registry.<key>.rewritten` by registry index, where the host has one.
    registry_counters: Vec<Option<Arc<Counter>>>,
}

/// What a request woken after its project's token fetch does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Go on with this bearer token.
    Resume(String),
    /// Answer with this error.
    Refuse(Refusal),
}

impl Domain {
    fn active(&self) -> Arc<Active> {
        self.active.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn replace(&self, active: Active) {
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(active);
    }
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
            domains.push(Domain { active: RwLock::new(Arc::new(Active { config, registry_counters })), tokens, discovery });
        }
        // Parse, compile and metric definitions, in whole microseconds.
        let took = started.and_then(|started| host.now().ok()?.checked_sub(started)).unwrap_or_default();
        let took = took.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(took.subsec_micros()));
        for (index, domain) in domains.iter().enumerate() {
            let active = domain.active();
            let config = &active.config;
            let (count, applies_to, mode) = (config.registries().len(), selector.describe(index), config.auth.describe());
            log(host, Level::Info, format_args!("configured {count} registries{applies_to} in {}.{:03} ms, {mode}", took / 1000, took % 1000));
        }
        let plugin = Plugin { domains, selector, metrics, woken: Mutex::default() };
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

    /// The configuration requests of domain `index` get now (for tests and tools).
    pub fn active(&self, index: usize) -> Option<Arc<Active>> {
        self.domains.get(index).map(Domain::active)
    }

    /// The plugin's timer ticked: held counts go to the host, then each configuration's
    /// discovery and token fetches move on.
    pub fn on_tick(&self, host: &mut impl Host) {
        host.refresh();
        self.metrics.flush(host);
        self.track_memory(host, false);
        for domain in &self.domains {
            if let Some(discovery) = &domain.discovery {
                discovery.on_tick(self, domain, host);
            }
            if let Some(tokens) = &domain.tokens {
                tokens.on_tick(self, host);
            }
        }
    }

    /// Call `call` was answered (or timed out, or failed): it is discovery's or a token fetch's.
    pub fn on_call_answer(&self, host: &mut impl Host, call: CallId, answer: &impl CallAnswer) {
        for domain in &self.domains {
            if let Some(discovery) = domain.discovery.as_ref().filter(|discovery| discovery.owns(call)) {
                discovery.on_answer(self, domain, host, call, answer);
                return;
            }
        }
        for domain in &self.domains {
            if let Some(tokens) = &domain.tokens
                && tokens.on_answer(self, host, call, answer)
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
                tokens.send_queued(self, host);
            }
        }
    }

    /// The plugin stops: its held counts go to the host, and its memory off the gauge.
    pub fn on_stop(&self, host: &mut impl Host) {
        self.metrics.flush(host);
        self.track_memory(host, true);
    }

    fn woken(&self) -> MutexGuard<'_, Vec<(RequestId, Outcome)>> {
        // A panic cannot leave the list half-written: the release builds abort on panic.
        self.woken.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what request `request` was woken with.
    fn take_outcome(&self, request: RequestId) -> Option<Outcome> {
        let mut woken = self.woken();
        let at = woken.iter().position(|(id, _)| *id == request)?;
        Some(woken.swap_remove(at).1)
    }

    /// Leaves each of `requests` its outcome and wakes it; a request the host cannot reach any
    /// more is forgotten.
    fn wake_all(&self, host: &mut impl Host, requests: &[RequestId], outcome: &Outcome) {
        for &request in requests {
            self.woken().push((request, outcome.clone()));
            if !host.wake(request) {
                self.take_outcome(request);
            }
        }
    }

    fn track_memory(&self, host: &mut impl Host, stopping: bool) {
        if let Err(e) = self.metrics.track_memory(host, stopping) {
            log(host, Level::Warn, e);
        }
    }
}

/// Logs `message` at `level`, prefixed with the filter's name, if the host logs that level.
fn log(host: &mut impl Host, level: Level, message: impl fmt::Display) {
    if host.log_enabled(level) {
        host.log(level, &format!("{LOG_PREFIX}{message}"));
    }
}

/// Seconds since the Unix epoch, by the host's clock.
fn now_secs(host: &impl Host) -> Result<u64, HostError> {
    Ok(host.now()?.as_secs())
}

impl Plugin {
    fn count(&self, host: &mut impl Host, metric: Metric) {
        self.metrics.add_one(host, metric);
    }
}
