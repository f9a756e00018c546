//! The in-memory index from stream paths to the subscriptions that follow them.
//!
//! Every observed append must find its subscriptions without loading each subscription
//! record, so the patterns and explicit paths of all subscriptions are kept here (rebuilt from
//! the persisted records at startup). Lookups scan the patterns linearly: fine for the
//! hundreds of subscriptions a server holds; a prefix tree would be the next step. This
//! assumes one sessiond process owns the engine (true for SQLite, which locks its data
//! directory); several nodes sharing an engine would each need the others' changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use super::glob;

#[derive(Clone, Debug, Default)]
struct Entry {
    pattern: Option<String>,
    explicit: BTreeSet<String>,
}

/// Subscription id → what it follows.
#[derive(Default)]
pub struct Index {
    subs: RwLock<BTreeMap<String, Entry>>,
}

impl Index {
    /// Adds or replaces a subscription's entry.
    pub fn set(&self, id: &str, pattern: Option<String>, explicit: BTreeSet<String>) {
        if let Ok(mut subs) = self.subs.write() {
            subs.insert(id.to_owned(), Entry { pattern, explicit });
        }
    }

    /// Adds or removes one explicit path.
    pub fn set_explicit(&self, id: &str, path: &str, linked: bool) {
        if let Ok(mut subs) = self.subs.write() {
            if let Some(entry) = subs.get_mut(id) {
                if linked {
                    entry.explicit.insert(path.to_owned());
                } else {
                    entry.explicit.remove(path);
                }
            }
        }
    }

    /// Removes a subscription; returns how many remain.
    pub fn remove(&self, id: &str) -> usize {
        match self.subs.write() {
            Ok(mut subs) => {
                subs.remove(id);
                subs.len()
            }
            Err(_) => 0,
        }
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.subs.read().map(|s| s.len()).unwrap_or(0)
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids of the subscriptions that follow `path`.
    pub fn following(&self, path: &str) -> Vec<String> {
        let Ok(subs) = self.subs.read() else {
            return Vec::new();
        };
        subs.iter()
            .filter(|(_, e)| {
                e.explicit.contains(path)
                    || e.pattern.as_deref().is_some_and(|p| glob::matches(p, path))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_pattern_and_explicit_path() {
        let index = Index::default();
        index.set("a", Some("events/*".into()), BTreeSet::new());
        index.set("b", None, ["manual/x".to_owned()].into());
        assert_eq!(index.following("events/1"), vec!["a"]);
        assert_eq!(index.following("manual/x"), vec!["b"]);
        index.set_explicit("b", "manual/x", false);
        assert!(index.following("manual/x").is_empty());
        assert_eq!(index.remove("a"), 1);
    }
}
