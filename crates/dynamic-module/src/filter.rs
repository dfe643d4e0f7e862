//! The per-request filter: what runs on a worker thread.

use std::cell::Cell;

use crate::abi;
use crate::callout::{CalloutError, CalloutId, CalloutRequest, CalloutResponse};
use crate::metrics::{CounterId, GaugeId, MetricsError, RecordMetrics};
use crate::timer::FilterScheduler;

/// What the filter chain does after a headers hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadersStatus {
    /// Pass the headers on to the next filter.
    Continue,
    /// Hold them: the stream waits until [`HttpFilterHandle::continue_decoding`] (request) or
    /// [`HttpFilterHandle::continue_encoding`] (response), or until a local response. The body
    /// and trailers that arrive meanwhile are held too (buffered, with flow control), and go on
    /// after the headers when the filter continues. Return this after
    /// [`HttpFilterHandle::send_local_response`] too.
    StopIteration,
}

impl HeadersStatus {
    pub(crate) fn raw(self) -> abi::CEnum {
        match self {
            HeadersStatus::Continue => abi::STATUS_CONTINUE,
            HeadersStatus::StopIteration => abi::HEADERS_STATUS_STOP_ITERATION,
        }
    }
}

/// The header maps of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    /// The request headers: present from `on_request_headers` until the stream ends (readable in
    /// the response phase too).
    Request,
    /// The response headers: present from `on_response_headers`.
    Response,
    /// The request trailers, if the request has them.
    RequestTrailers,
    /// The response trailers, if the response has them.
    ResponseTrailers,
}

impl HeaderMap {
    fn raw(self) -> abi::CEnum {
        match self {
            HeaderMap::Request => abi::HEADER_TYPE_REQUEST_HEADER,
            HeaderMap::Response => abi::HEADER_TYPE_RESPONSE_HEADER,
            HeaderMap::RequestTrailers => abi::HEADER_TYPE_REQUEST_TRAILER,
            HeaderMap::ResponseTrailers => abi::HEADER_TYPE_RESPONSE_TRAILER,
        }
    }
}

/// A per-request filter: one per HTTP stream, created by [`FilterConfig::new_filter`].
///
/// Threads: every method and `Drop` run on the stream's worker thread, one at a time, so the
/// filter needs neither `Send` nor `Sync`. Each method gets `&mut self` and a handle to Envoy's
/// side of the stream, valid for that call only.
///
/// Re-entrancy: Envoy may run a hook while another hook of the same filter is on the stack (its
/// header says so of `on_stream_complete`, when a hook ends the stream). `&mut self` cannot be
/// lent twice, so a nested call is not delivered as such: a nested `on_stream_complete` is
/// delivered right after the outer hook returns; any other nested event gets the default answer
/// (`Continue`) and a debug log line ("re-entrant ... not delivered"). Envoy 1.40 does not run a
/// filter's `on_response_headers` for the filter's own local response (tests/smoke.sh checks).
///
/// [`FilterConfig::new_filter`]: crate::FilterConfig::new_filter
pub trait HttpFilter: 'static {
    /// The request headers arrived (`end_of_stream`: there is no body).
    fn on_request_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, end_of_stream: bool) -> HeadersStatus {
        let _ = (envoy, end_of_stream);
        HeadersStatus::Continue
    }

    /// The response headers arrived (from upstream, or a local response of another filter).
    fn on_response_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, end_of_stream: bool) -> HeadersStatus {
        let _ = (envoy, end_of_stream);
        HeadersStatus::Continue
    }

    /// A chunk of the response body arrived (`end_of_stream`: it is the last); read it with
    /// [`HttpFilterHandle::received_response_body`]. It passes on after this returns (unless the
    /// filter holds the response headers: then it is held with them).
    fn on_response_body(&mut self, envoy: &mut HttpFilterHandle<'_>, end_of_stream: bool) {
        let _ = (envoy, end_of_stream);
    }

    /// A callout started with [`HttpFilterHandle::http_callout`] finished. If the stream was
    /// stopped for it, continue it (or answer locally) from here.
    fn on_callout_done(&mut self, envoy: &mut HttpFilterHandle<'_>, callout: CalloutId, response: CalloutResponse<'_>) {
        let _ = (envoy, callout, response);
    }

    /// An event committed to this filter's [`FilterScheduler`] arrived.
    fn on_scheduled(&mut self, envoy: &mut HttpFilterHandle<'_>, event_id: u64) {
        let _ = (envoy, event_id);
    }

    /// The stream is complete; access logs are written after this, so filter state set here
    /// still reaches them.
    fn on_stream_complete(&mut self, envoy: &mut HttpFilterHandle<'_>) {
        let _ = envoy;
    }
}

/// Envoy's side of one stream, lent to a filter hook. Not `Send`: it exists for one hook call.
///
/// Header values are views into Envoy's header map, not copies: a returned `&[u8]` borrows the
/// handle, so it cannot outlive the hook nor be held across a call that changes headers (which
/// needs `&mut self`).
pub struct HttpFilterHandle<'h> {
    ptr: abi::FilterEnvoyPtr,
    stopped: &'h Stopped,
}

/// Which directions the filter holds with [`HeadersStatus::StopIteration`], until it continues
/// them or answers locally. While a direction is held, this crate's body and trailers hooks hold
/// the data too (buffered with watermark flow control): Envoy would otherwise let the headers
/// through with the first body chunk.
#[derive(Default)]
pub(crate) struct Stopped {
    pub(crate) request: Cell<bool>,
    pub(crate) response: Cell<bool>,
}

impl<'h> HttpFilterHandle<'h> {
    /// # Safety
    /// `ptr` must be the Envoy filter passed to the current hook, on its worker thread, and
    /// `stopped` the state of that same filter.
    pub(crate) unsafe fn new(ptr: abi::FilterEnvoyPtr, stopped: &'h Stopped) -> Self {
        HttpFilterHandle { ptr, stopped }
    }
}

impl HttpFilterHandle<'_> {
    /// The first value of header `name` (case-insensitive; Envoy lower-cases it) in `map`, as a
    /// view into Envoy's memory. `None` if absent or if the map does not exist (yet).
    pub fn header(&self, map: HeaderMap, name: &[u8]) -> Option<&[u8]> {
        self.header_at(map, name, 0).0
    }

    fn header_at(&self, map: HeaderMap, name: &[u8], index: usize) -> (Option<&[u8]>, usize) {
        let mut value = abi::EnvoyBuffer::NULL;
        let mut count = 0usize;
        // SAFETY: `ptr` is this hook's live filter; the key is read during the call; `value`
        // and `count` are valid out pointers.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.ptr,
                map.raw(),
                abi::ModuleBuffer::of(name),
                &mut value,
                index,
                &mut count,
            )
        };
        if !found {
            return (None, count);
        }
        // SAFETY: Envoy's buffer points into its header map, valid until the hook returns or a
        // header setter runs; the result borrows `&self`, and setters need `&mut self`.
        (Some(unsafe { abi::envoy_bytes(value) }), count)
    }

    /// The name of the cluster the stream was routed to (`xds.cluster_name`), once the router
    /// chose it (in the response phase); `None` before, or if Envoy has none.
    pub fn upstream_cluster_name(&self) -> Option<&[u8]> {
        let mut value = abi::EnvoyBuffer::NULL;
        // SAFETY: `ptr` is this hook's live filter; `value` is a valid out pointer.
        let found = unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(self.ptr, abi::ATTRIBUTE_XDS_CLUSTER_NAME, &mut value) };
        // SAFETY: Envoy's buffer points into the stream's info, valid until the hook returns;
        // the result borrows `&self`.
        found.then(|| unsafe { abi::envoy_bytes(value) })
    }

    /// The chunks of response body the current `on_response_body` received, as views into
    /// Envoy's buffer; none outside that hook.
    pub fn received_response_body(&self) -> Vec<&[u8]> {
        // SAFETY: `ptr` is this hook's live filter.
        let count = unsafe { abi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.ptr, abi::BODY_TYPE_RECEIVED_RESPONSE_BODY) };
        if count == 0 {
            return Vec::new();
        }
        let mut raw = vec![abi::EnvoyBuffer::NULL; count];
        // SAFETY: `raw` has room for the `count` chunks Envoy just reported, and nothing can
        // change the body between the two calls (same hook, `&self`).
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_body_chunks(self.ptr, abi::BODY_TYPE_RECEIVED_RESPONSE_BODY, raw.as_mut_ptr())
        };
        if !ok {
            return Vec::new();
        }
        // SAFETY: views into Envoy's body buffer, valid until the hook returns; the result
        // borrows `&self`, and nothing here changes the body.
        raw.into_iter().map(|buffer| unsafe { abi::envoy_bytes(buffer) }).collect()
    }

    /// Every value of header `name` in `map` (e.g. several `www-authenticate`), in order, as
    /// views into Envoy's memory. Two host calls; the Vec holds only the slices.
    pub fn header_values(&self, map: HeaderMap, name: &[u8]) -> Vec<&[u8]> {
        let (first, count) = self.header_at(map, name, 0);
        match (first, count) {
            (None, _) | (_, 0) => Vec::new(),
            (Some(only), 1) => vec![only],
            (Some(_), count) => {
                let mut raw = vec![abi::EnvoyBuffer::NULL; count];
                // SAFETY: `raw` has room for the `count` values Envoy just reported for this key,
                // and nothing can change the map between the two calls (same hook, `&self`).
                let ok = unsafe {
                    abi::envoy_dynamic_module_callback_http_get_header_values(
                        self.ptr,
                        map.raw(),
                        abi::ModuleBuffer::of(name),
                        raw.as_mut_ptr(),
                    )
                };
                if !ok {
                    return Vec::new();
                }
                // SAFETY: as in `header_at`: views into the header map, valid while `&self` is
                // borrowed.
                raw.into_iter().map(|buffer| unsafe { abi::envoy_bytes(buffer) }).collect()
            }
        }
    }

    /// Calls `f` with every header of `map` (name, value), in Envoy's order, pseudo-headers
    /// (`:method`, `:path`, ...) first, as views into Envoy's memory: two host calls for the
    /// whole map, where each [`header`](Self::header) builds a lower-case key and looks it up.
    /// Names are lower-case already. Nothing if the map does not exist (yet).
    pub fn for_each_header<'a>(&'a self, map: HeaderMap, mut f: impl FnMut(&'a [u8], &'a [u8])) {
        /// Requests and answers rarely carry more headers than this: no allocation for them.
        const ON_STACK: usize = 32;
        // SAFETY: `ptr` is this hook's live filter.
        let count = unsafe { abi::envoy_dynamic_module_callback_http_get_headers_size(self.ptr, map.raw()) };
        if count == 0 {
            return;
        }
        let mut on_stack = [abi::EnvoyHttpHeader::NULL; ON_STACK];
        let mut on_heap = Vec::new();
        let raw: &mut [abi::EnvoyHttpHeader] = if count <= ON_STACK {
            &mut on_stack[..count]
        } else {
            on_heap.resize(count, abi::EnvoyHttpHeader::NULL);
            &mut on_heap
        };
        // SAFETY: `raw` has room for the `count` headers Envoy just reported, and nothing can
        // change the map between the two calls (same hook, `&self`).
        if !unsafe { abi::envoy_dynamic_module_callback_http_get_headers(self.ptr, map.raw(), raw.as_mut_ptr()) } {
            return;
        }
        for header in raw.iter() {
            // SAFETY: as in `header_at`: views into the header map, valid while `&self` is
            // borrowed ('a), which no setter can end early.
            let (name, value) = unsafe {
                (
                    abi::envoy_bytes(abi::EnvoyBuffer { ptr: header.key_ptr, length: header.key_length }),
                    abi::envoy_bytes(abi::EnvoyBuffer { ptr: header.value_ptr, length: header.value_length }),
                )
            };
            f(name, value);
        }
    }

    /// Sets header `name` to `value` in `map`, replacing every existing value. Envoy 1.40 cannot
    /// store an empty value through this ABI: an empty `value` removes the header. Returns false
    /// if the map does not exist (yet).
    pub fn set_header(&mut self, map: HeaderMap, name: &[u8], value: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's live filter; Envoy copies both buffers; `&mut self` means
        // no view returned by a getter is alive.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.ptr,
                map.raw(),
                abi::ModuleBuffer::of(name),
                abi::ModuleBuffer::of(value),
            )
        }
    }

    /// Adds a value to header `name` in `map`, keeping existing values. Returns false if `value`
    /// is empty (Envoy refuses it) or the map does not exist.
    pub fn add_header(&mut self, map: HeaderMap, name: &[u8], value: &[u8]) -> bool {
        // SAFETY: as in `set_header`.
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.ptr,
                map.raw(),
                abi::ModuleBuffer::of(name),
                abi::ModuleBuffer::of(value),
            )
        }
    }

    /// Removes every value of header `name` from `map`. Returns false if the map does not exist.
    pub fn remove_header(&mut self, map: HeaderMap, name: &[u8]) -> bool {
        self.set_header(map, name, &[])
    }

    /// Clears the route cache, so that Envoy routes again on headers changed in this hook (e.g.
    /// a rewritten `:path`). A no-op outside the request phase.
    pub fn clear_route_cache(&mut self) {
        // SAFETY: `ptr` is this hook's live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_clear_route_cache(self.ptr) }
    }

    /// Answers the stream locally: `status`, extra `headers`, `body`, and `details` for
    /// `%RESPONSE_CODE_DETAILS%` (whitespace becomes `_`, as Envoy requires; `None` gives
    /// `dynamic_module`). Return [`HeadersStatus::StopIteration`] from the hook afterwards.
    /// A `content-type` in `headers` is kept as the only one (Envoy adds `text/plain` for a
    /// body otherwise). The response runs the filter chain's response path at once, except
    /// this filter's own `on_response_headers`.
    pub fn send_local_response(&mut self, status: u16, headers: &[(&[u8], &[u8])], body: &[u8], details: Option<&str>) {
        let mut raw: Vec<abi::ModuleHttpHeader> =
            headers.iter().map(|(name, value)| abi::ModuleHttpHeader::of(name, value)).collect();
        let details = details.map(sanitize_details).unwrap_or_default();
        self.stopped.request.set(false);
        self.stopped.response.set(false);
        // SAFETY: `ptr` is this hook's live filter; every buffer borrows `raw`, `headers`, `body`
        // or `details`, all alive for the call, and Envoy copies them before returning.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.ptr,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                abi::ModuleBuffer::of(body),
                abi::ModuleBuffer::of(details.as_bytes()),
            );
        }
    }

    /// Resumes a request stopped with [`HeadersStatus::StopIteration`] (typically from
    /// `on_callout_done` or `on_scheduled`).
    pub fn continue_decoding(&mut self) {
        self.stopped.request.set(false);
        // SAFETY: `ptr` is this hook's live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.ptr) }
    }

    /// Resumes a response stopped with [`HeadersStatus::StopIteration`].
    pub fn continue_encoding(&mut self) {
        self.stopped.response.set(false);
        // SAFETY: `ptr` is this hook's live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_encoding(self.ptr) }
    }

    /// Adds `by` to a gauge defined by this filter's configuration.
    pub fn increase_gauge(&mut self, gauge: GaugeId, by: u64) -> Result<(), MetricsError> {
        // SAFETY: `ptr` is this hook's live filter; no labels.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_increment_gauge(self.ptr, gauge.0, std::ptr::null_mut(), 0, by)
        };
        MetricsError::from_raw(code)
    }

    /// Subtracts `by` from a gauge defined by this filter's configuration.
    pub fn decrease_gauge(&mut self, gauge: GaugeId, by: u64) -> Result<(), MetricsError> {
        // SAFETY: `ptr` is this hook's live filter; no labels.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_decrement_gauge(self.ptr, gauge.0, std::ptr::null_mut(), 0, by)
        };
        MetricsError::from_raw(code)
    }

    /// Stores `value` under `key` in the stream's filter state, for the access log:
    /// `%FILTER_STATE(key:PLAIN)%` prints the bytes as they are (`:TYPED` prints them as a JSON
    /// string). Setting a key again replaces the value (observed in Envoy 1.40). Use a key of
    /// your own (e.g. `harbor_mirror.route`): Envoy's built-in filters store typed objects under
    /// their own keys. Returns false if the stream has no filter state.
    pub fn set_filter_state(&mut self, key: &[u8], value: &[u8]) -> bool {
        // SAFETY: `ptr` is this hook's live filter; Envoy copies both buffers.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.ptr,
                abi::ModuleBuffer::of(key),
                abi::ModuleBuffer::of(value),
            )
        }
    }

    /// The bytes stored under `key` by [`set_filter_state`](Self::set_filter_state) (or any
    /// string filter state), as a view into Envoy's memory.
    pub fn filter_state(&self, key: &[u8]) -> Option<&[u8]> {
        let mut value = abi::EnvoyBuffer::NULL;
        // SAFETY: `ptr` is this hook's live filter; `value` is a valid out pointer.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_filter_state_bytes(self.ptr, abi::ModuleBuffer::of(key), &mut value)
        };
        // SAFETY: the buffer belongs to the read-only filter state object, which lives as long
        // as the stream; the view borrows `&self`.
        found.then(|| unsafe { abi::envoy_bytes(value) })
    }

    /// Sends a callout to `request.cluster`; the answer arrives in
    /// [`HttpFilter::on_callout_done`] on this worker thread. Envoy cancels it if the stream
    /// ends first.
    pub fn http_callout(&mut self, request: &CalloutRequest<'_>) -> Result<CalloutId, CalloutError> {
        let mut headers = request.raw_headers();
        let mut id = 0u64;
        // SAFETY: `ptr` is this hook's live filter; every buffer borrows `request` or `headers`,
        // alive for the call, and Envoy copies them; `id` is a valid out pointer.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
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

    /// A scheduler that posts events to this filter's [`HttpFilter::on_scheduled`] on its worker
    /// thread, from any thread (e.g. a [`Timer`](crate::Timer), to resume after a delay).
    /// Committing after the stream ended does nothing.
    pub fn scheduler(&mut self) -> Option<FilterScheduler> {
        FilterScheduler::new(self.ptr)
    }

    /// The index of this stream's worker thread (0-based, below `--concurrency`).
    pub fn worker_index(&self) -> u32 {
        // SAFETY: `ptr` is this hook's live filter.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_worker_index(self.ptr) }
    }
}

impl RecordMetrics for HttpFilterHandle<'_> {
    /// Adds `by` to a counter defined by this filter's configuration.
    fn increment_counter(&mut self, counter: CounterId, by: u64) -> Result<(), MetricsError> {
        // SAFETY: `ptr` is this hook's live filter; no labels.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_increment_counter(self.ptr, counter.0, std::ptr::null_mut(), 0, by)
        };
        MetricsError::from_raw(code)
    }

    /// Sets a gauge defined by this filter's configuration.
    fn set_gauge(&mut self, gauge: GaugeId, value: u64) -> Result<(), MetricsError> {
        // SAFETY: `ptr` is this hook's live filter; no labels.
        let code = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_set_gauge(self.ptr, gauge.0, std::ptr::null_mut(), 0, value)
        };
        MetricsError::from_raw(code)
    }
}

/// Envoy rejects response-code details with whitespace; make them one token.
pub(crate) fn sanitize_details(details: &str) -> String {
    details.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_become_one_token() {
        assert_eq!(sanitize_details("harbor_mirror_refused"), "harbor_mirror_refused");
        assert_eq!(sanitize_details("bad name\tx\ny"), "bad_name_x_y");
        assert_eq!(sanitize_details(""), "");
    }

    #[test]
    fn statuses_and_maps_have_the_header_numbering() {
        assert_eq!(HeadersStatus::Continue.raw(), 0);
        assert_eq!(HeadersStatus::StopIteration.raw(), 1);
        assert_eq!(HeaderMap::Request.raw(), 0);
        assert_eq!(HeaderMap::RequestTrailers.raw(), 1);
        assert_eq!(HeaderMap::Response.raw(), 2);
        assert_eq!(HeaderMap::ResponseTrailers.raw(), 3);
    }
}
