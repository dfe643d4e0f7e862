//! User regexes: `allow`, `deny` and `rewrite` patterns, compiled once, with the literal prefix
//! that lets most names skip the regex.

use regex_lite::Regex;

use super::ConfigError;

/// A user regex with the text it was written as.
#[derive(Debug)]
pub struct Pattern {
    /// The regex as configured.
    pub source: String,
    pub(super) regex: Regex,
    /// Text every match must start with (`library/` of `^library/.*`): a name without it is
    /// refused without running the regex, which regex-lite would do in a few hundred ns.
    prefix: Option<String>,
}

impl Pattern {
    pub(super) fn compile(at: &str, source: &str) -> Result<Self, ConfigError> {
        let regex = Regex::new(source).map_err(|e| ConfigError::new(at, e))?;
        Ok(Pattern { source: source.to_owned(), regex, prefix: literal_prefix(source) })
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        self.prefix.as_ref().is_none_or(|prefix| text.starts_with(prefix.as_str())) && self.regex.is_match(text)
    }
}

/// The literal text an anchored pattern's matches all start with: the characters after `^` up
/// to the first one with a meaning, less the last if a quantifier follows it. `None` when that
/// is empty, when the pattern is not anchored, or when it has a `|` anywhere (an alternative
/// need not be anchored).
fn literal_prefix(source: &str) -> Option<String> {
    const SPECIAL: &[char] = &['\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$'];
    let rest = source.strip_prefix('^')?;
    if source.contains('|') {
        return None;
    }
    let end = rest.find(SPECIAL).unwrap_or(rest.len());
    let mut prefix = &rest[..end];
    if rest[end..].starts_with(['?', '*', '{']) {
        prefix = prefix.char_indices().last().map_or("", |(last, _)| &prefix[..last]);
    }
    (!prefix.is_empty()).then(|| prefix.to_owned())
}

/// One `rewrite` rule: regex to replacement with `$1`-style captures.
#[derive(Debug)]
pub struct RewriteRule {
    /// The pattern matched against the client-visible name.
    pub pattern: Pattern,
    /// The replacement template; the result is the full Harbor repository path.
    pub replacement: String,
}

impl RewriteRule {
    /// The rewritten name if the rule matches: every match replaced, as k3s's rewrite does.
    pub fn apply(&self, name: &str) -> Option<String> {
        self.pattern.is_match(name).then(|| self.pattern.regex.replace_all(name, self.replacement.as_str()).into_owned())
    }
}

#[cfg(test)]
mod prefix_tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::literal_prefix;

    #[test]
    fn literal_prefixes_are_what_every_match_starts_with() {
        let cases: &[(&str, Option<&str>)] = &[
            ("^library/", Some("library/")),
            ("^ksd-test/(.*)$", Some("ksd-test/")),
            ("^team9/(.*)$", Some("team9/")),
            ("^library/evil$", Some("library/evil")),
            ("^ab?c", Some("a")),
            ("^abc*", Some("ab")),
            ("^abc+", Some("abc")),
            ("^ab{2}", Some("a")),
            ("^a.b", Some("a")),
            ("^a\\.b", Some("a")),
            ("^é?x", None),
            ("^(?i)library/", None),
            ("^[a-z]+/", None),
            ("^a|b", None),
            ("^(a|b)/", None),
            ("library/", None),
            ("^", None),
            (".*", None),
        ];
        for &(source, expected) in cases {
            assert_eq!(literal_prefix(source).as_deref(), expected, "{source}");
        }
    }
}
