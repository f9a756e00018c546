//! `Stream-Cursor`: the interval counter that keeps CDNs from serving a cached long-poll answer
//! forever (protocol §10.1).
//!
//! The cursor is the number of 20-second intervals since 2024-10-09T00:00Z. When a client
//! echoes a cursor that is already current (or ahead), the answer adds a jitter of 1–180
//! intervals so cursors strictly increase and each request URL is new to the cache.

use sessiond_store::Millis;

const EPOCH_MS: Millis = 1_728_432_000_000;
const INTERVAL_MS: Millis = 20_000;

/// The cursor to send, given the client's `cursor` query parameter.
pub fn next(now: Millis, client: Option<&str>) -> String {
    next_value(now, client.and_then(parse)).to_string()
}

/// A cursor as the client sent it, if it is one (anything else counts as none).
pub fn parse(client: &str) -> Option<u64> {
    client.trim().parse::<u64>().ok()
}

/// [`next`] as a number, given the cursor echoed (parsed).
pub fn next_value(now: Millis, echoed: Option<u64>) -> u64 {
    let current = ((now - EPOCH_MS).max(0) / INTERVAL_MS) as u64;
    match echoed {
        Some(c) if c >= current => {
            let jitter = 1 + (now.unsigned_abs().wrapping_mul(2_654_435_761) >> 7) % 180;
            c.saturating_add(jitter)
        }
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn increases_when_echoed() {
        let now = 1_800_000_000_000;
        let first = super::next(now, None);
        let second = super::next(now, Some(&first));
        assert!(second.parse::<u64>().unwrap_or(0) > first.parse::<u64>().unwrap_or(u64::MAX));
    }
}
