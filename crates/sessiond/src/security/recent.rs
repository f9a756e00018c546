//! A bounded map that keeps what was used recently: the relay's memory of user secrets and of
//! the streams it wrote.
//!
//! Why not a map that empties itself when full (what both were before): with more users than
//! it holds, every time it filled up it forgot everyone at once, so a pool of returning users
//! about its size kept missing it (a secret read or a refused stream create per miss, each an
//! engine round trip). Here the map has two generations of at most `half` entries: a lookup
//! that finds an entry in the older one moves it to the newer; when the newer is full it
//! becomes the older and the oldest generation is dropped. An entry used at least once per
//! `half` insertions is never dropped, every operation is O(1), and the memory stays below
//! `2 × half` entries.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// See the module docs.
pub(super) struct Recent<K, V> {
    half: usize,
    newer: HashMap<K, V>,
    older: HashMap<K, V>,
}

impl<K: Hash + Eq, V> Recent<K, V> {
    /// At most `2 × half` entries (`half` at least 1).
    pub(super) fn new(half: usize) -> Self {
        Recent {
            half: half.max(1),
            newer: HashMap::new(),
            older: HashMap::new(),
        }
    }

    /// The entry of `key`, kept as recently used.
    pub(super) fn get<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.newer.contains_key(key) {
            return self.newer.get_mut(key);
        }
        let (key, value) = self.older.remove_entry(key)?;
        Some(self.put(key, value))
    }

    /// Sets the entry of `key`, as recently used.
    pub(super) fn insert(&mut self, key: K, value: V) {
        self.older.remove(&key);
        self.put(key, value);
    }

    /// The entry of `key` (made with `make` when absent), as recently used.
    pub(super) fn entry<Q>(&mut self, key: &Q, make: impl FnOnce() -> V) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.newer.contains_key(key) {
            let value = self.older.remove(key).unwrap_or_else(make);
            return self.put(key.to_owned(), value);
        }
        self.newer.entry(key.to_owned()).or_insert_with(make)
    }

    /// Forgets `key`.
    pub(super) fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.newer.remove(key);
        self.older.remove(key);
    }

    /// Whether `key` is held (without counting as a use).
    pub(super) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.newer.contains_key(key) || self.older.contains_key(key)
    }

    /// Puts `key` into the newer generation (rotating first when it is full).
    fn put(&mut self, key: K, value: V) -> &mut V {
        if self.newer.len() >= self.half && !self.newer.contains_key(&key) {
            self.older = std::mem::take(&mut self.newer);
        }
        match self.newer.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                e.insert(value);
                e.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(e) => e.insert(value),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of keys that fits is never forgotten however many times it cycles, even after
    /// other keys filled the map (the old map emptied itself once full, so a pool about its
    /// size kept missing); the size stays bounded.
    #[test]
    fn a_pool_that_fits_stays_while_others_pass_through() {
        let mut recent = Recent::new(100);
        for k in 0..1_000 {
            recent.insert(format!("once-{k}"), k);
        }
        let pool: Vec<String> = (0..60).map(|k| format!("pool-{k}")).collect();
        let mut misses = 0;
        for round in 0..10 {
            for (i, key) in pool.iter().enumerate() {
                if recent.get(key).is_none() {
                    misses += 1;
                    recent.insert(key.clone(), i);
                }
                // A new key between every two uses of the pool, as new users arrive.
                if i % 2 == 0 {
                    recent.insert(format!("new-{round}-{i}"), i);
                }
            }
            assert!(recent.len() <= 200);
        }
        // Only the first round misses: each pool key is used again within 90 insertions,
        // fewer than a generation holds.
        assert_eq!(misses, 60);
        let late = pool
            .iter()
            .filter(|k| recent.get(k.as_str()).is_none())
            .count();
        assert_eq!(late, 0, "the pool is held after the last round");
    }

    #[test]
    fn entry_remove_contains() {
        let mut recent = Recent::new(2);
        *recent.entry(&"a", || 1) += 10;
        assert_eq!(recent.get(&"a").copied(), Some(11));
        recent.insert("b", 2);
        recent.insert("c", 3);
        assert!(recent.contains(&"a") && recent.contains(&"c"));
        recent.remove(&"a");
        assert!(!recent.contains(&"a"));
        assert_eq!(*recent.entry(&"a", || 5), 5);
    }
}
