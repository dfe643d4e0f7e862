//! Data shared by every worker, kept in the plugin's own memory, for hosts that have no store of
//! their own (the dynamic module: its workers share one process) and for the tests' emulated
//! host. It behaves as proxy-wasm's shared data in Envoy: every write gives the value a new
//! version, and a write that names a version stores only if the value is still at it (a write
//! of a new key always stores).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::host::{SharedValue, Written};

/// Values by key, each with its version.
#[derive(Debug, Default)]
pub struct SharedData {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<String, (Vec<u8>, u32)>,
    last_version: u32,
}

impl SharedData {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic cannot leave a write half done: each is one insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key` and its version.
    pub fn get(&self, key: &str) -> Option<SharedValue> {
        self.state().values.get(key).map(|(value, version)| SharedValue { value: value.clone(), cas: Some(*version) })
    }

    /// Stores `value` under `key`; with `cas`, only if the value is still at that version.
    pub fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Written {
        let mut state = self.state();
        let version = state.last_version.wrapping_add(1).max(1);
        match state.values.get_mut(key) {
            Some((_, current)) if cas.is_some_and(|cas| cas != 0 && cas != *current) => return Written::CasMismatch,
            Some(slot) => *slot = (value.to_vec(), version),
            None => {
                state.values.insert(key.to_owned(), (value.to_vec(), version));
            }
        }
        state.last_version = version;
        Written::Stored
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::SharedData;
    use crate::host::Written;

    #[test]
    fn a_write_at_a_stale_version_stores_nothing() {
        let data = SharedData::default();
        assert_eq!(data.set("k", b"a", Some(7)), Written::Stored, "a new key is stored whatever the version");
        let first = data.get("k").expect("stored");
        assert_eq!(data.set("k", b"b", first.cas), Written::Stored);
        assert_eq!(data.set("k", b"c", first.cas), Written::CasMismatch, "the version moved on");
        assert_eq!(data.get("k").map(|v| v.value), Some(b"b".to_vec()));
        assert_eq!(data.set("k", b"d", None), Written::Stored, "no version: always stored");
        assert_eq!(data.get("absent"), None);
    }
}
