//! `challenge::rewrite` on any UTF-8 `WWW-Authenticate` value for four fixed targets: the result
//! must satisfy `harbor_mirror_fuzz::challenge::check` (it parses, as many challenges, every
//! Bearer realm at this proxy, every other byte kept, idempotent). Input: `<target byte><value>`.
#![no_main]

use harbor_mirror_fuzz::challenge::{check, TARGETS};
use harbor_mirror_fuzz::input::challenge_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((target, header)) = challenge_input(data) else {
        return;
    };
    check(header, &TARGETS[usize::from(target) % TARGETS.len()]);
});
