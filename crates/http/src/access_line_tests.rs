//! The hand-written access line against the subscriber's own: the same bytes after the
//! timestamp, for both formats, with fields that need escaping and fields left out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use super::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn subscriber_line(format: LineFormat, fields: &AccessFields<'_>) -> String {
    let capture = Capture::default();
    let builder = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false);
    match format {
        LineFormat::Full => {
            tracing::subscriber::with_default(builder.finish(), || via_tracing(fields))
        }
        LineFormat::Json => {
            tracing::subscriber::with_default(builder.json().finish(), || via_tracing(fields))
        }
    }
    let line = capture.0.lock().unwrap().clone();
    String::from_utf8(line).unwrap()
}

fn our_line(format: LineFormat, fields: &AccessFields<'_>) -> String {
    let mut out = Vec::new();
    format_line(&mut out, format, SystemTime::now(), fields);
    String::from_utf8(out).unwrap()
}

/// The line without its timestamp (RFC 3339 with microseconds: 27 bytes), which is checked on
/// its own below.
fn without_time(format: LineFormat, line: &str) -> String {
    match format {
        LineFormat::Full => line[27..].to_string(),
        LineFormat::Json => {
            let at = line.find("\"timestamp\":\"").unwrap() + 13;
            format!("{}{}", &line[..at], &line[at + 27..])
        }
    }
}

fn cases() -> Vec<AccessFields<'static>> {
    let typical = AccessFields {
        method: "GET",
        route: "/v1/sessions/{id}",
        status: 200,
        duration_ms: 0.123456,
        bytes: Some(71),
        request_id: "Ab-_0123456789abcdefghij",
        peer: Some("127.0.0.1:53122".parse().unwrap()),
        client: Some("203.0.113.7".parse().unwrap()),
        error: None,
    };
    vec![
        AccessFields { ..typical },
        AccessFields {
            method: "DELETE",
            route: "unmatched",
            status: 401,
            duration_ms: 1e-7,
            bytes: None,
            request_id: "req\"with\\quotes",
            peer: Some("[::1]:8080".parse().unwrap()),
            client: Some("2001:db8::7".parse().unwrap()),
            error: Some("invalid \"API\" key\n\u{1b}[31m é \u{7f}"),
        },
        AccessFields {
            method: "PATCH",
            status: 503,
            duration_ms: 12345.678,
            peer: None,
            client: None,
            error: Some("plain message"),
            ..typical
        },
        AccessFields {
            duration_ms: 250.0,
            bytes: Some(0),
            ..typical
        },
    ]
}

#[test]
fn lines_match_the_subscriber_byte_for_byte() {
    for format in [LineFormat::Full, LineFormat::Json] {
        for fields in cases() {
            let theirs = subscriber_line(format, &fields);
            let ours = our_line(format, &fields);
            assert_eq!(
                without_time(format, &ours),
                without_time(format, &theirs),
                "{format:?}"
            );
            assert!(ours.ends_with('\n') && ours.matches('\n').count() == 1);
        }
    }
}

#[test]
fn durations_are_written_as_the_subscriber_writes_them() {
    let mut values = vec![
        0.0,
        1e-7,
        1e-5,
        0.0001,
        0.00012,
        0.001,
        0.0123,
        0.1,
        0.123456789,
        1.0,
        1.5,
        7.25,
        99.99,
        100.0,
        1234.5678,
        1e15,
        9.999e15,
        1e16,
        3.5e17,
        f64::MAX,
    ];
    // Durations as they come: elapsed nanoseconds in milliseconds.
    let mut nanos: u64 = 1;
    while nanos < 10u64.pow(13) {
        values.push(std::time::Duration::from_nanos(nanos).as_secs_f64() * 1000.0);
        nanos = nanos * 7 + 3;
    }
    for value in values {
        let mut ours = Vec::new();
        debug_f64(&mut ours, value);
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            format!("{value:?}"),
            "{value}"
        );
    }
}

#[test]
fn json_lines_parse() {
    let line = our_line(LineFormat::Json, &cases()[1]);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        value["fields"]["error"],
        "invalid \"API\" key\n\u{1b}[31m é \u{7f}"
    );
    assert_eq!(value["fields"]["request_id"], "req\"with\\quotes");
    assert_eq!(value["target"], "sessiond::access");
}

#[test]
fn timestamps_are_rfc3339_utc_with_microseconds() {
    let mut out = Vec::new();
    for (secs, micros, text) in [
        (0, 0, "1970-01-01T00:00:00.000000Z"),
        (951_782_400, 7, "2000-02-29T00:00:00.000007Z"),
        (951_868_800, 999_999, "2000-03-01T00:00:00.999999Z"),
        (1_700_000_000, 120_000, "2023-11-14T22:13:20.120000Z"),
        (1_796_601_599, 1, "2026-12-06T23:59:59.000001Z"),
        (4_102_444_800, 0, "2100-01-01T00:00:00.000000Z"),
        (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
    ] {
        out.clear();
        timestamp(&mut out, secs, micros);
        assert_eq!(String::from_utf8_lossy(&out), text);
    }
    // The cached second is not reused for another one.
    out.clear();
    timestamp(&mut out, 0, 5);
    assert_eq!(String::from_utf8_lossy(&out), "1970-01-01T00:00:00.000005Z");
}
