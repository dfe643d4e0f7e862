//! `PluginConfig::from_json` (what `on_configure` reads) on any bytes: no panic; an error is one
//! line that names its place; every host selects an existing configuration (or none, for
//! Higress's rules without a global one); each configuration's lookups agree with its
//! registries, and fixed client request shapes decide as `harbor_mirror_fuzz::decision::check`
//! requires. Input: the JSON document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| harbor_mirror_fuzz::config::check(data));
