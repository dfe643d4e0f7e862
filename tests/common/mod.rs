//! The table harness the decision tests share: one row per request, with what must happen.
// Each test file uses the expectations it needs.
#![allow(dead_code)]

use harbor_mirror_core::{decide, Config, Decision, Request, Route};

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

/// Checks each `(method, path, authority, expected)` row.
pub fn check(config: &Config, rows: &[(&str, &str, &str, Expect)]) {
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
        assert!(ok, "{method} {path} (host {authority}): expected {expected:?}, got {decision:?}");
    }
}

/// A test configuration, which must compile.
pub fn parse(json: &str) -> Config {
    Config::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("test configuration: {e}"))
}
