//! Configurations scoped by domain: Higress's envelope for a plugin's `matchRules`.
//!
//! A Higress `WasmPlugin` with `matchRules: [{domain: [...], config: {...}}]` hands the plugin
//! one document, `{"_rules_": [{"_match_domain_": [...], <config>}], <global config>}`: each
//! rule's configuration applies to requests whose host (port removed) matches one of its
//! domains, the first rule in order winning; the global one, if any, to the rest. With no global
//! configuration (`defaultConfigDisable: true`) a request no rule matches is not the plugin's:
//! it passes untouched. A domain is exact (`harbor.example.com`), a suffix (`*.example.com`) or a
//! prefix (`harbor.*`), as Higress matches them (here without regard to case).
//!
//! Any other document is one configuration for every request, read by [`Config::from_json`]
//! with its errors unchanged.

use crate::authority;
use crate::config::{Config, ConfigError};
use crate::json::{self, Ty};
use crate::oci::push_json_escaped;

/// The key of Higress's rule list.
pub const RULES_KEY: &str = "_rules_";
const MATCH_DOMAIN_KEY: &str = "_match_domain_";
/// Higress's other rule kinds: by route name, route prefix or upstream service.
const OTHER_MATCH_KEYS: [&str; 3] = ["_match_route_", "_match_route_prefix_", "_match_service_"];

/// The plugin's configurations and which request gets which.
#[derive(Debug)]
pub struct PluginConfig {
    /// Rule configurations in order, then the global one if there is one.
    pub configs: Vec<Config>,
    /// Which configuration a request gets.
    pub selector: DomainSelector,
}

/// Picks a request's configuration by its host.
#[derive(Debug, Clone)]
pub struct DomainSelector {
    /// Domains and the index of their configuration, in rule order.
    rules: Vec<(Vec<Domain>, usize)>,
    /// The configuration of requests no rule matches.
    default: Option<usize>,
}

/// A `_match_domain_` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    /// `harbor.example.com`: that host.
    Exact(String),
    /// `*.example.com`: hosts ending in `.example.com`.
    Suffix(String),
    /// `harbor.*`: hosts starting with `harbor.`.
    Prefix(String),
}

impl Domain {
    fn parse(at: &str, pattern: &str) -> Result<Domain, ConfigError> {
        if pattern.is_empty() || pattern == "*" {
            return Err(ConfigError::new(at, "a domain must not be empty or \"*\" (the global configuration is for every domain)"));
        }
        Ok(if let Some(suffix) = pattern.strip_prefix('*') {
            Domain::Suffix(suffix.to_ascii_lowercase())
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            Domain::Prefix(prefix.to_ascii_lowercase())
        } else {
            Domain::Exact(pattern.to_ascii_lowercase())
        })
    }

    fn matches(&self, host: &str) -> bool {
        let starts = |p: &str| host.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
        let ends = |s: &str| host.len() >= s.len() && host.get(host.len() - s.len()..).is_some_and(|h| h.eq_ignore_ascii_case(s));
        match self {
            Domain::Exact(domain) => host.eq_ignore_ascii_case(domain),
            Domain::Suffix(suffix) => ends(suffix),
            Domain::Prefix(prefix) => starts(prefix),
        }
    }
}

impl DomainSelector {
    /// Whether the choice depends on the request's host (else [`DomainSelector::select`] ignores it).
    pub fn by_host(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Where configuration `index` applies, for the configure log line: empty for one
    /// configuration, ` for harbor.example.com, *.harbor.example.com`, ` for other domains`.
    pub fn describe(&self, index: usize) -> String {
        if !self.by_host() {
            return String::new();
        }
        let mut out = String::new();
        for domain in self.rules.iter().filter(|(_, config)| *config == index).flat_map(|(domains, _)| domains) {
            out.push_str(if out.is_empty() { " for " } else { ", " });
            let (before, text, after) = match domain {
                Domain::Exact(domain) => ("", domain, ""),
                Domain::Suffix(suffix) => ("*", suffix, ""),
                Domain::Prefix(prefix) => ("", prefix, "*"),
            };
            out.push_str(before);
            out.push_str(text);
            out.push_str(after);
        }
        if out.is_empty() { " for other domains".to_owned() } else { out }
    }

    /// The index of the configuration for a request to `authority` (`host[:port]`), or `None`
    /// when the request is not the plugin's.
    pub fn select(&self, authority: &str) -> Option<usize> {
        let host = authority::host(authority);
        self.rules.iter().find(|(domains, _)| domains.iter().any(|d| d.matches(host))).map(|&(_, index)| index).or(self.default)
    }
}

impl PluginConfig {
    /// Reads the plugin configuration: Higress's `_rules_` envelope, or one configuration.
    pub fn from_json(json: &[u8]) -> Result<PluginConfig, ConfigError> {
        let top = match json::from_slice(json, Ty::Pairs(&Ty::Raw)) {
            Ok(top) => top.pairs(),
            // Not an object of distinct keys: the configuration reader says what is wrong.
            Err(_) => Vec::new(),
        };
        let Some(rules_at) = top.iter().position(|(key, _)| key == RULES_KEY) else {
            let config = Config::from_json(json)?;
            return Ok(PluginConfig { configs: vec![config], selector: DomainSelector { rules: Vec::new(), default: Some(0) } });
        };
        let mut global: Vec<(String, String)> = top.into_iter().map(|(key, value)| (key, value.raw().unwrap_or_default())).collect();
        let (_, rules_json) = global.remove(rules_at);
        let rules = json::from_slice(rules_json.as_bytes(), Ty::List(&Ty::Pairs(&Ty::Raw)))
            .map_err(|e| ConfigError::new(RULES_KEY, format!("expected a list of rule objects: {e}")))?
            .list();
        if rules.is_empty() {
            return Err(ConfigError::new(RULES_KEY, "has no rules; drop it for one configuration for every domain"));
        }
        let mut configs = Vec::with_capacity(rules.len() + 1);
        let mut selector = DomainSelector { rules: Vec::with_capacity(rules.len()), default: None };
        for (index, rule) in rules.into_iter().enumerate() {
            let at = format!("{RULES_KEY}[{index}]");
            let mut domains = None;
            let mut fields = Vec::new();
            for (key, value) in rule.pairs() {
                let raw = value.raw().unwrap_or_default();
                if key == MATCH_DOMAIN_KEY {
                    domains = Some(read_domains(&format!("{at}.{MATCH_DOMAIN_KEY}"), &raw)?);
                } else if OTHER_MATCH_KEYS.contains(&key.as_str()) {
                    return Err(ConfigError::new(
                        format!("{at}.{key}"),
                        "only domain rules (_match_domain_, a matchRules entry's domain) are supported",
                    ));
                } else {
                    fields.push((key, raw));
                }
            }
            let domains = domains.ok_or_else(|| ConfigError::new(&at, format!("has no {MATCH_DOMAIN_KEY}")))?;
            let config = Config::from_json(object(&fields).as_bytes())
                .map_err(|e| ConfigError::new(format!("{at}.{}", e.at), e.message))?;
            selector.rules.push((domains, configs.len()));
            configs.push(config);
        }
        if !global.is_empty() {
            selector.default = Some(configs.len());
            configs.push(Config::from_json(object(&global).as_bytes())?);
        }
        Ok(PluginConfig { configs, selector })
    }
}

fn read_domains(at: &str, raw: &str) -> Result<Vec<Domain>, ConfigError> {
    let list = json::from_slice(raw.as_bytes(), Ty::List(&Ty::Str)).map_err(|e| ConfigError::new(at, e))?.strings();
    if list.is_empty() {
        return Err(ConfigError::new(at, "lists no domain"));
    }
    list.iter().enumerate().map(|(i, pattern)| Domain::parse(&format!("{at}[{i}]"), pattern)).collect()
}

/// A JSON object of these keys and raw values, in order.
fn object(fields: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (key, raw)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        push_json_escaped(&mut out, key);
        out.push_str("\":");
        out.push_str(raw);
    }
    out.push('}');
    out
}
