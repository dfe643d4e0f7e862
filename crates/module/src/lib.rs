//! The dynamic-module adapter: harbor-mirror as a shared object that Envoy's
//! `envoy.filters.http.dynamic_modules` filter loads (`dist/libharbor_mirror.so`, module and
//! filter name `harbor_mirror`, the filter configuration the same JSON as the wasm filter's, as
//! a `google.protobuf.StringValue`).
//!
//! It moves bytes between Envoy and the same core as the proxy-wasm filter: the request headers
//! go to [`exchange::plan`], whose reply or forward it executes; Harbor's answer goes to the
//! core's response plan. Header reads are views into Envoy's own memory, so a request costs a
//! handful of native calls. Unlike the wasm filter's VMs, which each have their own memory, the
//! workers share one process: managed mode has one token cache and one fetch machine for the
//! whole Envoy ([`broker`]), and discovery one refresh ([`discovery`]), both run on Envoy's main
//! thread.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod broker;
mod discovery;
mod metrics;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_dynamic_module::log::{self as envoy_log, Level};
use envoy_dynamic_module::{
    CalloutId, CalloutResponse, ConfigContext, ConfigError, ConfigScheduler, FilterConfig, HeaderMap, HeadersStatus, HttpFilter,
    HttpFilterHandle, Module, Timer,
};

use harbor_mirror_core::exchange::{self, plan, Forward, Plan, RequestHeaders, CLIENT_CREDENTIALS, DEBUG_HEADER, REPLY_HEADERS};
use harbor_mirror_core::higress::{DomainSelector, PluginConfig};
use harbor_mirror_core::managed::fetch::RequestId;
use harbor_mirror_core::refusal::Refusal;
use harbor_mirror_core::response::{Answer, Forwarded, Look};
use harbor_mirror_core::Config;

use broker::{Broker, Outcome, Ready, Slot};
use discovery::Discovery;
use metrics::Metrics;

/// The filter state key a rewritten request's original path is kept under, with
/// `log_original_path`: `%FILTER_STATE(harbor_mirror.original_path:PLAIN)%` in an access log.
const ORIGINAL_PATH_KEY: &[u8] = b"harbor_mirror.original_path";

/// Configuration events: the timer's tick (discovery), and queued token calls to send.
const TICK: u64 = 1;
const DISPATCH: u64 = 2;
/// Filter event: the request's token fetch ended.
const RESUME: u64 = 1;

/// How often the main thread looks whether a discovery refresh is due.
const TICK_EVERY: Duration = Duration::from_millis(500);

struct HarborMirror;

envoy_dynamic_module::export_module!(HarborMirror);

impl Module for HarborMirror {
    type Config = MirrorConfig;

    fn new_config(ctx: &mut ConfigContext<'_>, _name: &str, json: &[u8]) -> Result<MirrorConfig, ConfigError> {
        let started = std::time::Instant::now();
        let PluginConfig { configs, selector } = PluginConfig::from_json(json).map_err(|e| ConfigError(format!("invalid configuration: {e}")))?;
        let mut domains = Vec::with_capacity(configs.len());
        for config in configs {
            let metrics = Metrics::define(ctx, &config).map_err(|e| ConfigError(format!("cannot define metrics: {e}")))?;
            let broker = config.auth.managed.clone().map(Broker::new);
            domains.push(Domain { config: RwLock::new(Arc::new(config)), metrics, broker, discovery: Discovery::default() });
        }
        let took = started.elapsed();
        for (index, domain) in domains.iter().enumerate() {
            let config = discovery::read(&domain.config);
            let (count, applies_to, mode) = (config.registries().len(), selector.describe(index), config.auth.describe());
            log(Level::Info, &format!("configured {count} registries{applies_to} in {}.{:03} ms, {mode}", took.as_millis(), took.subsec_micros() % 1000));
        }
        let discovers = domains.iter().any(|domain| discovery::read(&domain.config).discover.is_some());
        let manages = domains.iter().any(|domain| domain.broker.is_some());
        // `--mode validate` parses and checks only: no thread, no scheduler.
        let (scheduler, timer) = if ctx.is_validation_mode() || !(discovers || manages) {
            (None, None)
        } else {
            let scheduler = ctx.scheduler().ok_or("Envoy gave the configuration no scheduler")?;
            let timer = if discovers {
                let timer = Timer::spawn("harbor-mirror").map_err(|e| ConfigError(format!("cannot start discovery's timer thread: {e}")))?;
                // Soon, but after Envoy's clusters are up.
                timer.schedule(Duration::from_millis(100), &scheduler, TICK);
                Some(timer)
            } else {
                None
            };
            (Some(scheduler), timer)
        };
        let shared = Arc::new(Shared { domains, selector, scheduler, next_request: AtomicU32::new(1) });
        Ok(MirrorConfig { shared, timer })
    }
}

/// One configuration (the global one, or a Higress domain rule's) and what its requests share.
struct Domain {
    /// The configuration new requests get: discovery replaces it with each new mapping.
    config: RwLock<Arc<Config>>,
    metrics: Metrics,
    /// Managed mode's tokens, if in managed mode.
    broker: Option<Broker>,
    discovery: Discovery,
}

/// What the configuration and its filters share.
struct Shared {
    domains: Vec<Domain>,
    selector: DomainSelector,
    /// Posts to the configuration's main-thread hooks; `None` in validation mode and when
    /// neither managed mode nor discovery needs it.
    scheduler: Option<ConfigScheduler>,
    next_request: AtomicU32,
}

/// The filter configuration Envoy holds (shared by every worker).
struct MirrorConfig {
    shared: Arc<Shared>,
    /// Discovery's timer; stopped and joined when Envoy drops the configuration.
    timer: Option<Timer>,
}

impl FilterConfig for MirrorConfig {
    type Filter = MirrorFilter;

    fn new_filter(&self, _envoy: &mut HttpFilterHandle<'_>) -> MirrorFilter {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        MirrorFilter { shared: self.shared.clone(), id, request: None, waiting: None }
    }

    fn on_scheduled(&self, ctx: &mut ConfigContext<'_>, event_id: u64) {
        match event_id {
            TICK => {
                for domain in &self.shared.domains {
                    domain.discovery.on_tick(ctx, &domain.config, &domain.metrics);
                }
                if let (Some(timer), Some(scheduler)) = (&self.timer, &self.shared.scheduler) {
                    timer.schedule(TICK_EVERY, scheduler, TICK);
                }
            }
            DISPATCH => {
                for domain in &self.shared.domains {
                    if let Some(broker) = &domain.broker {
                        broker.dispatch_queued(ctx, &domain.metrics);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_callout_done(&self, ctx: &mut ConfigContext<'_>, callout: CalloutId, response: CalloutResponse<'_>) {
        for domain in &self.shared.domains {
            if domain.discovery.owns(callout) {
                domain.discovery.on_answer(ctx, &domain.config, &domain.metrics, callout, &response);
                return;
            }
            if let Some(broker) = &domain.broker {
                broker.on_answer(ctx, &domain.metrics, callout, &response);
            }
        }
    }
}

/// What a forwarded request keeps for its answer.
struct Request {
    domain: usize,
    config: Arc<Config>,
    debug_header: Option<String>,
    forwarded: Forwarded,
}

/// One stream.
struct MirrorFilter {
    shared: Arc<Shared>,
    id: RequestId,
    /// The request's configuration and what its answer is judged by, once forwarded.
    request: Option<Request>,
    /// Managed mode: the slot its token fetch's outcome arrives in, while the request is in
    /// the fetch machine.
    waiting: Option<Slot>,
}

impl HttpFilter for MirrorFilter {
    fn on_request_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _end_of_stream: bool) -> HeadersStatus {
        let shared = self.shared.clone();
        // The whole map in two host calls, where each lookup by name builds a lower-case key
        // and searches the map (BENCHMARKS.md, the module's profile).
        let mut headers = RequestHeaders::default();
        envoy.for_each_header(HeaderMap::Request, |name, value| headers.offer(name, value));
        let Some(index) = shared.selector.select(std::str::from_utf8(headers.authority).unwrap_or("")) else {
            log(Level::Debug, "no _rules_ domain matches the request's host, and there is no global configuration: passed untouched");
            return HeadersStatus::Continue;
        };
        let Some(domain) = shared.domains.get(index) else {
            return HeadersStatus::Continue;
        };
        let config = discovery::read(&domain.config);
        let Plan { count, debug_line, debug_header, step } = plan(&config, &headers, envoy_log::enabled(Level::Debug));
        domain.metrics.count(envoy, count);
        if let Some(line) = &debug_line {
            log(Level::Debug, line);
        }
        let forward = match step {
            exchange::Step::Reply { status, body } => {
                reply(envoy, status, &body, debug_header.as_deref());
                return HeadersStatus::StopIteration;
            }
            exchange::Step::Forward(forward) => forward,
        };
        if let Some(path) = forward.new_path() {
            envoy.set_header(HeaderMap::Request, b":path", path.as_bytes());
        }
        let Forward { original_path, strip_credentials, needs_token, mut forwarded, .. } = forward;
        if let Some(original) = &original_path
            && !envoy.set_filter_state(ORIGINAL_PATH_KEY, original.as_bytes())
        {
            log(Level::Warn, "the stream has no filter state: the access log will not show the original path");
        }
        if strip_credentials {
            // Clients' credentials are for other registries (docker sends Docker Hub's).
            for name in CLIENT_CREDENTIALS {
                envoy.remove_header(HeaderMap::Request, name.as_bytes());
            }
        }
        let mut status = HeadersStatus::Continue;
        if let (Some(broker), Some(repository)) = (&domain.broker, &needs_token) {
            let ready = broker.on_request(self.id, repository, || envoy.scheduler(), shared.scheduler.as_ref());
            match ready {
                Ready::Forward(token) => {
                    metrics::increment(envoy, domain.metrics.token_cache_hits);
                    envoy.set_header(HeaderMap::Request, b"authorization", format!("Bearer {token}").as_bytes());
                    forwarded.robot_token = Some(token);
                }
                Ready::Refuse(refusal) => {
                    log(Level::Debug, &format!("token for {repository}: {}", refusal.message));
                    refuse(envoy, &refusal, debug_header.as_deref());
                    return HeadersStatus::StopIteration;
                }
                Ready::Wait(slot) => {
                    self.waiting = Some(slot);
                    status = HeadersStatus::StopIteration;
                }
            }
        }
        self.request = Some(Request { domain: index, config, debug_header, forwarded });
        status
    }

    fn on_scheduled(&mut self, envoy: &mut HttpFilterHandle<'_>, event_id: u64) {
        if event_id != RESUME {
            return;
        }
        let Some(outcome) = self.waiting.as_ref().and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take()) else {
            return;
        };
        match outcome {
            Outcome::Resume(token) => {
                envoy.set_header(HeaderMap::Request, b"authorization", format!("Bearer {token}").as_bytes());
                if let Some(request) = &mut self.request {
                    request.forwarded.robot_token = Some(token);
                }
                envoy.continue_decoding();
            }
            Outcome::Refuse(refusal) => refuse(envoy, &refusal, None),
        }
    }

    fn on_response_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _end_of_stream: bool) -> HeadersStatus {
        let Some(Request { domain, config, debug_header, forwarded }) = self.request.take() else {
            return HeadersStatus::Continue;
        };
        if let Some(value) = &debug_header {
            envoy.add_header(HeaderMap::Response, DEBUG_HEADER.as_bytes(), value.as_bytes());
        }
        let answer = match forwarded.look(&config) {
            Look::Nothing => return HeadersStatus::Continue,
            Look::Status => forwarded.on_status(&config, envoy.header(HeaderMap::Response, b":status").unwrap_or_default()),
            Look::Challenges => {
                // One walk over the answer's few headers costs less than looking the name up
                // (most answers have none, and the Vec then never allocates).
                let mut values = Vec::new();
                envoy.for_each_header(HeaderMap::Response, |name, value| {
                    if name == b"www-authenticate" {
                        values.push(value);
                    }
                });
                if values.is_empty() {
                    return HeadersStatus::Continue;
                }
                forwarded.on_challenges(&config, &values)
            }
        };
        let Some(domain) = self.shared.domains.get(domain) else {
            return HeadersStatus::Continue;
        };
        match answer {
            Answer::Untouched => HeadersStatus::Continue,
            Answer::Challenges(values) => {
                // Setting the first replaces every value; a second lookup to remove them first
                // would cost as much again (most answers have one challenge).
                for (index, value) in values.iter().enumerate() {
                    if index == 0 {
                        envoy.set_header(HeaderMap::Response, b"www-authenticate", value);
                    } else {
                        envoy.add_header(HeaderMap::Response, b"www-authenticate", value);
                    }
                }
                metrics::increment(envoy, domain.metrics.challenges_rewritten);
                HeadersStatus::Continue
            }
            Answer::RefuseRobotToken { project, refusal } => {
                log(Level::Warn, &format!("harbor answered 401 to {} with the robot's token: {}", forwarded.path, refusal.message));
                if let Some(broker) = &domain.broker {
                    broker.forget(&project);
                }
                refuse(envoy, &refusal, None);
                HeadersStatus::StopIteration
            }
        }
    }
}

impl Drop for MirrorFilter {
    fn drop(&mut self) {
        if self.waiting.is_none() {
            return;
        }
        for domain in &self.shared.domains {
            if let Some(broker) = &domain.broker {
                broker.on_request_end(self.id);
            }
        }
    }
}

/// Answers the request here with a registry-style JSON reply.
fn reply(envoy: &mut HttpFilterHandle<'_>, status: u32, body: &str, debug_header: Option<&str>) {
    let mut headers: Vec<(&[u8], &[u8])> = REPLY_HEADERS.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())).collect();
    if let Some(value) = debug_header {
        headers.push((DEBUG_HEADER.as_bytes(), value.as_bytes()));
    }
    envoy.send_local_response(u16::try_from(status).unwrap_or(500), &headers, body.as_bytes(), Some("harbor_mirror"));
}

/// Answers the request with the refusal's OCI error.
fn refuse(envoy: &mut HttpFilterHandle<'_>, refusal: &Refusal, debug_header: Option<&str>) {
    reply(envoy, refusal.status, &refusal.body(), debug_header);
}

/// Logs `message` at `level`, prefixed like the wasm filter's lines.
fn log(level: Level, message: &str) {
    if envoy_log::enabled(level) {
        envoy_log::log(level, &format!("harbor-mirror: {message}"));
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
