//! YAML documents, read with serde-saphyr into serde_json's `Value` with keys in document order.
//! JSON is YAML, so every file the command line reads goes through here.

use serde_json::Value;

/// The one document in `text`.
pub fn parse(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(one_line)
}

/// Every document in `text` (`---` separated), empty ones left out.
pub fn parse_all(text: &str) -> Result<Vec<Value>, String> {
    let documents = serde_saphyr::from_multiple::<Value>(text).map_err(one_line)?;
    Ok(documents.into_iter().filter(|document| !document.is_null()).collect())
}

/// serde-saphyr's message without the snippet it draws under it.
fn one_line(error: serde_saphyr::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_key_order_and_lose_their_comments() {
        let value = parse("z: 1\na: it's # a note\nm: [x, {y: 2}]\n").expect("valid");
        assert_eq!(value.to_string(), r#"{"z":1,"a":"it's","m":["x",{"y":2}]}"#);
    }

    #[test]
    fn mistakes_are_one_line_with_their_place() {
        let rows = [("a: 1\na: 2\n", "line 2 column 1: duplicate mapping key: a"), ("a: [\n", "line 1 column 4: unclosed bracket")];
        for (text, expected) in rows {
            let error = parse(text).expect_err(text);
            assert!(error.starts_with(expected) && !error.contains('\n'), "{text:?}: {error}");
        }
    }

    #[test]
    fn several_documents_are_read_apart() {
        let values = parse_all("---\na: 1\n---\n---\nb: 2\n").expect("valid");
        assert_eq!(values.len(), 2);
    }
}
