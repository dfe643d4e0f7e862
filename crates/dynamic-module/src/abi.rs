//! Raw declarations of the part of Envoy's dynamic-modules ABI this crate uses.
//!
//! Layouts and signatures are those of `source/extensions/dynamic_modules/abi/abi.h` as checked in
//! README.md (identical in the Envoy 1.38.0 header and the `v0.2.0` header for everything marked
//! "1.38"; the rest, marked "new", exists in Envoy 1.40's exported symbols and was verified at run
//! time by `tests/smoke.sh`). Only the callbacks the safe API needs are declared: a module that
//! references a callback its Envoy lacks fails to load (`dlopen` of a module linked with
//! `-z now`, Rust's default, reports the undefined symbol), so declaring less is safer;
//! tests/smoke.sh checks the built module's undefined symbols against the Envoy binary's exports.
//!
//! C enums are passed as `int` on every platform Envoy supports, hence [`CEnum`]; values coming
//! from Envoy are kept as integers and matched with constants, never transmuted into Rust enums.

use std::ffi::{c_char, c_int, c_void};

/// A C enum as it crosses the ABI (an `int`).
pub(crate) type CEnum = c_int;

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EnvoyBuffer {
    pub(crate) ptr: *const c_char,
    pub(crate) length: usize,
}

impl EnvoyBuffer {
    pub(crate) const NULL: EnvoyBuffer = EnvoyBuffer { ptr: std::ptr::null(), length: 0 };
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, read by Envoy during the
/// call only.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleBuffer {
    pub(crate) ptr: *const c_char,
    pub(crate) length: usize,
}

impl ModuleBuffer {
    /// Borrows `bytes` for the duration of one callback.
    pub(crate) fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer { ptr: bytes.as_ptr().cast(), length: bytes.len() }
    }
}

/// `envoy_dynamic_module_type_module_http_header`: a header owned by the module.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct ModuleHttpHeader {
    pub(crate) key_ptr: *const c_char,
    pub(crate) key_length: usize,
    pub(crate) value_ptr: *const c_char,
    pub(crate) value_length: usize,
}

impl ModuleHttpHeader {
    pub(crate) fn of(name: &[u8], value: &[u8]) -> ModuleHttpHeader {
        ModuleHttpHeader {
            key_ptr: name.as_ptr().cast(),
            key_length: name.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_envoy_http_header`: a header owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct EnvoyHttpHeader {
    pub(crate) key_ptr: *const c_char,
    pub(crate) key_length: usize,
    pub(crate) value_ptr: *const c_char,
    pub(crate) value_length: usize,
}

impl EnvoyHttpHeader {
    pub(crate) const NULL: EnvoyHttpHeader = EnvoyHttpHeader { key_ptr: std::ptr::null(), key_length: 0, value_ptr: std::ptr::null(), value_length: 0 };
}

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr` (Envoy's `DynamicModuleHttpFilterConfig`).
pub(crate) type ConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_module_ptr` (ours).
pub(crate) type ConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr` (Envoy's `DynamicModuleHttpFilter`).
pub(crate) type FilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_module_ptr` (ours).
pub(crate) type FilterModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_scheduler_module_ptr`.
pub(crate) type FilterSchedulerPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`.
pub(crate) type ConfigSchedulerPtr = *mut c_void;

// envoy_dynamic_module_type_http_header_type
pub(crate) const HEADER_TYPE_REQUEST_HEADER: CEnum = 0;
pub(crate) const HEADER_TYPE_REQUEST_TRAILER: CEnum = 1;
pub(crate) const HEADER_TYPE_RESPONSE_HEADER: CEnum = 2;
pub(crate) const HEADER_TYPE_RESPONSE_TRAILER: CEnum = 3;

// envoy_dynamic_module_type_log_level
pub(crate) const LOG_LEVEL_TRACE: CEnum = 0;
pub(crate) const LOG_LEVEL_DEBUG: CEnum = 1;
pub(crate) const LOG_LEVEL_INFO: CEnum = 2;
pub(crate) const LOG_LEVEL_WARN: CEnum = 3;
pub(crate) const LOG_LEVEL_ERROR: CEnum = 4;
pub(crate) const LOG_LEVEL_CRITICAL: CEnum = 5;

// envoy_dynamic_module_type_http_callout_init_result
pub(crate) const CALLOUT_INIT_SUCCESS: CEnum = 0;
pub(crate) const CALLOUT_INIT_MISSING_REQUIRED_HEADERS: CEnum = 1;
pub(crate) const CALLOUT_INIT_CLUSTER_NOT_FOUND: CEnum = 2;
pub(crate) const CALLOUT_INIT_DUPLICATE_CALLOUT_ID: CEnum = 3;
pub(crate) const CALLOUT_INIT_CANNOT_CREATE_REQUEST: CEnum = 4;

// envoy_dynamic_module_type_http_callout_result
pub(crate) const CALLOUT_RESULT_SUCCESS: CEnum = 0;
pub(crate) const CALLOUT_RESULT_RESET: CEnum = 1;
pub(crate) const CALLOUT_RESULT_EXCEED_RESPONSE_BUFFER_LIMIT: CEnum = 2;

// envoy_dynamic_module_type_metrics_result
pub(crate) const METRICS_SUCCESS: CEnum = 0;
pub(crate) const METRICS_NOT_FOUND: CEnum = 1;
pub(crate) const METRICS_INVALID_LABELS: CEnum = 2;
pub(crate) const METRICS_FROZEN: CEnum = 3;

// envoy_dynamic_module_type_on_http_filter_{request,response}_headers_status (same numbering),
// and the body/trailers/local-reply statuses whose `Continue` is also 0.
pub(crate) const STATUS_CONTINUE: CEnum = 0;
pub(crate) const HEADERS_STATUS_STOP_ITERATION: CEnum = 1;
// envoy_dynamic_module_type_on_http_filter_{request,response}_body_status
pub(crate) const BODY_STATUS_STOP_ITERATION_AND_WATERMARK: CEnum = 2;
// envoy_dynamic_module_type_http_body_type: the body the response-body hook just received.
pub(crate) const BODY_TYPE_RECEIVED_RESPONSE_BODY: CEnum = 2;
// envoy_dynamic_module_type_attribute_id: `xds.cluster_name`, the 58th of the enum (its order in
// the header; e2e's blob coalescing checks it against Envoy 1.40, whose getter takes ids beyond
// its own switch to the CEL attributes).
pub(crate) const ATTRIBUTE_XDS_CLUSTER_NAME: CEnum = 57;
// envoy_dynamic_module_type_on_http_filter_{request,response}_trailers_status
pub(crate) const TRAILERS_STATUS_STOP_ITERATION: CEnum = 1;

// The callbacks. Each comment says which header it was checked against: "1.38" = present with
// this exact signature in the Envoy 1.38.0 header and in the v0.2.0 header; "new" = absent from
// 1.38.0, signature from the v0.2.0 header, behaviour verified against Envoy 1.40 by smoke.sh.
unsafe extern "C" {
    // ---- common
    /// new. Logs under Envoy's `dynamic_modules` logger id, with the module's source location.
    pub(crate) fn envoy_dynamic_module_callback_log_v2(
        level: CEnum,
        message: ModuleBuffer,
        source_file: ModuleBuffer,
        source_line: u32,
    );
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_log_enabled(level: CEnum) -> bool;
    /// 1.38. Main thread only.
    pub(crate) fn envoy_dynamic_module_callback_is_validation_mode() -> bool;
    /// 1.38. Main thread only.
    pub(crate) fn envoy_dynamic_module_callback_get_concurrency() -> u32;

    // ---- metrics (define: during on_http_filter_config_new only, afterwards `Frozen`)
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> CEnum;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        gauge_id: *mut usize,
    ) -> CEnum;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> CEnum;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> CEnum;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> CEnum;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> CEnum;
    /// new.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> CEnum;
    /// new.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> CEnum;

    // ---- headers (the returned buffers point into Envoy's header map)
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: CEnum,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;
    /// new. How many headers `header_type` holds (0 if the map does not exist).
    pub(crate) fn envoy_dynamic_module_callback_http_get_headers_size(filter: FilterEnvoyPtr, header_type: CEnum) -> usize;
    /// new. Fills `result` with every header of the map, in order; `result` must have room for
    /// `get_headers_size` entries.
    pub(crate) fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: CEnum,
        result: *mut EnvoyHttpHeader,
    ) -> bool;
    /// new (1.40: its disassembly reads a third argument, the result, and no fourth). A string
    /// attribute of the stream, as a view into Envoy's memory.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute_id: CEnum,
        result: *mut EnvoyBuffer,
    ) -> bool;
    /// new (1.40: its disassembly takes two arguments and returns the count). How many chunks
    /// the body `body_type` holds (0 if there is none).
    pub(crate) fn envoy_dynamic_module_callback_http_get_body_chunks_size(filter: FilterEnvoyPtr, body_type: CEnum) -> usize;
    /// new. Fills `result` with the body's chunks; `result` must have room for
    /// `get_body_chunks_size` entries.
    pub(crate) fn envoy_dynamic_module_callback_http_get_body_chunks(filter: FilterEnvoyPtr, body_type: CEnum, result: *mut EnvoyBuffer) -> bool;
    /// new. `result` must have room for every value (count them with `get_header` first).
    pub(crate) fn envoy_dynamic_module_callback_http_get_header_values(
        filter: FilterEnvoyPtr,
        header_type: CEnum,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;
    /// 1.38. An empty (or null) value removes the header.
    pub(crate) fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: CEnum,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// 1.38. An empty value is refused (returns false).
    pub(crate) fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: CEnum,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    // ---- stream control
    /// 1.38. An empty `details` becomes "dynamic_module".
    pub(crate) fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_continue_encoding(filter: FilterEnvoyPtr);
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_get_worker_index(filter: FilterEnvoyPtr) -> u32;

    // ---- filter state (a string accessor: what `%FILTER_STATE(key:PLAIN)%` prints)
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    // ---- callouts
    /// 1.38. `headers` must hold `:method`, `:path` and `host`.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> CEnum;
    /// 1.38. Uses the calling thread's cluster manager view: main thread only.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> CEnum;

    // ---- schedulers (commit is safe from any thread and a no-op once the target is gone)
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: FilterEnvoyPtr) -> FilterSchedulerPtr;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_scheduler_commit(scheduler: FilterSchedulerPtr, event_id: u64);
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: FilterSchedulerPtr);
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: ConfigEnvoyPtr) -> ConfigSchedulerPtr;
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: ConfigSchedulerPtr, event_id: u64);
    /// 1.38.
    pub(crate) fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: ConfigSchedulerPtr);
}

/// Views `buffer` as a byte slice living as long as `'a`.
///
/// # Safety
/// Unless `buffer.length` is 0, `buffer.ptr` must point to `buffer.length` initialised bytes
/// that stay valid and unmodified for `'a` (Envoy's guarantee for the buffers it hands out:
/// until the end of the current event hook, or until a setter touches the same map).
pub(crate) unsafe fn envoy_bytes<'a>(buffer: EnvoyBuffer) -> &'a [u8] {
    if buffer.ptr.is_null() || buffer.length == 0 {
        return &[];
    }
    // SAFETY: non-null and non-empty here; validity and lifetime are the caller's contract.
    unsafe { std::slice::from_raw_parts(buffer.ptr.cast::<u8>(), buffer.length) }
}

/// Views a (pointer, length) array Envoy passed to a hook as a slice.
///
/// # Safety
/// Unless `len` is 0, `ptr` must point to `len` initialised values valid for `'a`.
pub(crate) unsafe fn envoy_array<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: non-null and non-empty here; validity and lifetime are the caller's contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_those_of_the_header() {
        use std::mem::{align_of, size_of};
        let word = size_of::<usize>();
        assert_eq!(size_of::<EnvoyBuffer>(), 2 * word);
        assert_eq!(size_of::<ModuleBuffer>(), 2 * word);
        assert_eq!(size_of::<ModuleHttpHeader>(), 4 * word);
        assert_eq!(size_of::<EnvoyHttpHeader>(), 4 * word);
        assert_eq!(align_of::<EnvoyHttpHeader>(), align_of::<usize>());
        assert_eq!(size_of::<CEnum>(), 4);
    }

    #[test]
    fn null_and_empty_buffers_are_empty_slices() {
        // SAFETY: a null buffer is never dereferenced.
        let empty = unsafe { envoy_bytes(EnvoyBuffer::NULL) };
        assert!(empty.is_empty());
        let bytes = b"abc";
        let buffer = EnvoyBuffer { ptr: bytes.as_ptr().cast(), length: 0 };
        // SAFETY: a zero-length buffer is never dereferenced.
        assert!(unsafe { envoy_bytes(buffer) }.is_empty());
        let buffer = EnvoyBuffer { ptr: bytes.as_ptr().cast(), length: 3 };
        // SAFETY: points to the 3 bytes of a static.
        assert_eq!(unsafe { envoy_bytes(buffer) }, b"abc");
    }
}
