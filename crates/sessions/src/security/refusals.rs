//! Refused requests as summaries: counted in memory per (route class, status), written to the
//! global security stream as one `request.refused` event per interval at most.
//!
//! Why a summary: refusals are what anonymous clients cause, as fast as they like; one durable
//! write each would hand them the engine's write rate. Memory holds one counter per (class,
//! status), both from short fixed lists, so a flood costs an increment per request and at most
//! one event per `refused_summary_ms`. Summaries share the per-minute budget of
//! `socket.refused` events (`max_refused_events_per_minute`); a summary that does not fit is
//! kept and merged into the next one, so the counts written always add up to the refusals.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value};
use sessiond_store::Millis;

/// The counts since the last summary.
#[derive(Default)]
pub(super) struct Tally {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// When the first uncounted refusal happened.
    since: Option<Millis>,
    per: BTreeMap<(&'static str, u16), u64>,
}

impl Tally {
    pub(super) fn note(&self, class: &'static str, status: u16, now: Millis) {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        counts.since.get_or_insert(now);
        *counts.per.entry((class, status)).or_default() += 1;
    }

    /// The details of a summary of everything counted so far, and resets the counts; `None`
    /// when nothing was refused.
    pub(super) fn take(&self, now: Millis) -> Option<Map<String, Value>> {
        let counts =
            std::mem::take(&mut *self.inner.lock().unwrap_or_else(PoisonError::into_inner));
        let since = counts.since?;
        let total: u64 = counts.per.values().sum();
        let rows: Vec<Value> = counts
            .per
            .into_iter()
            .map(|((class, status), count)| {
                serde_json::json!({
                    "class": class,
                    "status": status,
                    "reason": reason(status),
                    "count": count,
                })
            })
            .collect();
        let mut details = Map::new();
        details.insert("since".into(), since.into());
        details.insert("until".into(), now.into());
        details.insert("total".into(), total.into());
        details.insert("counts".into(), rows.into());
        Some(details)
    }

    /// Puts a summary that could not be written back, to go out with the next one.
    pub(super) fn restore(&self, details: &Map<String, Value>) {
        let mut counts = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(since) = details.get("since").and_then(Value::as_i64) {
            let earliest = counts.since.map_or(since, |s| s.min(since));
            counts.since = Some(earliest);
        }
        let rows = details.get("counts").and_then(Value::as_array);
        for row in rows.into_iter().flatten() {
            let class = row.get("class").and_then(Value::as_str).map(known_class);
            let status = row.get("status").and_then(Value::as_u64);
            let count = row.get("count").and_then(Value::as_u64).unwrap_or(0);
            if let (Some(class), Some(status)) = (class, status) {
                let status = u16::try_from(status).unwrap_or(0);
                *counts.per.entry((class, status)).or_default() += count;
            }
        }
    }
}

/// The route classes of summaries: the first path segment after `/v1/` of the server's API
/// groups, `edge` for the account-session check of proxies, `other` for anything else (so a
/// client choosing paths cannot grow the tally).
pub const CLASSES: [&str; 8] = [
    "sessions",
    "users",
    "streams",
    "realtime",
    "middleware",
    "cache",
    "edge",
    "other",
];

fn known_class(name: &str) -> &'static str {
    CLASSES
        .iter()
        .find(|c| **c == name)
        .copied()
        .unwrap_or("other")
}

/// The class of a request to `path`.
pub fn route_class(path: &str) -> &'static str {
    if path == "/v1/sessions/forward-auth" {
        return "edge";
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return "other";
    };
    let first = rest.split('/').next().unwrap_or_default();
    match first {
        "stream" | "streams" | "stream-producers" => "streams",
        other => known_class(other),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        401 => "unauthenticated",
        403 => "forbidden",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_a_fixed_list() {
        assert_eq!(route_class("/v1/sessions/abc"), "sessions");
        assert_eq!(route_class("/v1/sessions/forward-auth"), "edge");
        assert_eq!(route_class("/v1/stream/a/b"), "streams");
        assert_eq!(route_class("/v1/anything-a-client-invents"), "other");
        assert_eq!(route_class("/session-state/x"), "other");
    }

    #[test]
    fn a_summary_that_was_not_written_goes_out_with_the_next() {
        let tally = Tally::default();
        assert!(tally.take(1).is_none());
        tally.note("sessions", 401, 10);
        tally.note("sessions", 401, 11);
        tally.note("streams", 403, 12);
        let first = tally.take(20).expect("a summary");
        assert_eq!(first["total"], 3);
        tally.restore(&first);
        tally.note("sessions", 401, 30);
        let next = tally.take(40).expect("a summary");
        assert_eq!(next["total"], 4);
        assert_eq!(next["since"], 10);
        assert_eq!(next["counts"][0]["count"], 3);
        assert_eq!(next["counts"][0]["reason"], "unauthenticated");
        assert!(tally.take(50).is_none());
    }
}
