//! The request headers of a stream write: `Stream-Seq`, the producer triple, TTL / expiry,
//! `Stream-Closed` and durability. The input is `name: value` lines; values are raw bytes.
#![no_main]
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sessiond_streams::{headers, protocol};

const NAMES: [&str; 8] = [
    protocol::SEQ,
    protocol::PRODUCER_ID,
    protocol::PRODUCER_EPOCH,
    protocol::PRODUCER_SEQ,
    protocol::TTL,
    protocol::EXPIRES_AT,
    protocol::CLOSED,
    "sessiond-durability",
];

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(selector) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }
    if let Ok(Some(seq)) = headers::stream_seq(&map, 64) {
        assert!(seq.len() <= 64);
    }
    if let Ok(Some(p)) = headers::producer(&map, 256) {
        // Accepted numbers stay within JSON's exact integers, so seq + 1 cannot overflow.
        assert!(p.epoch < 1 << 53 && p.seq < 1 << 53, "{p:?}");
        assert!(!p.id.trim().is_empty() && p.id.len() <= 256);
    }
    let _ = headers::expiry(&map);
    let _ = headers::durability(&map);
    let _ = headers::closed_flag(&map);
});
