//! The invariants the fuzz targets in `fuzz_targets/` assert, and the fixed inputs they share.
//!
//! Every check panics with `invariant broken: ...` and the request, header or document that broke
//! it; libFuzzer records a panic as a crash and saves the input under `fuzz/artifacts/<target>/`.
//! The checks restate what README.md promises (Security, Configuration reference) from the
//! outside, with the crate's public API only: they do not call the functions they check, except
//! for the primitives the rules are written in (a configured regex's match, the OCI name grammar).

#![forbid(unsafe_code)]

/// Panics with `invariant broken: <message>` unless `condition` holds.
#[macro_export]
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            panic!("invariant broken: {}", format_args!($($message)+));
        }
    };
}

/// A failure message's context, written out only when a check fails.
pub struct Describe<F>(pub F);

impl<F: Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result> std::fmt::Display for Describe<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (self.0)(f)
    }
}

pub mod challenge;
pub mod config;
pub mod configs;
pub mod decision;
pub mod input;
pub mod model;
pub mod text;
pub mod token;
