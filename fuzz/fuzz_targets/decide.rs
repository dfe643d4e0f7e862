//! `decide` on any request under three fixed configurations: every decision must satisfy
//! `harbor_mirror_fuzz::decision::check` (confined names, one reading of the path, the query
//! kept but for `ns`, refusals as OCI errors). Input: `<config byte><method>\t<:path>\t<:authority>`.
#![no_main]

use harbor_mirror_core::{decide, Request};
use harbor_mirror_fuzz::{configs, decision, input::RequestInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = RequestInput::parse(data) else {
        return;
    };
    let (fixed, config) = configs::pick(input.config);
    let request = Request { method: &input.method, path: &input.path, authority: &input.authority };
    let decision = decide(config, &request);
    decision::check(fixed.name, config, &request, &decision);
});
