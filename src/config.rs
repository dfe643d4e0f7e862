//! The plugin configuration: its JSON wire form and its compilation, once, into a read-only
//! [`Config`] with every regex built and every lookup table filled.
//!
//! Errors name the place of the mistake the way a user would point at it:
//! `registries["quay.io"].rewrite["("]: regex parse error ...`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;

use regex_lite::Regex;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::oci;

/// Docker Hub's registry key, the one registry whose single-segment names get `library/`.
pub const DOCKER_HUB: &str = "docker.io";

/// Host names clients use for Docker Hub that mean [`DOCKER_HUB`] in `ns`.
const DOCKER_HUB_SYNONYMS: [&str; 2] = ["registry-1.docker.io", "index.docker.io"];

/// A configuration mistake: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, key or index path, e.g. `registries["quay.io"].project`.
    pub at: String,
    /// What is wrong, on one line.
    pub message: String,
}

impl ConfigError {
    fn new(at: impl Into<String>, message: impl fmt::Display) -> Self {
        let message = message.to_string();
        // Envoy logs one line per error; regex errors span several.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        ConfigError { at: at.into(), message }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A JSON object read as ordered `(key, value)` pairs, refusing duplicate keys, so that rewrite
/// rules apply in document order and a repeated key is an error rather than silently dropped.
struct Pairs<V>(Vec<(String, V)>);

impl<V> Default for Pairs<V> {
    fn default() -> Self {
        Pairs(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<V>, A::Error> {
                let mut pairs: Vec<(String, V)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if pairs.iter().any(|(seen, _)| *seen == key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    pairs.push((key, value));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConfig {
    /// Raw, so that each registry is read with its own error context and its keys keep order.
    registries: Pairs<Box<RawValue>>,
    #[serde(default)]
    default_registry: Option<String>,
    #[serde(default)]
    passthrough_projects: Vec<String>,
    #[serde(default = "default_read_only")]
    read_only: bool,
    #[serde(default)]
    debug_header: bool,
    /// Raw, so that its errors are reported under `auth`.
    #[serde(default)]
    auth: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAuth {
    #[serde(default = "default_rewrite_tokens")]
    rewrite_tokens: bool,
    #[serde(default)]
    robot: Option<WireRobot>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRobot {
    username: String,
    password: String,
}

fn default_rewrite_tokens() -> bool {
    true
}

fn default_read_only() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRegistry {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    rewrite: Pairs<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// A user regex with the text it was written as.
#[derive(Debug)]
pub struct Pattern {
    /// The regex as configured.
    pub source: String,
    regex: Regex,
}

impl Pattern {
    fn compile(at: &str, source: &str) -> Result<Self, ConfigError> {
        let regex = Regex::new(source).map_err(|e| ConfigError::new(at, e))?;
        Ok(Pattern { source: source.to_owned(), regex })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
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
        self.pattern
            .regex
            .is_match(name)
            .then(|| self.pattern.regex.replace_all(name, self.replacement.as_str()).into_owned())
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

/// Managed mode: a robot account the filter authenticates with.
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

/// The compiled, read-only configuration.
#[derive(Debug)]
pub struct Config {
    registries: Vec<Registry>,
    by_key: HashMap<String, usize>,
    by_alias: HashMap<String, usize>,
    by_host: HashMap<String, usize>,
    projects: HashSet<String>,
    default_registry: Option<usize>,
    /// Refuse rewritten requests other than GET and HEAD.
    pub read_only: bool,
    /// Add the `x-harbor-mirror` response header.
    pub debug_header: bool,
    /// Token auth: pass-through rewriting and managed mode.
    pub auth: Auth,
}

impl Config {
    /// Parses and compiles the plugin configuration.
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new("configuration", "is empty; a JSON object with \"registries\" is required"));
        }
        let wire: WireConfig =
            serde_json::from_slice(json).map_err(|e| ConfigError::new("configuration", e))?;
        Config::compile(wire)
    }

    fn compile(wire: WireConfig) -> Result<Config, ConfigError> {
        if wire.registries.0.is_empty() {
            return Err(ConfigError::new("registries", "at least one registry is required"));
        }
        let mut config = Config {
            registries: Vec::with_capacity(wire.registries.0.len()),
            by_key: HashMap::new(),
            by_alias: HashMap::new(),
            by_host: HashMap::new(),
            projects: HashSet::new(),
            default_registry: None,
            read_only: wire.read_only,
            debug_header: wire.debug_header,
            auth: match wire.auth {
                Some(raw) => compile_auth(
                    serde_json::from_str(raw.get()).map_err(|e| ConfigError::new("auth", e))?,
                    wire.read_only,
                )?,
                None => Auth { rewrite_tokens: true, managed: None },
            },
        };
        for (index, project) in wire.passthrough_projects.iter().enumerate() {
            let at = format!("passthrough_projects[{index}]");
            check_project(&at, project)?;
            config.projects.insert(project.clone());
        }
        for (index, (key, value)) in wire.registries.0.into_iter().enumerate() {
            let at = format!("registries[{key:?}]");
            let registry: WireRegistry =
                serde_json::from_str(value.get()).map_err(|e| ConfigError::new(&at, e))?;
            config.add_registry(&at, index, key, registry)?;
        }
        if let Some(name) = &wire.default_registry {
            let index = config.by_key.get(name).copied().ok_or_else(|| {
                ConfigError::new(
                    "default_registry",
                    format!("{name:?} is not one of the configured registries"),
                )
            })?;
            config.default_registry = Some(index);
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
        if let Some(project) = &wire.project {
            check_project(&format!("{at}.project"), project)?;
            self.projects.insert(project.clone());
        }
        self.by_key.insert(key.clone(), index);
        self.claim_alias(at, &key, index)?;
        for alias in &wire.aliases {
            let alias_at = format!("{at}.aliases[{alias:?}]");
            check_alias(&alias_at, alias)?;
            self.claim_alias(&alias_at, alias, index)?;
        }
        for host in &wire.hosts {
            let host_at = format!("{at}.hosts[{host:?}]");
            check_host(&host_at, host)?;
            let host = host.to_ascii_lowercase();
            if let Some(&other) = self.by_host.get(&host) {
                return Err(ConfigError::new(&host_at, self.also_used_by(other, "host")));
            }
            self.by_host.insert(host, index);
        }
        let rewrite = wire
            .rewrite
            .0
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
        if let Some(&other) = self.by_alias.get(alias) {
            return Err(ConfigError::new(at, self.also_used_by(other, "alias")));
        }
        self.by_alias.insert(alias.to_owned(), index);
        Ok(())
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
        self.lookup(&self.by_key, ns)
    }

    /// The registry a path alias (`/<alias>/v2/...`) names: a registry key or one of its aliases.
    pub fn registry_for_alias(&self, alias: &str) -> Option<&Registry> {
        self.by_alias.get(alias).and_then(|&i| self.registries.get(i))
    }

    /// The registry whose `hosts` contain `host` (no port; compared case-insensitively).
    pub fn registry_for_host(&self, host: &str) -> Option<&Registry> {
        self.lookup(&self.by_host, host)
    }

    /// The `default_registry`, if configured.
    pub fn default_registry(&self) -> Option<&Registry> {
        self.default_registry.and_then(|i| self.registries.get(i))
    }

    /// Whether `project` is a registry's project or a passthrough project: names under it are
    /// already Harbor paths.
    pub fn is_project(&self, project: &str) -> bool {
        self.projects.contains(project)
    }

    /// Whether `name` has more than one segment and its first is a project ([`Config::is_project`]).
    pub fn is_under_project(&self, name: &str) -> bool {
        matches!(oci::first_component(name), (first, true) if self.is_project(first))
    }

    fn lookup(&self, table: &HashMap<String, usize>, name: &str) -> Option<&Registry> {
        let index = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            table.get(&name.to_ascii_lowercase())
        } else {
            table.get(name)
        };
        index.and_then(|&i| self.registries.get(i))
    }
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
            if robot.username.is_empty() {
                return Err(ConfigError::new("auth.robot.username", "must not be empty"));
            }
            if robot.username.contains(':') {
                return Err(ConfigError::new("auth.robot.username", "must not contain ':' (Basic auth separates it from the password with ':')"));
            }
            if robot.password.is_empty() {
                return Err(ConfigError::new("auth.robot.password", "must not be empty"));
            }
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
            let credentials = format!("{}:{}", robot.username, robot.password);
            Some(Managed {
                authorization: format!("Basic {}", crate::base64::encode(credentials.as_bytes())),
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

fn check_registry_key(at: &str, key: &str) -> Result<(), ConfigError> {
    let (host, port) = key.split_once(':').unwrap_or((key, ""));
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let port_ok = !key.contains(':') || (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    if !(host_ok && port_ok) {
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
