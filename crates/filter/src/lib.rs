//! The proxy-wasm adapter: moves bytes between Envoy and the core. It reads the request headers
//! once, asks the core for a decision and applies it (a new `:path`, or a local OCI error
//! reply), counting what it did; in managed mode it drives the core's fetch machine for the
//! robot's token; on the answer it reads what the core's response plan asks for and does what it
//! says (challenges pointed back at this proxy, or Harbor's 401 to the robot's token answered).
//!
//! Host calls go through [`host`], where their failures become errors in one place; nothing
//! here unwraps or panics.
#![cfg(target_arch = "wasm32")]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod discovery;
mod host;
mod metrics;
mod token_cache;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use harbor_mirror_core::exchange::{self, plan, Forward, Plan, RequestHeaders, CLIENT_CREDENTIALS};
use harbor_mirror_core::higress::{DomainSelector, PluginConfig};
use harbor_mirror_core::managed::cache::CacheEntry;
use harbor_mirror_core::managed::fetch::{Action as FetchAction, Fetches, Step};
use harbor_mirror_core::oci;
use harbor_mirror_core::refusal::Refusal;
use harbor_mirror_core::response::{Answer, Forwarded, Look};
use harbor_mirror_core::Config;
use discovery::{Discovering, Discovery};
use host::{
    debug_enabled, header, header_map, host, keep_original_path, log, now_secs, refresh_log_level, send_refusal, send_reply, set_header, HostError,
    DEBUG_HEADER,
};
use metrics::Metrics;
use token_cache::TokenCache;

/// How often each VM's root context ticks: it hands the counts of its requests to Envoy, reads
/// the log level again, looks for managed mode's orphaned fetches and drives discovery.
const TICK: Duration = Duration::from_millis(500);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(MirrorRoot { id: context_id, plugin: None }));
}}

/// The configured plugin: one [`Shared`] per configuration (one, or one per Higress domain rule
/// and the global one), and which request gets which.
struct Plugin {
    domains: Vec<Rc<Shared>>,
    selector: DomainSelector,
}

impl Plugin {
    /// The configuration for a request to `authority`, or `None` when the request is not the
    /// plugin's (a Higress rule set without a global configuration, and no rule for its host).
    fn select(&self, authority: &[u8]) -> Option<&Rc<Shared>> {
        let index = match std::str::from_utf8(authority) {
            Ok(authority) => self.selector.select(authority),
            Err(_) => self.selector.select(""),
        };
        self.domains.get(index?)
    }

    /// The metrics that track the VM's memory: one set per VM, whatever the domains.
    fn memory(&self) -> Option<&Metrics> {
        self.domains.first().map(|shared| &shared.metrics)
    }
}

/// What every request context of a configured plugin shares.
struct Shared {
    /// The configuration new requests get: discovery replaces it with each new mapping, and a
    /// request keeps the one it began with.
    config: RefCell<Rc<Config>>,
    metrics: Metrics,
    /// Managed mode's fetches in flight in this VM.
    fetches: RefCell<Fetches>,
    /// Discovery's state in this VM.
    discovery: Discovery,
}

impl Shared {
    /// The configuration for a new request.
    fn config(&self) -> Rc<Config> {
        self.config.borrow().clone()
    }

    /// Managed mode's host side under `config`, if it is in managed mode.
    fn token_cache<'a>(&'a self, config: &'a Config) -> Option<TokenCache<'a>> {
        let managed = config.auth.managed.as_ref()?;
        Some(TokenCache { managed, metrics: &self.metrics, fetches: &self.fetches })
    }

    /// Discovery's host side.
    fn discovering(&self) -> Discovering<'_> {
        Discovering { config: &self.config, metrics: &self.metrics, state: &self.discovery }
    }
}

struct MirrorRoot {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for MirrorRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        // Each domain's discovery and fetches know their own calls.
        for shared in self.plugin.iter().flat_map(|plugin| &plugin.domains) {
            let discovering = shared.discovering();
            if discovering.owns(token_id) {
                discovering.on_answer(u64::from(token_id), body_size);
                continue;
            }
            let config = shared.config();
            if let Some(cache) = shared.token_cache(&config) {
                cache.on_answer(u64::from(token_id), body_size, self.id);
            }
        }
    }

    fn on_done(&mut self) -> bool {
        for shared in self.plugin.iter().flat_map(|plugin| &plugin.domains) {
            shared.metrics.flush();
        }
        if let Some(memory) = self.plugin.as_ref().and_then(|plugin| plugin.memory()) {
            memory.forget_memory();
        }
        true
    }
}

impl RootContext for MirrorRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        refresh_log_level();
        let json = match host("get_buffer", hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)) {
            Ok(json) => json.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("cannot read the plugin configuration: {e}"));
                return false;
            }
        };
        let started = hostcalls::get_current_time().ok();
        let PluginConfig { configs, selector } = match PluginConfig::from_json(&json) {
            Ok(plugin) => plugin,
            Err(e) => {
                log(LogLevel::Error, &format!("invalid configuration: {e}"));
                return false;
            }
        };
        let mut domains = Vec::with_capacity(configs.len());
        for config in configs {
            let metrics = match Metrics::define(&config) {
                Ok(metrics) => metrics,
                Err(e) => {
                    log(LogLevel::Error, &format!("cannot define metrics: {e}"));
                    return false;
                }
            };
            let shared = Shared { config: RefCell::new(Rc::new(config)), metrics, fetches: RefCell::default(), discovery: Discovery::default() };
            shared.discovering().prepare();
            domains.push(Rc::new(shared));
        }
        // Parse, compile and metric definitions; in whole microseconds (no float formatting in
        // the .wasm).
        let took = started
            .and_then(|t| hostcalls::get_current_time().ok()?.duration_since(t).ok())
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        for (index, shared) in domains.iter().enumerate() {
            let config = shared.config();
            let (count, applies_to, mode) = (config.registries().len(), selector.describe(index), config.auth.describe());
            log(LogLevel::Info, &format!("configured {count} registries{applies_to} in {}.{:03} ms, {mode}", took / 1000, took % 1000));
        }
        let plugin = Plugin { domains, selector };
        if let Some(memory) = plugin.memory() {
            memory.track_memory();
        }
        self.plugin = Some(Rc::new(plugin));
        self.set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        refresh_log_level();
        for shared in self.plugin.iter().flat_map(|plugin| &plugin.domains) {
            shared.metrics.flush();
            shared.discovering().on_tick();
            let config = shared.config();
            let Some(cache) = shared.token_cache(&config) else {
                continue;
            };
            let actions = cache.fetches.borrow_mut().on_tick();
            for action in &actions {
                if let FetchAction::Dispatch(call) = action {
                    log(LogLevel::Debug, &format!("token fetch for project {} lost its request; fetching again", call.project));
                }
            }
            cache.execute(actions, self.id);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MirrorRequest { id: context_id, plugin: self.plugin.clone(), shared: None, config: None, debug_header: None, forwarded: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct MirrorRequest {
    id: u32,
    /// `None` only if the plugin was never configured, in which case Envoy does not start.
    plugin: Option<Rc<Plugin>>,
    /// The configuration the request got, once its headers were read; `None` before, and for a
    /// request that is not the plugin's.
    shared: Option<Rc<Shared>>,
    /// The configuration the request began with.
    config: Option<Rc<Config>>,
    /// The `x-harbor-mirror` value to add to the response, when `debug_header` is on.
    debug_header: Option<String>,
    /// What the answer is judged by, for a forwarded request.
    forwarded: Option<Forwarded>,
}

impl Context for MirrorRequest {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let (Some(shared), Some(config)) = (&self.shared, &self.config)
            && let Some(cache) = shared.token_cache(config)
        {
            cache.on_answer(u64::from(token_id), body_size, self.id);
        }
    }

    fn on_done(&mut self) -> bool {
        if let (Some(shared), Some(config)) = (&self.shared, &self.config)
            && config.auth.managed.is_some()
        {
            shared.fetches.borrow_mut().on_request_end(self.id);
        }
        if let Some(memory) = self.plugin.as_ref().and_then(|plugin| plugin.memory()) {
            memory.track_memory();
        }
        true
    }
}

impl HttpContext for MirrorRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = self.plugin.clone() else {
            return Action::Continue;
        };
        match self.handle_request(&plugin) {
            Ok(action) => action,
            Err(e) => {
                log(LogLevel::Error, &e.to_string());
                match send_refusal(&Refusal::filter_failed(), None) {
                    Ok(()) => Action::Pause,
                    Err(_) => Action::Continue,
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(value) = self.debug_header.take()
            && let Err(e) = host("add_header", hostcalls::add_map_value(MapType::HttpResponseHeaders, DEBUG_HEADER, &value))
        {
            log(LogLevel::Warn, &e.to_string());
        }
        let (Some(shared), Some(config), Some(mut forwarded)) = (self.shared.clone(), self.config.clone(), self.forwarded.take()) else {
            return Action::Continue;
        };
        if forwarded.robot_token.is_none() && config.auth.managed.is_some() {
            forwarded.robot_token = shared.fetches.borrow().resumed_with(self.id).map(str::to_owned);
        }
        match on_answer(&shared, &config, &forwarded) {
            Ok(action) => action,
            Err(e) => {
                log(LogLevel::Warn, &e.to_string());
                Action::Continue
            }
        }
    }
}

impl MirrorRequest {
    fn handle_request(&mut self, plugin: &Plugin) -> Result<Action, HostError> {
        #[cfg(feature = "fault-injection")]
        if header(MapType::HttpRequestHeaders, "x-harbor-mirror-fault")? == b"abort" {
            log(LogLevel::Warn, "fault injection: aborting the VM");
            std::process::abort();
        }
        // The whole map in one host call: each call that returns data costs about as much as the
        // whole header map does (BENCHMARKS.md, the profile).
        let map = header_map(MapType::HttpRequestHeaders)?;
        let mut headers = RequestHeaders::default();
        for (name, value) in &map {
            headers.offer(name.as_bytes(), value);
        }
        let Some(shared) = plugin.select(headers.authority) else {
            log(LogLevel::Debug, "no _rules_ domain matches the request's host, and there is no global configuration: passed untouched");
            return Ok(Action::Continue);
        };
        self.shared = Some(shared.clone());
        let shared: &Shared = shared;
        let config = shared.config();
        self.config = Some(config.clone());
        let Plan { count, debug_line, debug_header, step } = plan(&config, &headers, debug_enabled());
        shared.metrics.count(count);
        if let Some(line) = &debug_line {
            log(LogLevel::Debug, line);
        }
        let forward = match step {
            exchange::Step::Reply { status, body } => {
                send_reply(status, &body, debug_header.as_deref())?;
                return Ok(Action::Pause);
            }
            exchange::Step::Forward(forward) => forward,
        };
        if let Some(path) = forward.new_path() {
            set_header(MapType::HttpRequestHeaders, ":path", Some(path))?;
        }
        let Forward { original_path, strip_credentials, needs_token, mut forwarded, .. } = forward;
        if let Some(original) = &original_path {
            keep_original_path(original);
        }
        if strip_credentials {
            // Clients' credentials are for other registries (docker sends Docker Hub's).
            for name in CLIENT_CREDENTIALS {
                set_header(MapType::HttpRequestHeaders, name, None)?;
            }
        }
        let authenticated = match (shared.token_cache(&config), &needs_token) {
            (Some(cache), Some(repository)) => self.authenticate(&cache, repository, debug_header.as_deref())?,
            _ => Authenticated::Continue(None),
        };
        let action = match authenticated {
            Authenticated::Continue(token) => {
                forwarded.robot_token = token;
                Action::Continue
            }
            Authenticated::Waiting => Action::Pause,
            Authenticated::Answered => return Ok(Action::Pause),
        };
        self.forwarded = Some(forwarded);
        self.debug_header = debug_header;
        Ok(action)
    }

    /// Managed mode: gives a repository request the robot's token for `repository`'s project
    /// by the core's fetch machine.
    fn authenticate(&mut self, cache: &TokenCache<'_>, repository: &str, debug_header: Option<&str>) -> Result<Authenticated, HostError> {
        let project = oci::first_component(repository).0;
        let cached = cache.read(project);
        let step = cache.fetches.borrow_mut().on_request(self.id, repository, cached.as_deref().and_then(CacheEntry::decode), now_secs()?);
        match step {
            Step::Forward { token } => {
                cache.metrics.increment(&cache.metrics.token_cache_hits);
                set_header(MapType::HttpRequestHeaders, "authorization", Some(&format!("Bearer {token}")))?;
                Ok(Authenticated::Continue(Some(token)))
            }
            Step::Refuse(refusal) => {
                log(LogLevel::Debug, &format!("token for project {project}: a recent failure is remembered: {}", refusal.message));
                send_refusal(&refusal, debug_header)?;
                Ok(Authenticated::Answered)
            }
            Step::Wait => Ok(Authenticated::Waiting),
            Step::Dispatch(call) => {
                let dispatched = cache.dispatch(&call);
                let failed = dispatched.is_err();
                let actions = cache.fetches.borrow_mut().dispatched(&call.project, dispatched);
                cache.execute(actions, self.id);
                Ok(if failed { Authenticated::Answered } else { Authenticated::Waiting })
            }
        }
    }
}

/// What managed mode did with a request.
enum Authenticated {
    /// Forward it now, with the robot's cached token when it is a repository request.
    Continue(Option<String>),
    /// Paused until its project's token fetch ends.
    Waiting,
    /// Answered here.
    Answered,
}

/// Reads what the core's response plan asks for of Harbor's answer, and does what it says.
fn on_answer(shared: &Shared, config: &Config, forwarded: &Forwarded) -> Result<Action, HostError> {
    let answer = match forwarded.look(config) {
        Look::Nothing => return Ok(Action::Continue),
        Look::Status => forwarded.on_status(config, &header(MapType::HttpResponseHeaders, ":status")?),
        Look::Challenges => {
            // Asking for a header that is absent (most answers have none) costs a tenth of
            // reading the whole map.
            if header(MapType::HttpResponseHeaders, "www-authenticate")?.is_empty() {
                return Ok(Action::Continue);
            }
            let values = header_map(MapType::HttpResponseHeaders)?;
            let challenges: Vec<&[u8]> =
                values.iter().filter(|(name, _)| name.eq_ignore_ascii_case("www-authenticate")).map(|(_, value)| value.as_slice()).collect();
            forwarded.on_challenges(config, &challenges)
        }
    };
    match answer {
        Answer::Untouched => Ok(Action::Continue),
        Answer::Challenges(values) => {
            set_header(MapType::HttpResponseHeaders, "www-authenticate", None)?;
            for value in &values {
                host("add_header", hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, "www-authenticate", value))?;
            }
            shared.metrics.increment(&shared.metrics.challenges_rewritten);
            Ok(Action::Continue)
        }
        Answer::RefuseRobotToken { project, refusal } => {
            log(LogLevel::Warn, &format!("harbor answered 401 to {} with the robot's token: {}", forwarded.path, refusal.message));
            if let Some(cache) = shared.token_cache(config) {
                cache.forget(&project)?;
            }
            send_refusal(&refusal, None)?;
            Ok(Action::Pause)
        }
    }
}
