//! The plugin configuration's JSON form, read in one pass with `#[derive(Deserialize)]`, so that
//! every error carries its line and column in the user's document. A document is one
//! configuration, or Higress's envelope of per-domain rules around an optional global one
//! ([`crate::higress`]); the three shapes share one field list ([`wire_config!`]).
//!
//! Errors inside a keyed value are reported at its place, the way a user points at it
//! (`registries["quay.io"]`, `auth`, `_rules_[0]._match_domain_`): the readers of those values
//! note their place while they read ([`at`]), and [`read`] takes the place of the failure.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

thread_local! {
    /// The places of the values being read, outermost first; left as they were at an error.
    static PLACE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Reads `value` noting `place` as where its errors are, while it is read.
fn at<T, E>(place: impl FnOnce() -> String, value: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    PLACE.with_borrow_mut(|places| places.push(place()));
    let result = value();
    if result.is_ok() {
        PLACE.with_borrow_mut(|places| places.pop());
    }
    result
}

/// A document that could not be read: serde's error, with its position in the document, and
/// the innermost place noted (`configuration` when none was).
#[derive(Debug)]
pub(crate) struct ReadError {
    pub at: String,
    pub error: serde_json::Error,
}

/// Reads a whole document as `T`.
pub(crate) fn read<T: DeserializeOwned>(json: &[u8]) -> Result<T, ReadError> {
    PLACE.with_borrow_mut(Vec::clear);
    serde_json::from_slice(json).map_err(|error| {
        let places = PLACE.with_borrow_mut(std::mem::take);
        let mut place = String::new();
        for segment in &places {
            if !place.is_empty() && !segment.starts_with('[') {
                place.push('.');
            }
            place.push_str(segment);
        }
        ReadError { at: if place.is_empty() { "configuration".to_owned() } else { place }, error }
    })
}

/// The top-level keys of a document, to tell which shape it is; `None` if it is not an object.
pub(crate) fn top_level_keys(json: &[u8]) -> Option<Vec<String>> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct KeysVisitor;
            impl<'de> Visitor<'de> for KeysVisitor {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((key, IgnoredAny)) = map.next_entry::<String, IgnoredAny>()? {
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            deserializer.deserialize_map(KeysVisitor)
        }
    }
    serde_json::from_slice::<Keys>(json).ok().map(|keys| keys.0)
}

/// Declares a configuration's wire struct with the configuration's fields and `extra` ones.
macro_rules! wire_config {
    ($(#[$doc:meta])* $name:ident { $($extra:tt)* }) => {
        $(#[$doc])*
        #[derive(Clone, Deserialize)]
        #[serde(deny_unknown_fields, expecting = "an object")]
        pub(crate) struct $name {
            /// In document order, a repeated key refused; `None` when absent (with `discover`,
            /// the registries come from Harbor).
            #[serde(default, deserialize_with = "registries")]
            pub registries: Option<Vec<(String, WireRegistry)>>,
            #[serde(default)]
            pub default_registry: Option<String>,
            #[serde(default)]
            pub passthrough_projects: Vec<String>,
            #[serde(default = "yes")]
            pub read_only: bool,
            #[serde(default)]
            pub debug_header: bool,
            #[serde(default)]
            pub log_original_path: bool,
            #[serde(default, deserialize_with = "auth")]
            pub auth: Option<WireAuth>,
            #[serde(default, deserialize_with = "discover")]
            pub discover: Option<WireDiscover>,
            #[serde(default, deserialize_with = "coalesce")]
            pub coalesce: Option<WireCoalesce>,
            $($extra)*
        }
    };
}

wire_config!(
    /// One configuration, for every request.
    WireConfig {}
);

wire_config!(
    /// A Higress rule: a configuration for the requests to its domains.
    WireRule {
        #[serde(rename = "_match_domain_", default, deserialize_with = "match_domain")]
        pub match_domain: Option<Vec<String>>,
        /// Higress's other kinds of rules, which the filter does not support.
        #[serde(rename = "_match_route_", default)]
        pub match_route: Option<IgnoredAny>,
        #[serde(rename = "_match_route_prefix_", default)]
        pub match_route_prefix: Option<IgnoredAny>,
        #[serde(rename = "_match_service_", default)]
        pub match_service: Option<IgnoredAny>,
    }
);

wire_config!(
    /// Higress's envelope with a global configuration: the rules, and the configuration of
    /// requests no rule matches.
    WireEnvelope {
        #[serde(rename = "_rules_", deserialize_with = "rules")]
        pub rules: Vec<WireRule>,
    }
);

/// Higress's envelope without a global configuration (`defaultConfigDisable: true`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct WireRulesOnly {
    #[serde(rename = "_rules_", deserialize_with = "rules")]
    pub rules: Vec<WireRule>,
}

impl WireRule {
    /// The configuration's fields, without the rule's.
    pub fn config(self) -> WireConfig {
        let WireRule { registries, default_registry, passthrough_projects, read_only, debug_header, log_original_path, auth, discover, coalesce, .. } = self;
        WireConfig { registries, default_registry, passthrough_projects, read_only, debug_header, log_original_path, auth, discover, coalesce }
    }
}

impl WireEnvelope {
    /// The rules, and the global configuration.
    pub fn split(self) -> (Vec<WireRule>, WireConfig) {
        let WireEnvelope { registries, default_registry, passthrough_projects, read_only, debug_header, log_original_path, auth, discover, coalesce, rules } = self;
        (rules, WireConfig { registries, default_registry, passthrough_projects, read_only, debug_header, log_original_path, auth, discover, coalesce })
    }
}

/// `discover`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct WireDiscover {
    pub cluster: String,
    pub authority: String,
    #[serde(default)]
    pub robot: Option<WireRobot>,
    #[serde(default)]
    pub interval_s: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `coalesce`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct WireCoalesce {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
}

/// `auth`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct WireAuth {
    #[serde(default = "yes")]
    pub rewrite_tokens: bool,
    #[serde(default)]
    pub robot: Option<WireRobot>,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `auth.robot`, `discover.robot`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct WireRobot {
    pub username: String,
    pub password: String,
}

/// `registries[k]`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object")]
pub(crate) struct WireRegistry {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// In document order, a repeated pattern refused.
    #[serde(default, deserialize_with = "rewrite")]
    pub rewrite: Vec<(String, String)>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

fn yes() -> bool {
    true
}

/// An object read as `(key, value)` pairs in document order, a repeated key refused, each
/// value read at the place `place(key)` names.
struct PairsVisitor<V> {
    place: Option<fn(&str) -> String>,
    value: PhantomData<V>,
}

impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
    type Value = Vec<(String, V)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs: Vec<(String, V)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if pairs.iter().any(|(seen, _)| *seen == key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = match self.place {
                Some(place) => at(|| place(&key), || map.next_value::<V>())?,
                None => map.next_value::<V>()?,
            };
            pairs.push((key, value));
        }
        Ok(pairs)
    }
}

/// `registries`: each registry read at `registries["<key>"]`.
fn registries<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<(String, WireRegistry)>>, D::Error> {
    deserializer.deserialize_map(PairsVisitor { place: Some(|key| format!("registries[{key:?}]")), value: PhantomData }).map(Some)
}

/// `auth`, read at `auth`.
fn auth<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<WireAuth>, D::Error> {
    at(|| "auth".to_owned(), || Option::<WireAuth>::deserialize(deserializer))
}

/// `discover`, read at `discover`.
fn discover<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<WireDiscover>, D::Error> {
    at(|| "discover".to_owned(), || Option::<WireDiscover>::deserialize(deserializer))
}

/// `coalesce`, read at `coalesce`.
fn coalesce<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<WireCoalesce>, D::Error> {
    at(|| "coalesce".to_owned(), || Option::<WireCoalesce>::deserialize(deserializer))
}

/// `_match_domain_`, read at `_match_domain_`.
fn match_domain<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<String>>, D::Error> {
    at(|| "_match_domain_".to_owned(), || Option::<Vec<String>>::deserialize(deserializer))
}

/// The key of Higress's rule list.
pub(crate) const RULES: &str = "_rules_";

/// `_rules_`: a list of rule objects, each read at `_rules_[<index>]`.
fn rules<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<WireRule>, D::Error> {
    struct RulesVisitor;
    impl<'de> Visitor<'de> for RulesVisitor {
        type Value = Vec<WireRule>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of rule objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<WireRule>, A::Error> {
            let mut rules = Vec::new();
            while let Some(rule) = at(|| format!("[{}]", rules.len()), || seq.next_element::<WireRule>())? {
                rules.push(rule);
            }
            Ok(rules)
        }
    }
    at(|| RULES.to_owned(), || deserializer.deserialize_seq(RulesVisitor))
}

/// `rewrite`: an object, or a list of one-entry objects whose order survives Kubernetes, read
/// into the same ordered pairs.
fn rewrite<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<(String, String)>, D::Error> {
    struct RewriteVisitor;
    impl<'de> Visitor<'de> for RewriteVisitor {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or a list of one-entry objects")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            PairsVisitor { place: None, value: PhantomData }.visit_map(map)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut pairs: Vec<(String, String)> = Vec::new();
            while let Some(OneEntry(key, value)) = seq.next_element::<OneEntry>()? {
                if pairs.iter().any(|(seen, _)| *seen == key) {
                    return Err(de::Error::custom(format!("duplicate key {key:?}")));
                }
                pairs.push((key, value));
            }
            Ok(pairs)
        }
    }
    deserializer.deserialize_any(RewriteVisitor)
}

/// An object of exactly one string entry.
struct OneEntry(String, String);

impl<'de> Deserialize<'de> for OneEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut pairs = deserializer.deserialize_map(PairsVisitor::<String> { place: None, value: PhantomData })?;
        match (pairs.pop(), pairs.is_empty()) {
            (Some((key, value)), true) => Ok(OneEntry(key, value)),
            (last, _) => Err(de::Error::invalid_length(pairs.len() + usize::from(last.is_some()), &"one entry")),
        }
    }
}
