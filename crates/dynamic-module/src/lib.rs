//! Rust bindings for Envoy 1.40's dynamic-modules HTTP filter ABI, and a small safe API on top.
//!
//! An adapter implements three traits and registers its module once:
//!
//! ```no_run
//! use envoy_dynamic_module::{ConfigContext, ConfigError, CounterId, FilterConfig, HeaderMap,
//!     HeadersStatus, HttpFilter, HttpFilterHandle, Module, RecordMetrics};
//!
//! struct Mirror;
//! struct MirrorConfig { prefix: Vec<u8>, rewritten: CounterId }
//! struct MirrorFilter { prefix: Vec<u8>, rewritten: CounterId }
//!
//! impl Module for Mirror {
//!     type Config = MirrorConfig;
//!     fn new_config(ctx: &mut ConfigContext<'_>, _name: &str, config: &[u8]) -> Result<MirrorConfig, ConfigError> {
//!         if !config.starts_with(b"/") {
//!             return Err(ConfigError::from("prefix: must start with /"));
//!         }
//!         let rewritten = ctx.define_counter("rewritten").map_err(|e| ConfigError(e.to_string()))?;
//!         Ok(MirrorConfig { prefix: config.to_vec(), rewritten })
//!     }
//! }
//!
//! impl FilterConfig for MirrorConfig {
//!     type Filter = MirrorFilter;
//!     fn new_filter(&self, _envoy: &mut HttpFilterHandle<'_>) -> MirrorFilter {
//!         MirrorFilter { prefix: self.prefix.clone(), rewritten: self.rewritten }
//!     }
//! }
//!
//! impl HttpFilter for MirrorFilter {
//!     fn on_request_headers(&mut self, envoy: &mut HttpFilterHandle<'_>, _eos: bool) -> HeadersStatus {
//!         // A view into Envoy's header map; copy it before changing headers.
//!         let Some(path) = envoy.header(HeaderMap::Request, b":path") else { return HeadersStatus::Continue };
//!         let new_path = [self.prefix.as_slice(), path].concat();
//!         envoy.set_header(HeaderMap::Request, b":path", &new_path);
//!         let _ = envoy.increment_counter(self.rewritten, 1);
//!         HeadersStatus::Continue
//!     }
//! }
//!
//! envoy_dynamic_module::export_module!(Mirror);
//! # fn main() {}
//! ```
//!
//! and builds a `cdylib` that Envoy loads with the `envoy.filters.http.dynamic_modules` filter
//! (`examples/smoke.rs` is a complete one, `tests/smoke.sh` runs it in Envoy 1.40).
//!
//! # Threads
//! | what | where it runs | bounds |
//! | --- | --- | --- |
//! | [`Module::init`], [`Module::new_config`] | main thread | — |
//! | [`FilterConfig::on_scheduled`], [`FilterConfig::on_callout_done`] | main thread | `FilterConfig: Send + Sync` (shared by all workers) |
//! | the configuration's `Drop` | where Envoy drops its last reference: the main thread, or the worker whose stream outlived a configuration update | `Send` |
//! | [`FilterConfig::new_filter`] | the new stream's worker, several workers at once | `&self` |
//! | every [`HttpFilter`] method, its `Drop` | the stream's worker, one at a time | no `Send` needed |
//! | [`ConfigScheduler::commit`], [`FilterScheduler::commit`], [`Timer::schedule`], [`log`] | any thread | `Send + Sync` |
//!
//! [`ConfigContext`] and [`HttpFilterHandle`] are lent to one hook call and are not `Send`;
//! everything they return that borrows Envoy's memory borrows them.
//!
//! # Unsafe
//! This crate is the only one of the workspace allowed `unsafe`: the raw declarations (`abi`),
//! the exported hooks (`hooks`), and the export attribute that [`export_module!`] writes into the
//! cdylib (the one exported symbol through which the hooks find the adapter's module). Every
//! unsafe block states its invariant.

mod abi;
mod callout;
mod config;
mod filter;
mod hooks;
pub mod log;
mod metrics;
mod timer;

pub use callout::{CalloutError, CalloutId, CalloutOutcome, CalloutRequest, CalloutResponse};
pub use config::{ConfigContext, ConfigError, FilterConfig, Module};
pub use metrics::{CounterId, GaugeId, MetricsError, RecordMetrics};
pub use filter::{HeaderMap, HeadersStatus, HttpFilter, HttpFilterHandle};
pub use timer::{ConfigScheduler, FilterScheduler, Timer, Wake};

/// The ABI version this crate implements, returned to Envoy by `envoy_dynamic_module_on_program_init`.
/// Envoy 1.40 logs "Dynamic module ABI version v0.2.0 matched." for it; another value only earns
/// a warning (Envoy never refuses a module for its version string).
pub const ABI_VERSION: &str = "v0.2.0";

/// Registers `$module` (a type implementing [`Module`]) as the shared object's module. Use it
/// exactly once, in the cdylib crate.
///
/// It expands to one function exported under a fixed name, which this crate's hooks call to
/// find the module; the export attribute is the only `unsafe` it writes (see the SAFETY note in
/// the macro). Two uses in one shared object do not link.
#[macro_export]
macro_rules! export_module {
    ($module:ty) => {
        // SAFETY: the symbol name is reserved for this macro; the hooks of
        // `envoy_dynamic_module` declare it with exactly this Rust signature, and a second
        // definition in the same shared object is a link error, never a silent override.
        #[unsafe(export_name = "envoy_dynamic_module_rust_entry_v1")]
        extern "Rust" fn __envoy_dynamic_module_rust_entry() -> &'static dyn $crate::__private::ErasedModule {
            &$crate::__private::ModuleAdapter::<$module>::NEW
        }
    };
}

/// Type erasure between the hooks and the adapter's generic types. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::private::{ErasedModule, ModuleAdapter};
}

mod private {
    use std::marker::PhantomData;

    use crate::{CalloutId, CalloutResponse, ConfigContext, ConfigError, FilterConfig, HttpFilter, HttpFilterHandle, Module};

    /// [`Module`] without its associated type.
    pub trait ErasedModule: Sync {
        /// [`Module::init`].
        fn init(&self) -> Result<(), String>;
        /// [`Module::new_config`], boxed.
        fn new_config(&self, ctx: &mut ConfigContext<'_>, name: &str, config: &[u8]) -> Result<Box<dyn ErasedConfig>, ConfigError>;
    }

    /// [`FilterConfig`] without its associated type.
    pub trait ErasedConfig: Send + Sync {
        fn new_filter(&self, envoy: &mut HttpFilterHandle<'_>) -> Box<dyn HttpFilter>;
        fn on_scheduled(&self, ctx: &mut ConfigContext<'_>, event_id: u64);
        fn on_callout_done(&self, ctx: &mut ConfigContext<'_>, callout: CalloutId, response: CalloutResponse<'_>);
    }

    /// The zero-sized value `export_module!` hands to the hooks.
    pub struct ModuleAdapter<M>(PhantomData<fn() -> M>);

    impl<M: Module> ModuleAdapter<M> {
        /// The value (a constant, so that `&NEW` is `'static`).
        pub const NEW: Self = ModuleAdapter(PhantomData);
    }

    impl<M: Module> ErasedModule for ModuleAdapter<M> {
        fn init(&self) -> Result<(), String> {
            M::init()
        }

        fn new_config(&self, ctx: &mut ConfigContext<'_>, name: &str, config: &[u8]) -> Result<Box<dyn ErasedConfig>, ConfigError> {
            M::new_config(ctx, name, config).map(|config| Box::new(config) as Box<dyn ErasedConfig>)
        }
    }

    impl<C: FilterConfig> ErasedConfig for C {
        fn new_filter(&self, envoy: &mut HttpFilterHandle<'_>) -> Box<dyn HttpFilter> {
            Box::new(FilterConfig::new_filter(self, envoy))
        }

        fn on_scheduled(&self, ctx: &mut ConfigContext<'_>, event_id: u64) {
            FilterConfig::on_scheduled(self, ctx, event_id);
        }

        fn on_callout_done(&self, ctx: &mut ConfigContext<'_>, callout: CalloutId, response: CalloutResponse<'_>) {
            FilterConfig::on_callout_done(self, ctx, callout, response);
        }
    }
}
