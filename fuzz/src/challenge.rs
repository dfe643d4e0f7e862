//! What the `WWW-Authenticate` rewrite must satisfy (the `challenge` target's invariants).

use harbor_mirror_core::challenge::{self, Challenge, RealmTarget};

use std::fmt;

use crate::model::{Clip, TOKEN_PATH};
use crate::Describe;
use crate::text::key;

/// The targets an input byte picks from: the client's scheme and authority, the registry as
/// `ns`, and the scope of the Bearer challenge that replaces `Basic realm="harbor"`.
pub const TARGETS: [RealmTarget<'static>; 4] = [
    RealmTarget { scheme: "http", authority: "mirror:5000", ns: Some("quay.io"), bearer_scope: None },
    RealmTarget {
        scheme: "https",
        authority: "mirror.example.com",
        ns: Some("docker.io"),
        bearer_scope: Some("repository:dockerhub-proxy/library/alpine:pull"),
    },
    RealmTarget { scheme: "http", authority: "[::1]:5000", ns: None, bearer_scope: None },
    RealmTarget {
        scheme: "http",
        authority: "127.0.0.1:5000",
        ns: Some("localhost:5000"),
        bearer_scope: Some("repository:local-proxy/team/app:pull,push"),
    },
];

/// The realm that must replace a Bearer challenge's `realm`: this proxy's token path, Harbor's
/// realm query without its `ns` and empty pairs, then the target's `ns`.
pub fn expected_realm(harbor_realm: &str, target: &RealmTarget<'_>) -> String {
    let mut pairs: Vec<String> = Vec::new();
    if let Some((_, query)) = harbor_realm.split_once('?') {
        pairs.extend(query.split('&').filter(|pair| !pair.is_empty() && key(pair) != "ns").map(str::to_owned));
    }
    if let Some(ns) = target.ns {
        pairs.push(format!("ns={ns}"));
    }
    let mut url = format!("{}://{}{TOKEN_PATH}", target.scheme, target.authority);
    if !pairs.is_empty() {
        url.push('?');
        url.push_str(&pairs.join("&"));
    }
    url
}

fn is(challenge: &Challenge<'_>, scheme: &str) -> bool {
    challenge.scheme.eq_ignore_ascii_case(scheme)
}

/// Whether a challenge has a `realm` parameter (the filter rewrites every one).
fn has_realm(challenge: &Challenge<'_>) -> bool {
    challenge.params.iter().any(|p| p.name.eq_ignore_ascii_case("realm"))
}

/// Whether the rewrite must replace this challenge with a Bearer one.
fn replaces_basic(challenge: &Challenge<'_>, target: &RealmTarget<'_>) -> bool {
    is(challenge, "Basic") && challenge.param("realm") == Some("harbor") && target.bearer_scope.is_some()
}

/// Checks `rewrite(header, target)`.
pub fn check(header: &str, target: &RealmTarget<'_>) {
    let out = challenge::rewrite(header, target);
    let ctx = Describe(|f: &mut fmt::Formatter<'_>| match &out {
        Some(out) => write!(f, "header {} for {target:?} rewritten as {}", Clip(header), Clip(out)),
        None => write!(f, "header {} for {target:?} left alone", Clip(header)),
    });
    let parsed = challenge::parse(header);
    let Some(out) = out.as_deref() else {
        // Left alone only when it does not parse or holds nothing to edit.
        if let Ok(challenges) = parsed {
            for c in &challenges {
                ensure!(!(is(c, "Bearer") && has_realm(c)), "a Bearer realm was left alone: {ctx}");
                ensure!(!replaces_basic(c, target), "Basic realm=\"harbor\" was left alone: {ctx}");
            }
        }
        return;
    };
    let Ok(before) = parsed else {
        panic!("invariant broken: a header that does not parse was rewritten: {ctx}");
    };
    let after = match challenge::parse(out) {
        Ok(after) => after,
        Err(e) => panic!("invariant broken: the rewritten header does not parse ({e}): {ctx}"),
    };
    ensure!(before.len() == after.len(), "{} challenges became {}: {ctx}", before.len(), after.len());
    for byte in [b'\r', b'\n', b'\0'] {
        ensure!(!out.as_bytes().contains(&byte) || header.as_bytes().contains(&byte), "the rewrite added byte 0x{byte:02x}: {ctx}");
    }
    let prefix = format!("{}://{}{TOKEN_PATH}", target.scheme, target.authority);
    // Every byte outside the edits is kept: the text between challenges...
    let mut gap_before = 0..0;
    let mut gap_after = 0..0;
    for (b, a) in before.iter().zip(&after) {
        gap_before.end = b.span.start;
        gap_after.end = a.span.start;
        ensure!(header[gap_before.clone()] == out[gap_after.clone()], "the text between challenges changed: {ctx}");
        gap_before.start = b.span.end;
        gap_after.start = a.span.end;
    }
    ensure!(header[gap_before.start..] == out[gap_after.start..], "the text after the last challenge changed: {ctx}");
    // ...and each challenge but for its edit.
    for (b, a) in before.iter().zip(&after) {
        if is(b, "Bearer") && has_realm(b) {
            ensure!(a.scheme == b.scheme && a.token68 == b.token68, "a Bearer challenge changed its scheme: {ctx}");
            ensure!(a.params.len() == b.params.len(), "a Bearer challenge's parameters changed: {ctx}");
            // The challenge as it must read: every realm value replaced, every other byte kept.
            let mut expected_text = String::new();
            let mut copied = b.span.start;
            for (pb, pa) in b.params.iter().zip(&a.params) {
                ensure!(pa.name == pb.name, "parameter {} became {}: {ctx}", pb.name, pa.name);
                if pb.name.eq_ignore_ascii_case("realm") {
                    let expected = expected_realm(&pb.value, target);
                    ensure!(pa.value == expected, "realm {:?} became {:?}, not {expected:?}: {ctx}", pb.value, pa.value);
                    expected_text.push_str(&header[copied..pb.value_span.start]);
                    expected_text.push_str(&quoted(&expected));
                    copied = pb.value_span.end;
                } else {
                    ensure!(pa.value == pb.value, "parameter {} changed from {:?} to {:?}: {ctx}", pb.name, pb.value, pa.value);
                }
            }
            expected_text.push_str(&header[copied..b.span.end]);
            ensure!(out[a.span.clone()] == expected_text, "the Bearer challenge changed outside its realms: {ctx}");
        } else if replaces_basic(b, target) {
            let realm = expected_realm("", target);
            let scope = target.bearer_scope.unwrap_or_default();
            let params: Vec<(&str, &str)> = a.params.iter().map(|p| (p.name, p.value.as_ref())).collect();
            ensure!(
                is(a, "Bearer") && params == [("realm", realm.as_str()), ("service", "harbor-registry"), ("scope", scope)],
                "Basic realm=\"harbor\" became {:?}: {ctx}",
                &out[a.span.clone()]
            );
        } else {
            ensure!(header[b.span.clone()] == out[a.span.clone()], "a challenge with nothing to edit changed: {ctx}");
        }
        // Every Bearer realm a client can read points at this proxy's token path.
        if is(a, "Bearer") {
            for p in a.params.iter().filter(|p| p.name.eq_ignore_ascii_case("realm")) {
                ensure!(p.value.starts_with(&prefix), "a Bearer realm {:?} does not point at {prefix}: {ctx}", p.value);
            }
        }
    }
    // Rewriting again changes nothing.
    let again = challenge::rewrite(out, target);
    ensure!(again.as_deref() == Some(out), "rewriting the rewritten header gives {again:?}: {ctx}");
}

/// A value as a quoted-string, the way the rewrite writes realms.
fn quoted(value: &str) -> String {
    let mut out = String::from('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
