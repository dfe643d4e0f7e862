//! `WWW-Authenticate` challenges: parsing (RFC 9110 section 11.6.1) and the one edit the filter
//! makes to them, pointing Harbor's token realm back at this proxy.
//!
//! Harbor writes its realm from its configured external URL, so without the edit a client's
//! token request would go straight to Harbor and never have its scopes rewritten. The edit
//! splices new text into the header and keeps every other byte, Harbor's `scope` included.
//! A header that does not parse is left alone.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use crate::harbor::{HARBOR_SERVICE, TOKEN_PATH};

/// One challenge of a `WWW-Authenticate` value.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge<'h> {
    /// The auth scheme as written (`Bearer`, `Basic`); compare case-insensitively.
    pub scheme: &'h str,
    /// `name=value` parameters in order, values unquoted.
    pub params: Vec<Param<'h>>,
    /// A token68 credential instead of parameters (`Negotiate abc==`).
    pub token68: Option<&'h str>,
    /// Where the whole challenge sits in the header.
    pub span: Range<usize>,
}

/// One auth parameter.
#[derive(Debug, PartialEq, Eq)]
pub struct Param<'h> {
    /// The parameter name as written; compare case-insensitively.
    pub name: &'h str,
    /// The value, with quoted-string escapes removed.
    pub value: Cow<'h, str>,
    /// Where the value, quotes included, sits in the header.
    pub value_span: Range<usize>,
}

impl Challenge<'_> {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|p| p.name.eq_ignore_ascii_case(name)).map(|p| p.value.as_ref())
    }

    fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }
}

/// Why a header did not parse, with the byte offset where it went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the header.
    pub at: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.at)
    }
}

/// Parses a `WWW-Authenticate` value into its challenges.
pub fn parse(header: &str) -> Result<Vec<Challenge<'_>>, ParseError> {
    let mut cursor = Cursor { text: header, at: 0 };
    let mut challenges = Vec::new();
    loop {
        cursor.skip_list_separators();
        if cursor.at_end() {
            return Ok(challenges);
        }
        challenges.push(cursor.challenge()?);
    }
}

struct Cursor<'h> {
    text: &'h str,
    at: usize,
}

impl<'h> Cursor<'h> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn at_end(&self) -> bool {
        self.at >= self.text.len()
    }

    fn error(&self, expected: &'static str) -> ParseError {
        ParseError { at: self.at, expected }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn skip_list_separators(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.at += 1;
        }
    }

    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> &'h str {
        let start = self.at;
        while self.peek().is_some_and(&accept) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    fn challenge(&mut self) -> Result<Challenge<'h>, ParseError> {
        let start = self.at;
        let scheme = self.take_while(is_tchar);
        if scheme.is_empty() {
            return Err(self.error("an auth scheme"));
        }
        let mut challenge = Challenge { scheme, params: Vec::new(), token68: None, span: start..self.at };
        match self.peek() {
            None | Some(b',') => return Ok(challenge),
            Some(b' ' | b'\t') => self.skip_spaces(),
            Some(_) => return Err(self.error("a space after the auth scheme")),
        }
        if self.at_end() || self.peek() == Some(b',') {
            return Ok(challenge);
        }
        if !self.param_follows() {
            let token68 = self.take_while(is_token68_char);
            let padded_end = self.take_while(|b| b == b'=').len();
            if token68.is_empty() {
                return Err(self.error("parameters or a token68"));
            }
            let end = self.at;
            challenge.token68 = Some(&self.text[end - token68.len() - padded_end..end]);
            challenge.span.end = end;
            self.skip_spaces();
            return match self.peek() {
                None | Some(b',') => Ok(challenge),
                Some(_) => Err(self.error("the end of the challenge after its token68")),
            };
        }
        loop {
            challenge.params.push(self.param()?);
            challenge.span.end = self.at;
            self.skip_spaces();
            match self.peek() {
                None => return Ok(challenge),
                Some(b',') => {
                    self.skip_list_separators();
                    // A comma separates parameters and challenges alike: another parameter
                    // follows only if a `name=` does.
                    if self.at_end() || !self.param_follows() {
                        return Ok(challenge);
                    }
                }
                Some(_) => return Err(self.error("',' between parameters")),
            }
        }
    }

    /// Whether `token BWS "="` follows (and not `token68=` padding at the end of a value).
    fn param_follows(&self) -> bool {
        let mut probe = Cursor { text: self.text, at: self.at };
        if probe.take_while(is_tchar).is_empty() {
            return false;
        }
        probe.skip_spaces();
        if probe.peek() != Some(b'=') {
            return false;
        }
        probe.at += 1;
        probe.skip_spaces();
        // `abc==`, `abc=` then end or comma: token68 padding, not a parameter.
        !matches!(probe.peek(), None | Some(b'=' | b','))
    }

    fn param(&mut self) -> Result<Param<'h>, ParseError> {
        let name = self.take_while(is_tchar);
        self.skip_spaces();
        if self.peek() != Some(b'=') {
            return Err(self.error("'=' after a parameter name"));
        }
        self.at += 1;
        self.skip_spaces();
        let start = self.at;
        let value = if self.peek() == Some(b'"') { self.quoted_string()? } else { Cow::Borrowed(self.take_while(is_tchar)) };
        if self.at == start {
            return Err(self.error("a parameter value"));
        }
        Ok(Param { name, value, value_span: start..self.at })
    }

    fn quoted_string(&mut self) -> Result<Cow<'h, str>, ParseError> {
        self.at += 1;
        let start = self.at;
        let mut unescaped: Option<String> = None;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    let raw = &self.text[start..self.at];
                    self.at += 1;
                    return Ok(unescaped.map_or(Cow::Borrowed(raw), Cow::Owned));
                }
                b'\\' => {
                    let copy = unescaped.get_or_insert_with(|| self.text[start..self.at].to_owned());
                    let escaped = self.text[self.at + 1..].chars().next().ok_or_else(|| self.error("a character after '\\'"))?;
                    copy.push(escaped);
                    self.at += 1 + escaped.len_utf8();
                }
                _ => {
                    let c = self.text[self.at..].chars().next().ok_or_else(|| self.error("a closing '\"'"))?;
                    if let Some(copy) = &mut unescaped {
                        copy.push(c);
                    }
                    self.at += c.len_utf8();
                }
            }
        }
        Err(self.error("a closing '\"'"))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

/// The scheme the client used, for the realm: the first `X-Forwarded-Proto` value when it is
/// `http` or `https` (a TLS proxy in front of this one, such as an ingress in front of a
/// sidecar, sets it), else the request's `:scheme`. Only ever `http` or `https`.
pub fn client_scheme(scheme: &[u8], forwarded_proto: &[u8]) -> &'static str {
    let first = forwarded_proto.split(|&b| b == b',').next().unwrap_or_default().trim_ascii();
    for candidate in [first, scheme] {
        if candidate.eq_ignore_ascii_case(b"https") {
            return "https";
        }
        if candidate.eq_ignore_ascii_case(b"http") {
            return "http";
        }
    }
    "http"
}

/// Where this proxy serves token requests for one client request.
#[derive(Debug, Clone, Copy)]
pub struct RealmTarget<'a> {
    /// The scheme the client used (`http`, `https`).
    pub scheme: &'a str,
    /// The client's `:authority`: token requests come back to it.
    pub authority: &'a str,
    /// The registry key to carry as `ns`, when the request was routed to one.
    pub ns: Option<&'a str>,
    /// For a `Basic realm="harbor"` challenge on a rewritten request: the scope to put in the
    /// Bearer challenge that replaces it (`repository:<harbor name>:pull`).
    pub bearer_scope: Option<&'a str>,
}

/// Rewrites one `WWW-Authenticate` value for `target`: every Bearer realm points at this proxy's
/// token path with `ns` set, and, when `target.bearer_scope` is set, a `Basic realm="harbor"`
/// challenge becomes a Bearer challenge. `None` when nothing changes or the value does not parse.
pub fn rewrite(header: &str, target: &RealmTarget<'_>) -> Option<String> {
    let challenges = parse(header).ok()?;
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for challenge in &challenges {
        if challenge.is("Bearer") {
            // Every realm: clients differ in which of repeated parameters they read.
            for realm in challenge.params.iter().filter(|p| p.name.eq_ignore_ascii_case("realm")) {
                edits.push((realm.value_span.clone(), quote(&realm_url(&realm.value, target))));
            }
        } else if challenge.is("Basic")
            && challenge.param("realm") == Some("harbor")
            && let Some(scope) = target.bearer_scope
        {
            let realm = quote(&realm_url("", target));
            let bearer = format!("Bearer realm={realm},service=\"{HARBOR_SERVICE}\",scope={}", quote(scope));
            edits.push((challenge.span.clone(), bearer));
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(header.len() + 64);
    let mut copied = 0;
    for (span, text) in edits {
        out.push_str(&header[copied..span.start]);
        out.push_str(&text);
        copied = span.end;
    }
    out.push_str(&header[copied..]);
    Some(out)
}

/// `<scheme>://<authority>/service/token?<Harbor's realm query without ns>&ns=<ns>`.
fn realm_url(harbor_realm: &str, target: &RealmTarget<'_>) -> String {
    let query = harbor_realm.split_once('?').map(|(_, query)| query);
    let mut url = format!("{}://{}{TOKEN_PATH}", target.scheme, target.authority);
    // Harbor's realm query without `ns` and empty pairs, so that a second rewrite is a no-op.
    let mut separator = '?';
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty() && crate::query::key(pair) != "ns") {
        url.push(separator);
        url.push_str(pair);
        separator = '&';
    }
    if let Some(ns) = target.ns {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("ns=");
        url.push_str(ns);
    }
    url
}

fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
