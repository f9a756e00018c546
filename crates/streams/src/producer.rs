//! Idempotent producers (`Producer-Id`, `Producer-Epoch`, `Producer-Seq`).
//!
//! Per (stream, producer id) the stream keeps the current epoch and the highest accepted
//! sequence number, inside the stream's metadata, so the new state is committed in the same
//! `StreamStore::commit` as the data it admits: after a crash a retried request is either a
//! duplicate (its data is there) or accepted again (it is not), never both or neither.
//! Validation runs under the stream's lock, so it is serialized per stream and per producer.

use crate::error::{StreamError, StreamResult};
use crate::headers::{PRODUCER_EPOCH, PRODUCER_EXPECTED_SEQ, PRODUCER_RECEIVED_SEQ, PRODUCER_SEQ};
use crate::state::{ProducerState, ProducerTuple, StreamInfo};

/// What to do with a producer request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; the producer's state becomes this.
    Accept(ProducerState),
    /// Already written: answer 204 echoing the highest accepted seq.
    Duplicate(ProducerState),
}

/// Checks `p` against the stream's producer state.
pub fn check(info: &StreamInfo, p: &ProducerTuple) -> StreamResult<Verdict> {
    let Some(current) = info.producers.get(&p.id) else {
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

    fn info() -> StreamInfo {
        serde_json::from_value(serde_json::json!({
            "content_type": "text/plain", "ttl_s": null, "expires_at": null, "last_access": 0,
            "req_ttl_s": null, "req_expires_at": null, "closed": false, "closed_by": null,
            "producers": {"p": {"epoch": 1, "seq": 3}}, "last_seq": null, "start": 0,
            "lineage": [], "fork": null, "forks": 0, "soft_deleted": false, "created_at": 0
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn t(epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    #[test]
    fn verdicts() {
        let i = info();
        assert_eq!(
            check(&i, &t(1, 4)).ok(),
            Some(Verdict::Accept(ProducerState { epoch: 1, seq: 4 }))
        );
        assert_eq!(
            check(&i, &t(1, 2)).ok(),
            Some(Verdict::Duplicate(ProducerState { epoch: 1, seq: 3 }))
        );
        assert_eq!(
            check(&i, &t(0, 0)).err().map(|e| e.api.status.as_u16()),
            Some(403)
        );
        assert_eq!(
            check(&i, &t(1, 9)).err().map(|e| e.api.status.as_u16()),
            Some(409)
        );
        assert_eq!(
            check(&i, &t(2, 1)).err().map(|e| e.api.status.as_u16()),
            Some(400)
        );
        assert!(matches!(check(&i, &t(2, 0)), Ok(Verdict::Accept(_))));
    }
}
