//! The waiting list of identical manifest GETs, driven with injected time: who leads, who
//! waits, and what each waiting request is released with when the leader answers, fails, goes
//! away, or takes too long. Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use harbor_mirror_core::coalesce::{key, Answered, Arrival, Bursts, Captured, Release, Released};

const NGINX: &str = "/v2/hub/library/nginx/manifests/1.27\napplication/vnd.oci.image.index.v1+json";
const ALPINE: &str = "/v2/hub/library/alpine/manifests/3.19\napplication/vnd.oci.image.index.v1+json";
const MAX_WAIT_MS: u64 = 30_000;

fn manifest() -> Captured {
    Captured { headers: vec![("content-type", "application/vnd.oci.image.index.v1+json".to_owned())], body: b"{\"schemaVersion\":2}".to_vec() }
}

/// Request ids and what each was released with, in order.
fn released(list: &[Released]) -> Vec<(u32, &Release)> {
    list.iter().map(|released| (released.request, &released.release)).collect()
}

#[test]
fn the_first_request_leads_and_identical_ones_wait() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    assert_eq!(bursts.arrive(1, NGINX, 0), Arrival::Lead);
    assert_eq!(bursts.arrive(2, NGINX, 5), Arrival::Wait);
    assert_eq!(bursts.arrive(3, NGINX, 9), Arrival::Wait);
    assert_eq!(bursts.arrive(4, ALPINE, 9), Arrival::Lead, "another key leads its own burst");
    assert_eq!(bursts.waiting(), 2);
}

#[test]
fn waiting_requests_get_the_leaders_manifest() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX, 0);
    bursts.arrive(2, NGINX, 10);
    bursts.arrive(3, NGINX, 20);
    assert_eq!(bursts.answered(1, NGINX, 200, 100), Answered::Capture);
    let out = bursts.captured(1, NGINX, manifest(), 150);
    let served = Release::Serve(Arc::new(manifest()));
    assert_eq!(released(&out), [(2, &served), (3, &served)]);
    assert_eq!(out.iter().map(|released| released.waited_ms).collect::<Vec<_>>(), [140, 130]);
    assert_eq!(bursts.arrive(4, NGINX, 200), Arrival::Lead, "the burst is over: the next request leads a new one");
}

#[test]
fn an_answer_nobody_waits_for_is_not_captured() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX, 0);
    assert_eq!(bursts.answered(1, NGINX, 200, 50), Answered::Closed(Vec::new()));
    assert_eq!(bursts.arrive(2, NGINX, 60), Arrival::Lead);
}

#[test]
fn what_releases_the_waiting_requests_to_go_on_their_own() {
    // (name, what happens to the leader) -> requests 2 and 3 go on their own.
    type Event = fn(&mut Bursts) -> Vec<Released>;
    let cases: [(&str, Event); 4] = [
        ("the leader is answered 500", |bursts| match bursts.answered(1, NGINX, 500, 100) {
            Answered::Closed(out) => out,
            Answered::Capture => panic!("a 500 is not captured"),
        }),
        ("the leader is answered 401", |bursts| match bursts.answered(1, NGINX, 401, 100) {
            Answered::Closed(out) => out,
            Answered::Capture => panic!("a 401 is not captured"),
        }),
        ("the leader's client disconnects before an answer", |bursts| bursts.ended(1, NGINX, 100)),
        ("the leader ends while its answer is captured (a reset, a lost VM)", |bursts| {
            assert_eq!(bursts.answered(1, NGINX, 200, 90), Answered::Capture);
            bursts.ended(1, NGINX, 100)
        }),
    ];
    for (name, event) in cases {
        let mut bursts = Bursts::new(MAX_WAIT_MS);
        bursts.arrive(1, NGINX, 0);
        bursts.arrive(2, NGINX, 10);
        bursts.arrive(3, NGINX, 20);
        let out = event(&mut bursts);
        assert_eq!(released(&out), [(2, &Release::GoOn), (3, &Release::GoOn)], "{name}");
        assert_eq!(bursts.waiting(), 0, "{name}");
        assert_eq!(bursts.arrive(4, NGINX, 200), Arrival::Lead, "{name}: the next request leads");
    }
}

#[test]
fn a_waiting_request_that_goes_away_costs_nothing() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX, 0);
    bursts.arrive(2, NGINX, 10);
    bursts.arrive(3, NGINX, 20);
    assert_eq!(bursts.ended(2, NGINX, 30), Vec::new());
    assert_eq!(bursts.answered(1, NGINX, 200, 40), Answered::Capture);
    let out = bursts.captured(1, NGINX, manifest(), 50);
    assert_eq!(out.iter().map(|released| released.request).collect::<Vec<_>>(), [3]);
}

#[test]
fn the_last_waiting_request_gone_before_the_answer_means_no_capture() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX, 0);
    bursts.arrive(2, NGINX, 10);
    bursts.ended(2, NGINX, 30);
    assert_eq!(bursts.answered(1, NGINX, 200, 40), Answered::Closed(Vec::new()));
}

#[test]
fn requests_wait_at_most_max_wait() {
    let mut bursts = Bursts::new(1_000);
    bursts.arrive(1, NGINX, 0);
    bursts.arrive(2, NGINX, 100);
    bursts.arrive(3, NGINX, 600);
    assert_eq!(bursts.expire(1_099), Vec::new(), "nobody has waited a second yet");
    let out = bursts.expire(1_100);
    assert_eq!(released(&out), [(2, &Release::GoOn)]);
    assert_eq!(out[0].waited_ms, 1_000);
    assert_eq!(bursts.arrive(4, NGINX, 1_200), Arrival::Wait, "a slow leader still leads its burst");
    assert_eq!(released(&bursts.expire(1_600)), [(3, &Release::GoOn)]);
    assert_eq!(bursts.answered(1, NGINX, 200, 1_700), Answered::Capture, "request 4 still waits");
    assert_eq!(released(&bursts.captured(1, NGINX, manifest(), 1_700)), [(4, &Release::Serve(Arc::new(manifest())))]);
}

#[test]
fn events_for_a_request_that_no_longer_leads_change_nothing() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX, 0);
    bursts.arrive(2, NGINX, 10);
    assert_eq!(released(&bursts.ended(1, NGINX, 20)), [(2, &Release::GoOn)]);
    assert_eq!(bursts.arrive(3, NGINX, 30), Arrival::Lead);
    // The first leader's late events are not request 3's.
    assert_eq!(bursts.answered(1, NGINX, 200, 40), Answered::Closed(Vec::new()));
    assert_eq!(bursts.captured(1, NGINX, manifest(), 40), Vec::new());
    assert_eq!(bursts.arrive(4, NGINX, 50), Arrival::Wait, "request 3 still leads");
}

#[test]
fn only_manifest_gets_have_a_key() {
    let accept = b"application/vnd.oci.image.manifest.v1+json";
    let cases: [(&str, &[u8], &str, Option<&str>); 7] = [
        ("a GET by tag", b"GET", "/v2/hub/library/nginx/manifests/1.27", Some("/v2/hub/library/nginx/manifests/1.27")),
        ("a GET by digest", b"GET", "/v2/hub/library/nginx/manifests/sha256:ab", Some("/v2/hub/library/nginx/manifests/sha256:ab")),
        ("the query is not part of the key", b"GET", "/v2/hub/nginx/manifests/1?ns=docker.io", Some("/v2/hub/nginx/manifests/1")),
        ("a HEAD", b"HEAD", "/v2/hub/library/nginx/manifests/1.27", None),
        ("a blob", b"GET", "/v2/hub/library/nginx/blobs/sha256:ab", None),
        ("tags", b"GET", "/v2/hub/library/nginx/tags/list", None),
        ("the version check", b"GET", "/v2/", None),
    ];
    for (name, method, path, want) in cases {
        let want = want.map(|path| format!("{path}\napplication/vnd.oci.image.manifest.v1+json"));
        assert_eq!(key(method, path, accept), want, "{name}");
    }
    assert_ne!(key(b"GET", "/v2/a/manifests/1", b"x"), key(b"GET", "/v2/a/manifests/1", b"y"), "what a client accepts is part of the key");
}
