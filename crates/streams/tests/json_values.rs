//! Regression test for values a server-side producer appends one by one (found by the
//! `stream_json` fuzz target): each value is one message, so an array value — `[]` included —
//! is accepted as itself instead of being read as a batch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sessiond_streams::json::Limits;
use sessiond_streams::StreamsConfig;

#[test]
fn array_values_are_one_message_each() {
    let limits = Limits::of(&StreamsConfig::default());
    let values = [
        b"[]".to_vec(),
        b"[1,2]".to_vec(),
        b"[[]]".to_vec(),
        b"{}".to_vec(),
    ];
    assert!(limits.check_values(&values).is_ok());
}

#[test]
fn anything_but_exactly_one_value_is_refused() {
    let limits = Limits::of(&StreamsConfig::default());
    for bad in ["", " 1", "1 ", "1 2", "[1,", "\u{0}", "[1]]"] {
        assert!(
            limits.check_values(&[bad.as_bytes().to_vec()]).is_err(),
            "{bad:?}"
        );
    }
    assert!(limits.check_values(&[vec![0xff]]).is_err());
}
