//! The YAML that k3s and RKE2 `registries.yaml` files are written in: block mappings and
//! sequences, flow sequences and mappings, plain and quoted scalars, comments. Anything else
//! (anchors, tags, block scalars, several documents) is an error naming its line, so that a
//! file is never half-read.

use std::fmt;

/// A YAML value; every scalar stays text, as the importer compares and copies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    List(Vec<Value>),
    /// Entries in document order.
    Map(Vec<(String, Value)>),
}

/// A reading error, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error<T>(line: usize, message: impl Into<String>) -> Result<T, YamlError> {
    Err(YamlError { line, message: message.into() })
}

/// One non-blank line, comment removed.
#[derive(Debug, Clone)]
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

/// Reads one YAML document.
pub fn parse(source: &str) -> Result<Value, YamlError> {
    let mut lines = Vec::new();
    let mut documents = 0;
    for (index, raw) in source.lines().enumerate() {
        let number = index + 1;
        let text = strip_comment(raw).trim_end();
        if text.trim().is_empty() {
            continue;
        }
        if text == "---" {
            documents += 1;
            if documents > 1 || !lines.is_empty() {
                return error(number, "only one YAML document is supported");
            }
            continue;
        }
        if text.trim_start_matches(' ').starts_with('\t') {
            return error(number, "tabs are not allowed for indentation");
        }
        let indent = text.len() - text.trim_start_matches(' ').len();
        lines.push(Line { number, indent, text: &text[indent..] });
    }
    let mut reader = Reader { lines, next: 0 };
    let Some(first) = reader.peek() else { return Ok(Value::Null) };
    let value = reader.block(first.indent)?;
    match reader.peek() {
        Some(extra) => error(extra.number, "unexpected indentation"),
        None => Ok(value),
    }
}

/// The line without its comment: `#` at its start or after a space, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..i],
            None => {}
        }
        previous = c;
    }
    line
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    next: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.next).cloned()
    }

    /// The block node whose first line is next, at `indent`.
    fn block(&mut self, indent: usize) -> Result<Value, YamlError> {
        let Some(line) = self.peek() else { return Ok(Value::Null) };
        if is_item(line.text) {
            self.list(indent)
        } else if split_key(line.text, line.number)?.is_some() {
            self.map(indent)
        } else {
            self.next += 1;
            inline(line.text, line.number)
        }
    }

    fn list(&mut self, indent: usize) -> Result<Value, YamlError> {
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_item(line.text) {
                break;
            }
            let rest = line.text[1..].trim_start();
            if rest.is_empty() {
                self.next += 1;
                items.push(self.nested(indent)?);
            } else {
                // `- key: value` starts a mapping whose keys line up with `key`.
                let offset = line.text.len() - rest.len();
                self.lines[self.next] = Line { number: line.number, indent: indent + offset, text: rest };
                items.push(self.block(indent + offset)?);
            }
        }
        Ok(Value::List(items))
    }

    fn map(&mut self, indent: usize) -> Result<Value, YamlError> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return error(line.number, "unexpected indentation");
            }
            if is_item(line.text) {
                return error(line.number, "a list item where a mapping key was expected");
            }
            let Some((key, rest)) = split_key(line.text, line.number)? else {
                return error(line.number, format!("expected `key: value`, found {:?}", line.text));
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return error(line.number, format!("duplicate key {key:?}"));
            }
            self.next += 1;
            let value = if !rest.is_empty() {
                inline(rest, line.number)?
            } else if self.peek().is_some_and(|next| next.indent == indent && is_item(next.text)) {
                // A list may sit at its key's own indentation.
                self.list(indent)?
            } else {
                self.nested(indent)?
            };
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }

    /// The node under a line ending in `:` or `-`: deeper lines, or null.
    fn nested(&mut self, indent: usize) -> Result<Value, YamlError> {
        match self.peek() {
            Some(next) if next.indent > indent => self.block(next.indent),
            _ => Ok(Value::Null),
        }
    }
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// `key: rest` (rest may be empty), or `None` if the line is not a mapping entry.
fn split_key(text: &str, line: usize) -> Result<Option<(String, &str)>, YamlError> {
    if text.starts_with(['"', '\'']) {
        let (key, after) = quoted(text, line)?;
        return Ok(after.strip_prefix(':').filter(|r| r.is_empty() || r.starts_with(' ')).map(|r| (key, r.trim())));
    }
    if text.starts_with(['[', '{']) {
        return Ok(None);
    }
    if let Some(key) = text.strip_suffix(':') {
        return Ok(Some((plain(key.trim(), line)?, "")));
    }
    Ok(match text.split_once(": ") {
        Some((key, rest)) => Some((plain(key.trim(), line)?, rest.trim())),
        None => None,
    })
}

/// A value written on one line: a flow list or mapping, a quoted or a plain scalar.
fn inline(text: &str, line: usize) -> Result<Value, YamlError> {
    let (value, rest) = flow(text, line)?;
    if !rest.trim().is_empty() {
        return error(line, format!("unexpected {:?} after a value", rest.trim()));
    }
    Ok(value)
}

/// One flow value at the start of `text`, and what follows it.
fn flow(text: &str, line: usize) -> Result<(Value, &str), YamlError> {
    let text = text.trim_start();
    if let Some(mut rest) = text.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix(']') {
                return Ok((Value::List(items), after));
            }
            let (item, after) = flow_scalar_or_nested(rest, line, &[',', ']'])?;
            items.push(item);
            rest = separator(after, ']', line)?;
        }
    }
    if let Some(mut rest) = text.strip_prefix('{') {
        let mut entries = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                return Ok((Value::Map(entries), after));
            }
            let (key, after) = flow_scalar_or_nested(rest, line, &[':', ',', '}'])?;
            let Value::Text(key) = key else { return error(line, "a flow mapping key must be a scalar") };
            let Some(after) = after.trim_start().strip_prefix(':') else {
                return error(line, format!("expected ':' after key {key:?}"));
            };
            let (value, after) = flow_scalar_or_nested(after, line, &[',', '}'])?;
            entries.push((key, value));
            rest = separator(after, '}', line)?;
        }
    }
    flow_scalar_or_nested(text, line, &[])
}

/// After a flow item: `,` (consumed) or the closing bracket (left for the caller).
fn separator(text: &str, close: char, line: usize) -> Result<&str, YamlError> {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix(',') {
        Ok(rest)
    } else if text.starts_with(close) {
        Ok(text)
    } else {
        error(line, format!("expected ',' or '{close}'"))
    }
}

/// A scalar or nested flow collection; a plain scalar ends at one of `stops` (none: line end).
fn flow_scalar_or_nested<'t>(text: &'t str, line: usize, stops: &[char]) -> Result<(Value, &'t str), YamlError> {
    let text = text.trim_start();
    if text.starts_with(['[', '{']) {
        return flow(text, line);
    }
    if text.starts_with(['"', '\'']) {
        let (value, rest) = quoted(text, line)?;
        return Ok((Value::Text(value), rest));
    }
    let end = if stops.is_empty() { text.len() } else { text.find(stops).unwrap_or(text.len()) };
    let word = text[..end].trim();
    let value = match word {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        _ => Value::Text(plain(word, line)?),
    };
    Ok((value, &text[end..]))
}

/// A plain scalar, refusing the indicators this reader does not implement.
fn plain(word: &str, line: usize) -> Result<String, YamlError> {
    match word.chars().next() {
        Some('&') => error(line, "anchors are not supported"),
        Some('*') => error(line, "aliases are not supported"),
        Some('!') => error(line, "tags are not supported"),
        Some('|' | '>') => error(line, "block scalars are not supported; quote the value on one line"),
        Some('?') if word.len() == 1 || word.starts_with("? ") => error(line, "complex keys are not supported"),
        Some('@' | '`') => error(line, format!("a plain scalar cannot start with {:?}", &word[..1])),
        _ => Ok(word.to_owned()),
    }
}

/// A single- or double-quoted scalar at the start of `text`, and what follows it.
fn quoted(text: &str, line: usize) -> Result<(String, &str), YamlError> {
    let mut chars = text.char_indices();
    let Some((_, quote)) = chars.next() else { return error(line, "expected a quoted scalar") };
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            ('\'', '\'') => {
                if text[i + 1..].starts_with('\'') {
                    value.push('\'');
                    chars.next();
                } else {
                    return Ok((value, &text[i + 1..]));
                }
            }
            ('"', '"') => return Ok((value, &text[i + 1..])),
            ('"', '\\') => match chars.next().map(|(_, e)| e) {
                Some('"') => value.push('"'),
                Some('\\') => value.push('\\'),
                Some('/') => value.push('/'),
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                Some(other) => return error(line, format!("the escape \\{other} is not supported")),
                None => break,
            },
            _ => value.push(c),
        }
    }
    error(line, "unterminated quoted scalar (multi-line scalars are not supported)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
    }

    #[test]
    fn reads_the_shapes_registries_yaml_is_written_in() {
        let source = r#"
# k3s
mirrors:
  docker.io:
    endpoint:
      - "https://harbor.example.com"   # the mirror
      - https://registry-1.docker.io
    rewrite:
      "^rancher/(.*)": "mirrored/rancher/$1"
  'quay.io':
    endpoint: ["https://harbor.example.com", 'https://x#y']
  registry.example.com:5000:
    endpoint:
    - http://a:5000
configs:
  harbor.example.com:
    auth: {username: "robot$x", password: it's}
    tls:
      insecure_skip_verify: true
"#;
        let expected = map(&[
            (
                "mirrors",
                map(&[
                    (
                        "docker.io",
                        map(&[
                            ("endpoint", Value::List(vec![text("https://harbor.example.com"), text("https://registry-1.docker.io")])),
                            ("rewrite", map(&[("^rancher/(.*)", text("mirrored/rancher/$1"))])),
                        ]),
                    ),
                    ("quay.io", map(&[("endpoint", Value::List(vec![text("https://harbor.example.com"), text("https://x#y")]))])),
                    ("registry.example.com:5000", map(&[("endpoint", Value::List(vec![text("http://a:5000")]))])),
                ]),
            ),
            (
                "configs",
                map(&[(
                    "harbor.example.com",
                    map(&[
                        ("auth", map(&[("username", text("robot$x")), ("password", text("it's"))])),
                        ("tls", map(&[("insecure_skip_verify", text("true"))])),
                    ]),
                )]),
            ),
        ]);
        assert_eq!(parse(source), Ok(expected));
    }

    #[test]
    fn list_items_may_hold_mappings_and_quotes_escape() {
        let source = "- name: a\n  value: 'it''s'\n- \"x\\\"y\"\n-\n  - nested\n";
        let expected = Value::List(vec![
            map(&[("name", text("a")), ("value", text("it's"))]),
            text("x\"y"),
            Value::List(vec![text("nested")]),
        ]);
        assert_eq!(parse(source), Ok(expected));
    }

    #[test]
    fn empty_values_and_documents_are_null() {
        assert_eq!(parse(""), Ok(Value::Null));
        assert_eq!(parse("---\n# nothing\n"), Ok(Value::Null));
        assert_eq!(parse("mirrors:\nconfigs: ~\n"), Ok(map(&[("mirrors", Value::Null), ("configs", Value::Null)])));
    }

    #[test]
    fn what_it_does_not_read_is_an_error_naming_the_line() {
        let cases = [
            ("a: &x 1\n", 1, "anchors are not supported"),
            ("a: 1\nb: *x\n", 2, "aliases are not supported"),
            ("a: !!str 1\n", 1, "tags are not supported"),
            ("a: |\n  text\n", 1, "block scalars are not supported"),
            ("a: 1\n---\nb: 2\n", 2, "only one YAML document is supported"),
            ("a: 1\n  b: 2\n", 2, "unexpected indentation"),
            ("a: 1\na: 2\n", 2, "duplicate key \"a\""),
            ("a: \"open\n", 1, "unterminated quoted scalar"),
            ("a: [1, 2\n", 1, "expected ',' or ']'"),
            ("a:\n  - 1\n  b: 2\n", 3, "unexpected indentation"),
            ("a: \"\\x41\"\n", 1, "the escape \\x is not supported"),
        ];
        for (source, line, message) in cases {
            let err = parse(source).expect_err(source);
            assert_eq!(err.line, line, "{source:?}: {err}");
            assert!(err.message.contains(message), "{source:?}: {err}");
        }
    }
}
