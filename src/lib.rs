//! harbor-mirror: a filter that lets every container client use a Harbor registry as a
//! transparent pull-through mirror, inside Envoy.
//!
//! Clients configured with a mirror ask for `library/nginx`; Harbor serves Docker Hub's images
//! from a proxy-cache project, `dockerhub-proxy/library/nginx`. The filter rewrites the request
//! path, token scopes and auth challenges in between, or authenticates itself with a Harbor robot
//! account (managed mode). This crate is its host-free core: every decision and every flow. The
//! adapters (`crates/filter`, the proxy-wasm filter; `crates/module`, the dynamic module) only
//! implement [`host`] and hand Envoy's events to the [`driver`].
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
//!
//! # Module map
//! The one map of the workspace (the README and `Cargo.toml` point here). Each layer uses only
//! those below it.
//!
//! ```text
//! crates/filter   the proxy-wasm adapter -> dist/harbor_mirror.wasm: `host` the host interface
//!                 on proxy-wasm's calls, `lib` the SDK's contexts handing events to the driver;
//!                 feature `fault-injection` (tests only) aborts the VM on request
//! crates/module   the dynamic-module adapter -> dist/libharbor_mirror.so: `host` the host
//!                 interface on the bindings, `lib` the module, its configuration and filter
//! crates/dynamic-module  our bindings for Envoy's dynamic-modules ABI, the workspace's only
//!                 unsafe code, each invariant stated: `abi` the raw declarations, `hooks` the
//!                 exported event hooks; `config`, `filter`, `callout`, `timer`, `metrics`, `log`
//!                 the safe API
//! crates/cli      the harbor-mirror command line: `main` the commands (lexopt), `explain`,
//!                 `discover`, `k3s` the registries.yaml import, `yaml` documents read with
//!                 serde-saphyr, `source` where a file holds the configuration, `clients`
//! crates/cri-client  test-only: pulls through containerd's CRI socket as the kubelet does
//!
//! this crate (src/), top floor first:
//!   driver            every flow against the host: configure, a request and its answer
//!                     (exchange), managed mode's tokens, discovery's refresh, the requests
//!                     waiting for an identical one (waiting), ticks and calls
//!   plan              a request's plan from its headers: count, log, reply or forward
//!   response          what Harbor's answer to a forwarded request comes to
//!   decide            one request's decision: its registry and Harbor path, or its refusal
//!   scopes            pass-through token requests' scopes
//!   higress  managed  names  metrics
//!                     the plugin's configurations (Higress's per-domain envelope); managed
//!                     mode's token request and Harbor's verdict (grant), the shared cache's
//!                     entries (cache), the single-flight fetch (fetch); a client's repository
//!                     name to Harbor's (deny, allow, rewrite, project); the one metric table
//!   config            the configuration compiled once (compile, check, pattern, index, error)
//!   discovery  challenge
//!                     the mapping read from Harbor's API (mapping), one refresh (refresh);
//!                     WWW-Authenticate and the realm rewrite
//!   harbor  refusal  path
//!                     Harbor's token service, its answers and JWT claims; the OCI error reply;
//!                     what a request path must look like
//!   authority  oci  query  shared_data  coalesce
//!                     the request's host; the registry API's grammar and error bodies; the ns
//!                     parameter and query encoding; shared data for hosts without a store; the
//!                     waiting list of identical manifest and layer GETs
//!   host  wire  base64  ascii  docker_hub
//!                     the interface the adapters implement (headers, replies, calls, shared
//!                     data, metrics, logs, the clock); the configuration's JSON form; Basic
//!                     credentials; splits at ASCII bytes; Docker Hub's names
//! ```
//!
//! `fuzz/` (a workspace of its own) and `benches/` use the public API only; `tests/` drive the
//! driver through an emulated host (`tests/common/emulator.rs`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod ascii;
mod base64;
pub mod authority;
pub mod challenge;
pub mod coalesce;
pub mod config;
pub mod decide;
pub mod discovery;
pub mod docker_hub;
pub mod driver;
pub mod harbor;
pub mod higress;
pub mod host;
pub mod managed;
pub mod metrics;
pub mod names;
pub mod oci;
pub mod path;
pub mod plan;
pub mod query;
pub mod refusal;
pub mod response;
pub mod scopes;
pub mod shared_data;
mod wire;

pub use config::{Config, ConfigError};
pub use decide::{decide, Decision, Request, Route, SelectedBy};
pub use higress::PluginConfig;
pub use names::Rule;
pub use refusal::Refusal;
