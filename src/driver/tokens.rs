//! Managed mode's tokens: the cache every worker shares (one shared-data entry per Harbor,
//! robot and project, written with compare-and-swap), and the carrying out of what the fetch
//! machine ([`Fetches`]) decides: send a token request, store an entry, wake the requests that
//! waited with their token or their refusal.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::config::Managed;
use crate::host::{CallAnswer, CallId, CallRequest, CallSender, Host, HostError, Level};
use crate::managed::cache::{cache_key, CacheEntry};
use crate::managed::fetch::{Call, Command, Fetches};
use crate::metrics::{Metric, Metrics};

use super::woken::{Outcome, Woken};

/// The largest token answer read; Harbor's are about 1 KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// One configuration's managed mode in this plugin instance.
pub(super) struct Tokens {
    managed: Managed,
    fetches: Mutex<Fetches>,
    /// With [`CallSender::Plugin`]: the calls the plugin's context is to send.
    queued: Mutex<Vec<Call>>,
}

impl Tokens {
    pub(super) fn new(managed: Managed, sender: CallSender) -> Self {
        let fetches = match sender {
            CallSender::Stream => Fetches::default(),
            CallSender::Plugin => Fetches::with_calls_of_the_plugin(),
        };
        Tokens { managed, fetches: Mutex::new(fetches), queued: Mutex::default() }
    }

    pub(super) fn fetches(&self) -> MutexGuard<'_, Fetches> {
        // A panic cannot leave the machine half-moved: the release builds abort on panic.
        self.fetches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the shared cache holds for `project`, undecoded; `None` when it holds nothing or
    /// cannot be read (logged).
    pub(super) fn read(&self, host: &mut impl Host, project: &str) -> Option<Vec<u8>> {
        match host.shared_data(&cache_key(&self.managed, project)) {
            Ok(value) => value.map(|shared| shared.value),
            Err(e) => {
                host.log(Level::Warn, format_args!("reading the token cache: {e}"));
                None
            }
        }
    }

    /// Drops `project`'s cached token (Harbor refused it), so that the next request fetches anew.
    pub(super) fn forget(&self, host: &mut impl Host, project: &str) -> Result<(), HostError> {
        let key = cache_key(&self.managed, project);
        let cas = host.shared_data(&key)?.and_then(|shared| shared.cas);
        // A mismatch: another worker wrote meanwhile, and its entry is as good.
        host.set_shared_data(&key, b"", cas).map(drop)
    }

    /// Caches `value` for `project` unless another worker cached an entry that holds longer.
    fn store(&self, host: &mut impl Host, project: &str, value: &str) -> Result<(), HostError> {
        let Some(entry) = CacheEntry::decode(value.as_bytes()) else {
            return Ok(());
        };
        let key = cache_key(&self.managed, project);
        let old = host.shared_data(&key)?;
        let (old_value, cas) = old.map_or((None, None), |shared| (Some(shared.value), shared.cas));
        if !entry.replaces(old_value.as_deref().and_then(CacheEntry::decode).as_ref()) {
            return Ok(());
        }
        host.set_shared_data(&key, value.as_bytes(), cas).map(drop)
    }

    /// With [`CallSender::Plugin`]: keeps `call` for the plugin's context to send.
    pub(super) fn queue(&self, call: Call) {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }

    /// The plugin's context: sends the queued calls.
    pub(super) fn send_queued(&self, metrics: &Metrics, woken: &Woken, host: &mut impl Host) {
        let queued = std::mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner));
        self.run(metrics, woken, host, queued.into_iter().map(Command::Dispatch).collect());
    }

    /// Sends Harbor the token request with the robot's credentials: the call's id, or why not.
    pub(super) fn send(&self, metrics: &Metrics, host: &mut impl Host, call: &Call) -> Result<CallId, String> {
        let managed = &self.managed;
        let headers = [("authorization", managed.authorization.as_str())];
        let request = CallRequest { method: "GET", cluster: &managed.cluster, path: &call.path, authority: &managed.authority, headers: &headers, timeout_ms: managed.timeout_ms };
        metrics.add_one(host, Metric::TokenFetches);
        host.send_call(&request).map_err(|e| {
            let message = format!("cannot ask harbor for a token through cluster {:?} (auth.cluster): {e}", managed.cluster);
            host.log(Level::Error, &message);
            message
        })
    }

    /// Harbor answered call `call`; `false` when it is not one of this configuration's.
    pub(super) fn on_answer(&self, metrics: &Metrics, woken: &Woken, host: &mut impl Host, call: CallId, answer: &impl CallAnswer) -> bool {
        if !self.fetches().is_waiting_for(call) {
            return false;
        }
        let status = answer.status();
        let body = answer.body(MAX_ANSWER);
        let Ok(now) = host.now_secs() else {
            return true;
        };
        let commands = self.fetches().on_answer(&self.managed, call, status, &body, now);
        self.run(metrics, woken, host, commands);
        true
    }

    /// The plugin's timer: orphaned fetches are sent again.
    pub(super) fn on_tick(&self, metrics: &Metrics, woken: &Woken, host: &mut impl Host) {
        let commands = self.fetches().on_tick();
        for command in &commands {
            if let Command::Dispatch(call) = command {
                host.log(Level::Debug, format_args!("token fetch for project {} lost its request; fetching again", call.project));
            }
        }
        self.run(metrics, woken, host, commands);
    }

    /// Carries out the fetch machine's commands, and those their reports lead to. No lock is
    /// held while requests are woken: a host may run them right away.
    pub(super) fn run(&self, metrics: &Metrics, woken: &Woken, host: &mut impl Host, commands: Vec<Command>) {
        let mut queue = VecDeque::from(commands);
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Dispatch(call) => {
                    let sent = self.send(metrics, host, &call);
                    let more = self.fetches().dispatched(&call.project, sent);
                    queue.extend(more);
                }
                Command::Store { project, value } => {
                    if let Err(e) = self.store(host, &project, &value) {
                        host.log(Level::Warn, format_args!("writing the token cache: {e}"));
                    }
                }
                Command::Resume { requests, token } => woken.wake_all(host, &requests, &Outcome::Resume(token)),
                Command::Refuse { requests, refusal } => woken.wake_all(host, &requests, &Outcome::Refuse(refusal)),
                Command::Failed { project, message } => {
                    metrics.add_one(host, Metric::TokenFetchFailures);
                    host.log(Level::Warn, format_args!("token for project {project}: {message}"));
                }
            }
        }
    }
}
