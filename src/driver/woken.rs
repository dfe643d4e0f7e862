//! What a request paused for its project's token takes when it is woken: the token to go on
//! with, or the refusal to answer with. A host may wake it at once (proxy-wasm switches to its
//! context) or later on its worker (the dynamic module), so the outcome waits here.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::coalesce::{Captured, Release};
use crate::host::{Host, RequestId};
use crate::refusal::Refusal;

/// What a woken request does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// After its project's token fetch: go on with this bearer token.
    Resume(String),
    /// After its project's token fetch: answer with this error.
    Refuse(Refusal),
    /// After the identical request it waited for.
    Coalesced(Release),
    /// Sent on as a HEAD with its own credentials: the manifest to serve if Harbor answers 200.
    Serving(Arc<Captured>),
}

/// The outcomes of the requests woken and not yet run: a few at a time, so a list.
#[derive(Debug, Default)]
pub(super) struct Woken {
    outcomes: Mutex<Vec<(RequestId, Outcome)>>,
}

impl Woken {
    fn outcomes(&self) -> MutexGuard<'_, Vec<(RequestId, Outcome)>> {
        // A panic cannot leave the list half-written: the release builds abort on panic.
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what request `request` was woken with.
    pub(super) fn take(&self, request: RequestId) -> Option<Outcome> {
        let mut outcomes = self.outcomes();
        let at = outcomes.iter().position(|(id, _)| *id == request)?;
        Some(outcomes.swap_remove(at).1)
    }

    /// Leaves request `request` `outcome`, for its answer (no wake-up).
    pub(super) fn keep(&self, request: RequestId, outcome: Outcome) {
        self.outcomes().push((request, outcome));
    }

    /// Leaves request `request` `outcome` and wakes it; a request the host cannot reach any
    /// more is forgotten. No lock is held while the host wakes it.
    pub(super) fn wake(&self, host: &mut impl Host, request: RequestId, outcome: Outcome) {
        self.keep(request, outcome);
        if !host.wake(request) {
            self.take(request);
        }
    }

    /// Leaves each of `requests` its outcome and wakes it; a request the host cannot reach any
    /// more is forgotten. No lock is held while the host wakes it: it may run it at once.
    pub(super) fn wake_all(&self, host: &mut impl Host, requests: &[RequestId], outcome: &Outcome) {
        for &request in requests {
            self.wake(host, request, outcome.clone());
        }
    }
}
