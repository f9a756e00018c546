//! JSON mode: validation and one-level flattening of appended bodies.
//!
//! A JSON stream stores each message as its own chunk holding the value's compact
//! serialization, so message boundaries are chunk boundaries: a page is cut between values by
//! construction, and a fork sub-offset counts chunks. A top-level array in an append is a
//! batch of messages (flattened one level: `[[1,2],[3]]` is two messages); any other value is
//! one message.

use serde_json::Value;

use crate::error::{StreamError, StreamResult};

/// The messages of a JSON body. `allow_empty` admits `[]` (PUT) or an empty body.
pub fn flatten(body: &[u8], allow_empty: bool) -> StreamResult<Vec<Vec<u8>>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if allow_empty {
            Ok(Vec::new())
        } else {
            Err(StreamError::bad_request("empty body"))
        };
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| StreamError::bad_request(format!("body is not valid JSON: {e}")))?;
    let values = match value {
        Value::Array(items) => {
            if items.is_empty() && !allow_empty {
                return Err(StreamError::bad_request(
                    "an empty JSON array appends nothing; send at least one value",
                ));
            }
            items
        }
        other => vec![other],
    };
    values
        .iter()
        .map(|v| serde_json::to_vec(v).map_err(|e| StreamError::bad_request(e.to_string())))
        .collect()
}

/// Joins stored values into one JSON array.
pub fn join<V: AsRef<[u8]>>(values: &[V]) -> Vec<u8> {
    let capacity = values.iter().map(|v| v.as_ref().len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(capacity);
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v.as_ref());
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_one_level() {
        let f = |s: &str| flatten(s.as_bytes(), false).ok();
        assert_eq!(
            f("[[1,2],[3,4]]"),
            Some(vec![b"[1,2]".to_vec(), b"[3,4]".to_vec()])
        );
        assert_eq!(f("[[[1,2,3]]]"), Some(vec![b"[[1,2,3]]".to_vec()]));
        assert_eq!(f("{\"a\": 1}"), Some(vec![b"{\"a\":1}".to_vec()]));
        assert!(f("[]").is_none());
        assert!(f("{").is_none());
        assert_eq!(flatten(b"[]", true).ok(), Some(vec![]));
        assert_eq!(join(&[b"1".to_vec(), b"2".to_vec()]), b"[1,2]");
    }
}
