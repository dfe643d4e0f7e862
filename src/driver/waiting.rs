//! The driver's side of one upstream fetch per burst: a configuration's waiting list
//! ([`Bursts`]) behind a lock, with the host's clock, the storage checks sent from the plugin's
//! context, and waking the requests it releases.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::coalesce::{Answered, Arrival, Bursts, Captured, Ended, Kind, Probe, Released};
use crate::host::{CallAnswer, CallId, CallRequest, Host, Level, RequestId};
use crate::metrics::{Metric, Metrics};

use super::woken::{Outcome, Woken};

/// How long a storage check may take.
const PROBE_TIMEOUT_MS: u64 = 5000;

/// A request's part in a burst of identical GETs.
#[derive(Debug)]
pub(super) enum Part {
    /// It went to Harbor for the burst (the list knows its burst by its request id).
    Leads {
        /// Manifest or blob.
        kind: Kind,
        /// A manifest: the answer so far, while requests wait for it.
        capture: Option<Captured>,
        /// A blob: how to ask Harbor whether it stored it (its cluster once the answer began).
        probe: Option<Probe>,
    },
    /// It waits for the leader.
    Waits,
}

/// One configuration's waiting list.
#[derive(Debug)]
pub(super) struct Waiting {
    list: Mutex<Bursts>,
}

/// Milliseconds since the epoch, by the host's clock (0 if it has none: waiting requests then
/// wait for their leader, however long).
fn now_ms(host: &impl Host) -> u64 {
    let now = host.now().unwrap_or(Duration::ZERO);
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

impl Waiting {
    pub(super) fn new(max_wait_ms: u64) -> Self {
        Waiting { list: Mutex::new(Bursts::new(max_wait_ms)) }
    }

    fn list(&self) -> MutexGuard<'_, Bursts> {
        // A panic cannot leave the list half-written: the release builds abort on panic.
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Request `request` for `key` arrived; a leader costs no clock read.
    pub(super) fn arrive(&self, host: &impl Host, request: RequestId, key: String, kind: Kind) -> Arrival {
        let mut list = self.list();
        let now = if list.is_open(&key) { now_ms(host) } else { 0 };
        list.arrive(request, key, kind, now)
    }

    /// The leader's answer headers arrived: `status` reads their status, only for a blob or when
    /// requests wait (a manifest nobody waits for closes its burst unread).
    pub(super) fn answered<H: Host>(&self, host: &mut H, leader: RequestId, kind: Kind, status: impl FnOnce(&mut H) -> u32) -> Answered {
        let mut list = self.list();
        let waits = list.has_waiters(leader);
        let status = if waits || kind == Kind::Blob { status(host) } else { 0 };
        let now = if waits { now_ms(host) } else { 0 };
        list.answered(leader, status, now)
    }

    /// Whether `request` leads a burst now (a waiting one may have been handed it).
    pub(super) fn leads(&self, request: RequestId) -> bool {
        self.list().leads(request)
    }

    /// The leader has its whole manifest.
    pub(super) fn captured(&self, host: &impl Host, leader: RequestId, captured: Captured) -> Vec<Released> {
        let now = now_ms(host);
        self.list().captured(leader, captured, now)
    }

    /// Request `request` ended; a blob's leader hands over how to check Harbor's store.
    pub(super) fn ended(&self, host: &impl Host, request: RequestId, probe: Option<Probe>) -> Vec<Released> {
        let mut list = self.list();
        let now = if list.has_waiters(request) { now_ms(host) } else { 0 };
        match list.ended(request, probe, now) {
            Ended::Released(released) => released,
            Ended::Storing => Vec::new(),
        }
    }

    /// The requests that waited too long.
    pub(super) fn expire(&self, host: &impl Host) -> Vec<Released> {
        let mut list = self.list();
        if list.is_empty() {
            return Vec::new();
        }
        list.expire(now_ms(host))
    }

    /// Sends the storage checks due, from the plugin's context.
    pub(super) fn send_probes(&self, host: &mut impl Host) {
        let due = self.list().due_probes();
        for (burst, probe) in due {
            let mut headers = Vec::with_capacity(1);
            if let Some(authorization) = &probe.authorization {
                headers.push(("authorization", authorization.as_str()));
            }
            let call = CallRequest {
                method: "HEAD",
                cluster: &probe.cluster,
                path: &probe.path,
                authority: &probe.authority,
                headers: &headers,
                timeout_ms: PROBE_TIMEOUT_MS,
            };
            let sent = match host.send_call(&call) {
                Ok(id) => Some(id),
                Err(e) => {
                    host.log(Level::Warn, format_args!("cannot ask harbor whether it stored {}: {e}", probe.path));
                    None
                }
            };
            self.list().probing(burst, sent);
        }
    }

    /// Call `call` was answered: `None` when it is no storage check of this list.
    pub(super) fn probed(&self, host: &impl Host, call: CallId, answer: &impl CallAnswer) -> Option<Vec<Released>> {
        let status = answer.status();
        let now = now_ms(host);
        self.list().probed(call, status, now)
    }
}

/// Wakes each released request with what it is released with; none of the list's locks is
/// held (a host may run the woken request at once). `why` says why, for the debug log.
pub(super) fn wake_released(metrics: &Metrics, woken: &Woken, host: &mut impl Host, released: Vec<Released>, why: &str) {
    for Released { request, release, waited_ms } in released {
        host.log(Level::Debug, format_args!("request {request} released after {waited_ms} ms: {why}"));
        metrics.add(host, Metric::CoalesceWaitedMs, waited_ms);
        woken.wake(host, request, Outcome::Coalesced(release));
    }
}
