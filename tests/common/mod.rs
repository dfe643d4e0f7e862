//! What the table tests share: a report that collects every failing row by name, the decision
//! table's harness, and test configurations.
// Each test file uses the parts it needs.
#![allow(dead_code)]

pub mod emulator;

use std::fmt::{Debug, Display, Write};

use harbor_mirror_core::{decide, Config, Decision, Request, Route};

/// The failures of a table's rows: every bad row is reported, each by its name, when the report
/// is dropped (at the end of the test), not only the first.
#[must_use = "a report fails the test when it is dropped"]
pub struct Report {
    table: String,
    rows: usize,
    failures: Vec<String>,
}

impl Report {
    /// A report for the table `table`.
    pub fn new(table: impl Display) -> Self {
        Report { table: table.to_string(), rows: 0, failures: Vec::new() }
    }

    /// Row `name` held, or failed with the message.
    pub fn row(&mut self, name: impl Display, outcome: Result<(), String>) {
        self.rows += 1;
        if let Err(message) = outcome {
            self.failures.push(format!("  {name}: {message}"));
        }
    }

    /// Row `name` got `got` where it wants `want`.
    pub fn eq<T: PartialEq + Debug>(&mut self, name: impl Display, got: T, want: T) {
        let outcome = if got == want { Ok(()) } else { Err(format!("got {got:?}, want {want:?}")) };
        self.row(name, outcome);
    }

    /// Row `name` holds if `ok`, else fails with `detail`.
    pub fn check(&mut self, name: impl Display, ok: bool, detail: impl Display) {
        self.row(name, if ok { Ok(()) } else { Err(detail.to_string()) });
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if self.failures.is_empty() || std::thread::panicking() {
            return;
        }
        let mut message = format!("{} of {} rows of {} failed:\n", self.failures.len(), self.rows, self.table);
        for failure in &self.failures {
            let _ = writeln!(message, "{failure}");
        }
        panic!("{message}");
    }
}

/// What must happen to a request.
#[derive(Debug)]
pub enum Expect {
    /// Mapped to a Harbor repository: forwarded with this path.
    Rewrite(&'static str),
    /// Forwarded with this path, no name mapping (alias or `ns` stripped).
    PassAs(&'static str),
    /// A token request forwarded to Harbor's token service with this path.
    Token(&'static str),
    /// Forwarded untouched.
    Pass,
    /// Answered locally with this status and OCI code.
    Refuse(u32, &'static str),
}

/// Checks each `(method, path, authority, expected)` row, reporting every row that fails.
pub fn check(config: &Config, rows: &[(&str, &str, &str, Expect)]) {
    let mut report = Report::new("requests");
    for (method, path, authority, expected) in rows {
        let decision = decide(config, &Request { method, path, authority });
        let mapped = |route: &Route<'_>| matches!(route, Route::Mapped { .. } | Route::Token { .. });
        let ok = match (&decision, expected) {
            (Decision::Forward { path: Some(p), route: Route::Mapped { .. } }, Expect::Rewrite(want)) => p == want,
            (Decision::Forward { path: Some(p), route: Route::Token { .. } }, Expect::Token(want)) => p == want,
            (Decision::Forward { path: Some(p), route }, Expect::PassAs(want)) => p == want && !mapped(route),
            (Decision::Forward { path: None, route }, Expect::Pass) => !mapped(route),
            (Decision::Refuse(r), Expect::Refuse(status, code)) => r.status == *status && r.code.as_str() == *code,
            _ => false,
        };
        report.check(format_args!("{method} {path} (host {authority})"), ok, format_args!("expected {expected:?}, got {decision:?}"));
    }
}

/// A test configuration, which must compile.
pub fn parse(json: &str) -> Config {
    Config::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("test configuration: {e}"))
}

/// The configuration of the README's contract, with host routing, allow and deny rules, a
/// registry with a port and one without project: what the decision and scope tables use.
pub const TYPICAL: &str = r#"{
  "registries": {
    "docker.io": {
      "project": "dockerhub-proxy",
      "hosts": ["docker.mirror.example.com"],
      "aliases": ["dockerhub"],
      "rewrite": {"^ksd-test/(.*)$": "production/$1", "^team/(.*)$": "elsewhere/$1"},
      "allow": ["^library/", "^ksd-test/", "^team/", "^bitnami/"],
      "deny": ["^library/evil$"]
    },
    "quay.io": {"project": "quay-proxy", "hosts": ["quay.mirror.example.com", "localhost"]},
    "ghcr.io": {"project": "ghcr-proxy"},
    "localhost:5001": {"project": "local-proxy"},
    "plain.example": {"rewrite": {"^team/(.*)$": "production/team-$1"}}
  },
  "default_registry": "docker.io",
  "passthrough_projects": ["production"]
}"#;

/// The managed-mode configuration the managed and response tests share.
pub const MANAGED: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-private"}}, "default_registry": "docker.io",
    "passthrough_projects": ["production"],
    "auth": {"robot": {"username": "robot$mirror", "password": "s"}, "cluster": "harbor", "authority": "harbor.example.com"}}"#;

/// A JWT of `header` and `claims` (JSON text), as Harbor lays them out; the signature is not
/// the mirror's to check.
pub fn jwt(header: &str, claims: &str) -> String {
    format!("{}.{}.c2lnbmF0dXJl", base64url(header.as_bytes()), base64url(claims.as_bytes()))
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// Harbor's JWT header.
pub const HARBOR_HEADER: &str = r#"{"alg":"RS256","kid":"ABCD:EFGH","typ":"JWT"}"#;

/// Harbor's token for `sub` (`None`: anonymous, which Harbor leaves out) granting `access`.
pub fn harbor_token(sub: Option<&str>, access: &str) -> String {
    let sub = sub.map(|sub| format!(r#""sub":"{sub}","#)).unwrap_or_default();
    jwt(HARBOR_HEADER, &format!(r#"{{"iss":"harbor-token-issuer",{sub}"aud":"harbor-registry","exp":1900000000,"access":{access}}}"#))
}

/// Harbor's token service's answer carrying `token`.
pub fn token_answer(token: &str) -> Vec<u8> {
    format!(r#"{{"token":"{token}","access_token":"","expires_in":1800,"issued_at":"2026-12-03T10:00:00Z"}}"#).into_bytes()
}

/// A grant of pull and push on the private project's alpine.
pub const PULL_PRIVATE: &str = r#"[{"type":"repository","name":"dockerhub-private/library/alpine","actions":["pull","push"]}]"#;
/// The same scope, granted nothing.
pub const NOTHING_PRIVATE: &str = r#"[{"type":"repository","name":"dockerhub-private/library/alpine","actions":[]}]"#;
