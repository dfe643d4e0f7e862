//! What a request path must look like before anything routes on it.
//!
//! The filter decides on the path as Envoy hands it over; Harbor routes on the path as Go
//! decodes and cleans it. Wherever the two could read one path differently, the request is
//! refused rather than guessed: `/v2/../api/...`, `//v2/...`, `/%76%32/secret/...` would reach
//! Harbor's registry API or another project without being mapped. Browsers and registry clients
//! never send such paths (they resolve dot segments and encode only what must be encoded), so
//! refusing them costs no legitimate request. One pass over the bytes; nothing allocated.

use std::fmt;

use crate::ascii;
use crate::query::decode_hex_pair;

/// The longest registry API or token `:path` (query included) the filter forwards.
pub const MAX_API_PATH_LEN: usize = 8192;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// It does not start with `/`.
    NotAbsolute,
    /// A `.` or `..` segment (escaped dots are an [`PathProblem::Escape`]).
    DotSegment,
    /// `//`: an empty segment before the last.
    EmptySegment,
    /// A percent-escape of an unreserved character, a separator (`/`, `\`) or a control byte,
    /// or a malformed escape; the decoded byte, `None` when malformed.
    Escape(Option<u8>),
    /// A byte no request path holds raw: controls, space, `\`, non-ASCII.
    Byte(u8),
    /// A registry API path holds a byte outside the registry grammar (names, tags, digests and
    /// upload ids are `[A-Za-z0-9._:+=-]` and `/`).
    ApiByte(u8),
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathProblem::NotAbsolute => f.write_str("the path does not start with /"),
            PathProblem::DotSegment => f.write_str("the path has a dot segment (. or ..)"),
            PathProblem::EmptySegment => f.write_str("the path has an empty segment (//)"),
            PathProblem::Escape(Some(byte)) => write!(f, "the path percent-encodes {}", ByteName(*byte)),
            PathProblem::Escape(None) => f.write_str("the path has a malformed percent-escape"),
            PathProblem::Byte(byte) => write!(f, "the path holds {}", ByteName(*byte)),
            PathProblem::ApiByte(byte) => write!(f, "a registry API path holds {}, outside the registry grammar", ByteName(*byte)),
        }
    }
}

/// A byte as a message shows it: printable ASCII quoted, anything else in hex.
struct ByteName(u8);

impl fmt::Display for ByteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b @ 0x21..=0x7e => write!(f, "{:?}", char::from(b)),
            b => write!(f, "byte 0x{b:02x}"),
        }
    }
}

/// Checks the path part of any request (no query): absolute, no dot or empty segments, no raw
/// controls, spaces, backslashes or non-ASCII, and no escapes that Harbor would decode into a
/// different route.
pub fn check(path: &str) -> Result<(), PathProblem> {
    let Some(after_root) = path.strip_prefix('/') else {
        return Err(PathProblem::NotAbsolute);
    };
    let mut segments = ascii::split(after_root, b'/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Err(PathProblem::EmptySegment);
        }
        check_segment(segment)?;
    }
    Ok(())
}

/// Checks the path part of a registry API or token request, after [`check`]: only the bytes of
/// the registry grammar.
pub fn check_api(path: &str) -> Result<(), PathProblem> {
    match path.bytes().find(|&b| !is_api_byte(b)) {
        Some(byte) => Err(PathProblem::ApiByte(byte)),
        None => Ok(()),
    }
}

fn is_api_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b':' | b'+' | b'=')
}

fn check_segment(segment: &str) -> Result<(), PathProblem> {
    // Escaped dots are refused as escapes below, so only literal dot segments are left.
    if matches!(segment, "." | "..") {
        return Err(PathProblem::DotSegment);
    }
    let bytes = segment.as_bytes();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let decoded = bytes.get(i + 1..i + 3).and_then(decode_hex_pair).ok_or(PathProblem::Escape(None))?;
                if must_not_be_escaped(decoded) {
                    return Err(PathProblem::Escape(Some(decoded)));
                }
                i += 3;
            }
            byte if byte <= b' ' || byte >= 0x7f || byte == b'\\' => return Err(PathProblem::Byte(byte)),
            _ => i += 1,
        }
    }
    Ok(())
}

/// Unreserved characters (RFC 3986: never to be escaped, and decoded by every normaliser), the
/// separators, and controls.
fn must_not_be_escaped(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\') || byte < 0x20 || byte == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn paths_harbor_could_route_differently_are_refused() {
        use PathProblem::*;
        for (path, expected) in [
            ("/", Ok(())),
            ("/v2/", Ok(())),
            ("/v2", Ok(())),
            ("/v2/library/alpine/manifests/3.19", Ok(())),
            ("/v2/a/blobs/uploads/", Ok(())),
            ("/api/v2.0/projects/p/repositories/a%252Fb", Ok(())),
            ("/c/login%3Fx", Ok(())),
            ("/v2/a/manifests/...", Ok(())),
            ("/v2/.well-known", Ok(())),
            ("v2/", Err(NotAbsolute)),
            ("", Err(NotAbsolute)),
            ("http://h/v2/", Err(NotAbsolute)),
            ("/v2/../api/v2.0/users", Err(DotSegment)),
            ("/v2/library/alpine/manifests/..", Err(DotSegment)),
            ("/v2/./a/manifests/1", Err(DotSegment)),
            ("/..", Err(DotSegment)),
            ("/v2/%2e%2e/api", Err(Escape(Some(b'.')))),
            ("/v2/%2E./api", Err(Escape(Some(b'.')))),
            ("//v2/library/a/manifests/1", Err(EmptySegment)),
            ("/v2//library/a/manifests/1", Err(EmptySegment)),
            ("/v2/library%2fa/manifests/1", Err(Escape(Some(b'/')))),
            ("/v2/library%5Ca/manifests/1", Err(Escape(Some(b'\\')))),
            ("/%76%32/secret/app/manifests/1", Err(Escape(Some(b'v')))),
            ("/v2/a%00/manifests/1", Err(Escape(Some(0)))),
            ("/v2/a%0d%0a/manifests/1", Err(Escape(Some(b'\r')))),
            ("/v2/a%zz", Err(Escape(None))),
            ("/v2/a%2", Err(Escape(None))),
            ("/v2/a\\..\\b", Err(Byte(b'\\'))),
            ("/v2/a b", Err(Byte(b' '))),
            ("/v2/a\tb", Err(Byte(b'\t'))),
            ("/v2/a\r\nb", Err(Byte(b'\r'))),
            ("/v2/é", Err(Byte(0xc3))),
        ] {
            assert_eq!(check(path), expected, "{path:?}");
        }
    }

    #[test]
    fn registry_api_paths_hold_only_the_registry_grammar() {
        for (path, expected) in [
            ("/v2/library/alpine/manifests/v1.2_3-rc", Ok(())),
            ("/v2/a/blobs/sha256:0123abcdef", Ok(())),
            ("/v2/a/blobs/sha256+b64u:AZaz09-_=", Ok(())),
            ("/v2/a/manifests/%41", Err(PathProblem::ApiByte(b'%'))),
            ("/v2/a/manifests/x@y", Err(PathProblem::ApiByte(b'@'))),
            ("/v2/a/manifests/x~y", Err(PathProblem::ApiByte(b'~'))),
            ("/v2/a;b/manifests/1", Err(PathProblem::ApiByte(b';'))),
        ] {
            assert_eq!(check_api(path), expected, "{path:?}");
        }
    }

    #[test]
    fn problems_read_as_lower_case_causes() {
        assert_eq!(PathProblem::Escape(Some(b'/')).to_string(), "the path percent-encodes '/'");
        assert_eq!(PathProblem::Byte(0).to_string(), "the path holds byte 0x00");
        assert_eq!(PathProblem::ApiByte(b'%').to_string(), "a registry API path holds '%', outside the registry grammar");
    }
}
