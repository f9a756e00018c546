//! JSON-mode append bodies: validation and splitting into messages, then the storage layout
//! (messages packed into chunks, recovered by the boundary scan, joined into a read page).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiond_streams::json::{self, Limits};
use sessiond_streams::StreamsConfig;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::of(&StreamsConfig::default());
    let split = limits.split(data, false);
    // Whatever serde_json accepts (and is not an empty batch) is accepted too: the splitter
    // is a stricter reading only where the stream's own limits say so.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if value.as_array().is_none_or(|a| !a.is_empty()) {
            assert!(
                split.is_ok(),
                "serde_json accepts, split refuses: {:?}",
                split.err()
            );
        }
    }
    let Ok(spans) = split else { return };
    assert!(!spans.is_empty());
    let mut last_end = 0;
    for span in &spans {
        assert!(span.start >= last_end && span.start < span.end && span.end <= data.len());
        last_end = span.end;
    }
    let messages: Vec<&[u8]> = spans.iter().map(|s| &data[s.clone()]).collect();
    let owned: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec()).collect();
    assert!(
        limits.check_values(&owned).is_ok(),
        "a split message is not one value"
    );

    // Stored layout: the boundary scan finds exactly the messages that were packed.
    let start = 1000;
    let (chunks, end) = json::pack(messages.iter().copied(), start);
    let mut found: Vec<&[u8]> = Vec::new();
    let mut pos = start;
    for chunk in &chunks {
        assert_eq!(chunk.offset, pos);
        let mut at = 0;
        while at < chunk.data.len() {
            let (message_end, next) = json::next_message(&chunk.data, at);
            found.push(&chunk.data[at..message_end]);
            at = next;
        }
        pos = chunk.offset + chunk.data.len() as u64;
    }
    assert_eq!(pos, end);
    assert_eq!(found, messages);

    // A page (chunks joined into one array) reads back as the same messages.
    let datas: Vec<&[u8]> = chunks.iter().map(|c| c.data.as_slice()).collect();
    let page = json::join(&datas);
    let again = limits
        .split(&page, false)
        .expect("a page of stored messages is valid JSON");
    let reread: Vec<&[u8]> = again.iter().map(|s| &page[s.clone()]).collect();
    assert_eq!(reread, messages);
});
