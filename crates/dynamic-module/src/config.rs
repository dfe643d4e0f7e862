//! The module and its filter configurations: what runs on Envoy's main thread.

use std::fmt;

use crate::abi;
use crate::callout::{CalloutError, CalloutId, CalloutRequest, CalloutResponse};
use crate::filter::{HttpFilter, HttpFilterHandle};
use crate::metrics::{CounterId, GaugeId, MetricsError, RecordMetrics};
use crate::timer::ConfigScheduler;

/// The whole module: registered once per shared object with [`export_module!`](crate::export_module).
///
/// Both functions run on Envoy's **main thread**.
pub trait Module: 'static {
    /// The filter configuration type this module builds.
    type Config: FilterConfig;

    /// Called once when Envoy loads the shared object, before any configuration. An error
    /// unloads the module and Envoy refuses the configuration that asked for it (the error is
    /// logged first). The default accepts.
    fn init() -> Result<(), String> {
        Ok(())
    }

    /// Builds a filter configuration from the filter's `filter_name` and `filter_config` (for a
    /// `google.protobuf.StringValue` or `BytesValue`, the bare value; for a `Struct`, its JSON).
    /// Called for every configuration Envoy loads or validates (`envoy --mode validate` runs it
    /// too). An error makes Envoy refuse the configuration; this crate logs it at `error` level
    /// first, since Envoy's own message does not say why.
    fn new_config(ctx: &mut ConfigContext<'_>, name: &str, config: &[u8]) -> Result<Self::Config, ConfigError>;
}

/// A refused configuration: the message is logged, so name the field and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError(message)
    }
}

impl From<&str> for ConfigError {
    fn from(message: &str) -> Self {
        ConfigError(message.to_owned())
    }
}

/// One filter configuration, shared by every worker thread: hence `Send + Sync`, and `&self`
/// everywhere (use atomics or locks for state that changes, e.g. what a refresh fetched).
///
/// Threads: [`new_filter`](FilterConfig::new_filter) runs on the worker thread of each new
/// stream, concurrently on several workers; the other methods run on the main thread. `Drop` runs
/// where Envoy releases its last reference, after every filter made from it is gone: the main
/// thread, or (when a configuration update leaves streams in flight) a worker, so keep `Drop`
/// short and thread-agnostic (dropping a [`Timer`](crate::Timer) is: it wakes and joins its
/// thread at once).
pub trait FilterConfig: Send + Sync + 'static {
    /// The per-request filter.
    type Filter: HttpFilter;

    /// Creates the filter of a new stream (worker thread). Request headers are not available yet.
    fn new_filter(&self, envoy: &mut HttpFilterHandle<'_>) -> Self::Filter;

    /// An event committed to a [`ConfigScheduler`] (directly or through a
    /// [`Timer`](crate::Timer)) arrived. Main thread.
    fn on_scheduled(&self, ctx: &mut ConfigContext<'_>, event_id: u64) {
        let _ = (ctx, event_id);
    }

    /// A callout started with [`ConfigContext::http_callout`] finished. Main thread.
    fn on_callout_done(&self, ctx: &mut ConfigContext<'_>, callout: CalloutId, response: CalloutResponse<'_>) {
        let _ = (ctx, callout, response);
    }
}


/// Envoy's side of a filter configuration, lent to main-thread hooks. Not `Send`: it exists for
/// the duration of one hook.
pub struct ConfigContext<'h> {
    ptr: abi::ConfigEnvoyPtr,
    _hook: std::marker::PhantomData<&'h mut ()>,
}

impl ConfigContext<'_> {
    /// # Safety
    /// `ptr` must be the Envoy configuration passed to the current main-thread hook.
    pub(crate) unsafe fn new(ptr: abi::ConfigEnvoyPtr) -> Self {
        ConfigContext { ptr, _hook: std::marker::PhantomData }
    }

    /// Whether Envoy runs `--mode validate`: parse and check, but start nothing (no timers, no
    /// callouts).
    pub fn is_validation_mode(&self) -> bool {
        // SAFETY: no arguments; this context exists only inside a main-thread hook.
        unsafe { abi::envoy_dynamic_module_callback_is_validation_mode() }
    }

    /// The number of worker threads (`--concurrency`).
    pub fn concurrency(&self) -> u32 {
        // SAFETY: no arguments; this context exists only inside a main-thread hook.
        unsafe { abi::envoy_dynamic_module_callback_get_concurrency() }
    }

    /// Defines a counter, shown as `<metrics_namespace>.<name>` in `/stats` (the namespace is
    /// `dynamic_module_config.metrics_namespace`, by default `dynamicmodulescustom`). Only while
    /// the configuration is created; later calls return [`MetricsError::Frozen`].
    pub fn define_counter(&mut self, name: &str) -> Result<CounterId, MetricsError> {
        let mut id = 0usize;
        // SAFETY: `ptr` is the live configuration of this hook; the name buffer is read during
        // the call only; no labels (null, 0); `id` is a valid out pointer.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.ptr,
                abi::ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        MetricsError::from_raw(code).map(|()| CounterId(id))
    }

    /// Defines a gauge (imported as `Accumulate`), like [`define_counter`](Self::define_counter).
    pub fn define_gauge(&mut self, name: &str) -> Result<GaugeId, MetricsError> {
        let mut id = 0usize;
        // SAFETY: as in `define_counter`.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_gauge(
                self.ptr,
                abi::ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        MetricsError::from_raw(code).map(|()| GaugeId(id))
    }

    /// A scheduler that posts events to [`FilterConfig::on_scheduled`] on the main thread, from
    /// any thread. `None` only if Envoy refused to allocate one.
    pub fn scheduler(&mut self) -> Option<ConfigScheduler> {
        ConfigScheduler::new(self.ptr)
    }

    /// Sends a callout owned by the configuration; the answer arrives in
    /// [`FilterConfig::on_callout_done`] on the main thread. Call it from `on_scheduled` or
    /// `on_callout_done` rather than from `new_config`, where clusters may not be ready (and in
    /// validation mode there are none).
    pub fn http_callout(&mut self, request: &CalloutRequest<'_>) -> Result<CalloutId, CalloutError> {
        let mut headers = request.raw_headers();
        let mut id = 0u64;
        // SAFETY: `ptr` is the live configuration of this main-thread hook (config callouts use
        // the main thread's cluster manager view); every buffer borrows `request` or `headers`,
        // which outlive the call, and Envoy copies them; `id` is a valid out pointer.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.ptr,
                &mut id,
                abi::ModuleBuffer::of(request.cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                abi::ModuleBuffer::of(request.body),
                request.timeout_ms(),
            )
        };
        CalloutError::from_raw(code).map(|()| CalloutId(id))
    }
}

impl RecordMetrics for ConfigContext<'_> {
    /// Adds `by` to a counter from a configuration hook (e.g. counting refreshes).
    fn increment_counter(&mut self, counter: CounterId, by: u64) -> Result<(), MetricsError> {
        // SAFETY: `ptr` is the live configuration of this hook; no labels.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.ptr,
                counter.0,
                std::ptr::null_mut(),
                0,
                by,
            )
        };
        MetricsError::from_raw(code)
    }

    /// Sets a gauge from a configuration hook.
    fn set_gauge(&mut self, gauge: GaugeId, value: u64) -> Result<(), MetricsError> {
        // SAFETY: `ptr` is the live configuration of this hook; no labels.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.ptr,
                gauge.0,
                std::ptr::null_mut(),
                0,
                value,
            )
        };
        MetricsError::from_raw(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_results_map_to_errors() {
        assert_eq!(MetricsError::from_raw(0), Ok(()));
        assert_eq!(MetricsError::from_raw(1), Err(MetricsError::NotFound));
        assert_eq!(MetricsError::from_raw(2), Err(MetricsError::InvalidLabels));
        assert_eq!(MetricsError::from_raw(3), Err(MetricsError::Frozen));
        assert_eq!(MetricsError::from_raw(42), Err(MetricsError::Unknown(42)));
    }

    #[test]
    fn ids_and_schedulers_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CounterId>();
        send_sync::<GaugeId>();
        send_sync::<ConfigScheduler>();
        send_sync::<crate::FilterScheduler>();
        send_sync::<crate::Timer>();
    }
}
