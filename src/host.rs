//! What the core asks of Envoy: the one host interface both adapters implement.
//!
//! [`Host`] is what every context can do (the clock, logs, metrics, the data shared by every
//! worker, waking a request paused for its token, and, from the plugin's own context, calls to
//! a cluster); [`StreamHost`] adds what a request's context can do (its headers, a local reply,
//! resuming it). The [`driver`](crate::driver) runs every flow against them; an adapter
//! implements them with its host's calls and registers the driver's events with Envoy.
//!
//! The methods are shaped by what both hosts do cheaply: the proxy-wasm VM pays for every host
//! call that returns data, so header reads come as one walk of a map, or a lookup that can say
//! "absent" cheaply before the walk; the dynamic module reads views into Envoy's memory and
//! needs no copy. Both run the same code against their own implementations, monomorphised.

use std::fmt;
use std::time::Duration;

/// Every line the filter logs starts with this.
pub const LOG_PREFIX: &str = "harbor-mirror: ";

/// A request (a stream), by an id its host gives it: proxy-wasm's context id, a counter in
/// the dynamic module.
pub type RequestId = u32;

/// A call sent to a cluster, by the id its host gave it (proxy-wasm's `u32` token, a dynamic
/// module's `u64` callout id).
pub type CallId = u64;

/// A metric the host defined, by its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricId(pub u64);

/// A failed host call: which call, and what the host said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    /// The call, e.g. `set_header`, or the header it was about.
    pub call: &'static str,
    /// The host's answer (a status, or why the host cannot).
    pub detail: String,
}

impl HostError {
    /// A failed `call` with the host's `detail`.
    pub fn new(call: &'static str, detail: impl fmt::Display) -> Self {
        HostError { call, detail: detail.to_string() }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host call {} failed: {}", self.call, self.detail)
    }
}

impl std::error::Error for HostError {}

/// A log level, as both hosts know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Envoy's trace.
    Trace,
    /// Envoy's debug: one line per request decision.
    Debug,
    /// Envoy's info: configuration and discovery changes.
    Info,
    /// Envoy's warn: a failed fetch, refresh or host call the request survives.
    Warn,
    /// Envoy's error: what stops a request or the plugin.
    Error,
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set, or moved up and down.
    Gauge,
}

/// A value of the data every worker of an Envoy shares, with the version a write compares
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedValue {
    /// The bytes.
    pub value: Vec<u8>,
    /// The version the value was read at; `None` when the host keeps none.
    pub cas: Option<u32>,
}

/// What a write of shared data came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The value is stored.
    Stored,
    /// Another worker wrote since the version the write compared against: nothing was stored.
    CasMismatch,
}

/// A call to send to a cluster: a GET or HEAD with these headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRequest<'a> {
    /// `:method`: `GET` or `HEAD`.
    pub method: &'a str,
    /// The Envoy cluster.
    pub cluster: &'a str,
    /// `:path`.
    pub path: &'a str,
    /// `:authority` (`host`).
    pub authority: &'a str,
    /// More headers, e.g. `authorization`, `accept`; `user-agent` is always `harbor-mirror`,
    /// which the host adds.
    pub headers: &'a [(&'a str, &'a str)],
    /// How long the call may take (Envoy answers it with 504 after).
    pub timeout_ms: u64,
}

/// The answer to a call, read as far as the reader asks (each read may cost a host call).
pub trait CallAnswer {
    /// `:status`; `None` when no answer came (a timeout, a connection failure, a reset).
    fn status(&self) -> Option<u32>;
    /// The first value of header `name` (lower-case), if any.
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// Whether the first value of header `name` (lower-case) contains `needle`.
    fn header_contains(&self, name: &str, needle: &str) -> bool {
        self.header(name).is_some_and(|value| String::from_utf8_lossy(&value).contains(needle))
    }
    /// The body, at most `max` bytes of it.
    fn body(&self, max: usize) -> Vec<u8>;
}

/// Who sends the calls a request needs (managed mode's token request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallSender {
    /// The request's own context ([`Host::send_call`] on its [`StreamHost`]); the host cancels
    /// the call when that request ends, and the plugin's tick sends it again for whoever still
    /// waits (proxy-wasm).
    Stream,
    /// The plugin's own context: the request wakes it ([`StreamHost::wake_plugin`]) and the
    /// plugin sends the queued calls in [`Plugin::on_plugin_woken`]; a call outlives the request
    /// that needed it (the dynamic module's main thread).
    ///
    /// [`Plugin::on_plugin_woken`]: crate::driver::Plugin::on_plugin_woken
    Plugin,
}

/// What every context of the host can do: a request's, and the plugin's own (proxy-wasm's
/// root context, the dynamic module's main thread).
pub trait Host {
    /// Who sends the calls a request needs.
    fn call_sender(&self) -> CallSender;

    /// The time since the Unix epoch, by the host's clock.
    fn now(&self) -> Result<Duration, HostError>;

    /// Whole seconds since the Unix epoch, by the host's clock.
    fn now_secs(&self) -> Result<u64, HostError> {
        Ok(self.now()?.as_secs())
    }

    /// Whether lines at `level` are logged, so that their text is built only then.
    fn log_enabled(&self, level: Level) -> bool;

    /// Writes `line` (already prefixed with the filter's name) to the log at `level`; logging
    /// never fails its caller.
    fn write_log(&mut self, level: Level, line: &str);

    /// Logs `message` at `level`, prefixed with the filter's name, if the host logs that level
    /// (the text is built only then).
    fn log(&mut self, level: Level, message: impl fmt::Display)
    where
        Self: Sized,
    {
        if self.log_enabled(level) {
            self.write_log(level, &format!("{LOG_PREFIX}{message}"));
        }
    }

    /// Reads again what the host keeps between the plugin's ticks (the log level): the driver
    /// calls it at configure and on every tick.
    fn refresh(&mut self) {}

    /// Defines a metric; `Ok(None)` when this host defines metrics only while the plugin is
    /// configured and that time is over (the dynamic module's ABI).
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<Option<MetricId>, HostError>;

    /// Whether the plugin should hold its counts and hand them over on its tick and when it
    /// stops, rather than count as requests go (proxy-wasm: a host call per count costs a
    /// request more than the counting; the dynamic module's count is an atomic add in Envoy).
    fn holds_counts(&self) -> bool {
        false
    }

    /// Adds `by` to a counter.
    fn count(&mut self, counter: MetricId, by: u64);

    /// Sets a gauge.
    fn set_gauge(&mut self, gauge: MetricId, value: u64) -> Result<(), HostError>;

    /// The memory of this plugin instance, for hosts that give each worker its own (a wasm VM's
    /// linear memory); `None` for a host whose plugin lives in Envoy's own memory.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }

    /// Moves a gauge by `delta`: the memory gauge, each instance adding its own share. Only a
    /// host with [`Host::memory_bytes`] is asked.
    fn add_to_gauge(&mut self, gauge: MetricId, delta: i64) -> Result<(), HostError> {
        let _ = (gauge, delta);
        Err(HostError::new("add_to_gauge", "this host keeps no memory gauge"))
    }

    /// The value shared by every worker under `key`, if any.
    fn shared_data(&self, key: &str) -> Result<Option<SharedValue>, HostError>;

    /// Writes the value shared under `key`; with `cas`, only if nobody wrote since that version.
    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, HostError>;

    /// Sends a call to a cluster from this context; its answer comes back through
    /// [`Plugin::on_call_answer`](crate::driver::Plugin::on_call_answer). A request's context can
    /// only when [`Host::call_sender`] is [`CallSender::Stream`].
    fn send_call(&mut self, call: &CallRequest<'_>) -> Result<CallId, HostError>;

    /// Wakes request `request`, paused for its token, so that
    /// [`Plugin::on_woken`](crate::driver::Plugin::on_woken) runs in its context: now (proxy-wasm
    /// switches to its context) or soon on its worker (the dynamic module).
    /// `false` when the request is gone.
    fn wake(&mut self, request: RequestId) -> bool;
}

/// What a request's context can do, beyond [`Host`].
pub trait StreamHost: Host {
    /// Walks the request headers once and hands `read` the ones the plan reads ([`RequestHeaders::offer`]).
    fn request_headers<R>(&mut self, read: impl FnOnce(&RequestHeaders<'_>) -> R) -> Result<R, HostError>;

    /// Sets request header `name` to `value`.
    fn set_request_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError>;

    /// Removes request header `name`.
    fn remove_request_header(&mut self, name: &'static str) -> Result<(), HostError>;

    /// Keeps `value` in the stream's filter state under `key`, for the access log.
    fn set_filter_state(&mut self, key: &'static str, value: &[u8]) -> Result<(), HostError>;

    /// Answers the request here.
    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError>;

    /// Lets a request paused in its headers phase go on.
    fn resume(&mut self) -> Result<(), HostError>;

    /// The name of the Envoy cluster the request went to (known once its answer began).
    fn upstream_cluster(&mut self) -> Result<String, HostError>;

    /// Whether [`Plugin::on_response_body`](crate::driver::Plugin::on_response_body) runs, so
    /// that a burst's first manifest can be kept for the identical requests waiting for it. The
    /// proxy-wasm filter says no: a body event enters the VM for every chunk of every answer
    /// once the module exports it (about 4,000 instructions a request, BENCHMARKS.md), so its
    /// bursts coalesce layers only.
    fn reads_response_bodies(&self) -> bool {
        true
    }

    /// Hands `read` the chunk of the answer's body this response-body event is about.
    fn response_body<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError>;

    /// The request is about to pause for its token: make sure [`Host::wake`] can reach it.
    fn prepare_to_wait(&mut self, request: RequestId) -> Result<(), HostError> {
        let _ = request;
        Ok(())
    }

    /// With [`CallSender::Plugin`]: wakes the plugin's own context to send the queued calls.
    fn wake_plugin(&mut self) {}

    /// Hands `read` the first value of response header `name` (empty when absent).
    fn response_header<R>(&mut self, name: &'static str, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError>;

    /// Hands `read` every value of response header `name`, in order (none is the common case:
    /// a host should find that out cheaply).
    fn response_header_values<R>(&mut self, name: &'static str, read: impl FnOnce(&[&[u8]]) -> R) -> Result<R, HostError>;

    /// Replaces every value of response header `name` by `values`, in order.
    fn set_response_header_values(&mut self, name: &'static str, values: &[Vec<u8>]) -> Result<(), HostError>;

    /// Adds a response header.
    fn add_response_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError>;
}

/// The request headers the plan reads, as the host hands them over (empty when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHeaders<'h> {
    /// `:method`.
    pub method: &'h [u8],
    /// `:path`.
    pub path: &'h [u8],
    /// `:authority`.
    pub authority: &'h [u8],
    /// `:scheme`.
    pub scheme: &'h [u8],
    /// `x-forwarded-proto`.
    pub forwarded_proto: &'h [u8],
    /// `accept`: part of the key of a manifest GET that may wait for an identical one.
    pub accept: &'h [u8],
    /// `authorization`: what a blob GET's storage checks carry (pass-through mode).
    pub authorization: &'h [u8],
}

impl<'h> RequestHeaders<'h> {
    /// Keeps `value` if `name` (lower-case, as Envoy hands names over) is one the plan reads and
    /// has no value yet: a host that walks the whole header map offers it every header, and
    /// the first value of each counts, as a lookup by name would return it.
    pub fn offer(&mut self, name: &[u8], value: &'h [u8]) {
        let slot = match name {
            b":method" => &mut self.method,
            b":path" => &mut self.path,
            b":authority" => &mut self.authority,
            b":scheme" => &mut self.scheme,
            b"x-forwarded-proto" => &mut self.forwarded_proto,
            b"accept" => &mut self.accept,
            b"authorization" => &mut self.authorization,
            _ => return,
        };
        if slot.is_empty() {
            *slot = value;
        }
    }
}

/// What a request's headers phase ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next filter.
    Continue,
    /// Hold the request: it was answered here, or waits for its token.
    Pause,
}
