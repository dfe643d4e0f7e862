//! What every [`Decision`] must satisfy, whatever the request: the `decide` target's invariants,
//! also applied by the `config` target (to decisions under fuzzed configurations) and by the
//! `token_scopes` target.

use harbor_mirror_core::config::Registry;
use harbor_mirror_core::oci::{self, Endpoint};
use harbor_mirror_core::{Config, Decision, Request, Route, SelectedBy};

use crate::model::{check_refusal, model, Clip, Ctx, Model, TOKEN_PATH};
use crate::text::{has_line_break, has_ns, host_of, is_api_grammar, is_http_token, ns_of, path_problem, query_without_ns, split_query};

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
