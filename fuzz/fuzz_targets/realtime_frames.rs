//! WebSocket text frames of both realtime protocols (seed C and v1), fed through the real
//! handlers of a hub on an in-memory store. The first byte picks the protocol; the rest is
//! split on newlines into a sequence of frames on one socket (subscribe, then publish, …).
//! Every answer the server sends is a JSON object with a `type`.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sessiond_realtime::fuzzing::{Frames, Wire};

static FRAMES: OnceLock<std::sync::Mutex<Frames>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let wire = if selector % 2 == 0 {
        Wire::Seed
    } else {
        Wire::V1
    };
    let frames: Vec<&str> = text.split('\n').take(16).collect();
    let harness = FRAMES.get_or_init(|| std::sync::Mutex::new(Frames::new()));
    let harness = harness.lock().unwrap_or_else(|e| e.into_inner());
    for answer in harness.run(wire, &frames) {
        let value: serde_json::Value =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
        assert!(value["type"].is_string(), "no type: {answer}");
    }
});
