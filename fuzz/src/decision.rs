//! What every [`Decision`] must satisfy, whatever the request: the `decide` target's invariants,
//! also applied by the `config` target (to decisions under fuzzed configurations) and by the
//! `token_scopes` target.

use std::fmt;

use harbor_mirror_core::config::Registry;
use harbor_mirror_core::oci::{self, Endpoint};
use harbor_mirror_core::{Config, Decision, Refusal, Request, Route, Rule, SelectedBy};

use crate::text::{has_line_break, has_ns, host_of, is_api_grammar, is_http_token, ns_of, path_problem, query_without_ns, split_query};

/// Harbor's token service path.
pub const TOKEN_PATH: &str = "/service/token";

/// The case being checked, for failure messages: the request, the configuration's name and
/// what was decided. Written out only when a check fails.
pub struct Ctx<'a> {
    config_name: &'a str,
    request: &'a Request<'a>,
    decision: &'a Decision<'a>,
}

impl<'a> Ctx<'a> {
    /// Describes `request` under configuration `config_name` and its `decision`.
    pub fn new(config_name: &'a str, request: &'a Request<'a>, decision: &'a Decision<'a>) -> Self {
        Ctx { config_name, request, decision }
    }
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ctx { config_name, request, decision } = self;
        write!(
            f,
            "{} {} (authority {}, config {config_name}) decided as: {decision}",
            Clip(request.method),
            Clip(request.path),
            Clip(request.authority)
        )
    }
}

/// Client text in a message: quoted, and cut after 300 characters.
pub struct Clip<'a>(pub &'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(300) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// A request's `:path` as the filter's routing sees it.
pub struct Original<'a> {
    /// The query, if any.
    pub query: Option<&'a str>,
    /// The first segment, when what follows it is `/v2`, `/v2/...` or the token path.
    pub alias: Option<&'a str>,
    /// The path part without the alias: what Harbor knows.
    pub api: &'a str,
}

impl<'a> Original<'a> {
    /// Splits `path` into alias, API path and query.
    pub fn of(path: &'a str) -> Self {
        let (part, query) = split_query(path);
        let is_api = |p: &str| p == "/v2" || p.starts_with("/v2/") || p == TOKEN_PATH;
        if !is_api(part)
            && let Some((alias, _)) = part.strip_prefix('/').and_then(|rest| rest.split_once('/'))
        {
            let api = &part[1 + alias.len()..];
            if is_api(api) {
                return Original { query, alias: Some(alias), api };
            }
        }
        Original { query, alias: None, api: part }
    }

    /// `<api path>[?<query>]`: the path an aliased request goes on with when nothing is mapped.
    pub fn without_alias(&self) -> String {
        match self.query {
            Some(query) => format!("{}?{query}", self.api),
            None => self.api.to_owned(),
        }
    }

    /// The repository name and endpoint of a `/v2/<name><rest>` path, by the registry grammar.
    pub fn repository(&self) -> Option<(&'a str, &'a str)> {
        match oci::parse_endpoint(self.api.strip_prefix("/v2/")?) {
            Endpoint::Repository { name, rest } => Some((name, rest)),
            Endpoint::Ping | Endpoint::Other => None,
        }
    }

    fn is_registry_path(&self) -> bool {
        self.api == "/v2" || self.api.starts_with("/v2/")
    }
}

/// Where the documented rules send a client-visible name for `registry` (README, "What the
/// filter does" and the configuration reference).
#[derive(Debug, PartialEq, Eq)]
pub enum Model {
    /// Already under a configured or passthrough project: kept as it is.
    Prefixed,
    /// Mapped to this Harbor repository by this rule.
    To(String, Rule),
    /// Not a valid name, denied, not allowed, or mapped outside the projects or the grammar.
    Refused,
}

/// The documented mapping of `name` for `registry`: names under a project stay; then deny,
/// allow, the first rewrite rule that matches (its result must be a valid name under a
/// project), else `<project>/[library/]<name>`, `library/` for Docker Hub's one-segment names.
pub fn model(config: &Config, registry: &Registry, name: &str) -> Model {
    if !oci::is_valid_name(name) {
        return Model::Refused;
    }
    if config.is_under_project(name) {
        return Model::Prefixed;
    }
    let client = if registry.is_docker_hub() && !name.contains('/') { format!("library/{name}") } else { name.to_owned() };
    if registry.deny.iter().any(|rule| rule.is_match(&client)) {
        return Model::Refused;
    }
    if !registry.allow.is_empty() && !registry.allow.iter().any(|rule| rule.is_match(&client)) {
        return Model::Refused;
    }
    if let Some((i, target)) = registry.rewrite.iter().enumerate().find_map(|(i, rule)| rule.apply(&client).map(|t| (i, t))) {
        let confined = oci::is_valid_name(&target) && config.is_under_project(&target);
        return if confined { Model::To(target, Rule::Rewrite(i)) } else { Model::Refused };
    }
    match &registry.project {
        Some(project) => {
            let target = format!("{project}/{client}");
            if target.len() > oci::MAX_NAME_LEN { Model::Refused } else { Model::To(target, Rule::Project) }
        }
        None => Model::Refused,
    }
}

/// Checks one decision. `config_name` only labels failures.
pub fn check<'a>(config_name: &'a str, config: &Config, request: &'a Request<'a>, decision: &'a Decision<'a>) {
    let ctx = Ctx::new(config_name, request, decision);
    let original = Original::of(request.path);
    // Envoy's codecs pass only token methods, and no CR, LF or NUL in any header value (README,
    // Security): one-line messages are required of such requests only.
    let from_envoy = is_http_token(request.method) && !has_line_break(request.path) && !has_line_break(request.authority);
    if from_envoy {
        // The decision's one line goes to the debug log and the `x-harbor-mirror` header.
        ensure!(!has_line_break(&decision.to_string()), "the decision's description is not one line: {ctx}");
    }
    let (new_path, route) = match decision {
        Decision::Refuse(refusal) => return check_refusal(&ctx, refusal, from_envoy),
        Decision::Forward { path, route } => (path.as_deref(), route),
    };
    // One reading of the path: whatever is forwarded, Harbor cannot route it differently.
    let forwarded = new_path.unwrap_or(request.path);
    let (forwarded_part, _) = split_query(forwarded);
    if let Some(problem) = path_problem(forwarded_part) {
        panic!("invariant broken: the forwarded path {} {problem}: {ctx}", Clip(forwarded));
    }
    let alias_registry = original.alias.map(|alias| config.registry_for_alias(alias));
    if matches!(alias_registry, Some(None)) {
        // `/<unknown>/v2/...` is no API path of this mirror: passed on as it is, to Harbor's 404.
        ensure!(matches!(route, Route::NotRepository) && new_path.is_none(), "an unknown alias was routed: {ctx}");
        return;
    }
    let unaliased = || original.alias.is_some().then(|| original.without_alias());
    match route {
        Route::Ping { registry } => {
            ensure!(matches!(original.api, "/v2" | "/v2/"), "a ping route for another path: {ctx}");
            ensure!(registry.map(|r| r.index) == alias_registry.flatten().map(|r| r.index), "the ping's registry is not its alias's: {ctx}");
            ensure!(new_path == unaliased().as_deref(), "a ping goes on as sent, less its alias: {ctx}");
        }
        Route::NotRepository => {
            ensure!(new_path == unaliased().as_deref(), "a request not about a repository goes on as sent, less its alias: {ctx}");
            if original.api == TOKEN_PATH {
                ensure!(!config.auth.rewrite_tokens, "a token request passed unmapped with token handling on: {ctx}");
            } else if original.is_registry_path() {
                ensure!(original.repository().is_none() && !matches!(original.api, "/v2" | "/v2/"), "a repository request passed unmapped: {ctx}");
            }
        }
        Route::NoRegistry => {
            ensure!(new_path.is_none(), "a request no registry applies to goes on as sent: {ctx}");
            ensure!(config.default_registry().is_none(), "no registry applied despite the default registry: {ctx}");
            ensure!(original.alias.is_none() && !has_ns(original.query), "no registry applied despite an alias or ns: {ctx}");
            ensure!(config.registry_for_host(host_of(request.authority)).is_none(), "no registry applied despite a host match: {ctx}");
        }
        Route::Prefixed => {
            let Some((name, rest)) = original.repository() else {
                panic!("invariant broken: a prefixed route for a path that is no repository request: {ctx}");
            };
            ensure!(config.is_under_project(name), "{name:?} passed as prefixed but is under no project: {ctx}");
            ensure!(selected(config, &original, request.authority).is_some(), "prefixed though no registry applies: {ctx}");
            let expected = (original.alias.is_some() || has_ns(original.query))
                .then(|| format!("/v2/{name}{rest}{}", query_without_ns(original.query)));
            ensure!(new_path == expected.as_deref(), "a prefixed name goes on unchanged, less alias and ns (expected {expected:?}): {ctx}");
            ensure!(is_api_grammar(forwarded_part), "the forwarded repository path has bytes outside the registry grammar: {ctx}");
        }
        Route::Mapped { registry, by, rule } => {
            let Some((name, rest)) = original.repository() else {
                panic!("invariant broken: a mapped route for a path that is no repository request: {ctx}");
            };
            check_selection(&ctx, config, &original, request.authority, registry, *by);
            ensure!(
                !config.read_only || matches!(request.method, "GET" | "HEAD"),
                "a read-only mirror mapped a {} request: {ctx}",
                Clip(request.method)
            );
            let Model::To(target, model_rule) = model(config, registry, name) else {
                panic!("invariant broken: mapped {name:?}, which the rules {:?}: {ctx}", model(config, registry, name));
            };
            ensure!(*rule == model_rule, "mapped by {rule:?} where the rules say {model_rule:?}: {ctx}");
            // Confinement: the Harbor repository is under a configured or passthrough project.
            ensure!(config.is_under_project(&target), "mapped outside every project: {ctx}");
            let expected = format!("/v2/{target}{rest}{}", query_without_ns(original.query));
            ensure!(new_path == Some(expected.as_str()), "expected the path {expected:?}: {ctx}");
            ensure!(is_api_grammar(forwarded_part), "the forwarded repository path has bytes outside the registry grammar: {ctx}");
        }
        Route::Token { registry, by, refused } => {
            ensure!(original.api == TOKEN_PATH, "a token route for another path: {ctx}");
            ensure!(config.auth.rewrite_tokens, "token scopes mapped with token handling off: {ctx}");
            check_selection(&ctx, config, &original, request.authority, registry, *by);
            crate::token::check(&ctx, config, registry, original.query, new_path, refused, from_envoy);
        }
    }
}

/// The registry the documented order selects (a valid `ns`, the alias, the host, the default),
/// and how; `None` when none applies or `ns` must be refused.
pub fn selected<'c>(config: &'c Config, original: &Original<'_>, authority: &str) -> Option<(&'c Registry, SelectedBy)> {
    match ns_of(original.query) {
        Err(_) => None,
        Ok(Some(ns)) => config.registry_for_ns(&ns).map(|registry| (registry, SelectedBy::Ns)),
        Ok(None) => {
            if let Some(registry) = original.alias.and_then(|alias| config.registry_for_alias(alias)) {
                Some((registry, SelectedBy::Alias))
            } else if let Some(registry) = config.registry_for_host(host_of(authority)) {
                Some((registry, SelectedBy::Host))
            } else {
                config.default_registry().map(|registry| (registry, SelectedBy::Default))
            }
        }
    }
}

fn check_selection(ctx: &Ctx, config: &Config, original: &Original<'_>, authority: &str, registry: &Registry, by: SelectedBy) {
    let expected = selected(config, original, authority).map(|(registry, by)| (registry.key.as_str(), by));
    ensure!(expected == Some((registry.key.as_str(), by)), "registry {} by {by:?} where the order selects {expected:?}: {ctx}", registry.key);
}

/// A refusal is an OCI error reply: a 4xx or 5xx status, a code, and a JSON body
/// `{"errors":[{"code":...,"message":...}]}` holding exactly those; its message is one line.
pub fn check_refusal(ctx: &dyn fmt::Display, refusal: &Refusal, from_envoy: bool) {
    ensure!((400..=599).contains(&refusal.status), "refusal status {}: {ctx}", refusal.status);
    let code = refusal.code.as_str();
    ensure!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "refusal code {code:?}: {ctx}");
    ensure!(!refusal.message.is_empty(), "a refusal without message: {ctx}");
    if from_envoy {
        ensure!(!has_line_break(&refusal.message), "the refusal's message is not one line: {ctx}");
    }
    let body = refusal.body();
    let parsed: serde_json::Value = match serde_json::from_str(&body) {
        Ok(parsed) => parsed,
        Err(e) => panic!("invariant broken: the refusal body {body:?} is not JSON ({e}): {ctx}"),
    };
    let expected = serde_json::json!({"errors": [{"code": code, "message": refusal.message}]});
    ensure!(parsed == expected, "the refusal body {body:?} is not the OCI error of its code and message: {ctx}");
}
