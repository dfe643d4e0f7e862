//! Pass-through mode's token requests: the scopes a client asks Harbor's token service for,
//! mapped like request paths.
//!
//! docker, podman and skopeo ask for `repository:<their own name>:pull`, ignoring the scope of
//! Harbor's challenge; Harbor would grant nothing on the proxy project for that name. The scope
//! is mapped with the very rules that map request paths ([`crate::names`]).

use std::borrow::Cow;

use crate::ascii;

use crate::config::{Config, Registry};
use crate::names::{map_name, Mapped};
use crate::oci::ErrorCode;
use crate::query;
use crate::refusal::{Clipped, Refusal};

/// A token request's path with its scopes mapped, and the scopes that were dropped.
#[derive(Debug)]
pub struct ScopeRewrite {
    /// The path the request was for, then the new query with its leading `?` (if any): the
    /// new `:path`, built once.
    pub path: String,
    /// Why each dropped scope was dropped.
    pub refused: Vec<Refusal>,
}

/// Maps every repository scope of a token request's `query` for `registry` and drops `ns`;
/// the result is the request's new path, `path` followed by the new query.
///
/// Scopes may repeat and may hold space-separated lists; the result has one `scope` parameter
/// per distinct scope, where the first `scope` was. Every other parameter keeps its bytes and
/// place. A scope whose name the rules refuse is dropped: Harbor then grants nothing for it.
pub fn rewrite_scopes(config: &Config, registry: &Registry, path: &str, query: &str) -> ScopeRewrite {
    let mut scopes: Vec<String> = Vec::new();
    let mut refused = Vec::new();
    for value in ascii::split(query, b'&').filter_map(|pair| pair.strip_prefix("scope=")) {
        let Some(decoded) = query::percent_decode(value) else {
            refused.push(Refusal::new(400, ErrorCode::Unsupported, format!("scope {} is not valid percent-encoded UTF-8", Clipped(value))));
            continue;
        };
        for scope in ascii::split(&decoded, b' ').filter(|scope| !scope.is_empty()) {
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
    let mut out = String::with_capacity(path.len() + query.len() + 32);
    out.push_str(path);
    let mut separator = '?';
    let mut scopes_written = false;
    for pair in ascii::split(query, b'&').filter(|pair| !pair.is_empty()) {
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
    ScopeRewrite { path: out, refused }
}

/// Maps one `type:name:actions` scope. Scopes that are not about a repository, or that do not
/// have that shape, are Harbor's business and stay as they are.
fn map_scope<'s>(config: &Config, registry: &Registry, scope: &'s str) -> Result<Cow<'s, str>, Refusal> {
    let Some((kind, rest)) = ascii::split_once(scope, b':') else {
        return Ok(Cow::Borrowed(scope));
    };
    let Some((name, actions)) = ascii::rsplit_once(rest, b':') else {
        return Ok(Cow::Borrowed(scope));
    };
    // `repository(plugin)` is a resource class on the same repository names.
    if ascii::split(kind, b'(').next() != Some("repository") {
        return Ok(Cow::Borrowed(scope));
    }
    match map_name(config, registry, name)? {
        Mapped::Prefixed => Ok(Cow::Borrowed(scope)),
        Mapped::To(target, _) => {
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
