//! The driver's side of one upstream fetch per burst: a configuration's waiting list
//! ([`Bursts`]) behind a lock, with the host's clock, and waking the requests it releases.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::coalesce::{Answered, Arrival, Bursts, Captured, Released};
use crate::host::{Host, Level, RequestId};

use super::woken::{Outcome, Woken};

/// A request's part in a burst of identical manifest GETs.
#[derive(Debug)]
pub(super) enum Part {
    /// It went to Harbor for the burst; with `capture`, it keeps its answer for the waiting
    /// requests.
    Leads {
        /// The burst's key.
        key: String,
        /// The answer so far, while requests wait for it.
        capture: Option<Captured>,
    },
    /// It waits for the leader.
    Waits {
        /// The burst's key.
        key: String,
    },
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
    pub(super) fn arrive(&self, host: &impl Host, request: RequestId, key: &str) -> Arrival {
        let mut list = self.list();
        let now = if list.is_open(key) { now_ms(host) } else { 0 };
        list.arrive(request, key, now)
    }

    /// Whether requests wait for `leader` (its answer's status is worth reading).
    pub(super) fn has_waiters(&self, leader: RequestId, key: &str) -> bool {
        self.list().has_waiters(leader, key)
    }

    /// The leader's answer headers arrived with `status` (any, when nobody waits).
    pub(super) fn answered(&self, host: &impl Host, leader: RequestId, key: &str, status: u32) -> Answered {
        let mut list = self.list();
        let now = if list.has_waiters(leader, key) { now_ms(host) } else { 0 };
        list.answered(leader, key, status, now)
    }

    /// The leader has its whole answer.
    pub(super) fn captured(&self, host: &impl Host, leader: RequestId, key: &str, captured: Captured) -> Vec<Released> {
        let now = now_ms(host);
        self.list().captured(leader, key, captured, now)
    }

    /// Request `request` of `key` ended.
    pub(super) fn ended(&self, host: &impl Host, request: RequestId, key: &str) -> Vec<Released> {
        let mut list = self.list();
        let now = if list.has_waiters(request, key) { now_ms(host) } else { 0 };
        list.ended(request, key, now)
    }

    /// The requests that waited too long.
    pub(super) fn expire(&self, host: &impl Host) -> Vec<Released> {
        let mut list = self.list();
        if list.waiting() == 0 {
            return Vec::new();
        }
        list.expire(now_ms(host))
    }
}

/// Wakes each released request with what it is released with; none of the list's locks is
/// held (a host may run the woken request at once). `log` says why, for the debug log.
pub(super) fn wake_released(woken: &Woken, host: &mut impl Host, released: Vec<Released>, why: &str) {
    for Released { request, release, waited_ms } in released {
        host.log(Level::Debug, format_args!("request {request} released after {waited_ms} ms: {why}"));
        woken.wake(host, request, Outcome::Coalesced(release, waited_ms));
    }
}
