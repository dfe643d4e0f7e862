//! `harbor-mirror import-k3s`: a k3s/RKE2 `registries.yaml` (mirrors with `endpoint` and
//! `rewrite`, and per-host `configs`) converted into the filter's configuration, with a note
//! for everything that cannot be carried over.
//!
//! With k3s, containerd rewrites names on the node and pulls from Harbor directly. With the
//! filter, clients keep plain names and point at the mirror; Harbor's address moves into Envoy's
//! `harbor` cluster, credentials stay with the clients (or become a managed-mode robot), and TLS
//! settings for Harbor go to Envoy's cluster.

use std::fmt::Write;

use harbor_mirror_core::oci;

use serde_json::Value;

use crate::yaml;

/// The conversion: the configuration's JSON text and what was not carried over.
#[derive(Debug)]
pub struct Import {
    pub config_json: String,
    pub notes: Vec<String>,
}

/// One registry of the converted configuration.
#[derive(Debug, Default)]
struct Registry {
    key: String,
    project: Option<String>,
    rewrite: Vec<(String, String)>,
}

/// Converts a `registries.yaml` document.
pub fn import(source: &str) -> Result<Import, String> {
    let document = yaml::parse(source).map_err(|e| format!("registries.yaml: {e}"))?;
    let mut notes = Vec::new();
    let mut registries: Vec<Registry> = Vec::new();
    let mut endpoints: Vec<String> = Vec::new();
    for (field, value) in entries(&document, "registries.yaml")? {
        match field.as_str() {
            "mirrors" => {
                for (name, mirror) in entries(value, "mirrors")? {
                    let at = format!("mirrors[{name:?}]");
                    let Some(key) = registry_key(name, &at, &mut notes) else { continue };
                    if registries.iter().any(|r| r.key == key) {
                        return Err(format!("{at}: {key:?} is mirrored twice"));
                    }
                    registries.push(import_mirror(&at, key, mirror, &mut endpoints, &mut notes)?);
                }
            }
            "configs" => {
                for (host, config) in entries(value, "configs")? {
                    for (setting, _) in entries(config, &format!("configs[{host:?}]"))? {
                        notes.push(config_note(host, setting));
                    }
                }
            }
            other => notes.push(format!("{other}: not a k3s registries.yaml section; ignored")),
        }
    }
    if registries.is_empty() {
        return Err("registries.yaml: no mirrors to convert".to_owned());
    }
    match endpoints.as_slice() {
        [] => notes.push("no endpoint: set Harbor's URL as Envoy's harbor cluster (HARBOR_URL=... ./build.sh up)".to_owned()),
        [one] => notes.push(format!(
            "endpoint {one}: this is Harbor; it becomes Envoy's harbor cluster (HARBOR_URL={one} ./build.sh up), and clients use the mirror instead (harbor-mirror clients --mirror URL)"
        )),
        many => notes.push(format!(
            "endpoints {}: one Envoy front serves one Harbor; run one front per Harbor, each with its own configuration",
            many.join(", ")
        )),
    }
    let passthrough = passthrough_projects(&registries, &mut notes);
    let default_registry = registries.iter().find(|r| r.key == "docker.io").map(|r| r.key.clone());
    if default_registry.is_none() {
        notes.push("no docker.io mirror: requests without ns, alias or host match are not rewritten (default_registry unset)".to_owned());
    }
    Ok(Import { config_json: render(&registries, default_registry.as_deref(), &passthrough), notes })
}

/// The mapping's entries, in document order; null counts as empty.
fn entries<'v>(value: &'v Value, at: &str) -> Result<Vec<(&'v String, &'v Value)>, String> {
    match value {
        Value::Object(entries) => Ok(entries.iter().collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(format!("{at}: expected a mapping")),
    }
}

fn texts(value: &Value, at: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(text) => Ok(vec![text.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                _ => Err(format!("{at}: expected a list of strings")),
            })
            .collect(),
        _ => Err(format!("{at}: expected a list of strings")),
    }
}

/// The filter's registry key for a mirror name; `None` (with a note) when there is none.
fn registry_key(name: &str, at: &str, notes: &mut Vec<String>) -> Option<String> {
    let key = name.to_ascii_lowercase();
    match key.as_str() {
        "*" => {
            notes.push(format!(
                "{at}: the wildcard mirror is not carried over; name each upstream registry (containerd's _default/hosts.toml then sends each one's ns)"
            ));
            None
        }
        "index.docker.io" | "registry-1.docker.io" => {
            notes.push(format!("{at}: Docker Hub is \"docker.io\" in the filter"));
            Some("docker.io".to_owned())
        }
        _ => Some(key),
    }
}

fn import_mirror(at: &str, key: String, mirror: &Value, endpoints: &mut Vec<String>, notes: &mut Vec<String>) -> Result<Registry, String> {
    let mut registry = Registry { key, ..Registry::default() };
    for (field, value) in entries(mirror, at)? {
        match field.as_str() {
            "endpoint" => {
                for url in texts(value, &format!("{at}.endpoint"))? {
                    note_endpoint(at, &url, &registry.key, endpoints, notes);
                }
            }
            "rewrite" => {
                for (pattern, replacement) in entries(value, &format!("{at}.rewrite"))? {
                    let rule_at = format!("{at}.rewrite[{pattern:?}]");
                    let Value::String(replacement) = replacement else {
                        return Err(format!("{rule_at}: expected a string replacement"));
                    };
                    if let Err(e) = regex_lite::Regex::new(pattern) {
                        let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                        notes.push(format!("{rule_at}: not carried over, the filter's regex syntax refuses it: {first}"));
                        continue;
                    }
                    registry.rewrite.push((pattern.clone(), replacement.clone()));
                }
            }
            other => notes.push(format!("{at}.{other}: not carried over (the filter has no such setting)")),
        }
    }
    // A last rule that maps every name under one project is that registry's project.
    if let Some((pattern, replacement)) = registry.rewrite.last()
        && let Some(project) = catch_all_project(pattern, replacement)
    {
        registry.project = Some(project.to_owned());
        registry.rewrite.pop();
    }
    if registry.project.is_none() {
        notes.push(format!(
            "{at}: no rule maps every name; k3s pulls unmatched names from Harbor as they are, the filter refuses them (403): set registries[{:?}].project to its proxy-cache project",
            registry.key
        ));
    }
    Ok(registry)
}

/// `^(.*)$ -> P/$1` and its spellings: every name under project `P`.
fn catch_all_project<'r>(pattern: &str, replacement: &'r str) -> Option<&'r str> {
    const EVERY_NAME: [&str; 6] = ["^(.*)$", "(.*)", "^(.*)", "(.*)$", "^(.+)$", "(.+)"];
    if !EVERY_NAME.contains(&pattern) {
        return None;
    }
    let project = replacement.strip_suffix("/$1").or_else(|| replacement.strip_suffix("/${1}"))?;
    oci::is_valid_component(project).then_some(project)
}

fn note_endpoint(at: &str, url: &str, key: &str, endpoints: &mut Vec<String>, notes: &mut Vec<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        notes.push(format!("{at}.endpoint {url:?}: not a URL; ignored"));
        return;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let upstream = key == host || (key == "docker.io" && matches!(host, "registry-1.docker.io" | "index.docker.io" | "docker.io"));
    if upstream {
        notes.push(format!("{at}.endpoint {url}: the upstream registry itself, which clients fall back to on their own"));
        return;
    }
    if !path.trim_matches('/').is_empty() && path.trim_matches('/') != "v2" {
        notes.push(format!("{at}.endpoint {url}: the path /{path} is not carried over; the filter serves /v2/ at the mirror's root"));
    }
    let base = format!("{scheme}://{host}");
    if !endpoints.contains(&base) {
        endpoints.push(base);
    }
}

fn config_note(host: &str, setting: &str) -> String {
    let at = format!("configs[{host:?}].{setting}");
    match setting {
        "auth" => format!(
            "{at}: credentials are not carried over; clients keep authenticating to Harbor (pass-through), or a robot account goes in auth.robot (managed mode)"
        ),
        "tls" => format!("{at}: TLS settings for Harbor belong to Envoy's harbor cluster (its UpstreamTlsContext), not the filter"),
        _ => format!("{at}: not carried over"),
    }
}

/// Projects the rewrite rules target that are not a registry's project: the filter only lets
/// rules map into configured projects.
fn passthrough_projects(registries: &[Registry], notes: &mut Vec<String>) -> Vec<String> {
    let mut projects: Vec<String> = Vec::new();
    for registry in registries {
        for (pattern, replacement) in &registry.rewrite {
            let first = replacement.split('/').next().unwrap_or_default();
            if first.contains('$') {
                notes.push(format!(
                    "mirrors[{:?}].rewrite[{pattern:?}]: its project depends on the name; the filter refuses names it maps outside the configured projects",
                    registry.key
                ));
                continue;
            }
            let is_registry_project = registries.iter().any(|r| r.project.as_deref() == Some(first));
            if !is_registry_project && !projects.iter().any(|p| p == first) {
                projects.push(first.to_owned());
            }
        }
    }
    projects
}

fn json(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// The configuration as JSON, rules in document order (the filter applies the first match),
/// written as a list so that the order also survives a Kubernetes resource.
fn render(registries: &[Registry], default_registry: Option<&str>, passthrough: &[String]) -> String {
    let mut out = String::from("{\n  \"registries\": {");
    for (i, registry) in registries.iter().enumerate() {
        let mut fields = Vec::new();
        if let Some(project) = &registry.project {
            fields.push(format!("\"project\": {}", json(project)));
        }
        if !registry.rewrite.is_empty() {
            // A list of one-entry objects: its order survives a Kubernetes resource.
            let rules: Vec<String> = registry.rewrite.iter().map(|(p, r)| format!("{{{}: {}}}", json(p), json(r))).collect();
            fields.push(format!("\"rewrite\": [{}]", rules.join(", ")));
        }
        let comma = if i + 1 < registries.len() { "," } else { "" };
        let _ = write!(out, "\n    {}: {{{}}}{comma}", json(&registry.key), fields.join(", "));
    }
    out.push_str("\n  }");
    if let Some(default) = default_registry {
        let _ = write!(out, ",\n  \"default_registry\": {}", json(default));
    }
    if !passthrough.is_empty() {
        let list: Vec<String> = passthrough.iter().map(|p| json(p)).collect();
        let _ = write!(out, ",\n  \"passthrough_projects\": [{}]", list.join(", "));
    }
    out.push_str("\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbor_mirror_core::{decide, Config, Request};

    /// The rewrite recipe Harbor users run on k3s, and its conversion.
    const K3S: &str = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://harbor.example.com"
    rewrite:
      "^rancher/(.*)": "mirrored/rancher-images/$1"
      "^(.*)$": "dockerhub-proxy/$1"
  quay.io:
    endpoint: ["https://harbor.example.com/v2"]
    rewrite:
      "(.*)": "quay-proxy/$1"
  registry.k8s.io:
    endpoint: ["https://harbor.example.com", "https://registry.k8s.io"]
configs:
  "harbor.example.com":
    auth:
      username: robot$k3s
      password: secret
    tls:
      ca_file: /etc/ssl/harbor-ca.pem
"#;

    #[test]
    fn converts_mirrors_and_rewrites_into_a_configuration_the_filter_accepts() {
        let import = import(K3S).expect("import");
        assert_eq!(
            import.config_json,
            r#"{
  "registries": {
    "docker.io": {"project": "dockerhub-proxy", "rewrite": [{"^rancher/(.*)": "mirrored/rancher-images/$1"}]},
    "quay.io": {"project": "quay-proxy"},
    "registry.k8s.io": {}
  },
  "default_registry": "docker.io",
  "passthrough_projects": ["mirrored"]
}
"#
        );
        let config = Config::from_json(import.config_json.as_bytes()).expect("the filter accepts it");
        // The same names land where k3s's rewrites sent them.
        let cases = [
            ("/v2/rancher/fleet/manifests/v1?ns=docker.io", "/v2/mirrored/rancher-images/fleet/manifests/v1"),
            ("/v2/nginx/manifests/1?ns=docker.io", "/v2/dockerhub-proxy/library/nginx/manifests/1"),
            ("/v2/coreos/etcd/manifests/3?ns=quay.io", "/v2/quay-proxy/coreos/etcd/manifests/3"),
        ];
        for (path, expected) in cases {
            let decision = decide(&config, &Request { method: "GET", path, authority: "m" });
            assert_eq!(decision.new_path(), Some(expected), "{path}");
        }
    }

    #[test]
    fn says_what_is_not_carried_over() {
        let notes = import(K3S).expect("import").notes;
        let expected = [
            "mirrors[\"registry.k8s.io\"]: no rule maps every name",
            "mirrors[\"registry.k8s.io\"].endpoint https://registry.k8s.io: the upstream registry itself",
            "configs[\"harbor.example.com\"].auth: credentials are not carried over",
            "configs[\"harbor.example.com\"].tls: TLS settings for Harbor belong to Envoy's harbor cluster",
            "endpoint https://harbor.example.com: this is Harbor",
        ];
        for want in expected {
            assert!(notes.iter().any(|n| n.contains(want)), "wanted {want:?} in {notes:#?}");
        }
        assert_eq!(notes.len(), expected.len(), "{notes:#?}");
    }

    #[test]
    fn notes_cover_what_the_filter_cannot_express() {
        let cases = [
            ("mirrors:\n  \"*\":\n    endpoint: [\"https://h\"]\n  docker.io: {}\n", "mirrors[\"*\"]: the wildcard mirror is not carried over"),
            ("mirrors:\n  index.docker.io: {}\n", "Docker Hub is \"docker.io\""),
            ("mirrors:\n  docker.io:\n    rewrite:\n      \"\\\\p{Greek}\": \"p/$1\"\n", "the filter's regex syntax refuses it"),
            ("mirrors:\n  quay.io:\n    rewrite:\n      \"^(.*)/(.*)$\": \"$1/$2\"\n", "its project depends on the name"),
            ("mirrors:\n  quay.io:\n    endpoint: [\"https://a\", \"https://b\"]\n", "one Envoy front serves one Harbor"),
            ("mirrors:\n  quay.io:\n    endpoint: [\"https://a/prefix\"]\n", "the path /prefix is not carried over"),
            ("mirrors:\n  quay.io: {}\n", "no docker.io mirror"),
            ("mirrors:\n  quay.io:\n    mirror-auth: x\n", "mirrors[\"quay.io\"].mirror-auth: not carried over"),
        ];
        for (source, want) in cases {
            let notes = import(source).expect(source).notes;
            assert!(notes.iter().any(|n| n.contains(want)), "{source}: wanted {want:?} in {notes:#?}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let cases = [
            ("configs: {}\n", "no mirrors to convert"),
            ("mirrors: [a]\n", "mirrors: expected a mapping"),
            ("mirrors:\n  docker.io:\n    endpoint: {a: b}\n", "endpoint: expected a list of strings"),
            ("mirrors:\n  docker.io: {}\n  Docker.io: {}\n", "\"docker.io\" is mirrored twice"),
            ("mirrors: [a\n", "registries.yaml: line 1 column 10: unclosed bracket"),
            ("mirrors:\n  docker.io: {}\n  docker.io: {}\n", "registries.yaml: line 3 column 3: duplicate mapping key: docker.io"),
        ];
        for (source, want) in cases {
            let err = import(source).expect_err(source);
            assert!(err.contains(want), "{source}: {err}");
        }
    }
}
