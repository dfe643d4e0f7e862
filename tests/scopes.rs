//! Pass-through token requests: their scopes mapped like request paths. Runs natively and under
//! wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;

use common::Expect::*;
use common::{check, parse, TYPICAL};
use harbor_mirror_core::{decide, Request};


#[test]
fn token_request_scopes_are_mapped_like_paths() {
    check(&parse(TYPICAL), &[
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
    check(&parse(TYPICAL), &[
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
    let config = parse(TYPICAL);
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
