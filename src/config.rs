//! The plugin configuration: its JSON wire form and its compilation, once, into a read-only
//! [`Config`] with every regex built and every lookup table filled.
//!
//! Errors name the place of the mistake the way a user would point at it:
//! `registries["quay.io"].rewrite["("]: regex parse error ...`.

use std::fmt;

use regex_lite::Regex;

use crate::discovery::mapping::Mapping;
pub use crate::docker_hub::DOCKER_HUB;
use crate::docker_hub::DOCKER_HUB_SYNONYMS;
use crate::oci;
use crate::wire::{self, WireAuth, WireConfig, WireDiscover, WireRegistry, WireRobot};

/// A configuration mistake: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, key or index path, e.g. `registries["quay.io"].project`.
    pub at: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(at: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::one_line(at.into(), &message)
    }

    /// Not generic, so that the many kinds of `at` and `message` share its code.
    fn one_line(at: String, message: &dyn fmt::Display) -> Self {
        // Envoy logs one line per error; regex errors span several.
        let text = message.to_string();
        let mut message = String::with_capacity(text.len());
        for word in text.split_whitespace() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(word);
        }
        ConfigError { at, message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<wire::ReadError> for ConfigError {
    fn from(error: wire::ReadError) -> Self {
        ConfigError::new(error.at, error.error)
    }
}

/// A user regex with the text it was written as.
#[derive(Debug)]
pub struct Pattern {
    /// The regex as configured.
    pub source: String,
    regex: Regex,
    /// Text every match must start with (`library/` of `^library/.*`): a name without it is
    /// refused without running the regex, which regex-lite would do in a few hundred ns.
    prefix: Option<String>,
}

impl Pattern {
    fn compile(at: &str, source: &str) -> Result<Self, ConfigError> {
        let regex = Regex::new(source).map_err(|e| ConfigError::new(at, e))?;
        Ok(Pattern { source: source.to_owned(), regex, prefix: literal_prefix(source) })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.prefix.as_ref().is_none_or(|prefix| text.starts_with(prefix.as_str())) && self.regex.is_match(text)
    }
}

/// The literal text an anchored pattern's matches all start with: the characters after `^` up
/// to the first one with a meaning, less the last if a quantifier follows it. `None` when that
/// is empty, when the pattern is not anchored, or when it has a `|` anywhere (an alternative
/// need not be anchored).
fn literal_prefix(source: &str) -> Option<String> {
    const SPECIAL: &[char] = &['\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$'];
    let rest = source.strip_prefix('^')?;
    if source.contains('|') {
        return None;
    }
    let end = rest.find(SPECIAL).unwrap_or(rest.len());
    let mut prefix = &rest[..end];
    if rest[end..].starts_with(['?', '*', '{']) {
        prefix = prefix.char_indices().last().map_or("", |(last, _)| &prefix[..last]);
    }
    (!prefix.is_empty()).then(|| prefix.to_owned())
}

/// One `rewrite` rule: regex to replacement with `$1`-style captures.
#[derive(Debug)]
pub struct RewriteRule {
    /// The pattern matched against the client-visible name.
    pub pattern: Pattern,
    /// The replacement template; the result is the full Harbor repository path.
    pub replacement: String,
}

impl RewriteRule {
    /// The rewritten name if the rule matches: every match replaced, as k3s's rewrite does.
    pub fn apply(&self, name: &str) -> Option<String> {
        self.pattern.is_match(name).then(|| self.pattern.regex.replace_all(name, self.replacement.as_str()).into_owned())
    }
}

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
const MAX_TOKEN_TIMEOUT_MS: u64 = 60_000;

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

/// The default for `discover.interval_s`.
pub const DEFAULT_DISCOVER_INTERVAL_S: u64 = 300;
const MAX_DISCOVER_INTERVAL_S: u64 = 86_400;

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
    /// Parses and compiles the plugin configuration.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new("configuration", "is empty; a JSON object with \"registries\" is required"));
        }
        Config::compile(wire::read::<WireConfig>(json)?)
    }

    /// Compiles a configuration read from its wire form; with `discover`, awaiting its mapping.
    pub(crate) fn compile(wire: WireConfig) -> Result<Config, ConfigError> {
        Config::compile_with(wire, None)
    }

    /// This configuration with `mapping` read from Harbor: compiled anew, its static registries
    /// first (each overriding the discovered one for its key), then the discovered ones.
    pub fn with_mapping(&self, mapping: &Mapping) -> Result<Config, ConfigError> {
        let source = self.source.as_ref().ok_or_else(|| ConfigError::new("discover", "is not configured"))?;
        Config::compile_with((*source.0).clone(), Some(mapping))
    }

    /// Whether the configuration awaits its first mapping from Harbor.
    pub fn awaits_discovery(&self) -> bool {
        self.discovered == Discovered::Awaiting
    }

    fn compile_with(mut wire: WireConfig, mapping: Option<&Mapping>) -> Result<Config, ConfigError> {
        let discover = wire.discover.as_ref().map(|discover| compile_discover(discover, wire.auth.as_ref())).transpose()?;
        let source = discover.is_some().then(|| Source(Box::new(wire.clone())));
        let mut registries = match (wire.registries.take(), &discover) {
            (Some(registries), _) => registries,
            (None, Some(_)) => Vec::new(),
            (None, None) => {
                return Err(ConfigError::new("registries", "is required (or discover, to read them from harbor)"));
            }
        };
        if registries.is_empty() && discover.is_none() {
            return Err(ConfigError::new("registries", "at least one registry is required"));
        }
        if let Some(mapping) = mapping {
            for (key, project) in &mapping.entries {
                if !registries.iter().any(|(known, _)| known == key) && is_valid_registry_key(key) && oci::is_valid_component(project) {
                    registries.push((key.clone(), WireRegistry { project: Some(project.clone()), ..WireRegistry::default() }));
                }
            }
        }
        let discovered = match (&discover, mapping) {
            (None, _) => Discovered::Off,
            (Some(_), None) => Discovered::Awaiting,
            (Some(_), Some(mapping)) => Discovered::Applied(mapping.clone()),
        };
        let mut config = Config {
            registries: Vec::with_capacity(registries.len()),
            by_key: Index::new(Case::Fold),
            by_alias: Index::new(Case::Exact),
            by_host: Index::new(Case::Fold),
            projects: Index::new(Case::Exact),
            default_registry: None,
            read_only: wire.read_only,
            debug_header: wire.debug_header,
            log_original_path: wire.log_original_path,
            auth: match wire.auth {
                Some(auth) => compile_auth(auth, wire.read_only)?,
                None => Auth { rewrite_tokens: true, managed: None },
            },
            discover,
            discovered,
            default_missing: None,
            source,
        };
        for (index, project) in wire.passthrough_projects.iter().enumerate() {
            let at = format!("passthrough_projects[{index}]");
            check_project(&at, project)?;
            config.add_project(project);
        }
        for (index, (key, registry)) in registries.into_iter().enumerate() {
            let at = format!("registries[{key:?}]");
            config.add_registry(&at, index, key, registry)?;
        }
        if let Some(name) = wire.default_registry {
            match config.registries.iter().position(|registry| registry.key == name) {
                Some(index) => config.default_registry = Some(index),
                // Harbor may have a project for it at the next refresh.
                None if config.discover.is_some() => config.default_missing = Some(name),
                None => {
                    return Err(ConfigError::new("default_registry", format!("{name:?} is not one of the configured registries")));
                }
            }
        }
        Ok(config)
    }

    fn add_registry(
        &mut self,
        at: &str,
        index: usize,
        key: String,
        wire: WireRegistry,
    ) -> Result<(), ConfigError> {
        check_registry_key(at, &key)?;
        // Keys are unique as written; of two that differ only in case, `ns` finds the first.
        let _ = self.by_key.insert(&key, index);
        if let Some(project) = &wire.project {
            check_project(&format!("{at}.project"), project)?;
            self.add_project(project);
        }
        self.claim_alias(at, &key, index)?;
        for alias in &wire.aliases {
            let alias_at = format!("{at}.aliases[{alias:?}]");
            check_alias(&alias_at, alias)?;
            self.claim_alias(&alias_at, alias, index)?;
        }
        for host in &wire.hosts {
            let host_at = format!("{at}.hosts[{host:?}]");
            check_host(&host_at, host)?;
            if let Err(other) = self.by_host.insert(host, index) {
                return Err(ConfigError::new(&host_at, self.also_used_by(other, "host")));
            }
        }
        let rewrite = wire
            .rewrite
            .iter()
            .map(|(pattern, replacement)| {
                let rule_at = format!("{at}.rewrite[{pattern:?}]");
                let pattern = Pattern::compile(&rule_at, pattern)?;
                check_replacement(&rule_at, &pattern.regex, replacement)?;
                Ok(RewriteRule { pattern, replacement: replacement.clone() })
            })
            .collect::<Result<_, ConfigError>>()?;
        let patterns = |field: &str, sources: &[String]| {
            sources
                .iter()
                .enumerate()
                .map(|(i, source)| Pattern::compile(&format!("{at}.{field}[{i}]"), source))
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = patterns("allow", &wire.allow)?;
        let deny = patterns("deny", &wire.deny)?;
        self.registries.push(Registry { key, index, project: wire.project, rewrite, allow, deny });
        Ok(())
    }

    fn claim_alias(&mut self, at: &str, alias: &str, index: usize) -> Result<(), ConfigError> {
        self.by_alias.insert(alias, index).map_err(|other| ConfigError::new(at, self.also_used_by(other, "alias")))
    }

    fn add_project(&mut self, project: &str) {
        // A project named twice (by two registries, or also as passthrough) is one project.
        let _ = self.projects.insert(project, 0);
    }

    fn also_used_by(&self, other: usize, what: &str) -> String {
        match self.registries.get(other) {
            Some(registry) => format!("duplicate {what}, already used by registries[{:?}]", registry.key),
            None => format!("duplicate {what}, already used by this registry"),
        }
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

/// How an [`Index`] compares names.
#[derive(Debug, Clone, Copy)]
enum Case {
    Exact,
    /// ASCII case-insensitive: names are stored lower-case and looked up folded.
    Fold,
}

/// Names to registry indexes, sorted for binary search.
#[derive(Debug)]
struct Index {
    case: Case,
    entries: Vec<(String, usize)>,
}

impl Index {
    fn new(case: Case) -> Self {
        Index { case, entries: Vec::new() }
    }

    /// `known` (stored) against `name` (as asked), folding `name` if the index folds.
    fn compare(&self, known: &str, name: &str) -> std::cmp::Ordering {
        match self.case {
            Case::Exact => known.cmp(name),
            Case::Fold => known.bytes().cmp(name.bytes().map(|b| b.to_ascii_lowercase())),
        }
    }

    /// The position of `name`, or where it would go.
    fn search(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(known, _)| self.compare(known, name))
    }

    fn get(&self, name: &str) -> Option<usize> {
        let at = self.search(name).ok()?;
        self.entries.get(at).map(|&(_, index)| index)
    }

    /// Adds `name`, or returns the index it already has.
    fn insert(&mut self, name: &str, index: usize) -> Result<(), usize> {
        match self.search(name) {
            Ok(at) => Err(self.entries.get(at).map_or(index, |&(_, other)| other)),
            Err(at) => {
                let name = match self.case {
                    Case::Exact => name.to_owned(),
                    Case::Fold => name.to_ascii_lowercase(),
                };
                self.entries.insert(at, (name, index));
                Ok(())
            }
        }
    }
}

fn compile_discover(wire: &WireDiscover, auth: Option<&WireAuth>) -> Result<Discover, ConfigError> {
    let cluster = name_without_spaces("discover.cluster", &wire.cluster)?;
    let authority = name_without_spaces("discover.authority", &wire.authority)?;
    let interval_s = wire.interval_s.unwrap_or(DEFAULT_DISCOVER_INTERVAL_S);
    if !(1..=MAX_DISCOVER_INTERVAL_S).contains(&interval_s) {
        return Err(ConfigError::new("discover.interval_s", format!("must be between 1 and {MAX_DISCOVER_INTERVAL_S}")));
    }
    let timeout_ms = wire.timeout_ms.unwrap_or(DEFAULT_TOKEN_TIMEOUT_MS);
    if !(1..=MAX_TOKEN_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError::new("discover.timeout_ms", format!("must be between 1 and {MAX_TOKEN_TIMEOUT_MS}")));
    }
    let robot = match (&wire.robot, auth.and_then(|auth| auth.robot.as_ref())) {
        (Some(robot), _) => Some(check_robot("discover.robot", robot)?),
        (None, Some(robot)) => Some(check_robot("auth.robot", robot)?),
        (None, None) => None,
    };
    Ok(Discover {
        cluster,
        authority,
        authorization: robot.map(basic),
        robot: robot.map(|robot| robot.username.clone()),
        interval_s,
        timeout_ms,
    })
}

/// A robot's credentials, checked at `at`.
fn check_robot<'w>(at: &str, robot: &'w WireRobot) -> Result<&'w WireRobot, ConfigError> {
    if robot.username.is_empty() {
        return Err(ConfigError::new(format!("{at}.username"), "must not be empty"));
    }
    if robot.username.contains(':') {
        return Err(ConfigError::new(format!("{at}.username"), "must not contain ':' (Basic auth separates it from the password with ':')"));
    }
    if robot.password.is_empty() {
        return Err(ConfigError::new(format!("{at}.password"), "must not be empty"));
    }
    Ok(robot)
}

/// `Basic <base64(username:password)>`.
fn basic(robot: &WireRobot) -> String {
    let credentials = format!("{}:{}", robot.username, robot.password);
    format!("Basic {}", crate::base64::encode(credentials.as_bytes()))
}

fn name_without_spaces(at: &str, value: &str) -> Result<String, ConfigError> {
    if value.is_empty() || value.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(ConfigError::new(at, "must be a non-empty name without spaces"));
    }
    Ok(value.to_owned())
}

fn compile_auth(wire: WireAuth, read_only: bool) -> Result<Auth, ConfigError> {
    let managed = match wire.robot {
        None => {
            for (field, set) in [("cluster", wire.cluster.is_some()), ("authority", wire.authority.is_some()), ("timeout_ms", wire.timeout_ms.is_some())] {
                if set {
                    return Err(ConfigError::new(format!("auth.{field}"), "is only used with auth.robot (managed mode)"));
                }
            }
            None
        }
        Some(robot) => {
            check_robot("auth.robot", &robot)?;
            if !read_only {
                return Err(ConfigError::new("auth.robot", "managed mode pulls only; it needs read_only true"));
            }
            let required = |field: &str, value: Option<String>| match value {
                Some(value) if !value.is_empty() && !value.bytes().any(|b| b.is_ascii_control() || b == b' ') => Ok(value),
                Some(_) => Err(ConfigError::new(format!("auth.{field}"), "must be a non-empty name without spaces")),
                None => Err(ConfigError::new(format!("auth.{field}"), "is required with auth.robot")),
            };
            let cluster = required("cluster", wire.cluster)?;
            let authority = required("authority", wire.authority)?;
            let timeout_ms = wire.timeout_ms.unwrap_or(DEFAULT_TOKEN_TIMEOUT_MS);
            if !(1..=MAX_TOKEN_TIMEOUT_MS).contains(&timeout_ms) {
                return Err(ConfigError::new("auth.timeout_ms", format!("must be between 1 and {MAX_TOKEN_TIMEOUT_MS}")));
            }
            Some(Managed {
                authorization: basic(&robot),
                username: robot.username,
                cluster,
                authority,
                timeout_ms,
            })
        }
    };
    Ok(Auth { rewrite_tokens: wire.rewrite_tokens, managed })
}

fn check_project(at: &str, project: &str) -> Result<(), ConfigError> {
    if project.is_empty() {
        return Err(ConfigError::new(at, "must not be empty"));
    }
    if !oci::is_valid_component(project) {
        return Err(ConfigError::new(
            at,
            format!("{project:?} is not a valid Harbor project name (lower-case letters, digits, '.', '_', '-')"),
        ));
    }
    Ok(())
}

/// Whether `key` is a registry key: a lower-case host name with an optional `:port`.
pub fn is_valid_registry_key(key: &str) -> bool {
    let (host, port) = key.split_once(':').unwrap_or((key, ""));
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let port_ok = !key.contains(':') || (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn check_registry_key(at: &str, key: &str) -> Result<(), ConfigError> {
    if !is_valid_registry_key(key) {
        return Err(ConfigError::new(at, "a registry key is a lower-case host name with an optional :port"));
    }
    if DOCKER_HUB_SYNONYMS.contains(&key) {
        return Err(ConfigError::new(at, format!("use {DOCKER_HUB:?} for Docker Hub")));
    }
    Ok(())
}

fn check_alias(at: &str, alias: &str) -> Result<(), ConfigError> {
    let ok = !alias.is_empty()
        && alias != "v2"
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !ok {
        return Err(ConfigError::new(at, "an alias is one path segment of letters, digits, '.', '-', '_', ':' and not \"v2\""));
    }
    Ok(())
}

fn check_host(at: &str, host: &str) -> Result<(), ConfigError> {
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok {
        return Err(ConfigError::new(at, "a host is a host name without port (matched against the request's :authority)"));
    }
    Ok(())
}

/// Every `$group` in a replacement must name a group of the pattern: regex-lite expands an
/// unknown group to nothing, which would silently send names to the wrong repository.
fn check_replacement(at: &str, regex: &Regex, replacement: &str) -> Result<(), ConfigError> {
    if replacement.is_empty() {
        return Err(ConfigError::new(at, "the replacement must not be empty"));
    }
    let mut rest = replacement;
    while let Some(dollar) = rest.find('$') {
        rest = &rest[dollar + 1..];
        let group = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| ConfigError::new(at, "unclosed ${ in the replacement"))?;
            rest = &braced[end + 1..];
            &braced[..end]
        } else if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let group = &rest[..end];
            rest = &rest[end..];
            group
        };
        let exists = match group.parse::<usize>() {
            Ok(number) => number < regex.captures_len(),
            Err(_) => regex.capture_names().flatten().any(|name| name == group),
        };
        if !exists {
            return Err(ConfigError::new(
                at,
                format!("the replacement refers to ${{{group}}}, which the pattern does not capture (write ${{1}}x, not $1x)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod prefix_tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::literal_prefix;

    #[test]
    fn literal_prefixes_are_what_every_match_starts_with() {
        let cases: &[(&str, Option<&str>)] = &[
            ("^library/", Some("library/")),
            ("^ksd-test/(.*)$", Some("ksd-test/")),
            ("^team9/(.*)$", Some("team9/")),
            ("^library/evil$", Some("library/evil")),
            ("^ab?c", Some("a")),
            ("^abc*", Some("ab")),
            ("^abc+", Some("abc")),
            ("^ab{2}", Some("a")),
            ("^a.b", Some("a")),
            ("^a\\.b", Some("a")),
            ("^é?x", None),
            ("^(?i)library/", None),
            ("^[a-z]+/", None),
            ("^a|b", None),
            ("^(a|b)/", None),
            ("library/", None),
            ("^", None),
            (".*", None),
        ];
        for &(source, expected) in cases {
            assert_eq!(literal_prefix(source).as_deref(), expected, "{source}");
        }
    }
}
