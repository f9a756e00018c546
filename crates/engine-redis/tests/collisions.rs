//! Ids containing `{`, `}`, `:`, `%` and unicode address distinct records.
#![allow(clippy::unwrap_used)]

use sessiond_engine_redis::testing::RedisServer;
use sessiond_engine_redis::{RedisEngine, RedisOptions};
use sessiond_store::testsuite::session;
use sessiond_store::{
    now_ms, AlarmRecord, CacheEntry, CacheStore, Durability, ObjectStore, SessionStore,
};

const C: Durability = Durability::Confirmed;
const NASTY: [&str; 12] = [
    "a:b", "a%3Ab", "a", "a}", "{a", "{a}", "}{", "a:b:c", "ü", "🙂:{x}", "", "%",
];

#[tokio::test]
async fn nasty_ids_do_not_collide() {
    let server = RedisServer::start();
    let e = RedisEngine::connect(&server.url(), RedisOptions::default())
        .await
        .unwrap();
    let now = now_ms();

    // Sessions and user indexes.
    for id in NASTY {
        let mut rec = session(id, Some(id));
        rec.data = serde_json_string(id);
        assert!(e.insert_session(&rec, C).await.unwrap(), "insert {id:?}");
    }
    for id in NASTY {
        let got = e.get_session(id, now).await.unwrap().unwrap();
        assert_eq!(got.data, serde_json_string(id));
        let listed = e.list_user_sessions(id, now, 100).await.unwrap();
        assert_eq!(listed.len(), 1, "user {id:?} sees only its own session");
        assert_eq!(listed[0].id, id);
    }

    // Cache: (namespace, key) pairs that would concatenate to the same string.
    let pairs = [
        ("a", "b:c"),
        ("a:b", "c"),
        ("a}", "{b"),
        ("a", "}:{b"),
        ("ü", "🙂"),
        ("", "a"),
    ];
    for (ns, key) in pairs {
        let entry = CacheEntry {
            value: format!("\"{ns}|{key}\""),
            stored_at: now,
            expires_at: None,
        };
        e.cache_put(ns, key, &entry, usize::MAX, now, C)
            .await
            .unwrap();
    }
    for (ns, key) in pairs {
        let got = e.cache_get(ns, key, now).await.unwrap().unwrap();
        assert_eq!(got.value, format!("\"{ns}|{key}\""));
    }
    assert_eq!(e.cache_clear("a", now, C).await.unwrap(), 2);
    assert!(e.cache_get("a:b", "c", now).await.unwrap().is_some());

    // Objects and alarms.
    for (kind, key) in pairs {
        e.save_object(kind, key, format!("{kind}|{key}").as_bytes(), C)
            .await
            .unwrap();
        let alarm = AlarmRecord {
            kind: kind.into(),
            key: key.into(),
            name: "n:{x}".into(),
            due_at: 1,
            attempt: 0,
            payload: format!("{kind}|{key}"),
        };
        e.put_alarm(&alarm, C).await.unwrap();
    }
    for (kind, key) in pairs {
        let state = e.load_object(kind, key).await.unwrap().unwrap();
        assert_eq!(state, format!("{kind}|{key}").as_bytes());
        let alarms = e.object_alarms(kind, key).await.unwrap();
        assert_eq!(alarms.len(), 1, "alarms of ({kind:?}, {key:?})");
        assert_eq!(alarms[0].payload, format!("{kind}|{key}"));
    }
    assert_eq!(
        e.list_objects("a", "", None, 100).await.unwrap(),
        ["b:c", "}:{b"]
    );
    assert!(e.delete_object("a", "b:c", C).await.unwrap());
    assert_eq!(
        e.object_alarms("a:b", "c").await.unwrap().len(),
        1,
        "other object keeps alarms"
    );
    assert!(e.load_object("a:b", "c").await.unwrap().is_some());
}

fn serde_json_string(s: &str) -> String {
    format!("{{\"id\":{}}}", s.len())
}
