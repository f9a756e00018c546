//! The erasure list: which users were erased (`DELETE /v1/users/{u}`), as hashed ids.
//!
//! Erasure deletes a user's data everywhere, but a backup taken before it still holds the
//! data. The list is what lets the server (and `sessiond restore`) erase that user again
//! without keeping the id itself: an entry is `base64url(sha256(user_id))` without padding
//! (the same name the user's security stream uses), so the list proves nothing about who
//! was erased to someone without a candidate id, yet any restored record keyed by that id can
//! be found by hashing its key.

use async_trait::async_trait;

use crate::{Millis, Result};

/// The erasure list of one engine.
#[async_trait]
pub trait ErasureStore: Send + Sync {
    /// Records that the user whose hashed id is `user_hash` was erased at `at`. Idempotent:
    /// recording an entry again keeps the first time.
    async fn record_erasure(&self, user_hash: &str, at: Millis) -> Result<()>;

    /// Every entry as `(user hash, erased at)`, oldest first.
    async fn erasures(&self) -> Result<Vec<(String, Millis)>>;
}

/// The list's name for `user_id`: `base64url(sha256(user_id))`, no padding.
pub fn erasure_hash(user_id: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(user_id))
}
