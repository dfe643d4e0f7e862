//! The request decision, one row per client behaviour. Runs natively (`cargo test`) and compiled
//! to wasm32-unknown-unknown under node (wasm-bindgen-test).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;

use common::Expect::*;
use common::{check, parse, Report, TYPICAL};
use harbor_mirror_core::{decide, Config, Decision, Request};

fn config() -> Config {
    parse(TYPICAL)
}

#[test]
fn each_client_shape_reaches_its_project() {
    check(&config(), &[
        // docker `registry-mirrors`: plain paths, Docker Hub only.
        ("GET", "/v2/library/alpine/manifests/3.19", "127.0.0.1:5000", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/3.19")),
        ("HEAD", "/v2/library/alpine/manifests/3.19", "127.0.0.1:5000", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/3.19")),
        ("GET", "/v2/library/alpine/blobs/sha256:abcd", "127.0.0.1:5000", Rewrite("/v2/dockerhub-proxy/library/alpine/blobs/sha256:abcd")),
        // containerd hosts.toml: `?ns=` on every request.
        ("GET", "/v2/library/alpine/manifests/3.19?ns=docker.io", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/3.19")),
        ("GET", "/v2/coreos/etcd/manifests/v3?ns=quay.io", "m", Rewrite("/v2/quay-proxy/coreos/etcd/manifests/v3")),
        ("GET", "/v2/owner/app/blobs/sha256:ab?ns=ghcr.io", "m", Rewrite("/v2/ghcr-proxy/owner/app/blobs/sha256:ab")),
        ("GET", "/v2/a/b/referrers/sha256:ab?artifactType=x&ns=ghcr.io", "m", Rewrite("/v2/ghcr-proxy/a/b/referrers/sha256:ab?artifactType=x")),
        ("GET", "/v2/a/b/tags/list?n=10&ns=quay.io&last=c", "m", Rewrite("/v2/quay-proxy/a/b/tags/list?n=10&last=c")),
        ("GET", "/v2/x/y/manifests/1?ns=localhost%3A5001", "m", Rewrite("/v2/local-proxy/x/y/manifests/1")),
        ("GET", "/v2/library/alpine/manifests/1?ns=registry-1.docker.io", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/1")),
        ("GET", "/v2/library/alpine/manifests/1?ns=index.docker.io", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/1")),
        // containerd with an alias mirror URL: `/<alias>/v2/...`.
        ("GET", "/quay.io/v2/a/b/manifests/1?ns=quay.io", "m", Rewrite("/v2/quay-proxy/a/b/manifests/1")),
        ("GET", "/quay.io/v2/a/b/manifests/1", "m", Rewrite("/v2/quay-proxy/a/b/manifests/1")),
        ("GET", "/dockerhub/v2/library/alpine/manifests/1", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/1")),
        ("GET", "/quay.io/v2/", "m", PassAs("/v2/")),
        // podman / skopeo registries.conf: routed by host, else the default.
        ("GET", "/v2/a/b/manifests/1", "quay.mirror.example.com", Rewrite("/v2/quay-proxy/a/b/manifests/1")),
        ("GET", "/v2/a/b/manifests/1", "LocalHost:5000", Rewrite("/v2/quay-proxy/a/b/manifests/1")),
        ("GET", "/v2/library/alpine/manifests/1", "docker.mirror.example.com:443", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/1")),
    ]);
}

#[test]
fn selection_order_is_ns_then_alias_then_host_then_default() {
    check(&config(), &[
        ("GET", "/quay.io/v2/a/b/manifests/1?ns=ghcr.io", "localhost", Rewrite("/v2/ghcr-proxy/a/b/manifests/1")),
        ("GET", "/ghcr.io/v2/a/b/manifests/1", "localhost", Rewrite("/v2/ghcr-proxy/a/b/manifests/1")),
        ("GET", "/v2/library/a/manifests/1", "localhost", Rewrite("/v2/quay-proxy/library/a/manifests/1")),
        ("GET", "/v2/library/a/manifests/1", "other", Rewrite("/v2/dockerhub-proxy/library/a/manifests/1")),
    ]);
}

#[test]
fn no_registry_applies_without_a_default() {
    let config = parse(r#"{"registries": {"quay.io": {"project": "q"}}}"#);
    check(&config, &[
        ("GET", "/v2/a/b/manifests/1", "anything", Pass),
        ("GET", "/v2/a/b/manifests/1?ns=quay.io", "anything", Rewrite("/v2/q/a/b/manifests/1")),
    ]);
}

#[test]
fn non_repository_requests_pass_unchanged() {
    check(&config(), &[
        ("GET", "/v2/", "m", Pass),
        ("GET", "/v2", "m", Pass),
        ("GET", "/v2/_catalog?n=10", "m", Pass),
        ("GET", "/api/v2.0/projects", "m", Pass),
        ("GET", "/", "m", Pass),
        ("GET", "/unknown-alias/v2/a/b/manifests/1", "m", Pass),
        ("GET", "/v2/library/alpine/manifests/", "m", Pass),
        ("POST", "/c/login", "m", Pass),
    ]);
}

#[test]
fn names_already_under_a_project_pass() {
    check(&config(), &[
        ("GET", "/v2/dockerhub-proxy/library/alpine/manifests/1", "m", Pass),
        ("GET", "/v2/quay-proxy/a/b/blobs/sha256:ab", "m", Pass),
        ("GET", "/v2/production/app/manifests/1", "m", Pass),
        // Replayed Location URL: containerd appends ns again; the filter strips it.
        ("GET", "/v2/dockerhub-proxy/library/alpine/blobs/sha256:ab?ns=docker.io", "m", PassAs("/v2/dockerhub-proxy/library/alpine/blobs/sha256:ab")),
        ("GET", "/quay.io/v2/quay-proxy/a/b/manifests/1", "m", PassAs("/v2/quay-proxy/a/b/manifests/1")),
        // A single-segment name equal to a project is a Docker Hub image, not a prefix.
        ("GET", "/v2/production/manifests/1", "m", Rewrite("/v2/dockerhub-proxy/library/production/manifests/1")),
    ]);
}

#[test]
fn docker_hub_single_segment_names_get_library() {
    check(&config(), &[
        ("GET", "/v2/alpine/manifests/3.19", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/3.19")),
        ("GET", "/v2/alpine/manifests/3.19?ns=docker.io", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/3.19")),
        ("GET", "/v2/etcd/manifests/3?ns=quay.io", "m", Rewrite("/v2/quay-proxy/etcd/manifests/3")),
    ]);
}

#[test]
fn rewrite_rules_apply_in_document_order_on_the_client_name() {
    check(&config(), &[
        ("GET", "/v2/ksd-test/app/manifests/1?ns=docker.io", "m", Rewrite("/v2/production/app/manifests/1")),
        ("GET", "/v2/ksd-test/a/b/blobs/sha256:ab", "m", Rewrite("/v2/production/a/b/blobs/sha256:ab")),
        // A rule whose result lands outside every configured project is refused.
        ("GET", "/v2/team/app/manifests/1", "m", Refuse(403, "DENIED")),
        // A registry without project serves only what its rules map: keeping a name would reach
        // whatever Harbor project it starts with.
        ("GET", "/v2/team/app/manifests/1?ns=plain.example", "m", Rewrite("/v2/production/team-app/manifests/1")),
        ("GET", "/v2/secret/app/manifests/1?ns=plain.example", "m", Refuse(403, "DENIED")),
    ]);
}

#[test]
fn refusals_carry_their_oci_code() {
    check(&config(), &[
        ("GET", "/v2/a/b/manifests/1?ns=gcr.io", "m", Refuse(404, "NAME_UNKNOWN")),
        ("GET", "/v2/a/b/manifests/1?ns=", "m", Refuse(400, "UNSUPPORTED")),
        ("GET", "/v2/a/b/manifests/1?ns=quay.io&ns=ghcr.io", "m", Refuse(400, "UNSUPPORTED")),
        ("GET", "/v2/library/evil/manifests/1", "m", Refuse(403, "DENIED")),
        ("GET", "/v2/evil/manifests/1", "m", Refuse(403, "DENIED")),
        ("GET", "/v2/someone/app/manifests/1", "m", Refuse(403, "DENIED")),
        ("GET", "/v2/Library/Alpine/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/al..pine/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library//alpine/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/al%2fpine/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/-lead/x/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("PUT", "/v2/library/alpine/manifests/1", "m", Refuse(405, "UNSUPPORTED")),
        ("POST", "/v2/library/alpine/blobs/uploads/", "m", Refuse(405, "UNSUPPORTED")),
        ("PATCH", "/v2/library/alpine/blobs/uploads/abc", "m", Refuse(405, "UNSUPPORTED")),
        ("DELETE", "/v2/library/alpine/manifests/sha256:ab", "m", Refuse(405, "UNSUPPORTED")),
    ]);
}

#[test]
fn paths_harbor_could_read_differently_are_refused_before_routing() {
    check(&config(), &[
        // Traversal out of the registry API, or into it past the filter.
        ("GET", "/v2/../api/v2.0/users", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/api/../v2/secret/app/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/quay.io/v2/../../v2/secret/app/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/alpine/manifests/..", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/%2e%2e/api/v2.0/users", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/alpine/manifests/..%2f..%2fsecret", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/%76%32/secret/app/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "//v2/secret/app/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library\\..\\secret/manifests/1", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/alpine/manifests/1%0d%0aX-Injected:%201", "m", Refuse(400, "NAME_INVALID")),
        // Registry paths hold only the registry grammar; endpoints only tags, digests, ids.
        ("GET", "/v2/library/alpine/manifests/a@b", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/alpine/manifests/a%41", "m", Refuse(400, "NAME_INVALID")),
        ("GET", "/v2/library/alpine/manifests/-x", "m", Refuse(400, "TAG_INVALID")),
        ("GET", "/v2/library/alpine/blobs/latest", "m", Refuse(400, "DIGEST_INVALID")),
        ("GET", "/v2/library/alpine/referrers/sha256:", "m", Refuse(400, "DIGEST_INVALID")),
        ("GET", "/v2/library/alpine/tags/all", "m", Refuse(400, "UNSUPPORTED")),
        ("GET", "/v2/production/app/manifests/.x", "m", Refuse(400, "TAG_INVALID")),
        // Go decodes parameter names: `sc%6Fpe` is a scope to Harbor, unmapped by the filter.
        ("GET", "/service/token?service=harbor-registry&sc%6Fpe=repository:secret/app:pull", "m", Refuse(400, "UNSUPPORTED")),
        ("GET", "/v2/library/alpine/manifests/1?n%73=quay.io", "m", Refuse(400, "UNSUPPORTED")),
        // What stays allowed: Harbor's API with its double-encoded names, the UI, uploads.
        ("GET", "/api/v2.0/projects/p/repositories/a%252Fb/artifacts", "m", Pass),
        ("GET", "/harbor/projects?x=%2e%2e/a//b", "m", Pass),
        ("GET", "/v2/production/app/blobs/uploads/7e5ea2b1-0000?_state=a%2Fb%3D", "m", Pass),
    ]);
}

#[test]
fn long_paths_are_refused_and_messages_stay_short() {
    let long_query = format!("/v2/library/alpine/manifests/1?n={}", "x".repeat(8200));
    let long_token = format!("/service/token?scope={}", "repository:library/a:pull+".repeat(400));
    let long_ns = format!("/v2/library/alpine/manifests/1?ns={}", "x".repeat(5000));
    check(&config(), &[
        ("GET", &long_query, "m", Refuse(414, "NAME_INVALID")),
        ("GET", &long_token, "m", Refuse(414, "NAME_INVALID")),
        ("GET", &long_ns, "m", Refuse(404, "NAME_UNKNOWN")),
    ]);
    match decide(&config(), &Request { method: "GET", path: &long_ns, authority: "m" }) {
        Decision::Refuse(r) => assert!(r.message.len() < 200 && r.message.contains("(5000 bytes)"), "{}", r.message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn name_length_is_checked_before_and_after_the_project() {
    let name = |len: usize| format!("/v2/library/{}/manifests/1", "a".repeat(len - "library/".len()));
    // (name, path, what the refusal says, or None: forwarded)
    let rows: Vec<(&str, String, Option<&str>)> = vec![
        ("the client's name over 255", name(256), Some("invalid repository name: 256 characters, more than 255")),
        ("255, but over with the project", name(255), Some("invalid repository name: dockerhub-proxy/library/")),
        ("fits with the project", name(255 - "dockerhub-proxy/".len()), None),
    ];
    let mut report = Report::new("name lengths");
    for (name, path, expected) in &rows {
        let got = match decide(&config(), &Request { method: "GET", path, authority: "m" }) {
            Decision::Refuse(r) if r.status == 400 => Some(r.message),
            Decision::Refuse(r) => Some(format!("status {}: {}", r.status, r.message)),
            Decision::Forward { .. } => None,
        };
        let ok = match (&got, expected) {
            (Some(message), Some(want)) => message.starts_with(want) && (want.contains("dockerhub-proxy") || !message.contains("dockerhub-proxy")),
            (None, None) => true,
            _ => false,
        };
        report.check(name, ok, format_args!("got {got:?}, want {expected:?}"));
    }
}

#[test]
fn writes_are_forwarded_when_not_read_only() {
    let config = Config::from_json(br#"{"registries": {"docker.io": {"project": "p"}}, "default_registry": "docker.io", "read_only": false}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    check(&config, &[("POST", "/v2/library/a/blobs/uploads/?ns=docker.io", "m", Rewrite("/v2/p/library/a/blobs/uploads/"))]);
}

#[test]
fn refusal_body_is_an_oci_error_naming_the_cause() {
    match decide(&config(), &Request { method: "GET", path: "/v2/a/b/manifests/1?ns=gcr.io", authority: "m" }) {
        Decision::Refuse(r) => assert_eq!(
            r.body(),
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"registry \"gcr.io\" (from ns) is not served by this mirror"}]}"#
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_decision_describes_itself_for_the_debug_header() {
    let config = config();
    let decision = decide(&config, &Request { method: "GET", path: "/v2/ksd-test/app/manifests/1?ns=docker.io", authority: "m" });
    assert_eq!(decision.to_string(), r#"rewrote: registry=docker.io by=ns rule="^ksd-test/(.*)$" path=/v2/production/app/manifests/1"#);
    let decision = decide(&config, &Request { method: "GET", path: "/v2/alpine/manifests/1", authority: "m" });
    assert_eq!(decision.to_string(), "rewrote: registry=docker.io by=default rule=project path=/v2/dockerhub-proxy/library/alpine/manifests/1");
}
