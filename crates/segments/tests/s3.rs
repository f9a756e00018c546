//! The cold tier against a real S3-compatible server: `moto_server` (PyPI `moto[server]`,
//! installed by `scripts/test`), started here on a free loopback port and killed on drop.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessiond_segments::{ColdTier, S3Config};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::{Durability, StreamStore};

/// A running `moto_server`, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `moto_server` ({e}): the S3 test needs it; install it with \
                 `pip install 'moto[server]'` (scripts/test does)"
            )
        });
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client.get(&moto.endpoint).send().await.is_ok() {
            return moto;
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on port {port} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_s3() {
    let moto = start_moto().await;
    // moto does not check signatures: a plain path-style PUT creates the bucket.
    let created = reqwest::Client::new()
        .put(format!("{}/segments", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "bucket creation: {}",
        created.status()
    );
    let tier = ColdTier::s3(&S3Config {
        endpoint: moto.endpoint.clone(),
        bucket: "segments".into(),
        region: "us-east-1".into(),
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        allow_http: true,
        prefix: "sessiond/".into(),
    })
    .unwrap();
    let store = MemoryEngine::new();
    common::round_trip(&tier, &store, "tenant/s3 stream").await;
    common::round_trip(&tier, &store, "tenant/other").await;
    let segments = store.segments("tenant/s3 stream").await.unwrap();
    assert!(segments
        .iter()
        .all(|s| s.object_key.starts_with("sessiond/streams-h/")));

    tier.delete_all(&store, "tenant/s3 stream").await.unwrap();
    assert!(store
        .delete_stream("tenant/s3 stream", Durability::Confirmed)
        .await
        .unwrap());
    // The objects are gone from the bucket; the other stream's are not.
    let listing = reqwest::Client::new()
        .get(format!(
            "{}/segments?list-type=2&prefix=sessiond/",
            moto.endpoint
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for s in &segments {
        assert!(
            !listing.contains(&s.object_key),
            "{} still listed",
            s.object_key
        );
    }
    let other = store.segments("tenant/other").await.unwrap();
    for s in &other {
        assert!(listing.contains(&s.object_key), "{} missing", s.object_key);
    }
}
