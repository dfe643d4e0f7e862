//! The dynamic-module adapter: the core's [`driver`](harbor_mirror_core::driver) bound to
//! Envoy's `envoy.filters.http.dynamic_modules` filter, as a shared object
//! (`dist/libharbor_mirror.so`, module and filter name `harbor_mirror`, the filter
//! configuration the same JSON as the wasm filter's, as a `google.protobuf.StringValue`).
//!
//! [`host`] implements the core's host interface with our bindings (`crates/dynamic-module`);
//! this file registers the driver's events with them. Unlike the wasm filter's VMs, the workers
//! share one process: one [`Plugin`] serves the whole Envoy, managed mode's token calls and
//! discovery's refresh run on Envoy's main thread, and the data every worker shares lives in
//! the plugin's memory ([`SharedData`](harbor_mirror_core::shared_data::SharedData)).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod host;

use std::sync::Arc;
use std::time::Duration;

use envoy_dynamic_module::{
    CalloutId, CalloutResponse, ConfigContext, ConfigError, FilterConfig, HeadersStatus, HttpFilter, HttpFilterHandle, Module, Timer,
};

use harbor_mirror_core::driver::{Exchange, Plugin, TICK};
use harbor_mirror_core::host::Flow;

use host::{CalloutAnswer, On, Shared, SEND_CALLS_EVENT, TICK_EVENT, WOKEN_EVENT};

/// The first tick: soon, but after Envoy's clusters are up.
const FIRST_TICK: Duration = Duration::from_millis(100);

struct HarborMirror;

envoy_dynamic_module::export_module!(HarborMirror);

impl Module for HarborMirror {
    type Config = MirrorConfig;

    fn new_config(ctx: &mut ConfigContext<'_>, _name: &str, json: &[u8]) -> Result<MirrorConfig, ConfigError> {
        // `--mode validate` parses and checks only: no scheduler, no timer.
        let scheduler = if ctx.is_validation_mode() { None } else { ctx.scheduler() };
        let shared = Arc::new(Shared::new(scheduler));
        let plugin = Plugin::configure(&mut On::new(ctx, &shared), json).map_err(ConfigError)?;
        let needs_main = plugin.discovers() || plugin.manages() || plugin.coalesces();
        if needs_main && !ctx.is_validation_mode() && !shared.has_scheduler() {
            return Err(ConfigError::from("Envoy gave the configuration no scheduler"));
        }
        let timer = match shared.scheduler() {
            // Discovery refreshes on it; coalescing lets requests that waited too long go on.
            Some(scheduler) if plugin.discovers() || plugin.coalesces() => {
                let timer = Timer::spawn("harbor-mirror").map_err(|e| ConfigError(format!("cannot start the plugin's timer thread: {e}")))?;
                timer.schedule(FIRST_TICK, scheduler, TICK_EVENT);
                Some(timer)
            }
            _ => None,
        };
        Ok(MirrorConfig { plugin: Arc::new(plugin), shared, timer })
    }
}

/// The filter configuration Envoy holds (shared by every worker).
struct MirrorConfig {
    plugin: Arc<Plugin>,
    shared: Arc<Shared>,
    /// The plugin's timer, with discovery or coalescing; stopped and joined when Envoy drops the
    /// configuration.
    timer: Option<Timer>,
}

impl FilterConfig for MirrorConfig {
    type Filter = MirrorFilter;

    fn new_filter(&self, _envoy: &mut HttpFilterHandle<'_>) -> MirrorFilter {
        MirrorFilter { plugin: self.plugin.clone(), shared: self.shared.clone(), exchange: Exchange::new(self.shared.next_request()) }
    }

    fn on_scheduled(&self, ctx: &mut ConfigContext<'_>, event_id: u64) {
        let mut host = On::new(ctx, &self.shared);
        match event_id {
            TICK_EVENT => {
                self.plugin.on_tick(&mut host);
                if let (Some(timer), Some(scheduler)) = (&self.timer, self.shared.scheduler()) {
                    timer.schedule(TICK, scheduler, TICK_EVENT);
                }
            }
            SEND_CALLS_EVENT => self.plugin.on_plugin_woken(&mut host),
            _ => {}
        }
    }

    fn on_callout_done(&self, ctx: &mut ConfigContext<'_>, callout: CalloutId, response: CalloutResponse<'_>) {
        self.plugin.on_call_answer(&mut On::new(ctx, &self.shared), callout.0, &CalloutAnswer(&response));
    }
}

/// One stream.
struct MirrorFilter {
    plugin: Arc<Plugin>,
    shared: Arc<Shared>,
    exchange: Exchange,
}

impl HttpFilter for MirrorFilter {
    fn on_request_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _end_of_stream: bool) -> HeadersStatus {
        status(self.plugin.on_request_headers(&mut On::new(envoy, &self.shared), &mut self.exchange))
    }

    fn on_scheduled(&mut self, envoy: &mut HttpFilterHandle<'_>, event_id: u64) {
        if event_id == WOKEN_EVENT {
            self.plugin.on_woken(&mut On::new(envoy, &self.shared), self.exchange.id());
        }
    }

    fn on_response_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _end_of_stream: bool) -> HeadersStatus {
        status(self.plugin.on_response_headers(&mut On::new(envoy, &self.shared), &mut self.exchange))
    }

    fn on_response_body(&mut self, envoy: &mut HttpFilterHandle<'_>, end_of_stream: bool) {
        self.plugin.on_response_body(&mut On::new(envoy, &self.shared), &mut self.exchange, end_of_stream);
    }

    fn on_stream_complete(&mut self, envoy: &mut HttpFilterHandle<'_>) {
        self.plugin.on_stream_end(&mut On::new(envoy, &self.shared), &self.exchange);
        if self.exchange.waited() {
            self.shared.forget_waker(self.exchange.id());
        }
    }
}

fn status(flow: Flow) -> HeadersStatus {
    match flow {
        Flow::Continue => HeadersStatus::Continue,
        Flow::Pause => HeadersStatus::StopIteration,
    }
}
