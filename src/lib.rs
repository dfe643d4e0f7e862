//! harbor-mirror: a proxy-wasm filter that lets every container client use a Harbor registry as
//! a transparent pull-through mirror.
//!
//! Clients configured with a mirror ask for `library/nginx`; Harbor serves Docker Hub's images
//! from a proxy-cache project, `dockerhub-proxy/library/nginx`. The filter rewrites the request
//! path in between. This crate's core is host-free: [`Config`] compiles the plugin
//! configuration once, and [`decide`] maps one request to a [`Decision`]. The proxy-wasm
//! adapter (built for `wasm32-wasip1` only) applies decisions inside Envoy.
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
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod base64;
pub mod challenge;
pub mod config;
pub mod decide;
mod json;
pub mod oci;
pub mod path;
pub mod query;
pub mod scope;
pub mod token;


pub use config::{Config, ConfigError};
pub use decide::{decide, Decision, Refusal, Request, Route, Rule, SelectedBy};
pub use scope::ScopedConfig;
