//! Small readers of request text, written independently of the crate's own: how a query splits
//! into pairs, how Go's `url.ParseQuery` (Harbor) decodes them, and what a clean path looks like.

/// The path part and the query of a `:path` (split at the first `?`).
pub fn split_query(path: &str) -> (&str, Option<&str>) {
    match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    }
}

/// The raw key of one `key=value` pair (the whole pair when it has no `=`).
pub fn key(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(key, _)| key)
}

/// The raw value of one pair (`""` when it has no `=`).
pub fn value(pair: &str) -> &str {
    pair.split_once('=').map_or("", |(_, value)| value)
}

/// Decodes a query component as Go's `url.QueryUnescape` does (`+` is a space, `%XX` a byte),
/// as bytes; `None` for a malformed escape.
pub fn query_unescape(component: &str) -> Option<Vec<u8>> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let high = bytes.get(i + 1).and_then(|&h| char::from(h).to_digit(16))?;
                let low = bytes.get(i + 2).and_then(|&l| char::from(l).to_digit(16))?;
                out.push(u8::try_from(high * 16 + low).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// [`query_unescape`] to UTF-8 text, the way the filter reads `ns` and `scope` values: `None`
/// if an escape is malformed or the bytes are not UTF-8.
pub fn decode_utf8(component: &str) -> Option<String> {
    String::from_utf8(query_unescape(component)?).ok()
}

/// The parameters of a query as Harbor's Go code reads them (`url.ParseQuery`): pairs split on
/// `&`, pairs holding `;` or empty skipped, key and value unescaped, a pair with a bad escape
/// skipped. Keys and values as bytes (Go strings need not be UTF-8).
pub fn go_parse_query(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((query_unescape(key)?, query_unescape(value)?))
        })
        .collect()
}

/// The query suffix a forwarded repository request must have: the client's query less its `ns`
/// pairs, every other pair byte for byte and in order, `&`-joined after a `?` (nothing when no
/// pair is left; a bare `?` stays one, an empty pair being kept).
pub fn query_without_ns(query: Option<&str>) -> String {
    let Some(query) = query else {
        return String::new();
    };
    let kept: Vec<&str> = query.split('&').filter(|pair| key(pair) != "ns").collect();
    if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) }
}

/// An `ns` the filter must refuse: empty, malformed, not UTF-8, or conflicting.
#[derive(Debug, PartialEq, Eq)]
pub struct BadNs;

/// The `ns` value a query names, decoded as the filter decodes it: `Ok(None)` without an `ns`
/// pair.
pub fn ns_of(query: Option<&str>) -> Result<Option<String>, BadNs> {
    let mut found: Option<String> = None;
    for pair in query.unwrap_or("").split('&').filter(|pair| key(pair) == "ns") {
        let value = decode_utf8(value(pair)).ok_or(BadNs)?;
        if value.is_empty() || found.as_ref().is_some_and(|seen| *seen != value) {
            return Err(BadNs);
        }
        found = Some(value);
    }
    Ok(found)
}

/// Whether a query has any `ns` pair.
pub fn has_ns(query: Option<&str>) -> bool {
    query.is_some_and(|query| query.split('&').any(|pair| key(pair) == "ns"))
}

/// The host of an `:authority`: without its port, an IPv6 literal without brackets.
pub fn host_of(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split_once(']').map_or(authority, |(host, _)| host);
    }
    authority.split_once(':').map_or(authority, |(host, _)| host)
}

/// Whether `text` is an HTTP token (RFC 9110 `tchar`s), as Envoy's codecs require of a method.
pub fn is_http_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Why the path part of a forwarded `:path` could be routed differently by Harbor (Go's URL
/// decoding and path cleaning) than by the filter; `None` when it is clean: absolute, no `.` or
/// `..` segment, no `//`, no raw CR, LF or NUL, and no escaped separator, dot or NUL.
pub fn path_problem(path: &str) -> Option<String> {
    let Some(after_root) = path.strip_prefix('/') else {
        return Some("does not start with /".to_owned());
    };
    let segments: Vec<&str> = after_root.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if matches!(*segment, "." | "..") {
            return Some(format!("has the dot segment {segment:?}"));
        }
        if segment.is_empty() && i + 1 < segments.len() {
            return Some("has an empty segment (//)".to_owned());
        }
    }
    if let Some(b) = path.bytes().find(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        return Some(format!("holds the raw byte 0x{b:02x}"));
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let escape = bytes.get(i + 1..i + 3).map(|hex| hex.to_ascii_lowercase());
        if let Some(hex @ (b"2f" | b"5c" | b"2e" | b"00")) = escape.as_deref() {
            return Some(format!("holds the escape %{}", String::from_utf8_lossy(hex)));
        }
    }
    None
}

/// Whether every byte of a registry API path part is of the registry grammar (names, tags,
/// digests, upload ids): `[A-Za-z0-9._:+=-]` and `/`.
pub fn is_api_grammar(path: &str) -> bool {
    path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-:+=".contains(&b))
}

/// Whether `text` has a byte that ends or breaks a line (or a header value): CR, LF or NUL.
pub fn has_line_break(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_reads_encoded_keys() {
        assert_eq!(go_parse_query("sc%6Fpe=a+b&x;y=1&&k"), vec![(b"scope".to_vec(), b"a b".to_vec()), (b"k".to_vec(), vec![])]);
        assert_eq!(go_parse_query("a=%zz&b=%41"), vec![(b"b".to_vec(), b"A".to_vec())]);
    }

    #[test]
    fn ns_is_dropped_and_everything_else_kept() {
        assert_eq!(query_without_ns(None), "");
        assert_eq!(query_without_ns(Some("")), "?");
        assert_eq!(query_without_ns(Some("ns=a")), "");
        assert_eq!(query_without_ns(Some("n=1&ns=a&&nsx=2")), "?n=1&&nsx=2");
        assert_eq!(ns_of(Some("ns=a%3A1&ns=a:1")), Ok(Some("a:1".to_owned())));
        assert_eq!(ns_of(Some("ns=a&ns=b")), Err(BadNs));
        assert_eq!(ns_of(Some("ns=")), Err(BadNs));
    }

    #[test]
    fn unclean_paths_are_named() {
        assert_eq!(path_problem("/v2/"), None);
        assert_eq!(path_problem("/v2/a/blobs/uploads/"), None);
        assert!(path_problem("/v2/../x").is_some());
        assert!(path_problem("/v2//x").is_some());
        assert!(path_problem("/v2/a%2Fb").is_some());
        assert!(path_problem("/v2/%2e").is_some());
        assert!(path_problem("/v2/a\rb").is_some());
        assert!(path_problem("v2/").is_some());
        assert_eq!(path_problem("/a%252Fb"), None);
    }
}
