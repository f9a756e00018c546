//! Property tests of offset arithmetic across page sizes: a random stream (binary or JSON,
//! random appends) read page by page with a random `max_read_chunk_bytes`, following
//! `Stream-Next-Offset`, concatenates to exactly what was appended — from the start and from
//! every offset an append returned — and every page moves forward.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use proptest::prelude::*;
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_streams::json::Limits;
use sessiond_streams::{append, create, offset, protocol, read, NoCold, Streams, StreamsConfig};

/// One append: raw bytes (binary stream) or JSON message texts (JSON stream).
#[derive(Clone, Debug)]
enum Append {
    Bytes(Vec<u8>),
    Json(Vec<String>),
}

fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z,\\]\\[{}\" ]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("1e2".to_string()),
        Just("-0".to_string()),
        Just("null".to_string()),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(inner, 0..3).prop_map(|v| {
                let fields: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("\"k{i}\" : {x}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn stream() -> impl Strategy<Value = Vec<Append>> {
    prop_oneof![
        prop::collection::vec(
            prop::collection::vec(any::<u8>(), 1..200).prop_map(Append::Bytes),
            1..10
        ),
        prop::collection::vec(
            prop::collection::vec(json_value(), 1..6).prop_map(Append::Json),
            1..10
        ),
    ]
}

fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// What a page carries: the bytes, or each JSON message's exact text.
fn pieces(json: bool, body: &[u8]) -> Vec<Vec<u8>> {
    if !json {
        return body.iter().map(|b| vec![*b]).collect();
    }
    let limits = Limits::of(&StreamsConfig::default());
    limits
        .split(body, true)
        .expect("a page is valid JSON")
        .into_iter()
        .map(|r| body[r].to_vec())
        .collect()
}

/// Reads from `from` until up to date; returns the pieces read.
async fn read_all(streams: &Streams, json: bool, from: &str, limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = from.to_string();
    for _ in 0..=limit {
        let query = format!("offset={at}");
        let r = read::read(streams, "s", &HeaderMap::new(), Some(&query))
            .await
            .expect("read");
        let next = header(&r, protocol::NEXT_OFFSET).expect("next offset");
        let done = header(&r, protocol::UP_TO_DATE).is_some();
        let body = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        let page = pieces(json, &body);
        assert!(
            done || (!page.is_empty() && offset::parse_token(&next) > offset::parse_token(&at)),
            "a page that is not the last moves forward ({at} -> {next})"
        );
        out.extend(page);
        if done {
            return out;
        }
        at = next;
    }
    panic!("no end after {limit} pages");
}

fn expected(appends: &[Append]) -> Vec<Vec<u8>> {
    appends
        .iter()
        .flat_map(|a| match a {
            Append::Bytes(b) => b.iter().map(|x| vec![*x]).collect::<Vec<_>>(),
            Append::Json(v) => v.iter().map(|m| m.as_bytes().to_vec()).collect(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pages_of_any_size_concatenate_to_the_appends(appends in stream(), page in 1usize..300) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let json = matches!(appends[0], Append::Json(_));
            let config = StreamsConfig { max_read_chunk_bytes: page, ..StreamsConfig::default() };
            let streams = Streams::new(
                Arc::new(MemoryEngine::new()),
                Arc::new(NoCold),
                ObjectKind::in_memory("stream"),
                config,
                true,
            );
            let mut h = HeaderMap::new();
            let content_type = if json { "application/json" } else { "application/octet-stream" };
            h.insert("content-type", HeaderValue::from_static(content_type));
            create::create(&streams, "s", &h, Bytes::new(), "http://x/v1/stream/s").await.expect("create");
            // Offsets after each append: where a reader that saw it resumes.
            let mut resume = vec![offset::format(0)];
            for a in &appends {
                let body = match a {
                    Append::Bytes(b) => b.clone(),
                    Append::Json(v) => format!("[{}]", v.join(" , ")).into_bytes(),
                };
                let r = append::append(&streams, "s", &h, Bytes::from(body)).await.expect("append");
                resume.push(header(&r, protocol::NEXT_OFFSET).expect("next offset"));
            }
            let all = expected(&appends);
            let limit = all.len() + 2;
            assert_eq!(read_all(&streams, json, "-1", limit).await, all);
            for (i, from) in resume.iter().enumerate() {
                let suffix = expected(&appends[i..]);
                assert_eq!(read_all(&streams, json, from, limit).await, suffix, "from append {i}");
            }
        });
    }
}
