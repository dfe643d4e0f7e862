//! How the targets turn fuzz bytes into requests. The formats are plain text so that the seed
//! corpus in `fuzz/corpus/` reads as what clients send.

use std::borrow::Cow;

/// Query bytes a padded input gets: just under the 8192 bytes of `:path` the filter forwards, so
/// that small inputs (which libFuzzer mutates fast) reach both sides of that limit.
pub const PADDING: usize = 8180;

/// Appends a `pad=xxx...` parameter of [`PADDING`] bytes to a `:path`'s query.
pub fn pad(path: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}pad={}", "x".repeat(PADDING - 4))
}

/// The `decide` target's input: `<config byte><method>\t<:path>\t<:authority>`.
///
/// The config byte picks a fixed configuration (`'0'`, `'1'`, `'2'`; `'3'`, `'4'`, `'5'` pick
/// them and [`pad`] the path). The filter refuses a
/// request whose method, path or authority is not UTF-8 before deciding; those bytes are
/// decided here as their lossy text (U+FFFD for each bad sequence), so that non-ASCII reaches
/// the decision all the same.
pub struct RequestInput<'a> {
    /// Picks the fixed configuration.
    pub config: u8,
    /// `:method`.
    pub method: Cow<'a, str>,
    /// `:path`.
    pub path: Cow<'a, str>,
    /// `:authority`.
    pub authority: Cow<'a, str>,
}

impl<'a> RequestInput<'a> {
    /// Splits the bytes; `None` when they are empty.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&config, rest) = data.split_first()?;
        let mut fields = rest.splitn(3, |&b| b == b'\t').map(String::from_utf8_lossy);
        let method = fields.next().unwrap_or_default();
        let mut path = fields.next().unwrap_or_default();
        if (config / 3) % 2 == 1 {
            path = Cow::Owned(pad(&path));
        }
        Some(RequestInput { config, method, path, authority: fields.next().unwrap_or_default() })
    }
}

/// The `token_scopes` target's input: `<config byte><form byte>` then one parameter per line.
///
/// The config byte picks a fixed configuration; the form byte (`'0'`, `'1'`, `'2'`) how the
/// registry is selected besides `ns`: the default (`/service/token`), the configuration's alias
/// (`/<alias>/service/token`), or its host (`:authority`); `'3'`, `'4'`, `'5'` do the same and
/// [`pad`] the query. Each line is one query parameter:
///
/// - `S<value>`: `scope=<value>`, as written;
/// - `+<value>`: `scope=<value>` percent-encoded as docker writes it, spaces as `+`;
/// - `%<value>`: the same with spaces as `%20` and every other reserved byte escaped;
/// - `N<value>`: `ns=<value>`, as written;
/// - anything else: the line as written (`service=harbor-registry`, `account=x`, `sc%6Fpe=...`).
pub struct TokenInput {
    /// Picks the fixed configuration.
    pub config: u8,
    /// How the registry is selected: 0 default, 1 alias, 2 host.
    pub form: u8,
    /// Whether to [`pad`] the query.
    pub padded: bool,
    /// The query, parameters `&`-joined.
    pub query: String,
}

impl TokenInput {
    /// Builds the query; `None` for inputs shorter than the two header bytes.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (&config, rest) = data.split_first()?;
        let (&form, rest) = rest.split_first()?;
        let text = String::from_utf8_lossy(rest);
        let params: Vec<String> = text
            .split('\n')
            .map(|line| match line.as_bytes().first() {
                Some(b'S') => format!("scope={}", &line[1..]),
                Some(b'+') => format!("scope={}", percent_encode(&line[1..], true)),
                Some(b'%') => format!("scope={}", percent_encode(&line[1..], false)),
                Some(b'N') => format!("ns={}", &line[1..]),
                _ => line.to_owned(),
            })
            .collect();
        Some(TokenInput { config, form: form % 3, padded: (form / 3) % 2 == 1, query: params.join("&") })
    }
}

/// Percent-encodes a query value as Go's `url.QueryEscape` does (docker's token requests):
/// unreserved bytes stay, a space is `+` (or `%20`), everything else `%XX`.
pub fn percent_encode(value: &str, space_as_plus: bool) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else if b == b' ' && space_as_plus {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `challenge` target's input: `<target byte><WWW-Authenticate value>`; `None` unless the
/// value is UTF-8 (the filter leaves any other value alone).
pub fn challenge_input(data: &[u8]) -> Option<(u8, &str)> {
    let (&target, rest) = data.split_first()?;
    Some((target, std::str::from_utf8(rest).ok()?))
}
