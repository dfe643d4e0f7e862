//! The `ns` query parameter that containerd adds to every mirror request.
//!
//! containerd writes `?ns=<registry host>` with Go's `url.Values.Encode`, so the value may be
//! percent-encoded (`localhost%3A5000`). The filter reads it and forwards every other byte of
//! the query untouched.

use std::borrow::Cow;
use std::fmt;

use crate::ascii;

const NS: &str = "ns";

/// Why the `ns` parameter could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsError {
    /// `ns=` with nothing after it.
    Empty,
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 once decoded.
    BadEncoding,
    /// Several `ns` parameters naming different registries.
    Conflicting,
}

impl fmt::Display for NsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NsError::Empty => "empty ns parameter",
            NsError::BadEncoding => "ns parameter is not valid percent-encoded UTF-8",
            NsError::Conflicting => "ns parameters name different registries",
        })
    }
}

/// The decoded value of the `ns` parameter, if the query has one.
pub fn find_ns(query: &str) -> Result<Option<Cow<'_, str>>, NsError> {
    let mut found: Option<Cow<'_, str>> = None;
    for value in ns_values(query) {
        let value = percent_decode(value).ok_or(NsError::BadEncoding)?;
        if value.is_empty() {
            return Err(NsError::Empty);
        }
        match &found {
            Some(previous) if *previous != value => return Err(NsError::Conflicting),
            Some(_) => {}
            None => found = Some(value),
        }
    }
    Ok(found)
}

/// Appends `query` to `out` without its `ns` parameters, prefixed with `?` unless nothing is
/// left. Every other parameter keeps its bytes and order.
pub fn push_without_ns(out: &mut String, query: &str) {
    let mut separator = '?';
    for pair in ascii::split(query, b'&').filter(|pair| !is_ns(pair)) {
        out.push(separator);
        out.push_str(pair);
        separator = '&';
    }
}

fn ns_values(query: &str) -> impl Iterator<Item = &str> {
    ascii::split(query, b'&').filter(|pair| is_ns(pair)).map(|pair| ascii::split_once(pair, b'=').map_or("", |(_, value)| value))
}

fn is_ns(pair: &str) -> bool {
    key(pair) == NS
}

/// The key of one `key=value` pair of a query (the whole pair if it has no `=`).
pub(crate) fn key(pair: &str) -> &str {
    ascii::split_once(pair, b'=').map_or(pair, |(key, _)| key)
}

/// Decodes a query value (`%XX` escapes, `+` for space); `None` if an escape is malformed or
/// the result is not UTF-8.
pub(crate) fn percent_decode(value: &str) -> Option<Cow<'_, str>> {
    if !value.contains(['%', '+']) {
        return Some(Cow::Borrowed(value));
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    // The bytes between escapes go in whole.
    while let Some(at) = rest.iter().position(|&b| b == b'%' || b == b'+') {
        let (run, escape) = rest.split_at(at);
        bytes.extend_from_slice(run);
        let (&marker, tail) = escape.split_first()?;
        rest = if marker == b'+' {
            bytes.push(b' ');
            tail
        } else {
            let (hex, tail) = tail.split_at_checked(2)?;
            bytes.push(decode_hex_pair(hex)?);
            tail
        };
    }
    bytes.extend_from_slice(rest);
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// The byte two hex digits stand for (`%XX`); `None` unless both are hex digits (a sign, as
/// `from_str_radix` would take, is not: Go rejects `%+A`).
pub(crate) fn decode_hex_pair(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    let (high, low) = (digit(*pair.first()?)?, digit(*pair.get(1)?)?);
    u8::try_from(high * 16 + low).ok()
}

/// The first parameter name of `query` that is percent-encoded. Go decodes names too, so
/// `sc%6Fpe=` is a `scope` to Harbor, and the filter would not have seen it as one.
pub fn encoded_key(query: &str) -> Option<&str> {
    ascii::split(query, b'&').map(key).find(|key| ascii::contains(key, b'%'))
}

/// Appends `value` percent-encoded for a query: unreserved characters and `:`, `/`, `,` stay
/// as they are (Harbor and distribution read them either way); everything else is `%XX`.
pub(crate) fn push_encoded(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Runs of bytes that stay as they are go in whole (a scope is mostly one run). A run is
    // ASCII, so both its ends are char boundaries.
    let mut run_start = 0;
    for (i, b) in value.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b',') {
            continue;
        }
        out.push_str(value.get(run_start..i).unwrap_or_default());
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
        run_start = i + 1;
    }
    out.push_str(value.get(run_start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn without_ns(query: &str) -> String {
        let mut out = String::new();
        push_without_ns(&mut out, query);
        out
    }

    #[test]
    fn removes_only_ns() {
        for (query, expected) in [
            ("ns=docker.io", ""),
            ("", "?"),
            ("n=1&ns=quay.io&nsx=2&digest=sha256%3Aab", "?n=1&nsx=2&digest=sha256%3Aab"),
            ("ns=a&ns=a", ""),
            ("a=1&&b", "?a=1&&b"),
        ] {
            assert_eq!(without_ns(query), expected, "query {query:?}");
        }
    }

    #[test]
    fn decodes_ns() {
        assert_eq!(find_ns("ns=localhost%3A5000"), Ok(Some("localhost:5000".into())));
        assert_eq!(find_ns("a=b"), Ok(None));
        assert_eq!(find_ns("ns="), Err(NsError::Empty));
        assert_eq!(find_ns("ns=%zz"), Err(NsError::BadEncoding));
        assert_eq!(find_ns("ns=%ff"), Err(NsError::BadEncoding));
        assert_eq!(find_ns("ns=a&ns=b"), Err(NsError::Conflicting));
        // A sign is not a hex digit, though from_str_radix takes one.
        assert_eq!(find_ns("ns=%+A"), Err(NsError::BadEncoding));
        assert_eq!(find_ns("ns=a%2"), Err(NsError::BadEncoding));
    }

    #[test]
    fn decodes_and_encodes_values() {
        // (value as sent, decoded, encoded again as the filter writes it)
        let rows: [(&str, Option<&str>, &str); 8] = [
            ("repository:library/alpine:pull", Some("repository:library/alpine:pull"), "repository:library/alpine:pull"),
            ("repository%3Alibrary%2Falpine%3Apull", Some("repository:library/alpine:pull"), "repository:library/alpine:pull"),
            ("a+b%20c", Some("a b c"), "a%20b%20c"),
            ("%C3%A9t%C3%A9", Some("été"), "%C3%A9t%C3%A9"),
            ("%", None, ""),
            ("ab%2", None, ""),
            ("%ff", None, ""),
            ("", Some(""), ""),
        ];
        for (value, decoded, encoded) in rows {
            let got = percent_decode(value);
            assert_eq!(got.as_deref(), decoded, "decode {value:?}");
            if let Some(decoded) = got {
                let mut out = String::new();
                push_encoded(&mut out, &decoded);
                assert_eq!(out, encoded, "encode {decoded:?}");
            }
        }
    }

    #[test]
    fn finds_encoded_parameter_names() {
        assert_eq!(encoded_key("service=harbor-registry&scope=repository%3Aa%3Apull"), None);
        assert_eq!(encoded_key("service=x&sc%6Fpe=repository:a:pull"), Some("sc%6Fpe"));
        assert_eq!(encoded_key("%73cope"), Some("%73cope"));
    }
}
