//! The module tests/smoke.sh loads into Envoy 1.40: a little of every safe API.
//!
//! Filter configuration (a `google.protobuf.StringValue`), one `key=value` per line:
//! `callout_cluster=<name>` (required) and `timer_ms=<n>` (default 300). Anything else is refused.
//!
//! Per request:
//! - every request: counter `smoke_requests`, filter state `smoke.path` = the original `:path`,
//!   gauge `smoke_in_flight` up (down again in `on_stream_complete`), gauge `smoke_last_worker` =
//!   worker index + 1;
//! - `/state-twice`: sets `smoke.path` a second time (to `second`) and answers what that returned
//!   and what reads back;
//! - `/slow-response`: the response headers are held and resumed 50 ms later by the filter's
//!   scheduler (response header `x-smoke-resumed-response: yes`);
//! - `/local...`: local reply 418, headers `x-smoke-local: yes` and `content-type:
//!   application/json`, body `local body`;
//! - `/rewrite/<rest>`: `:path` becomes `/rewritten/<rest>`; request header `x-smoke-seen` gets the
//!   request's `x-smoke-in`, `x-smoke-multi` all values of `x-multi` joined by `|`;
//!   `x-smoke-drop` is removed and `x-smoke-added` added twice (`one`, `two`);
//! - `/callout`: stops, calls `GET /answer` on the callout cluster, answers
//!   `callout said: <body>` with `x-callout-status`;
//! - `/resume`: stops, asks the timer thread to wake this filter after 50 ms through its
//!   scheduler, then continues with request header `x-smoke-resumed: yes`;
//! - `/timer`: answers how often the configuration's timer fired and what its own callout got;
//! - responses: `x-smoke-response` replaced by `replaced`, `x-smoke-req-path` = the request's
//!   `:path` read in the response phase.
//!
//! The configuration's timer fires every `timer_ms` on the main thread (counter
//! `smoke_timer_fired`, gauge `smoke_last_tick`) and each time calls `GET /config-answer` on the
//! callout cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use envoy_dynamic_module::log::Level;
use envoy_dynamic_module::{
    CalloutId, CalloutOutcome, CalloutRequest, CalloutResponse, ConfigContext, ConfigError, ConfigScheduler, CounterId,
    FilterConfig, FilterScheduler, GaugeId, HeaderMap, HeadersStatus, HttpFilter, HttpFilterHandle, Module, RecordMetrics, Timer,
    envoy_log,
};

struct Smoke;

impl Module for Smoke {
    type Config = SmokeConfig;

    fn init() -> Result<(), String> {
        envoy_dynamic_module::log::log(Level::Info, "smoke module loaded");
        Ok(())
    }

    fn new_config(ctx: &mut ConfigContext<'_>, name: &str, config: &[u8]) -> Result<SmokeConfig, ConfigError> {
        let settings = Settings::parse(config)?;
        let requests = ctx.define_counter("smoke_requests").map_err(|e| ConfigError(e.to_string()))?;
        let fired = ctx.define_counter("smoke_timer_fired").map_err(|e| ConfigError(e.to_string()))?;
        let last_tick = ctx.define_gauge("smoke_last_tick").map_err(|e| ConfigError(e.to_string()))?;
        let in_flight = ctx.define_gauge("smoke_in_flight").map_err(|e| ConfigError(e.to_string()))?;
        let last_worker = ctx.define_gauge("smoke_last_worker").map_err(|e| ConfigError(e.to_string()))?;
        let validating = ctx.is_validation_mode();
        let (timer, scheduler) = if validating {
            (None, None)
        } else {
            let timer = Timer::spawn("smoke-timer").map_err(|e| ConfigError(format!("timer thread: {e}")))?;
            let scheduler = ctx.scheduler().ok_or("Envoy gave no configuration scheduler")?;
            timer.schedule(settings.timer, &scheduler, TICK);
            (Some(timer), Some(scheduler))
        };
        envoy_dynamic_module::log::log(
            Level::Info,
            &format!("smoke config {name:?} created (validation mode: {validating}, workers: {})", ctx.concurrency()),
        );
        Ok(SmokeConfig {
            settings,
            requests,
            fired,
            last_tick,
            in_flight,
            last_worker,
            scheduler,
            shared: Arc::new(Shared { timer, ticks: AtomicU64::new(0), config_callout: Mutex::new(String::new()) }),
        })
    }
}

envoy_dynamic_module::export_module!(Smoke);

const TICK: u64 = 1;
const RESUME: u64 = 7;
const RESUME_RESPONSE: u64 = 8;

#[derive(Debug)]
struct Settings {
    callout_cluster: String,
    timer: Duration,
}

impl Settings {
    fn parse(config: &[u8]) -> Result<Settings, ConfigError> {
        let text = std::str::from_utf8(config).map_err(|_| "smoke config: not UTF-8")?;
        let mut callout_cluster = None;
        let mut timer = Duration::from_millis(300);
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(ConfigError(format!("smoke config line {number}: expected key=value, got {line:?}")));
            };
            match key.trim() {
                "callout_cluster" => callout_cluster = Some(value.trim().to_owned()),
                "timer_ms" => {
                    let ms: u64 = value.trim().parse().map_err(|_| {
                        ConfigError(format!("smoke config line {number}: timer_ms must be a number, got {value:?}"))
                    })?;
                    timer = Duration::from_millis(ms);
                }
                other => return Err(ConfigError(format!("smoke config line {number}: unknown key {other:?}"))),
            }
        }
        let callout_cluster = callout_cluster.ok_or("smoke config: callout_cluster is required")?;
        Ok(Settings { callout_cluster, timer })
    }
}

/// What filters and the configuration share.
struct Shared {
    timer: Option<Timer>,
    ticks: AtomicU64,
    config_callout: Mutex<String>,
}

struct SmokeConfig {
    settings: Settings,
    requests: CounterId,
    fired: CounterId,
    last_tick: GaugeId,
    in_flight: GaugeId,
    last_worker: GaugeId,
    scheduler: Option<ConfigScheduler>,
    shared: Arc<Shared>,
}

impl Drop for SmokeConfig {
    fn drop(&mut self) {
        envoy_dynamic_module::log::log(Level::Info, "smoke config dropped");
    }
}

impl FilterConfig for SmokeConfig {
    type Filter = SmokeFilter;

    fn new_filter(&self, _envoy: &mut HttpFilterHandle<'_>) -> SmokeFilter {
        SmokeFilter {
            requests: self.requests,
            in_flight: self.in_flight,
            last_worker: self.last_worker,
            counted_in_flight: false,
            callout_cluster: self.settings.callout_cluster.clone(),
            shared: Arc::clone(&self.shared),
            scheduler: None,
        }
    }

    fn on_scheduled(&self, ctx: &mut ConfigContext<'_>, event_id: u64) {
        if event_id != TICK {
            return;
        }
        let ticks = self.shared.ticks.fetch_add(1, Ordering::SeqCst) + 1;
        let counted = ctx.increment_counter(self.fired, 1);
        let gauged = ctx.set_gauge(self.last_tick, ticks);
        envoy_log!(Level::Info, "smoke timer fired ({ticks}) on the main thread: counter {counted:?}, gauge {gauged:?}");
        let request = CalloutRequest {
            cluster: &self.settings.callout_cluster,
            headers: &[(b":method", b"GET"), (b":path", b"/config-answer"), (b"host", b"callout")],
            body: b"",
            timeout: Duration::from_secs(2),
        };
        if let Err(error) = ctx.http_callout(&request) {
            envoy_log!(Level::Error, "smoke config callout not sent: {error}");
        }
        if let (Some(timer), Some(scheduler)) = (&self.shared.timer, &self.scheduler) {
            timer.schedule(self.settings.timer, scheduler, TICK);
        }
    }

    fn on_callout_done(&self, _ctx: &mut ConfigContext<'_>, callout: CalloutId, response: CalloutResponse<'_>) {
        let text = format!("{:?} {:?} {}", response.outcome(), response.status(), String::from_utf8_lossy(&response.body()));
        envoy_log!(Level::Info, "smoke config callout {} done: {text}", callout.0);
        *self.shared.config_callout.lock().unwrap_or_else(PoisonError::into_inner) = text;
    }
}

struct SmokeFilter {
    requests: CounterId,
    in_flight: GaugeId,
    last_worker: GaugeId,
    counted_in_flight: bool,
    callout_cluster: String,
    shared: Arc<Shared>,
    scheduler: Option<FilterScheduler>,
}

impl HttpFilter for SmokeFilter {
    fn on_request_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _end_of_stream: bool) -> HeadersStatus {
        if let Err(error) = envoy.increment_counter(self.requests, 1) {
            envoy_log!(Level::Error, "smoke: counter: {error}");
        }
        self.counted_in_flight = envoy.increase_gauge(self.in_flight, 1).is_ok();
        let worker = u64::from(envoy.worker_index()) + 1;
        if let Err(error) = envoy.set_gauge(self.last_worker, worker) {
            envoy_log!(Level::Error, "smoke: gauge: {error}");
        }
        let Some(path) = envoy.header(HeaderMap::Request, b":path").map(<[u8]>::to_vec) else {
            return HeadersStatus::Continue;
        };
        envoy.set_filter_state(b"smoke.path", &path);
        envoy_log!(Level::Debug, "smoke: request {} on worker {}", String::from_utf8_lossy(&path), envoy.worker_index());

        if path == b"/state-twice" {
            let again = envoy.set_filter_state(b"smoke.path", b"second");
            let read = envoy.filter_state(b"smoke.path").map(String::from_utf8_lossy).unwrap_or_default();
            let body = format!("second set_filter_state returned {again}, reads back {read}\n");
            envoy.send_local_response(200, &[], body.as_bytes(), None);
            return HeadersStatus::StopIteration;
        }
        if path.starts_with(b"/local") {
            envoy.send_local_response(
                418,
                &[(b"x-smoke-local", b"yes"), (b"content-type", b"application/json")],
                b"local body\n",
                Some("smoke local reply"),
            );
            return HeadersStatus::StopIteration;
        }
        if let Some(rest) = path.strip_prefix(b"/rewrite/") {
            let seen = envoy.header(HeaderMap::Request, b"x-smoke-in").unwrap_or(b"(none)").to_vec();
            let multi = envoy.header_values(HeaderMap::Request, b"x-multi").join(&b'|');
            // The whole map in one walk: the first name, every x-multi in order, how many x-many.
            let (mut first, mut walked_multi, mut many) = (Vec::new(), Vec::new(), 0);
            envoy.for_each_header(HeaderMap::Request, |name, value| {
                if first.is_empty() {
                    first = name.to_vec();
                }
                if name == b"x-multi" {
                    walked_multi.push(value);
                }
                many += usize::from(name.starts_with(b"x-many-"));
            });
            let walked = format!("first={} multi={} many={many}", String::from_utf8_lossy(&first), String::from_utf8_lossy(&walked_multi.join(&b'|')));
            let mut new_path = b"/rewritten/".to_vec();
            new_path.extend_from_slice(rest);
            envoy.set_header(HeaderMap::Request, b":path", &new_path);
            envoy.set_header(HeaderMap::Request, b"x-smoke-seen", &seen);
            envoy.set_header(HeaderMap::Request, b"x-smoke-multi", &multi);
            envoy.set_header(HeaderMap::Request, b"x-smoke-walked", walked.as_bytes());
            envoy.remove_header(HeaderMap::Request, b"x-smoke-drop");
            envoy.add_header(HeaderMap::Request, b"x-smoke-added", b"one");
            envoy.add_header(HeaderMap::Request, b"x-smoke-added", b"two");
            envoy.clear_route_cache();
            return HeadersStatus::Continue;
        }
        if path == b"/callout" {
            let request = CalloutRequest {
                cluster: &self.callout_cluster,
                headers: &[(b":method", b"GET"), (b":path", b"/answer"), (b"host", b"callout")],
                body: b"",
                timeout: Duration::from_secs(2),
            };
            return match envoy.http_callout(&request) {
                Ok(_) => HeadersStatus::StopIteration,
                Err(error) => {
                    envoy.send_local_response(500, &[], error.to_string().as_bytes(), Some("smoke callout not sent"));
                    HeadersStatus::StopIteration
                }
            };
        }
        if path == b"/resume" {
            let (Some(timer), Some(scheduler)) = (&self.shared.timer, envoy.scheduler()) else {
                envoy.send_local_response(500, &[], b"no timer or scheduler\n", None);
                return HeadersStatus::StopIteration;
            };
            timer.schedule(Duration::from_millis(50), &scheduler, RESUME);
            self.scheduler = Some(scheduler);
            return HeadersStatus::StopIteration;
        }
        if path == b"/timer" {
            let ticks = self.shared.ticks.load(Ordering::SeqCst);
            let callout = self.shared.config_callout.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let body = format!("timer fired {ticks}; config callout: {callout}\n");
            envoy.send_local_response(200, &[], body.as_bytes(), None);
            return HeadersStatus::StopIteration;
        }
        HeadersStatus::Continue
    }

    fn on_response_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _end_of_stream: bool) -> HeadersStatus {
        envoy.set_header(HeaderMap::Response, b"x-smoke-response", b"replaced");
        let Some(path) = envoy.header(HeaderMap::Request, b":path").map(<[u8]>::to_vec) else {
            return HeadersStatus::Continue;
        };
        envoy.set_header(HeaderMap::Response, b"x-smoke-req-path", &path);
        if path == b"/slow-response"
            && let (Some(timer), Some(scheduler)) = (&self.shared.timer, envoy.scheduler())
        {
            timer.schedule(Duration::from_millis(50), &scheduler, RESUME_RESPONSE);
            self.scheduler = Some(scheduler);
            return HeadersStatus::StopIteration;
        }
        HeadersStatus::Continue
    }

    fn on_stream_complete(&mut self, envoy: &mut HttpFilterHandle<'_>) {
        if self.counted_in_flight {
            let _ = envoy.decrease_gauge(self.in_flight, 1);
        }
    }

    fn on_callout_done(&mut self, envoy: &mut HttpFilterHandle<'_>, _callout: CalloutId, response: CalloutResponse<'_>) {
        if response.outcome() != CalloutOutcome::Success {
            envoy.send_local_response(502, &[], format!("{:?}\n", response.outcome()).as_bytes(), Some("smoke callout failed"));
            return;
        }
        let status = response.status().unwrap_or(0).to_string();
        let mut body = b"callout said: ".to_vec();
        body.extend_from_slice(&response.body());
        envoy.send_local_response(200, &[(b"x-callout-status", status.as_bytes())], &body, Some("smoke callout answered"));
    }

    fn on_scheduled(&mut self, envoy: &mut HttpFilterHandle<'_>, event_id: u64) {
        if event_id == RESUME {
            envoy.set_header(HeaderMap::Request, b"x-smoke-resumed", b"yes");
            envoy.continue_decoding();
        } else if event_id == RESUME_RESPONSE {
            let set = envoy.set_header(HeaderMap::Response, b"x-smoke-resumed-response", b"yes");
            envoy_log!(Level::Debug, "smoke: resuming the response (header set: {set})");
            envoy.continue_encoding();
        }
    }
}
