//! Plain appends on an engine shared by several nodes.
//!
//! Why its own path: on a shared engine each node decides on its cached metadata and its
//! commit requires the stored tail and state to be the ones it decided on
//! (`StreamStore::commit_checked`). With several nodes appending to one stream, a node's
//! cached tail is stale as soon as another node appends, so most commits lost their compare
//! and were sent again (about 2.3 commits per append with three nodes). Yet a plain append
//! decides nothing on the tail: whether it is allowed depends on the state (closed, content
//! type, `Stream-Seq`) and on the producer's row, and only its offsets depend on the tail. So
//! it goes through `StreamStore::append_checked`, which requires that state and the producer
//! rows the decision needs, and lets the engine move the append to the stored tail (Redis does,
//! in the commit script): one round trip per append however many nodes append. The answer's
//! offset and the cached tail follow where the engine put it.
//!
//! An append moves only if it leaves the state as it is, so the sliding TTL's `last_access`
//! is written with an append only when the stored one lags by a tenth of the TTL (the node
//! keeps the exact one in memory, as `Streams::touch` does for reads); an append that adds a
//! retention mark or sets `Stream-Seq` changes the state and is decided on the exact tail (a
//! lost compare brings the winner's metadata back and the append is decided again).

use sessiond_store::{Appended, CheckedWrite, Durability, Millis, ProducerBefore, StreamChunk};

use crate::error::{StreamError, StreamResult};
use crate::service::{refresh_after_conflict, stream, Guard, Streams};
use crate::state::{ProducerState, ProducerTuple, Stream, StreamInfo};

/// The producer row an accepted producer append requires: the previous seq of its epoch, or
/// for seq 0 (a new producer or epoch) the row as this node saw it.
pub(crate) fn producer_before(p: &ProducerTuple, seen: Option<&ProducerState>) -> ProducerBefore {
    let state = match p.seq.checked_sub(1) {
        Some(seq) => Some(
            ProducerState {
                epoch: p.epoch,
                seq,
            }
            .encode(),
        ),
        None => seen.map(ProducerState::encode),
    };
    ProducerBefore {
        id: p.id.clone(),
        state,
    }
}

impl Streams {
    /// Appends `chunks` (offsets from `expected_tail`; none for an empty JSON array) with the
    /// new `info` (decided at `now`, not closing) through `StreamStore::append_checked`, requiring the producer
    /// rows `before`. Returns the stream's new tail (where the engine put the append), or
    /// `stale` after caching the metadata that won. The caller holds the lock.
    pub(crate) async fn append_shared(
        &self,
        g: &mut Guard,
        expected_tail: u64,
        chunks: &[StreamChunk],
        mut info: StreamInfo,
        before: Vec<ProducerBefore>,
        now: Millis,
    ) -> StreamResult<u64> {
        let Some(decided_on) = stream(g).map(|s| s.stored_state.clone()) else {
            return Err(StreamError::stale());
        };
        let exact_access = info.last_access;
        if let Some(stored) = lagging_access(&decided_on, &info, now) {
            info.last_access = stored;
        }
        let (producers, written) = self.producer_update(&mut info);
        let tail = chunks.last().map_or(expected_tail, StreamChunk::end);
        let meta = Stream::encode(g.key(), tail, &info)?;
        let seen = g.state().map(|o| *o.changed.borrow());
        let outcome = self
            .store
            .append_checked(
                CheckedWrite {
                    path: g.key(),
                    expected_tail,
                    expected_state: &decided_on,
                    chunks,
                    meta: &meta,
                    producers,
                    durability: Durability::Confirmed,
                },
                &before,
            )
            .await?;
        let start = match outcome {
            Appended::Written { start } => start,
            Appended::Conflict(current) => return Err(refresh_after_conflict(g, current, seen)),
        };
        let tail = start.saturating_add(tail - expected_tail);
        let Some(object) = g.state_mut() else {
            return Err(StreamError::busy("stream object vanished"));
        };
        object.producers.extend(written);
        let retained = object.stream.as_ref().map_or(0, |s| s.retained);
        info.last_access = exact_access;
        object.stream = Some(Stream {
            tail,
            retained,
            info,
            persisted_expiry: meta.expires_at,
            stored_state: meta.state.into(),
        });
        object.notify();
        Ok(tail)
    }
}

/// The stored `last_access` of a stream with a sliding TTL when it lags `now` by less than a
/// tenth of the TTL (keeping it leaves the state as it is, so the append can move); `None`
/// when it must be rewritten (or there is no TTL).
fn lagging_access(stored_state: &[u8], info: &StreamInfo, now: Millis) -> Option<Millis> {
    let ttl_ms = (info.ttl_s? as i64).saturating_mul(1000);
    let stored: StreamInfo = serde_json::from_slice(stored_state).ok()?;
    (now.saturating_sub(stored.last_access) < ttl_ms / 10).then_some(stored.last_access)
}
