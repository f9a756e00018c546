//! `update_session_data`: the change is applied to the stored data in one step, exactly as
//! the portable merge functions would apply it, and every data byte it does not change is
//! kept (integers beyond 2^53, empty arrays, escaped keys).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{session, unique, C};
use crate::merge::{merge_patch, shallow_merge};
use crate::{
    now_ms, DataChange, DataEvent, DataUpdate, DataWrite, EventPart, SessionRecord, Stores,
};

const MAX: usize = 64 * 1024;

async fn with_data(s: &Stores, data: &Value) -> SessionRecord {
    let mut rec = session(&unique("data"), None);
    rec.data = serde_json::to_string(data).expect("json");
    assert!(s
        .sessions
        .insert_session(&rec, C)
        .await
        .expect("store call"));
    rec
}

async fn written(s: &Stores, rec: &SessionRecord, change: DataChange) -> SessionRecord {
    let now = now_ms();
    let out = s
        .sessions
        .update_session_data(DataWrite::new(&rec.id, &change, now, MAX))
        .await
        .expect("store call");
    let DataUpdate::Written(next) = out else {
        panic!("{change:?} on {}: {out:?}", rec.data);
    };
    assert_eq!(next.version, rec.version + 1, "version moves by one");
    assert_eq!(next.updated_at, now);
    assert_eq!(next.last_seen_at, now);
    assert_eq!(
        next.idle_expires_at,
        (now + rec.idle_ttl_ms).max(rec.idle_expires_at)
    );
    assert_eq!(
        (
            next.created_at,
            next.absolute_expires_at,
            &next.device,
            &next.user_id
        ),
        (
            rec.created_at,
            rec.absolute_expires_at,
            &rec.device,
            &rec.user_id
        ),
        "fields other than the data and the deadlines are kept"
    );
    let stored = s
        .sessions
        .get_session(&rec.id, now)
        .await
        .expect("store call");
    assert_eq!(
        stored.as_ref(),
        Some(&next),
        "the reply is the stored record"
    );
    next
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("json")
}

/// Merge patches and top-level merges agree with the portable functions on every case.
pub(super) async fn sessions_data_update_semantics(s: &Stores) {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"})),
        (json!({"a": "b"}), json!({"b": "c"})),
        (json!({"a": "b"}), json!({"a": null})),
        (json!({"a": "b", "b": "c"}), json!({"a": null})),
        (json!({"a": ["b"]}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
        ),
        (json!({"a": [{"b": "c"}]}), json!({"a": [1]})),
        (json!({"e": null}), json!({"a": 1})),
        (json!({}), json!({"a": {"bb": {"ccc": null}}})),
        (
            json!({"a": 1, "n": {"x": [], "y": {}}}),
            json!({"n": {"x": null, "z": [[], {}]}}),
        ),
        (
            json!({"q\"u\\o": "t\"e", "é": "\u{1}"}),
            json!({"é": {"}": "{,"}, "k": "]"}),
        ),
        (
            json!({"deep": {"a": {"b": {"c": 1}}}}),
            json!({"deep": {"a": {"b": {"d": 2}}}}),
        ),
        (json!({"a": 1}), json!({})),
    ];
    for (target, patch) in &cases {
        let rec = with_data(s, target).await;
        let next = written(s, &rec, DataChange::MergePatch(text(patch))).await;
        let mut expected = target.clone();
        merge_patch(&mut expected, patch);
        let got: Value = serde_json::from_str(&next.data).expect("stored data is JSON");
        assert_eq!(got, expected, "merge patch {patch} onto {target}");

        let rec = with_data(s, target).await;
        let next = written(s, &rec, DataChange::Shallow(text(patch))).await;
        let (Value::Object(mut expected), Value::Object(add)) = (target.clone(), patch.clone())
        else {
            panic!("cases are objects");
        };
        shallow_merge(&mut expected, add);
        let got: Value = serde_json::from_str(&next.data).expect("stored data is JSON");
        assert_eq!(
            got,
            Value::Object(expected),
            "shallow {patch} onto {target}"
        );
    }

    // Bytes the change does not touch are kept as written: a decode into doubles (2^53) or
    // a codec without empty arrays would change them.
    let raw = r#"{"big":18446744073709551615,"neg":-9007199254740993,"empty":[],"obj":{}}"#;
    let mut rec = session(&unique("data-raw"), None);
    rec.data = raw.into();
    assert!(s
        .sessions
        .insert_session(&rec, C)
        .await
        .expect("store call"));
    let next = written(
        s,
        &rec,
        DataChange::MergePatch(r#"{"x":12345678901234567891}"#.into()),
    )
    .await;
    for kept in [
        r#""big":18446744073709551615"#,
        r#""neg":-9007199254740993"#,
        r#""empty":[]"#,
        r#""obj":{}"#,
        r#""x":12345678901234567891"#,
    ] {
        assert!(next.data.contains(kept), "{kept} kept in {}", next.data);
    }

    let rec = with_data(s, &json!({"a": 1})).await;
    let next = written(s, &rec, DataChange::Replace(text(&json!({"b": []})))).await;
    assert_eq!(next.data, r#"{"b":[]}"#, "replace stores the text given");
}

/// `if_match`, the size limit and a dead record refuse without writing anything.
pub(super) async fn sessions_data_update_refusals(s: &Stores) {
    let rec = with_data(s, &json!({"a": 1})).await;
    let patch = DataChange::MergePatch(r#"{"b":2}"#.into());
    let now = now_ms();
    let stale = s
        .sessions
        .update_session_data(
            DataWrite::new(&rec.id, &patch, now, MAX).if_match(Some(rec.version + 1)),
        )
        .await
        .expect("store call");
    assert_eq!(
        stale,
        DataUpdate::VersionMismatch {
            current: rec.version
        }
    );
    let big = DataChange::MergePatch(text(&json!({"b": "x".repeat(100)})));
    let too_large = s
        .sessions
        .update_session_data(DataWrite::new(&rec.id, &big, now, 50))
        .await
        .expect("store call");
    assert!(
        matches!(too_large, DataUpdate::TooLarge { bytes } if bytes > 100),
        "{too_large:?}"
    );
    let stored = s
        .sessions
        .get_session(&rec.id, now)
        .await
        .expect("store call");
    assert_eq!(stored.as_ref(), Some(&rec), "refusals write nothing");
    let matching = s
        .sessions
        .update_session_data(DataWrite::new(&rec.id, &patch, now, MAX).if_match(Some(rec.version)))
        .await
        .expect("store call");
    assert!(matches!(matching, DataUpdate::Written(ref r) if r.version == rec.version + 1));

    let missing = s
        .sessions
        .update_session_data(DataWrite::new(&unique("data-none"), &patch, now, MAX))
        .await
        .expect("store call");
    assert_eq!(missing, DataUpdate::Missing);
    let expired = s
        .sessions
        .update_session_data(DataWrite::new(
            &rec.id,
            &patch,
            rec.absolute_expires_at,
            MAX,
        ))
        .await
        .expect("store call");
    assert_eq!(
        expired,
        DataUpdate::Missing,
        "an expired record is not changed"
    );
}

/// Concurrent merges of different members through one handle lose nothing (on a shared
/// engine each is applied to the stored data; the default retries lost races).
pub(super) async fn sessions_data_update_concurrent(s: &Stores) {
    let rec = with_data(s, &json!({})).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = Arc::clone(&s.sessions);
        let id = rec.id.clone();
        tasks.push(tokio::spawn(async move {
            let patch = DataChange::MergePatch(format!(r#"{{"k{i}":{{"n":{i}}}}}"#));
            store
                .update_session_data(DataWrite::new(&id, &patch, now_ms(), MAX))
                .await
                .expect("store call")
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.expect("task"), DataUpdate::Written(_)));
    }
    let got = s
        .sessions
        .get_session(&rec.id, now_ms())
        .await
        .expect("store call")
        .expect("live");
    let data: serde_json::Map<String, Value> = serde_json::from_str(&got.data).expect("json");
    assert_eq!(data.len(), 50, "no lost merge");
    assert_eq!(got.version, rec.version + 50);
}

/// `update_session_data_with`: the event of an acknowledged change is queued in the same
/// step, its holes filled with what the change did (keys changed by JSON value, sorted by
/// bytes; the new version; the stored owner and origin); a refused change queues nothing.
pub(super) async fn sessions_data_update_events(s: &Stores) {
    // A first read, so that what this check reads later is found the way a relay finds it
    // (on Redis: through the outbox index, which the first read of a handle rebuilds by scan).
    s.outbox.outbox_read(1).await.expect("outbox read");
    let tag = unique("data-event");
    let head = format!(r#"{{"tag":"{tag}","u":"#);
    let event = DataEvent(vec![
        EventPart::Text(head.clone().into_bytes()),
        EventPart::UserId,
        EventPart::Text(br#","o":"#.to_vec()),
        EventPart::Origin,
        EventPart::Text(br#","v":"#.to_vec()),
        EventPart::Version,
        EventPart::Text(br#","c":"#.to_vec()),
        EventPart::ChangedKeys,
        EventPart::Text(b"}".to_vec()),
    ]);
    let user = unique("data-event-user");
    let mut rec = session(&unique("data-ev"), Some(&user));
    rec.data = r#"{"a":1,"b":{"x":1,"y":2},"c":[1,{"z":[]}]}"#.into();
    assert!(s.sessions.insert_session(&rec, C).await.expect("insert"));
    let changes = [
        // `d` was absent: deleting it changes nothing; `b` is merged to what it was.
        DataChange::MergePatch(r#"{"a":2,"b":{"y":2},"d":null,"e":[]}"#.into()),
        // The same object with its members in another order is the same value.
        DataChange::Shallow(r#"{"b":{"y":2,"x":1},"c":[1,{"z":[]}]}"#.into()),
        DataChange::Replace(r#"{"a":2,"é":1,"q\"":true}"#.into()),
    ];
    let mut limit = None;
    for change in &changes {
        let out = s
            .sessions
            .update_session_data(
                DataWrite::new(&rec.id, change, now_ms(), MAX)
                    .if_match(limit)
                    .event(Some(&event)),
            )
            .await
            .expect("store call");
        let DataUpdate::Written(next) = out else {
            panic!("{change:?}: {out:?}");
        };
        limit = Some(next.version);
    }
    let refused = [
        (rec.id.clone(), Some(1), MAX, now_ms()),
        (rec.id.clone(), None, 5, now_ms()),
        (unique("data-ev-none"), None, MAX, now_ms()),
        (rec.id.clone(), None, MAX, rec.absolute_expires_at),
    ];
    for (id, if_match, max, now) in refused {
        let patch = DataChange::MergePatch(r#"{"z":1}"#.into());
        let out = s
            .sessions
            .update_session_data(
                DataWrite::new(&id, &patch, now, max)
                    .if_match(if_match)
                    .event(Some(&event)),
            )
            .await
            .expect("store call");
        assert!(!matches!(out, DataUpdate::Written(_)), "refused: {out:?}");
    }
    let mut anonymous = session(&unique("data-ev-anon"), None);
    anonymous.origin = crate::SessionOrigin::OpenRoute;
    assert!(s
        .sessions
        .insert_session(&anonymous, C)
        .await
        .expect("insert"));
    let patch = DataChange::MergePatch(r#"{"a":null}"#.into());
    let out = s
        .sessions
        .update_session_data(
            DataWrite::new(&anonymous.id, &patch, now_ms(), MAX).event(Some(&event)),
        )
        .await
        .expect("store call");
    assert!(matches!(out, DataUpdate::Written(_)), "{out:?}");

    let queued: Vec<(String, Value)> = s
        .outbox
        .outbox_read(100_000)
        .await
        .expect("outbox read")
        .into_iter()
        .filter(|item| item.data.starts_with(head.as_bytes()))
        .map(|item| {
            let event = serde_json::from_slice(&item.data).expect("the event is JSON");
            (item.key, event)
        })
        .collect();
    let events: Vec<&Value> = queued.iter().map(|(_, e)| e).collect();
    let owned = |v: u64, c: Value| json!({"tag": tag, "u": user, "o": "service", "v": v, "c": c});
    let want = [
        owned(2, json!(["a", "e"])),
        owned(3, json!([])),
        owned(4, json!(["b", "c", "e", "q\"", "é"])),
        json!({"tag": tag, "u": null, "o": "open_route", "v": 2, "c": ["a"]}),
    ];
    let mut got: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    let mut wanted: Vec<String> = want.iter().map(Value::to_string).collect();
    got.sort();
    wanted.sort();
    assert_eq!(got, wanted, "exactly the acknowledged changes' events");
    let one_session: Vec<&Value> = events
        .iter()
        .copied()
        .filter(|e| e["u"] == user.as_str())
        .collect();
    assert_eq!(
        one_session,
        want[..3].iter().collect::<Vec<_>>(),
        "in order"
    );
    let keys: Vec<String> = queued.into_iter().map(|(k, _)| k).collect();
    s.outbox.outbox_remove(&keys).await.expect("remove");
}
