//! What any configuration document must come to (the `config` target's invariants): an error
//! that reads as one line naming the place of the mistake, or configurations (one, or Higress's
//! per-domain ones) of which every host selects one that exists (or, scoped, none), whose
//! lookups agree with their registries, and under which client requests decide as every decision
//! must.

use harbor_mirror_core::{decide, Config, ConfigError, Request, PluginConfig};

use std::fmt;

use crate::decision;
use crate::model::Clip;
use crate::Describe;

/// Request hosts, for the choice among Higress's per-domain configurations.
const AUTHORITIES: [&str; 7] = ["mirror.example.com:5000", "localhost:5000", "", "[::1]:443", "HARBOR.example.com", "a.b.c", ":"];

/// Checks `PluginConfig::from_json(document)`, as `on_configure` reads it: one configuration,
/// or Higress's `_rules_` envelope of several.
pub fn check(document: &[u8]) {
    match PluginConfig::from_json(document) {
        Err(error) => check_error(document, &error),
        Ok(scoped) => {
            ensure!(!scoped.configs.is_empty(), "a scoped configuration without configurations");
            for authority in AUTHORITIES {
                match scoped.selector.select(authority) {
                    Some(index) => ensure!(index < scoped.configs.len(), "host {authority:?} selects configuration {index} of {}", scoped.configs.len()),
                    None => ensure!(scoped.selector.by_host(), "host {authority:?} selects nothing from an unscoped configuration"),
                }
            }
            for config in &scoped.configs {
                check_config(config);
            }
        }
    }
}

fn check_config(config: &Config) {
    check_lookups(config);
    let shapes = Shapes::of(config);
    for (method, path, authority) in shapes.requests() {
        let request = Request { method, path: &path, authority };
        let decision = decide(config, &request);
        decision::check("fuzzed", config, &request, &decision);
    }
}

/// Envoy logs a configuration error as one line; it starts with the place (`registries["x"]`,
/// `auth.cluster`, `configuration`) and reads as a lower-case cause after it.
fn check_error(document: &[u8], error: &ConfigError) {
    let text = error.to_string();
    let ctx = Describe(|f: &mut fmt::Formatter<'_>| write!(f, "document {} gave {}", Clip(&String::from_utf8_lossy(document)), Clip(&text)));
    let breaks = ['\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}'];
    ensure!(!text.contains(breaks), "the error is not one line: {ctx}");
    // A place inside Higress's envelope starts with its key, `_rules_[i]`.
    let place = error.at.strip_prefix(harbor_mirror_core::higress::RULES_KEY).unwrap_or(&error.at);
    ensure!(
        place.is_empty() || place.starts_with(|c: char| c.is_ascii_lowercase() || c == '['),
        "the error's place does not start with a lower-case name or _rules_: {ctx}"
    );
    ensure!(!error.message.trim().is_empty(), "the error has no message: {ctx}");
    // The first word is lower case, unless it is an acronym (serde_json's `EOF while parsing`).
    let word: String = error.message.chars().take_while(|c| c.is_alphanumeric()).collect();
    let capitalised = word.starts_with(|c: char| c.is_uppercase()) && word.chars().any(|c| c.is_lowercase());
    ensure!(!capitalised, "the error's message starts with the capitalised word {word:?}: {ctx}");
}

/// Every registry is found by its key as `ns` and as alias, and its project is a project.
fn check_lookups(config: &Config) {
    let registries = config.registries();
    ensure!(!registries.is_empty(), "a configuration without registries");
    for (index, registry) in registries.iter().enumerate() {
        let key = registry.key.as_str();
        ensure!(registry.index == index, "registry {key} has index {} at {index}", registry.index);
        ensure!(config.registry_for_ns(key).map(|r| r.key.as_str()) == Some(key), "ns {key} finds another registry");
        ensure!(config.registry_for_alias(key).map(|r| r.key.as_str()) == Some(key), "alias {key} finds another registry");
        if let Some(project) = &registry.project {
            ensure!(config.is_project(project), "project {project} of {key} is no project");
            ensure!(config.is_under_project(&format!("{project}/a")), "{project}/a is not under project {project}");
            ensure!(!config.is_under_project(project), "the bare name {project} is under a project");
        }
    }
    if let Some(default) = config.default_registry() {
        ensure!(registries.iter().any(|r| std::ptr::eq(r, default)), "the default registry is not one of the registries");
    }
}

/// The registry keys and a project of a configuration, for requests that reach them.
struct Shapes {
    first: String,
    last: String,
    project: String,
}

const DIGEST: &str = "sha256:4f1d7c5a0b8e9f2c3d6e7a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";

impl Shapes {
    fn of(config: &Config) -> Self {
        let registries = config.registries();
        let key = |registry: Option<&harbor_mirror_core::config::Registry>| registry.map_or("docker.io", |r| r.key.as_str()).to_owned();
        Shapes {
            first: key(registries.first()),
            last: key(registries.last()),
            project: registries.iter().find_map(|r| r.project.clone()).unwrap_or_else(|| "production".to_owned()),
        }
    }

    /// docker, containerd, podman and skopeo request shapes, uploads, a token request, and a
    /// few paths the filter must refuse or pass untouched.
    fn requests(&self) -> Vec<(&'static str, String, &'static str)> {
        let Shapes { first, last, project } = self;
        let last_encoded = last.replace(':', "%3A");
        let m = "mirror.example.com:5000";
        vec![
            ("GET", "/v2/".to_owned(), m),
            ("GET", "/v2/library/nginx/manifests/latest".to_owned(), m),
            ("HEAD", format!("/v2/library/nginx/manifests/latest?ns={first}"), m),
            ("GET", format!("/v2/library/nginx/blobs/{DIGEST}?ns={last_encoded}"), m),
            ("GET", format!("/{last}/v2/coreos/etcd/manifests/v3.5"), m),
            ("GET", format!("/{first}/v2/"), m),
            ("GET", format!("/v2/{project}/library/nginx/manifests/latest"), m),
            ("PUT", "/v2/team/app/manifests/v1".to_owned(), m),
            ("POST", format!("/v2/team/app/blobs/uploads/?ns={first}"), m),
            ("PATCH", "/v2/team/app/blobs/uploads/0b1f-4c2e?_state=abc".to_owned(), m),
            ("GET", format!("/v2/a/b/tags/list?n=10&last=x&ns={first}"), "localhost:5000"),
            ("GET", format!("/v2/a/referrers/{DIGEST}?artifactType=application%2Fvnd.example"), m),
            ("GET", format!("/service/token?service=harbor-registry&scope=repository:library/nginx:pull&scope=repository:{project}/x:pull,push"), m),
            ("GET", format!("/{first}/service/token?scope=repository%3Aa%2Fb%3Apull+registry%3Acatalog%3A*&ns={last_encoded}"), m),
            ("GET", "/v2/_catalog".to_owned(), m),
            ("DELETE", format!("/v2/x/manifests/{DIGEST}"), m),
            ("GET", "/v2/../v2/x/manifests/1".to_owned(), m),
            ("GET", "/api/v2.0/projects?page=1".to_owned(), m),
        ]
    }
}
