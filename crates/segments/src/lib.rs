//! The cold tier of Durable Streams: sealed ranges of a stream as immutable segment files in
//! object storage (a local directory by default, any S3-compatible store by configuration).
//!
//! Why: the engine's hot log is the right place for the tail of a stream (appends group-commit,
//! reads of recent data are range scans), but a stream that grows for months should not keep
//! every byte in the embedded database. Compaction moves the oldest hot range of a stream into
//! one segment object and drops those hot rows; reads below the first hot chunk come from here.
//!
//! - [`indexed`]: the segment file's byte layout (format 2: checksummed frames + an index, read
//!   by range); [`format`]: format 1 (one CRC over the object), still read.
//! - [`compact`]: [`CompactionPolicy`], [`ColdTier::compact_stream`] and the background
//!   [`spawn_compactor`].
//! - `reader`: [`ColdTier::read_frames`], with a small cache of recently used segment indexes;
//!   `ahead`: the next page of a catch-up reader, read while this one is sent; `local`: ranged
//!   reads of a local directory's files without `object_store` in between.
//! - `testing` (feature `testing`): a private `moto_server` for S3 tests.
//!
//! # Durability and crash safety
//!
//! The only link between the engine and an object is the segment index row that
//! `StreamStore::seal_segment` writes, in the same engine transaction that deletes the hot
//! chunks the segment covers. Compaction writes (and, on the local file system, fsyncs: the
//! store is built `with_fsync(true)`) the object **before** it asks the engine to seal, and the
//! seal is `Durability::Confirmed`. So every crash point is safe:
//! before the put, nothing happened; between the put and the seal, the object is an orphan
//! (unreferenced, its bytes still hot in the engine), never a dangling index entry; after the
//! seal, the index and the object are both durable. Orphans are harmless and are removed with
//! the stream: [`ColdTier::delete_all`] deletes everything under the stream's key prefix, not
//! only the indexed objects. A seal that finds the stream gone deletes its own object at once.
//!
//! # Keys
//!
//! `<prefix>streams-h/<base64url(sha256(path))>/<start:020>-<end:020>-<nonce:016x>.seg`: one
//! "directory" per stream (so deleting a stream lists one prefix), named by a fixed-length
//! hash so that any stream name fits one path component (a local file system refuses
//! components over 255 bytes; the name itself may be 1 KiB), zero-padded offsets (so keys sort
//! in stream order), and a random nonce so a recreated stream can never collide with an object
//! of an earlier incarnation of the same path.
//!
//! Earlier versions named the directory `streams/<base64url(path)>`. Nothing needs migrating:
//! reads follow the object key stored in the segment index, and [`ColdTier::delete_all`] also
//! empties the old directory of a stream when its name could have had one.

mod ahead;
pub mod compact;
pub mod format;
pub mod indexed;
mod local;
mod reader;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path as FsPath;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use base64::Engine as _;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sessiond_store::{SegmentRef, StoreError, StreamStore};
use sha2::Digest as _;

pub use compact::{spawn_compactor, CompactionPolicy};
pub use format::Frame;
pub use reader::DEFAULT_READ_CACHE_BYTES;

/// Default directory of the local tier, relative to the server's data directory.
pub const DEFAULT_LOCAL_DIR: &str = "segments";

/// Settings of an S3-compatible store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket name (it must exist).
    pub bucket: String,
    /// Region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Allow plain `http://` endpoints (loopback test servers, a private network).
    pub allow_http: bool,
    /// Key prefix inside the bucket (e.g. `sessiond/`); empty for the bucket root.
    pub prefix: String,
}

/// The cold tier: where sealed segments are written and read.
pub struct ColdTier {
    objects: Arc<dyn ObjectStore>,
    /// The same store when it is a local directory: ranged reads of segments go to the files
    /// directly (`local.rs`).
    local: Option<local::LocalFiles>,
    /// Prepended to every key (empty or ending with `/`).
    prefix: String,
    /// Per stream: the first hot offset compaction last saw, and since when (for `max_age`).
    pub(crate) first_seen: Mutex<std::collections::HashMap<String, (u64, Instant)>>,
    /// Recently decoded segments and, per stream, where its sealed range ends.
    pub(crate) recent: reader::Recent,
    /// The next page of catch-up readers, read while this one is sent (`ahead.rs`).
    pub(crate) ahead: ahead::ReadAhead,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cold tier: {what}: {e}"))
}

impl ColdTier {
    /// A tier in a local directory (created if missing), e.g. `<data dir>/`[`DEFAULT_LOCAL_DIR`].
    /// Writes are fsynced (file and directory entries) before they are reported done.
    pub fn local(dir: &FsPath) -> Result<ColdTier, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(&format!("cannot create {}", dir.display()), e))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| unavailable(&format!("cannot open {}", dir.display()), e))?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        let store = Arc::new(store);
        let mut tier = Self::with_store(store.clone(), "");
        tier.local = Some(local::LocalFiles::new(store));
        Ok(tier)
    }

    /// A tier in an S3-compatible bucket (path-style requests, which every S3-compatible
    /// server accepts).
    pub fn s3(config: &S3Config) -> Result<ColdTier, StoreError> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| unavailable("invalid S3 configuration", e))?;
        Ok(Self::with_store(Arc::new(store), &config.prefix))
    }

    /// A tier on any `object_store` implementation (tests, other clouds).
    pub fn with_store(objects: Arc<dyn ObjectStore>, prefix: &str) -> ColdTier {
        let mut prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        ColdTier {
            objects,
            local: None,
            prefix,
            first_seen: Mutex::new(Default::default()),
            recent: reader::Recent::new(DEFAULT_READ_CACHE_BYTES),
            ahead: ahead::ReadAhead::new(DEFAULT_READ_CACHE_BYTES),
        }
    }

    /// Keeps at most `bytes` of recently decoded segments in memory, and at most as much again
    /// of ranges read ahead for catch-up readers (0: neither). A catch-up reader pages through a
    /// segment in several requests; the cache lets it fetch and verify each segment's index
    /// once instead of once per page, the read-ahead fetches its next page while it receives
    /// this one.
    pub fn with_read_cache_bytes(mut self, bytes: usize) -> ColdTier {
        self.recent = reader::Recent::new(bytes);
        self.ahead = ahead::ReadAhead::new(bytes);
        self
    }

    /// The key "directory" of one stream's segments (fixed length, whatever the name).
    fn stream_dir(&self, path: &str) -> String {
        let hash = sha2::Sha256::digest(path.as_bytes());
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash);
        format!("{}streams-h/{name}", self.prefix)
    }

    /// The directory earlier versions used, when the name fits one path component.
    fn legacy_stream_dir(&self, path: &str) -> Option<String> {
        let name = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(path.as_bytes());
        (name.len() <= 255).then(|| format!("{}streams/{name}", self.prefix))
    }

    /// The objects under `dir`. A directory that is missing or cannot be listed counts as
    /// empty (logged): deleting a stream must not fail forever because of its directory.
    async fn list_dir(&self, dir: &str) -> Vec<String> {
        let listed = match Self::key(dir) {
            Ok(key) => self.objects.list_with_delimiter(Some(&key)).await,
            Err(e) => {
                tracing::warn!(dir, error = %e, "cold tier: cannot name a segment directory");
                return Vec::new();
            }
        };
        match listed {
            Ok(listed) => listed
                .objects
                .into_iter()
                .map(|o| o.location.as_ref().to_owned())
                .collect(),
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => {
                tracing::warn!(dir, error = %e, "cold tier: cannot list a segment directory; treating it as empty");
                Vec::new()
            }
        }
    }

    /// A fresh key for the segment `[start, end)` of `path`.
    pub(crate) fn segment_key(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<String, StoreError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| unavailable("no randomness", e))?;
        Ok(format!(
            "{}/{start:020}-{end:020}-{:016x}.seg",
            self.stream_dir(path),
            u64::from_le_bytes(nonce)
        ))
    }

    fn key(key: &str) -> Result<Path, StoreError> {
        Path::parse(key).map_err(|e| StoreError::Corrupt(format!("bad segment key {key}: {e}")))
    }

    /// Writes a segment object (durable when this returns).
    pub(crate) async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.objects
            .put(&Self::key(key)?, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&format!("writing {key}"), e))
    }

    /// Deletes an object; one that is already gone counts as deleted.
    pub(crate) async fn delete_key(&self, key: &str) -> Result<(), StoreError> {
        match self.objects.delete(&Self::key(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(&format!("deleting {key}"), e)),
        }
    }

    /// Deletes the object of one segment that retention dropped from the index.
    pub async fn delete_segment(&self, segment: &SegmentRef) -> Result<(), StoreError> {
        self.delete_key(&segment.object_key).await
    }

    /// Deletes every segment object of `path`: the indexed ones and any orphan left by a crash
    /// between a segment's write and its seal. Call it before `StreamStore::delete_stream`.
    pub async fn delete_all(&self, store: &dyn StreamStore, path: &str) -> Result<(), StoreError> {
        for segment in store.segments(path).await? {
            self.delete_key(&segment.object_key).await?;
        }
        let dirs = std::iter::once(self.stream_dir(path)).chain(self.legacy_stream_dir(path));
        for dir in dirs {
            for key in self.list_dir(&dir).await {
                self.delete_key(&key).await?;
            }
        }
        self.first_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(path);
        self.recent.forget_stream(path, &self.stream_dir(path));
        self.ahead.forget_stream(path);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sessiond_store::memory::MemoryEngine;

    #[tokio::test]
    async fn delete_all_empties_the_hashed_and_the_legacy_directory() {
        let tier = ColdTier::with_store(Arc::new(object_store::memory::InMemory::new()), "p");
        let store = MemoryEngine::new();
        let name = "tenant/a stream";
        let legacy = tier.legacy_stream_dir(name).unwrap();
        assert!(legacy.starts_with("p/streams/"));
        let hashed = tier.segment_key(name, 0, 3).unwrap();
        assert!(hashed.starts_with("p/streams-h/"));
        for key in [format!("{legacy}/old.seg"), hashed.clone()] {
            tier.put(&key, b"abc".to_vec()).await.unwrap();
        }
        assert_eq!(tier.list_dir(&legacy).await.len(), 1);
        // Another stream's objects stay.
        let other = tier.segment_key("tenant/b", 0, 3).unwrap();
        tier.put(&other, b"abc".to_vec()).await.unwrap();
        tier.delete_all(&store, name).await.unwrap();
        assert!(tier.list_dir(&legacy).await.is_empty());
        assert!(tier.list_dir(&tier.stream_dir(name)).await.is_empty());
        assert_eq!(
            tier.list_dir(&tier.stream_dir("tenant/b")).await,
            vec![other]
        );
        // The longest names have a short directory, and no legacy one.
        let long = "x".repeat(1024);
        assert!(tier.stream_dir(&long).len() < 64);
        assert_eq!(tier.legacy_stream_dir(&long), None);
    }
}
