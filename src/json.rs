//! JSON documents read through serde_json's parser into [`Value`]s, following a [`Ty`] that
//! stands for the Rust type `#[derive(Deserialize)]` would have read: the same documents are
//! accepted, and refused with the same errors at the same line and column.
//!
//! Why not derive: serde's typed visitors each instantiate serde_json's parser paths anew, and
//! a type error reported through serde (`invalid_type`) links serde's `Unexpected` display and,
//! with it, Rust's float formatting: about 30 KB of the filter's .wasm in all. Here one visitor
//! serves every type, reads values through `deserialize_any` (or `deserialize_ignored_any`)
//! only, and writes serde's messages itself. Where serde_json would place an error somewhere
//! this visitor cannot see (before the `[` or `{` of a value of the wrong type), and for the
//! text of a raw value, [`locate`] finds the place in the document.
//!
//! The tests in `config` and `token` hold these readers to the derived types they replace.

use std::fmt::{self, Display};

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};

/// The Rust type a value is read as.
#[derive(Clone, Copy)]
pub(crate) enum Ty {
    /// `bool`.
    Bool,
    /// `String`.
    Str,
    /// `u64`.
    U64,
    /// `Option<T>`: `null` is [`Value::Null`].
    Opt(&'static Ty),
    /// `Vec<T>`.
    List(&'static Ty),
    /// A JSON object as `(key, value)` pairs in document order, as the configuration's own
    /// `Deserialize` read it: a repeated key is an error (`duplicate key "k"`).
    Pairs(&'static Ty),
    /// The same pairs, also written as a list of one-entry objects (`[{"k": v}, ...]`), an order
    /// that survives where objects get their keys sorted (Kubernetes, protobuf `Struct`): a
    /// list entry of another size is `invalid length n, expected one entry`.
    OrderedPairs(&'static Ty),
    /// `Box<serde_json::value::RawValue>`: any value, kept as its text.
    Raw,
    /// `serde::de::IgnoredAny`.
    Ignored,
    /// A struct with `#[derive(Deserialize)]`.
    Struct(&'static Struct),
}

/// A struct with `#[derive(Deserialize)]`: a JSON object, or an array of its fields in order.
pub(crate) struct Struct {
    /// What serde calls it in errors: `struct WireAuth`.
    pub name: &'static str,
    /// What serde expects of its array form: `struct WireAuth with 5 elements`.
    pub as_array: &'static str,
    /// Field names, in declaration order.
    pub fields: &'static [&'static str],
    /// Field types, in the same order.
    pub types: &'static [Ty],
    /// How many leading fields are required; the others have `#[serde(default)]`.
    pub required: usize,
    /// `#[serde(deny_unknown_fields)]`.
    pub deny_unknown_fields: bool,
}

/// A value read as a [`Ty`].
#[derive(Default)]
pub(crate) enum Value {
    /// `null` read as an `Option`, an ignored value, or a struct field that was absent.
    #[default]
    Null,
    Bool(bool),
    Str(String),
    U64(u64),
    List(Vec<Value>),
    Pairs(Vec<(String, Value)>),
    /// The text of a [`Ty::Raw`] value.
    Raw(String),
    /// One value per field, [`Value::Null`] for an absent one.
    Struct(Vec<Value>),
}

impl Value {
    /// The boolean, or `default` for an absent field.
    pub fn bool_or(self, default: bool) -> bool {
        match self {
            Value::Bool(value) => value,
            _ => default,
        }
    }

    /// The string; `None` for `null` or an absent field.
    pub fn string(self) -> Option<String> {
        match self {
            Value::Str(value) => Some(value),
            _ => None,
        }
    }

    /// The number; `None` for `null` or an absent field.
    pub fn u64(self) -> Option<u64> {
        match self {
            Value::U64(value) => Some(value),
            _ => None,
        }
    }

    /// The text of a raw value; `None` for `null` or an absent field.
    pub fn raw(self) -> Option<String> {
        match self {
            Value::Raw(text) => Some(text),
            _ => None,
        }
    }

    /// The elements of a list (none for an absent field).
    pub fn list(self) -> Vec<Value> {
        match self {
            Value::List(values) => values,
            _ => Vec::new(),
        }
    }

    /// The elements of a list of strings.
    pub fn strings(self) -> Vec<String> {
        self.list().into_iter().filter_map(Value::string).collect()
    }

    /// The pairs of an object (none for an absent field).
    pub fn pairs(self) -> Vec<(String, Value)> {
        match self {
            Value::Pairs(pairs) => pairs,
            _ => Vec::new(),
        }
    }

    /// The fields of a struct, taken one by one with [`Fields::take`].
    pub fn fields(self) -> Fields {
        match self {
            Value::Struct(values) => Fields(values),
            _ => Fields(Vec::new()),
        }
    }
}

/// The field values of a struct.
pub(crate) struct Fields(Vec<Value>);

impl Fields {
    /// Field `index`'s value, leaving [`Value::Null`] behind.
    pub fn take(&mut self, index: usize) -> Value {
        self.0.get_mut(index).map(std::mem::take).unwrap_or_default()
    }
}

/// Reads `json` as `serde_json::from_slice` would read the type `ty` stands for.
pub(crate) fn from_slice(json: &[u8], ty: Ty) -> Result<Value, serde_json::Error> {
    let mut walk = Walk { json, path: Vec::new(), last_raw: None };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = Expect { ty, walk: &mut walk }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The document and where in it the value being read is: the ordinal of the entry taken at
/// each level of arrays and objects.
struct Walk<'j> {
    json: &'j [u8],
    path: Vec<usize>,
    /// The path and start of the last raw value, and whether its container is an object: raw
    /// values come in document order, mostly as siblings (the registries), and each is found
    /// from the one before, so that a thousand registries take one pass over the document
    /// rather than one each.
    last_raw: Option<(Vec<usize>, usize, bool)>,
}

impl Walk<'_> {
    /// Where the raw value at the current path starts.
    fn raw_start(&mut self) -> usize {
        let json = self.json;
        let (Some((&ordinal, parent)), Some((last_path, last_start, object))) = (self.path.split_last(), &self.last_raw) else {
            return self.remember_raw(None);
        };
        let next_sibling = last_path.split_last().is_some_and(|(&last, last_parent)| last_parent == parent && last + 1 == ordinal);
        if !next_sibling {
            return self.remember_raw(None);
        }
        // Past the previous value and its ',', then past this entry's key and ':'.
        let mut i = skip_whitespace(json, skip_value(json, *last_start));
        i = skip_whitespace(json, i + 1);
        if *object {
            i = skip_whitespace(json, skip_string(json, i));
            i = skip_whitespace(json, i + 1);
        }
        let object = *object;
        self.remember_raw(Some((i.min(json.len()), object)))
    }

    fn remember_raw(&mut self, found: Option<(usize, bool)>) -> usize {
        let (start, object) = found.unwrap_or_else(|| {
            let parent = self.path.split_last().map_or(&[][..], |(_, parent)| parent);
            (locate(self.json, &self.path), self.json.get(locate(self.json, parent)) == Some(&b'{'))
        });
        self.last_raw = Some((self.path.clone(), start, object));
        start
    }
}

/// A value of type `ty` to read, as a serde seed and visitor.
struct Expect<'w, 'j> {
    ty: Ty,
    walk: &'w mut Walk<'j>,
}

impl<'j> Expect<'_, 'j> {
    /// The type a value other than `null` is read as.
    fn non_null(&self) -> Ty {
        match self.ty {
            Ty::Opt(ty) => *ty,
            ty => ty,
        }
    }

    /// Reads entry `ordinal` of the current array or object through `read`.
    fn child<T>(&mut self, ordinal: usize, ty: &Ty, read: impl FnOnce(Expect<'_, 'j>) -> T) -> T {
        self.walk.path.push(ordinal);
        let value = read(Expect { ty: *ty, walk: &mut *self.walk });
        self.walk.path.pop();
        value
    }

    /// A key of the current object.
    fn key<'de, A: MapAccess<'de>>(&mut self, map: &mut A) -> Result<Option<String>, A::Error> {
        Ok(map.next_key_seed(Expect { ty: Ty::Str, walk: &mut *self.walk })?.and_then(Value::string))
    }

    /// serde_json's `invalid type` error, placed where serde_json places it: after the value.
    fn invalid<E: Error>(&self, unexpected: impl Display) -> E {
        E::custom(format_args!("invalid type: {unexpected}, expected {}", Expected(self.non_null())))
    }

    /// The `invalid type` error for an array or object: serde_json places it before the bracket.
    fn invalid_here<E: Error>(&self, unexpected: &str) -> E {
        let (line, column) = position(self.walk.json, locate(self.walk.json, &self.walk.path));
        E::custom(format_args!(
            "invalid type: {unexpected}, expected {} at line {line} column {column}",
            Expected(self.non_null())
        ))
    }

    /// A raw value, now that serde_json has checked its syntax: its text, as `RawValue` keeps it.
    fn raw<E: Error>(self) -> Result<Value, E> {
        let json = self.walk.json;
        let start = self.walk.raw_start();
        let end = skip_value(json, start);
        let bytes = json.get(start..end).unwrap_or_default();
        match std::str::from_utf8(bytes) {
            Ok("null") if matches!(self.ty, Ty::Opt(_)) => Ok(Value::Null),
            Ok(text) => Ok(Value::Raw(text.to_owned())),
            Err(e) => {
                let (line, column) = position(json, start + e.valid_up_to() + 1);
                Err(E::custom(format_args!("invalid unicode code point at line {line} column {column}")))
            }
        }
    }

    fn read_struct_map<'de, A: MapAccess<'de>>(mut self, shape: &'static Struct, mut map: A) -> Result<Value, A::Error> {
        let mut values: Vec<Option<Value>> = shape.types.iter().map(|_| None).collect();
        let mut ordinal = 0;
        while let Some(key) = self.key(&mut map)? {
            match shape.fields.iter().position(|field| *field == key) {
                Some(index) => {
                    let (Some(slot), Some(ty), Some(field)) = (values.get_mut(index), shape.types.get(index), shape.fields.get(index))
                    else {
                        return Err(A::Error::unknown_field(&key, shape.fields));
                    };
                    if slot.is_some() {
                        return Err(A::Error::duplicate_field(field));
                    }
                    *slot = Some(self.child(ordinal, ty, |seed| map.next_value_seed(seed))?);
                }
                None if shape.deny_unknown_fields => return Err(A::Error::unknown_field(&key, shape.fields)),
                None => {
                    self.child(ordinal, &Ty::Ignored, |seed| map.next_value_seed(seed))?;
                }
            }
            ordinal += 1;
        }
        let missing = values.iter().zip(shape.fields).take(shape.required).find(|(value, _)| value.is_none());
        if let Some((_, field)) = missing {
            return Err(A::Error::missing_field(field));
        }
        Ok(Value::Struct(values.into_iter().map(Option::unwrap_or_default).collect()))
    }

    fn read_struct_seq<'de, A: SeqAccess<'de>>(mut self, shape: &'static Struct, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(shape.types.len());
        for (index, ty) in shape.types.iter().enumerate() {
            match self.child(index, ty, |seed| seq.next_element_seed(seed))? {
                Some(value) => values.push(value),
                None if index < shape.required => return Err(A::Error::invalid_length(index, &shape.as_array)),
                None => values.push(Value::Null),
            }
        }
        Ok(Value::Struct(values))
    }
}

impl<'de> DeserializeSeed<'de> for Expect<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.ty {
            Ty::Raw | Ty::Opt(Ty::Raw) | Ty::Ignored => deserializer.deserialize_ignored_any(self),
            _ => deserializer.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Expect<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Expected(self.non_null()).fmt(f)
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        match self.ty {
            Ty::Raw | Ty::Opt(Ty::Raw) => self.raw(),
            Ty::Opt(_) | Ty::Ignored => Ok(Value::Null),
            _ => Err(self.invalid("null")),
        }
    }

    fn visit_bool<E: Error>(self, value: bool) -> Result<Value, E> {
        match self.non_null() {
            Ty::Bool => Ok(Value::Bool(value)),
            _ => Err(self.invalid(format_args!("boolean `{value}`"))),
        }
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<Value, E> {
        match self.non_null() {
            Ty::U64 => Ok(Value::U64(value)),
            _ => Err(self.invalid(format_args!("integer `{value}`"))),
        }
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<Value, E> {
        match (self.non_null(), u64::try_from(value)) {
            (Ty::U64, Ok(value)) => Ok(Value::U64(value)),
            (Ty::U64, Err(_)) => Err(E::custom(format_args!("invalid value: integer `{value}`, expected u64"))),
            _ => Err(self.invalid(format_args!("integer `{value}`"))),
        }
    }

    fn visit_f64<E: Error>(self, value: f64) -> Result<Value, E> {
        // serde_json writes the float as its `Number` does; a parsed number is always finite.
        let number = serde_json::Number::from_f64(value).map_or_else(|| "NaN".to_owned(), |number| number.to_string());
        Err(self.invalid(format_args!("floating point `{number}`")))
    }

    fn visit_str<E: Error>(self, value: &str) -> Result<Value, E> {
        match self.non_null() {
            Ty::Str => Ok(Value::Str(value.to_owned())),
            _ => Err(self.invalid(format_args!("string {value:?}"))),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        match self.non_null() {
            Ty::Struct(shape) => self.read_struct_seq(shape, seq),
            Ty::List(ty) => {
                let mut values = Vec::new();
                while let Some(value) = self.child(values.len(), ty, |seed| seq.next_element_seed(seed))? {
                    values.push(value);
                }
                Ok(Value::List(values))
            }
            Ty::OrderedPairs(ty) => {
                let mut pairs: Vec<(String, Value)> = Vec::new();
                let entry = Ty::Pairs(ty);
                // Each entry adds one pair or fails, so the entry's ordinal is the pair count.
                while let Some(value) = self.child(pairs.len(), &entry, |seed| seq.next_element_seed(seed))? {
                    let mut one = value.pairs();
                    if one.len() != 1 {
                        return Err(A::Error::invalid_length(one.len(), &"one entry"));
                    }
                    let (key, value) = one.remove(0);
                    push_new_key(&mut pairs, key, value)?;
                }
                Ok(Value::Pairs(pairs))
            }
            _ => Err(self.invalid_here("sequence")),
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        match self.non_null() {
            Ty::Struct(shape) => self.read_struct_map(shape, map),
            Ty::Pairs(ty) | Ty::OrderedPairs(ty) => {
                let mut pairs: Vec<(String, Value)> = Vec::new();
                while let Some(key) = self.key(&mut map)? {
                    let value = self.child(pairs.len(), ty, |seed| map.next_value_seed(seed))?;
                    push_new_key(&mut pairs, key, value)?;
                }
                Ok(Value::Pairs(pairs))
            }
            _ => Err(self.invalid_here("map")),
        }
    }
}

/// Appends a pair, or fails as the configuration's own `Deserialize` does on a repeated key.
fn push_new_key<E: Error>(pairs: &mut Vec<(String, Value)>, key: String, value: Value) -> Result<(), E> {
    if pairs.iter().any(|(seen, _)| *seen == key) {
        return Err(E::custom(format_args!("duplicate key {key:?}")));
    }
    pairs.push((key, value));
    Ok(())
}

/// What serde's visitor for a type says it expects.
struct Expected(Ty);

impl Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Ty::Bool => "a boolean",
            Ty::Str => "a string",
            Ty::U64 => "u64",
            Ty::Opt(_) => "option",
            Ty::List(_) => "a sequence",
            Ty::Pairs(_) => "an object",
            Ty::OrderedPairs(_) => "an object or a list of one-entry objects",
            Ty::Raw | Ty::Ignored => "any valid JSON value",
            Ty::Struct(shape) => shape.name,
        })
    }
}

/// serde_json's line and column of byte `index`: the column counts the bytes before it on its line.
fn position(json: &[u8], index: usize) -> (usize, usize) {
    let before = json.get(..index).unwrap_or(json);
    let start_of_line = before.iter().rposition(|&b| b == b'\n').map_or(0, |newline| newline + 1);
    let line = 1 + before.iter().take(start_of_line).filter(|&&b| b == b'\n').count();
    (line, index - start_of_line)
}

/// Where the value at `path` starts, in a document whose syntax serde_json has checked up to it.
fn locate(json: &[u8], path: &[usize]) -> usize {
    let mut i = skip_whitespace(json, 0);
    for &ordinal in path {
        let object = json.get(i) == Some(&b'{');
        i += 1;
        for entry in 0..=ordinal {
            i = skip_whitespace(json, i);
            if entry > 0 {
                // The ',' before this entry.
                i = skip_whitespace(json, i + 1);
            }
            if object {
                // The key and its ':'.
                i = skip_whitespace(json, skip_string(json, i));
                i = skip_whitespace(json, i + 1);
            }
            if entry < ordinal {
                i = skip_value(json, i);
            }
        }
    }
    i.min(json.len())
}

/// The end of the value starting at `start`.
fn skip_value(json: &[u8], start: usize) -> usize {
    match json.get(start) {
        Some(b'"') => skip_string(json, start),
        Some(b'[' | b'{') => {
            let mut i = start;
            let mut depth = 0usize;
            while let Some(&b) = json.get(i) {
                match b {
                    b'"' => i = skip_string(json, i),
                    b'[' | b'{' => {
                        depth += 1;
                        i += 1;
                    }
                    b']' | b'}' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => i += 1,
                }
            }
            i
        }
        Some(b't' | b'n') => (start + 4).min(json.len()),
        Some(b'f') => (start + 5).min(json.len()),
        _ => {
            let mut i = start;
            while matches!(json.get(i), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                i += 1;
            }
            i
        }
    }
}

/// The end of the string starting (with its `"`) at `start`.
fn skip_string(json: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while let Some(&b) = json.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

fn skip_whitespace(json: &[u8], start: usize) -> usize {
    let mut i = start;
    while matches!(json.get(i), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        i += 1;
    }
    i
}

/// Documents for the differential tests of the readers built on this module against the
/// `#[derive(Deserialize)]` types they stand for: seeds, and seeds mutated at random.
#[cfg(test)]
pub(crate) mod fuzz {
    /// Bytes that make or break JSON, and values of every type.
    const PIECES: &[&[u8]] = &[
        b"{", b"}", b"[", b"]", b"\"", b",", b":", b" ", b"\n", b"\\", b"null", b"nul", b"true", b"false", b"0", b"-1", b"-0",
        b"7", b"1.5", b"1e2", b"1e400", b"18446744073709551616", b"\"x\"", b"\"\\u00e9\"", b"\"\\ud800\"", b"\"a\\nb\"",
        b"\"\\q\"", b"[]", b"{}", b"[\"a\"]", b"{\"a\":1}", b"\xff", b"\xc3\xa9", b"\"\t\"", b"\"registries\"", b"\"project\"",
        b"\"auth\"", b"\"robot\"", b"\"username\"", b"\"password\"", b"\"rewrite\"", b"\"hosts\"", b"\"token\"", b"\"access\"",
        b"\"expires_in\"", b"\"type\"", b"\"actions\"",
    ];

    /// A small deterministic generator (xorshift64*).
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }

        pub fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
        }
    }

    /// `seed` with one to three random edits.
    pub fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut doc = seed.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(doc.len() + 1);
            match rng.below(4) {
                0 => {
                    let end = (at + 1 + rng.below(4)).min(doc.len());
                    doc.drain(at.min(end)..end);
                }
                1 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    doc.splice(at..at, piece.iter().copied());
                }
                2 => {
                    let end = (at + 1 + rng.below(12)).min(doc.len());
                    let piece = PIECES[rng.below(PIECES.len())];
                    doc.splice(at.min(end)..end, piece.iter().copied());
                }
                _ => {
                    let end = (at + 1 + rng.below(16)).min(doc.len());
                    let copy = doc[at.min(end)..end].to_vec();
                    let to = rng.below(doc.len() + 1);
                    doc.splice(to..to, copy);
                }
            }
        }
        doc
    }
}
