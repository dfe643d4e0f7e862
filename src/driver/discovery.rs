//! Discovery's flow: the mapping every worker shares (one shared-data entry per Harbor and
//! account), the lease that lets one plugin instance refresh it per interval, the API calls of
//! the refresh machine ([`Refresh`]), and each new mapping applied to the configuration new
//! requests get.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::config::{Config, ConfigError, Discover, Discovered};
use crate::discovery::refresh::{ApiAnswer, Refresh, Step};
use crate::discovery::{should_refresh, Lease, Mapping, Published};
use crate::host::{CallAnswer, CallId, CallRequest, Host, Level, SharedValue, Written};
use crate::metrics::{Metric, Metrics};

use super::active::{Active, Current};

/// The largest API answer read (a page of 100 projects is about 60 KiB).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// One configuration's discovery in this plugin instance.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    refresh: Refresh,
    /// The call in flight, so that answers go to the refresh that made it.
    call: Option<CallId>,
    /// When the mapping this instance applied was read (its shared entry's `at`).
    applied_at: Option<u64>,
}

impl Discovery {
    /// At configure: the lease exists from the start, so that instances taking it compare and
    /// swap (a missing key has no version to compare).
    pub(super) fn prepare(host: &mut impl Host, discover: &Discover) -> Discovery {
        let key = lease_key(discover);
        if read(host, &key).is_none() {
            let _ = host.set_shared_data(&key, Lease { until: 0 }.encode().as_bytes(), None);
        }
        Discovery::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether call `call` is this discovery's.
    pub(super) fn owns(&self, call: CallId) -> bool {
        self.state().call == Some(call)
    }

    /// The plugin's timer: apply a mapping another instance published, and start a refresh when
    /// one is due and this instance wins the lease.
    pub(super) fn on_tick(&self, metrics: &Metrics, current: &Current, host: &mut impl Host) {
        let active = current.get();
        let Some(discover) = &active.config.discover else {
            return;
        };
        let Ok(now) = host.now_secs() else {
            return;
        };
        let published = read(host, &published_key(discover)).and_then(|shared| Published::decode(&shared.value));
        if let Some(published) = &published {
            self.apply(metrics, current, host, published);
        }
        if self.state().refresh.is_running() {
            return;
        }
        let (lease, cas) = match read(host, &lease_key(discover)) {
            Some(shared) => (Lease::decode(&shared.value), shared.cas),
            None => (None, None),
        };
        if !should_refresh(now, discover.interval_s, published.as_ref(), lease.as_ref()) {
            return;
        }
        // Compare-and-swap: of instances that find the lease free at once, one writes it.
        if !matches!(host.set_shared_data(&lease_key(discover), Lease::take(now).encode().as_bytes(), cas), Ok(Written::Stored)) {
            return;
        }
        let steps = self.state().refresh.start(discover.robot.as_deref());
        self.run(metrics, current, host, discover, steps);
    }

    /// Harbor answered call `call` of this discovery.
    pub(super) fn on_answer(&self, metrics: &Metrics, current: &Current, host: &mut impl Host, call: CallId, answer: &impl CallAnswer) {
        let active = current.get();
        let Some(discover) = &active.config.discover else {
            return;
        };
        self.state().call = None;
        let status = answer.status();
        let next_link = answer.header_contains("link", "rel=\"next\"");
        let total = answer.header("x-total-count").and_then(|value| std::str::from_utf8(&value).ok()?.trim().parse().ok());
        let body = answer.body(MAX_ANSWER);
        let steps = self.state().refresh.on_answer(call, ApiAnswer { status, body: &body, next_link, total });
        self.run(metrics, current, host, discover, steps);
    }

    /// Carries out the refresh machine's steps, and those their reports lead to.
    fn run(&self, metrics: &Metrics, current: &Current, host: &mut impl Host, discover: &Discover, steps: Vec<Step>) {
        let mut steps = VecDeque::from(steps);
        while let Some(step) = steps.pop_front() {
            match step {
                Step::Dispatch { path } => {
                    let sent = send(host, discover, &path);
                    let mut state = self.state();
                    if let Ok(call) = sent {
                        state.call = Some(call);
                    }
                    let more = state.refresh.dispatched(sent.map_err(|e| e.to_string()));
                    drop(state);
                    steps.extend(more);
                }
                Step::Publish(built) => {
                    for warning in &built.warnings {
                        host.log(Level::Warn, format_args!("discovery: {warning}"));
                    }
                    metrics.add_one(host, Metric::DiscoveryRefreshes);
                    let Ok(now) = host.now_secs() else {
                        continue;
                    };
                    let published = Published { at: now, mapping: built.mapping };
                    if let Err(e) = host.set_shared_data(&published_key(discover), published.encode().as_bytes(), None) {
                        host.log(Level::Warn, format_args!("discovery: sharing the mapping: {e}"));
                    }
                    let _ = host.set_shared_data(&lease_key(discover), Lease::released(now).encode().as_bytes(), None);
                    self.apply(metrics, current, host, &published);
                }
                Step::Failed(message) => {
                    metrics.add_one(host, Metric::DiscoveryFailures);
                    host.log(Level::Warn, failure_note(&current.get().config, &message));
                    if let Ok(now) = host.now_secs() {
                        let lease = Lease::after_failure(now, discover.interval_s);
                        let _ = host.set_shared_data(&lease_key(discover), lease.encode().as_bytes(), None);
                    }
                }
            }
        }
    }

    /// Applies `published` if this instance has not: a new configuration for new requests.
    fn apply(&self, metrics: &Metrics, current: &Current, host: &mut impl Host, published: &Published) {
        if self.state().applied_at == Some(published.at) {
            return;
        }
        let Applied { config, note } = match apply(&current.get().config, &published.mapping) {
            Ok(applied) => applied,
            Err(e) => {
                host.log(Level::Error, format_args!("discovery: the mapping does not compile: {e}"));
                return;
            }
        };
        let registry_counters = match metrics.define_registries(host, &config) {
            Ok(counters) => counters,
            Err(e) => {
                host.log(Level::Warn, format_args!("discovery: defining metrics: {e}"));
                metrics.known_registries(&config)
            }
        };
        if let Some(gauge) = metrics.gauge(Metric::DiscoveryRegistries)
            && let Err(e) = host.set_gauge(gauge, published.mapping.entries.len() as u64)
        {
            host.log(Level::Warn, format_args!("discovery: setting the gauge: {e}"));
        }
        if let Some(note) = note {
            host.log(Level::Info, note);
        }
        current.replace(Active::new(config, registry_counters));
        self.state().applied_at = Some(published.at);
    }
}

/// Sends Harbor's API `GET path` through the discovery cluster.
fn send(host: &mut impl Host, discover: &Discover, path: &str) -> Result<CallId, crate::host::HostError> {
    let with_robot;
    let headers: &[(&str, &str)] = match &discover.authorization {
        Some(authorization) => {
            with_robot = [("accept", "application/json"), ("authorization", authorization.as_str())];
            &with_robot
        }
        None => &[("accept", "application/json")],
    };
    host.send_call(&CallRequest { method: "GET", cluster: &discover.cluster, path, authority: &discover.authority, headers, timeout_ms: discover.timeout_ms })
}

/// The shared-data key of the published mapping, per Harbor and account.
fn published_key(discover: &Discover) -> String {
    format!("harbor_mirror.discovery/{}/{}", discover.authority, discover.robot.as_deref().unwrap_or("-"))
}

/// The shared-data key of the refresh lease, per Harbor and account.
fn lease_key(discover: &Discover) -> String {
    format!("harbor_mirror.discovery.lease/{}/{}", discover.authority, discover.robot.as_deref().unwrap_or("-"))
}

/// A shared value; `None` when absent or unreadable.
fn read(host: &impl Host, key: &str) -> Option<SharedValue> {
    host.shared_data(key).ok().flatten()
}

/// A configuration with a mapping read from Harbor applied, and what changed.
#[derive(Debug)]
struct Applied {
    /// The configuration new requests get.
    config: Config,
    /// The info line to log: registries added, removed or changed; on the first mapping with no
    /// proxy-cache project, that Harbor has none; `None` when nothing changed.
    note: Option<String>,
}

/// Applies `mapping` to `current`, the configuration requests get now.
fn apply(current: &Config, mapping: &Mapping) -> Result<Applied, ConfigError> {
    let (old, first) = match &current.discovered {
        Discovered::Applied(old) => (old.clone(), false),
        _ => (Mapping::default(), true),
    };
    let config = current.with_mapping(mapping)?;
    let note = match mapping.changes_from(&old) {
        Some(changes) => Some(format!("discovery: registries {changes}")),
        None if first => Some("discovery: harbor has no proxy-cache project this mirror can see".to_owned()),
        None => None,
    };
    Ok(Applied { config, note })
}

/// The warning for a refresh that failed with `message`, under `current`: what requests keep.
fn failure_note(current: &Config, message: &str) -> String {
    let kept = match &current.discovered {
        Discovered::Applied(mapping) => format!("keeping the last good mapping: {mapping}"),
        _ => "no mapping yet: requests that need one get 503".to_owned(),
    };
    format!("discovery: {message}; {kept}")
}
