//! The outbox event of a data change, for a store that applies the change itself.
//!
//! Why a template: the caller of [`SessionStore::update_session_data`] does not read the
//! record first (on a shared engine that read is a round trip of its own), so it cannot know
//! what the event must say about the change: which top-level keys it altered, the version it
//! made, and whose session it is. It hands the engine the event with those facts left as
//! holes; the engine fills them in the atomic step that makes the change, so an acknowledged
//! change always has its event and a refused one has none. The event stays opaque: the engine
//! only concatenates text pieces and the JSON of the facts it holds.
//!
//! [`SessionStore::update_session_data`]: super::SessionStore::update_session_data

use serde_json::{Map, Value};

use super::SessionRecord;

/// One piece of a [`DataEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventPart {
    /// Bytes written as they are.
    Text(Vec<u8>),
    /// The top-level keys of the data whose values the change altered (added, removed or
    /// changed, by JSON value: member order inside objects does not count), as a JSON array
    /// of strings sorted by their UTF-8 bytes ([`changed_keys`]).
    ChangedKeys,
    /// The version the change wrote, a JSON number.
    Version,
    /// The session's owner, a JSON string, or `null` without one.
    UserId,
    /// The session's origin, a JSON string ([`super::SessionOrigin::as_str`]).
    Origin,
}

/// An outbox event with holes the engine fills when it writes the change: the concatenation
/// of its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataEvent(pub Vec<EventPart>);

impl DataEvent {
    /// The event for the change from `before` (the stored data text) to `after` (the record
    /// as written).
    pub fn render(&self, before: &str, after: &SessionRecord) -> Vec<u8> {
        let mut out = Vec::new();
        for part in &self.0 {
            let filled = match part {
                EventPart::Text(text) => {
                    out.extend_from_slice(text);
                    continue;
                }
                EventPart::ChangedKeys => json(&changed_keys(before, &after.data)),
                EventPart::Version => after.version.to_string(),
                EventPart::UserId => json(&after.user_id),
                EventPart::Origin => json(after.origin.as_str()),
            };
            out.extend_from_slice(filled.as_bytes());
        }
        out
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Strings, numbers and lists of strings always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

/// The top-level keys of session data whose values differ between two stored texts (added,
/// removed or changed), sorted: which part of the context changed, never the values. A text
/// that is not a JSON object counts as empty.
pub fn changed_keys(old: &str, new: &str) -> Vec<String> {
    let parse = |text: &str| serde_json::from_str::<Map<String, Value>>(text).unwrap_or_default();
    let (old, new) = (parse(old), parse(new));
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
