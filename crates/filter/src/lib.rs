//! The proxy-wasm adapter: reads the request headers once, asks the core for a decision, and
//! applies it (a new `:path`, or a local OCI error reply), counting what it did. On 401
//! answers it points Harbor's challenges back at this proxy (pass-through mode); in managed
//! mode it answers `/v2/` itself and puts the robot's token on repository requests.
//!
//! Host calls go through [`host`], where their failures become errors in one place; nothing
//! here unwraps or panics.
#![cfg(target_arch = "wasm32")]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod fetches;
mod host;
mod metrics;

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use harbor_mirror_core::challenge::{self, RealmTarget};
use harbor_mirror_core::config::Managed;
use harbor_mirror_core::decide::{decide, Decision, Request, Route};
use harbor_mirror_core::refusal::Refusal;
use harbor_mirror_core::oci::{self, ErrorCode};
use harbor_mirror_core::higress::{PluginConfig, DomainSelector};
use harbor_mirror_core::managed::grant;
use harbor_mirror_core::Config;
use fetches::{Fetches, TokenFor};
use host::{debug_enabled, header, header_map, host, log, send_refusal, send_reply, set_header, HostError, DEBUG_HEADER};
use metrics::Metrics;

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
    config: Config,
    metrics: Metrics,
    fetches: Fetches,
}

impl Shared {
    /// Harbor answered managed mode's token call `token_id`; `current` is the context the host
    /// called back, the root's or the request's that dispatched it.
    fn token_answered(&self, current: u32, token_id: u32, body_size: usize) {
        if let Some(managed) = &self.config.auth.managed {
            self.fetches.finish(managed, &self.metrics, current, token_id, body_size);
        }
    }
}

struct MirrorRoot {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for MirrorRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        // Each domain's fetches know their own calls.
        for shared in self.plugin.iter().flat_map(|plugin| &plugin.domains) {
            shared.token_answered(self.id, token_id, body_size);
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(memory) = self.plugin.as_ref().and_then(|plugin| plugin.memory()) {
            memory.forget_memory();
        }
        true
    }
}

impl RootContext for MirrorRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
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
            if config.auth.managed.is_some() {
                self.set_tick_period(fetches::ORPHAN_TICK);
            }
            domains.push(Rc::new(Shared { config, metrics, fetches: Fetches::default() }));
        }
        // Parse, compile and metric definitions; in whole microseconds (no float formatting in
        // the .wasm).
        let took = started.and_then(|t| hostcalls::get_current_time().ok()?.duration_since(t).ok()).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        for (index, shared) in domains.iter().enumerate() {
            let config = &shared.config;
            let mode = match &config.auth.managed {
                Some(managed) => format!("managed auth as {} via cluster {:?}", managed.username, managed.cluster),
                None if config.auth.rewrite_tokens => "pass-through auth".to_owned(),
                None => "token handling off".to_owned(),
            };
            let applies_to = selector.describe(index);
            log(LogLevel::Info, &format!("configured {} registries{applies_to} in {}.{:03} ms, {mode}", config.registries().len(), took / 1000, took % 1000));
        }
        let plugin = Plugin { domains, selector };
        if let Some(memory) = plugin.memory() {
            memory.track_memory();
        }
        self.plugin = Some(Rc::new(plugin));
        true
    }

    fn on_tick(&mut self) {
        for shared in self.plugin.iter().flat_map(|plugin| &plugin.domains) {
            if let Some(managed) = &shared.config.auth.managed {
                shared.fetches.retry_orphans(managed, &shared.metrics, self.id);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MirrorRequest { id: context_id, plugin: self.plugin.clone(), shared: None, debug_header: None, forwarded: None }))
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
    /// The `x-harbor-mirror` value to add to the response, when `debug_header` is on.
    debug_header: Option<String>,
    /// What a 401 answer needs to know of the forwarded request (request headers cannot be
    /// read while the response is processed).
    forwarded: Option<Forwarded>,
}

/// A forwarded request, as far as its 401 answer is concerned. Built from values the request
/// phase has anyway: nothing is copied for it.
struct Forwarded {
    /// The registry the request was routed to (`ns` for the realm), by index.
    registry: Option<usize>,
    /// Whether the name was mapped (a `Basic realm="harbor"` then becomes a Bearer challenge).
    mapped: bool,
    /// GET or HEAD: the Bearer scope asks for pull only.
    pull: bool,
    /// The new `:path`, when the filter set one.
    path: Option<String>,
    /// The client's `:path`.
    original_path: Vec<u8>,
    /// The client's `:authority`: token requests must come back to it.
    authority: Vec<u8>,
    /// The scheme the client used, for the realm ([`challenge::client_scheme`]).
    scheme: &'static str,
    /// Managed mode: the robot's token the request was forwarded with, when it was cached
    /// (a request resumed after a fetch finds its token in [`Fetches::token_of`]).
    robot_token: Option<String>,
}

impl Context for MirrorRequest {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let Some(shared) = &self.shared {
            shared.token_answered(self.id, token_id, body_size);
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared
            && shared.config.auth.managed.is_some()
        {
            shared.fetches.leave(self.id);
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
                let refusal = Refusal::new(500, ErrorCode::Unsupported, "the mirror filter failed; see the proxy log".to_owned());
                match send_refusal(&refusal, None) {
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
        let (Some(shared), Some(forwarded)) = (self.shared.clone(), self.forwarded.take()) else {
            return Action::Continue;
        };
        if shared.config.auth.managed.is_some() {
            let robot_token = forwarded.robot_token.clone().or_else(|| shared.fetches.token_of(self.id));
            return match robot_token {
                Some(token) if is_unauthorized() => match refuse_robot_token(&shared, &forwarded, &token) {
                    Ok(action) => action,
                    Err(e) => {
                        log(LogLevel::Warn, &e.to_string());
                        Action::Continue
                    }
                },
                _ => Action::Continue,
            };
        }
        if has_challenge(&shared.config)
            && let Err(e) = on_unauthorized(&shared, &forwarded)
        {
            log(LogLevel::Warn, &e.to_string());
        }
        Action::Continue
    }
}

/// The request parts the filter reads, as owned bytes.
struct RequestHeaders {
    method: Vec<u8>,
    path: Vec<u8>,
    authority: Vec<u8>,
    scheme: Vec<u8>,
    forwarded_proto: Vec<u8>,
}

impl RequestHeaders {
    /// All four in one host call: each call that returns data costs about as much as the
    /// whole header map does (BENCHMARKS.md, the profile).
    fn read() -> Result<Self, HostError> {
        let mut headers =
            RequestHeaders { method: Vec::new(), path: Vec::new(), authority: Vec::new(), scheme: Vec::new(), forwarded_proto: Vec::new() };
        for (name, value) in header_map(MapType::HttpRequestHeaders)? {
            let slot = match name.as_str() {
                ":method" => &mut headers.method,
                ":path" => &mut headers.path,
                ":authority" => &mut headers.authority,
                ":scheme" => &mut headers.scheme,
                "x-forwarded-proto" => &mut headers.forwarded_proto,
                _ => continue,
            };
            *slot = value;
        }
        Ok(headers)
    }

    fn request(&self) -> Option<Request<'_>> {
        Some(Request {
            method: std::str::from_utf8(&self.method).ok()?,
            path: std::str::from_utf8(&self.path).ok()?,
            authority: std::str::from_utf8(&self.authority).ok()?,
        })
    }
}

impl MirrorRequest {
    fn handle_request(&mut self, plugin: &Plugin) -> Result<Action, HostError> {
        #[cfg(feature = "fault-injection")]
        if header(MapType::HttpRequestHeaders, "x-harbor-mirror-fault")? == b"abort" {
            log(LogLevel::Warn, "fault injection: aborting the VM");
            std::process::abort();
        }
        let headers = RequestHeaders::read()?;
        let Some(shared) = plugin.select(&headers.authority) else {
            log(LogLevel::Debug, "no _rules_ domain matches the request's host, and there is no global configuration: passed untouched");
            return Ok(Action::Continue);
        };
        self.shared = Some(shared.clone());
        let shared: &Shared = shared;
        let Some(request) = headers.request() else {
            let refusal = Refusal::new(400, ErrorCode::NameInvalid, "request path, method or authority is not valid UTF-8".to_owned());
            log(LogLevel::Debug, &refusal.message);
            send_refusal(&refusal, None)?;
            return Ok(Action::Pause);
        };
        let decision = decide(&shared.config, &request);
        shared.metrics.count(&decision);
        let described = (debug_enabled() || shared.config.debug_header).then(|| decision.to_string());
        if let Some(described) = &described {
            log(LogLevel::Debug, &format!("{} {}: {described}", request.method, request.path));
        }
        let debug_header = if shared.config.debug_header { described } else { None };
        let (new_path, route) = match decision {
            Decision::Refuse(refusal) => {
                send_refusal(&refusal, debug_header.as_deref())?;
                return Ok(Action::Pause);
            }
            Decision::Forward { path, route } => (path, route),
        };
        if let Some(path) = &new_path {
            set_header(MapType::HttpRequestHeaders, ":path", Some(path))?;
        }
        let pull = matches!(request.method, "GET" | "HEAD");
        let authenticated = match &shared.config.auth.managed {
            Some(managed) => {
                let forwarded = new_path.as_deref().unwrap_or(request.path);
                self.authenticate(shared, managed, &route, forwarded, pull, debug_header.as_deref())?
            }
            None => Authenticated::Continue(None),
        };
        let (registry, mapped) = match route {
            Route::Mapped { registry, .. } => (Some(registry.index), true),
            Route::Ping { registry } => (registry.map(|registry| registry.index), false),
            _ => (None, false),
        };
        let scheme = challenge::client_scheme(&headers.scheme, &headers.forwarded_proto);
        let RequestHeaders { path: original_path, authority, .. } = headers;
        let robot_token = match &authenticated {
            Authenticated::Continue(token) => token.clone(),
            _ => None,
        };
        self.forwarded = Some(Forwarded { registry, mapped, pull, path: new_path, original_path, authority, scheme, robot_token });
        match authenticated {
            Authenticated::Continue(_) => {
                self.debug_header = debug_header;
                Ok(Action::Continue)
            }
            Authenticated::Waiting => {
                self.debug_header = debug_header;
                Ok(Action::Pause)
            }
            Authenticated::Answered => Ok(Action::Pause),
        }
    }

    /// Managed mode: no client credential goes on (the decision already answered everything
    /// but the registry API); answers the ping, and gives repository requests the robot's token.
    fn authenticate(
        &mut self,
        shared: &Shared,
        managed: &Managed,
        route: &Route<'_>,
        forwarded: &str,
        pull: bool,
        debug_header: Option<&str>,
    ) -> Result<Authenticated, HostError> {
        // Clients' credentials are for other registries (docker sends Docker Hub's), and Harbor
        // must see only the robot.
        for name in CLIENT_CREDENTIALS {
            set_header(MapType::HttpRequestHeaders, name, None)?;
        }
        match route {
            Route::Ping { .. } if pull => {
                send_reply(200, "{}", debug_header)?;
                Ok(Authenticated::Answered)
            }
            Route::Mapped { .. } | Route::Prefixed => {
                let Some(repository) = oci::repository_in(forwarded) else {
                    return Ok(Authenticated::Continue(None));
                };
                match shared.fetches.token_for(managed, &shared.metrics, self.id, repository) {
                    Ok(TokenFor::Cached(token)) => {
                        set_header(MapType::HttpRequestHeaders, "authorization", Some(&format!("Bearer {token}")))?;
                        Ok(Authenticated::Continue(Some(token)))
                    }
                    Ok(TokenFor::Waiting) => Ok(Authenticated::Waiting),
                    Err(refusal) => {
                        send_refusal(&refusal, debug_header)?;
                        Ok(Authenticated::Answered)
                    }
                }
            }
            _ => Ok(Authenticated::Continue(None)),
        }
    }
}

/// The request headers that carry a client's credentials, none of which managed mode forwards.
const CLIENT_CREDENTIALS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// What managed mode did with a request.
enum Authenticated {
    /// Forward it now, with the robot's cached token when it is a repository request.
    Continue(Option<String>),
    /// Paused until its project's token fetch ends.
    Waiting,
    /// Answered here.
    Answered,
}

/// Whether the answer is a 401.
fn is_unauthorized() -> bool {
    header(MapType::HttpResponseHeaders, ":status").is_ok_and(|value| value == b"401")
}

/// Pass-through mode: whether the answer carries a challenge to point back at this proxy.
/// Asking for a header that is absent (most answers have none) costs a tenth of reading one
/// that is there, so the filter looks for the challenge rather than the status: a challenge is
/// what a 401 carries (RFC 9110 15.5.2), and on another status it is pointed back just the same.
fn has_challenge(config: &Config) -> bool {
    config.auth.rewrite_tokens && header(MapType::HttpResponseHeaders, "www-authenticate").is_ok_and(|value| !value.is_empty())
}

/// Managed mode: Harbor answered 401 to a request that carried the robot's `token`. The token
/// leaves the cache, and the client gets an OCI error naming the robot and the project in
/// place of Harbor's challenge, which an anonymous client could not answer.
fn refuse_robot_token(shared: &Shared, forwarded: &Forwarded, token: &str) -> Result<Action, HostError> {
    let Some(managed) = &shared.config.auth.managed else {
        return Ok(Action::Continue);
    };
    let path = forwarded.path.as_deref().or_else(|| std::str::from_utf8(&forwarded.original_path).ok()).unwrap_or("");
    let Some(repository) = oci::repository_in(path) else {
        return Ok(Action::Continue);
    };
    let project = oci::first_component(repository).0;
    let refusal = grant::refused_robot_token(token, &managed.username, project);
    log(LogLevel::Warn, &format!("harbor answered 401 to {path} with the robot's token: {}", refusal.message));
    fetches::forget(managed, project)?;
    send_refusal(&refusal, None)?;
    Ok(Action::Pause)
}

/// A 401 from Harbor in pass-through mode: point every Bearer realm back at this proxy with the
/// request's registry as `ns`, and turn `Basic realm="harbor"` on a rewritten request into a
/// Bearer challenge.
fn on_unauthorized(shared: &Shared, forwarded: &Forwarded) -> Result<(), HostError> {
    let config = &shared.config;
    let path = match &forwarded.path {
        Some(path) => path.as_str(),
        None => std::str::from_utf8(&forwarded.original_path).unwrap_or(""),
    };
    let Ok(authority) = std::str::from_utf8(&forwarded.authority) else {
        return Ok(());
    };
    let bearer_scope = forwarded
        .mapped
        .then(|| oci::repository_in(path))
        .flatten()
        .map(|repository| format!("repository:{repository}:{}", if forwarded.pull { "pull" } else { "pull,push" }));
    let target = RealmTarget {
        scheme: forwarded.scheme,
        authority,
        ns: forwarded.registry.and_then(|index| config.registries().get(index)).map(|registry| registry.key.as_str()),
        bearer_scope: bearer_scope.as_deref(),
    };
    let values = header_map(MapType::HttpResponseHeaders)?;
    let challenges: Vec<&[u8]> =
        values.iter().filter(|(name, _)| name.eq_ignore_ascii_case("www-authenticate")).map(|(_, value)| value.as_slice()).collect();
    let rewritten: Vec<Option<String>> =
        challenges.iter().map(|value| std::str::from_utf8(value).ok().and_then(|value| challenge::rewrite(value, &target))).collect();
    if rewritten.iter().all(Option::is_none) {
        return Ok(());
    }
    set_header(MapType::HttpResponseHeaders, "www-authenticate", None)?;
    for (original, new) in challenges.iter().zip(&rewritten) {
        let value: &[u8] = new.as_deref().map_or(original, str::as_bytes);
        host("add_header", hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, "www-authenticate", value))?;
    }
    shared.metrics.increment(shared.metrics.challenges_rewritten);
    Ok(())
}
