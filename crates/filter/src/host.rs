//! Host calls, in one place: their failures become [`HostError`], header reads are byte-safe,
//! and logging never fails the caller.

use std::cell::Cell;
use std::fmt;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType, Status};

pub use harbor_mirror_core::exchange::DEBUG_HEADER;
use harbor_mirror_core::exchange::REPLY_HEADERS;
use harbor_mirror_core::refusal::Refusal;

/// A failed host call: which one and the status the host returned.
pub struct HostError {
    call: &'static str,
    status: Status,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call {} failed: {:?}", self.call, self.status)
    }
}

impl HostError {
    pub fn from_status(call: &'static str, status: Status) -> Self {
        HostError { call, status }
    }
}

/// Maps a host call's result.
pub fn host<T>(call: &'static str, result: Result<T, Status>) -> Result<T, HostError> {
    result.map_err(|status| HostError::from_status(call, status))
}

/// Logs `message`, prefixed with the filter's name.
pub fn log(level: LogLevel, message: &str) {
    // Logging is the last resort for reporting; a failure to log has nowhere to go.
    let _ = hostcalls::log(level, &format!("harbor-mirror: {message}"));
}

thread_local! {
    /// Whether Envoy logs this filter's debug lines, as last asked ([`refresh_log_level`]).
    static DEBUG_ENABLED: Cell<bool> = const { Cell::new(false) };
}

/// Asks Envoy for the log level again: at configure and on every tick, so that requests do not
/// pay a host call for it, and a level changed through the admin API applies within a tick.
pub fn refresh_log_level() {
    let debug = matches!(hostcalls::get_log_level(), Ok(LogLevel::Trace | LogLevel::Debug));
    DEBUG_ENABLED.with(|enabled| enabled.set(debug));
}

/// Whether debug logs are on, so that their text is built only then.
pub fn debug_enabled() -> bool {
    DEBUG_ENABLED.with(Cell::get)
}

/// One header's value as bytes (empty when absent). `get_map_value` would panic on non-UTF-8.
pub fn header(map: MapType, name: &'static str) -> Result<Vec<u8>, HostError> {
    Ok(host(name, hostcalls::get_map_value_bytes(map, name))?.unwrap_or_default())
}

/// Every header of a map, as (name, value bytes) pairs, in one host call.
pub fn header_map(map: MapType) -> Result<Vec<(String, Vec<u8>)>, HostError> {
    host("get_map", hostcalls::get_map_bytes(map))
}

/// Sets (or with `None` removes) a header.
pub fn set_header(map: MapType, name: &'static str, value: Option<&str>) -> Result<(), HostError> {
    host(name, hostcalls::set_map_value(map, name, value))
}

/// The property a rewritten request's original path is kept in; Envoy stores it as the filter
/// state `wasm.harbor_mirror.original_path`, which access logs read with
/// `%FILTER_STATE(wasm.harbor_mirror.original_path:PLAIN)%`.
pub const ORIGINAL_PATH_PROPERTY: &str = "harbor_mirror.original_path";

/// Keeps `path` for the access log (`log_original_path`). A failure only costs the log its
/// field, so it is logged and the request goes on.
pub fn keep_original_path(path: &str) {
    if let Err(e) = host("set_property", hostcalls::set_property(vec![ORIGINAL_PATH_PROPERTY], Some(path.as_bytes()))) {
        log(LogLevel::Warn, &format!("{e}: the access log will not show the original path"));
    }
}

/// Seconds since the Unix epoch by the host's clock.
pub fn now_secs() -> Result<u64, HostError> {
    let now = host("get_current_time", hostcalls::get_current_time())?;
    Ok(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// Answers the current request here, with a registry-style reply.
pub fn send_reply(status: u32, body: &str, debug_header: Option<&str>) -> Result<(), HostError> {
    let mut headers = REPLY_HEADERS.to_vec();
    if let Some(value) = debug_header {
        headers.push((DEBUG_HEADER, value));
    }
    host("send_http_response", hostcalls::send_http_response(status, headers, Some(body.as_bytes())))
}

/// Answers the current request with the refusal's OCI error.
pub fn send_refusal(refusal: &Refusal, debug_header: Option<&str>) -> Result<(), HostError> {
    send_reply(refusal.status, &refusal.body(), debug_header)
}
