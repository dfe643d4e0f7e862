//! What Harbor's project API says, read into the mapping from upstream registry to proxy-cache
//! project: the registry key of a project's upstream (`docker-hub` is `docker.io`, else the
//! URL's host), and which project wins when two cache the same upstream (the lowest id).

use std::fmt;

use serde::Deserialize;

use crate::docker_hub::{DOCKER_HUB, DOCKER_HUB_SYNONYMS};

/// Harbor's registry type for Docker Hub.
const DOCKER_HUB_TYPE: &str = "docker-hub";

/// A project of a page of `GET /api/v2.0/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Project {
    /// `project_id`.
    pub project_id: u64,
    /// `name`.
    pub name: String,
    /// `registry_id`: the upstream registry of a proxy-cache project, 0 (or absent) for others.
    #[serde(default)]
    pub registry_id: i64,
}

impl Project {
    /// Whether the project is a proxy cache (Harbor ignores a `q` it does not know, so the
    /// filter checks itself).
    pub fn is_proxy_cache(&self) -> bool {
        self.registry_id > 0
    }
}

/// Reads a page of `GET /api/v2.0/projects`.
pub fn read_projects(body: &[u8]) -> Result<Vec<Project>, String> {
    serde_json::from_slice(body).map_err(|e| format!("the project list is not the expected JSON: {e}"))
}

/// The upstream of a proxy-cache project, from `GET /api/v2.0/projects/{name}/summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `registry.type`: `docker-hub`, `harbor`, `docker-registry`, `quay`, `github-ghcr`...
    pub kind: String,
    /// `registry.url`.
    pub url: String,
}

/// Reads a project summary; `None` when it has no `registry` (not a proxy cache after all).
pub fn read_summary(body: &[u8]) -> Result<Option<Upstream>, String> {
    #[derive(Deserialize)]
    struct Summary {
        #[serde(default)]
        registry: Option<WireRegistry>,
    }
    #[derive(Deserialize)]
    struct WireRegistry {
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        url: String,
    }
    let summary: Summary = serde_json::from_slice(body).map_err(|e| format!("the project summary is not the expected JSON: {e}"))?;
    Ok(summary.registry.map(|registry| Upstream { kind: registry.kind, url: registry.url }))
}

/// The registry key of an upstream: `docker.io` for Docker Hub, else the URL's host, lower-cased,
/// its default port dropped. A URL with a path beyond `/` names part of a registry, which a
/// registry key cannot say: an error, which skips the project.
pub fn registry_key(upstream: &Upstream) -> Result<String, String> {
    if upstream.kind == DOCKER_HUB_TYPE {
        return Ok(DOCKER_HUB.to_owned());
    }
    let url = upstream.url.trim();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("registry URL {url:?} has no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(authority, path)| (authority, path));
    if !path.trim_end_matches('/').is_empty() {
        return Err(format!("registry URL {url:?} has a path; a registry key names a whole registry"));
    }
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host).to_ascii_lowercase();
    let key = match (scheme.as_str(), authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host.to_owned(),
        _ => authority,
    };
    if key.is_empty() {
        return Err(format!("registry URL {url:?} has no host"));
    }
    Ok(if key == DOCKER_HUB || DOCKER_HUB_SYNONYMS.contains(&key.as_str()) { DOCKER_HUB.to_owned() } else { key })
}

/// Upstream registries and the proxy-cache projects serving them, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// `(registry key, project)`, sorted by key, one project per key.
    pub entries: Vec<(String, String)>,
}

/// A mapping and what was left out of it, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// The mapping.
    pub mapping: Mapping,
    /// One line per project left out.
    pub warnings: Vec<String>,
}

/// The mapping of proxy-cache projects with their upstreams. Two projects for one upstream: the
/// lowest `project_id` wins, and a warning names both.
pub fn build(projects: &[(Project, Upstream)]) -> Built {
    let mut winners: Vec<(String, &Project)> = Vec::new();
    let mut warnings = Vec::new();
    for (project, upstream) in projects {
        let key = match registry_key(upstream) {
            Ok(key) => key,
            Err(e) => {
                warnings.push(format!("project {} skipped: {e}", project.name));
                continue;
            }
        };
        match winners.iter_mut().find(|(known, _)| *known == key) {
            Some((_, winner)) => {
                let (kept, dropped) = if project.project_id < winner.project_id { (project, *winner) } else { (*winner, project) };
                warnings.push(format!(
                    "projects {} (id {}) and {} (id {}) both cache {key}; {} (the lowest id) serves it",
                    kept.name, kept.project_id, dropped.name, dropped.project_id, kept.name
                ));
                *winner = kept;
            }
            None => winners.push((key, project)),
        }
    }
    let mut entries: Vec<(String, String)> = winners.into_iter().map(|(key, project)| (key, project.name.clone())).collect();
    entries.sort();
    Built { mapping: Mapping { entries }, warnings }
}

impl Mapping {
    /// The project serving `key`.
    pub fn project_of(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(known, _)| known == key).map(|(_, project)| project.as_str())
    }

    /// What changed from `old` to this mapping, for the info log; `None` when nothing did.
    pub fn changes_from(&self, old: &Mapping) -> Option<String> {
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for (key, project) in &self.entries {
            match old.project_of(key) {
                None => added.push(format!("{key} ({project})")),
                Some(before) if before != project => changed.push(format!("{key} ({before} -> {project})")),
                Some(_) => {}
            }
        }
        let removed: Vec<String> =
            old.entries.iter().filter(|(key, _)| self.project_of(key).is_none()).map(|(key, project)| format!("{key} ({project})")).collect();
        let mut parts = Vec::new();
        for (what, list) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !list.is_empty() {
                parts.push(format!("{what} {}", list.join(", ")));
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    /// The mapping as the filter's static `registries` would hold it, in JSON.
    pub fn to_registries_json(&self) -> String {
        let entries: Vec<String> =
            self.entries.iter().map(|(key, project)| format!("{}: {{\"project\": {}}}", json_string(key), json_string(project))).collect();
        format!("{{{}}}", entries.join(", "))
    }

    /// The shared-data form: one `key project` line per entry.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (key, project) in &self.entries {
            out.push_str(key);
            out.push(' ');
            out.push_str(project);
            out.push('\n');
        }
        out
    }

    /// Reads [`Mapping::encode`]'s form; `None` if it is not that.
    pub fn decode(text: &str) -> Option<Mapping> {
        let mut entries = Vec::new();
        for line in text.lines() {
            let (key, project) = line.split_once(' ')?;
            if key.is_empty() || project.is_empty() || project.contains(' ') {
                return None;
            }
            entries.push((key.to_owned(), project.to_owned()));
        }
        Some(Mapping { entries })
    }
}

impl fmt::Display for Mapping {
    /// `docker.io (dockerhub-proxy), quay.io (quay-proxy)`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("none");
        }
        for (i, (key, project)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{key} ({project})")?;
        }
        Ok(())
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    crate::oci::push_json_escaped(&mut out, text);
    out.push('"');
    out
}
