//! One upstream fetch per burst: identical GETs in flight at once wait for the first (the
//! leader) instead of each making Harbor fetch from the upstream.
//!
//! - Manifests: Harbor fetches an uncached manifest from the upstream once per request until the
//!   whole image is stored. The waiting requests get the leader's answer.
//! - Blobs (layers): Harbor streams an uncached blob from the upstream and downloads it again to
//!   store it, per request. The waiting requests wait until Harbor has stored it (a blob HEAD,
//!   answered from Harbor's storage only, turns 200), then Harbor serves them from storage.
//!
//! [`Bursts`] is the waiting list as a state machine without I/O: the driver tells it what
//! happened (a request arrived, the leader's answer began or ended, a waiting request went
//! away, a storage check was answered, time passed) with the time injected, and it says which
//! waiting requests to release with what. One list serves one Envoy (the dynamic module) or one
//! worker's VM (proxy-wasm).
//!
//! A waiting request is served the leader's manifest only after Harbor has said that its own
//! credentials may read it: the driver sends it on as a HEAD (which Harbor answers without a
//! pull counted upstream) and serves the captured manifest only if that HEAD is answered 200. A
//! released blob request goes to Harbor with its own credentials.

use std::sync::Arc;

use crate::host::{CallId, RequestId};

/// The most of a manifest the leader keeps for the requests waiting on it (distribution's own
/// limit for a manifest is 4 MiB): a longer answer releases them to go on their own.
pub const MAX_CAPTURED_BYTES: usize = 4 << 20;

/// The answer headers a registry client reads of a manifest, which the waiting requests get
/// with its body.
pub const CAPTURED_HEADERS: [&str; 4] = ["content-type", "docker-content-digest", "docker-distribution-api-version", "etag"];

/// What a burst is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A manifest GET: the waiting requests get the leader's answer.
    Manifest,
    /// A blob GET: the waiting requests wait until Harbor has stored the blob.
    Blob,
}

/// The leader's answer, kept for the requests that waited for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captured {
    /// The [`CAPTURED_HEADERS`] it had, in that order.
    pub headers: Vec<(&'static str, String)>,
    /// The manifest's bytes.
    pub body: Vec<u8>,
}

/// How to ask Harbor whether it has stored a blob: a HEAD of `path` through `cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The Envoy cluster the leader went through.
    pub cluster: String,
    /// The blob's Harbor path.
    pub path: String,
    /// The `:authority` of the leader.
    pub authority: String,
    /// The leader's `authorization` (Harbor checks it as for the GET), if it had one.
    pub authorization: Option<String>,
}

/// What became of a request that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// No identical request is in flight: it goes to Harbor, and leads the burst.
    Lead,
    /// An identical request is in flight: it waits for it.
    Wait,
}

/// What a waiting request is released with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The leader's manifest, to serve if Harbor lets the request's own credentials read it.
    Serve(Arc<Captured>),
    /// Harbor has stored the blob: the request goes to Harbor, which serves it from storage.
    Stored,
    /// The first request was refused for its own credentials (401, 403): this one goes to
    /// Harbor in its place and leads the burst, whose other requests keep waiting.
    Lead,
    /// Nothing: it goes to Harbor on its own, as it came (the leader failed or went away, or
    /// the wait was too long).
    GoOn,
}

/// What the leader's answer headers came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Requests wait for this manifest: keep its headers and body, then [`Bursts::captured`].
    Capture,
    /// A blob's 200: it streams on, and the burst stays open until it ends
    /// ([`Bursts::ended`]), with this much to ask Harbor about its storage then.
    Streams,
    /// The burst is over: release these (none, when nobody waited).
    Closed(Vec<Released>),
}

/// What a blob leader's end came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Released now.
    Released(Vec<Released>),
    /// Requests wait until Harbor has stored the blob: check, at the next [`Bursts::due_probes`].
    Storing,
}

/// One request waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    request: RequestId,
    /// When it arrived, in milliseconds.
    since_ms: u64,
}

/// Where a burst is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// The leader is in flight; for a blob, `answered_ok` once its answer began with a 200.
    Leading { answered_ok: bool },
    /// A blob's leader finished; Harbor is storing it: `probe` asks, `call` is the check in
    /// flight.
    Storing { probe: Probe, call: Option<CallId> },
}

/// The requests in flight for one key: the leader, and those waiting for it.
#[derive(Debug)]
struct Burst {
    kind: Kind,
    leader: RequestId,
    stage: Stage,
    waiters: Vec<Waiter>,
}

/// A released waiting request, with how long it waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The request.
    pub request: RequestId,
    /// What it is released with.
    pub release: Release,
    /// How long it waited, in milliseconds.
    pub waited_ms: u64,
}

/// The waiting list: the bursts in flight, by key, each known after its arrival by its
/// leader's request id. A few at a time (one per manifest or blob being fetched right now), so a
/// list searched in order.
#[derive(Debug)]
pub struct Bursts {
    max_wait_ms: u64,
    open: Vec<(String, Burst)>,
}

impl Bursts {
    /// An empty list whose requests wait at most `max_wait_ms`.
    pub fn new(max_wait_ms: u64) -> Self {
        Bursts { max_wait_ms, open: Vec::new() }
    }

    /// Whether no burst is in flight (nothing to expire, nothing to check).
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// How many requests wait, over every burst.
    pub fn waiting(&self) -> usize {
        self.open.iter().map(|(_, burst)| burst.waiters.len()).sum()
    }

    /// Whether a request for `key` is in flight (one arriving now would wait).
    pub fn is_open(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn get(&self, key: &str) -> Option<&Burst> {
        self.open.iter().find(|(open, _)| open == key).map(|(_, burst)| burst)
    }

    /// The burst `leader` leads.
    fn led_by(&mut self, leader: RequestId) -> Option<&mut Burst> {
        self.open.iter_mut().find(|(_, burst)| burst.leader == leader).map(|(_, burst)| burst)
    }

    /// Whether `request` leads a burst (one that waited may have been handed it).
    pub fn leads(&self, request: RequestId) -> bool {
        self.open.iter().any(|(_, burst)| burst.leader == request)
    }

    /// Whether requests wait for `leader`'s answer.
    pub fn has_waiters(&self, leader: RequestId) -> bool {
        self.open.iter().any(|(_, burst)| burst.leader == leader && !burst.waiters.is_empty())
    }

    /// Request `request` for `key` (of `kind`) arrived at `now_ms`: its key is kept when it leads.
    pub fn arrive(&mut self, request: RequestId, key: String, kind: Kind, now_ms: u64) -> Arrival {
        match self.open.iter_mut().find(|(open, _)| *open == key) {
            Some((_, burst)) => {
                burst.waiters.push(Waiter { request, since_ms: now_ms });
                Arrival::Wait
            }
            None => {
                let stage = Stage::Leading { answered_ok: false };
                self.open.push((key, Burst { kind, leader: request, stage, waiters: Vec::new() }));
                Arrival::Lead
            }
        }
    }

    /// The leader got its answer headers with `status`. A manifest's 200 with requests waiting is
    /// captured, and its 401 or 403 (its own credentials refused) hands the burst to the request
    /// that waited longest; a blob's 200 streams on with the burst open; otherwise the burst is
    /// over, and whoever waited goes on its own.
    pub fn answered(&mut self, leader: RequestId, status: u32, now_ms: u64) -> Answered {
        let Some(burst) = self.led_by(leader) else {
            return Answered::Closed(Vec::new());
        };
        match (burst.kind, status) {
            (Kind::Manifest, 200) if !burst.waiters.is_empty() => Answered::Capture,
            (Kind::Manifest, 401 | 403) if !burst.waiters.is_empty() => {
                let next = burst.waiters.remove(0);
                burst.leader = next.request;
                let waited_ms = now_ms.saturating_sub(next.since_ms);
                Answered::Closed(vec![Released { request: next.request, release: Release::Lead, waited_ms }])
            }
            (Kind::Blob, 200) => {
                burst.stage = Stage::Leading { answered_ok: true };
                Answered::Streams
            }
            _ => Answered::Closed(self.close(leader, &Release::GoOn, now_ms)),
        }
    }

    /// The leader has its whole manifest: every waiting request gets it.
    pub fn captured(&mut self, leader: RequestId, captured: Captured, now_ms: u64) -> Vec<Released> {
        self.close(leader, &Release::Serve(Arc::new(captured)), now_ms)
    }

    /// Request `request` of `key` ended (answered, reset, its client gone, or its worker's VM
    /// lost). A waiting request leaves the list. A manifest's leader that had not handed its
    /// answer over releases its waiting requests to go on their own. A blob's leader whose 200
    /// was streamed to its end leaves the burst open for Harbor's store, if requests wait: they
    /// wait for `probe` to see it stored ([`Ended::Storing`]).
    pub fn ended(&mut self, request: RequestId, probe: Option<Probe>, now_ms: u64) -> Ended {
        let Some(burst) = self.led_by(request) else {
            for (_, burst) in &mut self.open {
                burst.waiters.retain(|waiter| waiter.request != request);
            }
            return Ended::Released(Vec::new());
        };
        match (burst.kind, &burst.stage, probe) {
            (Kind::Blob, Stage::Leading { answered_ok: true }, Some(probe)) if !burst.waiters.is_empty() => {
                burst.stage = Stage::Storing { probe, call: None };
                Ended::Storing
            }
            _ => Ended::Released(self.close(request, &Release::GoOn, now_ms)),
        }
    }

    /// The storage checks to send now: one per burst whose blob is being stored and that has
    /// none in flight, by the burst's leader. Say which call each became with
    /// [`Bursts::probing`].
    pub fn due_probes(&self) -> Vec<(RequestId, Probe)> {
        let due = |(_, burst): &(String, Burst)| match &burst.stage {
            Stage::Storing { probe, call: None } => Some((burst.leader, probe.clone())),
            _ => None,
        };
        self.open.iter().filter_map(due).collect()
    }

    /// The storage check of the burst `leader` led is call `call` (`None`: it could not be sent;
    /// it is tried again at the next [`Bursts::due_probes`]).
    pub fn probing(&mut self, leader: RequestId, call: Option<CallId>) {
        if let Some(Burst { stage: Stage::Storing { call: slot, .. }, .. }) = self.led_by(leader) {
            *slot = call;
        }
    }

    /// Call `call` was answered with `status` (`None`: no answer). `None` when it is no storage
    /// check of this list; else who is released: everyone waiting on a 200 (Harbor has the
    /// blob), nobody otherwise (the next check asks again).
    pub fn probed(&mut self, call: CallId, status: Option<u32>, now_ms: u64) -> Option<Vec<Released>> {
        let at = self.open.iter().position(|(_, burst)| matches!(burst.stage, Stage::Storing { call: Some(sent), .. } if sent == call))?;
        if status == Some(200) {
            let leader = self.open[at].1.leader;
            return Some(self.close(leader, &Release::Stored, now_ms));
        }
        if let Stage::Storing { call, .. } = &mut self.open[at].1.stage {
            *call = None;
        }
        Some(Vec::new())
    }

    /// Time passed: the requests that waited `max_wait_ms` go on their own. Their leader stays:
    /// an identical request arriving later waits for it again. A storing burst nobody waits for
    /// any more is over.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Released> {
        let max_wait_ms = self.max_wait_ms;
        let mut released = Vec::new();
        for (_, burst) in &mut self.open {
            burst.waiters.retain(|waiter| {
                let waited_ms = now_ms.saturating_sub(waiter.since_ms);
                let keep = waited_ms < max_wait_ms;
                if !keep {
                    released.push(Released { request: waiter.request, release: Release::GoOn, waited_ms });
                }
                keep
            });
        }
        self.open.retain(|(_, burst)| !(matches!(burst.stage, Stage::Storing { .. }) && burst.waiters.is_empty()));
        released
    }

    /// Ends the burst `leader` led, releasing its waiting requests with `release`.
    fn close(&mut self, leader: RequestId, release: &Release, now_ms: u64) -> Vec<Released> {
        let Some(at) = self.open.iter().position(|(_, burst)| burst.leader == leader) else {
            return Vec::new();
        };
        let (_, burst) = self.open.swap_remove(at);
        let waited = |waiter: &Waiter| now_ms.saturating_sub(waiter.since_ms);
        burst.waiters.iter().map(|waiter| Released { request: waiter.request, release: release.clone(), waited_ms: waited(waiter) }).collect()
    }
}

/// The key and kind of a request that may be coalesced: a GET of a manifest (by the Harbor path
/// it goes to, without query, and the media types it accepts; only with `manifests`) or of a
/// blob (by its path); `None` for any other request.
pub fn key(method: &[u8], harbor_path: &str, accept: &[u8], manifests: bool) -> Option<(String, Kind)> {
    if method != b"GET" {
        return None;
    }
    let path = harbor_path.split_once('?').map_or(harbor_path, |(path, _)| path);
    let (repository_and_kind, reference) = path.strip_prefix("/v2/")?.rsplit_once('/')?;
    let (repository, kind) = match repository_and_kind.rsplit_once('/')? {
        (repository, "manifests") if manifests => (repository, Kind::Manifest),
        (repository, "blobs") if reference.contains(':') => (repository, Kind::Blob),
        _ => return None,
    };
    if repository.is_empty() || reference.is_empty() {
        return None;
    }
    // Built by hand: this runs for every manifest GET, and `format!` costs more than the copy.
    let mut key = String::with_capacity(path.len() + 1 + accept.len());
    key.push_str(path);
    if kind == Kind::Manifest {
        key.push('\n');
        key.push_str(std::str::from_utf8(accept).ok()?);
    }
    Some((key, kind))
}
