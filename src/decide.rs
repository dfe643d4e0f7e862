//! The request decision: which registry a request is for and which Harbor repository path it
//! goes to, or why it is refused. Pure: borrowed request parts in, a [`Decision`] out.

use std::borrow::Cow;
use std::fmt;

use crate::config::{Config, Registry};
use crate::oci::{self, Endpoint, ErrorCode};
use crate::query;

/// The parts of a request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:path`, with its query.
    pub path: &'a str,
    /// `:authority` (the Host), port included.
    pub authority: &'a str,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<'c> {
    /// Forward it, with a new `:path` when `path` is set.
    Forward { path: Option<String>, route: Route<'c> },
    /// Answer it here with an OCI error; nothing reaches Harbor.
    Refuse(Refusal),
}

/// Why a forwarded request went where it went.
#[derive(Debug)]
pub enum Route<'c> {
    /// Not about one repository: `/v2/`, `/v2/_catalog`, Harbor's UI and API.
    NotRepository,
    /// A repository request for which no registry applies (no `ns`, alias, host or default).
    NoRegistry,
    /// The name already starts with a configured or passthrough project.
    Prefixed,
    /// The name was mapped to a Harbor repository for `registry`.
    Mapped { registry: &'c Registry, by: SelectedBy, rule: Rule },
}

/// How the registry of a request was chosen, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedBy {
    /// containerd's `ns` query parameter.
    Ns,
    /// The `/<alias>/v2/...` path form.
    Alias,
    /// The request's `:authority` matched the registry's `hosts`.
    Host,
    /// `default_registry`.
    Default,
}

/// Which mapping produced the Harbor repository path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `<project>/<name>`.
    Project,
    /// The `rewrite` rule at this position.
    Rewrite(usize),
    /// No rule matched and the registry has no project: the name is kept.
    Unchanged,
}

/// A refusal: the status and the OCI error of the local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u32,
    /// OCI error code.
    pub code: ErrorCode,
    /// Human-readable cause, also logged.
    pub message: String,
}

impl Refusal {
    fn new(status: u32, code: ErrorCode, message: String) -> Self {
        Refusal { status, code, message }
    }

    /// The OCI error body of the reply.
    pub fn body(&self) -> String {
        oci::error_body(self.code, &self.message)
    }
}

impl Decision<'_> {
    /// The new `:path`, if the request is forwarded with one.
    pub fn new_path(&self) -> Option<&str> {
        match self {
            Decision::Forward { path, .. } => path.as_deref(),
            Decision::Refuse(_) => None,
        }
    }
}

impl fmt::Display for Decision<'_> {
    /// One line saying what was done, for debug logs and the `x-harbor-mirror` header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Refuse(refusal) => write!(f, "refused {} {}: {}", refusal.status, refusal.code.as_str(), refusal.message),
            Decision::Forward { path, route } => {
                match route {
                    Route::NotRepository => f.write_str("passed: not a repository request")?,
                    Route::NoRegistry => f.write_str("passed: no registry applies")?,
                    Route::Prefixed => f.write_str("passed: already under a project")?,
                    Route::Mapped { registry, by, rule } => {
                        write!(f, "rewrote: registry={} by={}", registry.key, by.as_str())?;
                        match rule {
                            Rule::Project => f.write_str(" rule=project")?,
                            Rule::Unchanged => f.write_str(" rule=none")?,
                            Rule::Rewrite(i) => match registry.rewrite.get(*i) {
                                Some(r) => write!(f, " rule={:?}", r.pattern.source)?,
                                None => write!(f, " rule=#{i}")?,
                            },
                        }
                    }
                }
                match path {
                    Some(path) => write!(f, " path={path}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl SelectedBy {
    fn as_str(self) -> &'static str {
        match self {
            SelectedBy::Ns => "ns",
            SelectedBy::Alias => "alias",
            SelectedBy::Host => "host",
            SelectedBy::Default => "default",
        }
    }
}

/// Decides what to do with one request.
pub fn decide<'c>(config: &'c Config, request: &Request<'_>) -> Decision<'c> {
    let (path, query) = match request.path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.path, None),
    };
    let (alias, v2_path) = match split_alias(path) {
        Some(split) => split,
        None => return Decision::Forward { path: None, route: Route::NotRepository },
    };
    let alias_registry = match alias {
        Some(alias) => match config.registry_for_alias(alias) {
            Some(registry) => Some(registry),
            None => return Decision::Forward { path: None, route: Route::NotRepository },
        },
        None => None,
    };
    let after_v2 = v2_path.strip_prefix("/v2/").unwrap_or("");
    let (name, rest) = match oci::parse_endpoint(after_v2) {
        Endpoint::Repository { name, rest } => (name, rest),
        Endpoint::Ping | Endpoint::Other => {
            // The alias form is this mirror's own: Harbor only knows `/v2/...`.
            let path = alias.map(|_| match query {
                Some(query) => format!("{v2_path}?{query}"),
                None => v2_path.to_owned(),
            });
            return Decision::Forward { path, route: Route::NotRepository };
        }
    };
    let repository = RepositoryRequest { method: request.method, name, rest, query, aliased: alias.is_some() };
    let ns = match query.map(query::find_ns).transpose() {
        Ok(ns) => ns.flatten(),
        Err(e) => return refuse(400, ErrorCode::Unsupported, format!("{e}")),
    };
    let selected = if let Some(ns) = &ns {
        match config.registry_for_ns(ns) {
            Some(registry) => Some((registry, SelectedBy::Ns)),
            None => {
                return refuse(404, ErrorCode::NameUnknown, format!("registry {ns:?} (from ns) is not served by this mirror"));
            }
        }
    } else if let Some(registry) = alias_registry {
        Some((registry, SelectedBy::Alias))
    } else if let Some(registry) = config.registry_for_host(host_of(request.authority)) {
        Some((registry, SelectedBy::Host))
    } else {
        config.default_registry().map(|registry| (registry, SelectedBy::Default))
    };
    match selected {
        Some((registry, by)) => repository.map(config, registry, by, ns.is_some()),
        None => Decision::Forward { path: None, route: Route::NoRegistry },
    }
}

/// A repository request once its endpoint is parsed.
struct RepositoryRequest<'r> {
    method: &'r str,
    name: &'r str,
    rest: &'r str,
    query: Option<&'r str>,
    aliased: bool,
}

/// Where a client-visible name goes in Harbor.
enum Target<'n> {
    Project(&'n str, &'n str),
    Rewritten(usize, String),
    Unchanged(&'n str),
}

impl RepositoryRequest<'_> {
    fn map<'c>(&self, config: &'c Config, registry: &'c Registry, by: SelectedBy, has_ns: bool) -> Decision<'c> {
        let name = self.name;
        if let Err(why) = check_name(name) {
            return refuse(400, ErrorCode::NameInvalid, format!("invalid repository name: {why}"));
        }
        if config.is_under_project(name) {
            let path = (self.aliased || has_ns).then(|| self.path(name));
            return Decision::Forward { path, route: Route::Prefixed };
        }
        let client_name: Cow<'_, str> =
            if registry.is_docker_hub() && !name.contains('/') { Cow::Owned(format!("library/{name}")) } else { Cow::Borrowed(name) };
        let client_name = client_name.as_ref();
        if let Some(rule) = registry.deny.iter().find(|rule| rule.is_match(client_name)) {
            return refuse(
                403,
                ErrorCode::Denied,
                format!("registry {} denies {client_name} (deny rule {:?})", registry.key, rule.source),
            );
        }
        if !registry.allow.is_empty() && !registry.allow.iter().any(|rule| rule.is_match(client_name)) {
            return refuse(
                403,
                ErrorCode::Denied,
                format!("registry {} allows only names matching its allow rules; {client_name} matches none", registry.key),
            );
        }
        let target = match registry.rewrite.iter().enumerate().find_map(|(i, r)| r.apply(client_name).map(|n| (i, n))) {
            Some((i, rewritten)) => Target::Rewritten(i, rewritten),
            None => match &registry.project {
                Some(project) => Target::Project(project, client_name),
                None => Target::Unchanged(client_name),
            },
        };
        if let Err(refusal) = check_target(config, registry, client_name, &target) {
            return Decision::Refuse(refusal);
        }
        if config.read_only && !matches!(self.method, "GET" | "HEAD") {
            return refuse(
                405,
                ErrorCode::Unsupported,
                format!("this mirror is read-only: {} of {client_name} refused", self.method),
            );
        }
        let (path, rule) = match &target {
            Target::Project(project, name) => (self.path_parts(&[project, "/", name]), Rule::Project),
            Target::Rewritten(i, rewritten) => (self.path(rewritten), Rule::Rewrite(*i)),
            Target::Unchanged(name) => (self.path(name), Rule::Unchanged),
        };
        Decision::Forward { path: Some(path), route: Route::Mapped { registry, by, rule } }
    }

    fn path(&self, name: &str) -> String {
        self.path_parts(&[name])
    }

    /// `/v2/<name parts><rest>?<query without ns>`.
    fn path_parts(&self, name: &[&str]) -> String {
        let name_len: usize = name.iter().map(|part| part.len()).sum();
        let query_len = self.query.map_or(0, |query| 1 + query.len());
        let mut out = String::with_capacity("/v2/".len() + name_len + self.rest.len() + query_len);
        out.push_str("/v2/");
        name.iter().for_each(|part| out.push_str(part));
        out.push_str(self.rest);
        if let Some(query) = self.query {
            query::push_without_ns(&mut out, query);
        }
        out
    }
}

fn check_target(config: &Config, registry: &Registry, client_name: &str, target: &Target<'_>) -> Result<(), Refusal> {
    match target {
        Target::Project(project, name) => {
            let len = project.len() + 1 + name.len();
            if len > oci::MAX_NAME_LEN {
                return Err(Refusal::new(
                    400,
                    ErrorCode::NameInvalid,
                    format!("invalid repository name: {project}/{name} is {len} characters, more than {}", oci::MAX_NAME_LEN),
                ));
            }
        }
        Target::Rewritten(i, rewritten) => {
            let source = registry.rewrite.get(*i).map_or("", |r| r.pattern.source.as_str());
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
        Target::Unchanged(_) => {}
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

fn refuse<'c>(status: u32, code: ErrorCode, message: String) -> Decision<'c> {
    Decision::Refuse(Refusal::new(status, code, message))
}

/// Splits `/<alias>/v2/...` into the alias and `/v2/...`; `/v2/...` has no alias. `None` for
/// paths outside the registry API.
fn split_alias(path: &str) -> Option<(Option<&str>, &str)> {
    let is_v2 = |p: &str| p == "/v2" || p.starts_with("/v2/");
    if is_v2(path) {
        return Some((None, path));
    }
    let (alias, _) = path.strip_prefix('/')?.split_once('/')?;
    let v2_path = &path[1 + alias.len()..];
    is_v2(v2_path).then_some((Some(alias), v2_path))
}

/// The host of an `:authority`, without port; IPv6 literals keep their brackets off.
fn host_of(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split_once(']').map_or(authority, |(host, _)| host);
    }
    authority.split_once(':').map_or(authority, |(host, _)| host)
}
