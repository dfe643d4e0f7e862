//! The fixed configurations the `decide` and `token_scopes` targets choose from, compiled once.

use std::sync::LazyLock;

use harbor_mirror_core::Config;

/// One fixed configuration, with what a request needs to select each of its registries.
pub struct Fixed {
    /// Its name in failure messages.
    pub name: &'static str,
    /// The plugin configuration.
    pub json: &'static str,
    /// An alias (`/<alias>/v2/...`) of one of its registries.
    pub alias: &'static str,
    /// An `:authority` whose host is one of its registries' `hosts`.
    pub host_authority: &'static str,
}

/// The fixed configurations, in the order an input byte picks them.
pub const FIXED: [Fixed; 3] = [
    // tests/e2e-plugin-config.json, plus allow rules: rewrite into a passthrough project, alias,
    // hosts, allow and deny, a default registry.
    Fixed {
        name: "e2e",
        json: r#"{
          "registries": {
            "docker.io": {
              "project": "dockerhub-proxy",
              "aliases": ["dockerhub"],
              "rewrite": {"^ksd-test/(.*)$": "production/$1"},
              "deny": ["^library/evil$"]
            },
            "quay.io": {"project": "quay-proxy", "hosts": ["localhost"], "allow": ["^coreos/", "^prometheus/"]},
            "ghcr.io": {"project": "ghcr-proxy"}
          },
          "default_registry": "docker.io",
          "passthrough_projects": ["production"],
          "debug_header": true
        }"#,
        alias: "dockerhub",
        host_authority: "localhost:5000",
    },
    // No default registry; writes allowed; a registry without project whose rules map some
    // names into another registry's project, leave others outside every project (refused), and a
    // rule making an invalid name; named captures; a `:port` key; a deny rule anywhere in a name.
    Fixed {
        name: "rules",
        json: r#"{
          "registries": {
            "docker.io": {
              "project": "hub",
              "rewrite": {
                "^library/(.*)$": "hub-official/$1",
                "^team/(?P<app>[a-z0-9-]+)$": "internal/team-${app}",
                "^up/(.*)$": "internal/Up/$1"
              }
            },
            "localhost:5000": {
              "aliases": ["local", "l.5000"],
              "hosts": ["registry.local"],
              "rewrite": {"^mirror/(.*)$": "hub/$1", "^(.*)$": "elsewhere/$1"}
            },
            "registry.k8s.io": {"project": "k8s", "hosts": ["k8s.mirror.example.com"], "deny": ["(^|/)secret($|/)"]},
            "gcr.io": {"project": "gcr", "aliases": ["gcr"], "allow": ["^distroless/"]}
          },
          "passthrough_projects": ["hub-official", "internal"],
          "read_only": false
        }"#,
        alias: "local",
        host_authority: "registry.local",
    },
    // Token handling off; `library` itself a passthrough project; the default not Docker Hub.
    Fixed {
        name: "tokens-off",
        json: r#"{
          "registries": {
            "ghcr.io": {"project": "ghcr-proxy", "aliases": ["gh"]},
            "docker.io": {"project": "dockerhub-proxy", "hosts": ["docker.mirror.example.com"]},
            "quay.io": {"project": "quay-proxy", "deny": ["^evil/"]}
          },
          "default_registry": "ghcr.io",
          "passthrough_projects": ["library"],
          "auth": {"rewrite_tokens": false}
        }"#,
        alias: "gh",
        host_authority: "docker.mirror.example.com:443",
    },
];

static COMPILED: LazyLock<Vec<Config>> = LazyLock::new(|| {
    FIXED
        .iter()
        .map(|fixed| Config::from_json(fixed.json.as_bytes()).unwrap_or_else(|e| panic!("fixed configuration {}: {e}", fixed.name)))
        .collect()
});

/// The fixed configuration an input byte picks, compiled.
pub fn pick(byte: u8) -> (&'static Fixed, &'static Config) {
    let i = usize::from(byte) % FIXED.len();
    (&FIXED[i], &COMPILED[i])
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_fixed_configuration_compiles() {
        for byte in 0..3 {
            let (fixed, config) = super::pick(byte);
            assert!(config.registry_for_alias(fixed.alias).is_some(), "{}", fixed.name);
            assert!(config.registry_for_host(crate::text::host_of(fixed.host_authority)).is_some(), "{}", fixed.name);
        }
    }
}
