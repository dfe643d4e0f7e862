//! Token auth, the host-free parts: token requests whose scopes are mapped like request paths,
//! Harbor's token answers, and the managed-mode cache's freshness with time injected. Runs
//! natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror::token::{grants_pull, managed_token_path, parse_grant, CacheEntry, Grant};
mod common;

use common::Expect::*;
use common::{check, parse};
use harbor_mirror::{decide, Request};

const CONFIG: &str = r#"{
  "registries": {
    "docker.io": {
      "project": "dockerhub-proxy",
      "aliases": ["dockerhub"],
      "rewrite": {"^ksd-test/(.*)$": "production/$1"},
      "deny": ["^library/evil$"]
    },
    "quay.io": {"project": "quay-proxy", "hosts": ["quay.mirror.example.com"]},
    "ghcr.io": {"project": "ghcr-proxy"}
  },
  "default_registry": "docker.io",
  "passthrough_projects": ["production"]
}"#;

#[test]
fn token_request_scopes_are_mapped_like_paths() {
    check(&parse(CONFIG), &[
        // docker 20.10: its own name, percent-encoded, no ns: the default registry.
        ("GET", "/service/token?scope=repository%3Alibrary%2Falpine%3Apull&service=harbor-registry", "m",
            Token("/service/token?scope=repository:dockerhub-proxy/library/alpine:pull&service=harbor-registry")),
        // podman and skopeo with credentials: `account` and `service` keep their bytes and places.
        ("GET", "/service/token?account=robot%24ci&scope=repository:library/alpine:pull&service=harbor-registry", "m",
            Token("/service/token?account=robot%24ci&scope=repository:dockerhub-proxy/library/alpine:pull&service=harbor-registry")),
        // containerd: the challenge's scope and its own, with the rewritten realm's ns: one scope left.
        ("GET", "/service/token?ns=quay.io&scope=repository%3Aquay-proxy%2Fcoreos%2Fetcd%3Apull&scope=repository%3Acoreos%2Fetcd%3Apull&service=harbor-registry", "m",
            Token("/service/token?scope=repository:quay-proxy/coreos/etcd:pull&service=harbor-registry")),
        // Space-separated lists, as `+` or `%20`, become one parameter per scope.
        ("GET", "/service/token?scope=repository:library/a:pull+repository:library/b:pull", "m",
            Token("/service/token?scope=repository:dockerhub-proxy/library/a:pull&scope=repository:dockerhub-proxy/library/b:pull")),
        ("GET", "/service/token?service=s&scope=repository%3Aowner%2Ftool%3Apull%20repository%3Aowner%2Fother%3Apull&ns=ghcr.io", "m",
            Token("/service/token?service=s&scope=repository:ghcr-proxy/owner/tool:pull&scope=repository:ghcr-proxy/owner/other:pull")),
        // Docker Hub's single-segment names get library/.
        ("GET", "/service/token?scope=repository:alpine:pull", "m", Token("/service/token?scope=repository:dockerhub-proxy/library/alpine:pull")),
        // Rewrite rules, push actions and resource classes.
        ("GET", "/service/token?scope=repository:ksd-test/app:pull", "m", Token("/service/token?scope=repository:production/app:pull")),
        ("GET", "/service/token?scope=repository:library/a:pull,push", "m", Token("/service/token?scope=repository:dockerhub-proxy/library/a:pull,push")),
        ("GET", "/service/token?scope=repository(plugin):library/a:pull", "m", Token("/service/token?scope=repository%28plugin%29:dockerhub-proxy/library/a:pull")),
        // Already-prefixed scopes, other resource types and shapes Harbor owns stay.
        ("GET", "/service/token?scope=repository:quay-proxy/coreos/etcd:pull", "m", Token("/service/token?scope=repository:quay-proxy/coreos/etcd:pull")),
        ("GET", "/service/token?scope=registry:catalog:*", "m", Token("/service/token?scope=registry:catalog:%2A")),
        ("GET", "/service/token?scope=garbage", "m", Token("/service/token?scope=garbage")),
        // Host routing and the alias form select the registry like they do for paths.
        ("GET", "/service/token?scope=repository:coreos/etcd:pull", "quay.mirror.example.com",
            Token("/service/token?scope=repository:quay-proxy/coreos/etcd:pull")),
        ("GET", "/quay.io/service/token?scope=repository:coreos/etcd:pull", "m", Token("/service/token?scope=repository:quay-proxy/coreos/etcd:pull")),
        ("GET", "/dockerhub/service/token?scope=repository:library/a:pull", "m", Token("/service/token?scope=repository:dockerhub-proxy/library/a:pull")),
        // containerd's OAuth POST: its scopes are in the body; Harbor answers 405 and it retries with GET.
        ("POST", "/service/token?ns=docker.io", "m", Token("/service/token")),
        ("GET", "/service/token", "m", Token("/service/token")),
    ]);
}

#[test]
fn refused_names_get_no_scope() {
    check(&parse(CONFIG), &[
        ("GET", "/service/token?scope=repository:library/evil:pull&scope=repository:library/a:pull", "m",
            Token("/service/token?scope=repository:dockerhub-proxy/library/a:pull")),
        ("GET", "/service/token?scope=repository:library/evil:pull&service=harbor-registry", "m", Token("/service/token?service=harbor-registry")),
        ("GET", "/service/token?scope=repository:Library/A:pull", "m", Token("/service/token")),
        ("GET", "/service/token?scope=repository%3Alibrary%2Fa%3Apull%zz", "m", Token("/service/token")),
        ("GET", "/service/token?scope=repository:library/a:pull&ns=gcr.io", "m", Refuse(404, "NAME_UNKNOWN")),
        ("GET", "/service/token?scope=repository:library/a:pull&ns=%zz", "m", Refuse(400, "UNSUPPORTED")),
    ]);
}

#[test]
fn dropped_scopes_say_why() {
    let config = parse(CONFIG);
    let decision = decide(&config, &Request { method: "GET", path: "/service/token?scope=repository:library/evil:pull", authority: "m" });
    assert_eq!(
        decision.to_string(),
        "token scopes: registry=docker.io by=default dropped=1 (registry docker.io denies library/evil (deny rule \"^library/evil$\")) path=/service/token"
    );
}

#[test]
fn token_requests_pass_untouched_when_token_handling_is_off_or_no_registry_applies() {
    let off = parse(r#"{"registries": {"docker.io": {"project": "p"}}, "default_registry": "docker.io", "auth": {"rewrite_tokens": false}}"#);
    check(&off, &[("GET", "/service/token?scope=repository:library/a:pull&ns=docker.io", "m", Pass)]);
    let no_default = parse(r#"{"registries": {"quay.io": {"project": "q"}}}"#);
    check(&no_default, &[
        ("GET", "/service/token?scope=repository:coreos/etcd:pull", "m", Pass),
        ("GET", "/service/token?scope=repository:coreos/etcd:pull&ns=quay.io", "m", Token("/service/token?scope=repository:q/coreos/etcd:pull")),
    ]);
}

const GRANTED_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyb2JvdCRtaXJyb3IiLCJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6ImRvY2tlcmh1Yi1wcml2YXRlL2xpYnJhcnkvYWxwaW5lIiwiYWN0aW9ucyI6WyJwdWxsIl19XX0.c2ln";
const EMPTY_JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIiLCJhY2Nlc3MiOltdfQ.c2ln";

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
    for (body, expected) in rows {
        let got = parse_grant(body.as_bytes());
        match (got, expected) {
            (Ok(grant), Ok((token, expires_in))) => assert_eq!(grant, Grant { token: (*token).into(), expires_in: *expires_in }, "{body}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{body}: {e}"),
            (got, _) => panic!("{body}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn pull_grants_are_read_per_project() {
    assert_eq!(grants_pull(GRANTED_JWT, "dockerhub-private"), Some(true));
    assert_eq!(grants_pull(GRANTED_JWT, "dockerhub-proxy"), Some(false));
    assert_eq!(grants_pull(EMPTY_JWT, "dockerhub-private"), Some(false));
    assert_eq!(grants_pull("opaque-token", "dockerhub-private"), None);
    assert_eq!(grants_pull("a.!!.c", "dockerhub-private"), None);
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
    for (expires_in, later, fresh) in rows {
        let grant = Grant { token: "t".into(), expires_in };
        let entry = CacheEntry::for_grant(&grant, now);
        let encoded = entry.encode();
        let decoded = CacheEntry::decode(encoded.as_bytes()).unwrap_or_else(|| panic!("{encoded} does not decode"));
        assert_eq!(decoded, entry);
        assert_eq!(decoded.is_fresh(now + later), fresh, "expires_in {expires_in}, {later} s later");
    }
    for garbage in [&b""[..], b"123", b"x t", b"123 ", b"\xff t"] {
        assert_eq!(CacheEntry::decode(garbage), None, "{garbage:?}");
    }
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
    let grant = br#"{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyb2JvdCRtaXJyb3IiLCJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6ImRvY2tlcmh1Yi1wcml2YXRlL2xpYnJhcnkvYWxwaW5lIiwiYWN0aW9ucyI6WyJwdWxsIl19XX0.c2ln","expires_in":1800}"#;
    let empty = br#"{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIiLCJhY2Nlc3MiOltdfQ.c2ln","expires_in":1800}"#;
    // (status, body, Ok(expires_in) or Err((status, code, part of the message)))
    type Expected = Result<u64, (u32, &'static str, &'static str)>;
    let rows: &[(Option<u32>, &[u8], Expected)] = &[
        (Some(200), grant, Ok(1800)),
        (Some(200), br#"{"token":"opaque"}"#, Ok(60)),
        (Some(200), empty, Err((403, "DENIED", "harbor grants robot robot$mirror no pull on project dockerhub-private"))),
        (Some(200), b"<html>", Err((503, "UNAVAILABLE", "answered without a usable token"))),
        (None, b"", Err((503, "UNAVAILABLE", "did not answer (timeout or connection failure on cluster \"harbor\")"))),
        (Some(504), b"upstream request timeout", Err((503, "UNAVAILABLE", "did not answer"))),
        (Some(401), b"", Err((503, "UNAVAILABLE", "refused the mirror's robot credentials (robot$mirror)"))),
        (Some(403), b"", Err((403, "DENIED", "denied robot robot$mirror"))),
        (Some(502), b"", Err((503, "UNAVAILABLE", "answered 502"))),
        (Some(503), b"upstream connect error", Err((503, "UNAVAILABLE", "answered 503, or cluster \"harbor\" could not reach it"))),
    ];
    for (status, body, expected) in rows {
        let got = harbor_mirror::token::judge_answer(*status, body, "dockerhub-private", "robot$mirror", "harbor");
        match (&got, expected) {
            (Ok(grant), Ok(expires_in)) => assert_eq!(grant.expires_in, *expires_in),
            (Err(r), Err((code, name, message))) => {
                assert_eq!((r.status, r.code.as_str()), (*code, *name), "{status:?}");
                assert!(r.message.contains(message), "{status:?}: {}", r.message);
            }
            _ => panic!("{status:?}: expected {expected:?}, got {got:?}"),
        }
    }
}
