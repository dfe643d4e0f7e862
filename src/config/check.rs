//! What each configured name must look like: projects, registry keys, aliases, hosts, and the
//! groups a rewrite's replacement refers to.

use regex_lite::Regex;

use super::ConfigError;
use crate::docker_hub::{DOCKER_HUB, DOCKER_HUB_SYNONYMS};
use crate::oci;

pub(super) fn check_project(at: &str, project: &str) -> Result<(), ConfigError> {
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

pub(super) fn check_registry_key(at: &str, key: &str) -> Result<(), ConfigError> {
    if !is_valid_registry_key(key) {
        return Err(ConfigError::new(at, "a registry key is a lower-case host name with an optional :port"));
    }
    if DOCKER_HUB_SYNONYMS.contains(&key) {
        return Err(ConfigError::new(at, format!("use {DOCKER_HUB:?} for Docker Hub")));
    }
    Ok(())
}

pub(super) fn check_alias(at: &str, alias: &str) -> Result<(), ConfigError> {
    let ok = !alias.is_empty()
        && alias != "v2"
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !ok {
        return Err(ConfigError::new(at, "an alias is one path segment of letters, digits, '.', '-', '_', ':' and not \"v2\""));
    }
    Ok(())
}

pub(super) fn check_host(at: &str, host: &str) -> Result<(), ConfigError> {
    let ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok {
        return Err(ConfigError::new(at, "a host is a host name without port (matched against the request's :authority)"));
    }
    Ok(())
}

/// Every `$group` in a replacement must name a group of the pattern: regex-lite expands an
/// unknown group to nothing, which would silently send names to the wrong repository.
pub(super) fn check_replacement(at: &str, regex: &Regex, replacement: &str) -> Result<(), ConfigError> {
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

