//! Managed mode, the host-free parts: the token request the filter sends, Harbor's answers and
//! tokens read as Harbor issues them, the shared cache's entries with time injected, and what
//! a managed listener serves. Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::managed::cache::CacheEntry;
use harbor_mirror_core::harbor::{parse_grant, Grant, HarborClaims};
use harbor_mirror_core::managed::grant::{judge_answer, managed_token_path, refused_robot_token, FetchFailure, CREDENTIALS_BACKOFF_SECS};
mod common;

use common::Expect::*;
use common::{check, harbor_token, jwt, parse, token_answer, Report, HARBOR_HEADER, MANAGED, NOTHING_PRIVATE, PULL_PRIVATE};

#[test]
fn harbor_token_answers_are_read() {
    // (body, Ok((token, expires_in)) or Err(part of the message))
    type Expected = Result<(&'static str, u64), &'static str>;
    let rows: &[(&str, Expected)] = &[
        (r#"{"token":"t1","access_token":"t1","expires_in":1800,"issued_at":"2026-11-22T10:00:00Z"}"#, Ok(("t1", 1800))),
        (r#"{"access_token":"t2","expires_in":300}"#, Ok(("t2", 300))),
        (r#"{"token":"t3"}"#, Ok(("t3", 60))),
        (r#"{"token":"t4","expires_in":0}"#, Ok(("t4", 60))),
        (r#"{"token":""}"#, Err("token response has no token")),
        (r#"{"token":"a b"}"#, Err("cannot go in a header")),
        (r#"<html>"#, Err("token response is not the expected JSON")),
    ];
    let mut report = Report::new("token answers");
    for (body, expected) in rows {
        let outcome = match (parse_grant(body.as_bytes()), expected) {
            (Ok(grant), Ok((token, expires_in))) if grant == (Grant { token: (*token).into(), expires_in: *expires_in }) => Ok(()),
            (Err(e), Err(want)) if e.contains(want) => Ok(()),
            (got, _) => Err(format!("expected {expected:?}, got {got:?}")),
        };
        report.row(body, outcome);
    }
}

#[test]
fn only_jwts_as_harbor_issues_them_are_read() {
    /// `sub` and whether the claims grant pull on dockerhub-private; `None`: used as it is.
    type Read = Option<(&'static str, bool)>;
    let rows: &[(&str, String, Read)] = &[
        ("harbor jwt granting pull", harbor_token(Some("robot$mirror"), PULL_PRIVATE), Some(("robot$mirror", true))),
        ("harbor jwt granting nothing", harbor_token(Some("robot$mirror"), NOTHING_PRIVATE), Some(("robot$mirror", false))),
        ("harbor jwt, empty access", harbor_token(Some("robot$mirror"), "[]"), Some(("robot$mirror", false))),
        ("harbor jwt for anonymous", harbor_token(None, PULL_PRIVATE), Some(("", true))),
        ("harbor jwt, wildcard action", harbor_token(Some("r"), r#"[{"type":"repository","name":"dockerhub-private/x","actions":["*"]}]"#), Some(("r", true))),
        ("grant on another project", harbor_token(Some("r"), r#"[{"type":"repository","name":"dockerhub-proxy/x","actions":["pull"]}]"#), Some(("r", false))),
        ("grant of another type", harbor_token(Some("r"), r#"[{"type":"registry","name":"dockerhub-private/x","actions":["pull"]}]"#), Some(("r", false))),
        ("jwt without access claim", jwt(HARBOR_HEADER, r#"{"sub":"robot$mirror","exp":1900000000}"#), None),
        ("jwt whose access is not a list", jwt(HARBOR_HEADER, r#"{"sub":"r","access":{"type":"repository"}}"#), None),
        ("jwt whose header has no alg", jwt(r#"{"typ":"JWT"}"#, r#"{"sub":"r","access":[]}"#), None),
        ("jwt whose header is not json", jwt("not json", r#"{"sub":"r","access":[]}"#), None),
        ("opaque token", "3f9a0c1e7b2d4a6f8e1c3b5d7a9f0e2c".to_owned(), None),
        ("opaque token with dots", "v1.abc.def".to_owned(), None),
        ("four parts", format!("{}.x", harbor_token(Some("r"), PULL_PRIVATE)), None),
        ("empty token", String::new(), None),
        ("garbage", "a.!!.c".to_owned(), None),
    ];
    let mut report = Report::new("token readings");
    for (name, token, expected) in rows {
        let got = HarborClaims::read(token).map(|claims| (claims.subject.clone(), claims.grants_pull("dockerhub-private")));
        report.eq(name, got, expected.map(|(sub, pull)| (sub.to_owned(), pull)));
    }
}

#[test]
fn cached_tokens_are_used_until_shortly_before_they_expire() {
    let now = 1_800_000_000;
    // (expires_in, seconds later, fresh?)
    let rows = [
        (1800, 0, true),
        (1800, 1739, true),
        (1800, 1740, false),
        (1800, 1800, false),
        (300, 269, true),
        (300, 270, false),
        (60, 53, true),
        (60, 54, false),
        (5, 4, true),
        (5, 5, false),
    ];
    let mut report = Report::new("cache freshness");
    for (expires_in, later, fresh) in rows {
        let grant = Grant { token: "t".into(), expires_in };
        let entry = CacheEntry::for_grant(&grant, now);
        let encoded = entry.encode();
        let decoded = CacheEntry::decode(encoded.as_bytes());
        report.eq(format_args!("{encoded} decodes"), decoded, Some(entry));
        report.eq(format_args!("expires_in {expires_in}, {later} s later"), entry.is_fresh(now + later), fresh);
    }
    for garbage in [&b""[..], b"123", b"x t", b"t 123 ", b"t x t", b"123 t", b"q 1 t", b"\xff t"] {
        report.eq(format_args!("{:?} is not an entry", String::from_utf8_lossy(garbage)), CacheEntry::decode(garbage), None);
    }
}

#[test]
fn refused_robot_credentials_are_remembered_for_a_few_seconds() {
    let now = 1_800_000_000;
    let anonymous = token_answer(&harbor_token(None, "[]"));
    let failure = judge_answer(Some(200), &anonymous, "dockerhub-private", "robot$mirror", "harbor").expect_err("anonymous token");
    let entry = CacheEntry::for_failure(&failure, now).expect("a credentials failure is remembered");
    let encoded = entry.encode();
    let decoded = CacheEntry::decode(encoded.as_bytes()).unwrap_or_else(|| panic!("{encoded} does not decode"));
    assert_eq!(decoded, entry);
    assert!(decoded.is_fresh(now + CREDENTIALS_BACKOFF_SECS - 1));
    assert!(!decoded.is_fresh(now + CREDENTIALS_BACKOFF_SECS));
    assert_eq!(decoded.answer(), Err(failure.refusal.clone()));
    // Other failures are not remembered: the next request asks Harbor again.
    let timeout = judge_answer(None, b"", "dockerhub-private", "robot$mirror", "harbor").expect_err("no answer");
    assert_eq!(CacheEntry::for_failure(&timeout, now), None);
}

#[test]
fn managed_token_requests_ask_for_pull_on_the_harbor_name() {
    assert_eq!(
        managed_token_path("dockerhub-private/library/alpine"),
        "/service/token?service=harbor-registry&scope=repository:dockerhub-private/library/alpine:pull"
    );
}

#[test]
fn managed_token_answers_become_grants_or_refusals() {
    let granted = token_answer(&harbor_token(Some("robot$mirror"), PULL_PRIVATE));
    let nothing = token_answer(&harbor_token(Some("robot$mirror"), NOTHING_PRIVATE));
    let anonymous = token_answer(&harbor_token(None, PULL_PRIVATE));
    let other_robot = token_answer(&harbor_token(Some("robot$other"), PULL_PRIVATE));
    let no_access_claim = token_answer(&jwt(HARBOR_HEADER, r#"{"sub":"someone","exp":1900000000}"#));
    let opaque = br#"{"token":"opaque-3f9a0c1e"}"#.to_vec();
    // (name, status, body, Ok(expires_in) or Err((status, code, remembered, part of the message)))
    type Expected = Result<u64, (u32, &'static str, bool, &'static str)>;
    let rows: &[(&str, Option<u32>, &[u8], Expected)] = &[
        ("harbor's jwt granting pull", Some(200), &granted, Ok(1800)),
        ("an opaque token is used as it is", Some(200), &opaque, Ok(60)),
        ("a jwt without access claim is used as it is", Some(200), &no_access_claim, Ok(1800)),
        ("harbor's jwt granting nothing", Some(200), &nothing,
            Err((403, "DENIED", false, "harbor grants robot robot$mirror no pull on project dockerhub-private"))),
        ("wrong robot password: harbor's anonymous token", Some(200), &anonymous,
            Err((503, "UNAVAILABLE", true, "did not accept the robot credentials of auth.robot (robot$mirror): its token service issued a token for an anonymous caller"))),
        ("a token for another subject", Some(200), &other_robot,
            Err((503, "UNAVAILABLE", true, "issued a token for \"robot$other\""))),
        ("html", Some(200), b"<html>", Err((503, "UNAVAILABLE", false, "answered without a usable token"))),
        ("no answer", None, b"", Err((503, "UNAVAILABLE", false, "did not answer (timeout or connection failure on cluster \"harbor\")"))),
        ("envoy's timeout", Some(504), b"upstream request timeout", Err((503, "UNAVAILABLE", false, "did not answer"))),
        ("a token service that answers 401", Some(401), b"", Err((503, "UNAVAILABLE", true, "refused the mirror's robot credentials (robot$mirror)"))),
        ("403", Some(403), b"", Err((403, "DENIED", false, "denied robot robot$mirror"))),
        ("harbor's 400 for another service", Some(400), b"Unable to handle service: x", Err((503, "UNAVAILABLE", false, "answered 400"))),
        ("502", Some(502), b"", Err((503, "UNAVAILABLE", false, "answered 502"))),
        ("envoy cannot connect", Some(503), b"upstream connect error", Err((503, "UNAVAILABLE", false, "answered 503, or cluster \"harbor\" could not reach it"))),
    ];
    let mut report = Report::new("managed token answers");
    for (name, status, body, expected) in rows {
        let got = judge_answer(*status, body, "dockerhub-private", "robot$mirror", "harbor");
        let outcome = match (&got, expected) {
            (Ok(grant), Ok(expires_in)) if grant.expires_in == *expires_in => Ok(()),
            (Err(FetchFailure { refusal, credentials }), Err((code, error, remembered, message)))
                if (refusal.status, refusal.code.as_str(), *credentials) == (*code, *error, *remembered) && refusal.message.contains(message) =>
            {
                Ok(())
            }
            _ => Err(format!("expected {expected:?}, got {got:?}")),
        };
        report.row(name, outcome);
    }
}

#[test]
fn harbor_refusing_the_robots_token_is_answered_without_a_challenge() {
    // (name, token, status, code, part of the message)
    let rows: &[(&str, String, u32, &str, &str)] = &[
        ("a token that grants pull: misconfigured, or harbor's key changed", harbor_token(Some("robot$mirror"), PULL_PRIVATE),
            503, "UNAVAILABLE", "harbor refused robot robot$mirror's token for project dockerhub-private although the token grants pull"),
        ("an opaque token: harbor's answer is the truth", "opaque-3f9a0c1e".to_owned(),
            403, "DENIED", "harbor refused robot robot$mirror's token for project dockerhub-private: the robot lacks pull on it"),
    ];
    let mut report = Report::new("refused robot tokens");
    for (name, token, status, code, message) in rows {
        let refusal = refused_robot_token(token, "robot$mirror", "dockerhub-private");
        report.eq(name, (refusal.status, refusal.code.as_str()), (*status, *code));
        report.check(name, refusal.message.contains(message) && refusal.message.contains("dropped from the cache"), &refusal.message);
    }
}

#[test]
fn managed_mode_serves_only_the_registry_api() {
    check(&parse(MANAGED), &[
        // The registry API: the ping (answered by the adapter), the catalog, repositories.
        ("GET", "/v2/", "m", Pass),
        ("GET", "/v2/_catalog", "m", Pass),
        ("GET", "/v2/library/alpine/manifests/3.19", "m", Rewrite("/v2/dockerhub-private/library/alpine/manifests/3.19")),
        ("GET", "/docker.io/v2/library/alpine/manifests/3.19", "m", Rewrite("/v2/dockerhub-private/library/alpine/manifests/3.19")),
        // No token for clients: the filter has the robot's.
        ("GET", "/service/token?scope=repository:library/alpine:pull&service=harbor-registry", "m", Refuse(404, "NOT_FOUND")),
        ("POST", "/service/token", "m", Refuse(404, "NOT_FOUND")),
        ("GET", "/docker.io/service/token?scope=repository:library/alpine:pull", "m", Refuse(404, "NOT_FOUND")),
        // Harbor's UI and API are not a mirror's.
        ("GET", "/", "m", Refuse(404, "NOT_FOUND")),
        ("GET", "/api/v2.0/projects", "m", Refuse(404, "NOT_FOUND")),
        ("POST", "/c/login", "m", Refuse(404, "NOT_FOUND")),
        // Bad paths are still refused as such first.
        ("GET", "/api/../v2/", "m", Refuse(400, "NAME_INVALID")),
    ]);
}
