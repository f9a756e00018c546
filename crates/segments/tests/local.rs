//! The cold tier on the local file system, over the SQLite and the memory engine.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_segments::{spawn_compactor, ColdTier, CompactionPolicy};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{Durability, EngineAdmin, StoreError, StreamStore};

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(&dir.path().join("db"), SqliteOptions::default()).unwrap();
    let tier = ColdTier::local(&dir.path().join("segments")).unwrap();
    common::round_trip(&tier, engine.as_ref(), "a/stream with spaces/é").await;
    let seg_files = files(&dir.path().join("segments"));
    assert_eq!(
        seg_files.len(),
        engine
            .segments("a/stream with spaces/é")
            .await
            .unwrap()
            .len()
    );
    // Deleting the stream's segments (then the stream) leaves no file behind.
    tier.delete_all(engine.as_ref(), "a/stream with spaces/é")
        .await
        .unwrap();
    assert!(engine
        .delete_stream("a/stream with spaces/é", Durability::Confirmed)
        .await
        .unwrap());
    assert!(files(&dir.path().join("segments")).is_empty());
    engine.close().await.unwrap();
}

#[tokio::test]
async fn round_trip_on_memory_and_orphans_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryEngine::new();
    let tier = ColdTier::local(dir.path()).unwrap();
    common::round_trip(&tier, &store, "m").await;
    common::round_trip(&tier, &store, "other").await;

    // A damaged segment is an error, never wrong bytes: every read verifies the frames it
    // returns, whether or not the segment's index is cached.
    let first = store.segments("m").await.unwrap().remove(0);
    let file = dir.path().join(&first.object_key);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let err = tier.read(&store, "m", 0, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    let fresh = ColdTier::local(dir.path())
        .unwrap()
        .with_read_cache_bytes(0);
    let err = fresh.read(&store, "m", 0, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    // Frames elsewhere in the segment are still served (each has its own checksum).
    let later = common::read_all(&fresh, &store, "m", first.end - 1, 100).await;
    assert_eq!(later.first().map(|c| c.end()), Some(first.end));

    // An orphan (a crash between the object's write and its seal) goes with the stream.
    let orphan_dir = file.parent().unwrap().to_path_buf();
    std::fs::write(
        orphan_dir.join("00000000000000000000-00000000000000000001-0.seg"),
        b"x",
    )
    .unwrap();
    let before_other = files(dir.path()).len();
    tier.delete_all(&store, "m").await.unwrap();
    assert!(
        files(&orphan_dir).is_empty(),
        "indexed segments and orphans deleted"
    );
    let others = store.segments("other").await.unwrap().len();
    assert_eq!(files(dir.path()).len(), others, "other streams keep theirs");
    assert!(before_other > others);
    assert!(store
        .delete_stream("m", Durability::Confirmed)
        .await
        .unwrap());
    tier.delete_all(&store, "m").await.unwrap();
    // Compacting a stream that is gone does nothing.
    assert!(tier
        .compact_stream(&store, "m", &common::policy())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn small_streams_are_sealed_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryEngine::new();
    let tier = ColdTier::local(dir.path()).unwrap();
    let all = common::fill(&store, "small", 20).await;
    let tail = all.last().unwrap().end();
    let mut policy = common::policy();
    policy.keep_hot_bytes = 100;
    assert!(
        tier.compact_stream(&store, "small", &policy)
            .await
            .unwrap()
            .is_none(),
        "too small"
    );
    policy.max_age = Some(Duration::ZERO);
    let seg = tier
        .compact_stream(&store, "small", &policy)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seg.start, 0);
    assert!(seg.end <= tail - 100 && seg.end > 0);
    assert!(
        tier.compact_stream(&store, "small", &policy)
            .await
            .unwrap()
            .is_none(),
        "tail kept"
    );
    assert_eq!(common::read_all(&tier, &store, "small", 0, 500).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_runs_in_the_background_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryEngine::new());
    let tier = Arc::new(ColdTier::local(dir.path()).unwrap());
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(common::fill(store.as_ref(), &format!("bg/{i}"), 100).await);
    }
    let policy = CompactionPolicy {
        interval: Duration::from_millis(20),
        list_page: 2,
        ..common::policy()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = spawn_compactor(tier.clone(), store.clone(), policy, async {
        let _ = stopped.await;
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for i in 0..5 {
        let path = format!("bg/{i}");
        while store.segments(&path).await.unwrap().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "compactor never sealed {path}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    for (i, all) in expected.iter().enumerate() {
        let path = format!("bg/{i}");
        assert_eq!(
            &common::read_all(&tier, store.as_ref(), &path, 0, 8192).await,
            all
        );
    }
}

/// Segments written in format 1 (before format 2) are still read, verified whole, through the
/// decoded-segment cache, and mixed with format-2 segments of the same stream.
#[tokio::test]
async fn format_1_segments_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryEngine::new();
    let tier = ColdTier::local(dir.path()).unwrap();
    let all = common::fill(&store, "old", 200).await;
    let cut = all.len() / 2;
    let (old, _) = all.split_at(cut);
    let key = "streams/old/legacy.seg";
    std::fs::create_dir_all(dir.path().join("streams/old")).unwrap();
    std::fs::write(
        dir.path().join(key),
        sessiond_segments::format::encode(old).unwrap(),
    )
    .unwrap();
    let segment = sessiond_store::SegmentRef {
        start: 0,
        end: old.last().unwrap().end(),
        object_key: key.into(),
    };
    assert!(store
        .seal_segment("old", &segment, Durability::Confirmed)
        .await
        .unwrap());
    while tier
        .compact_stream(&store, "old", &common::policy())
        .await
        .unwrap()
        .is_some()
    {}
    assert!(store.segments("old").await.unwrap().len() >= 2);
    for max in [1, 700, 4096] {
        assert_eq!(common::read_all(&tier, &store, "old", 0, max).await, all);
    }
    let uncached = ColdTier::local(dir.path())
        .unwrap()
        .with_read_cache_bytes(0);
    assert_eq!(
        common::read_all(&uncached, &store, "old", 5, 3000).await,
        all[0..]
            .iter()
            .skip_while(|c| c.end() <= 5)
            .cloned()
            .collect::<Vec<_>>()
    );
}

/// Reads of a local tier go to the files directly (`local.rs`): the same bytes as through
/// `object_store`, and for a segment whose file is gone (its index cached) or cut short, the
/// same error as through `object_store`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_file_reads_match_the_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryEngine::new();
    let direct = ColdTier::local(dir.path()).unwrap();
    let through_store = ColdTier::with_store(
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
        "",
    );
    let all = common::fill(&store, "f", 300).await;
    while direct
        .compact_stream(&store, "f", &common::policy())
        .await
        .unwrap()
        .is_some()
    {}
    let segments = store.segments("f").await.unwrap();
    assert!(segments.len() >= 3);
    // 5,000 and 20,000: pages that are read ahead (inside a segment, and into the next one).
    for max in [1, 999, 5_000, 20_000] {
        let a = common::read_all(&direct, &store, "f", 0, max).await;
        assert_eq!(a, all);
        assert_eq!(
            common::read_all(&through_store, &store, "f", 0, max).await,
            a
        );
    }
    // Both tiers have every index cached now: the errors below come from the ranged reads.
    let file = |s: &sessiond_store::SegmentRef| dir.path().join(&s.object_key);
    let bytes = std::fs::read(file(&segments[1])).unwrap();
    std::fs::remove_file(file(&segments[1])).unwrap();
    let from = segments[1].start;
    let gone = direct.read(&store, "f", from, 100).await.unwrap_err();
    assert!(matches!(gone, StoreError::Unavailable(_)), "{gone}");
    assert!(gone.to_string().contains("not found"), "{gone}");
    let gone_too = through_store
        .read(&store, "f", from, 100)
        .await
        .unwrap_err();
    assert_eq!(gone.to_string(), gone_too.to_string());
    // A file cut short inside the frames asked for: they are incomplete (corrupt); cut
    // before them: the read fails.
    for (cut, corrupt) in [(20, true), (4, false)] {
        std::fs::write(file(&segments[1]), &bytes[..cut]).unwrap();
        for tier in [&direct, &through_store] {
            let err = tier.read(&store, "f", from, 100).await.unwrap_err();
            let kind = matches!(err, StoreError::Corrupt(_));
            assert_eq!(kind, corrupt, "cut at {cut}: {err}");
            assert!(kind || matches!(err, StoreError::Unavailable(_)), "{err}");
        }
    }
    // The other segments are still served, and the restored file again.
    std::fs::write(file(&segments[1]), &bytes).unwrap();
    assert_eq!(common::read_all(&direct, &store, "f", 0, 4096).await, all);
}
