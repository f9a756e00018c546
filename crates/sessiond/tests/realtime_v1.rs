//! The v1 realtime protocol over a real server: channel authorization, grants, presence metas
//! collapsed per user, publish, offsets and recovery, and the server API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod realtime_support;

use common::{assert_error, json, TestServer};
use realtime_support::{connect, eventually, session, Ws};
use serde_json::{json, Value};
use sessiond::config::EngineKind;

async fn v1(s: &TestServer, token: &str, device: &str) -> Ws {
    let mut ws = connect(
        s,
        &format!("/v1/realtime?deviceId={device}&token={token}"),
        &[],
    )
    .await
    .open();
    let hello = ws.expect("connected").await;
    assert_eq!(hello["v"], 1);
    assert_eq!(hello["deviceId"], device);
    ws
}

/// Sends a request with an id and returns its reply (which must carry the same id).
async fn request(ws: &mut Ws, mut frame: Value, id: u64) -> Value {
    frame["id"] = json!(id);
    ws.send(frame).await;
    let reply = ws.next().await;
    assert_eq!(reply["id"], id, "reply {reply}");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_need_grants_and_presence_collapses_per_user() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.realtime.grant_keys = vec!["grant-key-of-at-least-32-bytes-long".into()]
    })
    .await;
    let alice_t = session(&s, "alice", None).await;
    let bob_t = session(&s, "bob", None).await;
    let mut alice = v1(&s, &alice_t, "laptop").await;

    // Own channel: allowed; someone else's: forbidden; a room without a grant: forbidden.
    let r = request(
        &mut alice,
        json!({"type": "subscribe", "channel": "user:alice"}),
        1,
    )
    .await;
    assert_eq!(r["type"], "subscribed");
    assert_eq!(r["offset"], 0);
    alice.expect("presence_state").await;
    let r = request(
        &mut alice,
        json!({"type": "subscribe", "channel": "user:bob"}),
        2,
    )
    .await;
    assert_eq!(
        (r["type"].clone(), r["code"].clone()),
        (json!("error"), json!("forbidden"))
    );
    let r = request(
        &mut alice,
        json!({"type": "subscribe", "channel": "room:lobby"}),
        3,
    )
    .await;
    assert_eq!(r["code"], "forbidden");
    let r = request(
        &mut alice,
        json!({"type": "subscribe", "channel": "nonsense"}),
        4,
    )
    .await;
    assert_eq!(r["code"], "bad_request");

    // The app grants alice the room (with publish) through the server API.
    let (status, body) = json(
        s.post("/v1/realtime/grants")
            .json(&json!({"user_id": "alice", "channel": "room:lobby", "publish": true})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let r = request(
        &mut alice,
        json!({"type": "subscribe", "channel": "room:lobby", "meta": {"status": "here"}}),
        5,
    )
    .await;
    assert_eq!(r["type"], "subscribed");
    let epoch = r["epoch"].as_str().unwrap().to_string();
    let st = alice.expect("presence_state").await;
    let metas = &st["presence"]["alice"]["metas"];
    assert_eq!(metas[0]["status"], "here");
    assert_eq!(metas[0]["deviceId"], "laptop");

    // Bob joins with a signed grant minted by the server (read-only).
    let (_, minted) = json(
        s.post("/v1/realtime/grant-tokens")
            .json(&json!({"user_id": "bob", "channel": "room:lobby", "ttl_s": 60})),
    )
    .await;
    let grant = minted["token"].as_str().unwrap();
    let mut bob = v1(&s, &bob_t, "phone").await;
    // Alice's grant token is not bob's.
    let r = request(
        &mut bob,
        json!({"type": "subscribe", "channel": "room:lobby", "grant": "x.y"}),
        1,
    )
    .await;
    assert_eq!(r["code"], "forbidden");
    let r = request(
        &mut bob,
        json!({"type": "subscribe", "channel": "room:lobby", "grant": grant}),
        2,
    )
    .await;
    assert_eq!(r["type"], "subscribed");
    let st = bob.expect("presence_state").await;
    assert!(st["presence"]["alice"].is_object() && st["presence"]["bob"].is_object());
    let diff = alice.expect("presence_diff").await;
    assert_eq!(diff["joins"]["bob"]["metas"][0]["deviceId"], "phone");
    assert_eq!(diff["leaves"], json!({}));

    // Publish rights: bob's grant is read-only; alice's allows publishing.
    let r = request(
        &mut bob,
        json!({"type": "publish", "channel": "room:lobby", "data": 1}),
        3,
    )
    .await;
    assert_eq!(r["code"], "forbidden");
    alice
        .send(json!({"type": "publish", "id": 6, "channel": "room:lobby", "data": {"text": "hi"}}))
        .await;
    // The publisher gets its own message (queued under the channel lock), then the reply.
    assert_eq!(alice.expect("message").await["offset"], 1);
    let r = alice.expect("published").await;
    assert_eq!((r["id"].clone(), r["offset"].clone()), (json!(6), json!(1)));
    let m = bob.expect("message").await;
    assert_eq!(
        (m["offset"].clone(), m["from"].clone(), m["data"].clone()),
        (json!(1), json!("alice"), json!({"text": "hi"}))
    );
    assert_eq!(m["channel"], "room:lobby");

    // Server publish: from null, next offset.
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .json(&json!({"channel": "room:lobby", "data": "srv"})),
    )
    .await;
    assert_eq!((status, body["offset"].clone()), (200, json!(2)));
    let m = bob.expect("message").await;
    assert_eq!(
        (m["from"].clone(), m["offset"].clone()),
        (Value::Null, json!(2))
    );
    alice.expect("message").await;

    // A second device of alice: presence collapses to one user with two metas.
    let mut tablet = v1(&s, &alice_t, "tablet").await;
    let r = request(&mut tablet, json!({"type": "subscribe", "channel": "room:lobby", "since": {"epoch": epoch, "offset": 0}}), 1).await;
    assert_eq!(r["recovered"], true);
    assert_eq!(r["messages"].as_array().unwrap().len(), 2);
    tablet.expect("presence_state").await;
    assert_eq!(
        bob.expect("presence_diff").await["joins"]["alice"]["metas"][0]["deviceId"],
        "tablet"
    );
    alice.expect("presence_diff").await;
    let (_, p) = json(s.get("/v1/realtime/channels/room:lobby/presence")).await;
    assert_eq!(p["presence"]["alice"]["metas"].as_array().unwrap().len(), 2);
    assert_eq!(p["presence"]["bob"]["metas"].as_array().unwrap().len(), 1);

    // presence_update: a leave of the old meta and a join of the new one.
    alice
        .send(json!({"type": "presence_update", "id": 7, "channel": "room:lobby", "meta": {"status": "away"}}))
        .await;
    // Everyone in the channel, the updater included, gets the diff; then the reply.
    assert_eq!(
        alice.expect("presence_diff").await["joins"]["alice"]["metas"][0]["status"],
        "away"
    );
    assert_eq!(alice.expect("presence_updated").await["id"], 7);
    tablet.expect("presence_diff").await;
    let d = bob.expect("presence_diff").await;
    assert_eq!(d["joins"]["alice"]["metas"][0]["status"], "away");
    assert_eq!(d["leaves"]["alice"]["metas"][0]["status"], "here");

    // Bob leaves (socket closed): the others see the leave.
    bob.close().await;
    let d = alice.expect("presence_diff").await;
    assert_eq!(d["leaves"]["bob"]["metas"][0]["deviceId"], "phone");

    // Revoking alice's grant unsubscribes her sockets from the room.
    tablet.expect("presence_diff").await;
    let res = s
        .delete("/v1/realtime/grants?user_id=alice&channel=room:lobby")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let u = alice.expect("unsubscribed").await;
    assert_eq!(
        (u["channel"].clone(), u["reason"].clone()),
        (json!("room:lobby"), json!("grant_revoked"))
    );
    let r = request(
        &mut alice,
        json!({"type": "subscribe", "channel": "room:lobby"}),
        8,
    )
    .await;
    assert_eq!(r["code"], "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_clients_recover_missed_messages_or_are_told_they_cannot() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.realtime.recovery_messages = 5;
        c.realtime.recovery_max_messages = 5;
    })
    .await;
    let token = session(&s, "alice", None).await;
    let mut ws = v1(&s, &token, "phone").await;
    let r = request(
        &mut ws,
        json!({"type": "subscribe", "channel": "user:alice"}),
        1,
    )
    .await;
    let epoch = r["epoch"].as_str().unwrap().to_string();
    ws.expect("presence_state").await;
    let send = |n: i64| {
        s.post("/v1/realtime/users/alice/send")
            .json(&json!({"data": {"n": n}}))
            .send()
    };
    assert_eq!(send(1).await.unwrap().status(), 200);
    let m = ws.expect("message").await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(1), json!({"n": 1}))
    );
    ws.close().await;

    // Missed while away: 2, 3, 4.
    for n in 2..=4 {
        send(n).await.unwrap();
    }
    let mut ws = v1(&s, &token, "phone").await;
    let since = json!({"epoch": epoch, "offset": 1});
    let r = request(
        &mut ws,
        json!({"type": "subscribe", "channel": "user:alice", "since": since}),
        1,
    )
    .await;
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["offset"], 4);
    let got: Vec<Value> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["n"].clone())
        .collect();
    assert_eq!(got, vec![json!(2), json!(3), json!(4)]);
    ws.expect("presence_state").await;
    // Live messages continue right after, without gap or duplicate.
    send(5).await.unwrap();
    assert_eq!(ws.expect("message").await["offset"], 5);

    // A foreign epoch, or a position older than the window: recovered false, no messages.
    let mut other = v1(&s, &token, "laptop").await;
    let r = request(&mut other, json!({"type": "subscribe", "channel": "user:alice", "since": {"epoch": "nope", "offset": 1}}), 1).await;
    assert_eq!(
        (r["recovered"].clone(), r["messages"].clone()),
        (json!(false), json!([]))
    );
    other.expect("presence_state").await;
    ws.expect("presence_diff").await;
    for n in 6..=12 {
        send(n).await.unwrap();
    }
    let mut late = v1(&s, &token, "tablet").await;
    let r = request(&mut late, json!({"type": "subscribe", "channel": "user:alice", "since": {"epoch": epoch, "offset": 4}}), 1).await;
    assert_eq!(r["recovered"], false, "only 5 messages kept: {r}");
    late.expect("presence_state").await;
    let r = request(
        &mut late,
        json!({"type": "unsubscribe", "channel": "user:alice"}),
        2,
    )
    .await;
    assert_eq!(r["type"], "unsubscribed");
    let r = request(&mut late, json!({"type": "subscribe", "channel": "user:alice", "since": {"epoch": epoch, "offset": 8}}), 3).await;
    assert_eq!(r["recovered"], true);
    assert_eq!(r["messages"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api_lists_disconnects_and_sends_to_users() {
    let s = TestServer::start(EngineKind::Memory, |c| {
        c.api_keys = vec!["svc-key-0123456789".into()]
    })
    .await;
    let token = session(&s, "alice", Some("svc-key-0123456789")).await;
    let mut modern = v1(&s, &token, "tab").await;
    request(
        &mut modern,
        json!({"type": "subscribe", "channel": "user:alice"}),
        1,
    )
    .await;
    modern.expect("presence_state").await;
    let mut legacy = connect(
        &s,
        &format!("/__user-session?deviceId=old&token={token}"),
        &[],
    )
    .await
    .open();
    legacy.expect("initial_state").await;

    let (status, body) = json(s.get("/v1/realtime/users/alice/connections")).await;
    assert_error(status, &body, 401, "connections without key");
    let (status, body) = json(
        s.get("/v1/realtime/users/alice/connections")
            .bearer_auth(&token),
    )
    .await;
    assert_error(status, &body, 403, "connections with a user session");
    let (_, body) = json(
        s.get("/v1/realtime/users/alice/connections")
            .bearer_auth("svc-key-0123456789"),
    )
    .await;
    let conns = body["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2);
    let tab = conns.iter().find(|c| c["device_id"] == "tab").unwrap();
    assert_eq!(tab["protocol"], "v1");
    assert_eq!(tab["channels"], json!(["user:alice"]));
    assert_eq!(tab["ip"], "127.0.0.1");
    assert!(tab["connected_at"].is_i64());

    // Send to a user: a recoverable message on user:<id>, the raw data to seed sockets.
    let (status, body) = json(
        s.post("/v1/realtime/users/alice/send")
            .bearer_auth("svc-key-0123456789")
            .json(&json!({"data": {"type": "notification", "message": "hey"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered"], 2);
    assert_eq!(modern.expect("message").await["data"]["message"], "hey");
    assert_eq!(legacy.expect("notification").await["message"], "hey");

    // Publishing needs the key and a valid channel; data is size-limited.
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .json(&json!({"channel": "room:x", "data": 1})),
    )
    .await;
    assert_error(status, &body, 401, "publish without key");
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .bearer_auth("svc-key-0123456789")
            .json(&json!({"channel": "x", "data": 1})),
    )
    .await;
    assert_error(status, &body, 400, "publish to a malformed channel");
    let big = "x".repeat(20_000);
    let (status, body) = json(
        s.post("/v1/realtime/publish")
            .bearer_auth("svc-key-0123456789")
            .json(&json!({"channel": "room:x", "data": big})),
    )
    .await;
    assert_error(status, &body, 413, "publish too large");

    // Disconnect one connection, then all.
    let id = tab["id"].as_str().unwrap();
    let res = s
        .delete(&format!("/v1/realtime/connections/{id}"))
        .bearer_auth("svc-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        modern.closed().await,
        (4003, "Disconnected by server".to_string())
    );
    eventually("the closed connection is unregistered", || async {
        let (_, body) = json(
            s.get("/v1/realtime/users/alice/connections")
                .bearer_auth("svc-key-0123456789"),
        )
        .await;
        body["connections"].as_array().unwrap().len() == 1
    })
    .await;
    let res = s
        .delete("/v1/realtime/connections/999999")
        .bearer_auth("svc-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let (_, body) = json(
        s.delete("/v1/realtime/users/alice/connections")
            .bearer_auth("svc-key-0123456789"),
    )
    .await;
    assert_eq!(body["closed"], 1);
    assert_eq!(legacy.closed().await.0, 4003);
    let (_, stats) = json(
        s.get("/v1/realtime/stats")
            .bearer_auth("svc-key-0123456789"),
    )
    .await;
    assert!(stats["channels"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_listings_page_users_and_channels_by_name() {
    let s = TestServer::start(EngineKind::Memory, |c| c.realtime.max_list_page = 2).await;
    let mut sockets = Vec::new();
    for user in ["carol", "alice", "bob"] {
        let token = session(&s, user, None).await;
        let mut ws = v1(&s, &token, &format!("{user}-phone")).await;
        let channel = format!("user:{user}");
        request(&mut ws, json!({"type": "subscribe", "channel": channel}), 1).await;
        sockets.push(ws);
    }
    // Pages in name order; `limit` above realtime.max_list_page is lowered to it.
    let (status, first) = json(s.get("/v1/realtime/connections?limit=50")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["connections"], 3);
    let names: Vec<_> = first["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(
        first["users"][0]["connections"][0]["device_id"],
        "alice-phone"
    );
    assert_eq!(first["next_after"], "bob");
    let (_, second) = json(s.get("/v1/realtime/connections?after=bob")).await;
    assert_eq!(second["users"][0]["user_id"], "carol");
    assert_eq!(second["next_after"], Value::Null);

    let (_, channels) = json(s.get("/v1/realtime/channels?prefix=user:b")).await;
    assert_eq!(
        channels["channels"],
        json!([{"channel": "user:bob", "subscribers": 1, "present_users": 1, "history_bytes": 0}])
    );
    let (status, body) = json(s.get("/v1/realtime/channels?limit=0")).await;
    assert_error(status, &body, 400, "limit 0");
    let (status, body) = json(s.get("/v1/realtime/channels?unknown=1")).await;
    assert_error(status, &body, 400, "unknown parameter");

    // A closed socket leaves the listing.
    sockets.remove(0).close().await;
    eventually("carol gone", || async {
        let (_, body) = json(s.get("/v1/realtime/connections")).await;
        body["connections"] == 2
    })
    .await;
}
