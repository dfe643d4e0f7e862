//! Splitting text at an ASCII delimiter by looking at bytes.
//!
//! A request's path, query and scopes are split many times into a few short pieces. `str`'s
//! char patterns set up a searcher for every call (about 130 instructions each, the module's
//! profile in BENCHMARKS.md); a byte loop over a few dozen bytes costs less. An ASCII byte never
//! occurs inside a multi-byte UTF-8 sequence, so the pieces are `str`s cut at char boundaries,
//! exactly what `str::split_once(char)` and friends return.

/// `s.split_once(delimiter)`.
pub(crate) fn split_once(s: &str, delimiter: u8) -> Option<(&str, &str)> {
    debug_assert!(delimiter.is_ascii());
    let at = s.bytes().position(|b| b == delimiter)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// `s.rsplit_once(delimiter)`.
pub(crate) fn rsplit_once(s: &str, delimiter: u8) -> Option<(&str, &str)> {
    debug_assert!(delimiter.is_ascii());
    let at = s.bytes().rposition(|b| b == delimiter)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

/// `s.contains(delimiter)`.
pub(crate) fn contains(s: &str, delimiter: u8) -> bool {
    s.bytes().any(|b| b == delimiter)
}

/// `s.split(delimiter)`: every piece, the empty ones too.
pub(crate) fn split(s: &str, delimiter: u8) -> Split<'_> {
    debug_assert!(delimiter.is_ascii());
    Split { rest: Some(s), delimiter }
}

/// The pieces of [`split`].
#[derive(Debug, Clone)]
pub(crate) struct Split<'s> {
    rest: Option<&'s str>,
    delimiter: u8,
}

impl<'s> Iterator for Split<'s> {
    type Item = &'s str;

    fn next(&mut self) -> Option<&'s str> {
        let rest = self.rest?;
        match split_once(rest, self.delimiter) {
            Some((piece, tail)) => {
                self.rest = Some(tail);
                Some(piece)
            }
            None => self.rest.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn splits_as_str_does() {
        // Each row is checked against `str`'s own char-pattern methods.
        let rows = ["", "a", "/", "//", "a/b", "/v2/library/alpine/manifests/3.19", "é/ü/", "ns=docker.io&scope=a", "a&&b&", "ü"];
        for s in rows {
            for delimiter in [b'/', b'&', b'=', b'?'] {
                let c = char::from(delimiter);
                assert_eq!(split_once(s, delimiter), s.split_once(c), "split_once {s:?} {c:?}");
                assert_eq!(rsplit_once(s, delimiter), s.rsplit_once(c), "rsplit_once {s:?} {c:?}");
                assert_eq!(contains(s, delimiter), s.contains(c), "contains {s:?} {c:?}");
                assert_eq!(split(s, delimiter).collect::<Vec<_>>(), s.split(c).collect::<Vec<_>>(), "split {s:?} {c:?}");
            }
        }
    }
}
