//! Higress's `_rules_` envelope: which configuration a request gets by its host, and the errors
//! of a bad envelope. Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::{decide, PluginConfig, Request};

mod common;

use common::Report;

/// What Higress sends for `matchRules` on two domains, with a global configuration.
const SCOPED: &str = r#"{
  "_rules_": [
    {"_match_domain_": ["harbor.example.com", "*.harbor.example.com"],
     "registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io"},
    {"_match_domain_": ["quay-mirror.*"],
     "registries": {"quay.io": {"project": "quay-proxy"}}, "default_registry": "quay.io"}
  ],
  "registries": {"ghcr.io": {"project": "ghcr-proxy"}}, "default_registry": "ghcr.io"
}"#;

/// The path a `GET /v2/x/y/manifests/1` to `authority` is forwarded with, or `None` when no
/// configuration applies.
fn routed(scoped: &PluginConfig, authority: &str) -> Option<String> {
    let index = scoped.selector.select(authority)?;
    let request = Request { method: "GET", path: "/v2/x/y/manifests/1", authority };
    Some(decide(&scoped.configs[index], &request).new_path().unwrap_or("unchanged").to_owned())
}

#[test]
fn requests_get_the_configuration_of_the_first_rule_their_host_matches() {
    let scoped = PluginConfig::from_json(SCOPED.as_bytes()).expect("valid");
    assert!(scoped.selector.by_host());
    let cases = [
        ("harbor.example.com", "/v2/dockerhub-proxy/x/y/manifests/1"),
        ("HARBOR.example.com:443", "/v2/dockerhub-proxy/x/y/manifests/1"),
        ("eu.harbor.example.com", "/v2/dockerhub-proxy/x/y/manifests/1"),
        ("quay-mirror.example.org:5000", "/v2/quay-proxy/x/y/manifests/1"),
        ("other.example.com", "/v2/ghcr-proxy/x/y/manifests/1"),
        ("[::1]:5000", "/v2/ghcr-proxy/x/y/manifests/1"),
    ];
    let mut report = Report::new("hosts");
    for (authority, expected) in cases {
        report.eq(authority, routed(&scoped, authority).as_deref(), Some(expected));
    }
}

#[test]
fn without_a_global_configuration_other_hosts_are_not_the_plugins() {
    let json = r#"{"_rules_": [{"_match_domain_": ["harbor.example.com"], "registries": {"docker.io": {"project": "p"}}, "default_registry": "docker.io"}]}"#;
    let scoped = PluginConfig::from_json(json.as_bytes()).expect("valid");
    assert_eq!(routed(&scoped, "harbor.example.com").as_deref(), Some("/v2/p/x/y/manifests/1"));
    assert_eq!(routed(&scoped, "grafana.example.com"), None);
    assert_eq!(routed(&scoped, "harbor.example.com.evil.net"), None);
}

#[test]
fn a_plain_configuration_applies_to_every_host() {
    let json = r#"{"registries": {"docker.io": {"project": "p"}}, "default_registry": "docker.io"}"#;
    let scoped = PluginConfig::from_json(json.as_bytes()).expect("valid");
    assert!(!scoped.selector.by_host());
    assert_eq!(scoped.configs.len(), 1);
    assert_eq!(routed(&scoped, "anything").as_deref(), Some("/v2/p/x/y/manifests/1"));
}

#[test]
fn a_bad_envelope_is_refused_with_the_rule_and_field() {
    let cases = [
        (r#"{"_rules_": {}}"#, "_rules_: invalid type: map, expected a list of rule objects at line 1 column 12"),
        (r#"{"_rules_": []}"#, "_rules_: has no rules"),
        (r#"{"_rules_": [{"registries": {"a": {}}}]}"#, "_rules_[0]: has no _match_domain_"),
        (r#"{"_rules_": [{"_match_domain_": [], "registries": {"a": {}}}]}"#, "_rules_[0]._match_domain_: lists no domain"),
        (r#"{"_rules_": [{"_match_domain_": ["*"], "registries": {"a": {}}}]}"#, "_rules_[0]._match_domain_[0]: a domain must not be empty"),
        (r#"{"_rules_": [{"_match_domain_": "h", "registries": {"a": {}}}]}"#, "_rules_[0]._match_domain_: invalid type: string \"h\", expected a sequence at line 1 column 35"),
        (r#"{"_rules_": [{"_match_route_": ["r"], "registries": {"a": {}}}]}"#, "_rules_[0]._match_route_: only domain rules"),
        (
            r#"{"_rules_": [{"_match_domain_": ["h"], "registries": {"docker.io": {"projct": "p"}}}]}"#,
            "_rules_[0].registries[\"docker.io\"]: unknown field `projct`, expected one of `project`, `hosts`, `aliases`, `rewrite`, `allow`, `deny` at line 1 column 76",
        ),
        (r#"{"_rules_": [{"_match_domain_": ["h"]}]}"#, "_rules_[0].registries: is required (or discover, to read them from harbor)"),
        (
            r#"{"_rules_": [{"_match_domain_": ["h"], "registries": {"a": {}}}], "default_registry": "b"}"#,
            "registries: is required (or discover, to read them from harbor)",
        ),
    ];
    let mut report = Report::new("bad envelopes");
    for (json, expected) in cases {
        match PluginConfig::from_json(json.as_bytes()) {
            Ok(_) => report.row(json, Err("accepted".to_owned())),
            Err(e) => report.check(json, e.to_string().starts_with(expected), format_args!("got {e}, want {expected}")),
        }
    }
}

#[test]
fn errors_of_a_plain_configuration_are_the_configurations_own() {
    let mut report = Report::new("plain configurations");
    for json in ["not json", "[]", r#"{"registries": {}}"#, r#"{"a": 1, "a": 2}"#, ""] {
        let scoped = PluginConfig::from_json(json.as_bytes()).map(|_| ()).map_err(|e| e.to_string());
        let plain = harbor_mirror_core::Config::from_json(json.as_bytes()).map(|_| ()).map_err(|e| e.to_string());
        report.eq(json, scoped, plain);
    }
}

#[test]
fn rule_keys_are_passed_on_as_written() {
    // A key with a quote or a control character is an unknown field, named as written.
    let json = r#"{"_rules_": [{"_match_domain_": ["h"], "registries": {"a": {}}, "x\"\u0001": 1}]}"#;
    let err = PluginConfig::from_json(json.as_bytes()).expect_err("unknown field").to_string();
    assert!(err.starts_with("_rules_[0]: unknown field `x\"\u{1}`"), "{err}");
}
