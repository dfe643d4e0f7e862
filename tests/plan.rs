//! One request's plan, from its headers: what is counted, replied or forwarded, with which
//! `:path`, whether the client's credentials go and whether the robot's token is needed first.
//! Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::host::RequestHeaders;
use harbor_mirror_core::plan::{plan, Count, Then};
use harbor_mirror_core::Config;

mod common;

use common::{parse, Report, MANAGED};

const PASS_THROUGH: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io",
    "passthrough_projects": ["production"], "log_original_path": true, "debug_header": true}"#;

/// What a plan comes to, flattened so that a table row can say it in one line.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Replied here with this status.
    Reply(u32),
    /// Forwarded: the new `:path`, the original one kept for the access log, credentials
    /// stripped, the repository whose token is needed.
    Forward { new_path: Option<&'static str>, original: Option<&'static str>, strip: bool, token_for: Option<&'static str> },
}

fn count_name(count: &Count, config: &Config) -> String {
    match count {
        Count::Nothing => "nothing".to_owned(),
        Count::Rejected => "rejected".to_owned(),
        Count::Passed => "passed".to_owned(),
        Count::Rewritten { registry } => format!("rewritten {}", config.registries()[*registry].key),
    }
}

fn outcome_of(config: &Config, method: &str, path: &str) -> (String, Outcome, Option<String>) {
    let headers = RequestHeaders { method: method.as_bytes(), path: path.as_bytes(), authority: b"mirror:5000", scheme: b"http", forwarded_proto: b"", accept: b"", authorization: b"" };
    let plan = plan(config, &headers, true);
    let outcome = match plan.then {
        Then::Reply { status, .. } => Outcome::Reply(status),
        Then::Forward(forward) => Outcome::Forward {
            new_path: forward.new_path().map(|p| &*p.to_owned().leak()),
            original: forward.original_path.map(|p| &*p.leak()),
            strip: forward.strip_credentials,
            token_for: forward.needs_token.map(|p| &*p.leak()),
        },
    };
    (count_name(&plan.count, config), outcome, plan.debug_header)
}

#[test]
fn a_request_is_counted_and_replied_or_forwarded() {
    let pass_through = parse(PASS_THROUGH);
    let managed = parse(MANAGED);
    // (name, config, method, path, counted as, outcome)
    type Row<'c> = (&'static str, &'c Config, &'static str, &'static str, &'static str, Outcome);
    let rows: &[Row<'_>] = &[
        ("a pull is rewritten, the original path kept", &pass_through, "GET", "/v2/library/alpine/manifests/3.19", "rewritten docker.io",
            Outcome::Forward { new_path: Some("/v2/dockerhub-proxy/library/alpine/manifests/3.19"), original: Some("/v2/library/alpine/manifests/3.19"), strip: false, token_for: None }),
        ("a name under a pass-through project is passed as it is", &pass_through, "GET", "/v2/production/app/manifests/1", "passed",
            Outcome::Forward { new_path: None, original: None, strip: false, token_for: None }),
        ("the version check is passed", &pass_through, "GET", "/v2/", "passed",
            Outcome::Forward { new_path: None, original: None, strip: false, token_for: None }),
        ("a write through a mapped name is refused", &pass_through, "PUT", "/v2/library/alpine/manifests/3.19", "rejected", Outcome::Reply(405)),
        ("an unknown ns is refused", &pass_through, "GET", "/v2/x/y/manifests/1?ns=nowhere.example", "rejected", Outcome::Reply(404)),
        ("managed: a pull needs the robot's token and goes without the client's credentials", &managed, "GET", "/v2/library/alpine/manifests/3.19",
            "rewritten docker.io",
            Outcome::Forward { new_path: Some("/v2/dockerhub-private/library/alpine/manifests/3.19"), original: None, strip: true,
                token_for: Some("dockerhub-private/library/alpine") }),
        ("managed: the version check is answered here", &managed, "GET", "/v2/", "passed", Outcome::Reply(200)),
        ("managed: the token endpoint is answered here, Harbor never sees it", &managed, "GET", "/service/token?scope=repository:library/alpine:pull",
            "rejected", Outcome::Reply(404)),
        ("managed: the catalog goes to Harbor anonymously", &managed, "GET", "/v2/_catalog", "passed",
            Outcome::Forward { new_path: None, original: None, strip: true, token_for: None }),
    ];
    let mut report = Report::new("plan::plan");
    for (name, config, method, path, counted, want) in rows {
        let (count, outcome, _) = outcome_of(config, method, path);
        report.eq(format!("{name}: count"), count.as_str(), *counted);
        report.eq(format!("{name}: outcome"), &outcome, want);
    }
}

#[test]
fn headers_that_are_not_utf8_are_refused_and_not_counted() {
    let config = parse(PASS_THROUGH);
    let headers = RequestHeaders { method: b"GET", path: b"/v2/\xff/manifests/1", authority: b"mirror", scheme: b"http", forwarded_proto: b"", accept: b"", authorization: b"" };
    let plan = plan(&config, &headers, false);
    assert!(matches!(plan.count, Count::Nothing), "counted as {}", count_name(&plan.count, &config));
    assert!(matches!(plan.then, Then::Reply { status: 400, .. }), "{:?}", plan.then);
    assert_eq!(plan.debug_line, None, "a debug line was written without being asked for");
}

#[test]
fn the_debug_header_describes_the_decision() {
    let config = parse(PASS_THROUGH);
    let (_, _, header) = outcome_of(&config, "GET", "/v2/library/alpine/manifests/3.19");
    let header = header.expect("debug_header is on");
    assert!(header.contains("dockerhub-proxy"), "the debug header names no project: {header}");
}

#[test]
fn a_walk_over_the_header_map_keeps_the_first_value_of_each_header_the_plan_reads() {
    // The map as a host hands it over: lower-case names, pseudo-headers first.
    let map: &[(&[u8], &[u8])] = &[
        (b":authority", b"mirror:5000"),
        (b":path", b"/v2/library/alpine/manifests/3.19"),
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b"user-agent", b"containerd/1.6"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-proto", b"http"),
        (b"authorization", b"Bearer t"),
    ];
    let mut headers = RequestHeaders::default();
    for (name, value) in map {
        headers.offer(name, value);
    }
    // (field, what it holds)
    let rows: [(&str, &[u8], &[u8]); 5] = [
        (":method", headers.method, b"GET"),
        (":path", headers.path, b"/v2/library/alpine/manifests/3.19"),
        (":authority", headers.authority, b"mirror:5000"),
        (":scheme", headers.scheme, b"http"),
        ("x-forwarded-proto, the first of two", headers.forwarded_proto, b"https"),
    ];
    for (field, held, expected) in rows {
        assert_eq!(String::from_utf8_lossy(held), String::from_utf8_lossy(expected), "{field}");
    }
    let mut absent = RequestHeaders::default();
    absent.offer(b"host", b"mirror:5000");
    assert!(absent.authority.is_empty(), "host is not :authority: Envoy hands HTTP/1's Host over as :authority");
}
