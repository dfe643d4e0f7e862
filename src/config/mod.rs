//! The plugin configuration, compiled once into a read-only [`Config`] with every regex built
//! and every lookup table filled: the compiled types here, `compile` (from the JSON wire form
//! read by `wire`), `check` (what each name must look like), `pattern` (user
//! regexes), `index` (sorted lookups) and `error`.
//!
//! Errors name the place of the mistake the way a user would point at it:
//! `registries["quay.io"].rewrite["("]: regex parse error ...`.

mod check;
mod compile;
mod error;
mod index;
mod pattern;

use std::fmt;

use crate::discovery::mapping::Mapping;
pub use crate::docker_hub::DOCKER_HUB;
use crate::docker_hub::DOCKER_HUB_SYNONYMS;
use crate::oci;
use crate::wire::WireConfig;

pub use check::is_valid_registry_key;
pub use error::ConfigError;
pub use pattern::{Pattern, RewriteRule};

use index::Index;

/// One upstream registry served through a Harbor proxy-cache project.
#[derive(Debug)]
pub struct Registry {
    /// The registry key (`docker.io`, `quay.io`, `localhost:5000`).
    pub key: String,
    /// Position in the configuration, for per-registry tables such as metrics.
    pub index: usize,
    /// The Harbor proxy-cache project names go under when no rule applies.
    pub project: Option<String>,
    /// Ordered rewrite rules; the first that matches wins.
    pub rewrite: Vec<RewriteRule>,
    /// If not empty, names must match one of these.
    pub allow: Vec<Pattern>,
    /// Names matching any of these are refused.
    pub deny: Vec<Pattern>,
}

impl Registry {
    /// Whether this is Docker Hub, whose single-segment names live under `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.key == DOCKER_HUB
    }
}

/// How the filter takes part in Harbor's token auth.
#[derive(Debug)]
pub struct Auth {
    /// Pass-through mode: point Harbor's challenges back at this proxy and rewrite the scopes of
    /// token requests. Off only to show what clients do without it.
    pub rewrite_tokens: bool,
    /// Managed mode: the filter fetches tokens with a robot account; clients stay anonymous.
    pub managed: Option<Managed>,
}

impl Auth {
    /// The mode, for the configure log line: `pass-through auth`, `token handling off`, or
    /// `managed auth as <robot> via cluster "<cluster>"`.
    pub fn describe(&self) -> String {
        match &self.managed {
            Some(managed) => format!("managed auth as {} via cluster {:?}", managed.username, managed.cluster),
            None if self.rewrite_tokens => "pass-through auth".to_owned(),
            None => "token handling off".to_owned(),
        }
    }
}

/// Managed mode: a robot account the filter authenticates with.
#[derive(Clone)]
pub struct Managed {
    /// The robot's name, for logs.
    pub username: String,
    /// `Basic <base64(username:password)>`, the only form the password is kept in.
    pub authorization: String,
    /// The Envoy cluster that reaches Harbor for out-of-band token requests.
    pub cluster: String,
    /// The `:authority` of those requests (Harbor's host name).
    pub authority: String,
    /// How long a token request may take before the client gets 503.
    pub timeout_ms: u64,
}

impl fmt::Debug for Managed {
    /// Never shows the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed")
            .field("username", &self.username)
            .field("authorization", &"<redacted>")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The default for `auth.timeout_ms`.
pub const DEFAULT_TOKEN_TIMEOUT_MS: u64 = 5000;
pub(super) const MAX_TOKEN_TIMEOUT_MS: u64 = 60_000;

/// Discovery: the registries read from Harbor's project API.
pub struct Discover {
    /// The Envoy cluster that reaches Harbor's API.
    pub cluster: String,
    /// The `:authority` of the API calls (Harbor's host name).
    pub authority: String,
    /// The robot whose Basic credentials the calls carry (`discover.robot`, else `auth.robot`);
    /// `None`: anonymous, and Harbor lists public projects only.
    pub robot: Option<String>,
    /// `Basic <base64(username:password)>` of that robot.
    pub authorization: Option<String>,
    /// Seconds between refreshes.
    pub interval_s: u64,
    /// How long an API call may take.
    pub timeout_ms: u64,
}

impl fmt::Debug for Discover {
    /// Never shows the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discover")
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("robot", &self.robot)
            .field("interval_s", &self.interval_s)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// `coalesce`: identical manifest and layer GETs in flight at once share one upstream fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    /// Whether they do.
    pub enabled: bool,
    /// The longest a request waits for the identical one in flight, in milliseconds.
    pub max_wait_ms: u64,
}

/// The default for `coalesce.max_wait_ms`.
pub const DEFAULT_COALESCE_MAX_WAIT_MS: u64 = 30_000;
pub(super) const COALESCE_MAX_WAIT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

impl Default for Coalesce {
    fn default() -> Self {
        Coalesce { enabled: true, max_wait_ms: DEFAULT_COALESCE_MAX_WAIT_MS }
    }
}

/// The default for `discover.interval_s`.
pub const DEFAULT_DISCOVER_INTERVAL_S: u64 = 300;
pub(super) const MAX_DISCOVER_INTERVAL_S: u64 = 86_400;

/// Where a configuration with `discover` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// No `discover`: the registries are the configuration's.
    Off,
    /// `discover`, and no mapping read from Harbor yet: requests that need routing get 503.
    Awaiting,
    /// `discover`, with this mapping merged in (a static registry overrides the one for its key).
    Applied(Mapping),
}

/// The compiled, read-only configuration.
#[derive(Debug)]
pub struct Config {
    registries: Vec<Registry>,
    /// Name to registry index, sorted: per-request lookups stay flat however many registries
    /// are configured. Keys and hosts compare case-insensitively, aliases and projects exactly.
    by_key: Index,
    by_alias: Index,
    by_host: Index,
    /// Registry and passthrough projects (the index is unused).
    projects: Index,
    default_registry: Option<usize>,
    /// Refuse rewritten requests other than GET and HEAD.
    pub read_only: bool,
    /// Add the `x-harbor-mirror` response header.
    pub debug_header: bool,
    /// Keep a rewritten request's original path in the filter state
    /// `wasm.harbor_mirror.original_path`, for the access log.
    pub log_original_path: bool,
    /// Token auth: pass-through rewriting and managed mode.
    pub auth: Auth,
    /// Discovery of the registries from Harbor's API.
    pub discover: Option<Discover>,
    /// Identical manifest and layer GETs in flight at once: one goes to Harbor, the others wait.
    pub coalesce: Coalesce,
    /// The mapping from Harbor merged in, if any.
    pub discovered: Discovered,
    /// With discovery: `default_registry` when Harbor has no project for it (requests that
    /// would go there get 404, as for an unknown registry).
    pub default_missing: Option<String>,
    /// With discovery: the wire form, to compile again with each mapping.
    source: Option<Source>,
}

/// The wire form a configuration with discovery is compiled from again; its `Debug` shows
/// nothing of it (it holds passwords).
struct Source(Box<WireConfig>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Source(..)")
    }
}

impl Config {
    /// Whether the configuration awaits its first mapping from Harbor.
    pub fn awaits_discovery(&self) -> bool {
        self.discovered == Discovered::Awaiting
    }

    /// The configured registries, in document order.
    pub fn registries(&self) -> &[Registry] {
        &self.registries
    }

    /// The registry an `ns` value names; Docker Hub's other host names mean `docker.io`.
    pub fn registry_for_ns(&self, ns: &str) -> Option<&Registry> {
        let ns = if DOCKER_HUB_SYNONYMS.iter().any(|s| s.eq_ignore_ascii_case(ns)) { DOCKER_HUB } else { ns };
        self.by_key.get(ns).and_then(|i| self.registries.get(i))
    }

    /// The registry a path alias (`/<alias>/v2/...`) names: a registry key or one of its aliases.
    pub fn registry_for_alias(&self, alias: &str) -> Option<&Registry> {
        self.by_alias.get(alias).and_then(|i| self.registries.get(i))
    }

    /// The registry whose `hosts` contain `host` (no port; compared case-insensitively).
    pub fn registry_for_host(&self, host: &str) -> Option<&Registry> {
        self.by_host.get(host).and_then(|i| self.registries.get(i))
    }

    /// The `default_registry`, if configured.
    pub fn default_registry(&self) -> Option<&Registry> {
        self.default_registry.and_then(|i| self.registries.get(i))
    }

    /// Whether `project` is a registry's project or a passthrough project: names under it are
    /// already Harbor paths.
    pub fn is_project(&self, project: &str) -> bool {
        self.projects.get(project).is_some()
    }

    /// Whether `name` has more than one segment and its first is a project ([`Config::is_project`]).
    pub fn is_under_project(&self, name: &str) -> bool {
        matches!(oci::first_component(name), (first, true) if self.is_project(first))
    }
}
