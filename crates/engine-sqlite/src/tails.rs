//! The writer thread's memory of streams' `(id, tail)` by path, so an append's compare-and-set
//! does not look its stream's row up: with many streams that `SELECT` (an index seek by path,
//! then the row) was a fifth of the writer's work per append.
//!
//! It is only ever right because the writer thread is the only writer of the file while the
//! engine is open (the data directory's lock): an entry is what the last commit of that stream
//! in this thread wrote or read. Whatever else could change a `streams` row forgets every
//! entry at once: any other write command (they are closures the writer cannot see into:
//! create, delete, fork, trim, seal, compaction, ... and every non-stream write too, which is
//! conservative), a batch rolled back, a command rolled back to its savepoint. Forgetting is a
//! generation bump, O(1) whatever the size; entries of an old generation are dead and are
//! replaced in place or dropped when the map is full.

use std::collections::HashMap;

/// `(streams.id, streams.tail)` of recently committed streams, bounded by `capacity` entries.
pub(crate) struct StreamTails {
    entries: HashMap<String, Entry>,
    generation: u64,
    capacity: usize,
}

struct Entry {
    generation: u64,
    id: i64,
    tail: i64,
}

impl StreamTails {
    /// At most `capacity` entries (0: remember nothing).
    pub(crate) fn new(capacity: usize) -> StreamTails {
        StreamTails {
            entries: HashMap::new(),
            generation: 0,
            capacity,
        }
    }

    /// The id and stored tail of the stream at `path`, if known.
    pub(crate) fn get(&self, path: &str) -> Option<(i64, i64)> {
        self.entries
            .get(path)
            .filter(|e| e.generation == self.generation)
            .map(|e| (e.id, e.tail))
    }

    /// Remembers what the stream row at `path` holds now (in the open transaction).
    pub(crate) fn set(&mut self, path: &str, id: i64, tail: i64) {
        let generation = self.generation;
        if let Some(e) = self.entries.get_mut(path) {
            *e = Entry {
                generation,
                id,
                tail,
            };
            return;
        }
        if self.entries.len() >= self.capacity {
            // Full: start over rather than track recency (a stream's next commit reads its
            // row once and is remembered again).
            self.entries.clear();
            if self.capacity == 0 {
                return;
            }
        }
        self.entries.insert(
            path.to_owned(),
            Entry {
                generation,
                id,
                tail,
            },
        );
    }

    /// Forgets every entry: something may have changed stream rows behind this cache.
    pub(crate) fn forget_all(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_forgotten_and_stays_within_capacity() {
        let mut tails = StreamTails::new(2);
        tails.set("a", 1, 10);
        tails.set("b", 2, 20);
        assert_eq!(tails.get("a"), Some((1, 10)));
        tails.set("a", 1, 11);
        assert_eq!(tails.get("a"), Some((1, 11)));
        tails.forget_all();
        assert_eq!(tails.get("a"), None);
        assert_eq!(tails.get("b"), None);
        tails.set("b", 3, 0);
        assert_eq!(tails.get("b"), Some((3, 0)));
        // A third path: the map was full (of two entries), so it starts over.
        tails.set("c", 4, 5);
        assert_eq!(tails.get("c"), Some((4, 5)));
        assert_eq!(tails.get("b"), None);
        assert!(tails.entries.len() <= 2);
        let mut none = StreamTails::new(0);
        none.set("a", 1, 1);
        assert_eq!(none.get("a"), None);
    }
}
