//! The realtime SSE route's recovery position (`since=`, a client's copy of an event id).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sessiond_realtime::fuzzing::sse_since(text);
    }
});
