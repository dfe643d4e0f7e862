//! The driver through an emulated Envoy (`common::emulator`): every flow the README describes,
//! each client's path and token flow, the answer, managed mode with its races, discovery's
//! refresh and its failures, refusals, the debug header and the metrics, as the host calls the
//! real driver makes, for the proxy-wasm host and the dynamic module's. Runs natively and under
//! wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use harbor_mirror_core::host::{Flow, Level};
use harbor_mirror_core::shared_data::SharedData;

mod common;

use common::emulator::{Answer, Emulator, Kind};
use common::{harbor_token, token_answer, Report, PULL_PRIVATE};

const PASS_THROUGH: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-proxy"}, "quay.io": {"project": "quay-proxy", "aliases": ["quay"]}},
    "default_registry": "docker.io", "passthrough_projects": ["production"]}"#;

const MANAGED: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-private"}}, "default_registry": "docker.io", "read_only": true,
    "auth": {"robot": {"username": "robot$mirror", "password": "s"}, "cluster": "harbor", "authority": "harbor.example.com"}}"#;

const DISCOVERY: &str = r#"{"discover": {"cluster": "harbor", "authority": "harbor.example.com", "interval_s": 60,
    "robot": {"username": "robot$mirror", "password": "s"}}, "default_registry": "docker.io"}"#;

const BOTH: [Kind; 2] = [Kind::Wasm, Kind::Module];

/// The calls `got` against `want`, where a wanted line ending in `…` matches any line it starts.
fn same_calls(got: &[String], want: &[&str]) -> Result<(), String> {
    let matches = |got: &String, want: &&str| match want.strip_suffix('…') {
        Some(prefix) => got.starts_with(prefix),
        None => got == want,
    };
    if got.len() == want.len() && got.iter().zip(want).all(|(got, want)| matches(got, want)) {
        Ok(())
    } else {
        Err(format!("host calls\n      got  {got:#?}\n      want {want:#?}"))
    }
}

/// The token request managed mode sends for the private project's alpine.
const ALPINE_TOKEN: &str = "send harbor /service/token?service=harbor-registry&scope=repository:dockerhub-private/library/alpine:pull";
const ALPINE_TOKEN_KEY: &str = "harbor_mirror.token/harbor.example.com/robot$mirror/dockerhub-private";

#[test]
fn each_clients_request_makes_these_host_calls() {
    // (name, method, path, flow, counted as, host calls of the proxy-wasm filter; the module's
    // are the same with its counts made at once, after the headers are read)
    type Row = (&'static str, &'static str, &'static str, Flow, Counted, &'static [&'static str]);
    let rows: &[Row] = &[
        ("containerd's pull carries ns", "HEAD", "/v2/library/nginx/manifests/latest?ns=docker.io", Flow::Continue, Counted::Docker,
            &["get request headers", "set :path /v2/dockerhub-proxy/library/nginx/manifests/latest"]),
        ("docker's pull has no hint: the default registry", "GET", "/v2/library/nginx/manifests/latest", Flow::Continue, Counted::Docker,
            &["get request headers", "set :path /v2/dockerhub-proxy/library/nginx/manifests/latest"]),
        ("a single-segment name gets library/", "GET", "/v2/nginx/blobs/sha256:aa?ns=docker.io", Flow::Continue, Counted::Docker,
            &["get request headers", "set :path /v2/dockerhub-proxy/library/nginx/blobs/sha256:aa"]),
        ("the alias form names the registry", "GET", "/quay/v2/coreos/etcd/manifests/v3", Flow::Continue, Counted::Quay,
            &["get request headers", "set :path /v2/quay-proxy/coreos/etcd/manifests/v3"]),
        ("podman's token request: its scope is mapped", "GET", "/service/token?scope=repository%3Alibrary%2Fnginx%3Apull&service=harbor-registry",
            Flow::Continue, Counted::Docker,
            &["get request headers", "set :path /service/token?scope=repository:dockerhub-proxy/library/nginx:pull&service=harbor-registry"]),
        ("the version check passes untouched", "GET", "/v2/", Flow::Continue, Counted::Passed, &["get request headers"]),
        ("a name under a passthrough project passes untouched", "GET", "/v2/production/app/manifests/1", Flow::Continue, Counted::Passed,
            &["get request headers"]),
        ("Harbor's own API passes untouched", "GET", "/api/v2.0/projects", Flow::Continue, Counted::Passed, &["get request headers"]),
        ("a write through a mapped name is answered here", "PUT", "/v2/library/nginx/manifests/latest", Flow::Pause, Counted::Rejected,
            &["get request headers", "reply 405 {\"errors\":[{\"code\":\"UNSUPPORTED\"…"]),
        ("an unknown ns is answered here", "GET", "/v2/x/y/manifests/1?ns=nowhere.example", Flow::Pause, Counted::Rejected,
            &["get request headers", "reply 404 {\"errors\":[{\"code\":\"NAME_UNKNOWN\"…"]),
        ("a path Harbor would read otherwise is refused", "GET", "/v2/library/%2e%2e/nginx/manifests/1", Flow::Pause, Counted::Rejected,
            &["get request headers", "reply 400 …"]),
    ];
    let mut report = Report::new("a client's request through the driver");
    for kind in BOTH {
        for (name, method, path, flow, counted, wasm_calls) in rows {
            let mut mirror = Emulator::configured(kind, &config_with(PASS_THROUGH, r#""read_only": true"#));
            mirror.clear();
            let (_, got_flow) = mirror.request(method, path, &[]);
            let mut want: Vec<&str> = wasm_calls.to_vec();
            if kind == Kind::Module {
                want.splice(1..1, counted.lines().iter().copied());
            }
            report.eq(format_args!("{kind:?}: {name}: flow"), got_flow, *flow);
            report.row(format_args!("{kind:?}: {name}"), same_calls(&mirror.take_calls(), &want));
        }
    }
}

/// `json` with one more top-level member.
fn config_with(json: &str, member: &str) -> String {
    let end = json.rfind('}').unwrap_or(json.len());
    format!("{}, {member}}}", &json[..end])
}

/// What a request is counted as.
#[derive(Debug, Clone, Copy)]
enum Counted {
    Docker,
    Quay,
    Passed,
    Rejected,
}

impl Counted {
    /// The module's count calls for it.
    fn lines(self) -> &'static [&'static str] {
        match self {
            Counted::Docker => &["count harbor_mirror.rewritten +1", "count harbor_mirror.registry.docker.io.rewritten +1"],
            Counted::Quay => &["count harbor_mirror.rewritten +1", "count harbor_mirror.registry.quay.io.rewritten +1"],
            Counted::Passed => &["count harbor_mirror.passed +1"],
            Counted::Rejected => &["count harbor_mirror.rejected +1"],
        }
    }
}

#[test]
fn the_wasm_filter_holds_its_counts_until_the_tick_and_the_module_counts_at_once() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, PASS_THROUGH);
        mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        mirror.request("GET", "/quay/v2/coreos/etcd/manifests/v3", &[]);
        mirror.request("GET", "/v2/", &[]);
        mirror.request("DELETE", "/v2/library/nginx/manifests/latest", &[]);
        let before_tick = if kind == Kind::Wasm { 0 } else { 2 };
        assert_eq!(mirror.metric("harbor_mirror.rewritten"), before_tick, "{kind:?}: rewritten before the tick");
        mirror.tick();
        for (name, value) in [
            ("harbor_mirror.rewritten", 2),
            ("harbor_mirror.registry.docker.io.rewritten", 1),
            ("harbor_mirror.registry.quay.io.rewritten", 1),
            ("harbor_mirror.passed", 1),
            ("harbor_mirror.rejected", 1),
        ] {
            assert_eq!(mirror.metric(name), value, "{kind:?}: {name} after the tick");
        }
        mirror.clear();
        mirror.tick();
        assert!(!mirror.take_calls().iter().any(|call| call.starts_with("count")), "{kind:?}: a tick with nothing held counts nothing");
    }
}

#[test]
fn harbors_challenge_is_pointed_back_at_the_mirror() {
    let harbor_bearer = r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry",scope="repository:dockerhub-proxy/library/nginx:pull""#;
    // (name, request path, answer headers, host calls of the response phase, challenges after)
    type Row = (&'static str, &'static str, Vec<(&'static str, &'static str)>, Vec<&'static str>, Vec<&'static str>);
    let rows: Vec<Row> = vec![
        ("an answer without a challenge is read once", "/v2/library/nginx/manifests/latest", vec![], vec!["get response www-authenticate values"], vec![]),
        ("Harbor's Bearer realm points back at the mirror, with the registry as ns",
            "/v2/library/nginx/manifests/latest?ns=docker.io", vec![("www-authenticate", harbor_bearer)],
            vec!["get response www-authenticate values", "set response www-authenticate Bearer realm=\"http://mirror:5000/service/token?ns=docker.io\"…"],
            vec![r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/nginx:pull""#]),
        ("Harbor's Basic challenge for a mapped name becomes a Bearer challenge for its Harbor name",
            "/v2/library/nginx/manifests/latest", vec![("www-authenticate", r#"Basic realm="harbor""#)],
            vec!["get response www-authenticate values", "set response www-authenticate Bearer …"],
            vec![r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:dockerhub-proxy/library/nginx:pull""#]),
        ("the catalog's Basic challenge is left as it is", "/v2/_catalog", vec![("www-authenticate", r#"Basic realm="harbor""#)],
            vec!["get response www-authenticate values"], vec![r#"Basic realm="harbor""#]),
    ];
    let mut report = Report::new("challenges");
    for kind in BOTH {
        for (name, path, headers, want_calls, want_challenges) in &rows {
            let mut mirror = Emulator::configured(kind, PASS_THROUGH);
            let (id, _) = mirror.request("GET", path, &[]);
            mirror.clear();
            let flow = mirror.respond(id, 401, headers);
            let mut calls = mirror.take_calls();
            calls.retain(|call| !call.starts_with("count"));
            report.eq(format_args!("{kind:?}: {name}: flow"), flow, Flow::Continue);
            report.row(format_args!("{kind:?}: {name}"), same_calls(&calls, want_calls));
            report.eq(format_args!("{kind:?}: {name}: challenges"), mirror.stream(id).response_values("www-authenticate"), owned(want_challenges));
        }
    }
    let mut mirror = Emulator::configured(Kind::Wasm, PASS_THROUGH);
    let (id, _) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
    mirror.respond(id, 401, &[("www-authenticate", harbor_bearer)]);
    mirror.tick();
    assert_eq!(mirror.metric("harbor_mirror.challenges_rewritten"), 1);
}

fn owned(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| (*line).to_owned()).collect()
}

#[test]
fn the_debug_header_and_the_original_path_are_kept_for_the_answer_and_the_access_log() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, &config_with(PASS_THROUGH, r#""debug_header": true, "log_original_path": true"#));
        mirror.clear();
        let (id, _) = mirror.request("GET", "/v2/library/nginx/manifests/latest?ns=docker.io", &[]);
        let mut calls = mirror.take_calls();
        calls.retain(|call| !call.starts_with("count"));
        same_calls(
            &calls,
            &[
                "get request headers",
                "set :path /v2/dockerhub-proxy/library/nginx/manifests/latest",
                "set filter state harbor_mirror.original_path /v2/library/nginx/manifests/latest?ns=docker.io",
            ],
        )
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        mirror.respond(id, 200, &[]);
        let debug = mirror.stream(id).response_values("x-harbor-mirror");
        assert_eq!(debug.len(), 1, "{kind:?}: one debug header");
        assert!(debug[0].starts_with("rewrote: registry=docker.io by=ns rule=project"), "{kind:?}: {}", debug[0]);

        let (refused, flow) = mirror.request("GET", "/v2/x/y/manifests/1?ns=nowhere.example", &[]);
        assert_eq!(flow, Flow::Pause);
        let reply = mirror.stream(refused).reply.clone().unwrap_or_else(|| panic!("{kind:?}: no reply"));
        assert_eq!(reply.status, 404);
        let names: Vec<&str> = reply.headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["content-type", "docker-distribution-api-version", "x-harbor-mirror"], "{kind:?}: the refusal's headers");
    }
}

#[test]
fn a_request_is_logged_at_debug_only_when_debug_is_on() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, PASS_THROUGH);
        mirror.world.level = Level::Info;
        mirror.clear();
        mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        assert_eq!(mirror.world.logs.len(), 0, "{kind:?}: logged at info: {:?}", mirror.world.logs);
        mirror.world.level = Level::Debug;
        mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        assert_eq!(
            mirror.logged(Level::Debug, "harbor-mirror: GET /v2/library/nginx/manifests/latest: rewrote: registry=docker.io by=default rule=project"),
            1,
            "{kind:?}: {:?}",
            mirror.world.logs
        );
    }
}

#[test]
fn a_failed_host_call_answers_500_and_logs_which() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, PASS_THROUGH);
        mirror.world.failing = vec!["set :path".to_owned()];
        mirror.clear();
        let (id, flow) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        assert_eq!(flow, Flow::Pause, "{kind:?}");
        assert_eq!(mirror.replied(id), Some(500), "{kind:?}");
        assert_eq!(mirror.logged(Level::Error, "harbor-mirror: host call emulated failed: Fault"), 1, "{kind:?}");
    }
}

#[test]
fn a_host_no_domain_rule_matches_is_passed_untouched() {
    let rules_only = r#"{"_rules_": [{"_match_domain_": ["harbor.example.com"], "registries": {"docker.io": {"project": "hub"}}, "default_registry": "docker.io"}]}"#;
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, rules_only);
        mirror.clear();
        let (id, flow) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        assert_eq!(flow, Flow::Continue);
        same_calls(&mirror.take_calls(), &["get request headers"]).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(mirror.logged(Level::Debug, "no _rules_ domain matches the request's host"), 1);
        mirror.clear();
        mirror.respond(id, 401, &[("www-authenticate", "Basic realm=\"harbor\"")]);
        same_calls(&mirror.take_calls(), &[]).unwrap_or_else(|e| panic!("{kind:?}: the answer: {e}"));
        let (_, flow) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[(":authority", "harbor.example.com")]);
        assert_eq!(flow, Flow::Continue);
        assert_eq!(mirror.stream(id + 1).request_text(":path"), "/v2/hub/library/nginx/manifests/latest", "{kind:?}: the rule's host");
    }
}

#[test]
fn configure_logs_each_configuration_and_refuses_a_bad_one_in_one_line() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, PASS_THROUGH);
        assert_eq!(mirror.logged(Level::Info, "harbor-mirror: configured 2 registries in 0.000 ms, pass-through auth"), 1, "{kind:?}");
        let mut bad = Emulator::new(kind);
        let error = bad.configure(r#"{"registries": {"docker.io": {"project": "Hub"}}}"#).err();
        assert_eq!(
            error.as_deref(),
            Some(r#"invalid configuration: registries["docker.io"].project: "Hub" is not a valid Harbor project name (lower-case letters, digits, '.', '_', '-')"#),
            "{kind:?}"
        );
        mirror.clear();
    }
}

#[test]
fn the_wasm_vms_memory_is_added_on_the_tick_and_taken_off_at_stop() {
    let mut vm = Emulator::configured(Kind::Wasm, PASS_THROUGH);
    assert_eq!(vm.metric("harbor_mirror.wasm_memory_bytes"), 2 * 65536, "at configure");
    vm.world.memory = 5 * 65536;
    vm.clear();
    vm.tick();
    assert!(vm.take_calls().contains(&"add to gauge harbor_mirror.wasm_memory_bytes +196608".to_owned()));
    vm.stop();
    assert_eq!(vm.metric("harbor_mirror.wasm_memory_bytes"), 0, "at stop");
    let module = Emulator::configured(Kind::Module, PASS_THROUGH);
    assert!(!module.world.metrics.values().any(|(_, name)| name.contains("wasm_memory")), "the module defines no memory gauge");
}

// --- managed mode ---------------------------------------------------------------------------

/// Harbor's answer to the robot's token request, granting pull on the private project.
fn granted() -> Answer {
    Answer::new(200, token_answer(&robot_token()))
}

fn robot_token() -> String {
    harbor_token(Some("robot$mirror"), PULL_PRIVATE)
}

#[test]
fn managed_requests_share_one_token_fetch_per_project() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, MANAGED);
        mirror.clear();
        let (first, flow) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[("authorization", "Basic ZG9ja2VyOmh1Yg==")]);
        assert_eq!(flow, Flow::Pause, "{kind:?}: the first waits for the token");
        let counts: &[&str] = match kind {
            Kind::Wasm => &[],
            Kind::Module => &["count harbor_mirror.rewritten +1", "count harbor_mirror.registry.docker.io.rewritten +1"],
        };
        let fetch: &[&str] = match kind {
            Kind::Wasm => &[ALPINE_TOKEN],
            Kind::Module => &["prepare to wait", "wake plugin"],
        };
        let mut want = vec!["get request headers"];
        want.extend(counts);
        want.extend([
            "set :path /v2/dockerhub-private/library/alpine/manifests/3.19",
            "remove authorization",
            "remove proxy-authorization",
            "remove cookie",
            "get shared harbor_mirror.token/harbor.example.com/robot$mirror/dockerhub-private",
            "get time",
        ]);
        want.extend(fetch);
        let calls = mirror.take_calls();
        same_calls(&calls, &want).unwrap_or_else(|e| panic!("{kind:?}: the first request: {e}"));
        let (second, flow) = mirror.request("GET", "/v2/library/alpine/blobs/sha256:aa", &[]);
        assert_eq!(flow, Flow::Pause, "{kind:?}: the second waits for the same fetch");
        mirror.deliver();
        assert_eq!(mirror.sent_paths().len(), 1, "{kind:?}: one token request for both: {:?}", mirror.sent_paths());
        let sent = &mirror.world.sent[0];
        assert_eq!(sent.authority, "harbor.example.com");
        assert_eq!(sent.headers, [("authorization".to_owned(), "Basic cm9ib3QkbWlycm9yOnM=".to_owned())], "{kind:?}: the robot's credentials");
        assert_eq!(sent.from, if kind == Kind::Wasm { Some(first) } else { None }, "{kind:?}: who sends it");
        mirror.clear();
        mirror.answer(0, &granted());
        mirror.deliver();
        let bearer = format!("Bearer {}", robot_token());
        for id in [first, second] {
            let stream = mirror.stream(id);
            assert!(stream.resumed, "{kind:?}: request {id} resumed");
            assert_eq!(stream.request_text("authorization"), bearer, "{kind:?}: request {id} carries the robot's token");
        }
        let calls = mirror.take_calls();
        let stored = calls.iter().position(|call| call.starts_with(&format!("set shared {ALPINE_TOKEN_KEY} \"t ")));
        let woken = calls.iter().position(|call| call == &format!("wake {first}"));
        assert!(stored.is_some() && stored < woken, "{kind:?}: the token is cached before the requests go on: {calls:#?}");

        mirror.clear();
        let (third, flow) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
        assert_eq!(flow, Flow::Continue, "{kind:?}: the cached token serves the next request");
        assert_eq!(mirror.stream(third).request_text("authorization"), bearer);
        assert_eq!(mirror.sent_paths().len(), 1, "{kind:?}: no new token request");
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.token.fetches"), 1, "{kind:?}");
        assert_eq!(mirror.metric("harbor_mirror.token.cache_hits"), 1, "{kind:?}");
        assert_eq!(mirror.metric("harbor_mirror.rewritten"), 3, "{kind:?}");
    }
}

#[test]
fn the_wasm_filters_fetch_goes_on_when_the_request_that_sent_it_ends() {
    let mut vm = Emulator::configured(Kind::Wasm, MANAGED);
    let (owner, _) = vm.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
    let (waiter, _) = vm.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
    vm.end(owner);
    vm.answer(0, &granted());
    assert!(!vm.stream(waiter).resumed, "the call ended with its request");
    vm.clear();
    vm.tick();
    assert_eq!(vm.logged(Level::Debug, "token fetch for project dockerhub-private lost its request; fetching again"), 1);
    assert_eq!(vm.world.sent.len(), 2, "sent again");
    assert_eq!(vm.world.sent[1].from, None, "from the root context, which outlives requests");
    vm.answer(1, &granted());
    assert!(vm.stream(waiter).resumed, "the waiter goes on");
    assert!(!vm.stream(owner).resumed);
}

#[test]
fn the_modules_fetch_outlives_the_requests_that_wait_for_it() {
    let mut module = Emulator::configured(Kind::Module, MANAGED);
    let (gone, _) = module.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
    let (waiter, _) = module.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
    module.deliver();
    module.end(gone);
    module.clear();
    module.answer(0, &granted());
    let calls = module.take_calls();
    assert!(calls.contains(&format!("wake {waiter}")), "{calls:#?}");
    assert!(!calls.contains(&format!("wake {gone}")), "an ended request waits no more: {calls:#?}");
    module.deliver();
    assert!(module.stream(waiter).resumed);
    assert!(!module.stream(gone).resumed, "an ended request is not woken");
    module.tick();
    assert_eq!(module.world.sent.len(), 1, "no tick sends it again");
}

#[test]
fn a_token_fetch_that_fails_answers_every_waiter_and_a_refused_robot_is_remembered() {
    let anonymous = || Answer::new(200, token_answer(&harbor_token(None, "[]")));
    // (name, Harbor's answer, status each waiter gets, whether the next request within the
    // backoff is answered without asking Harbor)
    let rows: Vec<(&str, Answer, u32, bool)> = vec![
        ("the token service does not answer", Answer::none(), 503, false),
        ("wrong robot credentials (Harbor's anonymous token)", anonymous(), 503, true),
        ("a 401", Answer::new(401, "unauthorized"), 503, true),
        ("the robot lacks the project", Answer::new(200, token_answer(&harbor_token(Some("robot$mirror"), "[]"))), 403, false),
    ];
    let mut report = Report::new("failed token fetches");
    for kind in BOTH {
        for (name, answer, status, remembered) in &rows {
            let mut mirror = Emulator::configured(kind, MANAGED);
            let (first, _) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
            let (second, _) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
            mirror.deliver();
            mirror.answer(0, answer);
            mirror.deliver();
            report.eq(format_args!("{kind:?}: {name}: the first"), mirror.replied(first), Some(*status));
            report.eq(format_args!("{kind:?}: {name}: the second"), mirror.replied(second), Some(*status));
            report.eq(format_args!("{kind:?}: {name}: logged"), mirror.logged(Level::Warn, "harbor-mirror: token for project dockerhub-private: "), 1);
            let (third, flow) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
            mirror.deliver();
            let answered_here = flow == Flow::Pause && mirror.replied(third) == Some(503) && mirror.world.sent.len() == 1;
            report.eq(format_args!("{kind:?}: {name}: the next request is answered from the remembered refusal"), answered_here, *remembered);
            mirror.tick();
            report.eq(format_args!("{kind:?}: {name}: counted"), mirror.metric("harbor_mirror.token.fetch_failures"), 1);
        }
    }
}

#[test]
fn a_token_request_that_cannot_be_sent_answers_503() {
    let mut vm = Emulator::configured(Kind::Wasm, MANAGED);
    vm.world.failing = vec!["send harbor".to_owned()];
    let (id, flow) = vm.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(vm.replied(id), Some(503));
    assert_eq!(vm.logged(Level::Error, "cannot ask harbor for a token through cluster \"harbor\" (auth.cluster): host call emulated failed: Fault"), 1);

    let mut module = Emulator::configured(Kind::Module, MANAGED);
    module.world.failing = vec!["prepare to wait".to_owned()];
    let (id, flow) = module.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(module.replied(id), Some(503), "a stream that cannot pause is answered");
    assert!(module.world.sent.is_empty() && module.world.plugin_wakes == 0, "and nothing is sent");
}

#[test]
fn harbors_401_to_the_robots_token_drops_it_and_answers_the_client() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, MANAGED);
        let (first, _) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
        mirror.deliver();
        mirror.answer(0, &granted());
        mirror.deliver();
        mirror.clear();
        let flow = mirror.respond(first, 401, &[("www-authenticate", "Bearer realm=\"x\"")]);
        assert_eq!(flow, Flow::Pause, "{kind:?}");
        same_calls(
            &mirror.take_calls(),
            &["get response :status", &format!("get shared {ALPINE_TOKEN_KEY}"), &format!("set shared {ALPINE_TOKEN_KEY} \"\""), "reply 503 …"],
        )
        .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(mirror.logged(Level::Warn, "harbor answered 401 to /v2/dockerhub-private/library/alpine/manifests/3.19 with the robot's token"), 1);
        let (_, flow) = mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[]);
        mirror.deliver();
        assert_eq!(flow, Flow::Pause, "{kind:?}: the next request fetches anew");
        assert_eq!(mirror.world.sent.len(), 2, "{kind:?}");
        mirror.clear();
        let (cached, _) = {
            mirror.answer(1, &granted());
            mirror.deliver();
            mirror.request("GET", "/v2/library/alpine/manifests/3.19", &[])
        };
        mirror.respond(cached, 200, &[]);
        assert_eq!(mirror.replied(cached), None, "{kind:?}: a 200 passes");
    }
}

#[test]
fn managed_mode_answers_the_version_check_and_the_token_endpoint_itself() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, MANAGED);
        let (ping, _) = mirror.request("GET", "/v2/", &[]);
        assert_eq!(mirror.replied(ping), Some(200));
        let (token, _) = mirror.request("GET", "/service/token?scope=repository:library/alpine:pull", &[]);
        assert_eq!(mirror.replied(token), Some(404));
        assert!(mirror.world.sent.is_empty(), "{kind:?}: nothing asked of Harbor");
    }
}

// --- discovery ------------------------------------------------------------------------------

const PROJECTS: &str = r#"[{"project_id": 1, "name": "dockerhub-proxy", "registry_id": 1}, {"project_id": 2, "name": "library", "registry_id": 0},
    {"project_id": 3, "name": "quay-proxy", "registry_id": 2}]"#;

/// Ticks, and runs the refresh that starts to its end; the calls' paths.
fn refresh(mirror: &mut Emulator) -> Vec<String> {
    refresh_listing(mirror, PROJECTS)
}

/// [`refresh`], with Harbor listing `projects`.
fn refresh_listing(mirror: &mut Emulator, projects: &str) -> Vec<String> {
    let first = mirror.world.sent.len();
    mirror.tick();
    finish_refresh_listing(mirror, projects);
    mirror.world.sent[first..].iter().map(|sent| sent.path.clone()).collect()
}

/// Answers every open call Harbor's way, as they come, until none is open.
fn finish_refresh(mirror: &mut Emulator) {
    finish_refresh_listing(mirror, PROJECTS);
}

/// [`finish_refresh`], with Harbor listing `projects`.
fn finish_refresh_listing(mirror: &mut Emulator, projects: &str) {
    while let Some(index) = mirror.world.sent.iter().position(|sent| sent.open) {
        let path = mirror.world.sent[index].path.clone();
        let answer = if path.starts_with("/service/token") {
            Answer::new(200, token_answer(&harbor_token(Some("robot$mirror"), "[]")))
        } else if path.starts_with("/api/v2.0/projects?") {
            Answer::new(200, projects)
        } else if path.ends_with("/dockerhub-proxy/summary") {
            Answer::new(200, r#"{"registry": {"type": "docker-hub", "url": "https://hub.docker.com"}}"#)
        } else if path.ends_with("/quay-proxy/summary") {
            Answer::new(200, r#"{"registry": {"type": "quay", "url": "https://quay.io"}}"#)
        } else {
            Answer::new(404, "")
        };
        mirror.answer(index, &answer);
    }
}

#[test]
fn discovery_reads_the_mapping_and_requests_follow_it() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, DISCOVERY);
        let (early, _) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        assert_eq!(mirror.replied(early), Some(503), "{kind:?}: no mapping yet");
        let paths = refresh(&mut mirror);
        assert_eq!(
            paths,
            [
                "/service/token?service=harbor-registry",
                "/api/v2.0/projects?page=1&page_size=100&with_detail=false&q=registry_id%3D%5B1~%5D",
                "/api/v2.0/projects/dockerhub-proxy/summary",
                "/api/v2.0/projects/quay-proxy/summary",
            ],
            "{kind:?}"
        );
        assert!(mirror.world.sent.iter().all(|sent| sent.from.is_none() && sent.cluster == "harbor"), "{kind:?}: from the plugin's context");
        assert_eq!(mirror.logged(Level::Info, "harbor-mirror: discovery: registries added docker.io (dockerhub-proxy), quay.io (quay-proxy)"), 1);
        let (id, flow) = mirror.request("GET", "/v2/coreos/etcd/manifests/v3?ns=quay.io", &[]);
        assert_eq!(flow, Flow::Continue);
        assert_eq!(mirror.stream(id).request_text(":path"), "/v2/quay-proxy/coreos/etcd/manifests/v3", "{kind:?}");
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.discovery.refreshes"), 1, "{kind:?}");
        assert_eq!(mirror.metric("harbor_mirror.discovery.registries"), 2, "{kind:?}");
        // The wasm filter defines the counters of registries discovery brings; the module's ABI
        // defines metrics only at configure.
        let defined = mirror.world.metrics.values().any(|(_, name)| name == "harbor_mirror.registry.quay.io.rewritten");
        assert_eq!(defined, kind == Kind::Wasm, "{kind:?}: the discovered registry's counter");
        assert_eq!(mirror.metric("harbor_mirror.rewritten"), 1, "{kind:?}");
    }
}

#[test]
fn a_project_removed_from_harbor_leaves_the_mapping_at_the_next_refresh() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, DISCOVERY);
        refresh(&mut mirror);
        mirror.advance_secs(60);
        refresh_listing(&mut mirror, r#"[{"project_id": 1, "name": "dockerhub-proxy", "registry_id": 1}]"#);
        assert_eq!(mirror.logged(Level::Info, "harbor-mirror: discovery: registries removed quay.io (quay-proxy)"), 1, "{kind:?}");
        let (id, _) = mirror.request("GET", "/v2/coreos/etcd/manifests/v3?ns=quay.io", &[]);
        assert_eq!(mirror.replied(id), Some(404), "{kind:?}: quay.io is no registry any more");
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.discovery.registries"), 1, "{kind:?}");
    }
}

#[test]
fn one_refresh_per_interval_serves_every_vm_of_an_envoy() {
    let shared = Arc::new(SharedData::default());
    let mut first = Emulator::sharing(Kind::Wasm, shared.clone());
    let mut second = Emulator::sharing(Kind::Wasm, shared);
    first.configure(DISCOVERY).unwrap_or_else(|e| panic!("{e}"));
    second.configure(DISCOVERY).unwrap_or_else(|e| panic!("{e}"));
    first.tick();
    second.tick();
    assert!(second.world.sent.is_empty(), "the second VM finds the lease taken");
    finish_refresh(&mut first);
    second.tick();
    assert!(second.world.sent.is_empty(), "the second VM applies the published mapping without asking Harbor");
    let (id, _) = second.request("GET", "/v2/library/nginx/manifests/latest", &[]);
    assert_eq!(second.stream(id).request_text(":path"), "/v2/dockerhub-proxy/library/nginx/manifests/latest");
    first.advance_secs(30);
    second.advance_secs(30);
    first.tick();
    second.tick();
    assert_eq!(first.world.sent.len() + second.world.sent.len(), 4, "not due within the interval");
    first.advance_secs(31);
    second.advance_secs(31);
    second.tick();
    first.tick();
    assert_eq!(second.world.sent.len(), 1, "due: the VM whose tick comes first refreshes");
    assert_eq!(first.world.sent.len(), 4, "and only that one");
}

#[test]
fn a_failed_refresh_keeps_the_last_good_mapping() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, DISCOVERY);
        refresh(&mut mirror);
        mirror.advance_secs(61);
        mirror.tick();
        mirror.answer(4, &granted());
        mirror.answer(5, &Answer::new(503, "no healthy upstream"));
        assert_eq!(
            mirror.logged(
                Level::Warn,
                "harbor-mirror: discovery: harbor answered 503 for page 1 of the project list, or discover.cluster could not reach it; \
                 keeping the last good mapping: docker.io (dockerhub-proxy), quay.io (quay-proxy)"
            ),
            1,
            "{kind:?}: {:?}",
            mirror.world.logs
        );
        let (id, _) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
        assert_eq!(mirror.stream(id).request_text(":path"), "/v2/dockerhub-proxy/library/nginx/manifests/latest", "{kind:?}");
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.discovery.failures"), 1, "{kind:?}");
        mirror.advance_secs(4);
        mirror.tick();
        assert_eq!(mirror.world.sent.len(), 6, "{kind:?}: the next try waits a little");
        mirror.advance_secs(1);
        mirror.tick();
        assert_eq!(mirror.world.sent.len(), 7, "{kind:?}: then tries again");
    }
}

#[test]
fn a_refused_discovery_robot_is_reported_without_its_password() {
    let mut mirror = Emulator::configured(Kind::Wasm, DISCOVERY);
    mirror.tick();
    mirror.answer(0, &Answer::new(401, ""));
    assert_eq!(
        mirror.logged(Level::Warn, "discovery: harbor refused the robot credentials of discover.robot (or auth.robot), robot$mirror"),
        1
    );
    assert!(!mirror.world.logs.iter().any(|(_, line)| line.contains("cm9ib3Qk") || line.contains(":s\"")), "a secret in the log");
    let (id, _) = mirror.request("GET", "/v2/library/nginx/manifests/latest", &[]);
    assert_eq!(mirror.replied(id), Some(503), "still no mapping");
}
