//! The suite's check of `StreamStore::create_stream_with_producers`: a stream created with
//! its first chunks and the producer rows that admitted them, on every engine.

use super::stream_fixtures::{chunk, meta};
use super::{unique, C};
use crate::streams::{ProducerRecord, ProducerUpdate, StreamChunk, StreamMeta, StreamStore};

/// Runs the checks against one engine.
pub async fn run_stream_create(s: &dyn StreamStore) {
    creates_chunks_and_rows(s).await;
    rows_without_chunks(s).await;
}

async fn create(
    s: &dyn StreamStore,
    meta: &StreamMeta,
    chunks: &[StreamChunk],
    producers: ProducerUpdate,
) -> bool {
    s.create_stream_with_producers(meta, chunks, producers, C)
        .await
        .expect("store call")
}

fn rows(ids: &[(&str, &[u8], i64)], max_producers: usize) -> ProducerUpdate {
    ProducerUpdate {
        upsert: ids
            .iter()
            .map(|(id, state, used_at)| ProducerRecord {
                id: (*id).to_string(),
                state: state.to_vec(),
                used_at: *used_at,
            })
            .collect(),
        max_producers,
    }
}

async fn stored_rows(s: &dyn StreamStore, path: &str) -> Vec<ProducerRecord> {
    s.list_stream_producers(path, None, 100)
        .await
        .expect("store call")
}

/// The chunks, the metadata and every row are written (a cap below the row count evicts none
/// of the rows the write itself carries); an existing path is refused and left as it was;
/// the rows go with the stream.
async fn creates_chunks_and_rows(s: &dyn StreamStore) {
    let path = unique("st-create-rows");
    let data = [chunk(0, 3), chunk(3, 2)];
    let m = meta(&path, 5, b"made");
    let update = rows(&[("a", b"1", 7), ("b", b"2", 8)], 1);
    assert!(create(s, &m, &data, update.clone()).await);
    assert_eq!(
        s.stream_meta(&path).await.expect("store call"),
        Some(m.clone())
    );
    let stored = s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call");
    assert_eq!(stored, data.to_vec());
    assert_eq!(stored_rows(s, &path).await, update.upsert);

    let other = meta(&path, 1, b"other");
    let late = [chunk(0, 1)];
    let refused = create(s, &other, &late, rows(&[("c", b"9", 9)], 0));
    assert!(!refused.await, "an existing path is refused");
    assert_eq!(s.stream_meta(&path).await.expect("store call"), Some(m));
    let stored = s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call");
    assert_eq!(stored, data.to_vec());
    assert_eq!(stored_rows(s, &path).await, update.upsert);

    assert!(s.delete_stream(&path, C).await.expect("store call"));
    assert!(s
        .create_stream(&meta(&path, 0, b""), &[], C)
        .await
        .expect("store call"));
    assert!(
        stored_rows(s, &path).await.is_empty(),
        "deleted with the stream"
    );
    s.delete_stream(&path, C).await.expect("store call");
}

/// Rows without chunks: an empty stream with its rows, its tail where `meta` says.
async fn rows_without_chunks(s: &dyn StreamStore) {
    let path = unique("st-create-rows-only");
    let m = meta(&path, 0, b"empty");
    let update = rows(&[("p", b"0", 3)], 0);
    assert!(create(s, &m, &[], update.clone()).await);
    assert_eq!(s.stream_meta(&path).await.expect("store call"), Some(m));
    assert_eq!(stored_rows(s, &path).await, update.upsert);
    let none = s
        .read_chunks(&path, 0, usize::MAX)
        .await
        .expect("store call");
    assert!(none.is_empty());
    s.delete_stream(&path, C).await.expect("store call");
}
