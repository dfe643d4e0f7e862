//! The benchmark floor: a proxy-wasm HTTP filter built with the same SDK, toolchain and release
//! profile as harbor_mirror. With an empty configuration it does nothing; Envoy still creates a
//! context per request and calls it for every header block, so its cost over a filter-less Envoy
//! is the price of having any wasm filter at all.
//!
//! For the profile in BENCHMARKS.md its configuration can name, comma-separated, the host calls
//! harbor_mirror makes per request, each replayed the way the adapter makes it:
//!   headers    read :method, :path and :authority
//!   pairs      instead: read all request headers in one call and find those three
//!   path       instead: read :path alone (one call)
//!   log_level  ask the log level (the adapter builds debug text only when it is on)
//!   set_path   set a new :path of the rewritten length (with headers: the one it read)
//!   metrics    increment two counters (harbor_mirror counts the total and the registry's)
//!   status     read the response's :status (the adapter looks for 401)
//! The difference between harbor_mirror and the floor with every step is what the filter's own
//! Rust code costs: the decision, its allocations and the glue.
//!
//! `cargo build --release --target wasm32-wasip1 --example floor_filter`
#![cfg(target_os = "wasi")]
#![forbid(unsafe_code)]

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(FloorRoot { steps: Rc::new(Steps::default()) }));
}}

/// The host calls to replay per request; all off by default.
#[derive(Default)]
struct Steps {
    headers: bool,
    pairs: bool,
    path: bool,
    log_level: bool,
    set_path: bool,
    /// Counter ids, when `metrics` is on.
    metrics: Option<(u32, u32)>,
    status: bool,
}

struct FloorRoot {
    steps: Rc<Steps>,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Ok(configuration) = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) else {
            return false;
        };
        let configuration = String::from_utf8(configuration.unwrap_or_default()).unwrap_or_default();
        let mut steps = Steps::default();
        for step in configuration.split(',').map(str::trim).filter(|step| !step.is_empty()) {
            match step {
                "headers" => steps.headers = true,
                "pairs" => steps.pairs = true,
                "path" => steps.path = true,
                "log_level" => steps.log_level = true,
                "set_path" => steps.set_path = true,
                "metrics" => {
                    let counter = |name| hostcalls::define_metric(MetricType::Counter, name);
                    let (Ok(total), Ok(registry)) = (counter("floor.rewritten"), counter("floor.registry.rewritten")) else {
                        return false;
                    };
                    steps.metrics = Some((total, registry));
                }
                "status" => steps.status = true,
                _ => return false,
            }
        }
        self.steps = Rc::new(steps);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorRequest { steps: Rc::clone(&self.steps) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FloorRequest {
    steps: Rc<Steps>,
}

impl Context for FloorRequest {}

impl HttpContext for FloorRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let steps = &self.steps;
        let mut path = Vec::new();
        if steps.headers {
            for name in [":method", ":path", ":authority"] {
                let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten().unwrap_or_default();
                if name == ":path" {
                    path = value;
                }
            }
        }
        if steps.pairs
            && let Ok(headers) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        {
            for (name, value) in headers {
                if name == ":path" {
                    path = value;
                }
            }
        }
        if steps.path {
            path = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":path").ok().flatten().unwrap_or_default();
        }
        if steps.log_level {
            let _ = hostcalls::get_log_level();
        }
        if steps.set_path && !path.is_empty() {
            // The same path in a new String of the rewritten path's size: the backend must still
            // get the path it expects.
            let mut new_path = String::with_capacity(path.len() + "dockerhub-proxy/".len());
            new_path.push_str(&String::from_utf8_lossy(&path));
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(&new_path));
        }
        if let Some((total, registry)) = steps.metrics {
            let _ = hostcalls::increment_metric(total, 1);
            let _ = hostcalls::increment_metric(registry, 1);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.steps.status {
            let _ = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
        }
        Action::Continue
    }
}
