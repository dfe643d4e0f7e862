//! The waiting list of identical manifest GETs, driven with injected time: who leads, who
//! waits, and what each waiting request is released with when the leader answers, fails, goes
//! away, or takes too long. Runs natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::sync::Arc;

use harbor_mirror_core::coalesce::{key, Answered, Arrival, Bursts, Captured, Ended, Kind, Probe, Release, Released};

const NGINX: &str = "/v2/hub/library/nginx/manifests/1.27\napplication/vnd.oci.image.index.v1+json";
const ALPINE: &str = "/v2/hub/library/alpine/manifests/3.19\napplication/vnd.oci.image.index.v1+json";
const MAX_WAIT_MS: u64 = 30_000;
const MANIFEST: Kind = Kind::Manifest;
const LAYER: &str = "/v2/hub/library/nginx/blobs/sha256:aa";

/// Who an answer that closes its burst releases.
fn closed(answered: Answered) -> Vec<Released> {
    match answered {
        Answered::Closed(released) => released,
        other => panic!("the burst goes on: {other:?}"),
    }
}

/// Who a leader's end releases at once.
fn released_now(ended: Ended) -> Vec<Released> {
    match ended {
        Ended::Released(released) => released,
        Ended::Storing => panic!("the burst waits for harbor's store"),
    }
}

/// A manifest request ends; who is released.
fn ended(bursts: &mut Bursts, request: u32, now_ms: u64) -> Vec<Released> {
    released_now(bursts.ended(request, None, now_ms))
}

fn probe() -> Probe {
    Probe { cluster: "harbor".into(), path: LAYER.into(), authority: "mirror".into(), authorization: Some("Bearer t".into()) }
}

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
    assert_eq!(bursts.arrive(1, NGINX.into(), MANIFEST, 0), Arrival::Lead);
    assert_eq!(bursts.arrive(2, NGINX.into(), MANIFEST, 5), Arrival::Wait);
    assert_eq!(bursts.arrive(3, NGINX.into(), MANIFEST, 9), Arrival::Wait);
    assert_eq!(bursts.arrive(4, ALPINE.into(), MANIFEST, 9), Arrival::Lead, "another key leads its own burst");
    assert_eq!(bursts.waiting(), 2);
}

#[test]
fn waiting_requests_get_the_leaders_manifest() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    bursts.arrive(2, NGINX.into(), MANIFEST, 10);
    bursts.arrive(3, NGINX.into(), MANIFEST, 20);
    assert_eq!(bursts.answered(1, 200, 100), Answered::Capture);
    let out = bursts.captured(1, manifest(), 150);
    let served = Release::Serve(Arc::new(manifest()));
    assert_eq!(released(&out), [(2, &served), (3, &served)]);
    assert_eq!(out.iter().map(|released| released.waited_ms).collect::<Vec<_>>(), [140, 130]);
    assert_eq!(bursts.arrive(4, NGINX.into(), MANIFEST, 200), Arrival::Lead, "the burst is over: the next request leads a new one");
}

#[test]
fn an_answer_nobody_waits_for_is_not_captured() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    assert_eq!(bursts.answered(1, 200, 50), Answered::Closed(Vec::new()));
    assert_eq!(bursts.arrive(2, NGINX.into(), MANIFEST, 60), Arrival::Lead);
}

#[test]
fn what_releases_the_waiting_requests_to_go_on_their_own() {
    // (name, what happens to the leader) -> requests 2 and 3 go on their own.
    type Event = fn(&mut Bursts) -> Vec<Released>;
    let cases: [(&str, Event); 4] = [
        ("the leader is answered 500", |bursts| closed(bursts.answered(1, 500, 100))),
        ("the leader is answered 404", |bursts| closed(bursts.answered(1, 404, 100))),
        ("the leader's client disconnects before an answer", |bursts| ended(bursts, 1, 100)),
        ("the leader ends while its answer is captured (a reset, a lost VM)", |bursts| {
            assert_eq!(bursts.answered(1, 200, 90), Answered::Capture);
            ended(bursts, 1, 100)
        }),
    ];
    for (name, event) in cases {
        let mut bursts = Bursts::new(MAX_WAIT_MS);
        bursts.arrive(1, NGINX.into(), MANIFEST, 0);
        bursts.arrive(2, NGINX.into(), MANIFEST, 10);
        bursts.arrive(3, NGINX.into(), MANIFEST, 20);
        let out = event(&mut bursts);
        assert_eq!(released(&out), [(2, &Release::GoOn), (3, &Release::GoOn)], "{name}");
        assert_eq!(bursts.waiting(), 0, "{name}");
        assert_eq!(bursts.arrive(4, NGINX.into(), MANIFEST, 200), Arrival::Lead, "{name}: the next request leads");
    }
}

#[test]
fn a_leader_refused_for_its_own_credentials_hands_the_burst_to_the_next() {
    // containerd sends a GET by digest without its token first: Harbor's 401 is that request's,
    // not the burst's.
    for status in [401, 403] {
        let mut bursts = Bursts::new(MAX_WAIT_MS);
        bursts.arrive(1, NGINX.into(), MANIFEST, 0);
        bursts.arrive(2, NGINX.into(), MANIFEST, 10);
        bursts.arrive(3, NGINX.into(), MANIFEST, 20);
        let out = closed(bursts.answered(1, status, 100));
        assert_eq!(released(&out), [(2, &Release::Lead)], "{status}: the one that waited longest goes in its place");
        assert!(bursts.leads(2) && !bursts.leads(1), "{status}");
        assert_eq!(bursts.arrive(4, NGINX.into(), MANIFEST, 150), Arrival::Wait, "{status}: the burst goes on");
        assert_eq!(bursts.answered(2, 200, 200), Answered::Capture, "{status}");
        let out = bursts.captured(2, manifest(), 300);
        assert_eq!(out.iter().map(|released| released.request).collect::<Vec<_>>(), [3, 4], "{status}");
    }
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    assert_eq!(bursts.answered(1, 401, 100), Answered::Closed(Vec::new()), "nobody waits: nothing to hand over");
    assert!(!bursts.leads(1));
}

#[test]
fn a_waiting_request_that_goes_away_costs_nothing() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    bursts.arrive(2, NGINX.into(), MANIFEST, 10);
    bursts.arrive(3, NGINX.into(), MANIFEST, 20);
    assert_eq!(ended(&mut bursts, 2, 30), Vec::new());
    assert_eq!(bursts.answered(1, 200, 40), Answered::Capture);
    let out = bursts.captured(1, manifest(), 50);
    assert_eq!(out.iter().map(|released| released.request).collect::<Vec<_>>(), [3]);
}

#[test]
fn the_last_waiting_request_gone_before_the_answer_means_no_capture() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    bursts.arrive(2, NGINX.into(), MANIFEST, 10);
    ended(&mut bursts, 2, 30);
    assert_eq!(bursts.answered(1, 200, 40), Answered::Closed(Vec::new()));
}

#[test]
fn requests_wait_at_most_max_wait() {
    let mut bursts = Bursts::new(1_000);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    bursts.arrive(2, NGINX.into(), MANIFEST, 100);
    bursts.arrive(3, NGINX.into(), MANIFEST, 600);
    assert_eq!(bursts.expire(1_099), Vec::new(), "nobody has waited a second yet");
    let out = bursts.expire(1_100);
    assert_eq!(released(&out), [(2, &Release::GoOn)]);
    assert_eq!(out[0].waited_ms, 1_000);
    assert_eq!(bursts.arrive(4, NGINX.into(), MANIFEST, 1_200), Arrival::Wait, "a slow leader still leads its burst");
    assert_eq!(released(&bursts.expire(1_600)), [(3, &Release::GoOn)]);
    assert_eq!(bursts.answered(1, 200, 1_700), Answered::Capture, "request 4 still waits");
    assert_eq!(released(&bursts.captured(1, manifest(), 1_700)), [(4, &Release::Serve(Arc::new(manifest())))]);
}

#[test]
fn events_for_a_request_that_no_longer_leads_change_nothing() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, NGINX.into(), MANIFEST, 0);
    bursts.arrive(2, NGINX.into(), MANIFEST, 10);
    assert_eq!(released(&ended(&mut bursts, 1, 20)), [(2, &Release::GoOn)]);
    assert_eq!(bursts.arrive(3, NGINX.into(), MANIFEST, 30), Arrival::Lead);
    // The first leader's late events are not request 3's.
    assert_eq!(bursts.answered(1, 200, 40), Answered::Closed(Vec::new()));
    assert_eq!(bursts.captured(1, manifest(), 40), Vec::new());
    assert_eq!(bursts.arrive(4, NGINX.into(), MANIFEST, 50), Arrival::Wait, "request 3 still leads");
}

#[test]
fn only_manifest_gets_have_a_key() {
    let accept = b"application/vnd.oci.image.manifest.v1+json";
    let with_accept = |path: &str| format!("{path}\napplication/vnd.oci.image.manifest.v1+json");
    type Row = (&'static str, &'static [u8], &'static str, Option<(String, Kind)>);
    let cases: [Row; 9] = [
        ("a GET by tag", b"GET", "/v2/hub/library/nginx/manifests/1.27", Some((with_accept("/v2/hub/library/nginx/manifests/1.27"), MANIFEST))),
        ("a GET by digest", b"GET", "/v2/hub/library/nginx/manifests/sha256:ab", Some((with_accept("/v2/hub/library/nginx/manifests/sha256:ab"), MANIFEST))),
        ("the query is not part of the key", b"GET", "/v2/hub/nginx/manifests/1?ns=docker.io", Some((with_accept("/v2/hub/nginx/manifests/1"), MANIFEST))),
        ("a blob, whatever it accepts", b"GET", "/v2/hub/library/nginx/blobs/sha256:ab?ns=docker.io", Some(("/v2/hub/library/nginx/blobs/sha256:ab".into(), Kind::Blob))),
        ("a HEAD", b"HEAD", "/v2/hub/library/nginx/manifests/1.27", None),
        ("a blob HEAD", b"HEAD", "/v2/hub/library/nginx/blobs/sha256:ab", None),
        ("an upload", b"GET", "/v2/hub/library/nginx/blobs/uploads/1", None),
        ("tags", b"GET", "/v2/hub/library/nginx/tags/list", None),
        ("the version check", b"GET", "/v2/", None),
    ];
    for (name, method, path, want) in cases {
        assert_eq!(key(method, path, accept, true), want, "{name}");
    }
    assert_ne!(key(b"GET", "/v2/a/manifests/1", b"x", true), key(b"GET", "/v2/a/manifests/1", b"y", true), "what a client accepts is part of the key");
    assert_eq!(key(b"GET", "/v2/a/manifests/1", b"x", false), None, "a host that reads no bodies coalesces no manifests");
    assert!(key(b"GET", "/v2/a/blobs/sha256:aa", b"x", false).is_some(), "but layers");
}

#[test]
fn waiting_blob_requests_are_released_once_harbor_has_stored_the_blob() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    assert_eq!(bursts.arrive(1, LAYER.into(), Kind::Blob, 0), Arrival::Lead);
    assert_eq!(bursts.answered(1, 200, 10), Answered::Streams, "nobody waits yet: the burst stays open while it streams");
    assert_eq!(bursts.arrive(2, LAYER.into(), Kind::Blob, 20), Arrival::Wait);
    assert_eq!(bursts.arrive(3, LAYER.into(), Kind::Blob, 30), Arrival::Wait);
    assert_eq!(bursts.due_probes(), Vec::new(), "no check while the leader streams");
    assert_eq!(bursts.ended(1, Some(probe()), 900), Ended::Storing);
    assert_eq!(bursts.arrive(4, LAYER.into(), Kind::Blob, 950), Arrival::Wait, "a request arriving while harbor stores waits too");
    assert_eq!(bursts.due_probes(), [(1, probe())], "by the burst's leader");
    bursts.probing(1, Some(7));
    assert_eq!(bursts.due_probes(), Vec::new(), "one check in flight at a time");
    assert_eq!(bursts.probed(7, Some(404), 1_000), Some(Vec::new()), "not stored yet");
    assert_eq!(bursts.due_probes().len(), 1, "asked again at the next tick");
    bursts.probing(1, Some(8));
    assert_eq!(bursts.probed(99, Some(200), 1_100), None, "another call is none of the list's");
    let out = bursts.probed(8, Some(200), 1_500).unwrap_or_default();
    assert_eq!(released(&out), [(2, &Release::Stored), (3, &Release::Stored), (4, &Release::Stored)]);
    assert_eq!(bursts.arrive(5, LAYER.into(), Kind::Blob, 1_600), Arrival::Lead, "the burst is over");
}

#[test]
fn waiting_blob_requests_go_on_their_own_when_the_leader_fails_or_harbor_takes_too_long() {
    type Event = fn(&mut Bursts) -> Vec<Released>;
    let cases: [(&str, Event); 4] = [
        ("the leader is answered 404", |bursts| closed(bursts.answered(1, 404, 100))),
        ("the leader ends before its answer", |bursts| released_now(bursts.ended(1, Some(probe()), 100))),
        ("the leader's cluster could not be read", |bursts| {
            bursts.answered(1, 200, 50);
            released_now(bursts.ended(1, None, 100))
        }),
        ("harbor has not stored it within max_wait_ms", |bursts| {
            bursts.answered(1, 200, 50);
            assert_eq!(bursts.ended(1, Some(probe()), 100), Ended::Storing);
            bursts.expire(30_030)
        }),
    ];
    for (name, event) in cases {
        let mut bursts = Bursts::new(MAX_WAIT_MS);
        bursts.arrive(1, LAYER.into(), Kind::Blob, 0);
        bursts.arrive(2, LAYER.into(), Kind::Blob, 10);
        bursts.arrive(3, LAYER.into(), Kind::Blob, 30);
        let out = event(&mut bursts);
        assert_eq!(released(&out), [(2, &Release::GoOn), (3, &Release::GoOn)], "{name}");
        assert_eq!(bursts.due_probes(), Vec::new(), "{name}: nothing left to check");
        assert_eq!(bursts.arrive(4, LAYER.into(), Kind::Blob, 40_000), Arrival::Lead, "{name}: the next request leads");
    }
}

#[test]
fn a_blob_nobody_waited_for_closes_its_burst_at_its_end() {
    let mut bursts = Bursts::new(MAX_WAIT_MS);
    bursts.arrive(1, LAYER.into(), Kind::Blob, 0);
    bursts.answered(1, 200, 10);
    assert_eq!(bursts.ended(1, Some(probe()), 900), Ended::Released(Vec::new()));
    assert_eq!(bursts.due_probes(), Vec::new());
    assert_eq!(bursts.arrive(2, LAYER.into(), Kind::Blob, 1_000), Arrival::Lead);
}
