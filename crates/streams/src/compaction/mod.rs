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

use crate::config::CompactionConfig;
use crate::error::{StreamError, StreamResult};
use crate::headers;
use crate::protocol::COMPACTION;
use crate::state::Compaction;

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
