//! RFC 3339 timestamps for `Stream-Expires-At`, parsed and formatted with `chrono` (already in
//! the dependency tree through `object_store`).

use chrono::{DateTime, SecondsFormat, Utc};
use sessiond_store::Millis;

/// Parses an RFC 3339 timestamp (`Z` or a numeric offset) into unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn format_rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339("2026-11-23T12:00:00.5Z"),
            parse_rfc3339("2026-11-23T12:00:00.500+00:00")
        );
        assert_eq!(parse_rfc3339("not a date"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        let t = parse_rfc3339("2026-11-23T12:34:56.789Z").unwrap_or_default();
        assert_eq!(format_rfc3339(t), "2026-11-23T12:34:56.789Z");
    }
}
