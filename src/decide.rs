//! The request decision: which registry a request is for and which Harbor repository path it
//! goes to, or why it is refused. Pure: borrowed request parts in, a [`Decision`] out.

use std::fmt;

use crate::ascii;
use crate::authority;
use crate::config::{Config, Registry};
use crate::harbor::TOKEN_PATH;
use crate::names::{map_name, ClientName, HarborName, Mapped, Rule};
use crate::oci::{self, Endpoint, ErrorCode};
use crate::path;
use crate::query;
use crate::refusal::{Clipped, Refusal};
use crate::scopes;

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

impl<'a> Request<'a> {
    /// The request from its header bytes, as the host hands them over; a request whose method,
    /// path or authority is not UTF-8 is refused (400 `NAME_INVALID`): no route reads it alike.
    pub fn from_bytes(method: &'a [u8], path: &'a [u8], authority: &'a [u8]) -> Result<Self, Refusal> {
        let text = |bytes: &'a [u8]| std::str::from_utf8(bytes).ok();
        match (text(method), text(path), text(authority)) {
            (Some(method), Some(path), Some(authority)) => Ok(Request { method, path, authority }),
            _ => Err(Refusal::new(400, ErrorCode::NameInvalid, "request path, method or authority is not valid UTF-8".to_owned())),
        }
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision<'c> {
    /// Forward it.
    Forward {
        /// The new `:path`; `None` keeps the client's.
        path: Option<String>,
        /// Why it goes where it goes.
        route: Route<'c>,
    },
    /// Answer it here with an OCI error; nothing reaches Harbor.
    Refuse(Refusal),
}

/// Why a forwarded request went where it went.
#[derive(Debug)]
pub enum Route<'c> {
    /// `/v2/` (or `/<alias>/v2/`, then with the alias's registry): the API version check
    /// clients start with.
    Ping {
        /// The alias's registry, if any.
        registry: Option<&'c Registry>,
    },
    /// Not about one repository: `/v2/_catalog`, other `/v2/` shapes, Harbor's UI and API, and
    /// token requests when token handling is off.
    NotRepository,
    /// A repository request for which no registry applies (no `ns`, alias, host or default).
    NoRegistry,
    /// The name already starts with a configured or passthrough project.
    Prefixed,
    /// The name was mapped to a Harbor repository.
    Mapped {
        /// The registry the name is of.
        registry: &'c Registry,
        /// How the registry was chosen.
        by: SelectedBy,
        /// Which mapping made the Harbor name.
        rule: Rule,
    },
    /// A token request whose repository scopes were mapped.
    Token {
        /// The registry the scopes are of.
        registry: &'c Registry,
        /// How the registry was chosen.
        by: SelectedBy,
        /// The scopes dropped, with why.
        refused: Vec<Refusal>,
    },
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
    let (path, query) = match ascii::split_once(request.path, b'?') {
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
    if config.awaits_discovery() && !config.is_under_project(name) {
        return refuse_awaiting_discovery(config);
    }
    let repository = RepositoryRequest { method: request.method, name, rest, query, aliased: alias.is_some() };
    match select_registry(config, query, alias_registry, request.authority, !config.is_under_project(name)) {
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
    if config.awaits_discovery() {
        return refuse_awaiting_discovery(config);
    }
    // A token request without a registry is Harbor's to answer: it grants nothing on names
    // no project has.
    match select_registry(config, query, alias_registry, request.authority, false) {
        Ok(Some(selected)) => {
            let scopes = scopes::rewrite_scopes(config, selected.registry, TOKEN_PATH, query.unwrap_or(""));
            Decision::Forward {
                path: Some(scopes.path),
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
/// mirror does not serve is refused rather than guessed, and so is a default registry Harbor has
/// no project for when the name `needs_mapping` (it is under no project).
fn select_registry<'c>(
    config: &'c Config,
    query: Option<&str>,
    alias_registry: Option<&'c Registry>,
    authority: &str,
    needs_mapping: bool,
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
    } else if let Some(registry) = config.registry_for_host(authority::host(authority)) {
        selected(registry, SelectedBy::Host)
    } else if let Some(registry) = config.default_registry() {
        selected(registry, SelectedBy::Default)
    } else if let Some(name) = config.default_missing.as_ref().filter(|_| needs_mapping) {
        return Err(Refusal::new(
            404,
            ErrorCode::NameUnknown,
            format!("registry {name:?} (default_registry) has no proxy-cache project in harbor (discover)"),
        ));
    } else {
        None
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
            Ok(Mapped::Prefixed) => {
                let has_ns = by == SelectedBy::Ns;
                let path = (self.aliased || has_ns).then(|| self.path(&HarborName::Unchanged(self.name)));
                return Decision::Forward { path, route: Route::Prefixed };
            }
            Ok(Mapped::To(target, rule)) => (target, rule),
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


/// Discovery has not read the registries from Harbor yet: clients get a 503 and fall back to
/// their next mirror or the upstream.
fn refuse_awaiting_discovery(config: &Config) -> Decision<'_> {
    let cluster = config.discover.as_ref().map_or("", |discover| discover.cluster.as_str());
    refuse(
        503,
        ErrorCode::Unavailable,
        format!("the mirror has not read its registries from harbor's API yet (discover, through cluster {cluster:?}); try again shortly"),
    )
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
    let (alias, _) = ascii::split_once(path.strip_prefix('/')?, b'/')?;
    let api_path = &path[1 + alias.len()..];
    is_api(api_path).then_some((Some(alias), api_path))
}

