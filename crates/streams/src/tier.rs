//! The cold tier plugged into the capability: configuration (`[streams.cold]`), the
//! [`ColdReader`] over `sessiond-segments`, and the compaction passes.
//!
//! Why compaction runs here and not in the segments crate's own loop: a seal must never land
//! on a different incarnation of a stream than the one it read. `ColdTier::compact_stream`
//! reads the stream's metadata, segments and hot chunks, writes the object, then seals; if a
//! DELETE and a re-create of the same path happened in between, the seal would drop the new
//! stream's chunks and index the old stream's bytes. So every `compact_stream` call here runs
//! while holding the stream's object lock ([`ObjectKind::lock`](sessiond_runtime::ObjectKind)),
//! the same lock appends, closes and deletes take: compaction of a stream is serialized with
//! its writes. The lock is taken per segment (not per stream), so a backlog being drained
//! lets appends in between segments. The cost: an append to a stream waits while one of its
//! segments is uploaded.
//!
//! Readers take no lock: a seal is one engine transaction (index row + deletion of the hot
//! chunks it covers), and the read path asks the hot log first and the cold tier only for what
//! lies below the first hot chunk, so a reader racing a seal sees the bytes in one place or
//! the other, never neither.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sessiond_segments::{ColdTier, CompactionPolicy, S3Config};
use sessiond_store::{StoreError, StreamStore};

use crate::cold::ColdReader;
use crate::pages::SharedChunk;
use crate::service::Streams;

/// Where segment objects are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColdBackend {
    /// A local directory (`local_dir`, default `<data_dir>/segments`).
    #[default]
    Local,
    /// An S3-compatible bucket (`[streams.cold.s3]`).
    S3,
}

/// `[streams.cold.s3]`: an S3-compatible store.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket (it must exist).
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (redacted by `check-config`).
    pub secret_access_key: String,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    /// Key prefix inside the bucket.
    pub prefix: String,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            prefix: String::new(),
        }
    }
}

/// `[streams.cold]`: sealed segments in object storage and their compaction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ColdConfig {
    /// Move sealed ranges to object storage (on engines that store streams).
    pub enabled: bool,
    /// `local` or `s3`.
    pub backend: ColdBackend,
    /// Directory of the local backend; default `<data_dir>/segments`. On the memory engine
    /// without an explicit directory, segments stay in memory too (they die with the engine).
    pub local_dir: Option<PathBuf>,
    /// The S3 backend.
    pub s3: S3Settings,
    /// Seal once this many hot bytes (outside the kept tail) are waiting.
    pub min_segment_bytes: usize,
    /// Most bytes in one segment.
    pub max_segment_bytes: usize,
    /// Seal a smaller range once its oldest byte has been hot this long (seconds); 0 = size only.
    pub max_age_s: u64,
    /// The newest bytes of every stream that always stay hot.
    pub keep_hot_bytes: u64,
    /// Pause between compaction passes (seconds).
    pub interval_s: u64,
    /// Bytes of recently read segments kept decoded in memory, so a catch-up reader paging
    /// through a segment fetches and verifies it once; 0 = no cache.
    pub read_cache_bytes: usize,
}

impl Default for ColdConfig {
    fn default() -> Self {
        let policy = CompactionPolicy::default();
        ColdConfig {
            enabled: true,
            backend: ColdBackend::Local,
            local_dir: None,
            s3: S3Settings::default(),
            min_segment_bytes: policy.min_segment_bytes,
            max_segment_bytes: policy.max_segment_bytes,
            max_age_s: policy.max_age.map_or(0, |d| d.as_secs()),
            keep_hot_bytes: policy.keep_hot_bytes,
            interval_s: policy.interval.as_secs(),
            read_cache_bytes: sessiond_segments::DEFAULT_READ_CACHE_BYTES,
        }
    }
}

impl ColdConfig {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.min_segment_bytes == 0 || self.max_segment_bytes == 0 || self.interval_s == 0 {
            return Err(
                "streams.cold.min_segment_bytes, max_segment_bytes and interval_s must be > 0"
                    .into(),
            );
        }
        if self.backend == ColdBackend::S3
            && (self.s3.endpoint.is_empty() || self.s3.bucket.is_empty())
        {
            return Err("streams.cold.backend = \"s3\" needs streams.cold.s3.endpoint and streams.cold.s3.bucket".into());
        }
        Ok(())
    }

    /// The compaction policy these settings describe.
    pub fn policy(&self) -> CompactionPolicy {
        CompactionPolicy {
            min_segment_bytes: self.min_segment_bytes,
            max_segment_bytes: self.max_segment_bytes,
            max_age: (self.max_age_s > 0).then(|| Duration::from_secs(self.max_age_s)),
            keep_hot_bytes: self.keep_hot_bytes,
            interval: Duration::from_secs(self.interval_s),
            ..CompactionPolicy::default()
        }
    }

    /// Opens the configured tier (`None` when disabled). `data_dir` is the server's data
    /// directory; `volatile_engine` says the engine keeps nothing across restarts.
    pub fn open(
        &self,
        data_dir: &Path,
        volatile_engine: bool,
    ) -> Result<Option<Arc<ColdTier>>, StoreError> {
        if !self.enabled {
            return Ok(None);
        }
        let tier = match (self.backend, &self.local_dir) {
            (ColdBackend::S3, _) => ColdTier::s3(&S3Config {
                endpoint: self.s3.endpoint.clone(),
                bucket: self.s3.bucket.clone(),
                region: self.s3.region.clone(),
                access_key_id: self.s3.access_key_id.clone(),
                secret_access_key: self.s3.secret_access_key.clone(),
                allow_http: self.s3.allow_http,
                prefix: self.s3.prefix.clone(),
            })?,
            (ColdBackend::Local, Some(dir)) => ColdTier::local(dir)?,
            (ColdBackend::Local, None) if volatile_engine => {
                ColdTier::with_store(Arc::new(object_store::memory::InMemory::new()), "")
            }
            (ColdBackend::Local, None) => {
                ColdTier::local(&data_dir.join(sessiond_segments::DEFAULT_LOCAL_DIR))?
            }
        };
        Ok(Some(Arc::new(
            tier.with_read_cache_bytes(self.read_cache_bytes),
        )))
    }
}

/// [`ColdReader`] over a [`ColdTier`] (the engine holds the segment index).
pub struct SegmentsCold {
    tier: Arc<ColdTier>,
    store: Arc<dyn StreamStore>,
}

impl SegmentsCold {
    /// Reads `tier` with the index in `store`.
    pub fn new(tier: Arc<ColdTier>, store: Arc<dyn StreamStore>) -> SegmentsCold {
        SegmentsCold { tier, store }
    }
}

#[async_trait]
impl ColdReader for SegmentsCold {
    async fn read(
        &self,
        path: &str,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<SharedChunk>, StoreError> {
        let frames = self
            .tier
            .read_frames(self.store.as_ref(), path, from, max_bytes)
            .await?;
        Ok(frames
            .into_iter()
            .map(|f| SharedChunk {
                offset: f.offset,
                data: f.data,
            })
            .collect())
    }

    fn sealed_end_hint(&self, path: &str) -> u64 {
        self.tier.sealed_end_hint(path)
    }

    async fn delete_all(&self, path: &str) -> Result<(), StoreError> {
        self.tier.delete_all(self.store.as_ref(), path).await
    }
}

/// Compacts `path` until nothing more is due, one segment per lock hold; returns how many
/// segments were sealed.
pub async fn compact_stream(
    streams: &Streams,
    tier: &ColdTier,
    policy: &CompactionPolicy,
    path: &str,
) -> Result<usize, StoreError> {
    let mut sealed = 0;
    loop {
        let mut g = streams.objects.lock(path).await;
        // Seal only durable data: wait for the stream's appends in flight. One that failed
        // leaves the stream for the next pass (after a request reloaded it).
        if streams.settle(&mut g).await.is_err() {
            return Ok(sealed);
        }
        let done = tier
            .compact_stream(streams.store.as_ref(), path, policy)
            .await?
            .is_none();
        drop(g);
        if done {
            return Ok(sealed);
        }
        sealed += 1;
    }
}

/// One pass over every stream; returns how many segments were sealed. A stream whose
/// compaction fails is logged and skipped (the next pass retries it).
pub async fn compact_all(
    streams: &Streams,
    tier: &ColdTier,
    policy: &CompactionPolicy,
) -> Result<usize, StoreError> {
    let mut sealed = 0;
    let mut after: Option<String> = None;
    loop {
        let page = streams
            .store
            .list_streams("", after.as_deref(), policy.list_page.max(1))
            .await?;
        let Some(last) = page.last().cloned() else {
            return Ok(sealed);
        };
        for path in &page {
            match compact_stream(streams, tier, policy, path).await {
                Ok(n) => sealed += n,
                Err(e) => tracing::warn!(stream = %path, error = %e, "compaction failed"),
            }
        }
        after = Some(last);
    }
}

/// Runs [`compact_all`] every `policy.interval` until `stop` resolves. Stopping mid-pass is
/// safe: at most an orphan object, removed with its stream.
pub async fn run_compactor(
    streams: Streams,
    tier: Arc<ColdTier>,
    policy: CompactionPolicy,
    stop: impl Future<Output = ()>,
) {
    let passes = async {
        loop {
            tokio::time::sleep(policy.interval).await;
            match compact_all(&streams, &tier, &policy).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(segments = n, "compaction pass sealed segments"),
                Err(e) => tracing::warn!(error = %e, "compaction pass failed"),
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = passes => {}
    }
}
