//! Per-user secrets: the keys of the global stream's `user_ref`.
//!
//! One random 256-bit secret per user, created on first use and kept as object state (never
//! served over HTTP). Creation is a compare-and-set on "absent", so two nodes racing for the
//! same user agree on one secret; on SQLite the route creates it in the transaction of the
//! user's first routed event ([`Secrets::remember_in`]). Erasure deletes it: the `user_ref`s
//! already in the global stream then point at nobody.
//!
//! The `user_ref`s are cached in each process, so an erasure through one node must also empty
//! the cache of the node that relays (on a shared engine it is whichever holds the relay
//! lease): every erasure rewrites a shared erasure mark after deleting the secret, and
//! [`Secrets::revalidate`], called by the relay after it read a batch and before it looks up
//! that batch's refs, empties the cache when the mark moved. A batch that holds an event
//! queued after an erasure returned was read after that mark was written, so it never gets the
//! erased user's old ref. In the erasing process, a ref read from the secret while it was
//! being deleted (by a relay pass, or a routed event's transaction) is not remembered after
//! the erasure: the cache counts erasures, and a ref is remembered only if none came since its
//! secret was read.

use std::sync::{Arc, Mutex, PoisonError};

use sessiond_http::signing::{self, Key};
use sessiond_sessions::security::user_hash;
use sessiond_store::{Durability, ObjectStore, Result, RouteObjects};

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
    cache: Arc<Mutex<Cache>>,
    /// The erasure mark the cache was last checked against (`None`: not read yet).
    seen: Arc<Mutex<Option<Option<Vec<u8>>>>>,
}

/// user id → `user_ref`, valid while the erasure mark is `seen`.
struct Cache {
    refs: Recent<String, String>,
    /// Moves whenever refs are forgotten for an erasure: a ref read from a secret before
    /// that is not remembered after it (see [`Secrets::remember_in`]).
    erasures: u64,
}

impl Cache {
    fn new() -> Self {
        Cache {
            refs: Recent::new(CACHED),
            erasures: 0,
        }
    }

    fn clear(&mut self) {
        self.refs = Recent::new(CACHED);
        self.erasures = self.erasures.wrapping_add(1);
    }

    /// Forgets `user_id`'s ref for its erasure: refs read before are not remembered after.
    fn erase(&mut self, user_id: &str) {
        self.refs.remove(user_id);
        self.erasures = self.erasures.wrapping_add(1);
    }

    /// Remembers a ref read when the erasure count was `erasures`, unless an erasure came
    /// since.
    fn remember(&mut self, erasures: u64, user_id: String, user_ref: String) {
        if self.erasures == erasures {
            self.refs.insert(user_id, user_ref);
        }
    }
}

impl Secrets {
    /// Secrets kept in `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>) -> Self {
        Secrets {
            objects,
            cache: Arc::new(Mutex::new(Cache::new())),
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
                self.cached().clear();
            }
            *seen = Some(mark);
        }
        Ok(())
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `user_ref` of `user_id` if it is in memory (no engine call).
    pub fn cached_user_ref(&self, user_id: &str) -> Option<String> {
        self.cached().refs.get(user_id).cloned()
    }

    /// Reads or creates the secret of `user_id` inside the transaction of the event that
    /// needs it (the route, `route.rs`), unless its `user_ref` is in memory, and gives what
    /// remembers the `user_ref` once that transaction committed. Why: the relay then finds the
    /// ref in memory, and a new user's secret commits with the user's first event instead of
    /// costing the relay a read and a write command of its own. Why not remembered at once:
    /// the transaction may still roll back, and the secret with it. Why the erasure count: a
    /// secret read before an erasure deleted it must not be remembered after the erasure
    /// emptied the cache.
    ///
    /// `hash` is `user_hash(user_id)` (the route has it from the user's stream name).
    pub(super) fn remember_in(
        &self,
        user_id: &str,
        hash: &str,
        objects: &mut dyn RouteObjects,
    ) -> Result<Option<Remember>> {
        let erasures = {
            let mut cache = self.cached();
            if cache.refs.get(user_id).is_some() {
                return Ok(None);
            }
            cache.erasures
        };
        // Created first: a user missing from the cache is most often a new one, whose secret
        // is one statement then (a returning one's is two).
        let fresh = fresh_secret();
        let secret = match objects.create(KIND, hash, &fresh)? {
            true => fresh,
            false => objects.load(KIND, hash)?.ok_or_else(|| {
                // Nothing else writes between the two (one transaction).
                sessiond_store::StoreError::Corrupt(
                    "a user secret vanished in its transaction".into(),
                )
            })?,
        };
        // The ref itself (an HMAC) is computed once committed, by `Remember::keep`: not on
        // the writer thread, which every change waits for.
        Ok(Some(Remember {
            secrets: self.clone(),
            user_id: user_id.to_owned(),
            secret,
            erasures,
        }))
    }

    /// `user_ref` of `user_id`: base64url(HMAC-SHA256(secret, user_id)), no padding.
    pub async fn user_ref(&self, user_id: &str) -> Result<String> {
        if let Some(user_ref) = self.cached_user_ref(user_id) {
            return Ok(user_ref);
        }
        let erasures = self.cached().erasures;
        let secret = self.secret(user_id).await?;
        let user_ref = mac(&secret, user_id);
        self.cached()
            .remember(erasures, user_id.to_owned(), user_ref.clone());
        Ok(user_ref)
    }

    async fn secret(&self, user_id: &str) -> Result<Vec<u8>> {
        let key = user_hash(user_id);
        loop {
            if let Some(secret) = self.objects.load_object(KIND, &key).await? {
                return Ok(secret);
            }
            let fresh = fresh_secret();
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
        self.cached().refs.remove(user_id);
        self.objects
            .delete_object(KIND, &user_hash(user_id), Durability::Confirmed)
            .await?;
        // Again once the secret is gone: a ref read from it meanwhile (by a relay pass or a
        // routed event's transaction) may have been remembered, and from now on none is.
        self.cached().erase(user_id);
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

/// A `user_ref` read in a transaction, to remember once it committed
/// ([`Secrets::remember_in`]).
pub(super) struct Remember {
    secrets: Secrets,
    user_id: String,
    /// The user's secret as the transaction read or created it.
    secret: Vec<u8>,
    /// The cache's erasure count when the secret was read.
    erasures: u64,
}

impl Remember {
    /// Caches the ref, unless an erasure came since its secret was read.
    pub(super) fn keep(self) {
        let user_ref = mac(&self.secret, &self.user_id);
        self.secrets
            .cached()
            .remember(self.erasures, self.user_id, user_ref);
    }
}

/// base64url(HMAC-SHA256(secret, user_id)), no padding.
fn mac(secret: &[u8], user_id: &str) -> String {
    signing::encode(Key::new(secret).mac(&[user_id.as_bytes()]))
}

fn fresh_secret() -> Vec<u8> {
    let mut fresh = vec![0u8; 32];
    getrandom_fill(&mut fresh);
    fresh
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
