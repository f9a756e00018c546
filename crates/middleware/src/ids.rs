//! Client, session and event ids: a 48-bit millisecond timestamp and 128 bits from the OS
//! CSPRNG, base64url without padding (30 characters).
//!
//! Seed A's pushIDs took their "random" part from a linear-congruential generator seeded with
//! the start time (predictable, bug 8). Here the timestamp is only *embedded* so the context
//! can report `clientTime`/`sessionTime`/`eventTime` without storing them; the randomness comes
//! from `getrandom` alone. Parsing is strict (exact length, exact alphabet), so a cookie can
//! never smuggle an arbitrary string in as an id.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sessiond_store::Millis;

/// Bytes of the embedded timestamp.
const TIME_BYTES: usize = 6;
/// Random bytes (128 bits).
const RANDOM_BYTES: usize = 16;
/// Length of an encoded id.
pub const ID_LEN: usize = 30;

/// A fresh id stamped with `now` (unix ms).
pub fn new_id(now: Millis) -> String {
    let mut bytes = [0u8; TIME_BYTES + RANDOM_BYTES];
    let ms = u64::try_from(now).unwrap_or(0).to_be_bytes();
    bytes[..TIME_BYTES].copy_from_slice(&ms[8 - TIME_BYTES..]);
    // The OS CSPRNG failing is unrecoverable for a server that mints identifiers: abort
    // loudly rather than hand out a guessable id.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes[TIME_BYTES..]).expect("OS random number generator unavailable");
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
    fn foreign_strings_are_not_ids() {
        assert!(!is_id(""));
        assert!(!is_id("-Nabc123456789012345"));
        assert!(!is_id(&"!".repeat(ID_LEN)));
        assert!(!is_id(&format!("{}A", new_id(1))));
    }
}
