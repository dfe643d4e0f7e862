//! Managed mode's tokens: the cache shared by every VM of the plugin (proxy-wasm shared data,
//! one entry per Harbor project, expiry kept in the value, compare-and-swap on write), and the
//! fetches in flight in this VM, at most one per project, with the requests waiting for them.
//!
//! A fetch is dispatched by the request that found the cache empty. If that request goes away
//! before Harbor answers, Envoy cancels its call; the fetch is then orphaned and the root
//! context dispatches it again on its next tick, so the other waiters never hang.

use std::cell::RefCell;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use super::host::{host, log, now_secs, send_refusal, set_header, HostError};
use super::metrics::Metrics;
use harbor_mirror_core::config::Managed;
use harbor_mirror_core::refusal::Refusal;
use harbor_mirror_core::oci::{self, ErrorCode};
use harbor_mirror_core::managed::cache::{self, CacheEntry};
use harbor_mirror_core::managed::grant;

/// How often the root context looks for orphaned fetches.
pub const ORPHAN_TICK: Duration = Duration::from_millis(500);

/// The largest token answer read; Harbor's are about 1 KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// A token request to Harbor and the requests waiting for its answer.
struct Fetch {
    project: String,
    repository: String,
    /// The pending call; `None` while orphaned.
    token_id: Option<u32>,
    /// The request context whose end cancels the call; `None` when the root dispatched it.
    owner: Option<u32>,
    waiters: Vec<u32>,
}

/// What a request gets from [`Fetches::token_for`].
pub enum TokenFor {
    /// A fresh cached token: forward now.
    Cached(String),
    /// A fetch is under way; the request is resumed (or answered) when it ends.
    Waiting,
}

/// The fetches in flight in this VM.
#[derive(Default)]
pub struct Fetches {
    inflight: RefCell<Vec<Fetch>>,
    /// The requests resumed with a token, and the token, until they end.
    granted: RefCell<Vec<(u32, String)>>,
}

impl Fetches {
    /// A token for pulling `repository` (a Harbor name) for request `context_id`: cached, or
    /// by joining this project's fetch, or by starting it.
    pub fn token_for(&self, managed: &Managed, metrics: &Metrics, context_id: u32, repository: &str) -> Result<TokenFor, Refusal> {
        let project = oci::first_component(repository).0;
        match cached(managed, project) {
            Ok(Some(Ok(token))) => {
                metrics.increment(metrics.token_cache_hits);
                return Ok(TokenFor::Cached(token));
            }
            Ok(Some(Err(refusal))) => {
                log(LogLevel::Debug, &format!("token for project {project}: a recent failure is remembered: {}", refusal.message));
                return Err(refusal);
            }
            Ok(None) => {}
            Err(e) => log(LogLevel::Warn, &format!("reading the token cache: {e}")),
        }
        let mut inflight = self.inflight.borrow_mut();
        if let Some(fetch) = inflight.iter_mut().find(|fetch| fetch.project == project) {
            fetch.waiters.push(context_id);
            return Ok(TokenFor::Waiting);
        }
        let token_id = dispatch(managed, metrics, repository)?;
        inflight.push(Fetch {
            project: project.to_owned(),
            repository: repository.to_owned(),
            token_id: Some(token_id),
            owner: Some(context_id),
            waiters: vec![context_id],
        });
        Ok(TokenFor::Waiting)
    }

    /// Harbor answered call `token_id`: cache the token and resume every waiter, or answer them
    /// all with the refusal. `current` is the context the host called back.
    pub fn finish(&self, managed: &Managed, metrics: &Metrics, current: u32, token_id: u32, body_size: usize) {
        let fetch = {
            let mut inflight = self.inflight.borrow_mut();
            let Some(at) = inflight.iter().position(|fetch| fetch.token_id == Some(token_id)) else {
                return;
            };
            inflight.swap_remove(at)
        };
        let status = answer_status();
        let body = match host("get_buffer", hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_ANSWER))) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Warn, &e.to_string());
                Vec::new()
            }
        };
        let outcome = grant::judge_answer(status, &body, &fetch.project, &managed.username, &managed.cluster);
        let stored = match &outcome {
            Ok(grant) => now_secs().and_then(|now| store(managed, &fetch.project, CacheEntry::for_grant(grant, now))),
            Err(failure) => {
                metrics.increment(metrics.token_fetch_failures);
                log(LogLevel::Warn, &format!("token for project {}: {}", fetch.project, failure.refusal.message));
                match now_secs() {
                    Ok(now) => CacheEntry::for_failure(failure, now).map_or(Ok(()), |entry| store(managed, &fetch.project, entry)),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = stored {
            log(LogLevel::Warn, &format!("writing the token cache: {e}"));
        }
        let outcome = outcome.map(|grant| grant.token).map_err(|failure| failure.refusal);
        self.resolve(&fetch.waiters, &outcome, current);
    }

    /// The robot's token request `context_id` was resumed with, if it was (for its answer).
    pub fn token_of(&self, context_id: u32) -> Option<String> {
        let granted = self.granted.borrow();
        granted.iter().find(|(id, _)| *id == context_id).map(|(_, token)| token.clone())
    }

    /// Request `context_id` ended: it waits no more, and a fetch it dispatched is orphaned.
    pub fn leave(&self, context_id: u32) {
        self.granted.borrow_mut().retain(|(id, _)| *id != context_id);
        let mut inflight = self.inflight.borrow_mut();
        for fetch in inflight.iter_mut() {
            fetch.waiters.retain(|&waiter| waiter != context_id);
            if fetch.owner == Some(context_id) {
                fetch.owner = None;
                fetch.token_id = None;
            }
        }
        inflight.retain(|fetch| !fetch.waiters.is_empty());
    }

    /// The root context's tick: dispatch orphaned fetches again, as the root.
    pub fn retry_orphans(&self, managed: &Managed, metrics: &Metrics, root_id: u32) {
        let mut failed = Vec::new();
        {
            let mut inflight = self.inflight.borrow_mut();
            for fetch in inflight.iter_mut().filter(|fetch| fetch.token_id.is_none()) {
                log(LogLevel::Debug, &format!("token fetch for project {} lost its request; fetching again", fetch.project));
                match dispatch(managed, metrics, &fetch.repository) {
                    Ok(token_id) => fetch.token_id = Some(token_id),
                    Err(refusal) => failed.push((std::mem::take(&mut fetch.waiters), refusal)),
                }
            }
            inflight.retain(|fetch| !fetch.waiters.is_empty());
        }
        for (waiters, refusal) in failed {
            self.resolve(&waiters, &Err(refusal), root_id);
        }
    }

    /// Resumes each waiter with the token, or answers it with the refusal, then returns the
    /// host to the `current` context.
    fn resolve(&self, waiters: &[u32], outcome: &Result<String, Refusal>, current: u32) {
        let bearer = outcome.as_ref().map(|token| format!("Bearer {token}"));
        for &waiter in waiters {
            if hostcalls::set_effective_context(waiter).is_err() {
                continue; // It ended meanwhile.
            }
            let applied = match &bearer {
                Ok(bearer) => set_header(MapType::HttpRequestHeaders, "authorization", Some(bearer))
                    .and_then(|()| host("resume_http_request", hostcalls::resume_http_request())),
                Err(refusal) => send_refusal(refusal, None),
            };
            match applied {
                Ok(()) => {
                    if let Ok(token) = outcome {
                        self.granted.borrow_mut().push((waiter, token.clone()));
                    }
                }
                Err(e) => log(LogLevel::Warn, &format!("resuming a request after its token fetch: {e}")),
            }
        }
        let _ = hostcalls::set_effective_context(current);
    }
}

/// Sends the token request for `repository` with the robot's credentials.
fn dispatch(managed: &Managed, metrics: &Metrics, repository: &str) -> Result<u32, Refusal> {
    let path = grant::managed_token_path(repository);
    let headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", managed.authority.as_str()),
        ("authorization", managed.authorization.as_str()),
        ("user-agent", "harbor-mirror"),
    ];
    let timeout = Duration::from_millis(managed.timeout_ms);
    metrics.increment(metrics.token_fetches);
    host("dispatch_http_call", hostcalls::dispatch_http_call(&managed.cluster, headers, None, vec![], timeout)).map_err(|e| {
        metrics.increment(metrics.token_fetch_failures);
        let message = format!("cannot ask harbor for a token through cluster {:?} (auth.cluster): {e}", managed.cluster);
        log(LogLevel::Error, &message);
        Refusal::new(503, ErrorCode::Unavailable, message)
    })
}

fn answer_status() -> Option<u32> {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status").ok().flatten()?;
    std::str::from_utf8(&status).ok()?.parse().ok()
}

/// What the shared cache holds for `project`, if it still holds: a token, or the refusal of a
/// recent failure.
fn cached(managed: &Managed, project: &str) -> Result<Option<Result<String, Refusal>>, HostError> {
    let key = cache::cache_key(managed, project);
    let (value, _) = host("get_shared_data", hostcalls::get_shared_data(&key))?;
    let now = now_secs()?;
    let entry = value.as_deref().and_then(CacheEntry::decode).filter(|entry| entry.is_fresh(now));
    Ok(entry.map(|entry| entry.answer().map(str::to_owned)))
}

/// Caches `entry` unless another VM cached a token that holds longer meanwhile.
fn store(managed: &Managed, project: &str, entry: CacheEntry<'_>) -> Result<(), HostError> {
    let key = cache::cache_key(managed, project);
    let (value, cas) = host("get_shared_data", hostcalls::get_shared_data(&key))?;
    let old = value.as_deref().and_then(CacheEntry::decode);
    if let Some(old @ CacheEntry::Token { .. }) = old
        && old.until() >= entry.until()
    {
        return Ok(());
    }
    write_entry(&key, entry.encode().as_bytes(), cas)
}

/// Drops `project`'s cached token (Harbor refused it), so that the next request fetches anew.
pub fn forget(managed: &Managed, project: &str) -> Result<(), HostError> {
    let key = cache::cache_key(managed, project);
    let (_, cas) = host("get_shared_data", hostcalls::get_shared_data(&key))?;
    write_entry(&key, b"", cas)
}

/// Writes a cache entry if nobody wrote since `cas` was read.
fn write_entry(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
    match hostcalls::set_shared_data(key, Some(value), cas) {
        // Another VM wrote between the read and the write: its entry is as good.
        Ok(()) | Err(Status::CasMismatch) => Ok(()),
        Err(status) => Err(HostError::from_status("set_shared_data", status)),
    }
}
