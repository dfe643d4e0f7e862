//! harbor-mirror: a proxy-wasm filter that lets every container client use a Harbor registry as
//! a transparent pull-through mirror.
//!
//! Clients configured with a mirror ask for `library/nginx`; Harbor serves Docker Hub's images
//! from a proxy-cache project, `dockerhub-proxy/library/nginx`. The filter rewrites the request
//! path in between. This crate's core is host-free: [`Config`] compiles the plugin
//! configuration once, and [`decide`] maps one request to a [`Decision`]; [`exchange::plan`] is
//! what an adapter does with it. The adapters apply it inside Envoy: the proxy-wasm filter
//! (`crates/filter`) and the dynamic module (`crates/module`).
//!
//! ```
//! use harbor_mirror_core::{decide, Config, Request};
//!
//! let config = Config::from_json(br#"{
//!     "registries": {"docker.io": {"project": "dockerhub-proxy"}},
//!     "default_registry": "docker.io"
//! }"#)?;
//! let request = Request {
//!     method: "GET",
//!     path: "/v2/library/nginx/manifests/latest?ns=docker.io",
//!     authority: "mirror.example.com",
//! };
//! let decision = decide(&config, &request);
//! assert_eq!(decision.new_path(), Some("/v2/dockerhub-proxy/library/nginx/manifests/latest"));
//! # Ok::<(), harbor_mirror_core::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

// Layers, each using only those below it:
//   exchange                          one request through an adapter
//   higress, managed, response        the plugin's configurations; managed mode; answers
//   discovery                         the mapping read from Harbor's API
//   decide                            one request's decision
//   scopes, challenge                 token scopes (pass-through); WWW-Authenticate
//   names                             a client's name to Harbor's
//   config, wire                      the compiled configuration; its JSON form
//   refusal, oci, path, query, authority, harbor, base64    grammar and text

mod ascii;
mod base64;
pub mod authority;
pub mod challenge;
pub mod config;
pub mod decide;
pub mod discovery;
pub mod docker_hub;
pub mod exchange;
pub mod harbor;
pub mod higress;
pub mod managed;
pub mod names;
pub mod oci;
pub mod path;
pub mod query;
pub mod refusal;
pub mod response;
pub mod scopes;
mod wire;

pub use config::{Config, ConfigError};
pub use decide::{decide, Decision, Request, Route, SelectedBy};
pub use higress::PluginConfig;
pub use names::Rule;
pub use refusal::Refusal;
