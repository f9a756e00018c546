//! `GET /v1/streams` and `GET /v1/stream-producers/<name>` through a real listener on the
//! memory, SQLite and Redis engines: paging with an opaque cursor (or the last producer id),
//! prefix filters, tenant-key scoping, server-owned and deleted streams left out, and the
//! refusals (bad cursor or limit, missing key, read tokens, foreign prefixes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{json, TestServer};
use serde_json::{json, Value};
use sessiond::config::{Config, EngineKind, RouteSet};
use sessiond_http::jwt::sign_hs256;
use sessiond_streams::{offset, ScopedKeyConfig};

const FULL: &str = "full-access-key-0123";
const TENANT: &str = "tenant-a-key-0123456";
const SECRET: &str = "list-read-token-secret-0123456789abcdef";
/// Server-owned, and inside the tenant's prefix: the tenant must still not see it.
const METRICS: &str = "tenant-a/metrics";

fn configure(c: &mut Config) {
    c.api_keys = vec![FULL.into()];
    c.streams.keys = vec![ScopedKeyConfig {
        key: TENANT.into(),
        stream_prefixes: vec!["tenant-a".into()],
        read_only: true,
    }];
    c.streams.read_token_secrets = vec![SECRET.into()];
    c.streams.metrics_stream = Some(METRICS.into());
    c.streams.metrics_interval_s = 1;
    c.streams.max_list_limit = 50;
}

async fn put(s: &TestServer, name: &str, body: &str, headers: &[(&str, &str)]) {
    let mut req = s
        .put(&format!("/v1/stream/{name}"))
        .bearer_auth(FULL)
        .header("content-type", "text/plain")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 201, "create {name}");
}

/// Waits (polling, with a deadline) until `check` holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One page: (status, body).
async fn page(s: &TestServer, key: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = s.get(&format!("/v1/streams?{query}"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    json(req).await
}

/// Every entry under `prefix`, following cursors with pages of `limit`; also the page count.
async fn list_all(s: &TestServer, key: &str, prefix: &str, limit: usize) -> (Vec<Value>, usize) {
    let (mut out, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut query = format!("limit={limit}&prefix={}", urlencode(prefix));
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = page(s, Some(key), &query).await;
        assert_eq!(status, 200, "{query}: {body}");
        let entries = body["streams"].as_array().unwrap();
        assert!(entries.len() <= limit, "{body}");
        out.extend(entries.iter().cloned());
        pages += 1;
        assert!(pages < 100, "cursor never ends");
        match &body["next_cursor"] {
            Value::Null => return (out, pages),
            Value::String(c) => cursor = Some(c.clone()),
            other => panic!("next_cursor {other}"),
        }
    }
}

fn urlencode(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn paths(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect()
}

fn entry<'a>(entries: &'a [Value], path: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} not listed"))
}

#[tokio::test]
async fn listing_pages_filters_and_scopes() {
    for engine in [EngineKind::Memory, EngineKind::Sqlite, EngineKind::Redis] {
        let s = TestServer::start(engine, configure).await;
        let apps: Vec<String> = (0..7).map(|i| format!("tenant-a/s{i:02}")).collect();
        for (i, name) in apps.iter().enumerate() {
            put(&s, name, &"x".repeat(i), &[]).await;
        }
        for name in ["tenant-b/x", "tenant-ab/y", "zz"] {
            put(&s, name, "", &[]).await;
        }
        // A closed stream with data, one with a TTL, a deleted one and one that expires.
        put(
            &s,
            "tenant-a/t-closed",
            "hello",
            &[("stream-closed", "true")],
        )
        .await;
        put(&s, "tenant-a/t-ttl", "", &[("stream-ttl", "3600")]).await;
        put(&s, "tenant-a/t-deleted", "", &[]).await;
        let res = s
            .delete("/v1/stream/tenant-a/t-deleted")
            .bearer_auth(FULL)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        put(&s, "tenant-a/t-expiring", "", &[("stream-ttl", "1")]).await;
        // A fork of s05 (5 bytes) at its tail, with 2 bytes of its own.
        let fork_of = [("stream-forked-from", "tenant-a/s05")];
        put(&s, "tenant-a/t-fork", "yy", &fork_of).await;
        until("the metrics stream", || async {
            let res = s.http.head(s.url(&format!("/v1/stream/{METRICS}")));
            res.bearer_auth(FULL).send().await.unwrap().status() == 200
        })
        .await;
        until("the short TTL to pass", || async {
            let (all, _) = list_all(&s, FULL, "tenant-a/t-", 50).await;
            !paths(&all).contains(&"tenant-a/t-expiring".to_owned())
        })
        .await;

        // The full key, three at a time: everything live, in path order, server-owned too.
        let (all, pages) = list_all(&s, FULL, "", 3).await;
        let mut want: Vec<String> = apps.clone();
        want.extend(
            [
                METRICS,
                "tenant-a/t-closed",
                "tenant-a/t-fork",
                "tenant-a/t-ttl",
                "tenant-ab/y",
                "tenant-b/x",
                "zz",
            ]
            .map(String::from),
        );
        want.sort();
        assert_eq!(paths(&all), want, "{engine:?}");
        assert!(pages >= 5, "{pages} pages");

        let s03 = entry(&all, "tenant-a/s03");
        assert_eq!(s03["content_type"], "text/plain");
        assert_eq!(s03["tail_offset"], offset::format(3));
        assert_eq!(s03["start_offset"], offset::format(0));
        assert_eq!(s03["bytes"], 3);
        assert_eq!(s03["closed"], false);
        assert_eq!(s03["expires_at"], Value::Null);
        assert!(s03["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(s03.get("messages").is_none(), "no made-up message count");
        let closed = entry(&all, "tenant-a/t-closed");
        assert_eq!(
            (&closed["closed"], &closed["bytes"]),
            (&json!(true), &json!(5))
        );
        assert!(entry(&all, "tenant-a/t-ttl")["expires_at"].is_string());
        let fork = entry(&all, "tenant-a/t-fork");
        assert_eq!(fork["start_offset"], offset::format(5));
        assert_eq!(fork["tail_offset"], offset::format(7));
        assert_eq!(fork["bytes"], 2);
        // An append moves the listed tail.
        let res = s
            .post("/v1/stream/tenant-a/s03")
            .bearer_auth(FULL)
            .header("content-type", "text/plain")
            .body("abcd")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let (_, one) = page(&s, Some(FULL), "prefix=tenant-a%2Fs03").await;
        assert_eq!(one["streams"][0]["tail_offset"], offset::format(7));
        assert_eq!(one["streams"][0]["bytes"], 7);
        assert_eq!(one["next_cursor"], Value::Null);
        let res = s.get("/v1/streams").bearer_auth(FULL).send().await.unwrap();
        assert_eq!(res.headers()["cache-control"], "no-store");

        // Prefix filters are plain string prefixes for the full key.
        let (b, _) = list_all(&s, FULL, "tenant-b/", 2).await;
        assert_eq!(paths(&b), ["tenant-b/x"]);
        let (ab, _) = list_all(&s, FULL, "tenant-a", 50).await;
        assert!(paths(&ab).contains(&"tenant-ab/y".to_owned()));

        // The tenant key: its subtree only, never the server-owned metrics stream, whatever
        // the prefix or page size.
        let mine: Vec<String> = want
            .iter()
            .filter(|p| p.starts_with("tenant-a/") && p.as_str() != METRICS)
            .cloned()
            .collect();
        for (prefix, limit) in [("", 2), ("", 50), ("ten", 4), ("tenant-a", 1)] {
            let (seen, _) = list_all(&s, TENANT, prefix, limit).await;
            assert_eq!(paths(&seen), mine, "{engine:?} prefix {prefix:?}");
        }
        let (s0, _) = list_all(&s, TENANT, "tenant-a/s0", 3).await;
        assert_eq!(paths(&s0), apps);
        for foreign in ["tenant-b", "tenant-ab", "zz", "tenant-a-other"] {
            let (status, body) = page(&s, Some(TENANT), &format!("prefix={foreign}")).await;
            assert_eq!(status, 403, "{foreign}: {body}");
        }
    }
}

fn read_token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let claims = json!({"aud": "sessiond", "session_id": "s-1", "exp": now.as_secs() + 60});
    sign_hs256(&claims, SECRET.as_bytes())
}

#[tokio::test]
async fn listing_refuses_bad_requests_and_credentials() {
    for engine in [EngineKind::Memory, EngineKind::Sqlite, EngineKind::Redis] {
        let s = TestServer::start(engine, configure).await;
        put(&s, "tenant-a/one", "", &[]).await;
        for query in [
            "cursor=!!",
            "cursor=_w",
            "limit=0",
            "limit=51",
            "limit=-1",
            "limit=ten",
        ] {
            let (status, body) = page(&s, Some(FULL), query).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
        let (status, body) = page(&s, Some(FULL), "limit=50").await;
        assert_eq!(
            (status, body["streams"][0]["path"].clone()),
            (200, json!("tenant-a/one"))
        );

        assert_eq!(page(&s, None, "").await.0, 401);
        assert_eq!(page(&s, Some("not-a-key-0123456789"), "").await.0, 401);
        let token = read_token();
        let res = s
            .get("/v1/streams")
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let res = s
            .get(&format!("/v1/streams?token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
    }
}

#[tokio::test]
async fn open_streams_list_everything_but_server_owned() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        configure(c);
        c.open_routes = vec![RouteSet::Streams];
    })
    .await;
    put(&s, "tenant-a/one", "", &[]).await;
    put(&s, "other/two", "", &[]).await;
    until("the metrics stream", || async {
        let res = s.http.head(s.url(&format!("/v1/stream/{METRICS}")));
        res.bearer_auth(FULL).send().await.unwrap().status() == 200
    })
    .await;
    let (status, body) = page(&s, None, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        paths(body["streams"].as_array().unwrap()),
        ["other/two", "tenant-a/one"]
    );
    let (all, _) = list_all(&s, FULL, "", 10).await;
    assert!(paths(&all).contains(&METRICS.to_owned()));
}

#[tokio::test]
async fn skipped_names_bound_the_work_of_a_page() {
    let s = TestServer::start(EngineKind::Sqlite, |c| {
        configure(c);
        c.streams.sweep_interval_s = 3600;
    })
    .await;
    // More expired names than one page may examine (limit + max_list_limit = 1 + 50).
    for i in 0..60 {
        put(&s, &format!("old/e{i:02}"), "", &[("stream-ttl", "1")]).await;
    }
    put(&s, "old/live", "", &[]).await;
    until("the TTLs to pass", || async {
        let (all, _) = list_all(&s, FULL, "old/", 50).await;
        paths(&all) == ["old/live"]
    })
    .await;
    let (status, first) = page(&s, Some(FULL), "prefix=old%2F&limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(first["streams"], json!([]), "{first}");
    let cursor = first["next_cursor"].as_str().expect("more to examine");
    let query = format!("prefix=old%2F&limit=1&cursor={cursor}");
    let (_, second) = page(&s, Some(FULL), &query).await;
    assert_eq!(paths(second["streams"].as_array().unwrap()), ["old/live"]);
    assert_eq!(second["next_cursor"], Value::Null);
}

/// Appends `body` to `name` as producer `id` with `epoch`/`seq`; asserts it is accepted.
async fn produce(s: &TestServer, name: &str, id: &str, epoch: u64, seq: u64) {
    let res = s
        .post(&format!("/v1/stream/{name}"))
        .bearer_auth(FULL)
        .header("content-type", "text/plain")
        .header("producer-id", id)
        .header("producer-epoch", epoch.to_string())
        .header("producer-seq", seq.to_string())
        .body(format!("{id}-{epoch}-{seq}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "append {id} {epoch}/{seq}");
}

async fn producers(s: &TestServer, key: Option<&str>, name: &str, query: &str) -> (u16, Value) {
    let mut req = s.get(&format!("/v1/stream-producers/{name}?{query}"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    json(req).await
}

/// (id, epoch, seq) of a page; every listed producer carries when it last wrote.
fn producer_ids(body: &Value) -> Vec<(String, u64, u64)> {
    let list = body["producers"].as_array().unwrap();
    list.iter()
        .map(|p| {
            assert!(p["last_seen_at"].is_string(), "{p}");
            let n = |k: &str| p[k].as_u64().unwrap();
            (p["id"].as_str().unwrap().to_owned(), n("epoch"), n("seq"))
        })
        .collect()
}

#[tokio::test]
async fn producers_of_a_stream_are_listed_and_paged() {
    for engine in [EngineKind::Memory, EngineKind::Sqlite, EngineKind::Redis] {
        let s = TestServer::start(engine, configure).await;
        let name = "tenant-a/deep/produced";
        put(&s, name, "", &[]).await;
        put(&s, "tenant-a/quiet", "", &[]).await;
        let (status, body) = producers(&s, Some(FULL), "tenant-a/quiet", "").await;
        assert_eq!(
            (status, body),
            (200, json!({"producers": [], "next_after": null}))
        );
        produce(&s, name, "w2", 0, 0).await;
        produce(&s, name, "w1", 0, 0).await;
        produce(&s, name, "w1", 0, 1).await;
        produce(&s, name, "w2", 3, 0).await;
        let want = vec![("w1".to_owned(), 0, 1), ("w2".to_owned(), 3, 0)];
        let (status, body) = producers(&s, Some(FULL), name, "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(producer_ids(&body), want);
        assert_eq!(body["next_after"], Value::Null);
        // The read-only tenant key sees its own streams' producers too.
        let (status, tenant) = producers(&s, Some(TENANT), name, "").await;
        assert_eq!((status, producer_ids(&tenant)), (200, want.clone()));
        // Pages of one.
        let (_, first) = producers(&s, Some(FULL), name, "limit=1").await;
        assert_eq!(producer_ids(&first), want[..1]);
        assert_eq!(first["next_after"], "w1");
        let (_, second) = producers(&s, Some(FULL), name, "limit=1&after=w1").await;
        assert_eq!(producer_ids(&second), want[1..]);
        let (_, end) = producers(&s, Some(FULL), name, "limit=1&after=w2").await;
        assert_eq!(end, json!({"producers": [], "next_after": null}));
    }
}

#[tokio::test]
async fn producer_listing_refusals() {
    for engine in [EngineKind::Memory, EngineKind::Sqlite] {
        let s = TestServer::start(engine, configure).await;
        put(&s, "tenant-a/p", "", &[]).await;
        put(&s, "tenant-b/p", "", &[]).await;
        let (status, body) = producers(&s, Some(FULL), "tenant-a/missing", "").await;
        common::assert_error(status, &body, 404, "unknown stream");
        let res = s
            .delete("/v1/stream/tenant-a/p")
            .bearer_auth(FULL)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let (status, body) = producers(&s, Some(FULL), "tenant-a/p", "").await;
        common::assert_error(status, &body, 404, "deleted stream");
        for query in ["limit=0", "limit=51", "limit=x"] {
            let (status, body) = producers(&s, Some(FULL), "tenant-b/p", query).await;
            common::assert_error(status, &body, 400, query);
        }
        let (status, body) = producers(&s, Some(FULL), "a//b", "").await;
        common::assert_error(status, &body, 400, "empty segment");
        assert_eq!(producers(&s, None, "tenant-b/p", "").await.0, 401);
        assert_eq!(producers(&s, Some(TENANT), "tenant-b/p", "").await.0, 403);
        let token = read_token();
        let (status, _) = producers(&s, Some(&token), "tenant-b/p", "").await;
        assert_eq!(status, 403, "read tokens do not list producers");
    }
}
