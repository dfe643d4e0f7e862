//! The driver: every flow of the filter, run against the [`host`](crate::host) interface, so that
//! the proxy-wasm filter and the dynamic module only bind it to Envoy.
//!
//! A [`Plugin`] is one configured instance of the filter: one per wasm VM (each worker's, and
//! the main thread's), one for the whole Envoy in the dynamic module. It holds the compiled
//! configurations (one, or one per Higress domain rule), the metrics, managed mode's fetches and
//! discovery's refresh. The adapter hands it Envoy's events:
//!
//! | event | method | where it runs |
//! | --- | --- | --- |
//! | the plugin is configured | [`Plugin::configure`] | the plugin's context |
//! | a request's headers arrive | [`Plugin::on_request_headers`] | the request's |
//! | a paused request is woken | [`Plugin::on_woken`] | the request's |
//! | the answer's headers arrive | [`Plugin::on_response_headers`] | the request's |
//! | a chunk of the answer's body arrives (a host that reads bodies) | [`Plugin::on_response_body`] | the request's |
//! | the request ends | [`Plugin::on_stream_end`] | the request's |
//! | the timer ticks | [`Plugin::on_tick`] | the plugin's |
//! | a call is answered | [`Plugin::on_call_answer`] | the context that sent it |
//! | the plugin is woken to send calls | [`Plugin::on_plugin_woken`] | the plugin's |
//! | the plugin stops | [`Plugin::on_stop`] | the plugin's |
//!
//! Inside, each file imports only those below it: `exchange` one request's flow; `plugin` the
//! instance and its own events; `tokens` managed mode's token cache and fetches and `discovery`
//! the refresh of the mapping, both over the data every worker shares
//! ([`Host::shared_data`](crate::host::Host::shared_data)); `waiting` the identical manifest
//! GETs waiting for the one in flight ([`coalesce`](crate::coalesce)); `woken` what a paused
//! request takes when it is woken; `active` the configuration requests get now.

mod active;
mod discovery;
mod exchange;
mod plugin;
mod tokens;
mod waiting;
mod woken;

pub use exchange::{Exchange, ORIGINAL_PATH_KEY};
pub use plugin::{Plugin, TICK};
