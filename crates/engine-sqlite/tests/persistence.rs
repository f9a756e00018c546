//! What survives a close and reopen, and how older files are migrated.
#![allow(clippy::unwrap_used)]

use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions, DB_FILE, SCHEMA_VERSION};
use sessiond_store::testsuite::session;
use sessiond_store::{AlarmRecord, CacheEntry, Durability, Stores};

const C: Durability = Durability::Confirmed;

fn user_version(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().join("nested/data");
    let rec = session("persisted", Some("someone"));
    let now = rec.created_at;
    let entry = CacheEntry {
        value: "0".into(),
        stored_at: now,
        expires_at: None,
    };
    let alarm = AlarmRecord {
        kind: "k".into(),
        key: "o".into(),
        name: "a".into(),
        due_at: 42,
        attempt: 2,
        payload: "p".into(),
    };
    {
        let s = Stores::from_engine(SqliteEngine::open(&db_dir, SqliteOptions::default()).unwrap());
        assert!(s.sessions.insert_session(&rec, C).await.unwrap());
        // Unconfirmed writes are flushed by close, too.
        s.cache
            .cache_put("ns", "key", &entry, 10, now, Durability::Unconfirmed)
            .await
            .unwrap();
        s.objects
            .save_object("k", "o", b"\x00state", C)
            .await
            .unwrap();
        s.objects
            .put_alarm(&alarm, Durability::Unconfirmed)
            .await
            .unwrap();
        s.admin.close().await.unwrap();
        s.admin.close().await.unwrap();
        assert!(s.sessions.get_session(&rec.id, now).await.is_err());
    }
    assert_eq!(user_version(&db_dir), SCHEMA_VERSION);
    let s = Stores::from_engine(SqliteEngine::open(&db_dir, SqliteOptions::default()).unwrap());
    assert_eq!(
        s.sessions.get_session(&rec.id, now).await.unwrap(),
        Some(rec)
    );
    assert_eq!(
        s.cache.cache_get("ns", "key", now).await.unwrap(),
        Some(entry)
    );
    assert_eq!(
        s.objects.load_object("k", "o").await.unwrap().as_deref(),
        Some(&b"\x00state"[..])
    );
    assert_eq!(
        s.objects.object_alarms("k", "o").await.unwrap(),
        vec![alarm]
    );
    s.admin.close().await.unwrap();
    assert_eq!(user_version(&db_dir), SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A version-0 file: a database with something unrelated in it and no sessiond tables.
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch("CREATE TABLE unrelated (x); INSERT INTO unrelated VALUES (1);")
            .unwrap();
    }
    assert_eq!(user_version(dir.path()), 0);
    let engine = SqliteEngine::open(
        dir.path(),
        SqliteOptions {
            max_batch: 8,
            readers: 1,
            max_queued_writes: 4,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    assert_eq!(user_version(dir.path()), SCHEMA_VERSION);
    let s = Stores::from_engine(engine);
    let rec = session("migrated", None);
    assert!(s.sessions.insert_session(&rec, C).await.unwrap());
    assert!(s
        .sessions
        .get_session(&rec.id, rec.created_at)
        .await
        .unwrap()
        .is_some());
    s.admin.close().await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let kept: i64 = conn
        .query_row("SELECT x FROM unrelated", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 1, "migration leaves foreign tables alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {};", SCHEMA_VERSION + 1))
            .unwrap();
    }
    assert!(SqliteEngine::open(dir.path(), SqliteOptions::default()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let engine = SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap();
    let s = Stores::from_engine(engine);
    let rec = session("tampered", None);
    s.sessions.insert_session(&rec, C).await.unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute(
            "UPDATE sessions SET data = x'00ff' WHERE id = 'tampered'",
            [],
        )
        .unwrap();
    }
    let got = s.sessions.get_session(&rec.id, rec.created_at).await;
    assert!(
        matches!(got, Err(sessiond_store::StoreError::Corrupt(_))),
        "{got:?}"
    );
    s.admin.close().await.unwrap();
}

/// Rows stored before `auth_time` existed (the column is NULL) read their `created_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_auth_time_reads_its_creation_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = session("before-auth-time", Some("someone"));
    rec.auth_time = rec.created_at + 7;
    {
        let s =
            Stores::from_engine(SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap());
        assert!(s.sessions.insert_session(&rec, C).await.unwrap());
        s.admin.close().await.unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE sessions SET auth_time = NULL", [])
        .unwrap();
    drop(conn);
    let s = Stores::from_engine(SqliteEngine::open(dir.path(), SqliteOptions::default()).unwrap());
    let got = s
        .sessions
        .get_session(&rec.id, rec.created_at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.auth_time, rec.created_at);
    s.admin.close().await.unwrap();
}
