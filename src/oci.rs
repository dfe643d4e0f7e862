//! The registry API grammar: request paths under `/v2/`, repository names, and OCI error bodies.
//!
//! Everything here is hand-written string splitting: it runs on every request, so it stays off
//! regexes and allocates nothing.

use crate::ascii;

/// The longest repository name a registry accepts (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

/// What the part of a path after `/v2/` addresses.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/v2/`: the API version check ("ping").
    Ping,
    /// A repository endpoint: `name` is the repository, `rest` the endpoint after it, starting
    /// with `/` (`/manifests/latest`, `/blobs/uploads/`, `/tags/list`, `/referrers/<digest>`).
    Repository {
        /// The repository name.
        name: &'a str,
        /// The endpoint after it.
        rest: &'a str,
    },
    /// Anything else under `/v2/` (`_catalog`, unknown shapes): not about one repository.
    Other,
}

/// Splits the path after `/v2/` (without query) into repository name and endpoint.
///
/// Names may contain `/` and even components called `manifests` or `blobs`, so the endpoint is
/// recognised from the right, as distribution's router does: `<kind>/<reference>` for
/// manifests, blobs, tags and referrers, or `blobs/uploads/[<id>]`.
pub fn parse_endpoint(after_v2: &str) -> Endpoint<'_> {
    if after_v2.is_empty() {
        return Endpoint::Ping;
    }
    match split_repository(after_v2) {
        Some((name, rest)) => Endpoint::Repository { name, rest },
        None => Endpoint::Other,
    }
}

fn split_repository(p: &str) -> Option<(&str, &str)> {
    const UPLOADS: &str = "/blobs/uploads";
    let (head, reference) = ascii::rsplit_once(p, b'/')?;
    let (name, kind) = ascii::rsplit_once(head, b'/').unwrap_or(("", head));
    let is_kind = matches!(kind, "manifests" | "blobs" | "tags" | "referrers");
    if is_kind && !name.is_empty() && !reference.is_empty() {
        return Some((name, &p[name.len()..]));
    }
    let name = head.strip_suffix(UPLOADS)?;
    (!name.is_empty()).then(|| (name, &p[name.len()..]))
}

/// Why the endpoint after a repository name is not one a registry serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointProblem {
    /// A manifest reference that is neither a tag nor a digest.
    Tag,
    /// A blob or referrers reference, or a manifest reference with a `:`, that is not a digest.
    Digest,
    /// `tags/<anything but list>`.
    Endpoint,
}

impl EndpointProblem {
    /// The OCI error code of the refusal.
    pub fn code(self) -> ErrorCode {
        match self {
            EndpointProblem::Tag => ErrorCode::TagInvalid,
            EndpointProblem::Digest => ErrorCode::DigestInvalid,
            EndpointProblem::Endpoint => ErrorCode::Unsupported,
        }
    }
}

impl std::fmt::Display for EndpointProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndpointProblem::Tag => "the tag does not match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
            EndpointProblem::Digest => "the digest does not match <algorithm>:<encoded>",
            EndpointProblem::Endpoint => "not a registry API endpoint",
        })
    }
}

/// Checks the endpoint of a repository request (the `rest` of [`Endpoint::Repository`]):
/// manifests by tag or digest, blobs and referrers by digest, `tags/list`, and uploads (whose
/// ids are opaque, and checked only as path bytes).
pub fn check_endpoint(rest: &str) -> Result<(), EndpointProblem> {
    if rest.starts_with("/blobs/uploads/") {
        return Ok(());
    }
    let Some((kind, reference)) = rest.strip_prefix('/').and_then(|rest| ascii::split_once(rest, b'/')) else {
        return Err(EndpointProblem::Endpoint);
    };
    match kind {
        "manifests" if !ascii::contains(reference, b':') => is_tag(reference).then_some(()).ok_or(EndpointProblem::Tag),
        "manifests" | "blobs" | "referrers" => is_digest(reference).then_some(()).ok_or(EndpointProblem::Digest),
        "tags" if reference == "list" => Ok(()),
        _ => Err(EndpointProblem::Endpoint),
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    bytes.len() <= 128 && bytes.first().is_some_and(word) && bytes.iter().all(|b| word(b) || matches!(b, b'.' | b'-'))
}

/// `<algorithm>:<encoded>`: `[a-z0-9]+([+._-][a-z0-9]+)*` and `[a-zA-Z0-9=_-]+`.
fn is_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = ascii::split_once(digest, b':') else {
        return false;
    };
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| !part.is_empty() && part.as_bytes().iter().all(alnum));
    let encoded_ok = !encoded.is_empty() && encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'));
    algorithm_ok && encoded_ok
}

/// Whether `name` is a repository name by the OCI distribution grammar, within
/// [`MAX_NAME_LEN`]: `/`-separated components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && ascii::split(name, b'/').all(is_valid_component)
}

/// Whether `component` is one path component of a repository name (also the grammar of a
/// Harbor project name).
pub fn is_valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !(bytes.first().is_some_and(alnum) && bytes.last().is_some_and(alnum)) {
        return false;
    }
    // First and last bytes are alphanumeric, so every separator run sits between two of them.
    bytes.split(alnum).all(|separator| {
        matches!(separator, b"" | b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-')
    })
}

/// The first component of a repository name and whether more components follow.
pub fn first_component(name: &str) -> (&str, bool) {
    match ascii::split_once(name, b'/') {
        Some((first, _)) => (first, true),
        None => (name, false),
    }
}

/// The OCI distribution error codes the filter answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the repository name is not valid.
    NameInvalid,
    /// 404: the repository (here: the upstream registry) is not known.
    NameUnknown,
    /// 403: access to the repository is denied.
    Denied,
    /// 400: a manifest tag is not valid.
    TagInvalid,
    /// 400: a digest is not valid.
    DigestInvalid,
    /// 405 or 400: the operation is not supported.
    Unsupported,
    /// 503: the registry (here: Harbor's token service) cannot serve the request now.
    Unavailable,
    /// 404: nothing is served at this path (Harbor's own code for it; the OCI spec has none).
    NotFound,
    /// 401: the request's credentials are missing or not enough.
    Unauthorized,
    /// Any other failure (Harbor's own code for its 5xx answers).
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in the error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }
}

/// Whether `path` (query allowed) is under the registry API: `/v2` or `/v2/...`.
pub fn is_registry_path(path: &str) -> bool {
    let path = ascii::split_once(path, b'?').map_or(path, |(path, _)| path);
    path == "/v2" || path.starts_with("/v2/")
}

/// The repository a `/v2/...` path (query allowed) is about, if it is a repository endpoint.
pub fn repository_in(path: &str) -> Option<&str> {
    let path = ascii::split_once(path, b'?').map_or(path, |(path, _)| path);
    match parse_endpoint(path.strip_prefix("/v2/")?) {
        Endpoint::Repository { name, .. } => Some(name),
        Endpoint::Ping | Endpoint::Other => None,
    }
}

/// An OCI error body: `{"errors":[{"code":"...","message":"..."}]}`.
pub fn error_body(code: ErrorCode, message: &str) -> String {
    let mut body = String::with_capacity(message.len() + 48);
    body.push_str("{\"errors\":[{\"code\":\"");
    body.push_str(code.as_str());
    body.push_str("\",\"message\":\"");
    push_json_escaped(&mut body, message);
    body.push_str("\"}]}");
    body
}

/// Appends `text` escaped for a JSON string, byte for byte as serde_json writes it (by hand, so
/// that the filter carries no JSON serializer): `"`, `\` and control characters only.
pub(crate) fn push_json_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\0'..='\u{1f}' => {
                let byte = c as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn endpoints_are_recognised_from_the_right() {
        let repository = |name, rest| Endpoint::Repository { name, rest };
        for (after_v2, expected) in [
            ("", Endpoint::Ping),
            ("_catalog", Endpoint::Other),
            ("library/alpine/manifests/3.19", repository("library/alpine", "/manifests/3.19")),
            ("a/blobs/sha256:ab", repository("a", "/blobs/sha256:ab")),
            ("a/b/tags/list", repository("a/b", "/tags/list")),
            ("a/b/referrers/sha256:ab", repository("a/b", "/referrers/sha256:ab")),
            ("a/blobs/uploads/", repository("a", "/blobs/uploads/")),
            ("a/blobs/uploads/some-id", repository("a", "/blobs/uploads/some-id")),
            ("a/manifests/manifests/latest", repository("a/manifests", "/manifests/latest")),
            ("x/blobs/blobs/uploads/id", repository("x/blobs", "/blobs/uploads/id")),
            ("manifests/latest", Endpoint::Other),
            ("a/manifests/", Endpoint::Other),
            ("a/b/c", Endpoint::Other),
        ] {
            assert_eq!(parse_endpoint(after_v2), expected, "{after_v2:?}");
        }
    }

    #[test]
    fn endpoints_take_tags_digests_and_upload_ids() {
        use EndpointProblem::*;
        let long_tag = format!("/manifests/{}", "t".repeat(129));
        for (rest, expected) in [
            ("/manifests/latest", Ok(())),
            ("/manifests/_v1.2-rc.3", Ok(())),
            ("/manifests/sha256:0123abcd", Ok(())),
            ("/blobs/sha256:0123abcd", Ok(())),
            ("/blobs/sha256+b64u:AZaz09=_-", Ok(())),
            ("/referrers/sha512:ab", Ok(())),
            ("/tags/list", Ok(())),
            ("/blobs/uploads/", Ok(())),
            ("/blobs/uploads/7e5e-a2b1", Ok(())),
            ("/manifests/.hidden", Err(Tag)),
            ("/manifests/-x", Err(Tag)),
            (long_tag.as_str(), Err(Tag)),
            ("/manifests/sha256:", Err(Digest)),
            ("/manifests/SHA256:ab", Err(Digest)),
            ("/blobs/latest", Err(Digest)),
            ("/blobs/sha256:a.b", Err(Digest)),
            ("/blobs/sha256--x:ab", Err(Digest)),
            ("/referrers/:ab", Err(Digest)),
            ("/tags/all", Err(Endpoint)),
            ("/other/x", Err(Endpoint)),
            ("", Err(Endpoint)),
        ] {
            assert_eq!(check_endpoint(rest), expected, "{rest:?}");
        }
        assert_eq!(check_endpoint(&format!("/manifests/{}", "t".repeat(128))), Ok(()));
    }

    #[test]
    fn names_follow_the_oci_grammar() {
        for (name, valid) in [
            ("library/alpine", true),
            ("a", true),
            ("a-b--c/d.e/f_g/h__i", true),
            ("0", true),
            ("", false),
            ("A", false),
            ("a/", false),
            ("/a", false),
            ("a//b", false),
            ("a..b", false),
            ("a___b", false),
            ("a._b", false),
            ("-a", false),
            ("a-", false),
            ("a%2fb", false),
            ("a b", false),
        ] {
            assert_eq!(is_valid_name(name), valid, "{name:?}");
        }
        assert!(is_valid_name(&"a".repeat(MAX_NAME_LEN)));
        assert!(!is_valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn error_body_escapes_the_message() {
        assert_eq!(
            error_body(ErrorCode::Denied, r#"name "a" denied"#),
            r#"{"errors":[{"code":"DENIED","message":"name \"a\" denied"}]}"#
        );
        let message = "q\"b\\s/\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f} \u{7f}é\u{2028}😀";
        let expected = serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": message}]}).to_string();
        assert_eq!(error_body(ErrorCode::Unsupported, message), expected);
    }
}
