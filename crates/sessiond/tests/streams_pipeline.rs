//! Pipelined appends to one stream, through a real listener on SQLite: many concurrent
//! appends share engine commits, each lands exactly once, readers only ever see a prefix of
//! the final log, a producer's concurrent retry is not appended twice, and a close orders
//! after the appends it raced with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/binary.rs"]
mod binary;
mod common;

use common::TestServer;
use sessiond::config::EngineKind;

const WRITERS: usize = 32;
const PER_WRITER: usize = 8;

/// A fixed-width token, so the log can be cut back into appends.
fn token(writer: usize, i: usize) -> String {
    format!("[w{writer:03}-i{i:04}]")
}
const TOKEN_LEN: usize = 12;

async fn create(s: &TestServer, path: &str) {
    let res = s
        .put(path)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

async fn read_all(s: &TestServer, path: &str) -> String {
    let res = s.get(&format!("{path}?offset=-1")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_commits_and_readers_see_prefixes() {
    let s = TestServer::start(EngineKind::Sqlite, |_| {}).await;
    let path = "/v1/stream/pipe/one";
    create(&s, path).await;
    let http = reqwest::Client::new();
    let empty = http.head(s.url(path)).send().await.unwrap();
    let ends_start = empty.headers()["stream-next-offset"]
        .to_str()
        .unwrap()
        .to_owned();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = s.url(path);
        let http = reqwest::Client::new();
        writers.push(tokio::spawn(async move {
            let mut ends = Vec::new();
            for i in 0..PER_WRITER {
                let res = http
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(token(w, i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204, "append {w}/{i}");
                let next = res.headers()["stream-next-offset"].to_str().unwrap();
                ends.push(next.to_owned());
            }
            ends
        }));
    }
    // Readers during the writes: every catch-up read and HEAD shows a prefix of whole tokens.
    let mut seen = Vec::new();
    let mut heads = Vec::new();
    while writers.iter().any(|w| !w.is_finished()) {
        let body = read_all(&s, path).await;
        assert_eq!(body.len() % TOKEN_LEN, 0, "a read cut an append: {body}");
        let head = http.head(s.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200);
        let next = head.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        seen.push(body);
        heads.push(next);
        tokio::task::yield_now().await;
    }
    let mut ends = Vec::new();
    for w in writers {
        ends.extend(w.await.unwrap());
    }
    let log = read_all(&s, path).await;
    assert_eq!(log.len(), WRITERS * PER_WRITER * TOKEN_LEN);
    let mut tokens: Vec<&str> = (0..log.len() / TOKEN_LEN)
        .map(|k| &log[k * TOKEN_LEN..(k + 1) * TOKEN_LEN])
        .collect();
    for body in &seen {
        assert!(log.starts_with(body.as_str()), "a read saw a non-prefix");
    }
    // Each writer's tokens appear in its own order (it waited for each reply).
    for w in 0..WRITERS {
        let mine: Vec<&str> = tokens
            .iter()
            .copied()
            .filter(|t| t.starts_with(&format!("[w{w:03}")))
            .collect();
        let want: Vec<String> = (0..PER_WRITER).map(|i| token(w, i)).collect();
        assert_eq!(mine, want, "writer {w}");
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(
        tokens.len(),
        WRITERS * PER_WRITER,
        "every append exactly once"
    );
    // HEAD only ever reports the end of an acknowledged (durable) append.
    for next in &heads {
        assert!(
            ends.contains(next) || next == &ends_start,
            "HEAD offset {next}"
        );
    }
    ends.sort_unstable();
    ends.dedup();
    assert_eq!(
        ends.len(),
        WRITERS * PER_WRITER,
        "every reply its own offset"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_retries_race_the_original_without_duplicates() {
    let s = TestServer::start(EngineKind::Sqlite, |_| {}).await;
    let path = "/v1/stream/pipe/producer";
    create(&s, path).await;
    for seq in 0..20usize {
        let send = |_: usize| {
            s.post(path)
                .header("content-type", "text/plain")
                .header("producer-id", "p1")
                .header("producer-epoch", "0")
                .header("producer-seq", seq.to_string())
                .body(token(0, seq))
                .send()
        };
        let (a, b, c) = tokio::join!(send(0), send(1), send(2));
        let mut statuses: Vec<u16> = [a, b, c]
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect();
        statuses.sort_unstable();
        assert_eq!(statuses, vec![200, 204, 204], "seq {seq}");
    }
    let log = read_all(&s, path).await;
    let want: String = (0..20).map(|seq| token(0, seq)).collect();
    assert_eq!(log, want);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_orders_after_racing_appends() {
    let s = TestServer::start(EngineKind::Sqlite, |_| {}).await;
    let path = "/v1/stream/pipe/close";
    create(&s, path).await;
    let mut appends = Vec::new();
    for i in 0..40 {
        let req = s
            .post(path)
            .header("content-type", "text/plain")
            .body(token(1, i));
        appends.push(tokio::spawn(async move {
            (i, req.send().await.unwrap().status().as_u16())
        }));
        if i == 20 {
            let res = s
                .post(path)
                .header("stream-closed", "true")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        }
    }
    let mut accepted = Vec::new();
    for a in appends {
        let (i, status) = a.await.unwrap();
        match status {
            204 => accepted.push(token(1, i)),
            409 => {}
            other => panic!("append {i}: {other}"),
        }
    }
    let log = read_all(&s, path).await;
    let mut tokens: Vec<String> = (0..log.len() / TOKEN_LEN)
        .map(|k| log[k * TOKEN_LEN..(k + 1) * TOKEN_LEN].to_owned())
        .collect();
    assert_eq!(log.len(), tokens.len() * TOKEN_LEN);
    tokens.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(
        tokens, accepted,
        "the log holds exactly the acknowledged appends"
    );
    s.stop().await;
}

/// Group commit across concurrent appends to one stream, on the real binary: fewer engine
/// commits than appends. (Measured on the binary: in-process, since the server has its own
/// listener, the test runtime's clients and server no longer overlap enough to share commits,
/// which says nothing about the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_share_engine_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = binary::Binary::spawn(dir.path(), &[]);
    let url = server.url("/v1/stream/pipe/binary");
    let http = reqwest::Client::new();
    let created = http
        .put(&url)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let commits = "sessiond_engine_commits_total{engine=\"sqlite\"}";
    // Engine commands (the sum of the commit batch sizes): appends staged behind the stream's
    // commit in the engine go as one command, so there are fewer commands than appends too.
    let commands = "sessiond_engine_commit_batch_size_sum";
    let before = binary::metric(&http, &server.base, commits).await;
    let commands_before = binary::metric(&http, &server.base, commands).await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..PER_WRITER {
                let res = http
                    .post(&url)
                    .header("content-type", "text/plain")
                    .body(token(w, i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let used = binary::metric(&http, &server.base, commits).await - before;
    assert!(
        used > 0.0 && used < (WRITERS * PER_WRITER) as f64,
        "{used} commits for {} appends",
        WRITERS * PER_WRITER
    );
    let sent = binary::metric(&http, &server.base, commands).await - commands_before;
    assert!(
        sent > 0.0 && sent < (WRITERS * PER_WRITER) as f64,
        "{sent} engine commands for {} appends",
        WRITERS * PER_WRITER
    );
    // Each append landed once, its bytes whole (batched chunks keep their order and size).
    let log = http
        .get(format!("{url}?offset=-1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut tokens: Vec<&str> = (0..log.len() / TOKEN_LEN)
        .map(|k| &log[k * TOKEN_LEN..(k + 1) * TOKEN_LEN])
        .collect();
    assert_eq!(log.len(), WRITERS * PER_WRITER * TOKEN_LEN);
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), WRITERS * PER_WRITER);
}
