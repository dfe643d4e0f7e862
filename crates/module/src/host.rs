//! The core's host interface on our dynamic-module bindings: [`On`] a hook's context, a
//! stream's on its worker or the configuration's on Envoy's main thread ([`Context`]), with what
//! the configuration's hooks share ([`Shared`]): the data every worker shares, how to wake a
//! paused stream, and how to wake the main thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_dynamic_module::log::{self as envoy_log, Level as EnvoyLevel};
use envoy_dynamic_module::{
    CalloutOutcome, CalloutRequest, CalloutResponse, ConfigContext, ConfigScheduler, CounterId, FilterScheduler, GaugeId, HeaderMap,
    HttpFilterHandle, MetricsError, RecordMetrics,
};

use harbor_mirror_core::host::{
    CallAnswer, CallId, CallRequest, CallSender, Host, HostError, Level, MetricId, MetricKind, RequestHeaders, RequestId, SharedValue, StreamHost,
    Written,
};
use harbor_mirror_core::metrics;
use harbor_mirror_core::shared_data::SharedData;

/// Configuration events: the timer's tick, and the plugin woken to send queued calls.
pub const TICK_EVENT: u64 = 1;
pub const SEND_CALLS_EVENT: u64 = 2;
/// Filter event: the request's token fetch ended, or the identical request it waited for.
pub const WOKEN_EVENT: u64 = 1;

/// What the configuration and its streams share, besides the plugin.
pub struct Shared {
    data: SharedData,
    /// Posts to the configuration's main-thread hooks; `None` in validation mode.
    scheduler: Option<ConfigScheduler>,
    /// How to wake each stream paused for its token.
    wakers: Mutex<HashMap<RequestId, FilterScheduler>>,
    next_request: AtomicU32,
}

impl Shared {
    pub fn new(scheduler: Option<ConfigScheduler>) -> Self {
        Shared { data: SharedData::default(), scheduler, wakers: Mutex::default(), next_request: AtomicU32::new(1) }
    }

    pub fn scheduler(&self) -> Option<&ConfigScheduler> {
        self.scheduler.as_ref()
    }

    pub fn has_scheduler(&self) -> bool {
        self.scheduler.is_some()
    }

    /// An id for a new stream.
    pub fn next_request(&self) -> RequestId {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    fn wakers(&self) -> MutexGuard<'_, HashMap<RequestId, FilterScheduler>> {
        // A panic cannot leave the map half-written: the release build aborts on panic.
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream ended: it can be woken no more.
    pub fn forget_waker(&self, request: RequestId) {
        self.wakers().remove(&request);
    }

    /// Posts the woken event to `request`'s worker; `false` when it is gone.
    fn wake(&self, request: RequestId) -> bool {
        let Some(waker) = self.wakers().remove(&request) else {
            return false;
        };
        waker.commit(WOKEN_EVENT);
        true
    }
}

fn envoy_level(level: Level) -> EnvoyLevel {
    match level {
        Level::Trace => EnvoyLevel::Trace,
        Level::Debug => EnvoyLevel::Debug,
        Level::Info => EnvoyLevel::Info,
        Level::Warn => EnvoyLevel::Warn,
        Level::Error => EnvoyLevel::Error,
    }
}

/// What the module's two contexts do their own way: a stream's hook on its worker
/// ([`HttpFilterHandle`]) and the configuration's on Envoy's main thread ([`ConfigContext`]);
/// both count and set gauges alike ([`RecordMetrics`]).
pub trait Context: RecordMetrics {
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<Option<MetricId>, HostError>;
    fn send_call(&mut self, call: &CallRequest<'_>) -> Result<CallId, HostError>;
}

impl Context for HttpFilterHandle<'_> {
    fn define_metric(&mut self, _kind: MetricKind, _name: &str) -> Result<Option<MetricId>, HostError> {
        // The ABI defines metrics only while the configuration is created.
        Ok(None)
    }

    fn send_call(&mut self, _call: &CallRequest<'_>) -> Result<CallId, HostError> {
        // CallSender::Plugin: the main thread sends a stream's calls, so that they outlive it.
        Err(HostError::new("send_call", "a stream hands its calls to the main thread"))
    }
}

impl Context for ConfigContext<'_> {
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<Option<MetricId>, HostError> {
        // `metrics_namespace: harbor_mirror` in the filter's configuration puts the namespace back.
        let name = metrics::in_namespace(name);
        let defined = match kind {
            MetricKind::Counter => self.define_counter(name).map(CounterId::raw),
            MetricKind::Gauge => self.define_gauge(name).map(GaugeId::raw),
        };
        match defined {
            Ok(id) => Ok(Some(MetricId(id))),
            Err(MetricsError::Frozen) => Ok(None),
            Err(e) => Err(HostError::new("define_metric", e)),
        }
    }

    fn send_call(&mut self, call: &CallRequest<'_>) -> Result<CallId, HostError> {
        let mut headers: Vec<(&[u8], &[u8])> = Vec::with_capacity(call.headers.len() + 4);
        headers.extend([(&b":method"[..], call.method.as_bytes()), (b":path", call.path.as_bytes()), (b"host", call.authority.as_bytes())]);
        headers.extend(call.headers.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())));
        headers.push((b"user-agent", b"harbor-mirror"));
        let request = CalloutRequest { cluster: call.cluster, headers: &headers, body: b"", timeout: Duration::from_millis(call.timeout_ms) };
        self.http_callout(&request).map(|id| id.0).map_err(|e| HostError::new("http_callout", e))
    }
}

/// The host as one hook sees it: its context, and what the configuration's hooks share.
pub struct On<'a, C> {
    context: &'a mut C,
    shared: &'a Shared,
}

impl<'a, C> On<'a, C> {
    pub fn new(context: &'a mut C, shared: &'a Shared) -> Self {
        On { context, shared }
    }
}

impl<C: Context> Host for On<'_, C> {
    fn call_sender(&self) -> CallSender {
        CallSender::Plugin
    }

    fn now(&self) -> Result<Duration, HostError> {
        Ok(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    fn log_enabled(&self, level: Level) -> bool {
        envoy_log::enabled(envoy_level(level))
    }

    fn write_log(&mut self, level: Level, line: &str) {
        envoy_log::log(envoy_level(level), line);
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<Option<MetricId>, HostError> {
        self.context.define_metric(kind, name)
    }

    fn count(&mut self, counter: MetricId, by: u64) {
        if let Err(e) = self.context.increment_counter(CounterId::from_raw(counter.0), by) {
            self.log(Level::Warn, format_args!("counting: {e}"));
        }
    }

    fn set_gauge(&mut self, gauge: MetricId, value: u64) -> Result<(), HostError> {
        self.context.set_gauge(GaugeId::from_raw(gauge.0), value).map_err(|e| HostError::new("set_gauge", e))
    }

    fn shared_data(&self, key: &str) -> Result<Option<SharedValue>, HostError> {
        Ok(self.shared.data.get(key))
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, HostError> {
        Ok(self.shared.data.set(key, value, cas))
    }

    fn send_call(&mut self, call: &CallRequest<'_>) -> Result<CallId, HostError> {
        self.context.send_call(call)
    }

    fn wake(&mut self, request: RequestId) -> bool {
        self.shared.wake(request)
    }
}

impl StreamHost for On<'_, HttpFilterHandle<'_>> {
    fn request_headers<R>(&mut self, read: impl FnOnce(&RequestHeaders<'_>) -> R) -> Result<R, HostError> {
        // The whole map in two host calls, where each lookup by name builds a lower-case key
        // and searches the map (BENCHMARKS.md, the module's profile).
        let mut headers = RequestHeaders::default();
        self.context.for_each_header(HeaderMap::Request, |name, value| headers.offer(name, value));
        Ok(read(&headers))
    }

    fn set_request_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError> {
        present(name, self.context.set_header(HeaderMap::Request, name.as_bytes(), value))
    }

    fn remove_request_header(&mut self, name: &'static str) -> Result<(), HostError> {
        present(name, self.context.remove_header(HeaderMap::Request, name.as_bytes()))
    }

    fn set_filter_state(&mut self, key: &'static str, value: &[u8]) -> Result<(), HostError> {
        if self.context.set_filter_state(key.as_bytes(), value) { Ok(()) } else { Err(HostError::new("set_filter_state", "the stream has no filter state")) }
    }

    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        let headers: Vec<(&[u8], &[u8])> = headers.iter().map(|(name, value)| (name.as_bytes(), value.as_bytes())).collect();
        self.context.send_local_response(u16::try_from(status).unwrap_or(500), &headers, body, Some("harbor_mirror"));
        Ok(())
    }

    fn resume(&mut self) -> Result<(), HostError> {
        self.context.continue_decoding();
        Ok(())
    }

    fn prepare_to_wait(&mut self, request: RequestId) -> Result<(), HostError> {
        if !self.shared.has_scheduler() {
            return Err(HostError::new("scheduler", "the configuration has no scheduler"));
        }
        let waker = self.context.scheduler().ok_or_else(|| HostError::new("scheduler", "the stream has no scheduler"))?;
        self.shared.wakers().insert(request, waker);
        Ok(())
    }

    fn wake_plugin(&mut self) {
        if let Some(scheduler) = self.shared.scheduler() {
            scheduler.commit(SEND_CALLS_EVENT);
        }
    }

    fn upstream_cluster(&mut self) -> Result<String, HostError> {
        let name = self.context.upstream_cluster_name().ok_or_else(|| HostError::new("xds.cluster_name", "envoy has no cluster for the stream"))?;
        Ok(String::from_utf8_lossy(name).into_owned())
    }

    fn response_body<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError> {
        let chunks = self.context.received_response_body();
        Ok(match chunks.as_slice() {
            [] => read(b""),
            [only] => read(only),
            _ => read(&chunks.concat()),
        })
    }

    fn response_header<R>(&mut self, name: &'static str, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError> {
        Ok(read(self.context.header(HeaderMap::Response, name.as_bytes()).unwrap_or_default()))
    }

    fn response_header_values<R>(&mut self, name: &'static str, read: impl FnOnce(&[&[u8]]) -> R) -> Result<R, HostError> {
        // One walk over the answer's few headers costs less than looking the name up (most
        // answers have none, and the Vec then never allocates). Envoy's names are lower-case.
        let mut values = Vec::new();
        self.context.for_each_header(HeaderMap::Response, |known, value| {
            if known == name.as_bytes() {
                values.push(value);
            }
        });
        Ok(read(&values))
    }

    fn set_response_header_values(&mut self, name: &'static str, values: &[Vec<u8>]) -> Result<(), HostError> {
        // Setting the first replaces every value; a second lookup to remove them first would
        // cost as much again (most answers have one challenge).
        let Some((first, rest)) = values.split_first() else {
            return present(name, self.context.remove_header(HeaderMap::Response, name.as_bytes()));
        };
        present(name, self.context.set_header(HeaderMap::Response, name.as_bytes(), first))?;
        for value in rest {
            present(name, self.context.add_header(HeaderMap::Response, name.as_bytes(), value))?;
        }
        Ok(())
    }

    fn add_response_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError> {
        present(name, self.context.add_header(HeaderMap::Response, name.as_bytes(), value))
    }
}

/// A header call's result: false when the header map is not there (yet).
fn present(name: &'static str, done: bool) -> Result<(), HostError> {
    if done { Ok(()) } else { Err(HostError::new(name, "the header map is not there")) }
}

/// A callout's answer, as the driver reads it.
pub struct CalloutAnswer<'r, 'a>(pub &'r CalloutResponse<'a>);

impl CallAnswer for CalloutAnswer<'_, '_> {
    fn status(&self) -> Option<u32> {
        match self.0.outcome() {
            CalloutOutcome::Success => self.0.status().map(u32::from),
            _ => None,
        }
    }

    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0.header(name.as_bytes()).map(<[u8]>::to_vec)
    }

    fn body(&self, max: usize) -> Vec<u8> {
        let body = self.0.body();
        body[..body.len().min(max)].to_vec()
    }
}
