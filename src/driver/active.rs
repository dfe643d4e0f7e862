//! The configuration requests get now: compiled, with each registry's counter, swapped whole
//! when discovery applies a new mapping (a request keeps the one it began with).

use std::sync::{Arc, PoisonError, RwLock};

use crate::config::Config;
use crate::metrics::Counter;

/// A configuration as requests get it, with each registry's counter.
#[derive(Debug)]
pub struct Active {
    /// The compiled configuration.
    pub config: Config,
    /// `harbor_mirror.registry.<key>.rewritten` by registry index, where the host has one.
    pub(super) registry_counters: Vec<Option<Arc<Counter>>>,
}

impl Active {
    pub(super) fn new(config: Config, registry_counters: Vec<Option<Arc<Counter>>>) -> Self {
        Active { config, registry_counters }
    }
}

/// The active configuration of one domain.
#[derive(Debug)]
pub(super) struct Current(RwLock<Arc<Active>>);

impl Current {
    pub(super) fn new(active: Active) -> Self {
        Current(RwLock::new(Arc::new(active)))
    }

    /// The configuration for a new request.
    pub(super) fn get(&self) -> Arc<Active> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces it, for the requests that come after.
    pub(super) fn replace(&self, active: Active) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(active);
    }
}
