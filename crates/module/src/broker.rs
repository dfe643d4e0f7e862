//! Managed mode's host side in the module: one token cache and one fetch machine for the whole
//! Envoy (all workers), and the token calls, which Envoy's main thread sends as callouts of the
//! filter configuration.
//!
//! A worker's request that finds no usable token asks the core's machine ([`Fetches`]); when it
//! must dispatch, it queues the call and wakes the main thread (the configuration's scheduler),
//! which sends it. Harbor's answer arrives on the main thread; the machine's actions store the
//! token and hand each waiting request its outcome, which the request's own scheduler delivers
//! on its worker. A request that ends meanwhile simply leaves the machine: calls belong to the
//! configuration ([`Fetches::with_calls_of_the_configuration`]), so nobody is orphaned.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use envoy_dynamic_module::log::Level;
use envoy_dynamic_module::{CalloutId, CalloutOutcome, CalloutRequest, CalloutResponse, ConfigContext, ConfigScheduler, FilterScheduler};

use harbor_mirror_core::config::Managed;
use harbor_mirror_core::managed::cache::CacheEntry;
use harbor_mirror_core::managed::fetch::{Action, Call, CallId, Fetches, RequestId, Step};
use harbor_mirror_core::oci;
use harbor_mirror_core::refusal::Refusal;

use crate::metrics::{increment_here, Metrics};
use crate::{log, now_secs, DISPATCH};

/// What a waiting request gets when its project's fetch ends.
#[derive(Debug)]
pub enum Outcome {
    /// Forward with this bearer token.
    Resume(String),
    /// Answer with this error.
    Refuse(Refusal),
}

/// Where a waiting request's outcome is left for it.
pub type Slot = Arc<Mutex<Option<Outcome>>>;

/// A request paused for a token: how to wake it, and where its outcome goes.
struct Waiter {
    scheduler: FilterScheduler,
    slot: Slot,
}

#[derive(Default)]
struct State {
    fetches: Fetches,
    /// The token cache: one encoded [`CacheEntry`] per Harbor project.
    cache: HashMap<String, String>,
    waiters: HashMap<RequestId, Waiter>,
    /// Calls the main thread is to send.
    queued: Vec<Call>,
}

/// One configuration's managed mode.
pub struct Broker {
    managed: Managed,
    state: Mutex<State>,
}

/// What a request that needs a token does now.
pub enum Ready {
    /// Forward it with this token.
    Forward(String),
    /// Answer it with this error.
    Refuse(Refusal),
    /// Paused: its outcome is left in this slot, and its scheduler wakes it.
    Wait(Slot),
}

impl Broker {
    pub fn new(managed: Managed) -> Broker {
        let state = State { fetches: Fetches::with_calls_of_the_configuration(), ..State::default() };
        Broker { managed, state: Mutex::new(state) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic cannot leave the state half-written: the release build aborts on panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Request `request` (a worker's stream) needs the robot's token for `repository`. When it
    /// must wait, `scheduler` gives the request's scheduler (called only then), and `main` is
    /// woken to send a call.
    pub fn on_request(
        &self,
        request: RequestId,
        repository: &str,
        scheduler: impl FnOnce() -> Option<FilterScheduler>,
        main: Option<&ConfigScheduler>,
    ) -> Ready {
        let project = oci::first_component(repository).0;
        let now = now_secs();
        let mut state = self.state();
        let State { fetches, cache, waiters, queued } = &mut *state;
        let cached = cache.get(project).and_then(|value| CacheEntry::decode(value.as_bytes()));
        let step = fetches.on_request(request, repository, cached, now);
        let dispatch = match step {
            Step::Forward { token } => return Ready::Forward(token),
            Step::Refuse(refusal) => return Ready::Refuse(refusal),
            Step::Wait => None,
            Step::Dispatch(call) => Some(call),
        };
        let (Some(scheduler), Some(main)) = (scheduler(), main) else {
            fetches.on_request_end(request);
            let refusal = Refusal::new(503, oci::ErrorCode::Unavailable, "the module cannot pause requests here (no scheduler)".to_owned());
            if let Some(call) = &dispatch {
                // Nobody else can be waiting for a fetch that was not dispatched yet.
                let _ = fetches.dispatched(&call.project, Err(refusal.message.clone()));
            }
            return Ready::Refuse(refusal);
        };
        let slot = Slot::default();
        waiters.insert(request, Waiter { scheduler, slot: slot.clone() });
        if let Some(call) = dispatch {
            queued.push(call);
            main.commit(DISPATCH);
        }
        Ready::Wait(slot)
    }

    /// Request `request` ended: it waits no more.
    pub fn on_request_end(&self, request: RequestId) {
        let mut state = self.state();
        state.fetches.on_request_end(request);
        state.waiters.remove(&request);
    }

    /// Drops `project`'s cached token (Harbor refused it), so that the next request fetches anew.
    pub fn forget(&self, project: &str) {
        self.state().cache.remove(project);
    }

    /// Main thread: sends the queued calls.
    pub fn dispatch_queued(&self, ctx: &mut ConfigContext<'_>, metrics: &Metrics) {
        let queued = std::mem::take(&mut self.state().queued);
        self.execute(ctx, metrics, queued.into_iter().map(Action::Dispatch).collect());
    }

    /// Main thread: Harbor answered callout `callout` (if it is one of this broker's).
    pub fn on_answer(&self, ctx: &mut ConfigContext<'_>, metrics: &Metrics, callout: CalloutId, response: &CalloutResponse<'_>) {
        let status = match response.outcome() {
            CalloutOutcome::Success => response.status().map(u32::from),
            _ => None,
        };
        let body = response.body();
        let actions = self.state().fetches.on_answer(&self.managed, callout.0, status, &body, now_secs());
        self.execute(ctx, metrics, actions);
    }

    /// Executes the machine's actions and those they lead to. The state's lock is not held
    /// while Envoy is called.
    fn execute(&self, ctx: &mut ConfigContext<'_>, metrics: &Metrics, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Dispatch(call) => {
                    let result = self.send(ctx, metrics, &call);
                    queue.extend(self.state().fetches.dispatched(&call.project, result));
                }
                Action::Store { project, value } => {
                    let mut state = self.state();
                    let Some(entry) = CacheEntry::decode(value.as_bytes()) else { continue };
                    let old = state.cache.get(&project).and_then(|old| CacheEntry::decode(old.as_bytes()));
                    if entry.replaces(old.as_ref()) {
                        state.cache.insert(project, value);
                    }
                }
                Action::Resume { requests, token } => self.deliver(&requests, || Outcome::Resume(token.clone())),
                Action::Refuse { requests, refusal } => self.deliver(&requests, || Outcome::Refuse(refusal.clone())),
                Action::Failed { project, message } => {
                    increment_here(ctx, metrics.token_fetch_failures);
                    log(Level::Warn, &format!("token for project {project}: {message}"));
                }
            }
        }
    }

    /// Leaves each request its outcome and wakes it on its worker.
    fn deliver(&self, requests: &[RequestId], outcome: impl Fn() -> Outcome) {
        let mut state = self.state();
        for request in requests {
            if let Some(waiter) = state.waiters.remove(request) {
                *waiter.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome());
                waiter.scheduler.commit(crate::RESUME);
            }
        }
    }

    /// Sends Harbor the token request with the robot's credentials; the call's id, or why not.
    fn send(&self, ctx: &mut ConfigContext<'_>, metrics: &Metrics, call: &Call) -> Result<CallId, String> {
        let managed = &self.managed;
        let headers: [(&[u8], &[u8]); 5] = [
            (b":method", b"GET"),
            (b":path", call.path.as_bytes()),
            (b"host", managed.authority.as_bytes()),
            (b"authorization", managed.authorization.as_bytes()),
            (b"user-agent", b"harbor-mirror"),
        ];
        let request = CalloutRequest { cluster: &managed.cluster, headers: &headers, body: b"", timeout: Duration::from_millis(managed.timeout_ms) };
        increment_here(ctx, metrics.token_fetches);
        ctx.http_callout(&request).map(|id| id.0).map_err(|e| {
            let message = format!("cannot ask harbor for a token through cluster {:?} (auth.cluster): {e}", managed.cluster);
            log(Level::Error, &message);
            message
        })
    }
}
