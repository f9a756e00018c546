//! `Sessiond-Durability: unconfirmed` appends are answered early but shown to readers only
//! once durable, through a real listener. The engine is the memory engine behind a gate that
//! holds back durability (what the SQLite writer's fsync does): a commit is applied at once,
//! an unconfirmed ticket resolves at once, a confirmed one only when the gate opens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sessiond_runtime::ObjectKind;
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{
    CheckedWrite, Commit, CommitTicket, Durability, ForkSource, Millis, ProducerRecord,
    ProducerUpdate, Result, SegmentRef, StreamChunk, StreamMeta, StreamStore,
};
use sessiond_streams::{NoCold, Streams, StreamsConfig};
use tokio::sync::watch;

struct Gated {
    inner: MemoryEngine,
    durable: watch::Receiver<bool>,
}

#[async_trait]
impl StreamStore for Gated {
    async fn stream_meta(&self, path: &str) -> Result<Option<StreamMeta>> {
        self.inner.stream_meta(path).await
    }
    async fn create_stream_with_producers(
        &self,
        m: &StreamMeta,
        c: &[StreamChunk],
        p: ProducerUpdate,
        d: Durability,
    ) -> Result<bool> {
        self.inner.create_stream_with_producers(m, c, p, d).await
    }
    async fn commit_enqueue(
        &self,
        path: &str,
        expected_tail: u64,
        chunks: Vec<StreamChunk>,
        meta: StreamMeta,
        producers: ProducerUpdate,
        durability: Durability,
    ) -> Result<CommitTicket> {
        let applied = self
            .inner
            .commit_enqueue(path, expected_tail, chunks, meta, producers, durability)
            .await?
            .await?;
        let mut durable = self.durable.clone();
        Ok(Box::pin(async move {
            if durability == Durability::Confirmed {
                let _ = durable.wait_for(|open| *open).await;
            }
            Ok::<Commit, _>(applied)
        }))
    }
    async fn commit_checked(&self, write: CheckedWrite<'_>) -> Result<Commit> {
        // Only shared engines are asked for this (the test's service is exclusive).
        self.inner.commit_checked(write).await
    }
    async fn stream_producer(&self, path: &str, id: &str) -> Result<Option<ProducerRecord>> {
        self.inner.stream_producer(path, id).await
    }

    async fn list_stream_producers(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProducerRecord>> {
        self.inner.list_stream_producers(path, after, limit).await
    }
    async fn create_fork(
        &self,
        m: &StreamMeta,
        c: &[StreamChunk],
        s: &ForkSource,
        d: Durability,
    ) -> Result<bool> {
        self.inner.create_fork(m, c, s, d).await
    }
    async fn delete_fork(&self, path: &str, s: &ForkSource, d: Durability) -> Result<bool> {
        self.inner.delete_fork(path, s, d).await
    }
    async fn read_chunks(&self, path: &str, from: u64, max: usize) -> Result<Vec<StreamChunk>> {
        self.inner.read_chunks(path, from, max).await
    }
    async fn delete_stream(&self, path: &str, d: Durability) -> Result<bool> {
        self.inner.delete_stream(path, d).await
    }
    async fn list_streams(&self, p: &str, a: Option<&str>, l: usize) -> Result<Vec<String>> {
        self.inner.list_streams(p, a, l).await
    }
    async fn expired_streams(&self, now: Millis, limit: usize) -> Result<Vec<String>> {
        self.inner.expired_streams(now, limit).await
    }
    async fn segments(&self, path: &str) -> Result<Vec<SegmentRef>> {
        self.inner.segments(path).await
    }
    async fn seal_segment(&self, path: &str, s: &SegmentRef, d: Durability) -> Result<bool> {
        self.inner.seal_segment(path, s, d).await
    }

    async fn trim_stream(
        &self,
        path: &str,
        before: u64,
        max_chunks: usize,
        expected_state: Option<&[u8]>,
        durability: Durability,
    ) -> Result<Option<sessiond_store::Trimmed>> {
        self.inner
            .trim_stream(path, before, max_chunks, expected_state, durability)
            .await
    }

    async fn drop_chunks(&self, path: &str, offsets: &[u64], d: Durability) -> Result<bool> {
        self.inner.drop_chunks(path, offsets, d).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_appends_are_answered_early_and_shown_only_once_durable() {
    let (open, durable) = watch::channel(true);
    let store = Arc::new(Gated {
        inner: MemoryEngine::new(),
        durable,
    });
    let streams = Streams::new(
        store,
        Arc::new(NoCold),
        ObjectKind::in_memory("stream"),
        StreamsConfig::default(),
        true,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/stream/u", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, sessiond_streams::router(streams))
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let put = http
        .put(&url)
        .header("content-type", "text/plain")
        .body("durable;");
    assert_eq!(put.send().await.unwrap().status(), 201);

    // Durability held back: the unconfirmed append is answered at once...
    open.send_replace(false);
    let append = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("sessiond-durability", "unconfirmed")
        .body("early");
    let answered = tokio::time::timeout(Duration::from_secs(5), append.send())
        .await
        .expect("the unconfirmed writer is answered before durability")
        .unwrap();
    assert_eq!(answered.status(), 204);
    // ...but no reader sees it: not a catch-up read, not HEAD.
    let read = http.get(format!("{url}?offset=-1")).send().await.unwrap();
    assert_eq!(read.text().await.unwrap(), "durable;");
    let tail = "0000000000000000_0000000000000008";
    assert_eq!(
        answered.headers()["stream-next-offset"],
        "0000000000000000_0000000000000013"
    );
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(head.headers()["stream-next-offset"], tail);
    // Once durable, it is shown, and a reader waiting at the old tail is woken with it.
    let poll = tokio::spawn(
        http.get(format!("{url}?offset={tail}&live=long-poll"))
            .send(),
    );
    open.send_replace(true);
    let woken = poll.await.unwrap().unwrap();
    assert_eq!(woken.status(), 200);
    assert_eq!(woken.text().await.unwrap(), "early");
    let read = http.get(format!("{url}?offset=-1")).send().await.unwrap();
    assert_eq!(read.text().await.unwrap(), "durable;early");
}
