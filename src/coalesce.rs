//! One upstream fetch per burst: identical manifest GETs in flight at once wait for the first
//! (the leader), and get its answer instead of asking Harbor, which would fetch the manifest from
//! the upstream once per request until the whole image is stored.
//!
//! [`Bursts`] is the waiting list as a state machine without I/O: the driver tells it what
//! happened (a request arrived, the leader's answer began or ended, a waiting request went
//! away, time passed) with the time injected, and it says which waiting requests to release
//! with what. One list serves one Envoy (the dynamic module) or one worker's VM (proxy-wasm).
//!
//! A waiting request is served the leader's manifest only after Harbor has said that its own
//! credentials may read it: the driver sends it on as a HEAD (which Harbor answers without a
//! pull counted upstream) and serves the captured manifest only if that HEAD is answered 200.

use std::sync::Arc;

use crate::host::RequestId;

/// The most of a manifest the leader keeps for the requests waiting on it (distribution's own
/// limit for a manifest is 4 MiB): a longer answer releases them to go on their own.
pub const MAX_CAPTURED_BYTES: usize = 4 << 20;

/// The answer headers a registry client reads of a manifest, which the waiting requests get
/// with its body.
pub const CAPTURED_HEADERS: [&str; 4] = ["content-type", "docker-content-digest", "docker-distribution-api-version", "etag"];

/// The leader's answer, kept for the requests that waited for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captured {
    /// The [`CAPTURED_HEADERS`] it had, in that order.
    pub headers: Vec<(&'static str, String)>,
    /// The manifest's bytes.
    pub body: Vec<u8>,
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
    /// Nothing: it goes to Harbor on its own, as it came (the leader failed or went away, or
    /// the wait was too long).
    GoOn,
}

/// What the leader's answer headers came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Requests wait for this 200: keep its headers and body, then [`Bursts::captured`].
    Capture,
    /// The burst is over: release these (none, when nobody waited).
    Closed(Vec<Released>),
}

/// One request waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    request: RequestId,
    /// When it arrived, in milliseconds.
    since_ms: u64,
}

/// The requests in flight for one key: the leader, and those waiting for it.
#[derive(Debug)]
struct Burst {
    leader: RequestId,
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

/// The waiting list: the bursts in flight, by key. A few at a time (one per manifest being
/// fetched right now), so a list searched in order.
#[derive(Debug)]
pub struct Bursts {
    max_wait_ms: u64,
    open: Vec<(Box<str>, Burst)>,
}

impl Bursts {
    /// An empty list whose requests wait at most `max_wait_ms`.
    pub fn new(max_wait_ms: u64) -> Self {
        Bursts { max_wait_ms, open: Vec::new() }
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
        self.open.iter().find(|(open, _)| **open == *key).map(|(_, burst)| burst)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Burst> {
        self.open.iter_mut().find(|(open, _)| **open == *key).map(|(_, burst)| burst)
    }

    /// Whether requests wait for `leader`'s answer to `key`.
    pub fn has_waiters(&self, leader: RequestId, key: &str) -> bool {
        self.get(key).is_some_and(|burst| burst.leader == leader && !burst.waiters.is_empty())
    }

    /// Request `request` for `key` arrived at `now_ms`.
    pub fn arrive(&mut self, request: RequestId, key: &str, now_ms: u64) -> Arrival {
        match self.get_mut(key) {
            Some(burst) => {
                burst.waiters.push(Waiter { request, since_ms: now_ms });
                Arrival::Wait
            }
            None => {
                self.open.push((key.into(), Burst { leader: request, waiters: Vec::new() }));
                Arrival::Lead
            }
        }
    }

    /// The leader of `key` got its answer headers with `status`: with requests waiting and a 200,
    /// it captures the answer; otherwise the burst is over, and whoever waited goes on its own.
    pub fn answered(&mut self, leader: RequestId, key: &str, status: u32, now_ms: u64) -> Answered {
        match self.get(key) {
            Some(burst) if burst.leader == leader && status == 200 && !burst.waiters.is_empty() => Answered::Capture,
            Some(burst) if burst.leader == leader => Answered::Closed(self.close(key, &Release::GoOn, now_ms)),
            _ => Answered::Closed(Vec::new()),
        }
    }

    /// The leader of `key` has its whole answer: every waiting request gets it.
    pub fn captured(&mut self, leader: RequestId, key: &str, captured: Captured, now_ms: u64) -> Vec<Released> {
        if !self.leads(leader, key) {
            return Vec::new();
        }
        self.close(key, &Release::Serve(Arc::new(captured)), now_ms)
    }

    /// Request `request` of `key` ended (answered, reset, its client gone, or its worker's VM
    /// lost): a leader that had not finished releases its waiting requests to go on their own;
    /// a waiting request leaves the list.
    pub fn ended(&mut self, request: RequestId, key: &str, now_ms: u64) -> Vec<Released> {
        if self.leads(request, key) {
            return self.close(key, &Release::GoOn, now_ms);
        }
        if let Some(burst) = self.get_mut(key) {
            burst.waiters.retain(|waiter| waiter.request != request);
        }
        Vec::new()
    }

    /// Time passed: the requests that waited `max_wait_ms` go on their own. Their leader stays:
    /// an identical request arriving later waits for it again.
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
        released
    }

    fn leads(&self, request: RequestId, key: &str) -> bool {
        self.get(key).is_some_and(|burst| burst.leader == request)
    }

    fn close(&mut self, key: &str, release: &Release, now_ms: u64) -> Vec<Released> {
        let Some(at) = self.open.iter().position(|(open, _)| **open == *key) else {
            return Vec::new();
        };
        let (_, burst) = self.open.swap_remove(at);
        let waited = |waiter: &Waiter| now_ms.saturating_sub(waiter.since_ms);
        burst.waiters.iter().map(|waiter| Released { request: waiter.request, release: release.clone(), waited_ms: waited(waiter) }).collect()
    }
}

/// The key of a request that may be coalesced: a manifest GET of a mapped repository, by the
/// Harbor path it goes to (without query) and the media types it accepts; `None` for any
/// other request.
pub fn key(method: &[u8], harbor_path: &str, accept: &[u8]) -> Option<String> {
    if method != b"GET" {
        return None;
    }
    let path = harbor_path.split_once('?').map_or(harbor_path, |(path, _)| path);
    let (repository_and_kind, reference) = path.strip_prefix("/v2/")?.rsplit_once('/')?;
    let repository = repository_and_kind.strip_suffix("/manifests")?;
    if repository.is_empty() || reference.is_empty() {
        return None;
    }
    let accept = std::str::from_utf8(accept).ok()?;
    Some(format!("{path}\n{accept}"))
}
