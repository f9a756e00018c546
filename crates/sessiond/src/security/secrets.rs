//! Per-user secrets: the keys of the global stream's `user_ref`.
//!
//! One random 256-bit secret per user, created on first use and kept as object state (never
//! served over HTTP). Creation is a compare-and-set on "absent", so two nodes racing for the
//! same user agree on one secret. Erasure deletes it: the `user_ref`s already in the global
//! stream then point at nobody.
//!
//! The `user_ref`s are cached in each process, so an erasure through one node must also empty
//! the cache of the node that relays (on a shared engine it is whichever holds the relay
//! lease): every erasure rewrites a shared erasure mark after deleting the secret, and
//! [`Secrets::revalidate`], called by the relay after it read a batch and before it looks up
//! that batch's refs, empties the cache when the mark moved. A batch that holds an event
//! queued after an erasure returned was read after that mark was written, so it never gets the
//! erased user's old ref.

use std::sync::{Arc, Mutex, PoisonError};

use sessiond_http::signing::{self, Key};
use sessiond_sessions::security::user_hash;
use sessiond_store::{Durability, ObjectStore, Result};

use super::recent::Recent;

/// Object kind of the secrets (key: the user's hash).
const KIND: &str = "security-secret";
/// Object kind (and only key) of the erasure mark (see the module docs).
const ERASURES: (&str, &str) = ("security-erasures", "mark");
/// `user_ref`s kept in memory: between this many and twice as many users, the most recently
/// relayed (a user whose events come at least once per this many other users' is always
/// held; a hit costs no hash, no HMAC and no engine read).
const CACHED: usize = 16_384;

/// The secrets, and the `user_ref`s they gave, cached. Cheap to clone.
#[derive(Clone)]
pub struct Secrets {
    objects: Arc<dyn ObjectStore>,
    /// user id → `user_ref`, valid while the erasure mark is `seen`.
    cache: Arc<Mutex<Recent<String, String>>>,
    /// The erasure mark the cache was last checked against (`None`: not read yet).
    seen: Arc<Mutex<Option<Option<Vec<u8>>>>>,
}

impl Secrets {
    /// Secrets kept in `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Secrets {
            objects,
            cache: Arc::new(Mutex::new(Recent::new(CACHED))),
            seen: Arc::new(Mutex::new(None)),
        }
    }

    /// Empties the cache if a user was erased (through any node) since the last call: one
    /// engine read.
    pub async fn revalidate(&self) -> Result<()> {
        let mark = self.objects.load_object(ERASURES.0, ERASURES.1).await?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.as_ref() != Some(&mark) {
            if seen.is_some() {
                *self.cached() = Recent::new(CACHED);
            }
            *seen = Some(mark);
        }
        Ok(())
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Recent<String, String>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `user_ref` of `user_id` if it is in memory (no engine call).
    pub fn cached_user_ref(&self, user_id: &str) -> Option<String> {
        self.cached().get(user_id).cloned()
    }

    /// `user_ref` of `user_id`: base64url(HMAC-SHA256(secret, user_id)), no padding.
    pub async fn user_ref(&self, user_id: &str) -> Result<String> {
        if let Some(user_ref) = self.cached_user_ref(user_id) {
            return Ok(user_ref);
        }
        let secret = self.secret(user_id).await?;
        let user_ref = signing::encode(Key::new(&secret).mac(&[user_id.as_bytes()]));
        self.cached().insert(user_id.to_owned(), user_ref.clone());
        Ok(user_ref)
    }

    async fn secret(&self, user_id: &str) -> Result<Vec<u8>> {
        let key = user_hash(user_id);
        loop {
            if let Some(secret) = self.objects.load_object(KIND, &key).await? {
                return Ok(secret);
            }
            let mut fresh = vec![0u8; 32];
            getrandom_fill(&mut fresh);
            if self
                .objects
                // Unconfirmed: committed before any append that uses it (one writer, commits
                // in order), so no event outlives its secret in a crash.
                .swap_object(KIND, &key, None, Some(&fresh), Durability::Unconfirmed)
                .await?
            {
                return Ok(fresh);
            }
        }
    }

    /// Deletes the secret of `user_id`.
    pub async fn forget(&self, user_id: &str) -> Result<()> {
        self.cached().remove(user_id);
        self.objects
            .delete_object(KIND, &user_hash(user_id), Durability::Confirmed)
            .await?;
        let mark = sessiond_http::ids::random_id();
        self.objects
            .save_object(
                ERASURES.0,
                ERASURES.1,
                mark.as_bytes(),
                Durability::Confirmed,
            )
            .await?;
        Ok(())
    }
}

pub(super) fn getrandom_fill(bytes: &mut [u8]) {
    // Without the OS CSPRNG no secret is safe to mint: abort loudly (as for every id).
    #[allow(clippy::expect_used)]
    getrandom::fill(bytes).expect("OS random number generator unavailable");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `user_ref` computed before the hashing moved to `sessiond_http::signing` (pinned from
    /// the old code): references already in the global stream keep naming their user.
    #[tokio::test]
    async fn pinned_user_ref() {
        let objects: Arc<dyn ObjectStore> = Arc::new(sessiond_store::memory::MemoryEngine::new());
        let key = user_hash("alice");
        let stored = objects
            .swap_object(KIND, &key, None, Some(&[9u8; 32]), Durability::Confirmed)
            .await
            .expect("store");
        assert!(stored);
        let secrets = Secrets::new(objects);
        assert_eq!(
            secrets.user_ref("alice").await.expect("ref"),
            "j5N_UOKeDpowZ0dplHqnkXGkeqR1f_6dt_B3lH7johk"
        );
    }
}
