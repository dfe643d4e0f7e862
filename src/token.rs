//! Harbor's token service, from the filter's side: rewriting the scopes of a client's token
//! request, and the pure parts of managed mode (the token request the filter sends, reading
//! Harbor's answer, and the shared token cache's entries and their freshness).
//!
//! docker, podman and skopeo ask for `repository:<their own name>:pull`, ignoring the scope of
//! Harbor's challenge; Harbor would grant nothing on the proxy project for that name. The scope
//! is mapped with the very rules that map request paths ([`crate::decide`]).

use std::borrow::Cow;

use crate::challenge::{HARBOR_SERVICE, TOKEN_PATH};
use crate::config::{Config, Managed, Registry};
use crate::decide::{map_name, Clipped, Mapping, Refusal};
use crate::json::{self, Struct, Ty};
use crate::oci::{self, ErrorCode};
use crate::query;

/// A token request's query with its scopes mapped, and the scopes that were dropped.
#[derive(Debug)]
pub struct ScopeRewrite {
    /// The new query, with its leading `?`, or empty.
    pub query: String,
    /// Why each dropped scope was dropped.
    pub refused: Vec<Refusal>,
}

/// Maps every repository scope of a token request's `query` for `registry` and drops `ns`.
///
/// Scopes may repeat and may hold space-separated lists; the result has one `scope` parameter
/// per distinct scope, where the first `scope` was. Every other parameter keeps its bytes and
/// place. A scope whose name the rules refuse is dropped: Harbor then grants nothing for it.
pub(crate) fn rewrite_scopes(config: &Config, registry: &Registry, query: &str) -> ScopeRewrite {
    let mut scopes: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    for value in query.split('&').filter_map(|pair| pair.strip_prefix("scope=")) {
        let Some(decoded) = query::percent_decode(value) else {
            refused.push(Refusal::new(400, ErrorCode::Unsupported, format!("scope {} is not valid percent-encoded UTF-8", Clipped(value))));
            continue;
        };
        for scope in decoded.split(' ').filter(|scope| !scope.is_empty()) {
            match map_scope(config, registry, scope) {
                Ok(mapped) => {
                    if !scopes.iter().any(|seen| *seen == mapped) {
                        scopes.push(mapped.into_owned());
                    }
                }
                Err(refusal) => refused.push(refusal),
            }
        }
    }
    let mut out = String::with_capacity(query.len() + 32);
    let mut separator = '?';
    let mut scopes_written = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match query::key(pair) {
            "ns" => {}
            "scope" => {
                if !std::mem::replace(&mut scopes_written, true) {
                    for scope in &scopes {
                        out.push(separator);
                        out.push_str("scope=");
                        query::push_encoded(&mut out, scope);
                        separator = '&';
                    }
                }
            }
            _ => {
                out.push(separator);
                out.push_str(pair);
                separator = '&';
            }
        }
    }
    ScopeRewrite { query: out, refused }
}

/// Maps one `type:name:actions` scope. Scopes that are not about a repository, or that do not
/// have that shape, are Harbor's business and stay as they are.
fn map_scope<'s>(config: &Config, registry: &Registry, scope: &'s str) -> Result<Cow<'s, str>, Refusal> {
    let Some((kind, rest)) = scope.split_once(':') else {
        return Ok(Cow::Borrowed(scope));
    };
    let Some((name, actions)) = rest.rsplit_once(':') else {
        return Ok(Cow::Borrowed(scope));
    };
    // `repository(plugin)` is a resource class on the same repository names.
    if kind.split('(').next() != Some("repository") {
        return Ok(Cow::Borrowed(scope));
    }
    match map_name(config, registry, name)? {
        Mapping::Prefixed => Ok(Cow::Borrowed(scope)),
        Mapping::To(target, _) => {
            let mut mapped = String::with_capacity(kind.len() + target.len() + actions.len() + 2);
            mapped.push_str(kind);
            mapped.push(':');
            target.push_to(&mut mapped);
            mapped.push(':');
            mapped.push_str(actions);
            Ok(Cow::Owned(mapped))
        }
    }
}

/// The `:path` of the managed-mode token request for pulling `repository` (a Harbor name).
/// Harbor grants per project, so the token serves every repository of that project.
pub fn managed_token_path(repository: &str) -> String {
    let mut path = format!("{TOKEN_PATH}?service={HARBOR_SERVICE}&scope=");
    query::push_encoded(&mut path, &format!("repository:{repository}:pull"));
    path
}

/// Harbor's answer to a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The bearer token.
    pub token: String,
    /// Seconds the token is valid for.
    pub expires_in: u64,
}

/// The validity the token spec assumes when `expires_in` is missing.
const DEFAULT_EXPIRES_IN: u64 = 60;

/// Reads a token response body: `token` (or `access_token`) and `expires_in`.
pub fn parse_grant(body: &[u8]) -> Result<Grant, String> {
    // What `#[derive(Deserialize)]` would read into
    // `struct Wire { token: Option<String>, access_token: Option<String>, expires_in: Option<u64> }`
    // with `#[serde(default)]` fields (see `crate::json`).
    static WIRE: Struct = Struct {
        name: "struct Wire",
        as_array: "struct Wire with 3 elements",
        fields: &["token", "access_token", "expires_in"],
        types: &[Ty::Opt(&Ty::Str), Ty::Opt(&Ty::Str), Ty::Opt(&Ty::U64)],
        required: 0,
        deny_unknown_fields: false,
    };
    let mut wire =
        json::from_slice(body, Ty::Struct(&WIRE)).map_err(|e| format!("token response is not the expected JSON: {e}"))?.fields();
    let (token, access_token, expires_in) = (wire.take(0).string(), wire.take(1).string(), wire.take(2).u64());
    let token = token.filter(|t| !t.is_empty()).or(access_token.filter(|t| !t.is_empty()));
    let token = token.ok_or_else(|| "token response has no token".to_owned())?;
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("token response holds a token that cannot go in a header".to_owned());
    }
    Ok(Grant { token, expires_in: expires_in.filter(|&s| s > 0).unwrap_or(DEFAULT_EXPIRES_IN) })
}

/// What a managed-mode token request came to: the grant, or the refusal the waiting clients get.
///
/// `status` is `None` when Harbor did not answer (timeout, connection failure). Bad robot
/// credentials are this mirror's misconfiguration, so clients get 503 rather than a 401 they
/// could do nothing about; a grant without pull on the project is the truth of a 403.
pub fn judge_answer(status: Option<u32>, body: &[u8], project: &str, robot: &str, cluster: &str) -> Result<Grant, Refusal> {
    let unavailable = |message: String| Err(Refusal::new(503, ErrorCode::Unavailable, message));
    match status {
        // Envoy reports its own timeout of the call as a 504.
        None | Some(504) => {
            unavailable(format!("harbor's token service did not answer (timeout or connection failure on cluster {cluster:?})"))
        }
        Some(200) => {
            let grant = match parse_grant(body) {
                Ok(grant) => grant,
                Err(e) => return unavailable(format!("harbor's token service answered without a usable token: {e}")),
            };
            if grants_pull(&grant.token, project) == Some(false) {
                return Err(Refusal::new(
                    403,
                    ErrorCode::Denied,
                    format!("harbor grants robot {robot} no pull on project {project} (the robot lacks it, or the project does not exist)"),
                ));
            }
            Ok(grant)
        }
        Some(401) => unavailable(format!("harbor refused the mirror's robot credentials ({robot}); check auth.robot")),
        Some(403) => Err(Refusal::new(403, ErrorCode::Denied, format!("harbor's token service denied robot {robot} (403)"))),
        // Envoy answers the call itself with 503 when it cannot connect.
        Some(503) => unavailable(format!("harbor's token service answered 503, or cluster {cluster:?} could not reach it")),
        Some(status) => unavailable(format!("harbor's token service answered {status}")),
    }
}

/// Whether a Harbor token grants `pull` on `project`, read from its JWT `access` claim. `None`
/// when the token is not a JWT this can read; Harbor then decides on the request itself.
pub fn grants_pull(token: &str, project: &str) -> Option<bool> {
    let mut parts = token.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    claims_grant_pull(&crate::base64::decode(payload)?, project)
}

/// [`grants_pull`] on the JWT's claims, a JSON object.
fn claims_grant_pull(claims: &[u8], project: &str) -> Option<bool> {
    // What `#[derive(Deserialize)]` would read into `struct Claims { access: Vec<Access> }` and
    // `struct Access { #[serde(rename = "type")] kind: String, name: String, actions: Vec<String> }`,
    // all fields `#[serde(default)]` (see `crate::json`).
    static CLAIMS: Struct = Struct {
        name: "struct Claims",
        as_array: "struct Claims with 1 element",
        fields: &["access"],
        types: &[Ty::List(&Ty::Struct(&ACCESS))],
        required: 0,
        deny_unknown_fields: false,
    };
    static ACCESS: Struct = Struct {
        name: "struct Access",
        as_array: "struct Access with 3 elements",
        fields: &["type", "name", "actions"],
        types: &[Ty::Str, Ty::Str, Ty::List(&Ty::Str)],
        required: 0,
        deny_unknown_fields: false,
    };
    let mut claims = json::from_slice(claims, Ty::Struct(&CLAIMS)).ok()?.fields();
    Some(claims.take(0).list().into_iter().any(|access| {
        let mut access = access.fields();
        let (kind, name, actions) = (access.take(0).string(), access.take(1).string(), access.take(2).strings());
        kind.as_deref() == Some("repository")
            && oci::first_component(name.as_deref().unwrap_or("")).0 == project
            && actions.iter().any(|action| action == "pull" || action == "*")
    }))
}

/// The shared-data key of the cached token for `project`, per Harbor and robot so that a
/// configuration change never reuses another account's token.
pub fn cache_key(managed: &Managed, project: &str) -> String {
    format!("harbor_mirror.token/{}/{}/{project}", managed.authority, managed.username)
}

/// A cached token with the time (Unix seconds) until which it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheEntry<'a> {
    /// Unix seconds after which the token is fetched again.
    pub fresh_until: u64,
    /// The bearer token.
    pub token: &'a str,
}

impl<'a> CacheEntry<'a> {
    /// The entry for a grant received at `now`: used until shortly before it expires, so that a
    /// request never reaches Harbor with a token that lapses on the way.
    pub fn for_grant(grant: &'a Grant, now: u64) -> Self {
        let margin = (grant.expires_in / 10).min(60);
        CacheEntry { fresh_until: now.saturating_add(grant.expires_in - margin), token: &grant.token }
    }

    /// The shared-data value: `<fresh_until> <token>`.
    pub fn encode(&self) -> String {
        format!("{} {}", self.fresh_until, self.token)
    }

    /// Reads a shared-data value; `None` if it is not one this filter wrote.
    pub fn decode(value: &'a [u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let (fresh_until, token) = value.split_once(' ')?;
        let fresh_until = fresh_until.parse().ok()?;
        (!token.is_empty()).then_some(CacheEntry { fresh_until, token })
    }

    /// Whether the token may still be used at `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now < self.fresh_until
    }
}

/// The token readers against the `#[derive(Deserialize)]` types they replace (kept here as they
/// were): the same answers, and the same error messages for Harbor's token response.
#[cfg(test)]
mod wire_tests {
    use serde::Deserialize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::{claims_grant_pull, parse_grant, Grant, DEFAULT_EXPIRES_IN};
    use crate::json::fuzz::{mutate, Rng};
    use crate::oci;

    fn derived_parse_grant(body: &[u8]) -> Result<Grant, String> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("token response is not the expected JSON: {e}"))?;
        let token = wire.token.filter(|t| !t.is_empty()).or(wire.access_token.filter(|t| !t.is_empty()));
        let token = token.ok_or_else(|| "token response has no token".to_owned())?;
        if token.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err("token response holds a token that cannot go in a header".to_owned());
        }
        Ok(Grant { token, expires_in: wire.expires_in.filter(|&s| s > 0).unwrap_or(DEFAULT_EXPIRES_IN) })
    }

    fn derived_claims_grant_pull(claims: &[u8], project: &str) -> Option<bool> {
        #[derive(Deserialize)]
        struct Claims {
            #[serde(default)]
            access: Vec<Access>,
        }
        #[derive(Deserialize)]
        struct Access {
            #[serde(default, rename = "type")]
            kind: String,
            #[serde(default)]
            name: String,
            #[serde(default)]
            actions: Vec<String>,
        }
        let claims: Claims = serde_json::from_slice(claims).ok()?;
        Some(claims.access.iter().any(|access| {
            access.kind == "repository"
                && oci::first_component(&access.name).0 == project
                && access.actions.iter().any(|action| action == "pull" || action == "*")
        }))
    }

    #[test]
    fn token_answers_read_as_derive_reads_them() {
        let seeds: &[&[u8]] = &[
            br#"{"token": "t0k", "access_token": "a", "expires_in": 300, "issued_at": "2024-01-01T00:00:00Z"}"#,
            br#"{"access_token": "a", "expires_in": -5, "x": [1, {"y": null}]}"#,
            br#"["t", null, 1.5]"#,
            br#"{"token": "", "expires_in": null, "token": "b"}"#,
        ];
        let mut rng = Rng::new(0x70_6b65);
        for i in 0..3000 {
            let body = if i < seeds.len() { seeds[i].to_vec() } else { mutate(&mut rng, seeds[i % seeds.len()]) };
            assert_eq!(derived_parse_grant(&body), parse_grant(&body), "body {:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn token_claims_read_as_derive_reads_them() {
        let seeds: &[&[u8]] = &[
            br#"{"iss": "harbor-token-issuer", "access": [{"type": "repository", "name": "p/a", "actions": ["pull", "push"]}]}"#,
            br#"{"access": [["repository", "p/a", ["*"]], {"type": "repository", "name": "q/b"}]}"#,
            br#"{"access": null}"#,
            br#"[[{"name": "p/x", "actions": ["pull"], "type": "repository", "extra": {}}]]"#,
        ];
        let mut rng = Rng::new(0x636c_6169);
        for i in 0..3000 {
            let claims = if i < seeds.len() { seeds[i].to_vec() } else { mutate(&mut rng, seeds[i % seeds.len()]) };
            for project in ["p", "q"] {
                assert_eq!(
                    derived_claims_grant_pull(&claims, project),
                    claims_grant_pull(&claims, project),
                    "claims {:?}",
                    String::from_utf8_lossy(&claims)
                );
            }
        }
    }
}
