//! The shared suite's checks of `ObjectStore` (object state, listing, alarms).

use super::{unique, C, HOUR};
use crate::objects::AlarmRecord;
use crate::{now_ms, Stores};

pub(super) async fn objects_state_and_listing(s: &Stores) {
    let kind = unique("kind");
    let o = &s.objects;
    assert!(o
        .load_object(&kind, "a")
        .await
        .expect("store call")
        .is_none());
    for key in ["user:1", "user:2", "user:10", "room:1"] {
        o.save_object(&kind, key, key.as_bytes(), C)
            .await
            .expect("store call");
    }
    o.save_object(&kind, "user:1", b"\x00binary\xff", C)
        .await
        .expect("store call");
    assert_eq!(
        o.load_object(&kind, "user:1")
            .await
            .expect("store call")
            .as_deref(),
        Some(&b"\x00binary\xff"[..])
    );
    assert_eq!(
        o.list_objects(&kind, "user:", None, 100)
            .await
            .expect("store call"),
        ["user:1", "user:10", "user:2"]
    );
    assert_eq!(
        o.list_objects(&kind, "user:", Some("user:1"), 1)
            .await
            .expect("store call"),
        ["user:10"]
    );
    assert_eq!(
        o.list_objects(&kind, "", None, 100)
            .await
            .expect("store call")
            .len(),
        4
    );
    assert!(o
        .list_objects(&unique("other-kind"), "", None, 100)
        .await
        .expect("store call")
        .is_empty());
    let alarm = AlarmRecord {
        kind: kind.clone(),
        key: "user:2".into(),
        name: "gc".into(),
        due_at: 5,
        attempt: 0,
        payload: String::new(),
    };
    o.put_alarm(&alarm, C).await.expect("store call");
    assert!(o
        .delete_object(&kind, "user:2", C)
        .await
        .expect("store call"));
    assert!(!o
        .delete_object(&kind, "user:2", C)
        .await
        .expect("store call"));
    assert!(
        o.object_alarms(&kind, "user:2")
            .await
            .expect("store call")
            .is_empty(),
        "delete_object drops alarms"
    );
    assert!(o
        .load_object(&kind, "user:2")
        .await
        .expect("store call")
        .is_none());
}

pub(super) async fn objects_alarms(s: &Stores) {
    let kind = unique("alarm-kind");
    let o = &s.objects;
    let mk = |key: &str, name: &str, due_at: i64| AlarmRecord {
        kind: kind.clone(),
        key: key.into(),
        name: name.into(),
        due_at,
        attempt: 0,
        payload: format!("{key}/{name}"),
    };
    // Far-past due times that no other check uses, so they sort first.
    o.put_alarm(&mk("k1", "b", 30), C)
        .await
        .expect("store call");
    o.put_alarm(&mk("k1", "a", 20), C)
        .await
        .expect("store call");
    o.put_alarm(&mk("k2", "a", 10), C)
        .await
        .expect("store call");
    o.put_alarm(&mk("k3", "later", now_ms() + HOUR), C)
        .await
        .expect("store call");
    let mine = |v: Vec<AlarmRecord>| v.into_iter().filter(|a| a.kind == kind).collect::<Vec<_>>();
    let due = mine(o.due_alarms(25, 1000).await.expect("store call"));
    assert_eq!(
        due.iter().map(|a| a.due_at).collect::<Vec<_>>(),
        [10, 20],
        "due ones, earliest first"
    );
    assert_eq!(due[0].payload, "k2/a");
    assert!(
        o.next_alarm_at()
            .await
            .expect("store call")
            .expect("store call")
            <= 10
    );
    // Re-arming replaces, attempt counts persist.
    let mut retry = mk("k1", "a", 40);
    retry.attempt = 3;
    o.put_alarm(&retry, C).await.expect("store call");
    let of_k1 = o.object_alarms(&kind, "k1").await.expect("store call");
    assert_eq!(of_k1.len(), 2, "several alarms per object");
    assert!(of_k1.contains(&retry));
    assert!(
        !o.delete_alarm(&kind, "k1", "a", Some(20), C)
            .await
            .expect("store call"),
        "stale due time: kept"
    );
    // Reschedule is a compare-and-set on the due time.
    let mut moved = retry.clone();
    moved.due_at = 50;
    moved.attempt = 4;
    assert!(
        !o.reschedule_alarm(&moved, 39, C).await.expect("store call"),
        "wrong expected due time"
    );
    assert!(o.reschedule_alarm(&moved, 40, C).await.expect("store call"));
    assert!(
        !o.reschedule_alarm(&moved, 40, C).await.expect("store call"),
        "already moved"
    );
    assert!(o
        .object_alarms(&kind, "k1")
        .await
        .expect("store call")
        .contains(&moved));
    assert!(
        mine(o.due_alarms(45, 1000).await.expect("store call"))
            .iter()
            .all(|a| a.name != "a" || a.key != "k1"),
        "the due index follows the new time"
    );
    let mut ghost = moved.clone();
    ghost.name = "ghost".into();
    assert!(
        !o.reschedule_alarm(&ghost, 50, C).await.expect("store call"),
        "never creates"
    );
    assert!(o
        .object_alarms(&kind, "k1")
        .await
        .expect("store call")
        .iter()
        .all(|a| a.name != "ghost"));
    let retry = moved;
    assert!(o
        .delete_alarm(&kind, "k1", "a", Some(retry.due_at), C)
        .await
        .expect("store call"));
    assert!(o
        .delete_alarm(&kind, "k1", "b", None, C)
        .await
        .expect("store call"));
    assert!(o
        .delete_alarm(&kind, "k2", "a", None, C)
        .await
        .expect("store call"));
    assert!(mine(o.due_alarms(now_ms(), 1000).await.expect("store call")).is_empty());
    assert_eq!(
        o.object_alarms(&kind, "k3")
            .await
            .expect("store call")
            .len(),
        1
    );
    o.delete_alarm(&kind, "k3", "later", None, C)
        .await
        .expect("store call");
}

/// `swap_object`: writes only over the expected state (or absence), deletes the same way,
/// and keeps concurrent read-modify-write loops from losing an update.
pub(super) async fn objects_swap(s: &Stores) {
    let kind = unique("swap");
    let o = &s.objects;
    let load = |key: &'static str| {
        let kind = kind.clone();
        async move { o.load_object(&kind, key).await.expect("store call") }
    };
    assert!(
        !o.swap_object(&kind, "a", Some(b"x"), Some(b"1"), C)
            .await
            .expect("store call"),
        "an absent object is not `x`"
    );
    assert_eq!(load("a").await, None);
    assert!(o
        .swap_object(&kind, "a", None, Some(b"1"), C)
        .await
        .expect("store call"));
    assert!(
        !o.swap_object(&kind, "a", None, Some(b"2"), C)
            .await
            .expect("store call"),
        "create-if-absent over an existing object"
    );
    assert!(
        !o.swap_object(&kind, "a", Some(b"0"), Some(b"2"), C)
            .await
            .expect("store call"),
        "stale expectation"
    );
    assert_eq!(load("a").await.as_deref(), Some(&b"1"[..]));
    assert!(o
        .swap_object(&kind, "a", Some(b"1"), Some(b"\x00two\xff"), C)
        .await
        .expect("store call"));
    assert_eq!(load("a").await.as_deref(), Some(&b"\x00two\xff"[..]));
    assert_eq!(
        o.list_objects(&kind, "", None, 10)
            .await
            .expect("store call"),
        ["a"]
    );
    // Deleting through a swap: only over the expected state, alarms untouched.
    let alarm = AlarmRecord {
        kind: kind.clone(),
        key: "a".into(),
        name: "t".into(),
        due_at: now_ms() + HOUR,
        attempt: 0,
        payload: String::new(),
    };
    o.put_alarm(&alarm, C).await.expect("store call");
    assert!(!o
        .swap_object(&kind, "a", Some(b"1"), None, C)
        .await
        .expect("store call"));
    assert!(o
        .swap_object(&kind, "a", Some(b"\x00two\xff"), None, C)
        .await
        .expect("store call"));
    assert_eq!(load("a").await, None);
    assert!(o
        .list_objects(&kind, "", None, 10)
        .await
        .expect("store call")
        .is_empty());
    assert_eq!(
        o.object_alarms(&kind, "a").await.expect("store call"),
        [alarm]
    );
    o.delete_alarm(&kind, "a", "t", None, C)
        .await
        .expect("store call");
    // Concurrent increments by compare-and-set loops: none is lost.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (o, kind) = (o.clone(), kind.clone());
            tokio::spawn(async move {
                for _ in 0..10 {
                    loop {
                        let cur = o.load_object(&kind, "n").await.expect("store call");
                        let n: u32 = cur
                            .as_deref()
                            .map_or(0, |b| String::from_utf8_lossy(b).parse().unwrap_or(0));
                        let next = (n + 1).to_string();
                        let swapped = o
                            .swap_object(&kind, "n", cur.as_deref(), Some(next.as_bytes()), C)
                            .await
                            .expect("store call");
                        if swapped {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(load("n").await.as_deref(), Some(&b"80"[..]));
}
