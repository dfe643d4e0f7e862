//! The proxy-wasm adapter: the core's [`driver`](harbor_mirror_core::driver) bound to Envoy
//! through proxy-wasm. [`host`] implements the core's host interface with proxy-wasm's host
//! calls; this file registers the driver's events with the SDK's contexts. Every decision, step
//! and metric name is the core's.
//!
//! Each Envoy worker (and the main thread) runs its own VM, so each holds its own [`Plugin`];
//! what they share (managed mode's token cache, discovery's mapping) goes through Envoy's shared
//! data.
#![cfg(target_arch = "wasm32")]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod host;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use harbor_mirror_core::driver::{Exchange, Plugin, TICK};
use harbor_mirror_core::host::Flow;

use host::{CallAnswerHere, WasmHost};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| Box::new(Root { id: context_id, plugin: None }));
}}

/// The VM's root context: the plugin's configuration, its timer and its own calls.
struct Root {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let Some(plugin) = &self.plugin {
            plugin.on_call_answer(&mut WasmHost::new(Some(plugin), self.id), u64::from(token_id), &CallAnswerHere { body_size });
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(plugin) = &self.plugin {
            plugin.on_stop(&mut WasmHost::new(Some(plugin), self.id));
        }
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let mut host = WasmHost::new(None, self.id);
        let json = match host.plugin_configuration() {
            Ok(json) => json,
            Err(e) => {
                host::log(LogLevel::Error, &format!("cannot read the plugin configuration: {e}"));
                return false;
            }
        };
        match Plugin::configure(&mut host, &json) {
            Ok(plugin) => {
                self.plugin = Some(Rc::new(plugin));
                self.set_tick_period(TICK);
                true
            }
            Err(line) => {
                host::log(LogLevel::Error, &line);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = &self.plugin {
            plugin.on_tick(&mut WasmHost::new(Some(plugin), self.id));
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request { plugin: self.plugin.clone(), exchange: Exchange::new(context_id) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request's context.
struct Request {
    /// `None` only if the plugin was never configured, in which case Envoy does not start.
    plugin: Option<Rc<Plugin>>,
    exchange: Exchange,
}

impl Context for Request {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let Some(plugin) = &self.plugin {
            let mut host = WasmHost::new(Some(plugin), self.exchange.id());
            plugin.on_call_answer(&mut host, u64::from(token_id), &CallAnswerHere { body_size });
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(plugin) = &self.plugin {
            plugin.on_stream_end(&mut WasmHost::new(Some(plugin), self.exchange.id()), &self.exchange);
        }
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "fault-injection")]
        host::abort_if_asked();
        let Some(plugin) = &self.plugin else {
            return Action::Continue;
        };
        action(plugin.on_request_headers(&mut WasmHost::new(Some(plugin), self.exchange.id()), &mut self.exchange))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plugin) = &self.plugin else {
            return Action::Continue;
        };
        action(plugin.on_response_headers(&mut WasmHost::new(Some(plugin), self.exchange.id()), &mut self.exchange))
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}
