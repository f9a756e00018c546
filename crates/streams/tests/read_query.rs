//! Regression tests for the read query string's percent-decoding (found while writing the
//! `read_query` fuzz target): an escape is `%` and exactly two hex digits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sessiond_streams::offset::Offset;
use sessiond_streams::read::parse_query;

#[test]
fn a_signed_escape_is_malformed() {
    // `u8::from_str_radix("+1", 16)` is 1: `%+1` used to decode to a control character.
    for bad in [
        "cursor=%+1",
        "cursor=%-1",
        "cursor=%1",
        "cursor=%zz",
        "offset=%+1",
    ] {
        assert!(parse_query(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn escapes_of_two_hex_digits_decode() {
    let q = parse_query(Some("offset=-1&cursor=%2B1%20a+b")).unwrap();
    assert_eq!(q.offset, Some(Offset::Start));
    assert_eq!(q.cursor.as_deref(), Some("+1 a b"));
}
