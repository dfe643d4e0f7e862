//! Discovery, host-free: the registry key of a Harbor project's upstream, the mapping and its
//! conflicts, one refresh driven call by call (credentials, pages, summaries, failures), the
//! shared entry and lease with time injected, and a configuration before and after its mapping.
//! Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::discovery::mapping::{build, registry_key, Project, Upstream};
use harbor_mirror_core::discovery::refresh::{ApiAnswer, Refresh, Step};
use harbor_mirror_core::discovery::{should_refresh, Lease, Mapping, Published, LEASE_SECS};
use harbor_mirror_core::{decide, Config, Decision, Request};

mod common;

use common::Expect::*;
use common::{check, harbor_token, parse, token_answer, Report};

fn upstream(kind: &str, url: &str) -> Upstream {
    Upstream { kind: kind.to_owned(), url: url.to_owned() }
}

#[test]
fn an_upstream_is_keyed_by_its_registry() {
    let rows: &[(&str, &str, Result<&str, &str>)] = &[
        ("docker-hub", "https://hub.docker.com", Ok("docker.io")),
        ("docker-hub", "https://registry-1.docker.io", Ok("docker.io")),
        ("quay", "https://quay.io", Ok("quay.io")),
        ("quay", "https://QUAY.io:443/", Ok("quay.io")),
        ("github-ghcr", "https://ghcr.io", Ok("ghcr.io")),
        ("docker-registry", "https://registry.k8s.io", Ok("registry.k8s.io")),
        ("docker-registry", "http://registry.local:80", Ok("registry.local")),
        ("docker-registry", "http://registry.local:5000", Ok("registry.local:5000")),
        ("docker-registry", "https://registry.local:80", Ok("registry.local:80")),
        ("docker-registry", "https://index.docker.io", Ok("docker.io")),
        ("harbor", "https://user:secret@harbor.other.example", Ok("harbor.other.example")),
        ("google-gcr", "https://gcr.io/my-project", Err("has a path")),
        ("docker-registry", "quay.io", Err("has no scheme")),
        ("docker-registry", "https://", Err("has no host")),
    ];
    let mut report = Report::new("registry keys");
    for (kind, url, expected) in rows {
        let got = registry_key(&upstream(kind, url));
        let ok = match (&got, expected) {
            (Ok(key), Ok(want)) => key == want,
            (Err(e), Err(want)) => e.contains(want),
            _ => false,
        };
        report.check(format_args!("{kind} {url}"), ok, format_args!("got {got:?}, want {expected:?}"));
    }
}

fn project(id: u64, name: &str) -> Project {
    Project { project_id: id, name: name.to_owned(), registry_id: 1 }
}

#[test]
fn two_projects_for_one_upstream_leave_the_lowest_id_and_a_warning() {
    let built = build(&[
        (project(7, "hub-b"), upstream("docker-hub", "https://hub.docker.com")),
        (project(3, "hub-a"), upstream("docker-hub", "https://hub.docker.com")),
        (project(5, "quay-proxy"), upstream("quay", "https://quay.io")),
        (project(9, "gcr-proxy"), upstream("google-gcr", "https://gcr.io/p")),
    ]);
    let mut report = Report::new("conflicts");
    report.eq("mapping", built.mapping.to_string(), "docker.io (hub-a), quay.io (quay-proxy)".to_owned());
    report.eq("warnings", built.warnings.len(), 2);
    report.check("the conflict names both", built.warnings.iter().any(|w| w.contains("hub-a (id 3) and hub-b (id 7) both cache docker.io")), format_args!("{:?}", built.warnings));
    report.check("the skipped project is named", built.warnings.iter().any(|w| w.starts_with("project gcr-proxy skipped")), format_args!("{:?}", built.warnings));
}

#[test]
fn changes_are_told_by_key_and_project() {
    let old = Mapping { entries: vec![("docker.io".into(), "hub".into()), ("quay.io".into(), "quay".into())] };
    let new = Mapping { entries: vec![("docker.io".into(), "hub2".into()), ("ghcr.io".into(), "ghcr".into())] };
    let mut report = Report::new("changes");
    report.eq("changed", new.changes_from(&old).as_deref(), Some("added ghcr.io (ghcr); removed quay.io (quay); changed docker.io (hub -> hub2)"));
    report.eq("unchanged", old.changes_from(&old), None);
    let published = Published { at: 1_800_000_000, mapping: new.clone() };
    report.eq("the shared entry decodes", Published::decode(published.encode().as_bytes()), Some(published));
    report.eq("garbage is no entry", Published::decode(b"x\ny"), None);
    report.eq("as registries", new.to_registries_json(), r#"{"docker.io": {"project": "hub2"}, "ghcr.io": {"project": "ghcr"}}"#.to_owned());
}

#[test]
fn one_refresh_per_interval_and_lease() {
    let now = 1_800_000_000;
    let published = |at| Published { at, mapping: Mapping::default() };
    // (name, published at, lease until, refresh?)
    let rows: &[(&str, Option<u64>, Option<u64>, bool)] = &[
        ("nothing published, no lease", None, None, true),
        ("nothing published, another VM refreshing", None, Some(now + 10), false),
        ("nothing published, its lease expired", None, Some(now - 1), true),
        ("published this interval", Some(now - 299), None, false),
        ("published an interval ago", Some(now - 300), None, true),
        ("due, lease left free after a refresh", Some(now - 300), Some(now - 300), true),
        ("due, but after a failure the retry waits", Some(now - 400), Some(now + 3), false),
    ];
    let mut report = Report::new("schedule");
    for (name, at, until, expected) in rows {
        let published = at.map(published);
        let lease = until.map(|until| Lease { until });
        report.eq(name, should_refresh(now, 300, published.as_ref(), lease.as_ref()), *expected);
    }
    report.eq("a lease taken holds", Lease::take(now).until, now + LEASE_SECS);
    report.eq("after a failure, at most the interval", Lease::after_failure(now, 2).until, now + 2);
    report.eq("a lease decodes", Lease::decode(Lease::take(now).encode().as_bytes()), Some(Lease::take(now)));
}

/// One call's answer, for the refresh scenarios.
#[derive(Clone, Copy)]
enum Reply {
    /// 200 with this body, `Link: rel="next"` if `next`, and `X-Total-Count`.
    Ok(&'static str, bool, Option<u64>),
    /// This status, empty body.
    Status(u32),
    /// No answer.
    Timeout,
    /// A token for the robot, or (`false`) an anonymous one.
    Token(bool),
}

const PAGE_1: &str = r#"[{"project_id": 3, "name": "dockerhub-proxy", "registry_id": 1}, {"project_id": 4, "name": "library", "registry_id": 0}]"#;
const PAGE_2: &str = r#"[{"project_id": 2, "name": "quay-proxy", "registry_id": 2}]"#;
const HUB: &str = r#"{"repo_count": 3, "registry": {"id": 1, "name": "hub", "type": "docker-hub", "url": "https://hub.docker.com"}}"#;
const QUAY: &str = r#"{"registry": {"id": 2, "type": "quay", "url": "https://quay.io"}}"#;

/// `(dispatched path or what came of the refresh, the reply to it)` in order; `robot` starts
/// the refresh with credentials.
type Scenario = (&'static str, Option<&'static str>, &'static [(&'static str, Reply)]);

const PROJECTS: &str = "/api/v2.0/projects?page=1&page_size=100&with_detail=false&q=registry_id%3D%5B1~%5D";
const PROJECTS_2: &str = "/api/v2.0/projects?page=2&page_size=100&with_detail=false&q=registry_id%3D%5B1~%5D";

const SCENARIOS: &[Scenario] = &[
    ("anonymous: pages by Link, summaries by id, the mapping published", None, &[
        (PROJECTS, Reply::Ok(PAGE_1, true, None)),
        (PROJECTS_2, Reply::Ok(PAGE_2, false, None)),
        ("/api/v2.0/projects/quay-proxy/summary", Reply::Ok(QUAY, false, None)),
        ("/api/v2.0/projects/dockerhub-proxy/summary", Reply::Ok(HUB, false, None)),
        ("publish docker.io (dockerhub-proxy), quay.io (quay-proxy)", Reply::Timeout),
    ]),
    ("pages by X-Total-Count when there is no Link", None, &[
        (PROJECTS, Reply::Ok(PAGE_1, false, Some(3))),
        (PROJECTS_2, Reply::Ok(PAGE_2, false, Some(3))),
        ("/api/v2.0/projects/quay-proxy/summary", Reply::Ok(QUAY, false, None)),
        ("/api/v2.0/projects/dockerhub-proxy/summary", Reply::Ok(HUB, false, None)),
        ("publish docker.io (dockerhub-proxy), quay.io (quay-proxy)", Reply::Timeout),
    ]),
    ("with a robot: its credentials checked first", Some("robot$mirror"), &[
        ("/service/token?service=harbor-registry", Reply::Token(true)),
        (PROJECTS, Reply::Ok(PAGE_2, false, None)),
        ("/api/v2.0/projects/quay-proxy/summary", Reply::Ok(QUAY, false, None)),
        ("publish quay.io (quay-proxy)", Reply::Timeout),
    ]),
    ("wrong robot credentials: Harbor's token service refuses them without a scope", Some("robot$mirror"), &[
        ("/service/token?service=harbor-registry", Reply::Status(401)),
        ("failed: harbor refused the robot credentials of discover.robot (or auth.robot), robot$mirror", Reply::Timeout),
    ]),
    ("a token for someone else is refused credentials too", Some("robot$mirror"), &[
        ("/service/token?service=harbor-registry", Reply::Token(false)),
        ("failed: harbor refused the robot credentials", Reply::Timeout),
    ]),
    ("no proxy-cache project: an empty mapping", None, &[
        (PROJECTS, Reply::Ok("[]", false, Some(0))),
        ("publish none", Reply::Timeout),
    ]),
    ("a project gone before its summary is skipped", None, &[
        (PROJECTS, Reply::Ok(PAGE_1, false, None)),
        ("/api/v2.0/projects/dockerhub-proxy/summary", Reply::Status(404)),
        ("publish none (project dockerhub-proxy skipped: harbor no longer has it)", Reply::Timeout),
    ]),
    ("a summary the account may not read fails the refresh", None, &[
        (PROJECTS, Reply::Ok(PAGE_1, false, None)),
        ("/api/v2.0/projects/dockerhub-proxy/summary", Reply::Status(403)),
        ("failed: harbor answered 403 for the summary of project dockerhub-proxy", Reply::Timeout),
    ]),
    ("a page that times out fails the refresh", None, &[
        (PROJECTS, Reply::Ok(PAGE_1, true, None)),
        (PROJECTS_2, Reply::Timeout),
        ("failed: harbor did not answer for page 2 of the project list", Reply::Timeout),
    ]),
    ("Harbor down: Envoy's own 503", None, &[
        (PROJECTS, Reply::Status(503)),
        ("failed: harbor answered 503 for page 1 of the project list, or discover.cluster could not reach it", Reply::Timeout),
    ]),
    ("a page that is not the project list fails the refresh", None, &[
        (PROJECTS, Reply::Ok("<html>", false, None)),
        ("failed: harbor's page 1 of the project list: the project list is not the expected JSON", Reply::Timeout),
    ]),
];

#[test]
fn a_refresh_reads_what_harbor_gives_and_publishes_or_fails() {
    let robot_token = harbor_token(Some("robot$mirror"), "[]");
    let anonymous_token = harbor_token(None, "[]");
    let mut report = Report::new("refresh scenarios");
    for (name, robot, steps) in SCENARIOS {
        let mut refresh = Refresh::default();
        let mut actions = refresh.start(*robot);
        for (at, (want, reply)) in steps.iter().enumerate() {
            let row = format!("{name}, step {}", at + 1);
            let got = summary(&actions);
            if !got.starts_with(want) {
                report.row(&row, Err(format!("got {got:?}, want {want:?}")));
                break;
            }
            report.row(&row, Ok(()));
            if !matches!(actions.first(), Some(Step::Dispatch { .. })) {
                break;
            }
            let call = u64::try_from(at).unwrap_or(0) + 100;
            let _ = refresh.dispatched(Ok(call));
            let token_body;
            let answer = match *reply {
                Reply::Ok(body, next_link, total) => ApiAnswer { status: Some(200), body: body.as_bytes(), next_link, total },
                Reply::Status(status) => ApiAnswer { status: Some(status), body: b"", next_link: false, total: None },
                Reply::Timeout => ApiAnswer { status: None, body: b"", next_link: false, total: None },
                Reply::Token(robot) => {
                    token_body = token_answer(if robot { &robot_token } else { &anonymous_token });
                    ApiAnswer { status: Some(200), body: &token_body, next_link: false, total: None }
                }
            };
            // An answer to another call changes nothing.
            report.eq(format_args!("{row}: a stray answer"), refresh.on_answer(call + 1, answer).is_empty(), true);
            actions = refresh.on_answer(call, answer);
        }
        report.eq(format_args!("{name}: idle at the end"), refresh.is_running(), false);
    }
}

#[test]
fn a_refresh_that_cannot_dispatch_fails_and_one_runs_at_a_time() {
    let mut refresh = Refresh::default();
    let mut report = Report::new("dispatch");
    let _ = refresh.start(None);
    report.eq("a second start while one runs", refresh.start(None).is_empty(), true);
    let actions = refresh.dispatched(Err("BadArgument".to_owned()));
    report.eq("the failure", summary(&actions), "failed: cannot ask harbor's API through discover.cluster: BadArgument".to_owned());
    report.eq("idle", refresh.is_running(), false);
}

fn summary(actions: &[Step]) -> String {
    match actions.first() {
        Some(Step::Dispatch { path }) => path.clone(),
        Some(Step::Publish(built)) if built.warnings.is_empty() => format!("publish {}", built.mapping),
        Some(Step::Publish(built)) => format!("publish {} ({})", built.mapping, built.warnings.join("; ")),
        Some(Step::Failed(message)) => format!("failed: {message}"),
        None => "nothing".to_owned(),
    }
}

const DISCOVER: &str = r#"{"discover": {"cluster": "harbor", "authority": "harbor.example.com"},
    "registries": {"quay.io": {"project": "my-quay", "hosts": ["quay.mirror.example.com"]}},
    "default_registry": "docker.io", "passthrough_projects": ["production"]}"#;

fn mapping(entries: &[(&str, &str)]) -> Mapping {
    Mapping { entries: entries.iter().map(|(key, project)| ((*key).to_owned(), (*project).to_owned())).collect() }
}

#[test]
fn before_its_first_mapping_a_discovering_mirror_answers_503() {
    let config = parse(DISCOVER);
    check(&config, &[
        ("GET", "/v2/", "m", Pass),
        ("GET", "/v2/library/alpine/manifests/3.19", "m", Refuse(503, "UNAVAILABLE")),
        ("GET", "/v2/coreos/etcd/manifests/v3?ns=quay.io", "m", Refuse(503, "UNAVAILABLE")),
        ("GET", "/service/token?scope=repository:library/alpine:pull", "m", Refuse(503, "UNAVAILABLE")),
        // Names already under a configured project need no mapping.
        ("GET", "/v2/production/app/manifests/1", "m", Pass),
        ("GET", "/v2/my-quay/coreos/etcd/manifests/v3", "m", Pass),
    ]);
    let message = match decide(&config, &Request { method: "GET", path: "/v2/library/alpine/manifests/3.19", authority: "m" }) {
        Decision::Refuse(refusal) => refusal.message,
        other => format!("{other:?}"),
    };
    assert!(message.contains("has not read its registries from harbor's API yet (discover, through cluster \"harbor\")"), "{message}");
}

#[test]
fn with_a_mapping_the_discovered_registries_route_and_static_ones_override() {
    let config = parse(DISCOVER).with_mapping(&mapping(&[("docker.io", "dockerhub-proxy"), ("quay.io", "quay-proxy"), ("ghcr.io", "ghcr-proxy")]));
    let config = config.unwrap_or_else(|e| panic!("{e}"));
    check(&config, &[
        ("GET", "/v2/library/alpine/manifests/3.19", "m", Rewrite("/v2/dockerhub-proxy/library/alpine/manifests/3.19")),
        ("GET", "/v2/owner/tool/manifests/1?ns=ghcr.io", "m", Rewrite("/v2/ghcr-proxy/owner/tool/manifests/1")),
        // The static quay.io entry wins over Harbor's, hosts and all.
        ("GET", "/v2/coreos/etcd/manifests/v3?ns=quay.io", "m", Rewrite("/v2/my-quay/coreos/etcd/manifests/v3")),
        ("GET", "/v2/coreos/etcd/manifests/v3", "quay.mirror.example.com", Rewrite("/v2/my-quay/coreos/etcd/manifests/v3")),
        ("GET", "/v2/a/b/manifests/1?ns=registry.k8s.io", "m", Refuse(404, "NAME_UNKNOWN")),
        ("GET", "/service/token?scope=repository:library/alpine:pull", "m", Token("/service/token?scope=repository:dockerhub-proxy/library/alpine:pull")),
    ]);
    let keys: Vec<&str> = config.registries().iter().map(|registry| registry.key.as_str()).collect();
    assert_eq!(keys, ["quay.io", "docker.io", "ghcr.io"]);
}

#[test]
fn a_default_registry_harbor_has_no_project_for_is_404_not_a_bad_configuration() {
    let config = parse(DISCOVER).with_mapping(&mapping(&[("ghcr.io", "ghcr-proxy")])).unwrap_or_else(|e| panic!("{e}"));
    check(&config, &[
        ("GET", "/v2/library/alpine/manifests/3.19", "m", Refuse(404, "NAME_UNKNOWN")),
        ("GET", "/v2/owner/tool/manifests/1?ns=ghcr.io", "m", Rewrite("/v2/ghcr-proxy/owner/tool/manifests/1")),
    ]);
}

#[test]
fn discover_fields_are_checked_like_the_rest() {
    let base = |discover: &str| format!(r#"{{"discover": {discover}}}"#);
    let rows: Vec<(String, &str)> = vec![
        (base(r#"{"authority": "h"}"#), "discover: missing field `cluster`"),
        (base(r#"{"cluster": "harbor"}"#), "discover: missing field `authority`"),
        (base(r#"{"cluster": "", "authority": "h"}"#), "discover.cluster: must be a non-empty name without spaces"),
        (base(r#"{"cluster": "harbor", "authority": "h", "interval_s": 0}"#), "discover.interval_s: must be between 1 and 86400"),
        (base(r#"{"cluster": "harbor", "authority": "h", "timeout_ms": 60001}"#), "discover.timeout_ms: must be between 1 and 60000"),
        (base(r#"{"cluster": "harbor", "authority": "h", "robot": {"username": "r"}}"#), "discover: missing field `password`"),
        (base(r#"{"cluster": "harbor", "authority": "h", "robot": {"username": "a:b", "password": "p"}}"#), "discover.robot.username: must not contain ':'"),
        (base(r#"{"cluster": "harbor", "authority": "h", "intervall_s": 5}"#), "discover: unknown field `intervall_s`"),
        ("{}".to_owned(), "registries: is required (or discover, to read them from harbor)"),
    ];
    let mut report = Report::new("discover mistakes");
    for (json, expected) in &rows {
        let error = Config::from_json(json.as_bytes()).map(|_| ()).map_err(|e| e.to_string());
        report.check(json, error.as_ref().is_err_and(|e| e.starts_with(expected)), format_args!("got {error:?}, want {expected}"));
    }
    let config = parse(r#"{"discover": {"cluster": "harbor", "authority": "h"}, "auth": {"robot": {"username": "robot$m", "password": "p"}, "cluster": "harbor", "authority": "h"}}"#);
    let discover = config.discover.as_ref().expect("discover");
    report.eq("auth.robot's credentials serve discovery", discover.robot.as_deref(), Some("robot$m"));
    report.eq("the interval's default", discover.interval_s, 300);
    report.check("the password never shows", !format!("{config:?}").contains("cm9ib3Qk"), "Debug shows the Basic value");
}
