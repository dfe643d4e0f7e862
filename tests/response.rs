//! Harbor's answers to forwarded requests: what the filter reads of them and what it does, in
//! pass-through mode (challenges pointed back at the mirror) and in managed mode (Harbor's 401
//! to the robot's token answered with an OCI error, never its challenge). Runs natively and
//! under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::response::{Edit, Forwarded, Look};
use harbor_mirror_core::{decide, Config, Decision, Request};

mod common;

use common::{harbor_token, parse, Report, MANAGED, PULL_PRIVATE};

const PASS_THROUGH: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-proxy"}, "quay.io": {"project": "quay-proxy"}},
    "default_registry": "docker.io", "passthrough_projects": ["production"]}"#;
const TOKENS_OFF: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io",
    "auth": {"rewrite_tokens": false}}"#;

/// The request forwarded as the filter would forward `method path` to `mirror:5000`.
fn forwarded(config: &Config, method: &str, path: &str, scheme: &'static str, robot_token: Option<String>) -> Forwarded {
    let request = Request { method, path, authority: "mirror:5000" };
    match decide(config, &request) {
        Decision::Forward { path: new_path, route } => {
            let harbor_path = new_path.unwrap_or_else(|| path.to_owned());
            Forwarded::new(&request, &route, harbor_path, scheme, robot_token)
        }
        Decision::Refuse(refusal) => panic!("{method} {path} is refused: {}", refusal.message),
    }
}

const BEARER: &str = r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:dockerhub-proxy/library/alpine:pull""#;

#[test]
fn pass_through_points_challenges_back_at_the_mirror() {
    let config = parse(PASS_THROUGH);
    // (name, method, path, scheme, challenges Harbor sent, the values the client gets; None: untouched)
    type Row = (&'static str, &'static str, &'static str, &'static str, &'static [&'static str], Option<&'static [&'static str]>);
    let rows: &[Row] = &[
        ("a Bearer realm with the request's registry as ns", "GET", "/v2/library/alpine/manifests/3.19", "http", &[BEARER],
            Some(&[r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/alpine:pull""#])),
        ("the client's scheme", "GET", "/v2/coreos/etcd/manifests/v3?ns=quay.io", "https",
            &[r#"Bearer realm="http://127.0.0.1:8080/service/token",service="harbor-registry""#],
            Some(&[r#"Bearer realm="https://mirror:5000/service/token?ns=quay.io",service="harbor-registry""#])),
        ("Basic on a rewritten pull becomes Bearer for Harbor's name", "HEAD", "/v2/library/alpine/manifests/3.19", "http", &[r#"Basic realm="harbor""#],
            Some(&[r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/alpine:pull""#])),
        ("Basic on a write to a name under a project stays", "PUT", "/v2/production/app/manifests/1", "http", &[r#"Basic realm="harbor""#], None),
        ("Basic on a name already under a project stays", "GET", "/v2/production/app/manifests/1", "http", &[r#"Basic realm="harbor""#], None),
        ("a prefixed name's realm has no ns", "POST", "/v2/production/app/blobs/uploads/", "http",
            &[r#"Bearer realm="http://h/service/token",service="harbor-registry",scope="repository:production/app:pull,push""#],
            Some(&[r#"Bearer realm="http://mirror:5000/service/token",service="harbor-registry",scope="repository:production/app:pull,push""#])),
        ("the ping's challenge", "GET", "/v2/", "http", &[r#"Bearer realm="http://h/service/token",service="harbor-registry""#],
            Some(&[r#"Bearer realm="http://mirror:5000/service/token",service="harbor-registry""#])),
        ("the catalog's Basic challenge passes unharmed", "GET", "/v2/_catalog", "http", &[r#"Basic realm="harbor""#], None),
        ("an empty challenge (an unknown project) passes", "GET", "/v2/production/app/manifests/1", "http", &[""], None),
        ("a header that does not parse is left alone", "GET", "/v2/library/alpine/manifests/3.19", "http", &["Bearer realm=\"x"], None),
        ("of two values only the Bearer one changes", "GET", "/v2/library/alpine/manifests/3.19", "http", &["Negotiate abc==", BEARER],
            Some(&["Negotiate abc==", r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/alpine:pull""#])),
        ("no challenge at all", "GET", "/v2/library/alpine/manifests/3.19", "http", &[], None),
    ];
    let mut report = Report::new("pass-through answers");
    for (name, method, path, scheme, challenges, want) in rows {
        let forwarded = forwarded(&config, method, path, scheme, None);
        report.eq(format_args!("{name}: what is read"), forwarded.look(&config), Look::Challenges);
        let values: Vec<&[u8]> = challenges.iter().map(|c| c.as_bytes()).collect();
        let want = match want {
            Some(values) => Edit::Challenges(values.iter().map(|v| v.as_bytes().to_vec()).collect()),
            None => Edit::Untouched,
        };
        report.eq(name, forwarded.on_challenges(&config, &values), want);
    }
}

#[test]
fn managed_mode_answers_harbors_401_to_the_robots_token_itself() {
    let config = parse(MANAGED);
    let jwt = harbor_token(Some("robot$mirror"), PULL_PRIVATE);
    // (name, path, the robot's token, what is read, status, the client's status and code; None: untouched)
    type Row = (&'static str, &'static str, Option<String>, Look, &'static [u8], Option<(u32, &'static str)>);
    let rows: &[Row] = &[
        ("an opaque token Harbor refuses: the robot may not pull there", "/v2/ghost/app/manifests/1", Some("opaque".into()), Look::Status, b"401",
            Some((403, "DENIED"))),
        ("a Harbor JWT granting pull that Harbor refuses: misconfigured", "/v2/library/alpine/manifests/3.19", Some(jwt.clone()), Look::Status,
            b"401", Some((503, "UNAVAILABLE"))),
        ("an answer that is not a 401", "/v2/library/alpine/manifests/3.19", Some(jwt.clone()), Look::Status, b"200", None),
        ("a 403 from Harbor passes as it is", "/v2/library/alpine/manifests/3.19", Some(jwt), Look::Status, b"403", None),
        ("a request without the robot's token (the catalog) is not read", "/v2/_catalog", None, Look::Nothing, b"401", None),
    ];
    let mut report = Report::new("managed answers");
    for (name, path, token, look, status, want) in rows {
        let forwarded = forwarded(&config, "GET", path, "http", token.clone());
        report.eq(format_args!("{name}: what is read"), forwarded.look(&config), *look);
        let got = match forwarded.on_status(&config, status) {
            Edit::RefuseRobotToken { project, refusal } => {
                let named = refusal.message.contains("robot$mirror") && refusal.message.contains(&format!("project {project}"));
                report.check(format_args!("{name}: the message names robot and project"), named, &refusal.message);
                Some((refusal.status, refusal.code.as_str()))
            }
            Edit::Untouched => None,
            other => panic!("{name}: {other:?}"),
        };
        report.eq(name, got, *want);
    }
}

#[test]
fn with_token_handling_off_nothing_is_read() {
    let config = parse(TOKENS_OFF);
    let forwarded = forwarded(&config, "GET", "/v2/library/alpine/manifests/3.19", "http", None);
    let mut report = Report::new("token handling off");
    report.eq("what is read", forwarded.look(&config), Look::Nothing);
    report.eq("a challenge", forwarded.on_challenges(&config, &[BEARER.as_bytes()]), Edit::Untouched);
}
