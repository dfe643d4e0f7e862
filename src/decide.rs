//! The request decision: which registry a request is for and which Harbor repository path it
//! goes to, or why it is refused. Pure: borrowed request parts in, a [`Decision`] out.

use std::borrow::Cow;
use std::fmt;

use crate::challenge::TOKEN_PATH;
use crate::config::{Config, Registry};
use crate::oci::{self, Endpoint, ErrorCode};
use crate::path;
use crate::query;
use crate::token;

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
    /// `/v2/` (or `/<alias>/v2/`, then with the alias's registry): the API version check
    /// clients start with.
    Ping { registry: Option<&'c Registry> },
    /// Not about one repository: `/v2/_catalog`, other `/v2/` shapes, Harbor's UI and API, and
    /// token requests when token handling is off.
    NotRepository,
    /// A repository request for which no registry applies (no `ns`, alias, host or default).
    NoRegistry,
    /// The name already starts with a configured or passthrough project.
    Prefixed,
    /// The name was mapped to a Harbor repository for `registry`.
    Mapped { registry: &'c Registry, by: SelectedBy, rule: Rule },
    /// A token request whose repository scopes were mapped for `registry`; `refused` are the
    /// scopes dropped, with why.
    Token { registry: &'c Registry, by: SelectedBy, refused: Vec<Refusal> },
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
    /// A refusal with this status, code and message.
    pub fn new(status: u32, code: ErrorCode, message: String) -> Self {
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
                    Route::Ping { .. } => f.write_str("passed: api version check")?,
                    Route::NotRepository => f.write_str("passed: not a repository request")?,
                    Route::NoRegistry => f.write_str("passed: no registry applies")?,
                    Route::Prefixed => f.write_str("passed: already under a project")?,
                    Route::Token { registry, by, refused } => {
                        write!(f, "token scopes: registry={} by={}", registry.key, by.as_str())?;
                        if let Some(first) = refused.first() {
                            write!(f, " dropped={} ({})", refused.len(), first.message)?;
                        }
                    }
                    Route::Mapped { registry, by, rule } => {
                        write!(f, "rewrote: registry={} by={}", registry.key, by.as_str())?;
                        match rule {
                            Rule::Project => f.write_str(" rule=project")?,
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
    if let Err(problem) = path::check(path) {
        return refuse(400, ErrorCode::NameInvalid, format!("invalid request path: {problem}"));
    }
    let (alias, api_path) = match split_alias(path) {
        Some(split) => split,
        None if config.auth.managed.is_some() => return refuse_in_managed_mode("harbor's UI and API are not served here"),
        None => return Decision::Forward { path: None, route: Route::NotRepository },
    };
    let alias_registry = match alias {
        Some(alias) => match config.registry_for_alias(alias) {
            Some(registry) => Some(registry),
            None => return Decision::Forward { path: None, route: Route::NotRepository },
        },
        None => None,
    };
    if request.path.len() > path::MAX_API_PATH_LEN {
        let message = format!("invalid request path: {} bytes, more than {}", request.path.len(), path::MAX_API_PATH_LEN);
        return refuse(414, ErrorCode::NameInvalid, message);
    }
    if let Err(problem) = path::check_api(path) {
        return refuse(400, ErrorCode::NameInvalid, format!("invalid request path: {problem}"));
    }
    if let Some(key) = query.and_then(query::encoded_key) {
        return refuse(400, ErrorCode::Unsupported, format!("query parameter name {} is percent-encoded", Clipped(key)));
    }
    if api_path == TOKEN_PATH {
        if config.auth.managed.is_some() {
            return refuse_in_managed_mode("clients pull anonymously and need no token from it");
        }
        return decide_token_request(config, request, query, alias_registry);
    }
    let after_v2 = api_path.strip_prefix("/v2/").unwrap_or("");
    let (name, rest) = match oci::parse_endpoint(after_v2) {
        Endpoint::Repository { name, rest } => (name, rest),
        endpoint @ (Endpoint::Ping | Endpoint::Other) => {
            let path = alias.map(|_| without_alias(api_path, query));
            let route = if endpoint == Endpoint::Ping { Route::Ping { registry: alias_registry } } else { Route::NotRepository };
            return Decision::Forward { path, route };
        }
    };
    if let Err(problem) = oci::check_endpoint(rest) {
        return refuse(400, problem.code(), format!("invalid endpoint {}: {problem}", Clipped(rest)));
    }
    let repository = RepositoryRequest { method: request.method, name, rest, query, aliased: alias.is_some() };
    match select_registry(config, query, alias_registry, request.authority) {
        Ok(Some(selected)) => repository.map(config, selected),
        Ok(None) => Decision::Forward { path: None, route: Route::NoRegistry },
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// A token request (`/service/token`, or `/<alias>/service/token`): its repository scopes are
/// mapped like request paths, for the registry its `ns`, alias, host or the default names.
fn decide_token_request<'c>(
    config: &'c Config,
    request: &Request<'_>,
    query: Option<&str>,
    alias_registry: Option<&'c Registry>,
) -> Decision<'c> {
    if !config.auth.rewrite_tokens {
        let path = alias_registry.map(|_| without_alias(TOKEN_PATH, query));
        return Decision::Forward { path, route: Route::NotRepository };
    }
    match select_registry(config, query, alias_registry, request.authority) {
        Ok(Some(selected)) => {
            let scopes = token::rewrite_scopes(config, selected.registry, query.unwrap_or(""));
            let mut path = String::with_capacity(TOKEN_PATH.len() + scopes.query.len());
            path.push_str(TOKEN_PATH);
            path.push_str(&scopes.query);
            Decision::Forward {
                path: Some(path),
                route: Route::Token { registry: selected.registry, by: selected.by, refused: scopes.refused },
            }
        }
        Ok(None) => Decision::Forward { path: None, route: Route::NoRegistry },
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// The registry a request is for, and how it was chosen.
#[derive(Debug, Clone, Copy)]
struct Selected<'c> {
    registry: &'c Registry,
    by: SelectedBy,
}

/// Picks the registry: `ns`, else the path alias, else the host, else the default. An `ns` this
/// mirror does not serve is refused rather than guessed.
fn select_registry<'c>(
    config: &'c Config,
    query: Option<&str>,
    alias_registry: Option<&'c Registry>,
    authority: &str,
) -> Result<Option<Selected<'c>>, Refusal> {
    let ns = query.map(query::find_ns).transpose().map_err(|e| Refusal::new(400, ErrorCode::Unsupported, format!("{e}")))?;
    let selected = |registry, by| Some(Selected { registry, by });
    Ok(if let Some(ns) = ns.flatten() {
        match config.registry_for_ns(&ns) {
            Some(registry) => selected(registry, SelectedBy::Ns),
            None => {
                return Err(Refusal::new(
                    404,
                    ErrorCode::NameUnknown,
                    format!("registry {} (from ns) is not served by this mirror", Clipped(&ns)),
                ));
            }
        }
    } else if let Some(registry) = alias_registry {
        selected(registry, SelectedBy::Alias)
    } else if let Some(registry) = config.registry_for_host(host_of(authority)) {
        selected(registry, SelectedBy::Host)
    } else {
        config.default_registry().and_then(|registry| selected(registry, SelectedBy::Default))
    })
}

/// A repository request once its endpoint is parsed.
struct RepositoryRequest<'r> {
    method: &'r str,
    name: &'r str,
    rest: &'r str,
    query: Option<&'r str>,
    aliased: bool,
}

impl RepositoryRequest<'_> {
    fn map<'c>(&self, config: &'c Config, selected: Selected<'c>) -> Decision<'c> {
        let Selected { registry, by } = selected;
        let (target, rule) = match map_name(config, registry, self.name) {
            Err(refusal) => return Decision::Refuse(refusal),
            Ok(Mapping::Prefixed) => {
                let has_ns = by == SelectedBy::Ns;
                let path = (self.aliased || has_ns).then(|| self.path(&HarborName::Unchanged(self.name)));
                return Decision::Forward { path, route: Route::Prefixed };
            }
            Ok(Mapping::To(target, rule)) => (target, rule),
        };
        if config.read_only && !matches!(self.method, "GET" | "HEAD") {
            return refuse(
                405,
                ErrorCode::Unsupported,
                format!("this mirror is read-only: {} of {} refused", self.method, ClientName(registry, self.name)),
            );
        }
        Decision::Forward { path: Some(self.path(&target)), route: Route::Mapped { registry, by, rule } }
    }

    /// `/v2/<harbor name><rest>?<query without ns>`.
    fn path(&self, name: &HarborName<'_, '_>) -> String {
        let query_len = self.query.map_or(0, |query| 1 + query.len());
        let mut out = String::with_capacity("/v2/".len() + name.len() + self.rest.len() + query_len);
        out.push_str("/v2/");
        name.push_to(&mut out);
        out.push_str(self.rest);
        if let Some(query) = self.query {
            query::push_without_ns(&mut out, query);
        }
        out
    }
}

/// The name a client asked for, as the registry's rules see it (`library/` added for Docker
/// Hub's single-segment names), for messages.
struct ClientName<'a>(&'a Registry, &'a str);

impl fmt::Display for ClientName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if needs_library(self.0, self.1) {
            f.write_str("library/")?;
        }
        f.write_str(self.1)
    }
}

fn needs_library(registry: &Registry, name: &str) -> bool {
    registry.is_docker_hub() && !name.contains('/')
}

/// Where a client-visible name goes, for requests and token scopes alike.
#[derive(Debug)]
pub(crate) enum Mapping<'c, 'n> {
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
pub(crate) fn map_name<'c, 'n>(config: &'c Config, registry: &'c Registry, name: &'n str) -> Result<Mapping<'c, 'n>, Refusal> {
    if let Err(why) = check_name(name) {
        return Err(Refusal::new(400, ErrorCode::NameInvalid, format!("invalid repository name: {why}")));
    }
    if config.is_under_project(name) {
        return Ok(Mapping::Prefixed);
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
    Ok(Mapping::To(target, rule))
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

/// Managed mode's listener is a pull-only mirror for anonymous clients: what is not the registry
/// API is answered here, so that no request without the robot's token reaches Harbor on a
/// client's behalf (and no client credential at all).
fn refuse_in_managed_mode<'c>(why: &str) -> Decision<'c> {
    refuse(404, ErrorCode::NotFound, format!("this mirror authenticates to harbor with its own robot account (managed mode): {why}"))
}

fn refuse<'c>(status: u32, code: ErrorCode, message: String) -> Decision<'c> {
    Decision::Refuse(Refusal::new(status, code, message))
}

/// The path Harbor knows for an aliased request: the alias form is this mirror's own.
fn without_alias(api_path: &str, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{api_path}?{query}"),
        None => api_path.to_owned(),
    }
}

/// Splits `/<alias>/v2/...` (or `/<alias>/service/token`) into the alias and the path Harbor
/// knows; `/v2/...` has no alias. `None` for paths outside the registry API and token service.
fn split_alias(path: &str) -> Option<(Option<&str>, &str)> {
    let is_api = |p: &str| oci::is_registry_path(p) || p == TOKEN_PATH;
    if is_api(path) {
        return Some((None, path));
    }
    let (alias, _) = path.strip_prefix('/')?.split_once('/')?;
    let api_path = &path[1 + alias.len()..];
    is_api(api_path).then_some((Some(alias), api_path))
}

/// The host of an `:authority`, without port; IPv6 literals keep their brackets off.
fn host_of(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split_once(']').map_or(authority, |(host, _)| host);
    }
    authority.split_once(':').map_or(authority, |(host, _)| host)
}

/// Client text in a message or log line: quoted, and cut to its first 64 characters so that a
/// hostile request cannot make either large.
pub(crate) struct Clipped<'a>(pub &'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        match self.0.char_indices().nth(SHOWN) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}
