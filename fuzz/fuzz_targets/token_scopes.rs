//! Token requests (`/service/token?...scope=...`) under three fixed configurations: the mapped
//! query must satisfy `harbor_mirror_fuzz::token::check` as Harbor reads it (scopes confined to
//! projects, never widened, actions kept, other parameters kept), and the whole decision
//! `harbor_mirror_fuzz::decision::check`. Input: see `harbor_mirror_fuzz::input::TokenInput`.
#![no_main]

use harbor_mirror_core::{decide, Request};
use harbor_mirror_fuzz::{configs, decision, input::TokenInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(input) = TokenInput::parse(data) else {
        return;
    };
    let (fixed, config) = configs::pick(input.config);
    let (path, authority) = match input.form {
        0 => (format!("/service/token?{}", input.query), "mirror.example.com:5000"),
        1 => (format!("/{}/service/token?{}", fixed.alias, input.query), "mirror.example.com:5000"),
        _ => (format!("/service/token?{}", input.query), fixed.host_authority),
    };
    let path = if input.padded { harbor_mirror_fuzz::input::pad(&path) } else { path };
    let request = Request { method: "GET", path: &path, authority };
    let decision = decide(config, &request);
    decision::check(fixed.name, config, &request, &decision);
});
