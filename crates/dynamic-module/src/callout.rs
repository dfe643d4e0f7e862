//! HTTP callouts: a request to a named cluster, answered in a hook.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::abi;

/// Identifies one callout among those of its filter (or filter configuration); Envoy assigns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CalloutId(pub u64);

/// Why Envoy refused to start a callout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutError {
    /// The request lacked `:method`, `:path` or `host`.
    MissingRequiredHeaders,
    /// No cluster of that name (Envoy's configuration must define it).
    ClusterNotFound,
    /// Envoy reused an id (should not happen: Envoy assigns them).
    DuplicateCalloutId,
    /// Envoy could not create the request (e.g. no healthy host).
    CannotCreateRequest,
    /// A code this crate does not know.
    Unknown(i32),
}

impl CalloutError {
    pub(crate) fn from_raw(code: abi::CEnum) -> Result<(), CalloutError> {
        match code {
            abi::CALLOUT_INIT_SUCCESS => Ok(()),
            abi::CALLOUT_INIT_MISSING_REQUIRED_HEADERS => Err(CalloutError::MissingRequiredHeaders),
            abi::CALLOUT_INIT_CLUSTER_NOT_FOUND => Err(CalloutError::ClusterNotFound),
            abi::CALLOUT_INIT_DUPLICATE_CALLOUT_ID => Err(CalloutError::DuplicateCalloutId),
            abi::CALLOUT_INIT_CANNOT_CREATE_REQUEST => Err(CalloutError::CannotCreateRequest),
            other => Err(CalloutError::Unknown(other)),
        }
    }
}

impl fmt::Display for CalloutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalloutError::MissingRequiredHeaders => f.write_str("callout lacks :method, :path or host"),
            CalloutError::ClusterNotFound => f.write_str("callout cluster not found"),
            CalloutError::DuplicateCalloutId => f.write_str("duplicate callout id"),
            CalloutError::CannotCreateRequest => f.write_str("Envoy could not create the callout request"),
            CalloutError::Unknown(code) => write!(f, "callout refused with unknown code {code}"),
        }
    }
}

impl std::error::Error for CalloutError {}

/// A callout to send: `headers` must include `:method`, `:path` and `host` (Envoy checks);
/// Envoy adds `content-length` for a non-empty body.
#[derive(Clone, Copy, Debug)]
pub struct CalloutRequest<'a> {
    /// The cluster (by name, as in Envoy's configuration).
    pub cluster: &'a str,
    /// Request headers, pseudo-headers included.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Request body (may be empty).
    pub body: &'a [u8],
    /// Whole-request timeout (rounded down to milliseconds; 0 means none).
    pub timeout: Duration,
}

impl CalloutRequest<'_> {
    pub(crate) fn raw_headers(&self) -> Vec<abi::ModuleHttpHeader> {
        self.headers.iter().map(|(name, value)| abi::ModuleHttpHeader::of(name, value)).collect()
    }

    pub(crate) fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

/// How a callout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CalloutOutcome {
    /// A response arrived (any status).
    Success,
    /// The stream was reset (connection failure, timeout...): no response.
    Reset,
    /// The response was larger than Envoy's buffer limit: no response.
    ExceedResponseBufferLimit,
    /// A code this crate does not know.
    Unknown(i32),
}

impl CalloutOutcome {
    pub(crate) fn from_raw(code: abi::CEnum) -> CalloutOutcome {
        match code {
            abi::CALLOUT_RESULT_SUCCESS => CalloutOutcome::Success,
            abi::CALLOUT_RESULT_RESET => CalloutOutcome::Reset,
            abi::CALLOUT_RESULT_EXCEED_RESPONSE_BUFFER_LIMIT => CalloutOutcome::ExceedResponseBufferLimit,
            other => CalloutOutcome::Unknown(other),
        }
    }
}

/// A callout's answer, borrowed from Envoy for the duration of the hook (copy what you keep).
pub struct CalloutResponse<'a> {
    outcome: CalloutOutcome,
    headers: &'a [abi::EnvoyHttpHeader],
    body: &'a [abi::EnvoyBuffer],
}

impl<'a> CalloutResponse<'a> {
    /// # Safety
    /// Every pointer in `headers` and `body` must be valid (or null with length 0) for `'a`.
    pub(crate) unsafe fn new(
        outcome: CalloutOutcome,
        headers: &'a [abi::EnvoyHttpHeader],
        body: &'a [abi::EnvoyBuffer],
    ) -> CalloutResponse<'a> {
        CalloutResponse { outcome, headers, body }
    }

    /// How the callout ended; only [`CalloutOutcome::Success`] has headers and a body.
    pub fn outcome(&self) -> CalloutOutcome {
        self.outcome
    }

    /// The response status (`:status`), if there was a response.
    pub fn status(&self) -> Option<u16> {
        self.header(b":status").and_then(parse_status)
    }

    /// The response headers as (name, value) pairs, in Envoy's order (names lower-case).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let headers: &'a [abi::EnvoyHttpHeader] = self.headers;
        headers.iter().map(|header| {
            let name = abi::EnvoyBuffer { ptr: header.key_ptr, length: header.key_length };
            let value = abi::EnvoyBuffer { ptr: header.value_ptr, length: header.value_length };
            // SAFETY: `new`'s contract: the header buffers are valid for 'a.
            unsafe { (abi::envoy_bytes(name), abi::envoy_bytes(value)) }
        })
    }

    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }

    /// Every value of header `name` (ASCII case-insensitive), in order.
    pub fn header_values<'n>(&self, name: &'n [u8]) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers().filter(move |(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }

    /// The body as Envoy's chunks, without copying.
    pub fn body_chunks(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let body: &'a [abi::EnvoyBuffer] = self.body;
        // SAFETY: `new`'s contract: the body buffers are valid for 'a.
        body.iter().map(|chunk| unsafe { abi::envoy_bytes(*chunk) })
    }

    /// The body in one slice: borrowed when Envoy holds it in one chunk, copied otherwise.
    pub fn body(&self) -> Cow<'a, [u8]> {
        concat_chunks(self.body_chunks())
    }
}

impl fmt::Debug for CalloutResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CalloutResponse")
            .field("outcome", &self.outcome)
            .field("status", &self.status())
            .field("body_len", &self.body_chunks().map(<[u8]>::len).sum::<usize>())
            .finish()
    }
}

/// Parses an HTTP status: exactly three ASCII digits, 100..=999.
pub(crate) fn parse_status(value: &[u8]) -> Option<u16> {
    match value {
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() && *a != b'0' => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// Joins chunks, borrowing when there is at most one non-empty chunk.
pub(crate) fn concat_chunks<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Cow<'a, [u8]> {
    let mut out: Cow<'a, [u8]> = Cow::Borrowed(&[]);
    for chunk in chunks.filter(|chunk| !chunk.is_empty()) {
        if out.is_empty() {
            out = Cow::Borrowed(chunk);
        } else {
            out.to_mut().extend_from_slice(chunk);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_three_digits() {
        assert_eq!(parse_status(b"200"), Some(200));
        assert_eq!(parse_status(b"404"), Some(404));
        assert_eq!(parse_status(b"999"), Some(999));
        assert_eq!(parse_status(b"099"), None);
        assert_eq!(parse_status(b"20"), None);
        assert_eq!(parse_status(b"2000"), None);
        assert_eq!(parse_status(b"2a0"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn chunks_are_borrowed_when_single_and_copied_when_several() {
        let one: [&[u8]; 3] = [b"", b"abc", b""];
        assert!(matches!(concat_chunks(one.into_iter()), Cow::Borrowed(b"abc")));
        let two: [&[u8]; 2] = [b"ab", b"cd"];
        let joined = concat_chunks(two.into_iter());
        assert!(matches!(joined, Cow::Owned(_)));
        assert_eq!(&*joined, b"abcd");
        assert!(concat_chunks(std::iter::empty()).is_empty());
    }

    #[test]
    fn init_results_map_to_errors() {
        assert_eq!(CalloutError::from_raw(0), Ok(()));
        assert_eq!(CalloutError::from_raw(1), Err(CalloutError::MissingRequiredHeaders));
        assert_eq!(CalloutError::from_raw(2), Err(CalloutError::ClusterNotFound));
        assert_eq!(CalloutError::from_raw(3), Err(CalloutError::DuplicateCalloutId));
        assert_eq!(CalloutError::from_raw(4), Err(CalloutError::CannotCreateRequest));
        assert_eq!(CalloutError::from_raw(9), Err(CalloutError::Unknown(9)));
        assert_eq!(CalloutOutcome::from_raw(0), CalloutOutcome::Success);
        assert_eq!(CalloutOutcome::from_raw(1), CalloutOutcome::Reset);
        assert_eq!(CalloutOutcome::from_raw(2), CalloutOutcome::ExceedResponseBufferLimit);
        assert_eq!(CalloutOutcome::from_raw(7), CalloutOutcome::Unknown(7));
    }

    fn header(name: &'static [u8], value: &'static [u8]) -> abi::EnvoyHttpHeader {
        abi::EnvoyHttpHeader {
            key_ptr: name.as_ptr().cast(),
            key_length: name.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }

    #[test]
    fn response_reads_status_headers_and_body() {
        let headers = [
            header(b":status", b"401"),
            header(b"www-authenticate", b"Bearer realm=\"a\""),
            header(b"www-authenticate", b"Basic realm=\"b\""),
        ];
        let body = [
            abi::EnvoyBuffer { ptr: b"he".as_ptr().cast(), length: 2 },
            abi::EnvoyBuffer { ptr: b"llo".as_ptr().cast(), length: 3 },
        ];
        // SAFETY: all pointers point into statics.
        let response = unsafe { CalloutResponse::new(CalloutOutcome::Success, &headers, &body) };
        assert_eq!(response.status(), Some(401));
        assert_eq!(response.header(b"WWW-Authenticate"), Some(&b"Bearer realm=\"a\""[..]));
        let all: Vec<&[u8]> = response.header_values(b"www-authenticate").collect();
        assert_eq!(all, vec![&b"Bearer realm=\"a\""[..], &b"Basic realm=\"b\""[..]]);
        assert_eq!(&*response.body(), b"hello");
        // SAFETY: empty slices.
        let failed = unsafe { CalloutResponse::new(CalloutOutcome::Reset, &[], &[]) };
        assert_eq!(failed.status(), None);
        assert!(failed.body().is_empty());
    }
}
