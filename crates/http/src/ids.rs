//! Identifiers handed to clients: 144 random bits from the OS CSPRNG, base64url (24 chars).
//!
//! 144 bits keeps ids unguessable (≥ 128 bits as OWASP asks) and encodes without padding.
//!
//! Ids minted on every request (request ids) come from [`frequent_id`]: a per-thread ChaCha20
//! stream seeded from the OS CSPRNG, because one `getrandom` system call per request was a
//! visible share of a small request's CPU (docs/benchmarks.md). Everything else asks the OS
//! each time.

use std::cell::RefCell;

use base64::Engine as _;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;

/// A fresh random id: 18 bytes from the OS CSPRNG, URL-safe base64 without padding.
pub fn random_id() -> String {
    let mut bytes = [0u8; 18];
    // The OS CSPRNG failing is unrecoverable for a server that mints secrets: abort loudly
    // rather than hand out a weak id.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("OS random number generator unavailable");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

thread_local! {
    static STREAM: RefCell<Option<ChaCha20Rng>> = const { RefCell::new(None) };
}

/// A fresh random id like [`random_id`] (144 bits, 24 URL-safe characters), from this
/// thread's ChaCha20 stream (a CSPRNG seeded from the OS one the first time a thread asks).
pub fn frequent_id() -> String {
    let mut bytes = [0u8; 18];
    STREAM.with(|stream| {
        let mut stream = stream.borrow_mut();
        let rng = stream.get_or_insert_with(|| {
            let mut seed = [0u8; 32];
            // As in `random_id`: no weak fallback when the OS generator is unavailable.
            #[allow(clippy::expect_used)]
            getrandom::fill(&mut seed).expect("OS random number generator unavailable");
            ChaCha20Rng::from_seed(seed)
        });
        rng.fill_bytes(&mut bytes);
    });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_url_safe_and_distinct() {
        let a = super::random_id();
        let b = super::random_id();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn frequent_ids_are_url_safe_distinct_and_differ_between_threads() {
        let a = super::frequent_id();
        let b = super::frequent_id();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        // Each thread seeds its own stream from the OS: no two threads repeat each other.
        let other = std::thread::spawn(super::frequent_id)
            .join()
            .expect("thread");
        assert_ne!(other, a);
        assert_ne!(other, b);
    }
}
