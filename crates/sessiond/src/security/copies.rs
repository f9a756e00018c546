//! The two copies the relay makes of a queued event, the user's and the global one, written
//! from the event's JSON text field by field.
//!
//! Why not through `serde_json::Value`: decoding every event into a map (a key and a value
//! allocated per field, nested ones too) and encoding it twice was about a tenth of what an
//! event cost the relay. The fields are only moved, dropped or added, so each is kept as the
//! JSON text it was written as ([`RawValue`]) and copied as is; only `device` is opened (its
//! `ip` is dropped from the global copy). The result decodes as the map's encoding did: the
//! same fields and values, a field written twice counted once (the later one, as a map
//! insert keeps), fields in key order.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::{Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A field name: borrowed from the event's text unless it has escapes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Name)
    }
}

/// An object's fields, by name (the later of two with one name). The relay decodes an outbox
/// entry's event as this, borrowed from the entry: one pass over its text.
pub(super) type Fields<'a> = BTreeMap<Key<'a>, &'a RawValue>;

fn fields(json: &str) -> Option<Fields<'_>> {
    serde_json::from_str(json).ok()
}

/// One queued event's copies, but for the global copy's `user_ref` (known after the batch's
/// lookups, see [`Global::finish`]).
pub(super) struct Copies {
    /// The event as the user's stream shows it.
    pub user: Vec<u8>,
    pub global: Global,
    /// `at`, what the relay orders by (0 when absent or not an integer).
    pub at: i64,
}

/// The global copy up to its last field (`user_ref`), without the closing brace.
pub(super) struct Global(Vec<u8>);

/// The bytes `fields` take written out, about.
fn size(fields: &Fields<'_>) -> usize {
    fields
        .iter()
        .map(|(k, v)| k.0.len() + v.get().len() + 4)
        .sum()
}

/// The event whose fields are `fields` as the user's stream shows it.
fn user_copy(fields: &Fields<'_>) -> Vec<u8> {
    let mut user = Vec::with_capacity(size(fields) + 2);
    user.push(b'{');
    for (key, value) in fields {
        put(&mut user, key, value.get());
    }
    user.push(b'}');
    user
}

impl Copies {
    /// The copies of the event whose fields are `fields`; the user's one empty unless
    /// `with_user` (an entry whose user's copy was written already, `route.rs`).
    pub fn of(fields: &Fields<'_>, with_user: bool) -> Copies {
        let at = fields
            .get(&Key(Cow::Borrowed("at")))
            .and_then(|v| v.get().parse().ok())
            .unwrap_or(0);
        let mut global = Vec::with_capacity(size(fields) + 64);
        global.push(b'{');
        for (key, value) in fields {
            match key.0.as_ref() {
                // Replaced by `user_ref`; the address stays out of the global stream.
                "user_id" | "user_ref" => {}
                "device" => put_device(&mut global, value),
                _ => put(&mut global, key, value.get()),
            }
        }
        Copies {
            user: if with_user {
                user_copy(fields)
            } else {
                Vec::new()
            },
            global: Global(global),
            at,
        }
    }
}

impl Global {
    /// The global copy: the event without `user_id` and without the device's `ip`, with
    /// `user_ref` (the reference, or `null`).
    pub fn finish(self, user_ref: Option<&str>) -> Vec<u8> {
        let Global(mut out) = self;
        put_name(&mut out, &Key("user_ref".into()));
        // A string always serializes.
        let _ = serde_json::to_writer(&mut out, &user_ref);
        out.push(b'}');
        out
    }
}

/// Appends `"key":value` to an object being written.
fn put(out: &mut Vec<u8>, key: &Key<'_>, value: &str) {
    put_name(out, key);
    out.extend_from_slice(value.as_bytes());
}

/// Appends `"key":` (after a comma unless it is the object's first field).
fn put_name(out: &mut Vec<u8>, key: &Key<'_>) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    match &key.0 {
        // Read without escapes, so it needs none (JSON text has no bare quote, backslash or
        // control character in a string).
        Cow::Borrowed(name) => {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.push(b'"');
        }
        // A string always serializes.
        Cow::Owned(name) => {
            let _ = serde_json::to_writer(&mut *out, name);
        }
    }
    out.push(b':');
}

/// Appends the `device` field without its `ip` (as is when it is not an object).
fn put_device(out: &mut Vec<u8>, device: &RawValue) {
    let key = Key("device".into());
    let Some(fields) = fields(device.get()) else {
        return put(out, &key, device.get());
    };
    put_name(out, &key);
    out.push(b'{');
    for (name, value) in &fields {
        if name.0 != "ip" {
            put(out, name, value.get());
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    /// What the relay wrote before: the map's encodings.
    fn by_map(event: &str, user_ref: Option<&str>) -> (Value, Value) {
        let mut map: Map<String, Value> = serde_json::from_str(event).expect("object");
        let user = Value::Object(map.clone());
        map.remove("user_id");
        if let Some(fields) = map.get_mut("device").and_then(Value::as_object_mut) {
            fields.remove("ip");
        }
        map.insert("user_ref".into(), user_ref.into());
        (user, Value::Object(map))
    }

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("the copy is JSON")
    }

    /// The copies decode as the map's did: escaped names and values, nested objects, a field
    /// written twice, a device without an object, an event with only a user id.
    #[test]
    fn copies_decode_as_the_maps_encodings() {
        let events = [
            r#"{"id":"e1","type":"session.created","at":17,"session_id":"s","user_id":"ada \"é","device":{"ip":"10.0.0.0","user_agent":"x\"y"},"new_device":true,"type":"overridden","n\u00e9":[1,{"a":null}]}"#,
            r#"{"id":"e2","type":"t","at":"late","device":"phone","user_ref":"forged"}"#,
            r#"{"user_id":"u"}"#,
            r#"{}"#,
        ];
        for event in events {
            for user_ref in [Some("r\"1"), None] {
                let copies = Copies::of(&fields(event).expect("an object"), true);
                let (user, global) = by_map(event, user_ref);
                assert_eq!(parsed(&copies.user), user, "{event}");
                assert_eq!(parsed(&copies.global.finish(user_ref)), global, "{event}");
            }
        }
        let at = |event: &str| fields(event).map(|f| Copies::of(&f, true).at);
        assert_eq!(at(events[0]), Some(17));
        assert_eq!(at(events[1]), Some(0));
        assert!(at(&json!([1]).to_string()).is_none(), "not an object");
    }
}
