//! Compiling the configuration's wire form into a [`Config`], section by section, each error
//! naming its field.

use super::check::{check_alias, check_host, check_project, check_registry_key, check_replacement, is_valid_registry_key};
use super::index::{Case, Index};
use super::{Auth, Coalesce, Config, ConfigError, Discover, Discovered, Managed, Pattern, Registry, RewriteRule, Source, COALESCE_MAX_WAIT_MS, DEFAULT_COALESCE_MAX_WAIT_MS, DEFAULT_DISCOVER_INTERVAL_S, DEFAULT_TOKEN_TIMEOUT_MS, MAX_DISCOVER_INTERVAL_S, MAX_TOKEN_TIMEOUT_MS};
use crate::discovery::mapping::Mapping;
use crate::oci;
use crate::wire::{self, WireAuth, WireCoalesce, WireConfig, WireDiscover, WireRegistry, WireRobot};

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
            coalesce: wire.coalesce.as_ref().map(compile_coalesce).transpose()?.unwrap_or_default(),
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
}

fn compile_coalesce(wire: &WireCoalesce) -> Result<Coalesce, ConfigError> {
    let max_wait_ms = wire.max_wait_ms.unwrap_or(DEFAULT_COALESCE_MAX_WAIT_MS);
    if !COALESCE_MAX_WAIT_MS.contains(&max_wait_ms) {
        let (low, high) = (COALESCE_MAX_WAIT_MS.start(), COALESCE_MAX_WAIT_MS.end());
        return Err(ConfigError::new("coalesce.max_wait_ms", format!("must be between {low} and {high}")));
    }
    Ok(Coalesce { enabled: wire.enabled, max_wait_ms })
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

