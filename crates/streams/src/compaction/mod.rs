//! Keyed compaction of State Protocol streams: below a compaction point a stream keeps only
//! what materializing it needs, the latest event per key.
//!
//! # Why whole chunks
//! Offsets are byte positions and never change, and a chunk's messages sit back to back, so a
//! message can only disappear with its whole chunk (rewriting a chunk would move its other
//! messages, and an engine like Redis cannot insert below its newest entry anyway). An append
//! is stored as one chunk (or a few, for a large one), so the unit of compaction is in practice
//! the append: a chunk goes when none of its messages is needed. Survivors keep their offsets;
//! the stream has gaps from then on, which readers skip.
//!
//! # What is needed (see [`plan`])
//! Within each stretch between two `reset` control events (a reset clears a reader's state,
//! so it is a barrier: nothing is compared across it, and the reset itself stays), an event
//! is needed when it is the latest of its key, when it is not keyed (control events, values
//! without the key fields), or when it carries `headers.txid` and is younger than `min_age_s`
//! (StreamDB's `awaitTxId` must still see it). A latest event that is a `delete` older than
//! `tombstone_grace_s` is needed only while an earlier event of its key survives: then its
//! key disappears entirely, and with it the last trace of the delete.
//!
//! # Readers
//! A reader from the start (or the retained start) materializes the same state as one that
//! followed live. A reader positioned inside the compacted range misses the superseded events
//! since its position, which is harmless for the latest-value state, except for a `delete` it
//! never sees: so every compaction that drops a delete raises the stream's purge point above
//! it, and a read between the retained start and the purge point is a 410 `offset_gone`
//! (rematerialize from `Stream-Start-Offset`). Every batch bumps the compaction generation,
//! which is part of the ETag, so a 304 never confirms a page from before.
//!
//! # Crash safety
//! A batch first commits the raised purge point and generation, then drops its chunks (one
//! all-or-nothing engine step, `StreamStore::drop_chunks`). A crash between the two leaves the
//! purge point raised over data still there (conservative). Batches go in offset order and a
//! delete is dropped only in or after the batch of its key's earlier events, so the data after
//! any prefix of batches materializes the same. The compaction point itself is recorded after
//! the last batch; a crashed run is repeated by the next background pass.
//!
//! Not compacted: sealed (cold) ranges, the data above the lowest live fork point (a fork
//! reads its source below its fork point by reference, so "latest" is decided below it too),
//! and forks themselves (a fork cannot be created with `Stream-Compaction`). While a stream
//! has live forks no `delete` is dropped: a fork's readers have no purge point of their own
//! to be refused by. Deletes are not purged while the stream has cold segments, whose
//! events the planner does not see.

mod plan;
mod run;

pub use plan::{classify, plan, Chunk, Event, Kind, Plan, Rules};
pub use run::{explicit, Compacted};

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sessiond_store::Millis;

use crate::error::{StreamError, StreamResult};
use crate::headers::{self, COMPACTION};
use crate::state::StreamInfo;

/// A stream's compaction setting and progress (in its metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// The fields whose values together are an event's key (dotted paths), fixed at creation.
    pub key: Vec<String>,
    /// Data below this offset has been compacted.
    #[serde(default)]
    pub compacted_to: u64,
    /// A dropped `delete` lies below this offset: reads above the retained start and below it
    /// are 410 `offset_gone`.
    #[serde(default)]
    pub purged: u64,
    /// Bumped by every compaction batch (part of the ETag).
    #[serde(default)]
    pub generation: u64,
    /// The tail when the last compaction finished: the background trigger counts from it.
    #[serde(default)]
    pub ran_at_tail: u64,
}

/// `[streams.compaction]`: limits and timings of keyed compaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// The fields that key an event (dotted paths into the JSON message), for streams created
    /// from now on.
    pub key: Vec<String>,
    /// The sweeper compacts a stream once this many bytes were appended since its last
    /// compaction point.
    pub trigger_bytes: u64,
    /// A `delete` that is its key's latest event is kept this long, so readers that are behind
    /// still see it; then the key disappears from the compacted range.
    pub tombstone_grace_s: u64,
    /// Events carrying `headers.txid` are kept at least this long (StreamDB's `awaitTxId`).
    pub min_age_s: u64,
    /// Most chunks one compaction transaction drops (appends never wait behind a long one).
    pub batch_chunks: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            key: vec!["type".into(), "key".into()],
            trigger_bytes: 4 * 1024 * 1024,
            tombstone_grace_s: 86_400,
            min_age_s: 300,
            batch_chunks: 256,
        }
    }
}

impl CompactionConfig {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), sessiond_http::ConfigError> {
        if self.key.is_empty() || self.key.iter().any(|k| k.is_empty()) {
            return Err("streams.compaction.key must list at least one non-empty field".into());
        }
        if self.trigger_bytes == 0 || self.batch_chunks == 0 {
            return Err("streams.compaction.trigger_bytes and batch_chunks must be > 0".into());
        }
        Ok(())
    }
}

/// The `Stream-Compaction` header of a PUT: `key` (any case) turns compaction on.
pub fn from_headers(h: &HeaderMap, config: &CompactionConfig) -> StreamResult<Option<Compaction>> {
    let Some(v) = headers::get(h, COMPACTION)? else {
        return Ok(None);
    };
    if !v.trim().eq_ignore_ascii_case("key") {
        return Err(StreamError::bad_request(
            "Stream-Compaction must be `key` (the only compaction mode)",
        ));
    }
    Ok(Some(Compaction {
        key: config.key.clone(),
        ..Compaction::default()
    }))
}

/// The highest offset compaction may reach given the stream's live forks: the lowest fork
/// point (forks read the data below it by reference). Forks counted before fork points were
/// recorded have unknown points: nothing may be compacted then.
pub fn fork_ceiling(info: &StreamInfo) -> u64 {
    if (info.fork_points.len() as u64) < info.forks {
        return 0;
    }
    info.fork_points.iter().copied().min().unwrap_or(u64::MAX)
}

/// The offset below which everything was appended more than `age_s` seconds before `now`,
/// from the stream's time marks (see `retention.rs`); `tail` when `age_s` is 0.
pub fn older_than(info: &StreamInfo, age_s: u64, now: Millis, tail: u64) -> u64 {
    if age_s == 0 {
        return tail;
    }
    let oldest = now.saturating_sub((age_s as i64).saturating_mul(1000));
    info.marks
        .iter()
        .rev()
        .find(|(at, _)| *at <= oldest)
        .map_or(0, |(_, offset)| *offset)
}
