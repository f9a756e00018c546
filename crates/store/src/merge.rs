//! The two ways a client can merge into session data.
//!
//! - [`merge_patch`]: JSON Merge Patch (RFC 7396), the native `PATCH`: objects merge
//!   recursively and `null` deletes a member.
//! - [`shallow_merge`]: `{...old, ...new}`, what the seeds' clients expect from their
//!   `add`/`update` routes (a `null` is stored as a value, nested objects are replaced).

use serde_json::{Map, Value};

/// Applies an RFC 7396 merge patch to `target` in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(members) = target {
        for (name, value) in patch {
            if value.is_null() {
                members.remove(name);
            } else {
                merge_patch(members.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Copies every top-level member of `addition` into `target`.
pub fn shallow_merge(target: &mut Map<String, Value>, addition: Map<String, Value>) {
    target.extend(addition);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn shallow_merge_keeps_nulls_and_replaces_nested_objects() {
        let mut target = json!({"a":{"x":1},"b":2})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let addition = json!({"a":{"y":2},"c":null})
            .as_object()
            .cloned()
            .unwrap_or_default();
        shallow_merge(&mut target, addition);
        assert_eq!(Value::Object(target), json!({"a":{"y":2},"b":2,"c":null}));
    }
}
