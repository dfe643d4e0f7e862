//! What a mapped token request must satisfy (the `token_scopes` target's invariants; the
//! `decide` target applies them to every token request it meets).
//!
//! The output is read the way Harbor reads it: Go's `url.ParseQuery` (keys unescaped too), then
//! every `scope` value split on spaces. A scope is `type:name:actions` split at the first and
//! the last `:`; it is a repository scope when its type, before any `(`, is `repository`.

use harbor_mirror_core::config::Registry;
use harbor_mirror_core::{Config, Refusal};

use crate::model::{check_refusal, model, Clip, Ctx, Model, TOKEN_PATH};
use crate::text::{decode_utf8, go_parse_query, key, split_query};

/// `(type, name, actions)` of a repository scope; `None` for any other scope.
pub fn repository_scope(scope: &str) -> Option<(&str, &str, &str)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    (kind.split('(').next() == Some("repository")).then_some((kind, name, actions))
}

/// The scopes of a client's token query as the filter reads them (`scope=` pairs, unescaped,
/// split on spaces), and how many `scope=` values could not be unescaped to UTF-8.
pub fn client_scopes(query: &str) -> (Vec<String>, usize) {
    let mut scopes = Vec::new();
    let mut undecodable = 0;
    for value in query.split('&').filter_map(|pair| pair.strip_prefix("scope=")) {
        match decode_utf8(value) {
            Some(decoded) => scopes.extend(decoded.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
            None => undecodable += 1,
        }
    }
    (scopes, undecodable)
}

/// The scopes Harbor reads from a forwarded token query, as bytes.
pub fn harbor_scopes(query: &str) -> Vec<Vec<u8>> {
    go_parse_query(query)
        .into_iter()
        .filter(|(key, _)| key == b"scope")
        .flat_map(|(_, value)| value.split(|&b| b == b' ').filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .collect()
}

/// Checks the new `:path` of a token request mapped for `registry`.
pub fn check(
    ctx: &Ctx<'_>,
    config: &Config,
    registry: &Registry,
    query: Option<&str>,
    new_path: Option<&str>,
    refused: &[Refusal],
    from_envoy: bool,
) {
    let Some(new_path) = new_path else {
        panic!("invariant broken: a mapped token request without a new path: {ctx}");
    };
    let (new_part, new_query) = split_query(new_path);
    ensure!(new_part == TOKEN_PATH, "a token request goes to {}: {ctx}", Clip(new_part));
    let query = query.unwrap_or("");
    let new_query = new_query.unwrap_or("");
    for refusal in refused {
        check_refusal(ctx, refusal, from_envoy);
    }

    let (input, undecodable) = client_scopes(query);
    // Each `scope=` value Go's `url.QueryUnescape` rejects is dropped, with a refusal; so is
    // each scope whose name the rules refuse.
    ensure!(
        refused.len() >= undecodable,
        "{} scopes dropped, but {undecodable} scope values are not valid escapes to Go (the filter decoded an escape Go rejects): {ctx}",
        refused.len()
    );
    ensure!(
        refused.len() <= undecodable + input.len(),
        "{} scopes dropped of {} (and {undecodable} undecodable values): {ctx}",
        refused.len(),
        input.len()
    );

    // The scope pairs the filter wrote: one scope each, unescaped to UTF-8, each once.
    let mut written: Vec<String> = Vec::new();
    for pair in new_query.split('&').filter(|pair| key(pair) == "scope") {
        let value = pair.strip_prefix("scope=").and_then(decode_utf8);
        let Some(value) = value.filter(|v| !v.is_empty() && !v.contains(' ')) else {
            panic!("invariant broken: the written scope pair {} is not one scope: {ctx}", Clip(pair));
        };
        ensure!(!written.contains(&value), "the scope {value:?} is written twice: {ctx}");
        written.push(value);
    }

    // Every scope Harbor reads is one the client asked for, or the documented mapping of one.
    let harbor = harbor_scopes(new_query);
    for scope in &harbor {
        let Ok(scope) = std::str::from_utf8(scope) else {
            panic!("invariant broken: Harbor reads the non-UTF-8 scope {:?}, which the filter never read: {ctx}", String::from_utf8_lossy(scope));
        };
        if let Some((_, name, _)) = repository_scope(scope) {
            // Confinement: a repository scope names a repository under a project.
            ensure!(config.is_under_project(name), "Harbor reads the scope {scope:?}, under no project: {ctx}");
        }
        let asked = input.iter().any(|asked| asked == scope);
        // Never widened: a mapped scope is exactly `<type>:<mapped name>:<actions>` of a
        // scope asked for (`<project>/[library/]<name>` by the project rule), its actions kept.
        let mapped = input.iter().filter_map(|asked| repository_scope(asked)).any(|(kind, name, actions)| {
            matches!(model(config, registry, name), Model::To(target, _) if *scope == format!("{kind}:{target}:{actions}"))
        });
        ensure!(asked || mapped, "Harbor reads the scope {scope:?}, neither asked for nor the mapping of one asked for: {ctx}");
    }
    let distinct = |scopes: &mut dyn Iterator<Item = &str>| {
        let mut seen: Vec<&str> = scopes.filter(|s| repository_scope(s).is_some()).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    let out_repositories = distinct(&mut harbor.iter().filter_map(|s| std::str::from_utf8(s).ok()));
    let in_repositories = distinct(&mut input.iter().map(String::as_str));
    ensure!(out_repositories <= in_repositories, "{out_repositories} repository scopes out of {in_repositories}: {ctx}");
    // Scopes that are not repository scopes are Harbor's business: they stay.
    for asked in input.iter().filter(|s| repository_scope(s).is_none()) {
        ensure!(harbor.iter().any(|s| s == asked.as_bytes()), "the scope {asked:?} was dropped: {ctx}");
    }

    // Every other parameter but `ns` keeps its bytes and order; the scopes stand together where
    // the first `scope` parameter stood.
    let others: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !matches!(key(p), "ns" | "scope")).collect();
    let out_pairs: Vec<&str> = new_query.split('&').filter(|p| !p.is_empty()).collect();
    let out_others: Vec<&str> = out_pairs.iter().copied().filter(|p| key(p) != "scope").collect();
    ensure!(others == out_others, "the other parameters {others:?} became {out_others:?}: {ctx}");
    if let Some(first) = out_pairs.iter().position(|p| key(p) == "scope") {
        let count = out_pairs.iter().filter(|p| key(p) == "scope").count();
        ensure!(out_pairs[first..first + count].iter().all(|p| key(p) == "scope"), "the scopes are not together: {ctx}");
        let place = query.split('&').take_while(|p| key(p) != "scope").filter(|p| !p.is_empty() && key(p) != "ns").count();
        ensure!(first == place, "the scopes moved from parameter {place} to {first}: {ctx}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_as_harbor_reads_them() {
        assert_eq!(repository_scope("repository:a/b:pull,push"), Some(("repository", "a/b", "pull,push")));
        assert_eq!(repository_scope("repository(plugin):a:x:pull"), Some(("repository(plugin)", "a:x", "pull")));
        assert_eq!(repository_scope("registry:catalog:*"), None);
        assert_eq!(repository_scope("repository:a"), None);
        assert_eq!(client_scopes("scope=a+b&scope=%zz&sc%6Fpe=c&scope=d%20"), (vec!["a".into(), "b".into(), "d".into()], 1));
        assert_eq!(harbor_scopes("scope=a+b&sc%6Fpe=c"), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    }
}
