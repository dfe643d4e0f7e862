//! Managed mode's host side: the token cache every VM of the plugin shares (proxy-wasm shared
//! data, one entry per Harbor, robot and project, compare-and-swap on write), and the execution
//! of what the core's fetch machine ([`Fetches`]) decides: dispatch a token request, store an
//! entry, resume or refuse paused requests.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use harbor_mirror_core::config::Managed;
use harbor_mirror_core::managed::cache::{cache_key, CacheEntry};
use harbor_mirror_core::managed::fetch::{Action, Call, CallId, Fetches, RequestId};

use super::host::{host, log, now_secs, send_refusal, set_header, HostError};
use super::metrics::Metrics;

/// The largest token answer read; Harbor's are about 1 KiB.
const MAX_ANSWER: usize = 64 * 1024;

/// One configuration's managed mode in this VM: the robot, its counters and the fetches in flight.
pub struct TokenCache<'a> {
    pub managed: &'a Managed,
    pub metrics: &'a Metrics,
    pub fetches: &'a RefCell<Fetches>,
}

impl TokenCache<'_> {
    /// What the shared cache holds for `project`, undecoded; `None` when it holds nothing or
    /// cannot be read (logged).
    pub fn read(&self, project: &str) -> Option<Vec<u8>> {
        match host("get_shared_data", hostcalls::get_shared_data(&cache_key(self.managed, project))) {
            Ok((value, _)) => value,
            Err(e) => {
                log(LogLevel::Warn, &format!("reading the token cache: {e}"));
                None
            }
        }
    }

    /// Drops `project`'s cached token (Harbor refused it), so that the next request fetches anew.
    pub fn forget(&self, project: &str) -> Result<(), HostError> {
        let key = cache_key(self.managed, project);
        let (_, cas) = host("get_shared_data", hostcalls::get_shared_data(&key))?;
        write(&key, b"", cas)
    }

    /// Harbor answered call `call`; `current` is the context the host called back.
    pub fn on_answer(&self, call: CallId, body_size: usize, current: u32) {
        let status = answer_status();
        let body = match host("get_buffer", hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_ANSWER))) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Warn, &e.to_string());
                Vec::new()
            }
        };
        let Ok(now) = now_secs() else {
            return;
        };
        let actions = self.fetches.borrow_mut().on_answer(self.managed, call, status, &body, now);
        self.execute(actions, current);
    }

    /// Executes the fetch machine's actions, and those its reports lead to; `current` is the
    /// context the host called back, which it is returned to. No borrow of the machine is held
    /// while requests are resumed or refused: Envoy may call back into the VM meanwhile.
    pub fn execute(&self, actions: Vec<Action>, current: u32) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Dispatch(call) => {
                    let result = self.dispatch(&call);
                    queue.extend(self.fetches.borrow_mut().dispatched(&call.project, result));
                }
                Action::Store { project, value } => {
                    if let Err(e) = self.store(&project, &value) {
                        log(LogLevel::Warn, &format!("writing the token cache: {e}"));
                    }
                }
                Action::Resume { requests, token } => {
                    let bearer = format!("Bearer {token}");
                    for_each_request(&requests, current, || {
                        set_header(MapType::HttpRequestHeaders, "authorization", Some(&bearer))?;
                        host("resume_http_request", hostcalls::resume_http_request())
                    });
                }
                Action::Refuse { requests, refusal } => for_each_request(&requests, current, || send_refusal(&refusal, None)),
                Action::Failed { project, message } => {
                    self.metrics.increment(&self.metrics.token_fetch_failures);
                    log(LogLevel::Warn, &format!("token for project {project}: {message}"));
                }
            }
        }
    }

    /// Sends Harbor the token request with the robot's credentials; the call's id, or why not.
    pub fn dispatch(&self, call: &Call) -> Result<CallId, String> {
        let managed = self.managed;
        let headers = vec![
            (":method", "GET"),
            (":path", call.path.as_str()),
            (":authority", managed.authority.as_str()),
            ("authorization", managed.authorization.as_str()),
            ("user-agent", "harbor-mirror"),
        ];
        let timeout = Duration::from_millis(managed.timeout_ms);
        self.metrics.increment(&self.metrics.token_fetches);
        host("dispatch_http_call", hostcalls::dispatch_http_call(&managed.cluster, headers, None, vec![], timeout)).map(u64::from).map_err(|e| {
            let message = format!("cannot ask harbor for a token through cluster {:?} (auth.cluster): {e}", managed.cluster);
            log(LogLevel::Error, &message);
            message
        })
    }

    /// Caches `value` for `project` unless another VM cached an entry that holds longer.
    fn store(&self, project: &str, value: &str) -> Result<(), HostError> {
        let Some(entry) = CacheEntry::decode(value.as_bytes()) else {
            return Ok(());
        };
        let key = cache_key(self.managed, project);
        let (old, cas) = host("get_shared_data", hostcalls::get_shared_data(&key))?;
        if !entry.replaces(old.as_deref().and_then(CacheEntry::decode).as_ref()) {
            return Ok(());
        }
        write(&key, value.as_bytes(), cas)
    }
}

/// Runs `apply` as each of `requests` (the host's effective context), then returns to `current`.
fn for_each_request(requests: &[RequestId], current: u32, mut apply: impl FnMut() -> Result<(), HostError>) {
    for &request in requests {
        if hostcalls::set_effective_context(request).is_err() {
            continue; // It ended meanwhile.
        }
        if let Err(e) = apply() {
            log(LogLevel::Warn, &format!("resuming a request after its token fetch: {e}"));
        }
    }
    let _ = hostcalls::set_effective_context(current);
}

fn answer_status() -> Option<u32> {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status").ok().flatten()?;
    std::str::from_utf8(&status).ok()?.parse().ok()
}

/// Writes a cache entry if nobody wrote since `cas` was read.
fn write(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostError> {
    match hostcalls::set_shared_data(key, Some(value), cas) {
        // Another VM wrote between the read and the write: its entry is as good.
        Ok(()) | Err(Status::CasMismatch) => Ok(()),
        Err(status) => Err(HostError::from_status("set_shared_data", status)),
    }
}
