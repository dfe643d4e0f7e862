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
use crate::wire::{self, WireEnvelope, WireRulesOnly};

/// The key of Higress's rule list.
pub const RULES_KEY: &str = wire::RULES;
const MATCH_DOMAIN_KEY: &str = "_match_domain_";

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
        let keys = wire::top_level_keys(json).unwrap_or_default();
        if !keys.iter().any(|key| key == RULES_KEY) {
            // Not an envelope (nor, perhaps, an object): the configuration reader says what is wrong.
            let config = Config::from_json(json)?;
            return Ok(PluginConfig { configs: vec![config], selector: DomainSelector { rules: Vec::new(), default: Some(0) } });
        }
        let (rules, global) = if keys.iter().all(|key| key == RULES_KEY) {
            (wire::read::<WireRulesOnly>(json)?.rules, None)
        } else {
            let (rules, global) = wire::read::<WireEnvelope>(json)?.split();
            (rules, Some(global))
        };
        if rules.is_empty() {
            return Err(ConfigError::new(RULES_KEY, "has no rules; drop it for one configuration for every domain"));
        }
        let mut configs = Vec::with_capacity(rules.len() + 1);
        let mut selector = DomainSelector { rules: Vec::with_capacity(rules.len()), default: None };
        for (index, rule) in rules.into_iter().enumerate() {
            let at = format!("{RULES_KEY}[{index}]");
            let others = [("_match_route_", rule.match_route.is_some()), ("_match_route_prefix_", rule.match_route_prefix.is_some()), ("_match_service_", rule.match_service.is_some())];
            if let Some((key, _)) = others.iter().find(|(_, present)| *present) {
                return Err(ConfigError::new(
                    format!("{at}.{key}"),
                    "only domain rules (_match_domain_, a matchRules entry's domain) are supported",
                ));
            }
            let domains = match &rule.match_domain {
                Some(domains) => read_domains(&format!("{at}.{MATCH_DOMAIN_KEY}"), domains)?,
                None => return Err(ConfigError::new(&at, format!("has no {MATCH_DOMAIN_KEY}"))),
            };
            let config = Config::compile(rule.config()).map_err(|e| ConfigError::new(format!("{at}.{}", e.at), e.message))?;
            selector.rules.push((domains, configs.len()));
            configs.push(config);
        }
        if let Some(global) = global {
            selector.default = Some(configs.len());
            configs.push(Config::compile(global)?);
        }
        Ok(PluginConfig { configs, selector })
    }
}

fn read_domains(at: &str, list: &[String]) -> Result<Vec<Domain>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(at, "lists no domain"));
    }
    list.iter().enumerate().map(|(i, pattern)| Domain::parse(&format!("{at}[{i}]"), pattern)).collect()
}
