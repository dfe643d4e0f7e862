//! `harbor-mirror explain`: the filter's decision for one request, field by field.

use std::fmt::Write;

use harbor_mirror_core::{decide, Decision, Request, Route, Rule, PluginConfig};

/// Parses `METHOD PATH`, as an access log or a curl command shows a request.
pub fn parse_request_line(line: &str) -> Result<(&str, &str), String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(method), Some(path), None) if method.bytes().all(|b| b.is_ascii_uppercase()) => Ok((method, path)),
        _ => Err(format!("request {line:?}: expected 'METHOD PATH', e.g. 'GET /v2/library/nginx/manifests/latest'")),
    }
}

/// The decision for `method path` sent to `host`, as `key: value` lines: under the
/// configuration the host selects (Higress's rules), or that none applies.
pub fn explain(scoped: &PluginConfig, method: &str, path: &str, host: &str) -> String {
    let mut out = String::new();
    let host_shown = if host.is_empty() { "(none; --host sets it)" } else { host };
    let _ = writeln!(out, "request:  {method} {path}");
    let _ = writeln!(out, "host:     {host_shown}");
    let Some(config) = scoped.selector.select(host).map(|index| &scoped.configs[index]) else {
        let _ = writeln!(
            out,
            "decision: not this plugin's: no _rules_ domain matches the host and there is no global configuration; forwarded untouched"
        );
        return out;
    };
    let decision = decide(config, &Request { method, path, authority: host });
    match &decision {
        Decision::Refuse(refusal) => {
            let _ = writeln!(out, "decision: refuse, {} {}", refusal.status, refusal.code.as_str());
            let _ = writeln!(out, "reason:   {}", refusal.message);
            let _ = writeln!(out, "body:     {}", refusal.body());
        }
        Decision::Forward { path: new_path, route } => {
            let verb = if new_path.is_some() { "forward, rewritten" } else { "forward, unchanged" };
            let _ = writeln!(out, "decision: {verb}");
            explain_route(&mut out, route);
            let _ = writeln!(out, "path:     {}", new_path.as_deref().unwrap_or(path));
        }
    }
    // The filter's own one-line account: its debug log line and `x-harbor-mirror` header.
    let _ = writeln!(out, "summary:  {decision}");
    out
}

fn explain_route(out: &mut String, route: &Route<'_>) {
    match route {
        Route::Ping { registry } => {
            let _ = writeln!(out, "route:    api version check");
            if let Some(registry) = registry {
                let _ = writeln!(out, "registry: {} (by alias)", registry.key);
            }
        }
        Route::NotRepository => {
            let _ = writeln!(out, "route:    not a repository request (Harbor's own API, UI or /v2/_catalog)");
        }
        Route::NoRegistry => {
            let _ = writeln!(out, "route:    no registry applies (no ns, alias, host match or default_registry)");
        }
        Route::Prefixed => {
            let _ = writeln!(out, "route:    the name is already under a configured or passthrough project");
        }
        Route::Mapped { registry, by, rule } => {
            let _ = writeln!(out, "route:    repository request");
            let _ = writeln!(out, "registry: {} (selected by {})", registry.key, selected_by(*by));
            match rule {
                Rule::Project => {
                    let project = registry.project.as_deref().unwrap_or("?");
                    let _ = writeln!(out, "rule:     project {project:?}");
                }
                Rule::Rewrite(i) => {
                    if let Some(rule) = registry.rewrite.get(*i) {
                        let _ = writeln!(out, "rule:     rewrite[{i}] {:?} -> {:?}", rule.pattern.source, rule.replacement);
                    }
                }
            }
        }
        Route::Token { registry, by, refused } => {
            let _ = writeln!(out, "route:    token request; repository scopes mapped");
            let _ = writeln!(out, "registry: {} (selected by {})", registry.key, selected_by(*by));
            for refusal in refused {
                let _ = writeln!(out, "dropped:  {}", refusal.message);
            }
        }
    }
}

fn selected_by(by: harbor_mirror_core::SelectedBy) -> &'static str {
    match by {
        harbor_mirror_core::SelectedBy::Ns => "the ns query parameter",
        harbor_mirror_core::SelectedBy::Alias => "the /<alias>/v2/ path",
        harbor_mirror_core::SelectedBy::Host => "the request's host",
        harbor_mirror_core::SelectedBy::Default => "default_registry",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "registries": {
            "docker.io": {"project": "dockerhub-proxy", "aliases": ["dockerhub"], "deny": ["^library/evil$"]},
            "quay.io": {"project": "quay-proxy", "hosts": ["quay.mirror.example.com"], "rewrite": {"^coreos/(.*)$": "mirrored/coreos/$1"}}
        },
        "default_registry": "docker.io",
        "passthrough_projects": ["mirrored"]
    }"#;

    #[test]
    fn explains_each_kind_of_decision() {
        let scoped = PluginConfig::from_json(CONFIG.as_bytes()).expect("config");
        let cases = [
            (
                "GET /v2/library/nginx/manifests/latest?ns=docker.io",
                "",
                &["decision: forward, rewritten", "registry: docker.io (selected by the ns query parameter)", "summary:  rewrote: registry=docker.io by=ns rule=project path=/v2/dockerhub-proxy/library/nginx/manifests/latest", "rule:     project \"dockerhub-proxy\"", "path:     /v2/dockerhub-proxy/library/nginx/manifests/latest"][..],
            ),
            (
                "HEAD /v2/coreos/etcd/manifests/v3",
                "quay.mirror.example.com:443",
                &["registry: quay.io (selected by the request's host)", "rule:     rewrite[0] \"^coreos/(.*)$\" -> \"mirrored/coreos/$1\"", "path:     /v2/mirrored/coreos/etcd/manifests/v3"],
            ),
            ("GET /v2/library/evil/manifests/1", "", &["decision: refuse, 403 DENIED", "body:     {\"errors\":[{\"code\":\"DENIED\""]),
            ("GET /v2/../api/v2.0/users", "", &["decision: refuse, 400 NAME_INVALID"]),
            ("GET /dockerhub/v2/", "", &["route:    api version check", "registry: docker.io (by alias)", "path:     /v2/"]),
            ("GET /api/v2.0/projects", "", &["decision: forward, unchanged", "route:    not a repository request"]),
            ("GET /v2/mirrored/coreos/etcd/tags/list", "", &["route:    the name is already under", "path:     /v2/mirrored/coreos/etcd/tags/list"]),
            (
                "GET /service/token?service=harbor-registry&scope=repository:library/nginx:pull",
                "",
                &["route:    token request", "path:     /service/token?service=harbor-registry&scope=repository:dockerhub-proxy/library/nginx:pull"],
            ),
        ];
        for (request, host, expected) in cases {
            let (method, path) = parse_request_line(request).expect(request);
            let out = explain(&scoped, method, path, host);
            for line in expected {
                assert!(out.contains(line), "{request}: wanted {line:?} in\n{out}");
            }
        }
    }

    #[test]
    fn a_request_is_method_and_path() {
        assert_eq!(parse_request_line(" GET  /v2/ "), Ok(("GET", "/v2/")));
        for bad in ["", "GET", "get /v2/", "GET /v2/ HTTP/1.1"] {
            assert!(parse_request_line(bad).is_err(), "{bad}");
        }
    }
}
