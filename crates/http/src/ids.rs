//! Identifiers handed to clients: 144 random bits from the OS CSPRNG, base64url (24 chars).
//!
//! 144 bits keeps ids unguessable (≥ 128 bits as OWASP asks) and encodes without padding.

use base64::Engine as _;

/// A fresh random id: 18 bytes from the OS CSPRNG, URL-safe base64 without padding.
pub fn random_id() -> String {
    let mut bytes = [0u8; 18];
    // The OS CSPRNG failing is unrecoverable for a server that mints secrets: abort loudly
    // rather than hand out a weak id.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("OS random number generator unavailable");
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
}
