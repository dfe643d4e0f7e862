//! `WWW-Authenticate` parsing and the realm rewrite. Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::challenge::{client_scheme, parse, rewrite, RealmTarget};

mod common;

use common::Report;

/// A challenge as (scheme, [(name, value)], token68), for comparing.
type Shape<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);

fn shapes(header: &str) -> Result<Vec<Shape<'_>>, String> {
    let challenges = parse(header).map_err(|e| e.to_string())?;
    Ok(challenges
        .iter()
        .map(|c| {
            let params = c.params.iter().map(|p| (p.name, leak(p.value.as_ref()))).collect();
            (c.scheme, params, c.token68)
        })
        .collect())
}

/// Test-only: keeps an unescaped value alive for the comparison.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[test]
fn challenges_parse() {
    let rows: Vec<(&str, Vec<Shape<'_>>)> = vec![
        (
            r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:p/a:pull""#,
            vec![("Bearer", vec![("realm", "https://harbor.example.com/service/token"), ("service", "harbor-registry"), ("scope", "repository:p/a:pull")], None)],
        ),
        // Commas and spaces inside a quoted scope list.
        (
            r#"Bearer realm="r",scope="repository:p/a:pull,push repository:p/b:pull""#,
            vec![("Bearer", vec![("realm", "r"), ("scope", "repository:p/a:pull,push repository:p/b:pull")], None)],
        ),
        // Escaped quotes and backslashes.
        (r#"Bearer realm="a\"b\\c""#, vec![("Bearer", vec![("realm", "a\"b\\c")], None)]),
        // Several challenges in one header, with spaces around '=' and between list items.
        (
            r#"Basic realm="harbor" , Bearer realm = "r", service=s"#,
            vec![("Basic", vec![("realm", "harbor")], None), ("Bearer", vec![("realm", "r"), ("service", "s")], None)],
        ),
        // `realm=` alone is a token68 with padding, as the grammar says.
        ("Bearer realm=", vec![("Bearer", vec![], Some("realm="))]),
        (r#"Negotiate abc==, Basic realm="x""#, vec![("Negotiate", vec![], Some("abc==")), ("Basic", vec![("realm", "x")], None)]),
        // Missing parameters.
        ("Bearer", vec![("Bearer", vec![], None)]),
        (r#"Bearer, Basic realm=x"#, vec![("Bearer", vec![], None), ("Basic", vec![("realm", "x")], None)]),
        ("", vec![]),
    ];
    let mut report = Report::new("challenges");
    for (header, expected) in rows {
        report.eq(header, shapes(header), Ok(expected));
    }
}

#[test]
fn malformed_challenges_are_errors() {
    let mut report = Report::new("malformed challenges");
    for (header, error) in [
        (r#"Bearer realm="unterminated"#, "expected a closing '\"' at byte 26"),
        (r#"realm="x""#, "expected a space after the auth scheme at byte 5"),
        (r#"Bearer realm=a=b"#, "expected ',' between parameters at byte 14"),
        (r#"Bearer "x""#, "expected parameters or a token68 at byte 7"),
        (r#"Bearer realm="x" scope="y""#, "expected ',' between parameters at byte 17"),
    ] {
        report.eq(header, shapes(header), Err(error.to_owned()));
    }
}

const HARBOR: &str = r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:quay-proxy/coreos/etcd:pull""#;

#[test]
fn realms_point_back_at_the_mirror_with_the_registry() {
    let quay = RealmTarget { scheme: "http", authority: "mirror:5000", ns: Some("quay.io"), bearer_scope: None };
    let ping = RealmTarget { ns: None, ..quay };
    let basic = RealmTarget { bearer_scope: Some("repository:dockerhub-proxy/library/alpine:pull"), ns: Some("docker.io"), ..quay };
    let rows: &[(&str, RealmTarget<'_>, Option<&str>)] = &[
        // Harbor's scope stays byte for byte.
        (HARBOR, quay, Some(r#"Bearer realm="http://mirror:5000/service/token?ns=quay.io",service="harbor-registry",scope="repository:quay-proxy/coreos/etcd:pull""#)),
        // The ping: no registry chosen, no ns.
        (r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry""#, ping,
            Some(r#"Bearer realm="http://mirror:5000/service/token",service="harbor-registry""#)),
        // A realm query is kept, an old ns replaced.
        (r#"Bearer realm="https://h/service/token?tenant=1&ns=old""#, quay, Some(r#"Bearer realm="http://mirror:5000/service/token?tenant=1&ns=quay.io""#)),
        // Only ns in Harbor's realm query: no dangling `?`, so a second rewrite changes nothing.
        (r#"Bearer realm="https://h/service/token?ns=a&&ns=b""#, ping, Some(r#"Bearer realm="http://mirror:5000/service/token""#)),
        // A repeated realm: every one points back (clients differ in which they read).
        (r#"Bearer realm="https://h/service/token",realm="https://evil/t""#, quay,
            Some(r#"Bearer realm="http://mirror:5000/service/token?ns=quay.io",realm="http://mirror:5000/service/token?ns=quay.io""#)),
        // Basic realm="harbor" on a rewritten request becomes a Bearer challenge.
        (r#"Basic realm="harbor""#, basic,
            Some(r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/alpine:pull""#)),
        (r#"Basic realm="harbor", Bearer realm="https://h/service/token""#, basic,
            Some(r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/alpine:pull", Bearer realm="http://mirror:5000/service/token?ns=docker.io""#)),
        // Left alone: Basic without a rewritten request, other realms, nothing to edit, garbage.
        (r#"Basic realm="harbor""#, quay, None),
        (r#"Basic realm="other""#, basic, None),
        ("Bearer", quay, None),
        (r#"Bearer realm="unterminated"#, quay, None),
    ];
    let mut report = Report::new("realm rewrites");
    for (header, target, expected) in rows {
        report.eq(format_args!("{header} for {target:?}"), rewrite(header, target).as_deref(), *expected);
    }
}

#[test]
fn the_realm_scheme_is_the_one_the_client_used() {
    // (:scheme, X-Forwarded-Proto, realm scheme)
    let cases: [(&[u8], &[u8], &str); 8] = [
        (b"http", b"", "http"),
        (b"https", b"", "https"),
        (b"http", b"https", "https"),
        (b"http", b"HTTPS, http", "https"),
        (b"https", b"http", "http"),
        (b"http", b"gopher", "http"),
        (b"", b"", "http"),
        (b"javascript", b"", "http"),
    ];
    let mut report = Report::new("realm schemes");
    for (scheme, forwarded_proto, expected) in cases {
        report.eq(format_args!("{scheme:?} {forwarded_proto:?}"), client_scheme(scheme, forwarded_proto), expected);
    }
}
