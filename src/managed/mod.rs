//! Managed mode, host-free: the filter authenticates to Harbor with a robot account, so that
//! anonymous clients pull from private proxy projects and no client credential reaches Harbor.
//!
//! [`grant`] is the token request and the reading of Harbor's answer, [`cache`] the entries of
//! the token cache shared by Envoy's workers, [`fetch`] the single-flight fetch per project
//! as a state machine the driver runs.

pub mod cache;
pub mod fetch;
pub mod grant;
