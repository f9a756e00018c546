//! Idempotent producers (`Producer-Id`, `Producer-Epoch`, `Producer-Seq`).
//!
//! Per (stream, producer id) the stream keeps the current epoch and the highest accepted
//! sequence number in the producer's own row (`StreamStore::stream_producer`), written by the
//! same commit as the data it admits (`ProducerUpdate`): after a crash a retried request is
//! either a duplicate (its data is there) or accepted again (it is not), never both or
//! neither. Validation runs under the stream's lock, so it is serialized per stream and per
//! producer. One row per producer (not the whole set inside the stream's metadata) keeps an
//! append's write O(1) whatever the number of producers.
//!
//! The number of producers per stream is capped (`max_producers_per_stream`): a new producer
//! beyond it evicts the least recently used one. An evicted producer is unknown again, as
//! after the 7-day cleanup the reference server does: its next request with `Producer-Seq` > 0
//! gets 409 with `Producer-Expected-Seq: 0` (the client restarts with a new epoch at seq 0),
//! and a retry of a request it sent before the eviction is no longer recognised as a
//! duplicate (a seq-0 retry is appended again).

use crate::error::{StreamError, StreamResult};
use crate::protocol::{PRODUCER_EPOCH, PRODUCER_EXPECTED_SEQ, PRODUCER_RECEIVED_SEQ, PRODUCER_SEQ};
use crate::state::{ProducerState, ProducerTuple};

/// What to do with a producer request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; the producer's state becomes this.
    Accept(ProducerState),
    /// Already written: answer 204 echoing the highest accepted seq.
    Duplicate(ProducerState),
}

/// Checks `p` against the producer's state (`None`: unknown producer).
pub fn check(current: Option<&ProducerState>, p: &ProducerTuple) -> StreamResult<Verdict> {
    let Some(current) = current else {
        if p.seq != 0 {
            return Err(gap(0, p.seq));
        }
        return Ok(Verdict::Accept(ProducerState {
            epoch: p.epoch,
            seq: 0,
        }));
    };
    if p.epoch < current.epoch {
        return Err(stale(current.epoch));
    }
    if p.epoch > current.epoch {
        if p.seq != 0 {
            return Err(StreamError::bad_request(
                "a new Producer-Epoch must start at Producer-Seq 0",
            ));
        }
        return Ok(Verdict::Accept(ProducerState {
            epoch: p.epoch,
            seq: 0,
        }));
    }
    if p.seq <= current.seq {
        return Ok(Verdict::Duplicate(current.clone()));
    }
    if p.seq == current.seq + 1 {
        return Ok(Verdict::Accept(ProducerState {
            epoch: p.epoch,
            seq: p.seq,
        }));
    }
    Err(gap(current.seq + 1, p.seq))
}

/// An in-process producer's condition on its own row: decide the request only if the
/// producer's current epoch on the stream is the one
/// given (`None`: the stream has no row for it).
///
/// Why: a producer that sends several messages under one epoch (the security relay: one
/// request per run of outbox events, epoch = the run's last position) must not append a
/// message twice when another writer of the same producer got ahead of what it read. The
/// condition is checked under the stream's lock where the producer row is read, and the
/// commit requires that row as it was read (on a shared engine, `shared_append.rs`), so it
/// holds at the commit. A Rust parameter only (`append::append_json_values_expecting`): no
/// request header can set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedEpoch(pub Option<u64>);

/// What [`ExpectedEpoch`] requires of the producer row `current`: `Err` (412, with the
/// current epoch in `Producer-Epoch` when there is a row) if it does not hold.
pub fn expect(expected: ExpectedEpoch, current: Option<&ProducerState>) -> StreamResult<()> {
    let epoch = current.map(|s| s.epoch);
    if epoch == expected.0 {
        return Ok(());
    }
    let e = StreamError::new(
        axum::http::StatusCode::PRECONDITION_FAILED,
        MOVED,
        "the producer's epoch is not the expected one",
    );
    Err(match epoch {
        Some(epoch) => e.with(PRODUCER_EPOCH, epoch),
        None => e,
    })
}

const MOVED: &str = "producer_epoch_moved";

/// For an error of [`expect`]: the producer's epoch at the time (`Some(None)`: no row);
/// `None` for any other error.
pub fn moved_to(e: &StreamError) -> Option<Option<u64>> {
    if e.api.code != MOVED {
        return None;
    }
    let epoch = e
        .headers
        .as_ref()
        .and_then(|h| h.get(PRODUCER_EPOCH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Some(epoch)
}

/// 403: the producer was fenced by a newer epoch.
pub fn stale(current_epoch: u64) -> StreamError {
    StreamError::new(
        axum::http::StatusCode::FORBIDDEN,
        "stale_epoch",
        "Producer-Epoch is older than the producer's current epoch",
    )
    .with(PRODUCER_EPOCH, current_epoch)
}

fn gap(expected: u64, received: u64) -> StreamError {
    StreamError::conflict("Producer-Seq skips ahead of the next expected sequence number")
        .with(PRODUCER_EXPECTED_SEQ, expected)
        .with(PRODUCER_RECEIVED_SEQ, received)
}

/// Headers echoed on success.
pub fn echo(state: &ProducerState) -> [(&'static str, String); 2] {
    [
        (PRODUCER_EPOCH, state.epoch.to_string()),
        (PRODUCER_SEQ, state.seq.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    #[test]
    fn verdicts() {
        let state = ProducerState { epoch: 1, seq: 3 };
        let i = Some(&state);
        assert_eq!(
            check(i, &t(1, 4)).ok(),
            Some(Verdict::Accept(ProducerState { epoch: 1, seq: 4 }))
        );
        assert_eq!(
            check(i, &t(1, 2)).ok(),
            Some(Verdict::Duplicate(ProducerState { epoch: 1, seq: 3 }))
        );
        assert_eq!(
            check(i, &t(0, 0)).err().map(|e| e.api.status.as_u16()),
            Some(403)
        );
        assert_eq!(
            check(i, &t(1, 9)).err().map(|e| e.api.status.as_u16()),
            Some(409)
        );
        assert_eq!(
            check(i, &t(2, 1)).err().map(|e| e.api.status.as_u16()),
            Some(400)
        );
        assert!(matches!(check(i, &t(2, 0)), Ok(Verdict::Accept(_))));
        assert!(matches!(check(None, &t(5, 0)), Ok(Verdict::Accept(_))));
        assert_eq!(
            check(None, &t(5, 1)).err().map(|e| e.api.status.as_u16()),
            Some(409)
        );
    }

    #[test]
    fn expected_epochs() {
        let state = ProducerState { epoch: 7, seq: 0 };
        assert!(expect(ExpectedEpoch(Some(7)), Some(&state)).is_ok());
        assert!(expect(ExpectedEpoch(None), None).is_ok());
        let moved = expect(ExpectedEpoch(Some(3)), Some(&state)).err();
        assert_eq!(moved.as_ref().and_then(moved_to), Some(Some(7)));
        let gone = expect(ExpectedEpoch(Some(3)), None).err();
        assert_eq!(gone.as_ref().and_then(moved_to), Some(None));
        let fresh = expect(ExpectedEpoch(None), Some(&state)).err();
        assert_eq!(fresh.as_ref().map(|e| e.api.status.as_u16()), Some(412));
        assert_eq!(moved_to(&stale(1)), None);
    }
}
