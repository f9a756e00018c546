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
//! On an engine shared by several nodes the per-node lock does not serialize nodes: there a
//! node compacts only while it holds the engine's sealing lease ([`SealLease`], TTL
//! `lease_ms`), so one node at a time seals, and a seal decided on a stale index, or sent by
//! a holder that lost the lease, is refused by the engine (its object is then deleted).
//!
//! Readers take no lock: a seal is one engine transaction (index row + deletion of the hot
//! chunks it covers), and the read path asks the hot log first and the cold tier only for what
//! lies below the first hot chunk, so a reader racing a seal sees the bytes in one place or
//! the other, never neither.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sessiond_segments::{ColdTier, CompactionPolicy, S3Config};
use sessiond_store::{SealLease, StoreError, StreamStore};

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
    /// On an engine shared by several nodes (Redis): how long the sealing lease lasts unless
    /// renewed (milliseconds). The compacting node renews it during its passes; another node
    /// takes over at most this long after it died.
    pub lease_ms: u64,
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
            lease_ms: 30_000,
        }
    }
}

impl ColdConfig {
    /// Checks the values; the message names the key to fix.
    pub fn validate(&self) -> Result<(), sessiond_http::ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.min_segment_bytes == 0
            || self.max_segment_bytes == 0
            || self.interval_s == 0
            || self.lease_ms == 0
        {
            return Err(
                "streams.cold.min_segment_bytes, max_segment_bytes, interval_s and lease_ms must be > 0"
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

    async fn delete_segments(
        &self,
        _path: &str,
        segments: &[sessiond_store::SegmentRef],
    ) -> Result<(), StoreError> {
        for segment in segments {
            self.tier.delete_segment(segment).await?;
        }
        Ok(())
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

/// The sealing lease as the compactor holds it (shared engines).
pub struct SealHold {
    lease: Arc<dyn SealLease>,
    ttl: Duration,
    renewed: Option<Instant>,
}

impl SealHold {
    /// Holds `lease` with TTL `ttl`.
    pub fn new(lease: Arc<dyn SealLease>, ttl: Duration) -> SealHold {
        SealHold {
            lease,
            ttl,
            renewed: None,
        }
    }

    /// True while this node holds the lease: renewed once a third of the TTL passed since the
    /// last renewal (a lost lease stops the pass at the next stream).
    pub async fn held(&mut self) -> Result<bool, StoreError> {
        if self.renewed.is_some_and(|at| at.elapsed() < self.ttl / 3) {
            return Ok(true);
        }
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let token = self.lease.acquire_seal_lease(ttl_ms).await?;
        self.renewed = token.map(|_| Instant::now());
        Ok(token.is_some())
    }
}

/// One pass over every stream; returns how many segments were sealed. A stream whose
/// compaction fails is logged and skipped (the next pass retries it). With `hold` (a shared
/// engine) the pass runs only while this node holds the sealing lease.
pub async fn compact_all(
    streams: &Streams,
    tier: &ColdTier,
    policy: &CompactionPolicy,
    mut hold: Option<&mut SealHold>,
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
            if let Some(hold) = hold.as_deref_mut() {
                if !hold.held().await? {
                    return Ok(sealed);
                }
            }
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
    mut hold: Option<SealHold>,
    stop: impl Future<Output = ()>,
) {
    let passes = async {
        loop {
            tokio::time::sleep(policy.interval).await;
            match compact_all(&streams, &tier, &policy, hold.as_mut()).await {
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
