//! The request's `:authority`: its host, as host routing and Higress's domain rules match it.

use crate::ascii;

/// The host of an `:authority` (`host[:port]`): without the port, and for an IPv6 literal
/// (`[::1]:5000`) without the brackets.
pub fn host(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return ascii::split_once(bracketed, b']').map_or(authority, |(host, _)| host);
    }
    ascii::split_once(authority, b':').map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_host_is_the_authority_without_port_or_brackets() {
        for (authority, host) in [
            ("mirror.example.com", "mirror.example.com"),
            ("mirror.example.com:5000", "mirror.example.com"),
            ("127.0.0.1:5000", "127.0.0.1"),
            ("[::1]:5000", "::1"),
            ("[::1]", "::1"),
            ("[fe80::1%25eth0]:443", "fe80::1%25eth0"),
            ("", ""),
            (":5000", ""),
        ] {
            assert_eq!(super::host(authority), host, "{authority:?}");
        }
    }
}
