//! Discovery's host side: the mapping the plugin's VMs share (proxy-wasm shared data), the lease
//! that lets one VM refresh it per interval, the API calls of the core's refresh machine
//! ([`Refresh`]), and applying a new mapping to the configuration requests get.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

use harbor_mirror_core::config::Discover;
use harbor_mirror_core::discovery::refresh::{Action, Answer, Refresh};
use harbor_mirror_core::discovery::{apply, failure_note, should_refresh, Applied, Lease, Published};
use harbor_mirror_core::Config;

use super::host::{host, log, now_secs, HostError};
use super::metrics::Metrics;

/// The largest API answer read (a page of 100 projects is about 60 KiB).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// One configuration's discovery in this VM.
#[derive(Default)]
pub struct Discovery {
    refresh: RefCell<Refresh>,
    /// The call in flight, so that answers go to the refresh that made it.
    call: Cell<Option<u64>>,
    /// When the mapping this VM applied was read (its shared entry's `at`).
    applied_at: Cell<Option<u64>>,
}

/// What discovery works on: the configuration requests get (replaced by each new mapping), the
/// counters, and this VM's state.
pub struct Discovering<'a> {
    pub config: &'a RefCell<Rc<Config>>,
    pub metrics: &'a Metrics,
    pub state: &'a Discovery,
}

impl Discovering<'_> {
    /// At configure: the lease exists from the start, so that VMs taking it compare and swap
    /// (a missing key has no version to compare).
    pub fn prepare(&self) {
        if let Some(discover) = &self.config.borrow().discover
            && read(&lease_key(discover)).is_none()
        {
            let _ = write(&lease_key(discover), &Lease { until: 0 }.encode(), None);
        }
    }

    /// The root context's timer: apply a mapping another VM published, and start a refresh when
    /// one is due and this VM wins the lease.
    pub fn on_tick(&self) {
        let config = self.config.borrow().clone();
        let Some(discover) = &config.discover else {
            return;
        };
        let Ok(now) = now_secs() else {
            return;
        };
        let published = read(&published_key(discover)).and_then(|(value, _)| Published::decode(&value));
        if let Some(published) = &published {
            self.apply(published);
        }
        if self.state.refresh.borrow().is_running() {
            return;
        }
        let (lease, cas) = match read(&lease_key(discover)) {
            Some((value, cas)) => (Lease::decode(&value), cas),
            None => (None, None),
        };
        if !should_refresh(now, discover.interval_s, published.as_ref(), lease.as_ref()) {
            return;
        }
        // Compare-and-swap: of VMs that find the lease free at once, one writes it.
        if write(&lease_key(discover), &Lease::take(now).encode(), cas).is_err() {
            return;
        }
        let actions = self.state.refresh.borrow_mut().start(discover.robot.as_deref());
        self.execute(discover, actions);
    }

    /// Whether call `call` is this discovery's.
    pub fn owns(&self, call: u32) -> bool {
        self.state.call.get() == Some(u64::from(call))
    }

    /// Harbor answered call `call` of this discovery.
    pub fn on_answer(&self, call: u64, body_size: usize) {
        let config = self.config.borrow().clone();
        let Some(discover) = &config.discover else {
            return;
        };
        self.state.call.set(None);
        let header = |name: &str| hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten();
        let status = header(":status").and_then(|value| std::str::from_utf8(&value).ok()?.parse().ok());
        let next_link = header("link").is_some_and(|value| String::from_utf8_lossy(&value).contains("rel=\"next\""));
        let total = header("x-total-count").and_then(|value| std::str::from_utf8(&value).ok()?.trim().parse().ok());
        let body = match host("get_buffer", hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(MAX_ANSWER))) {
            Ok(body) => body.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Warn, &e.to_string());
                Vec::new()
            }
        };
        let actions = self.state.refresh.borrow_mut().on_answer(call, Answer { status, body: &body, next_link, total });
        self.execute(discover, actions);
    }

    /// Executes the refresh machine's actions, and those its reports lead to.
    fn execute(&self, discover: &Discover, actions: Vec<Action>) {
        let mut actions = VecDeque::from(actions);
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Dispatch { path } => {
                    let result = dispatch(discover, &path).map(u64::from);
                    if let Ok(call) = result {
                        self.state.call.set(Some(call));
                    }
                    actions.extend(self.state.refresh.borrow_mut().dispatched(result.map_err(|e| e.to_string())));
                }
                Action::Publish(built) => {
                    for warning in &built.warnings {
                        log(LogLevel::Warn, &format!("discovery: {warning}"));
                    }
                    self.metrics.increment(&self.metrics.discovery_refreshes);
                    let Ok(now) = now_secs() else {
                        continue;
                    };
                    let published = Published { at: now, mapping: built.mapping };
                    if let Err(e) = write(&published_key(discover), &published.encode(), None) {
                        log(LogLevel::Warn, &format!("discovery: sharing the mapping: {e}"));
                    }
                    let _ = write(&lease_key(discover), &Lease::released(now).encode(), None);
                    self.apply(&published);
                }
                Action::Failed(message) => {
                    self.metrics.increment(&self.metrics.discovery_failures);
                    log(LogLevel::Warn, &failure_note(&self.config.borrow(), &message));
                    if let Ok(now) = now_secs() {
                        let _ = write(&lease_key(discover), &Lease::after_failure(now, discover.interval_s).encode(), None);
                    }
                }
            }
        }
    }

    /// Applies `published` if this VM has not: a new configuration for new requests.
    fn apply(&self, published: &Published) {
        if self.state.applied_at.get() == Some(published.at) {
            return;
        }
        let current = self.config.borrow().clone();
        match apply(&current, &published.mapping) {
            Ok(Applied { config, note }) => {
                if let Err(e) = self.metrics.define_registries(&config) {
                    log(LogLevel::Warn, &format!("discovery: defining metrics: {e}"));
                }
                self.metrics.record(self.metrics.discovery_registries, published.mapping.entries.len() as u64);
                if let Some(note) = note {
                    log(LogLevel::Info, &note);
                }
                *self.config.borrow_mut() = Rc::new(config);
                self.state.applied_at.set(Some(published.at));
            }
            Err(e) => log(LogLevel::Error, &format!("discovery: the mapping does not compile: {e}")),
        }
    }
}

/// Sends Harbor's API `GET path` through the discovery cluster.
fn dispatch(discover: &Discover, path: &str) -> Result<u32, HostError> {
    let mut headers = vec![(":method", "GET"), (":path", path), (":authority", discover.authority.as_str()), ("accept", "application/json"), ("user-agent", "harbor-mirror")];
    if let Some(authorization) = &discover.authorization {
        headers.push(("authorization", authorization.as_str()));
    }
    let timeout = Duration::from_millis(discover.timeout_ms);
    host("dispatch_http_call", hostcalls::dispatch_http_call(&discover.cluster, headers, None, vec![], timeout))
}

/// The shared-data key of the published mapping, per Harbor and account.
fn published_key(discover: &Discover) -> String {
    format!("harbor_mirror.discovery/{}/{}", discover.authority, discover.robot.as_deref().unwrap_or("-"))
}

fn lease_key(discover: &Discover) -> String {
    format!("harbor_mirror.discovery.lease/{}/{}", discover.authority, discover.robot.as_deref().unwrap_or("-"))
}

/// A shared-data value and its compare-and-swap token; `None` when absent or unreadable.
fn read(key: &str) -> Option<(Vec<u8>, Option<u32>)> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(value), cas)) => Some((value, cas)),
        _ => None,
    }
}

/// Writes a shared-data value; with `cas`, only if nobody wrote since it was read.
fn write(key: &str, value: &str, cas: Option<u32>) -> Result<(), HostError> {
    hostcalls::set_shared_data(key, Some(value.as_bytes()), cas).map_err(|status| HostError::from_status("set_shared_data", status))
}
