//! Managed mode's single-flight token fetch, as a state machine without I/O.
//!
//! One plugin instance's requests that need the robot's token for a project share one request
//! to Harbor. The [`driver`](crate::driver) reports what happens (a request needs a token, a
//! call was dispatched or could not be, Harbor answered, a request ended, the plugin's timer
//! ticked) with the time and the shared cache's entry injected, and carries out what comes
//! back: dispatch this call, store this cache entry, resume these requests with this token,
//! refuse these with this error.
//!
//! Where requests send their own calls ([`CallSender::Stream`](crate::host::CallSender)), a
//! fetch is dispatched by the request that found no usable cache entry: its owner. If the owner
//! goes away before Harbor answers, Envoy cancels the call; the fetch is then orphaned and the
//! next tick dispatches it again from the plugin's context, so the other waiters never hang.
//! A timeout is Harbor's answer with no status (Envoy's own 504 reads the same).
//!
//! Where calls belong to the plugin rather than to a request (the dynamic module sends them
//! from Envoy's main thread: [`Fetches::with_calls_of_the_plugin`]), a fetch has no owner: a
//! request's end never orphans it, and every call ends in an answer, a timeout or a failed
//! dispatch, so no tick is needed.

use crate::config::Managed;
use crate::host::{CallId, RequestId};
use crate::oci;
use crate::refusal::Refusal;

use super::cache::CacheEntry;
use super::grant;

/// What a request that needs the robot's token does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The cache holds a token: send the request on with it.
    Token {
        /// The bearer token.
        token: String,
    },
    /// The cache remembers a refusal of the robot's credentials: answer with it.
    Refused(Refusal),
    /// A fetch for the project is under way: pause; the request is resumed or refused with it.
    Wait,
    /// Start the project's fetch: dispatch `call` and report it with [`Fetches::dispatched`];
    /// the request waits for it.
    Fetch(Call),
}

/// A token request to send Harbor, with the robot's Basic credentials, through `auth.cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The Harbor project the token is for.
    pub project: String,
    /// The request's `:path`.
    pub path: String,
}

/// What the driver does when a fetch moves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send Harbor this token request, then report it with [`Fetches::dispatched`].
    Dispatch(Call),
    /// Write this entry into the shared cache for the project, unless another instance wrote one
    /// that holds longer ([`CacheEntry::replaces`]).
    Store {
        /// The project the entry is for.
        project: String,
        /// The shared-data value ([`CacheEntry::encode`]).
        value: String,
    },
    /// Resume these requests with `Authorization: Bearer <token>`.
    Resume {
        /// The paused requests.
        requests: Vec<RequestId>,
        /// The bearer token.
        token: String,
    },
    /// Answer these requests with the refusal.
    Refuse {
        /// The paused requests.
        requests: Vec<RequestId>,
        /// The OCI error they get.
        refusal: Refusal,
    },
    /// A fetch gave no token: count it (`harbor_mirror.token.fetch_failures`) and log why.
    Failed {
        /// The project of the fetch.
        project: String,
        /// The cause, as the refused requests get it.
        message: String,
    },
}

/// One project's fetch and the requests waiting for it.
#[derive(Debug)]
struct Fetch {
    project: String,
    /// The repository the first request asked for (Harbor grants per project).
    repository: String,
    /// The call in flight; `None` before it is dispatched and while orphaned.
    call: Option<CallId>,
    /// The request whose end cancels the call; `None` when the plugin's context dispatched it.
    owner: Option<RequestId>,
    /// The requests paused for the token, the owner among them while it lives.
    waiters: Vec<RequestId>,
}

/// The fetches in flight in one plugin instance, and the tokens requests were resumed with.
#[derive(Debug, Default)]
pub struct Fetches {
    inflight: Vec<Fetch>,
    /// Requests resumed with a token, until they end: what Harbor's 401 to them is about.
    resumed: Vec<(RequestId, String)>,
    /// Calls are the plugin's, not the request's that needed them first.
    calls_of_the_plugin: bool,
}

impl Fetches {
    /// Fetches whose calls belong to the plugin: no request owns one, so none is
    /// orphaned when a request ends.
    pub fn with_calls_of_the_plugin() -> Self {
        Fetches { calls_of_the_plugin: true, ..Fetches::default() }
    }

    /// Request `request` needs a token for `repository` (a Harbor name); `cached` is what the
    /// shared cache holds for its project, read at `now` (Unix seconds).
    pub fn on_request(&mut self, request: RequestId, repository: &str, cached: Option<CacheEntry<'_>>, now: u64) -> Lookup {
        let project = oci::first_component(repository).0;
        if let Some(entry) = cached.filter(|entry| entry.is_fresh(now)) {
            return match entry.answer() {
                Ok(token) => Lookup::Token { token: token.to_owned() },
                Err(refusal) => Lookup::Refused(refusal),
            };
        }
        if let Some(fetch) = self.inflight.iter_mut().find(|fetch| fetch.project == project) {
            fetch.waiters.push(request);
            return Lookup::Wait;
        }
        self.inflight.push(Fetch {
            project: project.to_owned(),
            repository: repository.to_owned(),
            call: None,
            owner: (!self.calls_of_the_plugin).then_some(request),
            waiters: vec![request],
        });
        Lookup::Fetch(Call { project: project.to_owned(), path: grant::managed_token_path(repository) })
    }

    /// The driver dispatched (`Ok`, with the call's id) or could not dispatch (`Err`, why) the
    /// call of `project`'s fetch. A failure refuses every waiter with 503.
    pub fn dispatched(&mut self, project: &str, result: Result<CallId, String>) -> Vec<Command> {
        let Some(at) = self.inflight.iter().position(|fetch| fetch.project == project && fetch.call.is_none()) else {
            return Vec::new();
        };
        match result {
            Ok(call) => {
                self.inflight[at].call = Some(call);
                Vec::new()
            }
            Err(message) => {
                let fetch = self.inflight.swap_remove(at);
                let refusal = Refusal::new(503, oci::ErrorCode::Unavailable, message);
                let mut actions = vec![Command::Failed { project: fetch.project, message: refusal.message.clone() }];
                if !fetch.waiters.is_empty() {
                    actions.push(Command::Refuse { requests: fetch.waiters, refusal });
                }
                actions
            }
        }
    }

    /// Harbor answered call `call` at `now`: `status` `None` when it did not (timeout,
    /// connection failure). Nothing for a call this instance does not know.
    pub fn on_answer(&mut self, managed: &Managed, call: CallId, status: Option<u32>, body: &[u8], now: u64) -> Vec<Command> {
        let Some(at) = self.inflight.iter().position(|fetch| fetch.call == Some(call)) else {
            return Vec::new();
        };
        let fetch = self.inflight.swap_remove(at);
        let mut actions = Vec::with_capacity(3);
        match grant::judge_answer(status, body, &fetch.project, &managed.username, &managed.cluster) {
            Ok(grant) => {
                let value = CacheEntry::for_grant(&grant, now).encode();
                actions.push(Command::Store { project: fetch.project, value });
                if !fetch.waiters.is_empty() {
                    self.resumed.extend(fetch.waiters.iter().map(|&request| (request, grant.token.clone())));
                    actions.push(Command::Resume { requests: fetch.waiters, token: grant.token });
                }
            }
            Err(failure) => {
                actions.push(Command::Failed { project: fetch.project.clone(), message: failure.refusal.message.clone() });
                if let Some(entry) = CacheEntry::for_failure(&failure, now) {
                    actions.push(Command::Store { project: fetch.project, value: entry.encode() });
                }
                if !fetch.waiters.is_empty() {
                    actions.push(Command::Refuse { requests: fetch.waiters, refusal: failure.refusal });
                }
            }
        }
        actions
    }

    /// Request `request` ended: it waits no more, and a fetch it dispatched is orphaned (Envoy
    /// cancels a call when the context that made it ends).
    pub fn on_request_end(&mut self, request: RequestId) {
        self.resumed.retain(|(id, _)| *id != request);
        for fetch in &mut self.inflight {
            fetch.waiters.retain(|&waiter| waiter != request);
            if fetch.owner == Some(request) {
                fetch.owner = None;
                fetch.call = None;
            }
        }
    }

    /// The plugin's timer: fetches nobody waits for any more are dropped, orphaned ones
    /// dispatched again from the plugin's context (report each with [`Fetches::dispatched`]).
    pub fn on_tick(&mut self) -> Vec<Command> {
        self.inflight.retain(|fetch| !fetch.waiters.is_empty() || fetch.call.is_some());
        self.inflight
            .iter()
            .filter(|fetch| fetch.call.is_none() && fetch.owner.is_none())
            .map(|fetch| Command::Dispatch(Call { project: fetch.project.clone(), path: grant::managed_token_path(&fetch.repository) }))
            .collect()
    }

    /// The token request `request` was resumed with, while it lives.
    pub fn resumed_with(&self, request: RequestId) -> Option<&str> {
        self.resumed.iter().find(|(id, _)| *id == request).map(|(_, token)| token.as_str())
    }

    /// Whether call `call` is the call of a fetch in flight here.
    pub fn is_waiting_for(&self, call: CallId) -> bool {
        self.inflight.iter().any(|fetch| fetch.call == Some(call))
    }

    /// Whether any fetch is in flight (for tests and logs).
    pub fn is_idle(&self) -> bool {
        self.inflight.is_empty()
    }
}
