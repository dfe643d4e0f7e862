//! The event hooks Envoy looks up in the shared object, exported from here so that any cdylib
//! depending on this crate exports them. Each hook turns Envoy's pointers back into this crate's
//! objects and calls the safe API; panics are caught at this boundary (with `panic = "unwind"`;
//! with `panic = "abort"` a panic aborts Envoy, as any crash would).
//!
//! Every HTTP hook Envoy 1.40 knows is exported, including those the safe API does not surface,
//! so a configuration never fails for a missing symbol. The body and trailers hooks hold the data
//! of a direction whose headers the filter holds (see `Stopped`); the others (streamed callouts,
//! watermarks, local-reply notifications, per-route configuration) answer `Continue` or nothing.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use crate::abi::{self, CEnum, ConfigEnvoyPtr, ConfigModulePtr, EnvoyBuffer, EnvoyHttpHeader, FilterEnvoyPtr, FilterModulePtr};
use crate::callout::{CalloutId, CalloutOutcome, CalloutResponse};
use crate::config::ConfigContext;
use crate::filter::{HeadersStatus, HttpFilter, HttpFilterHandle, Stopped};
use crate::log::{self, Level};
use crate::private::{ErasedConfig, ErasedModule};

// SAFETY: `export_module!` defines this symbol with exactly this signature (same crate, same
// compiler, Rust ABI); a cdylib without it fails to load with an undefined-symbol error.
unsafe extern "Rust" {
    /// Defined by [`export_module!`](crate::export_module) in the cdylib.
    safe fn envoy_dynamic_module_rust_entry_v1() -> &'static dyn ErasedModule;
}

static MODULE: OnceLock<&'static dyn ErasedModule> = OnceLock::new();

fn module() -> &'static dyn ErasedModule {
    *MODULE.get_or_init(envoy_dynamic_module_rust_entry_v1)
}

/// What a filter configuration pointer given to Envoy points to.
struct ConfigSlot {
    config: Box<dyn ErasedConfig>,
}

/// What a filter pointer given to Envoy points to. The RefCell lends `&mut` to one hook at a
/// time; a re-entrant hook finds it borrowed (see [`HttpFilter`]'s re-entrancy note).
struct FilterSlot {
    filter: RefCell<Box<dyn HttpFilter>>,
    complete_pending: Cell<bool>,
    stopped: Stopped,
}

fn panicked(hook: &str) {
    log::log(Level::Critical, &format!("dynamic module: {hook} panicked; the event was not handled"));
}

/// # Safety
/// `ptr` must be a pointer this module returned from `on_http_filter_config_new` that Envoy has
/// not destroyed yet.
unsafe fn config_slot<'a>(ptr: ConfigModulePtr) -> &'a ConfigSlot {
    // SAFETY: the caller's contract; Envoy destroys the configuration only after its filters and
    // never during another of its hooks, and the slot is only ever shared (`&`).
    unsafe { &*ptr.cast::<ConfigSlot>() }
}

/// # Safety
/// `ptr` must be a pointer this module returned from `on_http_filter_new` that Envoy has not
/// destroyed yet, used on the stream's worker thread.
unsafe fn filter_slot<'a>(ptr: FilterModulePtr) -> &'a FilterSlot {
    // SAFETY: the caller's contract; Envoy never destroys a filter while one of its hooks is on
    // the stack, and the slot is only ever shared (`&`), mutation going through its RefCell.
    unsafe { &*ptr.cast::<FilterSlot>() }
}

/// Runs `call` on the filter with a handle for `envoy`, unless a hook of this filter is already
/// running; then delivers a stream-complete event that arrived meanwhile.
///
/// # Safety
/// `envoy` must be the live Envoy filter of the current hook, on its worker thread.
unsafe fn dispatch<R>(
    slot: &FilterSlot,
    envoy: FilterEnvoyPtr,
    hook: &str,
    call: impl FnOnce(&mut dyn HttpFilter, &mut HttpFilterHandle<'_>) -> R,
) -> Option<R> {
    let Ok(mut filter) = slot.filter.try_borrow_mut() else {
        crate::envoy_log!(Level::Debug, "dynamic module: re-entrant {hook} not delivered");
        return None;
    };
    // SAFETY: the caller's contract.
    let mut handle = unsafe { HttpFilterHandle::new(envoy, &slot.stopped) };
    let result = catch_unwind(AssertUnwindSafe(|| call(&mut **filter, &mut handle)));
    if slot.complete_pending.take() {
        let completed = catch_unwind(AssertUnwindSafe(|| filter.on_stream_complete(&mut handle)));
        if completed.is_err() {
            panicked("on_stream_complete");
        }
    }
    drop(filter);
    result.map_err(|_| panicked(hook)).ok()
}

// ----------------------------------------------------------------------------- program

/// The ABI version this crate was written against, NUL-terminated for Envoy.
const ABI_VERSION_C: &std::ffi::CStr = c"v0.2.0";

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    match catch_unwind(|| module().init()) {
        Ok(Ok(())) => ABI_VERSION_C.as_ptr(),
        Ok(Err(message)) => {
            log::log(Level::Error, &format!("dynamic module refused to load: {message}"));
            std::ptr::null()
        }
        Err(_) => {
            panicked("on_program_init");
            std::ptr::null()
        }
    }
}

// ----------------------------------------------------------------------------- configuration

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    // SAFETY: Envoy owns both buffers for the duration of this hook; they are not kept.
    let (name, config) = unsafe { (abi::envoy_bytes(name), abi::envoy_bytes(config)) };
    let name = String::from_utf8_lossy(name);
    // SAFETY: `config_envoy` is the configuration Envoy passed to this main-thread hook.
    let mut ctx = unsafe { ConfigContext::new(config_envoy) };
    match catch_unwind(AssertUnwindSafe(|| module().new_config(&mut ctx, &name, config))) {
        Ok(Ok(config)) => Box::into_raw(Box::new(ConfigSlot { config })).cast_const().cast(),
        Ok(Err(error)) => {
            log::log(Level::Error, &format!("dynamic module: filter configuration {name:?} refused: {error}"));
            std::ptr::null()
        }
        Err(_) => {
            panicked("new_config");
            std::ptr::null()
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigModulePtr) {
    if config.is_null() {
        return;
    }
    // SAFETY: `config` came from `Box::into_raw` in `on_http_filter_config_new`; Envoy destroys
    // it once, after all its filters, with no other hook of it running.
    let slot = unsafe { Box::from_raw(config.cast_mut().cast::<ConfigSlot>()) };
    if catch_unwind(AssertUnwindSafe(move || drop(slot))).is_err() {
        panicked("configuration drop");
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    event_id: u64,
) {
    // SAFETY: Envoy passes the pointer our config_new returned, live during this hook.
    let slot = unsafe { config_slot(config) };
    // SAFETY: `config_envoy` is this main-thread hook's live configuration.
    let mut ctx = unsafe { ConfigContext::new(config_envoy) };
    if catch_unwind(AssertUnwindSafe(|| slot.config.on_scheduled(&mut ctx, event_id))).is_err() {
        panicked("FilterConfig::on_scheduled");
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    callout_id: u64,
    result: CEnum,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: Envoy passes the pointer our config_new returned, live during this hook.
    let slot = unsafe { config_slot(config) };
    // SAFETY: `config_envoy` is this main-thread hook's live configuration.
    let mut ctx = unsafe { ConfigContext::new(config_envoy) };
    // SAFETY: Envoy guarantees both arrays (or null with size 0) and what they point to until
    // this hook returns; the response does not escape it.
    let response = unsafe { response(result, headers, headers_size, body_chunks, body_chunks_size) };
    let id = CalloutId(callout_id);
    if catch_unwind(AssertUnwindSafe(|| slot.config.on_callout_done(&mut ctx, id, response))).is_err() {
        panicked("FilterConfig::on_callout_done");
    }
}

/// # Safety
/// As for `CalloutResponse::new`, for the arrays and what they point to.
unsafe fn response<'a>(
    result: CEnum,
    headers: *const EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) -> CalloutResponse<'a> {
    // SAFETY: the caller's contract.
    unsafe {
        CalloutResponse::new(
            CalloutOutcome::from_raw(result),
            abi::envoy_array(headers, headers_size),
            abi::envoy_array(body_chunks, body_chunks_size),
        )
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(_name: EnvoyBuffer, _config: EnvoyBuffer) -> *const c_void {
    log::log(Level::Error, "dynamic module: per-route configuration is not supported");
    std::ptr::null()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_config: *const c_void) {}

// ----------------------------------------------------------------------------- filter

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_new(config: ConfigModulePtr, filter_envoy: FilterEnvoyPtr) -> FilterModulePtr {
    // SAFETY: Envoy passes the pointer our config_new returned; it outlives its filters.
    let slot = unsafe { config_slot(config) };
    // Nothing is held before the first hook; the slot gets fresh state below.
    let stopped = Stopped::default();
    // SAFETY: `filter_envoy` is the new stream's filter, on its worker thread.
    let mut handle = unsafe { HttpFilterHandle::new(filter_envoy, &stopped) };
    match catch_unwind(AssertUnwindSafe(|| slot.config.new_filter(&mut handle))) {
        Ok(filter) => {
            let slot =
                FilterSlot { filter: RefCell::new(filter), complete_pending: Cell::new(false), stopped: Stopped::default() };
            Box::into_raw(Box::new(slot)).cast_const().cast()
        }
        Err(_) => {
            panicked("FilterConfig::new_filter");
            std::ptr::null()
        }
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    if filter.is_null() {
        return;
    }
    // SAFETY: `filter` came from `Box::into_raw` in `on_http_filter_new`; Envoy destroys it once,
    // from the worker's deferred-deletion list, never while another of its hooks runs.
    let slot = unsafe { Box::from_raw(filter.cast_mut().cast::<FilterSlot>()) };
    if catch_unwind(AssertUnwindSafe(move || drop(slot))).is_err() {
        panicked("filter drop");
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> CEnum {
    // SAFETY: Envoy passes our live filter pointer, on the stream's worker thread.
    let slot = unsafe { filter_slot(filter) };
    // SAFETY: Envoy passes its own filter with ours.
    let status = unsafe { dispatch(slot, filter_envoy, "on_request_headers", |f, h| f.on_request_headers(h, end_of_stream)) };
    let status = status.unwrap_or(HeadersStatus::Continue);
    slot.stopped.request.set(status == HeadersStatus::StopIteration);
    status.raw()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> CEnum {
    // SAFETY: Envoy passes our live filter pointer, on the stream's worker thread.
    let slot = unsafe { filter_slot(filter) };
    // SAFETY: Envoy passes its own filter with ours.
    let status = unsafe { dispatch(slot, filter_envoy, "on_response_headers", |f, h| f.on_response_headers(h, end_of_stream)) };
    let status = status.unwrap_or(HeadersStatus::Continue);
    slot.stopped.response.set(status == HeadersStatus::StopIteration);
    status.raw()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(filter_envoy: FilterEnvoyPtr, filter: FilterModulePtr) {
    // SAFETY: Envoy passes our live filter pointer, on the stream's worker thread.
    let slot = unsafe { filter_slot(filter) };
    if slot.filter.try_borrow_mut().is_err() {
        // Inside another hook of this filter: `dispatch` delivers it when that hook returns.
        slot.complete_pending.set(true);
        return;
    }
    // SAFETY: as in on_http_filter_request_headers.
    unsafe { dispatch(slot, filter_envoy, "on_stream_complete", |f, h| f.on_stream_complete(h)) };
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout_id: u64,
    result: CEnum,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: Envoy guarantees both arrays (or null with size 0) and what they point to until
    // this hook returns; the response does not escape it.
    let response = unsafe { response(result, headers, headers_size, body_chunks, body_chunks_size) };
    let id = CalloutId(callout_id);
    // SAFETY: as in on_http_filter_request_headers.
    unsafe { dispatch(filter_slot(filter), filter_envoy, "on_callout_done", |f, h| f.on_callout_done(h, id, response)) };
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(filter_envoy: FilterEnvoyPtr, filter: FilterModulePtr, event_id: u64) {
    // SAFETY: as in on_http_filter_request_headers.
    unsafe { dispatch(filter_slot(filter), filter_envoy, "on_scheduled", |f, h| f.on_scheduled(h, event_id)) };
}

// ----------------------------------------------------------------------------- bodies, trailers
// The data passes, except while the filter holds that direction's headers (it returned
// StopIteration and has not continued); then it is held too, or Envoy would continue the headers
// with the first chunk. Of them, only the response body reaches the filter (`on_response_body`),
// to read, never to hold.

/// # Safety
/// `filter` must be our live filter pointer, on the stream's worker thread.
unsafe fn held(filter: FilterModulePtr, request: bool) -> bool {
    // SAFETY: the caller's contract; only the `Cell`s are read.
    let slot = unsafe { filter_slot(filter) };
    if request { slot.stopped.request.get() } else { slot.stopped.response.get() }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_body(_: FilterEnvoyPtr, filter: FilterModulePtr, _end_of_stream: bool) -> CEnum {
    // SAFETY: Envoy passes our live filter pointer, on the stream's worker thread.
    if unsafe { held(filter, true) } { abi::BODY_STATUS_STOP_ITERATION_AND_WATERMARK } else { abi::STATUS_CONTINUE }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_: FilterEnvoyPtr, filter: FilterModulePtr) -> CEnum {
    // SAFETY: as in on_http_filter_request_body.
    if unsafe { held(filter, true) } { abi::TRAILERS_STATUS_STOP_ITERATION } else { abi::STATUS_CONTINUE }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_response_body(filter_envoy: FilterEnvoyPtr, filter: FilterModulePtr, end_of_stream: bool) -> CEnum {
    // SAFETY: as in on_http_filter_request_body.
    if unsafe { held(filter, false) } {
        return abi::BODY_STATUS_STOP_ITERATION_AND_WATERMARK;
    }
    // SAFETY: Envoy passes our live filter pointer, on the stream's worker thread.
    let slot = unsafe { filter_slot(filter) };
    // SAFETY: Envoy passes its own filter with ours.
    unsafe { dispatch(slot, filter_envoy, "on_response_body", |f, h| f.on_response_body(h, end_of_stream)) };
    abi::STATUS_CONTINUE
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_: FilterEnvoyPtr, filter: FilterModulePtr) -> CEnum {
    // SAFETY: as in on_http_filter_request_body.
    if unsafe { held(filter, false) } { abi::TRAILERS_STATUS_STOP_ITERATION } else { abi::STATUS_CONTINUE }
}

// ----------------------------------------------------------------------------- not surfaced
// Exported so that Envoy finds every hook it may require; they change nothing.

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _response_code: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> CEnum {
    abi::STATUS_CONTINUE
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_: FilterEnvoyPtr, _: FilterModulePtr) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_: FilterEnvoyPtr, _: FilterModulePtr) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_: FilterEnvoyPtr, _: FilterModulePtr, _stream_id: u64) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_: FilterEnvoyPtr, _: FilterModulePtr, _stream_id: u64, _reason: CEnum) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(_: ConfigEnvoyPtr, _: ConfigModulePtr, _stream_id: u64) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _reason: CEnum,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_is_the_public_constant() {
        assert_eq!(ABI_VERSION_C.to_str(), Ok(crate::ABI_VERSION));
    }
}
