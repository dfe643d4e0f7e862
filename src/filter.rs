//! The proxy-wasm adapter: reads the request headers once, asks the core for a decision, and
//! applies it (a new `:path`, or a local OCI error reply), counting what it did.
//!
//! Host calls go through `proxy_wasm::hostcalls` and their failures become [`HostError`] in
//! one place; nothing here unwraps or panics.

use std::fmt;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::decide::{decide, Decision, Refusal, Request, Route};
use crate::oci::ErrorCode;
use crate::Config;

const DEBUG_HEADER: &str = "x-harbor-mirror";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| Box::new(MirrorRoot { shared: None }));
}}

/// A failed host call: which one and the status the host returned.
struct HostError {
    call: &'static str,
    status: Status,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call {} failed: {:?}", self.call, self.status)
    }
}

fn host<T>(call: &'static str, result: Result<T, Status>) -> Result<T, HostError> {
    result.map_err(|status| HostError { call, status })
}

fn log(level: LogLevel, message: &str) {
    // Logging is the last resort for reporting; a failure to log has nowhere to go.
    let _ = hostcalls::log(level, message);
}

fn debug_enabled() -> bool {
    matches!(hostcalls::get_log_level(), Ok(LogLevel::Trace | LogLevel::Debug))
}

/// Counter ids, defined once at configure.
struct Metrics {
    rewritten: u32,
    passed: u32,
    rejected: u32,
    /// `harbor_mirror.registry.<key>.rewritten`, by registry index.
    registry_rewritten: Vec<u32>,
}

impl Metrics {
    fn define(config: &Config) -> Result<Metrics, HostError> {
        let counter = |name: &str| host("define_metric", hostcalls::define_metric(MetricType::Counter, name));
        Ok(Metrics {
            rewritten: counter("harbor_mirror.rewritten")?,
            passed: counter("harbor_mirror.passed")?,
            rejected: counter("harbor_mirror.rejected")?,
            registry_rewritten: config
                .registries()
                .iter()
                .map(|registry| counter(&format!("harbor_mirror.registry.{}.rewritten", registry.key)))
                .collect::<Result<_, _>>()?,
        })
    }

    fn count(&self, decision: &Decision<'_>) {
        let increment = |id: u32| {
            if let Err(e) = host("increment_metric", hostcalls::increment_metric(id, 1)) {
                log(LogLevel::Warn, &format!("harbor-mirror: {e}"));
            }
        };
        match decision {
            Decision::Refuse(_) => increment(self.rejected),
            Decision::Forward { route: Route::Mapped { registry, .. }, .. } => {
                increment(self.rewritten);
                if let Some(&id) = self.registry_rewritten.get(registry.index) {
                    increment(id);
                }
            }
            Decision::Forward { .. } => increment(self.passed),
        }
    }
}

/// What every request context of a configured plugin shares.
struct Shared {
    config: Config,
    metrics: Metrics,
}

struct MirrorRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for MirrorRoot {}

impl RootContext for MirrorRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let json = match host("get_buffer", hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)) {
            Ok(json) => json.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("harbor-mirror: cannot read the plugin configuration: {e}"));
                return false;
            }
        };
        let config = match Config::from_json(&json) {
            Ok(config) => config,
            Err(e) => {
                log(LogLevel::Error, &format!("harbor-mirror: invalid configuration: {e}"));
                return false;
            }
        };
        match Metrics::define(&config) {
            Ok(metrics) => {
                log(
                    LogLevel::Info,
                    &format!("harbor-mirror: configured {} registries", config.registries().len()),
                );
                self.shared = Some(Rc::new(Shared { config, metrics }));
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("harbor-mirror: cannot define metrics: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MirrorRequest { shared: self.shared.clone(), debug_header: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct MirrorRequest {
    /// `None` only if the plugin was never configured, in which case Envoy does not start.
    shared: Option<Rc<Shared>>,
    /// The `x-harbor-mirror` value to add to the response, when `debug_header` is on.
    debug_header: Option<String>,
}

impl Context for MirrorRequest {}

impl HttpContext for MirrorRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        match self.handle_request(&shared) {
            Ok(action) => action,
            Err(e) => {
                log(LogLevel::Error, &format!("harbor-mirror: {e}"));
                let refusal = Refusal {
                    status: 500,
                    code: ErrorCode::Unsupported,
                    message: "the mirror filter failed; see the proxy log".to_owned(),
                };
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
            log(LogLevel::Warn, &format!("harbor-mirror: {e}"));
        }
        Action::Continue
    }
}

impl MirrorRequest {
    fn handle_request(&mut self, shared: &Shared) -> Result<Action, HostError> {
        let path = request_header(":path")?;
        let method = request_header(":method")?;
        let authority = request_header(":authority")?;
        let (Ok(path), Ok(method), Ok(authority)) =
            (std::str::from_utf8(&path), std::str::from_utf8(&method), std::str::from_utf8(&authority))
        else {
            let refusal = Refusal {
                status: 400,
                code: ErrorCode::NameInvalid,
                message: "request path, method or authority is not valid UTF-8".to_owned(),
            };
            log(LogLevel::Debug, &format!("harbor-mirror: {}", refusal.message));
            send_refusal(&refusal, None)?;
            return Ok(Action::Pause);
        };
        let request = Request { method, path, authority };
        let decision = decide(&shared.config, &request);
        shared.metrics.count(&decision);
        let described = (debug_enabled() || shared.config.debug_header).then(|| decision.to_string());
        if let Some(described) = &described {
            log(LogLevel::Debug, &format!("harbor-mirror: {method} {path}: {described}"));
        }
        let debug_header = if shared.config.debug_header { described } else { None };
        match &decision {
            Decision::Refuse(refusal) => {
                send_refusal(refusal, debug_header.as_deref())?;
                Ok(Action::Pause)
            }
            Decision::Forward { path, .. } => {
                if let Some(path) = path {
                    host("set :path", hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path)))?;
                }
                self.debug_header = debug_header;
                Ok(Action::Continue)
            }
        }
    }
}

fn request_header(name: &'static str) -> Result<Vec<u8>, HostError> {
    Ok(host(name, hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name))?.unwrap_or_default())
}

fn send_refusal(refusal: &Refusal, debug_header: Option<&str>) -> Result<(), HostError> {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("docker-distribution-api-version", "registry/2.0"),
    ];
    if let Some(value) = debug_header {
        headers.push((DEBUG_HEADER, value));
    }
    let body = refusal.body();
    host("send_http_response", hostcalls::send_http_response(refusal.status, headers, Some(body.as_bytes())))
}
