//! Stream offsets as a client sends them (`offset=` of a read, fork offsets): strict parsing,
//! and every accepted token is exactly the one the server would format.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiond_streams::offset::{self, Offset};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match offset::parse(text) {
        Some(Offset::At(position)) => assert_eq!(offset::format(position), text),
        Some(Offset::Start) => assert_eq!(text, "-1"),
        Some(Offset::Now) => assert_eq!(text, "now"),
        None => {}
    }
    if let Some(position) = offset::parse_token(text) {
        assert_eq!(
            offset::parse_token(&offset::format(position)),
            Some(position)
        );
    }
});
