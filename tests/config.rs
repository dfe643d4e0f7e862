//! Configuration errors: each mistake is refused with the field, key and value it is about.
//! Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::config::Coalesce;
use harbor_mirror_core::{Config, PluginConfig};

mod common;

use common::Report;

fn error_of(json: &str) -> String {
    match Config::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mistakes_are_named_by_field_key_and_value() {
    let rows: &[(&str, &str)] = &[
        ("", "configuration: is empty"),
        ("{", "configuration: EOF while parsing an object"),
        (r#"{"registries": {}}"#, "registries: at least one registry is required"),
        (r#"{"registries": {"docker.io": {}}, "registry": 1}"#, "configuration: unknown field `registry`"),
        (r#"{"registries": {"docker.io": {"projct": "p"}}}"#, r#"registries["docker.io"]: unknown field `projct`"#),
        (r#"{"registries": {"docker.io": {}, "docker.io": {}}}"#, r#"duplicate key "docker.io""#),
        (r#"{"registries": {"Docker.io": {}}}"#, r#"registries["Docker.io"]: a registry key is a lower-case host name"#),
        (r#"{"registries": {"index.docker.io": {}}}"#, r#"registries["index.docker.io"]: use "docker.io" for Docker Hub"#),
        (r#"{"registries": {"docker.io": {"project": ""}}}"#, r#"registries["docker.io"].project: must not be empty"#),
        (r#"{"registries": {"docker.io": {"project": "Hub Proxy"}}}"#, r#"registries["docker.io"].project: "Hub Proxy" is not a valid Harbor project name"#),
        (r#"{"registries": {"quay.io": {"rewrite": {"(": "x"}}}}"#, r#"registries["quay.io"].rewrite["("]: "#),
        (r#"{"registries": {"quay.io": {"rewrite": {"^a/(.*)$": "p/$1x"}}}}"#, r#"registries["quay.io"].rewrite["^a/(.*)$"]: the replacement refers to ${1x}"#),
        (r#"{"registries": {"quay.io": {"rewrite": {"^a/(.*)$": "p/$2"}}}}"#, r#"registries["quay.io"].rewrite["^a/(.*)$"]: the replacement refers to ${2}"#),
        (r#"{"registries": {"quay.io": {"rewrite": {"^a$": ""}}}}"#, r#"registries["quay.io"].rewrite["^a$"]: the replacement must not be empty"#),
        (r#"{"registries": {"quay.io": {"allow": ["[z-a]"]}}}"#, r#"registries["quay.io"].allow[0]: "#),
        (r#"{"registries": {"quay.io": {"deny": ["ok", "*"]}}}"#, r#"registries["quay.io"].deny[1]: "#),
        (r#"{"registries": {"quay.io": {}}, "default_registry": "docker.io"}"#, r#"default_registry: "docker.io" is not one of the configured registries"#),
        (r#"{"registries": {"quay.io": {"hosts": ["m"]}, "ghcr.io": {"hosts": ["M"]}}}"#, r#"registries["ghcr.io"].hosts["M"]: duplicate host, already used by registries["quay.io"]"#),
        (r#"{"registries": {"quay.io": {"hosts": ["m:5000"]}}}"#, r#"registries["quay.io"].hosts["m:5000"]: a host is a host name without port"#),
        (r#"{"registries": {"quay.io": {"aliases": ["q"]}, "ghcr.io": {"aliases": ["q"]}}}"#, r#"registries["ghcr.io"].aliases["q"]: duplicate alias, already used by registries["quay.io"]"#),
        (r#"{"registries": {"quay.io": {}, "ghcr.io": {"aliases": ["quay.io"]}}}"#, r#"registries["ghcr.io"].aliases["quay.io"]: duplicate alias"#),
        (r#"{"registries": {"quay.io": {"aliases": ["v2"]}}}"#, r#"registries["quay.io"].aliases["v2"]: an alias is one path segment"#),
        (r#"{"registries": {"quay.io": {}}, "passthrough_projects": ["ok", "a/b"]}"#, r#"passthrough_projects[1]: "a/b" is not a valid Harbor project name"#),
        (r#"{"registries": {"quay.io": {}}, "read_only": "yes"}"#, "configuration: invalid type: string \"yes\", expected a boolean"),
        (r#"{"registries": {"quay.io": {}}, "log_original_path": 1}"#, "configuration: invalid type: integer `1`, expected a boolean"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robots": {}}}"#, "auth: unknown field `robots`"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r"}, "cluster": "h", "authority": "h"}}"#, "auth: missing field `password`"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "", "password": "p"}}}"#, "auth.robot.username: must not be empty"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "a:b", "password": "p"}}}"#, "auth.robot.username: must not contain ':'"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r", "password": ""}}}"#, "auth.robot.password: must not be empty"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r", "password": "p"}, "authority": "h"}}"#, "auth.cluster: is required with auth.robot"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r", "password": "p"}, "cluster": "h"}}"#, "auth.authority: is required with auth.robot"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r", "password": "p"}, "cluster": "h", "authority": "a b"}}"#, "auth.authority: must be a non-empty name without spaces"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r", "password": "p"}, "cluster": "h", "authority": "h", "timeout_ms": 0}}"#, "auth.timeout_ms: must be between 1 and 60000"),
        (r#"{"registries": {"quay.io": {}}, "read_only": false, "auth": {"robot": {"username": "r", "password": "p"}, "cluster": "h", "authority": "h"}}"#, "auth.robot: managed mode pulls only; it needs read_only true"),
        (r#"{"registries": {"quay.io": {}}, "auth": {"cluster": "harbor"}}"#, "auth.cluster: is only used with auth.robot (managed mode)"),
        (r#"{"registries": {"quay.io": {}}, "coalesce": {"max_wait_ms": 99}}"#, "coalesce.max_wait_ms: must be between 100 and 600000"),
        (r#"{"registries": {"quay.io": {}}, "coalesce": {"max_wait_ms": 600001}}"#, "coalesce.max_wait_ms: must be between 100 and 600000"),
        (r#"{"registries": {"quay.io": {}}, "coalesce": {"enabled": "yes"}}"#, "coalesce: invalid type: string \"yes\", expected a boolean"),
        (r#"{"registries": {"quay.io": {}}, "coalesce": {"max_wait": 100}}"#, "coalesce: unknown field `max_wait`"),
        (r#"{"registries": {"quay.io": {}}, "coalesce": true}"#, "coalesce: invalid type: boolean `true`, expected an object"),
        (r#"{"registries": {"quay.io": {}}, "auth": true}"#, "auth: invalid type: boolean `true`, expected an object"),
    ];
    let mut report = Report::new("configuration mistakes");
    for (json, expected) in rows {
        let error = error_of(json);
        report.check(json, error.contains(expected) && !error.contains('\n'), format_args!("got {error}, want one line with {expected}"));
    }
}

#[test]
fn syntax_and_type_errors_give_their_place_in_the_users_document() {
    // A registry's error on line 4 of the document (not of the registry's own text), a rule's
    // on line 3 of Higress's envelope.
    let plain = "{\n  \"registries\": {\n    \"quay.io\": {\"project\": \"q\"},\n    \"docker.io\": {\"project\": 7}\n  }\n}";
    let envelope = "{\"_rules_\": [\n  {\"_match_domain_\": [\"h\"],\n   \"registries\": {\"a\": {}}, \"auth\": {\"rewrite_tokens\": \"no\"}}\n]}";
    let rows: &[(&str, &str, &str)] = &[
        ("a registry's field", plain,
            r#"registries["docker.io"]: invalid type: integer `7`, expected a string at line 4 column 30"#),
        ("auth in a Higress rule", envelope,
            r#"_rules_[0].auth: invalid type: string "no", expected a boolean at line 3 column 59"#),
        ("a syntax error", "{\"registries\": {\"a\": {}},\n \"read_only\": tru}", "configuration: expected ident at line 2 column 18"),
    ];
    let mut report = Report::new("error positions");
    for (name, json, expected) in rows {
        let error = PluginConfig::from_json(json.as_bytes()).map(|_| ()).map_err(|e| e.to_string());
        report.eq(name, error, Err((*expected).to_owned()));
    }
}

#[test]
fn robot_passwords_never_show() {
    let config = Config::from_json(
        br#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "robot$mirror", "password": "s3cret-pw"}, "cluster": "harbor", "authority": "harbor.example.com"}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let managed = config.auth.managed.as_ref().unwrap_or_else(|| panic!("managed mode is configured"));
    assert_eq!(managed.authorization, "Basic cm9ib3QkbWlycm9yOnMzY3JldC1wdw==");
    let shown = format!("{config:?}");
    assert!(shown.contains("robot$mirror") && !shown.contains("s3cret-pw") && !shown.contains(&managed.authorization), "{shown}");
    // A password in the wrong place is not echoed in the error either.
    let error = error_of(r#"{"registries": {"quay.io": {}}, "auth": {"robot": {"username": "r", "password": "s3cret-pw", "extra": 1}}}"#);
    assert!(!error.contains("s3cret-pw"), "{error}");
}

#[test]
fn the_contract_example_compiles_with_its_defaults() {
    let config = Config::from_json(
        br#"{
          "registries": {
            "docker.io": {
              "project": "dockerhub-proxy",
              "hosts": ["docker.mirror.example.com"],
              "aliases": ["dockerhub"],
              "rewrite": {"^ksd-test/(.*)$": "production/$1"},
              "allow": ["^library/"],
              "deny": ["^library/evil$"]
            },
            "quay.io": {"project": "quay-proxy"}
          },
          "default_registry": "docker.io",
          "passthrough_projects": ["production"]
        }"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(config.read_only);
    assert!(!config.debug_header);
    assert!(!config.log_original_path);
    assert_eq!(config.coalesce, Coalesce { enabled: true, max_wait_ms: 30_000 });
    let keys: Vec<&str> = config.registries().iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["docker.io", "quay.io"]);
    assert!(config.is_project("production") && config.is_project("quay-proxy") && !config.is_project("library"));
}

#[test]
fn coalesce_is_read_as_the_contract_writes_it() {
    let rows: &[(&str, &str, Coalesce)] = &[
        ("the contract's own", r#""coalesce": {"enabled": true, "max_wait_ms": 30000}"#, Coalesce { enabled: true, max_wait_ms: 30_000 }),
        ("off", r#""coalesce": {"enabled": false}"#, Coalesce { enabled: false, max_wait_ms: 30_000 }),
        ("the shortest wait", r#""coalesce": {"max_wait_ms": 100}"#, Coalesce { enabled: true, max_wait_ms: 100 }),
        ("the longest wait", r#""coalesce": {"max_wait_ms": 600000}"#, Coalesce { enabled: true, max_wait_ms: 600_000 }),
        ("an empty object", r#""coalesce": {}"#, Coalesce { enabled: true, max_wait_ms: 30_000 }),
    ];
    let mut report = Report::new("coalesce");
    for (name, field, want) in rows {
        let json = format!(r#"{{"registries": {{"docker.io": {{"project": "hub"}}}}, {field}}}"#);
        report.eq(name, Config::from_json(json.as_bytes()).map(|config| config.coalesce).map_err(|e| e.to_string()), Ok(*want));
    }
}

#[test]
fn rewrite_rules_keep_document_order() {
    // As an object, and as a list of one-entry objects: the order that survives where object
    // keys get sorted (Kubernetes, protobuf `Struct`).
    let documents: [&[u8]; 2] = [
        br#"{"registries": {"docker.io": {"rewrite": {"^z/(.*)$": "p/$1", "^a/(.*)$": "p/${1}", "^m$": "p/m"}}}}"#,
        br#"{"registries": {"docker.io": {"rewrite": [{"^z/(.*)$": "p/$1"}, {"^a/(.*)$": "p/${1}"}, {"^m$": "p/m"}]}}}"#,
    ];
    for document in documents {
        let config = Config::from_json(document).unwrap_or_else(|e| panic!("{e}"));
        let sources: Vec<&str> = config.registries()[0].rewrite.iter().map(|r| r.pattern.source.as_str()).collect();
        assert_eq!(sources, ["^z/(.*)$", "^a/(.*)$", "^m$"]);
    }
}

#[test]
fn a_rewrite_list_holds_one_rule_per_entry() {
    let rows = [
        (r#"{"registries": {"q": {"rewrite": [{"a": "p/a", "b": "p/b"}]}}}"#, r#"registries["q"]: invalid length 2, expected one entry"#),
        (r#"{"registries": {"q": {"rewrite": [{}]}}}"#, r#"registries["q"]: invalid length 0, expected one entry"#),
        (r#"{"registries": {"q": {"rewrite": [{"a": "p/a"}, {"a": "p/b"}]}}}"#, r#"registries["q"]: duplicate key "a""#),
        (r#"{"registries": {"q": {"rewrite": ["a"]}}}"#, r#"registries["q"]: invalid type: string "a", expected an object"#),
        (r#"{"registries": {"q": {"rewrite": "a"}}}"#, r#"registries["q"]: invalid type: string "a", expected an object or a list of one-entry objects"#),
        (r#"{"registries": {"q": {"rewrite": [{"(": "x"}]}}}"#, r#"registries["q"].rewrite["("]: "#),
    ];
    let mut report = Report::new("rewrite lists");
    for (json, expected) in rows {
        let error = error_of(json);
        report.check(json, error.starts_with(expected), format_args!("got {error}, want {expected}"));
    }
}

#[test]
fn log_original_path_is_read_in_the_global_configuration_and_in_rules() {
    let config = Config::from_json(br#"{"registries": {"quay.io": {}}, "log_original_path": true}"#).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.log_original_path);
    let json = br#"{"registries": {"quay.io": {}}, "_rules_": [{"_match_domain_": ["m"], "registries": {"quay.io": {}}, "log_original_path": true}]}"#;
    let scoped = PluginConfig::from_json(json).unwrap_or_else(|e| panic!("{e}"));
    let flags: Vec<bool> = scoped.configs.iter().map(|config| config.log_original_path).collect();
    assert_eq!(flags, [true, false], "the rule's, then the global configuration's");
}
