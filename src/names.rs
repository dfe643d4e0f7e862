//! Name mapping: where a client-visible repository name goes in Harbor, for request paths and
//! token scopes alike. Names already under a configured or passthrough project stay; the others
//! pass the registry's deny and allow rules, then its first matching rewrite rule or its
//! project, and must land under a configured project.

use std::borrow::Cow;
use std::fmt;

use crate::ascii;
use crate::config::{Config, Registry};
use crate::oci::{self, ErrorCode};
use crate::refusal::Refusal;

/// Which mapping produced the Harbor repository path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `<project>/<name>`.
    Project,
    /// The `rewrite` rule at this position.
    Rewrite(usize),
}

/// The name a client asked for, as the registry's rules see it (`library/` added for Docker
/// Hub's single-segment names), for messages.
pub(crate) struct ClientName<'a>(pub &'a Registry, pub &'a str);

impl fmt::Display for ClientName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if needs_library(self.0, self.1) {
            f.write_str("library/")?;
        }
        f.write_str(self.1)
    }
}

pub(crate) fn needs_library(registry: &Registry, name: &str) -> bool {
    registry.is_docker_hub() && !ascii::contains(name, b'/')
}

/// Where a client-visible name goes, for requests and token scopes alike.
#[derive(Debug)]
pub(crate) enum Mapped<'c, 'n> {
    /// The name is already under a configured or passthrough project: left as it is.
    Prefixed,
    /// The name goes to this Harbor repository, by this rule.
    To(HarborName<'c, 'n>, Rule),
}

/// A Harbor repository name, kept in parts so that writing it into a path copies once.
#[derive(Debug)]
pub(crate) enum HarborName<'c, 'n> {
    /// `<project>/[library/]<name>`.
    Project { project: &'c str, library: bool, name: &'n str },
    /// A rewrite rule's result.
    Rewritten(String),
    /// A name already under a project, kept.
    Unchanged(&'n str),
}

impl HarborName<'_, '_> {
    pub(crate) fn len(&self) -> usize {
        const LIBRARY: usize = "library/".len();
        match self {
            HarborName::Project { project, library, name } => project.len() + 1 + usize::from(*library) * LIBRARY + name.len(),
            HarborName::Rewritten(name) => name.len(),
            HarborName::Unchanged(name) => name.len(),
        }
    }

    pub(crate) fn push_to(&self, out: &mut String) {
        let (project, library, name) = match self {
            HarborName::Project { project, library, name } => (Some(*project), *library, *name),
            HarborName::Rewritten(name) => (None, false, name.as_str()),
            HarborName::Unchanged(name) => (None, false, *name),
        };
        if let Some(project) = project {
            out.push_str(project);
            out.push('/');
        }
        if library {
            out.push_str("library/");
        }
        out.push_str(name);
    }
}

/// Maps a client-visible repository name for `registry`: already-prefixed names stay, then
/// deny, allow, the first matching rewrite rule, and the registry's project.
pub(crate) fn map_name<'c, 'n>(config: &'c Config, registry: &'c Registry, name: &'n str) -> Result<Mapped<'c, 'n>, Refusal> {
    if let Err(why) = check_name(name) {
        return Err(Refusal::new(400, ErrorCode::NameInvalid, format!("invalid repository name: {why}")));
    }
    if config.is_under_project(name) {
        return Ok(Mapped::Prefixed);
    }
    let library = needs_library(registry, name);
    let client_name: Cow<'_, str> = if library { Cow::Owned(format!("library/{name}")) } else { Cow::Borrowed(name) };
    let client_name = client_name.as_ref();
    if let Some(rule) = registry.deny.iter().find(|rule| rule.is_match(client_name)) {
        return Err(Refusal::new(
            403,
            ErrorCode::Denied,
            format!("registry {} denies {client_name} (deny rule {:?})", registry.key, rule.source),
        ));
    }
    if !registry.allow.is_empty() && !registry.allow.iter().any(|rule| rule.is_match(client_name)) {
        return Err(Refusal::new(
            403,
            ErrorCode::Denied,
            format!("registry {} allows only names matching its allow rules; {client_name} matches none", registry.key),
        ));
    }
    let (target, rule) = match registry.rewrite.iter().enumerate().find_map(|(i, r)| r.apply(client_name).map(|n| (i, n))) {
        Some((i, rewritten)) => (HarborName::Rewritten(rewritten), Rule::Rewrite(i)),
        None => match &registry.project {
            Some(project) => (HarborName::Project { project, library, name }, Rule::Project),
            // Keeping the name would reach whatever Harbor project it starts with.
            None => {
                return Err(Refusal::new(
                    403,
                    ErrorCode::Denied,
                    format!("registry {} has no project, and none of its rewrite rules matches {client_name}", registry.key),
                ));
            }
        },
    };
    check_target(config, registry, client_name, &target, rule)?;
    Ok(Mapped::To(target, rule))
}

fn check_target(config: &Config, registry: &Registry, client_name: &str, target: &HarborName<'_, '_>, rule: Rule) -> Result<(), Refusal> {
    match target {
        HarborName::Project { project, .. } => {
            let len = target.len();
            if len > oci::MAX_NAME_LEN {
                return Err(Refusal::new(
                    400,
                    ErrorCode::NameInvalid,
                    format!("invalid repository name: {project}/{client_name} is {len} characters, more than {}", oci::MAX_NAME_LEN),
                ));
            }
        }
        HarborName::Rewritten(rewritten) => {
            let source = match rule {
                Rule::Rewrite(i) => registry.rewrite.get(i).map_or("", |r| r.pattern.source.as_str()),
                Rule::Project => "",
            };
            if let Err(why) = check_name(rewritten) {
                return Err(Refusal::new(
                    400,
                    ErrorCode::NameInvalid,
                    format!("rewrite rule {source:?} of registry {} made {client_name} into an invalid name: {why}", registry.key),
                ));
            }
            if !config.is_under_project(rewritten) {
                return Err(Refusal::new(
                    403,
                    ErrorCode::Denied,
                    format!(
                        "rewrite rule {source:?} of registry {} made {client_name} into {rewritten}, outside the configured projects",
                        registry.key
                    ),
                ));
            }
        }
        HarborName::Unchanged(_) => {}
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > oci::MAX_NAME_LEN {
        Err(format!("{} characters, more than {}", name.len(), oci::MAX_NAME_LEN))
    } else if oci::is_valid_name(name) {
        Ok(())
    } else {
        Err(format!("{name:?} does not match the OCI repository name grammar"))
    }
}
