#![allow(clippy::unwrap_used)]
use super::*;

const LIMITS: Limits = Limits {
    max_depth: 128,
    max_messages: 1000,
    overhead: 0,
    max_bytes: usize::MAX,
};

fn messages(body: &str) -> Option<Vec<&str>> {
    let spans = LIMITS.split(body.as_bytes(), false).ok()?;
    Some(spans.into_iter().map(|r| &body[r]).collect())
}

#[test]
fn keeps_each_message_byte_for_byte() {
    assert_eq!(messages("[[1,2],[3,4]]"), Some(vec!["[1,2]", "[3,4]"]));
    assert_eq!(messages("[[[1,2,3]]]"), Some(vec!["[[1,2,3]]"]));
    assert_eq!(
        messages(" {\"b\": 1, \"a\" :2} \n"),
        Some(vec!["{\"b\": 1, \"a\" :2}"])
    );
    assert_eq!(
        messages("[ 1e2 , -0,\r\n\"\\u0000\\ud83d\\ude00\" ]"),
        Some(vec!["1e2", "-0", "\"\\u0000\\ud83d\\ude00\""])
    );
    assert_eq!(
        messages("[{\"a\":1,\"a\":2}]"),
        Some(vec!["{\"a\":1,\"a\":2}"])
    );
    assert!(messages("[]").is_none());
    assert_eq!(LIMITS.split(b" [ ] ", true).unwrap(), vec![]);
    assert_eq!(LIMITS.split(b"  ", true).unwrap(), vec![]);
    assert!(LIMITS.split(b"  ", false).is_err());
}

/// Accepts and refuses exactly what serde_json does (below its own depth limit).
#[test]
fn agrees_with_serde_json() {
    let corpus = [
        "1",
        "-0",
        "-",
        "01",
        "1.",
        "1.e3",
        ".5",
        "1e",
        "1e+",
        "1E-7",
        "2.5e+300",
        "123456789012345678901234567890",
        "true",
        "tru",
        "nul",
        "null ",
        " false",
        "\"\"",
        "\"a",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"\\ud800\"",
        "\"tab\there\"",
        "\"é✓😀\"",
        "{}",
        "{",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{1:2}",
        "[1,]",
        "[,1]",
        "[1 2]",
        "[[]]",
        "[{}]",
        "{\"a\":[1,{\"b\":null}]}",
        "[1]]",
        "{}}",
        "1 2",
        "[1] x",
        "{\"a\":1 \"b\":2}",
        "[\"\\\"\",\"\\\\\"]",
        "[ ]",
        "[\n1\n,\n2\n]",
        "\u{feff}1",
        "[1,2,3]garbage",
    ];
    for case in corpus {
        let ours = LIMITS.split(case.as_bytes(), true).is_ok();
        let theirs = case.trim().is_empty()
            || serde_json::from_str::<serde_json::Value>(case).is_ok()
            || case == "\"\\ud800\"";
        assert_eq!(ours, theirs, "{case:?}");
    }
    let err = LIMITS.split(b"{\n  \"a\": tru\n}", false).err().unwrap();
    assert!(
        err.api.message.contains("line 2 column 8"),
        "{}",
        err.api.message
    );
    assert!(
        LIMITS.split(&[b'"', 0xff, b'"'], false).is_err(),
        "not UTF-8"
    );
}

#[test]
fn depth_is_counted_per_message_and_any_limit_is_safe() {
    let nested = |d: usize| format!("{}{}", "[".repeat(d), "]".repeat(d));
    let three = Limits {
        max_depth: 3,
        ..LIMITS
    };
    assert!(
        three.split(nested(3).as_bytes(), false).is_ok(),
        "the batch array is free"
    );
    assert!(three.split(nested(4).as_bytes(), false).is_ok());
    let err = three.split(nested(5).as_bytes(), false).err().unwrap();
    assert!(
        err.api.message.contains("max_json_depth"),
        "{}",
        err.api.message
    );
    assert!(three.split(b"{\"a\":{\"b\":{\"c\":1}}}", false).is_ok());
    assert!(three.split(b"{\"a\":{\"b\":{\"c\":[]}}}", false).is_err());
    let deep = Limits {
        max_depth: 1_000_000,
        ..LIMITS
    };
    assert!(
        deep.split(nested(200_000).as_bytes(), false).is_ok(),
        "no recursion"
    );
}

#[test]
fn counts_and_overhead_are_413() {
    let limits = Limits {
        max_depth: 8,
        max_messages: 3,
        overhead: 10,
        max_bytes: 40,
    };
    assert!(limits.split(b"[1,2,3]", false).is_ok());
    let err = limits.split(b"[1,2,3,4]", false).err().unwrap();
    assert_eq!(err.api.status, StatusCode::PAYLOAD_TOO_LARGE);
    let err = limits.split(b"[11111111111,2,3]", false).err().unwrap();
    assert_eq!(
        err.api.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "17 + 3 x 10 > 40"
    );
    assert!(limits
        .check_values(&[b"1".to_vec(), b"{}".to_vec()])
        .is_ok());
    assert!(limits.check_values(&[b"1 2".to_vec()]).is_err());
    assert!(limits.check_values(&[b" 1".to_vec()]).is_err());
}

#[test]
fn packed_chunks_split_back_into_the_messages() {
    let msgs: Vec<String> = (0..5000)
        .map(|i| match i % 4 {
            0 => format!("{{\"s\":\"a,b]\\\"{i}\",\"n\":[{i},{{}}]}}"),
            1 => format!("\"{}\"", "x".repeat(i % 300)),
            2 => i.to_string(),
            _ => format!("[{i}, \"]\" , {{\"k\" : [ ] }}]"),
        })
        .collect();
    let (chunks, end) = pack(msgs.iter().map(|m| m.as_bytes()), 100);
    assert!(chunks.len() > 1 && chunks.iter().all(|c| c.data.len() <= CHUNK_TARGET));
    assert_eq!(chunks[0].offset, 100);
    assert_eq!(chunks.last().unwrap().end(), end);
    let mut back = Vec::new();
    for c in &chunks {
        let mut at = 0;
        while at < c.data.len() {
            let (stop, next) = next_message(&c.data, at);
            back.push(String::from_utf8(c.data[at..stop].to_vec()).unwrap());
            at = next;
        }
    }
    assert_eq!(back, msgs);
    let big = "9".repeat(CHUNK_TARGET * 2);
    let (chunks, _) = pack([b"1".as_slice(), big.as_bytes(), b"2"].into_iter(), 0);
    assert_eq!(chunks.len(), 3, "a large message gets its own chunk");
    assert_eq!(join(&[b"1,2".to_vec(), b"3".to_vec()]), b"[1,2,3]");
}

/// The word-at-a-time scan stops exactly where a byte-by-byte one does, at every position of
/// every stop byte and next to bytes that look like them (0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80+).
#[test]
fn plain_runs_stop_where_a_byte_loop_does() {
    let naive = |s: &[u8]| {
        s.iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(s.len())
    };
    let fillers = [b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff];
    let stops = [b'"', b'\\', 0x00, 0x01, b'\n', 0x1f];
    for len in 0..40 {
        for &fill in &fillers {
            let plain = vec![fill; len];
            assert_eq!(plain_run(&plain), naive(&plain));
            for at in 0..len {
                for &stop in &stops {
                    let mut s = plain.clone();
                    s[at] = stop;
                    // a second stop later must not move the first
                    if at + 3 < len {
                        s[at + 3] = b'"';
                    }
                    assert_eq!(plain_run(&s), naive(&s), "{s:?}");
                }
            }
        }
    }
}
