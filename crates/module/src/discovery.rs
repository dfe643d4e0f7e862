//! Discovery's host side in the module: one refresh per interval for the whole Envoy, run on the
//! main thread by the configuration's timer, its API calls sent as callouts of the
//! configuration, and each new mapping applied to the configuration new requests get.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use envoy_dynamic_module::log::Level;
use envoy_dynamic_module::{CalloutId, CalloutOutcome, CalloutRequest, CalloutResponse, ConfigContext};

use harbor_mirror_core::config::Discover;
use harbor_mirror_core::discovery::refresh::{Action, Answer, Refresh};
use harbor_mirror_core::discovery::{apply, failure_note, should_refresh, Applied, Lease, Published};
use harbor_mirror_core::Config;

use crate::metrics::{increment_here, Metrics};
use crate::{log, now_secs};

#[derive(Default)]
struct State {
    refresh: Refresh,
    /// The call in flight, so that answers go to the refresh that made it.
    call: Option<u64>,
    /// The last mapping published.
    published: Option<Published>,
    /// When the next refresh may start after a failure ([`Lease::after_failure`]).
    lease: Option<Lease>,
}

/// One configuration's discovery.
#[derive(Default)]
pub struct Discovery {
    state: Mutex<State>,
}

impl Discovery {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Main thread, on the timer: starts a refresh when one is due.
    pub fn on_tick(&self, ctx: &mut ConfigContext<'_>, config: &RwLock<Arc<Config>>, metrics: &Metrics) {
        let current = read(config);
        let Some(discover) = &current.discover else {
            return;
        };
        let actions = {
            let mut state = self.state();
            if state.refresh.is_running() || !should_refresh(now_secs(), discover.interval_s, state.published.as_ref(), state.lease.as_ref()) {
                return;
            }
            state.refresh.start(discover.robot.as_deref())
        };
        self.execute(ctx, config, metrics, discover, actions);
    }

    /// Whether callout `callout` is this discovery's.
    pub fn owns(&self, callout: CalloutId) -> bool {
        self.state().call == Some(callout.0)
    }

    /// Main thread: Harbor answered this discovery's callout.
    pub fn on_answer(&self, ctx: &mut ConfigContext<'_>, config: &RwLock<Arc<Config>>, metrics: &Metrics, callout: CalloutId, response: &CalloutResponse<'_>) {
        let current = read(config);
        let Some(discover) = &current.discover else {
            return;
        };
        let success = response.outcome() == CalloutOutcome::Success;
        let status = if success { response.status().map(u32::from) } else { None };
        let next_link = response.header_values(b"link").any(|value| String::from_utf8_lossy(value).contains("rel=\"next\""));
        let total = response.header(b"x-total-count").and_then(|value| std::str::from_utf8(value).ok()?.trim().parse().ok());
        let body = response.body();
        let actions = {
            let mut state = self.state();
            state.call = None;
            state.refresh.on_answer(callout.0, Answer { status, body: &body, next_link, total })
        };
        self.execute(ctx, config, metrics, discover, actions);
    }

    /// Executes the refresh machine's actions, and those its reports lead to.
    fn execute(&self, ctx: &mut ConfigContext<'_>, config: &RwLock<Arc<Config>>, metrics: &Metrics, discover: &Discover, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Dispatch { path } => {
                    let result = send(ctx, discover, &path);
                    let mut state = self.state();
                    if let Ok(call) = result {
                        state.call = Some(call);
                    }
                    queue.extend(state.refresh.dispatched(result));
                }
                Action::Publish(built) => {
                    for warning in &built.warnings {
                        log(Level::Warn, &format!("discovery: {warning}"));
                    }
                    increment_here(ctx, metrics.discovery_refreshes);
                    let published = Published { at: now_secs(), mapping: built.mapping };
                    publish(ctx, config, metrics, &published);
                    let mut state = self.state();
                    state.published = Some(published);
                    state.lease = None;
                }
                Action::Failed(message) => {
                    increment_here(ctx, metrics.discovery_failures);
                    log(Level::Warn, &failure_note(&read(config), &message));
                    self.state().lease = Some(Lease::after_failure(now_secs(), discover.interval_s));
                }
            }
        }
    }
}

/// Applies a new mapping: a new configuration for new requests (a request keeps the one it
/// began with).
fn publish(ctx: &mut ConfigContext<'_>, config: &RwLock<Arc<Config>>, metrics: &Metrics, published: &Published) {
    let current = read(config);
    match apply(&current, &published.mapping) {
        Ok(Applied { config: new, note }) => {
            if let Err(e) = ctx.set_gauge(metrics.discovery_registries, published.mapping.entries.len() as u64) {
                log(Level::Warn, &format!("discovery: setting the gauge: {e}"));
            }
            if let Some(note) = note {
                log(Level::Info, &note);
            }
            *config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        }
        Err(e) => log(Level::Error, &format!("discovery: the mapping does not compile: {e}")),
    }
}

/// The configuration new requests get.
pub fn read(config: &RwLock<Arc<Config>>) -> Arc<Config> {
    config.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Sends Harbor's API `GET path` through the discovery cluster.
fn send(ctx: &mut ConfigContext<'_>, discover: &Discover, path: &str) -> Result<u64, String> {
    let mut headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"GET"),
        (b":path", path.as_bytes()),
        (b"host", discover.authority.as_bytes()),
        (b"accept", b"application/json"),
        (b"user-agent", b"harbor-mirror"),
    ];
    if let Some(authorization) = &discover.authorization {
        headers.push((b"authorization", authorization.as_bytes()));
    }
    let request = CalloutRequest { cluster: &discover.cluster, headers: &headers, body: b"", timeout: Duration::from_millis(discover.timeout_ms) };
    ctx.http_callout(&request).map(|id| id.0).map_err(|e| e.to_string())
}
