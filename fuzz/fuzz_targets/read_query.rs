//! The query string of a stream read (`offset`, `live`, `cursor`, percent-encoded): strict
//! and total; an offset the server formatted always reads back as itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiond_streams::offset::{self, Offset};
use sessiond_streams::read::{parse_query, Live};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = parse_query(Some(raw)) {
        if q.offset.is_none() {
            assert!(!raw
                .split('&')
                .any(|p| p == "offset" || p.starts_with("offset=")));
        }
    }
    // A server-formatted offset next to the fuzzed parameters.
    let position = data.iter().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(*b))
    });
    let token = offset::format(position);
    let with = format!("offset={token}&live=sse&{}", raw.replace("offset", "o"));
    if let Ok(q) = parse_query(Some(&with)) {
        assert_eq!(q.offset, Some(Offset::At(position)));
        assert!(matches!(q.live, Live::Sse | Live::LongPoll));
    }
});
