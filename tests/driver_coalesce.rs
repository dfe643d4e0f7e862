//! One upstream fetch per burst, through the driver and an emulated Envoy: identical manifest
//! GETs wait for the first, get its manifest once Harbor lets their own credentials read it (a
//! HEAD), or go on their own when it fails, ends, or takes too long; identical blob GETs wait
//! until Harbor has stored the blob. For the proxy-wasm host and the dynamic module's. Runs
//! natively and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::host::{Flow, RequestId};

mod common;

use common::emulator::{Answer, Emulator, Kind};

const CONFIG: &str = r#"{"registries": {"docker.io": {"project": "hub"}}, "default_registry": "docker.io",
    "coalesce": {"enabled": true, "max_wait_ms": 30000}}"#;
const BOTH: [Kind; 2] = [Kind::Wasm, Kind::Module];
/// The hosts that read answers' bodies, and so coalesce manifests (the proxy-wasm filter does
/// not: `Host::reads_response_bodies`).
const READS_BODIES: [Kind; 1] = [Kind::Module];
const TAG: &str = "/v2/library/nginx/manifests/1.27?ns=docker.io";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

fn burst(kind: Kind, config: &str, count: usize) -> (Emulator, Vec<(RequestId, Flow)>) {
    let mut mirror = Emulator::configured(kind, config);
    let requests = (0..count).map(|_| mirror.request("GET", TAG, &[("accept", INDEX), ("authorization", "Bearer t")])).collect();
    (mirror, requests)
}

/// The leader's 200, its body in two chunks.
fn leader_answers(mirror: &mut Emulator, leader: RequestId) {
    mirror.respond(leader, 200, &[("content-type", INDEX), ("docker-content-digest", ""), ("content-length", "88")]);
    let (first, second) = MANIFEST.split_at(20);
    mirror.body(leader, first, false);
    mirror.body(leader, second, true);
}

fn method(mirror: &Emulator, id: RequestId) -> String {
    mirror.stream(id).request_text(":method")
}

#[test]
fn identical_requests_wait_and_get_the_first_ones_manifest() {
    for kind in READS_BODIES {
        let (mut mirror, requests) = burst(kind, CONFIG, 3);
        let flows: Vec<Flow> = requests.iter().map(|(_, flow)| *flow).collect();
        assert_eq!(flows, [Flow::Continue, Flow::Pause, Flow::Pause], "{kind:?}: the first goes to harbor, the others wait");
        let (leader, waiting) = (requests[0].0, [requests[1].0, requests[2].0]);
        leader_answers(&mut mirror, leader);
        mirror.deliver();
        for id in waiting {
            assert!(mirror.stream(id).resumed, "{kind:?}: {id} goes on");
            assert_eq!(method(&mirror, id), "HEAD", "{kind:?}: {id} asks harbor with its own credentials, without a pull");
            assert_eq!(mirror.stream(id).request_text("authorization"), "Bearer t");
            assert_eq!(mirror.respond(id, 200, &[("content-length", "88")]), Flow::Pause, "{kind:?}");
            let reply = mirror.stream(id).reply.clone().unwrap_or_else(|| panic!("{kind:?}: {id} is answered here"));
            assert_eq!((reply.status, reply.body.as_bytes()), (200, MANIFEST), "{kind:?}: {id}");
            assert_eq!(reply.headers, [("content-type".to_owned(), INDEX.to_owned())], "{kind:?}: an empty digest header is not relayed");
        }
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.coalesce.waited"), 2, "{kind:?}");
        assert_eq!(mirror.metric("harbor_mirror.coalesce.released"), 2, "{kind:?}");
    }
}

#[test]
fn a_waiting_request_harbor_would_refuse_gets_harbors_refusal() {
    let bearer = r#"Bearer realm="http://harbor/service/token",service="harbor-registry",scope="repository:hub/library/nginx:pull""#;
    for kind in READS_BODIES {
        let (mut mirror, requests) = burst(kind, CONFIG, 2);
        leader_answers(&mut mirror, requests[0].0);
        mirror.deliver();
        let id = requests[1].0;
        assert_eq!(mirror.respond(id, 401, &[("www-authenticate", bearer), ("content-length", "88")]), Flow::Pause);
        let reply = mirror.stream(id).reply.clone().unwrap_or_else(|| panic!("{kind:?}: answered here"));
        assert_eq!(reply.status, 401, "{kind:?}");
        assert!(reply.body.contains("UNAUTHORIZED") && !reply.body.contains("schemaVersion"), "{kind:?}: {}", reply.body);
        let challenge = reply.headers.iter().find(|(name, _)| name == "www-authenticate").map(|(_, value)| value.as_str());
        assert_eq!(
            challenge,
            Some(r#"Bearer realm="http://mirror:5000/service/token?ns=docker.io",service="harbor-registry",scope="repository:hub/library/nginx:pull""#),
            "{kind:?}: the challenge points back at the mirror"
        );
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.coalesce.released"), 0, "{kind:?}");
    }
}

#[test]
fn waiting_requests_go_on_their_own_when_the_first_fails_ends_or_is_too_slow() {
    type Event = fn(&mut Emulator, RequestId);
    let cases: [(&str, Event); 4] = [
        ("the first is answered 500", |mirror, leader| {
            mirror.respond(leader, 500, &[]);
        }),
        ("the first's client goes away", |mirror, leader| mirror.end(leader)),
        ("the first ends while its manifest is kept (a reset)", |mirror, leader| {
            mirror.respond(leader, 200, &[("content-type", INDEX)]);
            mirror.body(leader, b"{", false);
            mirror.end(leader);
        }),
        ("the wait reaches max_wait_ms", |mirror, _| {
            mirror.advance_ms(30_000);
            mirror.tick();
        }),
    ];
    for kind in READS_BODIES {
        for (name, event) in cases {
            let (mut mirror, requests) = burst(kind, CONFIG, 3);
            event(&mut mirror, requests[0].0);
            mirror.deliver();
            for (id, _) in &requests[1..] {
                assert!(mirror.stream(*id).resumed, "{kind:?}: {name}: {id} goes on");
                assert_eq!(method(&mirror, *id), "GET", "{kind:?}: {name}: {id} asks harbor as it came");
                assert_eq!(mirror.stream(*id).reply, None, "{kind:?}: {name}");
            }
        }
    }
}

#[test]
fn a_first_request_refused_for_its_credentials_hands_the_burst_over() {
    for kind in READS_BODIES {
        let mut mirror = Emulator::configured(kind, CONFIG);
        let anonymous = mirror.request("GET", TAG, &[("accept", INDEX)]).0;
        let waiting: Vec<RequestId> = (0..2).map(|_| mirror.request("GET", TAG, &[("accept", INDEX), ("authorization", "Bearer t")]).0).collect();
        mirror.respond(anonymous, 401, &[]);
        mirror.deliver();
        let next = waiting[0];
        assert!(mirror.stream(next).resumed && method(&mirror, next) == "GET", "{kind:?}: the next goes to harbor as it came");
        assert!(!mirror.stream(waiting[1]).resumed, "{kind:?}: the last still waits");
        leader_answers(&mut mirror, next);
        mirror.deliver();
        assert_eq!(method(&mirror, waiting[1]), "HEAD", "{kind:?}: served from the new leader's answer");
        assert_eq!(mirror.respond(waiting[1], 200, &[]), Flow::Pause);
        assert_eq!(mirror.stream(waiting[1]).reply.as_ref().map(|reply| reply.body.as_bytes()), Some(MANIFEST), "{kind:?}");
    }
}

#[test]
fn a_waiting_request_that_goes_away_costs_nothing() {
    for kind in READS_BODIES {
        let (mut mirror, requests) = burst(kind, CONFIG, 3);
        mirror.end(requests[1].0);
        leader_answers(&mut mirror, requests[0].0);
        mirror.deliver();
        assert!(!mirror.stream(requests[1].0).resumed, "{kind:?}: the one gone is not woken");
        assert!(mirror.stream(requests[2].0).resumed, "{kind:?}");
    }
}

#[test]
fn no_burst_no_cost() {
    // The same request alone, with coalescing on and off: the same host calls, from its headers
    // to its end.
    let off = CONFIG.replace(r#""enabled": true"#, r#""enabled": false"#);
    for kind in BOTH {
        let mut calls = Vec::new();
        for config in [CONFIG, off.as_str()] {
            let mut mirror = Emulator::configured(kind, config);
            mirror.clear();
            let (id, flow) = mirror.request("GET", TAG, &[("accept", INDEX)]);
            assert_eq!(flow, Flow::Continue);
            mirror.respond(id, 200, &[("content-type", INDEX)]);
            mirror.body(id, MANIFEST, true);
            mirror.end(id);
            calls.push(mirror.take_calls());
        }
        assert_eq!(calls[0], calls[1], "{kind:?}");
    }
}

#[test]
fn only_identical_manifest_gets_of_a_mapped_registry_wait() {
    // (name, config, the second request) -> whether it waits for the first.
    let off = CONFIG.replace(r#""enabled": true"#, r#""enabled": false"#);
    let rows: &[(&str, &str, &str, &str, &str, bool)] = &[
        ("the same GET", CONFIG, "GET", TAG, INDEX, true),
        ("coalescing off", &off, "GET", TAG, INDEX, false),
        ("a HEAD", CONFIG, "HEAD", TAG, INDEX, false),
        ("another tag", CONFIG, "GET", "/v2/library/nginx/manifests/1.28?ns=docker.io", INDEX, false),
        ("another media type", CONFIG, "GET", TAG, "application/vnd.oci.image.manifest.v1+json", false),
        ("the same name, docker's way (no ns)", CONFIG, "GET", "/v2/library/nginx/manifests/1.27", INDEX, true),
        ("the same blob", CONFIG, "GET", "/v2/library/nginx/blobs/sha256:aa?ns=docker.io", "*/*", true),
    ];
    for kind in BOTH {
        for (name, config, method, path, accept, waits) in rows {
            // The proxy-wasm filter coalesces layers only.
            let waits = *waits && (kind == Kind::Module || *name == "the same blob");
            let mut mirror = Emulator::configured(kind, config);
            if *name == "the same blob" {
                mirror.request("GET", path, &[("accept", accept)]);
            } else {
                mirror.request("GET", TAG, &[("accept", INDEX)]);
            }
            let (_, flow) = mirror.request(method, path, &[("accept", accept)]);
            assert_eq!(flow == Flow::Pause, waits, "{kind:?}: {name}");
        }
    }
}

const LAYER: &str = "/v2/library/nginx/blobs/sha256:aa?ns=docker.io";

#[test]
fn identical_blob_gets_wait_until_harbor_has_stored_the_blob() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, CONFIG);
        let requests: Vec<_> = (0..3).map(|_| mirror.request("GET", LAYER, &[("authorization", "Bearer t")])).collect();
        let flows: Vec<Flow> = requests.iter().map(|(_, flow)| *flow).collect();
        assert_eq!(flows, [Flow::Continue, Flow::Pause, Flow::Pause], "{kind:?}");
        let leader = requests[0].0;
        mirror.respond(leader, 200, &[("content-length", "8388608")]);
        mirror.body(leader, b"layer bytes", false);
        mirror.body(leader, b"", true);
        mirror.end(leader);
        mirror.tick();
        let sent = mirror.world.sent.clone();
        assert_eq!(sent.len(), 1, "{kind:?}: one storage check");
        assert_eq!((sent[0].method.as_str(), sent[0].cluster.as_str(), sent[0].path.as_str()), ("HEAD", "harbor", "/v2/hub/library/nginx/blobs/sha256:aa"));
        assert_eq!(sent[0].headers, [("authorization".to_owned(), "Bearer t".to_owned())], "{kind:?}: harbor checks the leader's credentials");
        mirror.answer(0, &Answer::new(404, ""));
        mirror.deliver();
        assert!(!mirror.stream(requests[1].0).resumed, "{kind:?}: not stored yet");
        mirror.tick();
        mirror.answer(1, &Answer::new(200, ""));
        mirror.deliver();
        for (id, _) in &requests[1..] {
            assert!(mirror.stream(*id).resumed, "{kind:?}: {id} goes to harbor, which serves it from storage");
            assert_eq!(method(&mirror, *id), "GET", "{kind:?}");
        }
        mirror.tick();
        assert_eq!(mirror.metric("harbor_mirror.coalesce.released"), 2, "{kind:?}");
    }
}

#[test]
fn a_blob_leader_that_fails_lets_the_waiting_go_on_at_once() {
    for kind in BOTH {
        let mut mirror = Emulator::configured(kind, CONFIG);
        let requests: Vec<_> = (0..2).map(|_| mirror.request("GET", LAYER, &[])).collect();
        mirror.respond(requests[0].0, 500, &[]);
        mirror.deliver();
        assert!(mirror.stream(requests[1].0).resumed, "{kind:?}");
        mirror.tick();
        assert!(mirror.world.sent.is_empty(), "{kind:?}: nothing to check");
    }
}
