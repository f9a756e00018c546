//! Which chunks a compaction drops: a pure function of the stream's events, so the rules
//! (see the module docs of `compaction`) are tested on their own against materialization.

use std::collections::HashMap;

use serde_json::Value;

/// What one message is to compaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A change event of `key` (the key fields' values, encoded).
    Keyed {
        key: String,
        delete: bool,
        txid: bool,
    },
    /// A `reset` control event: a barrier.
    Reset,
    /// Anything else (other control events, messages without the key fields): always kept.
    Other,
}

/// One message and its offset.
#[derive(Clone, Debug)]
pub struct Event {
    pub offset: u64,
    pub kind: Kind,
}

/// One stored chunk and its messages.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub offset: u64,
    pub end: u64,
    pub events: Vec<Event>,
    /// Whether this chunk may be dropped at all (a hot chunk of the stream's own data).
    pub droppable: bool,
}

/// The cut-offs of one compaction.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// The compaction point: only chunks that end at or below it may go.
    pub before: u64,
    /// A latest `delete` below this offset is past its grace period.
    pub grace_cut: u64,
    /// An event with a txid at or above this offset is younger than `min_age_s`.
    pub txid_cut: u64,
    /// No `delete` is dropped at all (the stream has live forks, whose readers have no purge
    /// point of their own).
    pub keep_deletes: bool,
}

/// What to drop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Offsets of the chunks to drop, ascending.
    pub drop: Vec<u64>,
    /// For each of them, the offset after the last `delete` it holds (0: none), so each batch
    /// raises the purge point before it drops.
    pub purges: Vec<u64>,
}

/// Classifies one stored message by the key fields `key` (dotted paths).
pub fn classify(message: &[u8], key: &[String]) -> Kind {
    let Ok(v) = serde_json::from_slice::<Value>(message) else {
        return Kind::Other;
    };
    let headers = v.get("headers");
    let header = |name: &str| headers.and_then(|h| h.get(name));
    if header("control").and_then(Value::as_str) == Some("reset") {
        return Kind::Reset;
    }
    let Some(operation) = header("operation").and_then(Value::as_str) else {
        return Kind::Other;
    };
    let mut parts = Vec::with_capacity(key.len());
    for path in key {
        let found = path.split('.').try_fold(&v, |at, field| at.get(field));
        match found {
            Some(part) if !part.is_null() => parts.push(part),
            _ => return Kind::Other,
        }
    }
    Kind::Keyed {
        key: serde_json::to_string(&parts).unwrap_or_default(),
        delete: operation == "delete",
        txid: header("txid").is_some_and(|t| !t.is_null()),
    }
}

/// Decides which chunks go (see the module docs of `compaction`). `chunks` in offset order,
/// covering the stream from its retained start: an event's key is compared only with events
/// in the same stretch between resets.
pub fn plan(chunks: &[Chunk], rules: Rules) -> Plan {
    // (stretch, key) → the chunks holding its events and the offset of its latest event.
    let mut groups: HashMap<(usize, &str), (Vec<usize>, u64)> = HashMap::new();
    let mut stretch = 0usize;
    let mut stretches = Vec::with_capacity(chunks.len());
    for (i, c) in chunks.iter().enumerate() {
        let mut of_chunk = Vec::with_capacity(c.events.len());
        for e in &c.events {
            match &e.kind {
                Kind::Reset => stretch += 1,
                Kind::Keyed { key, .. } => {
                    let g = groups.entry((stretch, key.as_str())).or_default();
                    if g.0.last() != Some(&i) {
                        g.0.push(i);
                    }
                    g.1 = e.offset;
                }
                Kind::Other => {}
            }
            of_chunk.push(stretch);
        }
        stretches.push(of_chunk);
    }
    // Optimistic start: every candidate without a needed event; then chunks holding a purged
    // delete whose key still has a surviving event are taken back, until nothing changes.
    let mut drop: Vec<bool> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.droppable
                && c.end <= rules.before
                && c.events
                    .iter()
                    .zip(&stretches[i])
                    .all(|(e, s)| match &e.kind {
                        Kind::Keyed { key, delete, txid } => {
                            let latest = groups[&(*s, key.as_str())].1 == e.offset;
                            let young = *txid && e.offset >= rules.txid_cut;
                            let kept_delete = *delete && rules.keep_deletes;
                            !young
                                && !kept_delete
                                && (!latest || (*delete && e.offset < rules.grace_cut))
                        }
                        Kind::Reset | Kind::Other => false,
                    })
        })
        .collect();
    loop {
        let mut changed = false;
        for (i, c) in chunks.iter().enumerate() {
            if !drop[i] {
                continue;
            }
            let keeps_key = c.events.iter().zip(&stretches[i]).any(|(e, s)| {
                let Kind::Keyed {
                    key, delete: true, ..
                } = &e.kind
                else {
                    return false;
                };
                let (holders, latest) = &groups[&(*s, key.as_str())];
                *latest == e.offset && holders.iter().any(|h| !drop[*h])
            });
            if keeps_key {
                drop[i] = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut out = Plan::default();
    for (_, c) in chunks.iter().enumerate().filter(|(i, _)| drop[*i]) {
        out.drop.push(c.offset);
        let last_delete = c
            .events
            .iter()
            .filter(|e| matches!(e.kind, Kind::Keyed { delete: true, .. }))
            .map(|e| e.offset + 1)
            .max();
        out.purges.push(last_delete.unwrap_or(0));
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
