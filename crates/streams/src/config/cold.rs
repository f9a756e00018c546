//! `[streams.cold]`: where sealed segments go and when ranges are sealed.
//!
//! Plain settings beside the rest of `[streams]`, so the service can hold one config without
//! importing the tier that runs them ([`crate::tier`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sessiond_segments::{ColdTier, CompactionPolicy, S3Config};
use sessiond_store::StoreError;

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
    /// through a segment fetches and verifies it once, and as much again of ranges read ahead
    /// for catch-up readers (their next page); 0 = neither.
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
