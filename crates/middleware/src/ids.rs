//! Client, session and event ids: a 48-bit millisecond timestamp and 128 bits from a CSPRNG,
//! base64url without padding (30 characters).
//!
//! Seed A's pushIDs took their "random" part from a linear-congruential generator seeded with
//! the start time (predictable, bug 8). Here the timestamp is only *embedded* so the context
//! can report `clientTime`/`sessionTime`/`eventTime` without storing them; the randomness comes
//! from ChaCha20 keyed per thread with 256 bits from the OS (`getrandom`) and re-keyed from
//! the OS every [`RESEED_AFTER`] ids: a system call per id cost more than the rest of id
//! making, and every decision mints one. Parsing is strict (exact length, exact alphabet), so
//! a cookie can never smuggle an arbitrary string in as an id.

use std::cell::RefCell;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sessiond_store::Millis;

/// Bytes of the embedded timestamp.
const TIME_BYTES: usize = 6;
/// Random bytes (128 bits).
const RANDOM_BYTES: usize = 16;
/// Length of an encoded id.
pub const ID_LEN: usize = 30;
/// Ids a thread's generator makes before it is re-keyed from the OS.
const RESEED_AFTER: u32 = 1 << 16;

/// A thread's generator and how many ids it made since it was keyed.
struct ThreadRng {
    rng: ChaCha20Rng,
    used: u32,
}

thread_local! {
    static RNG: RefCell<Option<ThreadRng>> = const { RefCell::new(None) };
}

fn os_keyed() -> ThreadRng {
    let mut seed = [0u8; 32];
    // The OS CSPRNG failing is unrecoverable for a server that mints identifiers: abort
    // loudly rather than hand out a guessable id.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut seed).expect("OS random number generator unavailable");
    ThreadRng {
        rng: ChaCha20Rng::from_seed(seed),
        used: 0,
    }
}

/// Fills `out` from this thread's CSPRNG.
pub fn fill_random(out: &mut [u8]) {
    RNG.with_borrow_mut(|slot| {
        let state = match slot {
            Some(s) if s.used < RESEED_AFTER => s,
            _ => slot.insert(os_keyed()),
        };
        state.used += 1;
        state.rng.fill_bytes(out);
    });
}

/// A fresh id stamped with `now` (unix ms).
pub fn new_id(now: Millis) -> String {
    let mut bytes = [0u8; TIME_BYTES + RANDOM_BYTES];
    let ms = u64::try_from(now).unwrap_or(0).to_be_bytes();
    bytes[..TIME_BYTES].copy_from_slice(&ms[8 - TIME_BYTES..]);
    fill_random(&mut bytes[TIME_BYTES..]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The timestamp embedded in `id`, or `None` if `id` is not one of ours.
pub fn id_time(id: &str) -> Option<Millis> {
    if id.len() != ID_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
    if bytes.len() != TIME_BYTES + RANDOM_BYTES {
        return None;
    }
    let mut ms = [0u8; 8];
    ms[8 - TIME_BYTES..].copy_from_slice(&bytes[..TIME_BYTES]);
    Millis::try_from(u64::from_be_bytes(ms)).ok()
}

/// Whether `id` is well-formed.
pub fn is_id(id: &str) -> bool {
    id_time(id).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_embed_their_time_and_differ() {
        let now = 1_700_000_000_123;
        let a = new_id(now);
        let b = new_id(now);
        assert_eq!(a.len(), ID_LEN);
        assert_ne!(a, b);
        assert_eq!(id_time(&a), Some(now));
        assert!(is_id(&b));
    }

    #[test]
    fn generators_are_rekeyed_and_never_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(RESEED_AFTER + 10) {
            assert!(seen.insert(new_id(1)), "an id repeated");
        }
        let other = std::thread::spawn(|| new_id(1)).join().expect("thread");
        assert!(seen.insert(other), "two threads made the same id");
    }

    #[test]
    fn foreign_strings_are_not_ids() {
        assert!(!is_id(""));
        assert!(!is_id("-Nabc123456789012345"));
        assert!(!is_id(&"!".repeat(ID_LEN)));
        assert!(!is_id(&format!("{}A", new_id(1))));
    }
}
