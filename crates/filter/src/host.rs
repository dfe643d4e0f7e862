//! The core's host interface on proxy-wasm's host calls. Every call acts on the host's current
//! ("effective") context, so one type serves the root context and every request's; a failed
//! call becomes a [`HostError`] naming it, and nothing here unwraps or panics.

use std::cell::Cell;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

use harbor_mirror_core::driver::Plugin;
use harbor_mirror_core::host::{
    CallAnswer, CallId, CallRequest, CallSender, Host, HostError, Level, MetricId, MetricKind, RequestHeaders, RequestId, SharedValue, StreamHost,
    Written, LOG_PREFIX,
};

thread_local! {
    /// The level Envoy logs this filter's lines at, as last asked ([`Host::refresh`]): requests
    /// pay no host call for it, and a level changed through the admin API applies within a tick.
    static LOG_LEVEL: Cell<Level> = const { Cell::new(Level::Info) };
}

/// The host, as the context Envoy called into (`current`), with the plugin a woken request
/// is handed to.
pub struct WasmHost<'p> {
    plugin: Option<&'p Plugin>,
    current: u32,
}

impl<'p> WasmHost<'p> {
    /// The host in context `current`; `plugin` is `None` only before it is configured.
    pub fn new(plugin: Option<&'p Plugin>, current: u32) -> Self {
        WasmHost { plugin, current }
    }

    /// The plugin configuration Envoy holds for this VM.
    pub fn plugin_configuration(&self) -> Result<Vec<u8>, HostError> {
        Ok(host("get_buffer", hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX))?.unwrap_or_default())
    }
}

/// Maps a host call's result.
fn host<T>(call: &'static str, result: Result<T, Status>) -> Result<T, HostError> {
    result.map_err(|status| HostError::new(call, format!("{status:?}")))
}

/// Logs `message`, prefixed with the filter's name; logging is the last resort for reporting,
/// so a failure has nowhere to go.
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, &format!("{LOG_PREFIX}{message}"));
}

/// The fault-injection build (never in dist/): a request carrying
/// `x-harbor-mirror-fault: abort` aborts the VM, as a bug would, for the FAIL_RELOAD test.
#[cfg(feature = "fault-injection")]
pub fn abort_if_asked() {
    if let Ok(Some(value)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-harbor-mirror-fault")
        && value == b"abort"
    {
        log(LogLevel::Warn, "fault injection: aborting the VM");
        std::process::abort();
    }
}

fn wasm_level(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

fn metric_id(id: MetricId) -> u32 {
    u32::try_from(id.0).unwrap_or(u32::MAX)
}

impl Host for WasmHost<'_> {
    fn call_sender(&self) -> CallSender {
        CallSender::Stream
    }

    fn now(&self) -> Result<Duration, HostError> {
        let now = host("get_current_time", hostcalls::get_current_time())?;
        Ok(now.duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    fn log_enabled(&self, level: Level) -> bool {
        level >= LOG_LEVEL.with(Cell::get)
    }

    fn write_log(&mut self, level: Level, line: &str) {
        let _ = hostcalls::log(wasm_level(level), line);
    }

    fn refresh(&mut self) {
        let level = match hostcalls::get_log_level() {
            Ok(LogLevel::Trace) => Level::Trace,
            Ok(LogLevel::Debug) => Level::Debug,
            Ok(LogLevel::Warn) => Level::Warn,
            Ok(LogLevel::Error | LogLevel::Critical) => Level::Error,
            Ok(LogLevel::Info) | Err(_) => Level::Info,
        };
        LOG_LEVEL.with(|cached| cached.set(level));
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<Option<MetricId>, HostError> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        Ok(Some(MetricId(u64::from(host("define_metric", hostcalls::define_metric(kind, name))?))))
    }

    fn holds_counts(&self) -> bool {
        true
    }

    fn count(&mut self, counter: MetricId, by: u64) {
        if let Err(e) = host("increment_metric", hostcalls::increment_metric(metric_id(counter), i64::try_from(by).unwrap_or(i64::MAX))) {
            log(LogLevel::Warn, &e.to_string());
        }
    }

    fn set_gauge(&mut self, gauge: MetricId, value: u64) -> Result<(), HostError> {
        host("record_metric", hostcalls::record_metric(metric_id(gauge), value))
    }

    fn add_to_gauge(&mut self, gauge: MetricId, delta: i64) -> Result<(), HostError> {
        host("increment_metric", hostcalls::increment_metric(metric_id(gauge), delta))
    }

    fn memory_bytes(&self) -> Option<u64> {
        Some(u64::try_from(std::arch::wasm32::memory_size::<0>()).unwrap_or(u64::MAX).saturating_mul(65536))
    }

    fn shared_data(&self, key: &str) -> Result<Option<SharedValue>, HostError> {
        let (value, cas) = host("get_shared_data", hostcalls::get_shared_data(key))?;
        Ok(value.map(|value| SharedValue { value, cas }))
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, HostError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(Written::Stored),
            Err(Status::CasMismatch) => Ok(Written::CasMismatch),
            Err(status) => Err(HostError::new("set_shared_data", format!("{status:?}"))),
        }
    }

    fn send_call(&mut self, call: &CallRequest<'_>) -> Result<CallId, HostError> {
        let mut headers = Vec::with_capacity(call.headers.len() + 4);
        headers.extend([(":method", call.method), (":path", call.path), (":authority", call.authority)]);
        headers.extend_from_slice(call.headers);
        headers.push(("user-agent", "harbor-mirror"));
        let timeout = Duration::from_millis(call.timeout_ms);
        host("dispatch_http_call", hostcalls::dispatch_http_call(call.cluster, headers, None, vec![], timeout)).map(u64::from)
    }

    fn wake(&mut self, request: RequestId) -> bool {
        // The request's own context, for its header and its resumption; it ended if the host
        // cannot switch to it.
        if hostcalls::set_effective_context(request).is_err() {
            return false;
        }
        if let Some(plugin) = self.plugin {
            plugin.on_woken(&mut WasmHost::new(Some(plugin), request), request);
        }
        let _ = hostcalls::set_effective_context(self.current);
        true
    }
}

impl StreamHost for WasmHost<'_> {
    fn request_headers<R>(&mut self, read: impl FnOnce(&RequestHeaders<'_>) -> R) -> Result<R, HostError> {
        // The whole map in one host call: each call that returns data costs about as much as the
        // whole header map does (BENCHMARKS.md, the profile).
        let map = host("get_map", hostcalls::get_map_bytes(MapType::HttpRequestHeaders))?;
        let mut headers = RequestHeaders::default();
        for (name, value) in &map {
            headers.offer(name.as_bytes(), value);
        }
        Ok(read(&headers))
    }

    fn set_request_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError> {
        host(name, hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value)))
    }

    fn remove_request_header(&mut self, name: &'static str) -> Result<(), HostError> {
        host(name, hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, None))
    }

    fn set_filter_state(&mut self, key: &'static str, value: &[u8]) -> Result<(), HostError> {
        // Envoy keeps a wasm property as the filter state `wasm.<key>`.
        host("set_property", hostcalls::set_property(vec![key], Some(value)))
    }

    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        host("send_http_response", hostcalls::send_http_response(status, headers.to_vec(), Some(body)))
    }

    fn resume(&mut self) -> Result<(), HostError> {
        host("resume_http_request", hostcalls::resume_http_request())
    }

    fn upstream_cluster(&mut self) -> Result<String, HostError> {
        let name = host("get_property", hostcalls::get_property(vec!["xds", "cluster_name"]))?;
        let name = name.filter(|name| !name.is_empty()).ok_or_else(|| HostError::new("xds.cluster_name", "envoy has no cluster for the stream"))?;
        Ok(String::from_utf8_lossy(&name).into_owned())
    }

    fn reads_response_bodies(&self) -> bool {
        // Not exported (envoy-exports.txt): every chunk of every answer would enter the VM.
        false
    }

    fn response_body<R>(&mut self, _read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError> {
        Err(HostError::new("response_body", "the proxy-wasm filter does not read answers' bodies"))
    }

    fn response_header<R>(&mut self, name: &'static str, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError> {
        // `get_map_value` would panic on a value that is not UTF-8.
        let value = host(name, hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name))?.unwrap_or_default();
        Ok(read(&value))
    }

    fn response_header_values<R>(&mut self, name: &'static str, read: impl FnOnce(&[&[u8]]) -> R) -> Result<R, HostError> {
        // Asking for a header that is absent (most answers have none) costs a tenth of reading
        // the whole map.
        if host(name, hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name))?.is_none_or(|value| value.is_empty()) {
            return Ok(read(&[]));
        }
        let map = host("get_map", hostcalls::get_map_bytes(MapType::HttpResponseHeaders))?;
        let values: Vec<&[u8]> = map.iter().filter(|(known, _)| known.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_slice()).collect();
        Ok(read(&values))
    }

    fn set_response_header_values(&mut self, name: &'static str, values: &[Vec<u8>]) -> Result<(), HostError> {
        host(name, hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, None))?;
        for value in values {
            host("add_header", hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value))?;
        }
        Ok(())
    }

    fn add_response_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError> {
        host("add_header", hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value))
    }
}

/// The answer to a call this context sent, read from the host as far as the driver asks.
pub struct CallAnswerHere {
    pub body_size: usize,
}

impl CallAnswer for CallAnswerHere {
    fn status(&self) -> Option<u32> {
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status").ok().flatten()?;
        std::str::from_utf8(&status).ok()?.parse().ok()
    }

    fn header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten()
    }

    fn body(&self, max: usize) -> Vec<u8> {
        match host("get_buffer", hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, self.body_size.min(max))) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Warn, &e.to_string());
                Vec::new()
            }
        }
    }
}
