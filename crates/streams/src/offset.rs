//! Offsets on the wire: `-1`, `now`, or our own fixed-width token.
//!
//! A token is `RRRRRRRRRRRRRRRR_PPPPPPPPPPPPPPPP`: 16 decimal digits (a read sequence, always
//! zero today; reserved so a future layout change can sort after every old token), `_`, and
//! the byte position in the stream, zero-padded to 16 digits. Fixed width makes tokens sort
//! lexicographically in stream order, as the protocol requires, and keeps them URL-safe.
//!
//! Parsing is strict on purpose: anything that is not exactly `-1`, `now` or a token is a 400,
//! which is what the conformance suite's garbage-offset tests (including fast-check generated
//! ones) expect, and it means a hostile offset never reaches the store.

/// A requested read position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// `-1`: the start of the stream.
    Start,
    /// `now`: the current tail.
    Now,
    /// A byte position.
    At(u64),
}

const DIGITS: usize = 16;

/// Formats a byte position as a token (written by hand: every append and read page answers
/// one or two, and `format!` with padding was a visible share of an append's CPU).
pub fn format(position: u64) -> String {
    let mut token = String::with_capacity(2 * DIGITS + 1);
    write(position, |part| token.push_str(part));
    token
}

/// Appends the token of `position` to `out` (an SSE control event, without a `String` of
/// its own per event).
pub fn push(position: u64, out: &mut Vec<u8>) {
    write(position, |part| out.extend_from_slice(part.as_bytes()));
}

/// The token in parts: the read sequence and `_`, the zero padding, the digits.
fn write(position: u64, mut put: impl FnMut(&str)) {
    const ZEROS: &str = "0000000000000000";
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(position);
    put("0000000000000000_");
    // Zero-padded to 16 digits; a longer position is written in full.
    put(&ZEROS[..DIGITS.saturating_sub(digits.len())]);
    put(digits);
}

/// Parses a token (not `-1`/`now`).
pub fn parse_token(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * DIGITS + 1 || bytes[DIGITS] != b'_' {
        return None;
    }
    let (seq, pos) = (&s[..DIGITS], &s[DIGITS + 1..]);
    if !seq.bytes().all(|b| b.is_ascii_digit()) || !pos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if seq.bytes().any(|b| b != b'0') {
        return None;
    }
    pos.parse().ok()
}

/// Parses a query `offset` value.
pub fn parse(s: &str) -> Option<Offset> {
    match s {
        "-1" => Some(Offset::Start),
        "now" => Some(Offset::Now),
        other => parse_token(other).map(Offset::At),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_the_padded_decimal_of_the_position() {
        for position in [
            0,
            1,
            9,
            10,
            999_999,
            10u64.pow(15),
            10u64.pow(16) - 1,
            10u64.pow(16),
            u64::MAX,
        ] {
            assert_eq!(
                format(position),
                format!("{:016}_{position:016}", 0),
                "{position}"
            );
        }
    }

    #[test]
    fn tokens_round_trip_and_sort() {
        assert_eq!(format(42), "0000000000000000_0000000000000042");
        let mut pushed = b"x".to_vec();
        push(u64::MAX, &mut pushed);
        assert_eq!(
            pushed,
            [b"x".as_slice(), format(u64::MAX).as_bytes()].concat()
        );
        assert_eq!(parse_token(&format(42)), Some(42));
        assert!(format(9) < format(10));
        for bad in [
            "",
            "0",
            "abc",
            "0000000000000000-0000000000000001",
            "../x",
            " -1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(parse("-1"), Some(Offset::Start));
        assert_eq!(parse("now"), Some(Offset::Now));
    }
}
