//! The in-memory index from stream paths to the subscriptions that follow them.
//!
//! Every observed append must find its subscriptions without loading each subscription
//! record, so the patterns and explicit paths of all subscriptions are kept here (rebuilt from
//! the persisted records at startup). Lookups scan the patterns linearly: fine for the
//! hundreds of subscriptions a server holds; a prefix tree would be the next step. On an
//! engine shared by several nodes each node keeps its own copy and rebuilds it from the
//! records when the shared index version moved ([`super::Subscriptions`] docs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use super::glob;

#[derive(Clone, Debug, Default)]
struct Entry {
    pattern: Option<String>,
    explicit: BTreeSet<String>,
}

/// Subscription id → what it follows.
pub struct Index {
    subs: RwLock<BTreeMap<String, Entry>>,
    /// Patterns never match paths deeper than this (`max_path_segments`).
    max_depth: usize,
}

impl Index {
    /// An empty index whose patterns match paths of at most `max_depth` segments.
    pub fn new(max_depth: usize) -> Self {
        Index {
            subs: RwLock::default(),
            max_depth,
        }
    }

    /// Ids of all subscriptions.
    pub fn ids(&self) -> Vec<String> {
        self.subs
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether patterns may match `path` at all (its depth is within the limit).
    pub fn matchable(&self, path: &str) -> bool {
        glob::depth(path) <= self.max_depth
    }

    /// Adds or replaces a subscription's entry.
    pub fn set(&self, id: &str, pattern: Option<String>, explicit: BTreeSet<String>) {
        if let Ok(mut subs) = self.subs.write() {
            subs.insert(id.to_owned(), Entry { pattern, explicit });
        }
    }

    /// Replaces every entry (id → pattern, explicit paths).
    pub fn replace_all(&self, entries: BTreeMap<String, (Option<String>, BTreeSet<String>)>) {
        if let Ok(mut subs) = self.subs.write() {
            *subs = entries
                .into_iter()
                .map(|(id, (pattern, explicit))| (id, Entry { pattern, explicit }))
                .collect();
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
        let matchable = self.matchable(path);
        subs.iter()
            .filter(|(_, e)| {
                e.explicit.contains(path)
                    || (matchable && e.pattern.as_deref().is_some_and(|p| glob::matches(p, path)))
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
        let index = Index::new(3);
        index.set("a", Some("events/*".into()), BTreeSet::new());
        index.set("deep", Some("**".into()), BTreeSet::new());
        assert_eq!(index.following("a/b/c"), vec!["deep"]);
        assert!(
            index.following("a/b/c/d").is_empty(),
            "deeper than the limit"
        );
        index.remove("deep");
        index.set("b", None, ["manual/x".to_owned()].into());
        assert_eq!(index.following("events/1"), vec!["a"]);
        assert_eq!(index.following("manual/x"), vec!["b"]);
        index.set_explicit("b", "manual/x", false);
        assert!(index.following("manual/x").is_empty());
        assert_eq!(index.remove("a"), 1);
    }
}
