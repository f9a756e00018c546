//! The writer thread's memory of stream rows by path (`id`, tail, `expires_at`, `state`), so an
//! append's compare-and-set does not look its stream's row up, and a plain append (neither
//! expiry nor state changed) does not run the row's `UPDATE` either: with many streams the
//! `SELECT` (an index seek by path, then the row) was a fifth of the writer's work per append,
//! and the `UPDATE` that then wrote nothing (a seek by id, a compare, the statement's frame)
//! over a third of what was left (9.8 k → 6.0 k instructions per append command,
//! `bench/profile/callgrind append-many`).
//!
//! It is only ever right because the writer thread is the only writer of the file while the
//! engine is open (the data directory's lock): an entry is what the last commit of that stream
//! in this thread wrote or read. Whatever else could change a `streams` row, or a stream's
//! last chunk (which tells its tail), forgets: a write command of the other stream operations
//! (create, delete, fork, trim, seal, compaction, ...: closures the writer cannot see into)
//! and the erasures forget every entry, as do a batch rolled back and a command rolled back to
//! its savepoint; a queuing write (sessions, the outbox) forgets the paths its routed events
//! appended to; writes of the other tables only (`SqliteEngine::write_beside_streams`: cache
//! entries, objects, a session's touch) forget nothing. Forgetting everything is a generation
//! bump, O(1) whatever the size; entries of an old generation are dead and are replaced in
//! place or dropped when the map is full.

use std::collections::HashMap;

/// What a stream's row holds (its `tail` as `stream_rows::tail_sql` reads it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) id: i64,
    pub(crate) tail: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) state: Vec<u8>,
}

/// The rows of recently committed streams, bounded by `capacity` entries.
pub(crate) struct StreamTails {
    entries: HashMap<String, Entry>,
    generation: u64,
    capacity: usize,
}

struct Entry {
    generation: u64,
    row: Row,
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

    /// The row of the stream at `path`, if known; a caller that changes the row in the open
    /// transaction updates it to match.
    pub(crate) fn get_mut(&mut self, path: &str) -> Option<&mut Row> {
        let generation = self.generation;
        self.entries
            .get_mut(path)
            .filter(|e| e.generation == generation)
            .map(|e| &mut e.row)
    }

    /// Remembers what the stream row at `path` holds now (in the open transaction).
    pub(crate) fn set(&mut self, path: &str, row: Row) {
        let generation = self.generation;
        if let Some(e) = self.entries.get_mut(path) {
            *e = Entry { generation, row };
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
        self.entries
            .insert(path.to_owned(), Entry { generation, row });
    }

    /// Forgets the entry of `path`: its stream's rows changed behind this cache.
    pub(crate) fn forget(&mut self, path: &str) {
        self.entries.remove(path);
    }

    /// Forgets every entry: something may have changed stream rows behind this cache.
    pub(crate) fn forget_all(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, tail: i64) -> Row {
        Row {
            id,
            tail,
            expires_at: None,
            state: vec![1],
        }
    }

    #[test]
    fn remembers_until_forgotten_and_stays_within_capacity() {
        let mut tails = StreamTails::new(2);
        tails.set("a", row(1, 10));
        tails.set("b", row(2, 20));
        assert_eq!(tails.get_mut("a"), Some(&mut row(1, 10)));
        tails.set("a", row(1, 11));
        assert_eq!(tails.get_mut("a"), Some(&mut row(1, 11)));
        if let Some(a) = tails.get_mut("a") {
            a.tail = 12;
        }
        assert_eq!(tails.get_mut("a"), Some(&mut row(1, 12)));
        tails.forget("b");
        assert_eq!(tails.get_mut("b"), None);
        assert_eq!(tails.get_mut("a"), Some(&mut row(1, 12)));
        tails.set("b", row(2, 20));
        tails.forget_all();
        assert_eq!(tails.get_mut("a"), None);
        assert_eq!(tails.get_mut("b"), None);
        tails.set("b", row(3, 0));
        assert_eq!(tails.get_mut("b"), Some(&mut row(3, 0)));
        // A third path: the map was full (of two entries), so it starts over.
        tails.set("c", row(4, 5));
        assert_eq!(tails.get_mut("c"), Some(&mut row(4, 5)));
        assert_eq!(tails.get_mut("b"), None);
        assert!(tails.entries.len() <= 2);
        let mut none = StreamTails::new(0);
        none.set("a", row(1, 1));
        assert_eq!(none.get_mut("a"), None);
    }
}
