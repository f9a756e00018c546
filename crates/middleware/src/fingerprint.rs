//! The fingerprint of a request: a keyed hash of the headers seed A used.
//!
//! Seed A hashed IP, user agent, languages, encodings, TLS cipher, HTTP protocol and colo with
//! a non-cryptographic mix anyone could recompute. Here it is HMAC-SHA-256 under a server
//! secret, so an fpID reveals nothing without the key and cannot be forged. It is still
//! personal data (it is derived from the IP address): it is optional, and it never decides
//! identity. A cookieless request always gets a fresh cID (seed A bug 6 handed the cID of the
//! first visitor behind a NAT to everyone after them); the fingerprint only describes the
//! request (`fpID`, `isNewFpID`) and names the bootstrap object (`doID`).
//!
//! Fields are length-prefixed before hashing, so no two field lists hash the same input. The
//! HMAC is `sessiond_http::signing`'s, like every other MAC of the server.

use sessiond_http::signing::{self, Key};

use crate::input::DecisionInput;

/// Bytes of the hash kept (128 bits, 22 characters).
const FP_BYTES: usize = 16;

/// Computes fingerprints under one secret.
#[derive(Clone, Debug)]
pub struct Fingerprinter {
    key: Key,
}

/// A request's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash of all seven fields (changes with the region).
    pub fp_id: String,
    /// Hash of the six fields without the region: the bootstrap object's name.
    pub stable_key: String,
}

impl Fingerprinter {
    /// A fingerprinter keyed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Fingerprinter {
            key: Key::new(secret),
        }
    }

    fn hash(&self, fields: &[&Option<String>]) -> String {
        let values: Vec<&str> = fields.iter().map(|f| f.as_deref().unwrap_or("")).collect();
        let lengths: Vec<[u8; 8]> = values
            .iter()
            .map(|v| (v.len() as u64).to_be_bytes())
            .collect();
        let parts: Vec<&[u8]> = lengths
            .iter()
            .zip(&values)
            .flat_map(|(len, value)| [&len[..], value.as_bytes()])
            .collect();
        signing::encode(&self.key.mac(&parts)[..FP_BYTES])
    }

    /// The six fields of the stable key, and the region (the seventh field of the fpID).
    fn fields(input: &DecisionInput) -> [&Option<String>; 7] {
        [
            &input.ip,
            &input.user_agent,
            &input.accept_language,
            &input.accept_encoding,
            &input.tls_cipher,
            &input.http_protocol,
            &input.region,
        ]
    }

    /// The fpID of `input` (every request needs it: it is part of the answer).
    pub fn fp_id(&self, input: &DecisionInput) -> String {
        self.hash(&Self::fields(input))
    }

    /// The stable key of `input` (only a request without a client needs it: its `doID`).
    pub fn stable_key(&self, input: &DecisionInput) -> String {
        self.hash(&Self::fields(input)[..6])
    }

    /// The fingerprint of `input`.
    pub fn fingerprint(&self, input: &DecisionInput) -> Fingerprint {
        Fingerprint {
            fp_id: self.fp_id(input),
            stable_key: self.stable_key(input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_stable_and_region_sensitive() {
        let a = Fingerprinter::new(b"secret-a");
        let input = DecisionInput {
            ip: Some("192.0.2.1".into()),
            user_agent: Some("ua".into()),
            ..DecisionInput::default()
        };
        let fp = a.fingerprint(&input);
        assert_eq!(fp, a.fingerprint(&input.clone()));
        assert_eq!(fp.fp_id.len(), 22);
        let elsewhere = DecisionInput {
            region: Some("fra".into()),
            ..input.clone()
        };
        let moved = a.fingerprint(&elsewhere);
        assert_ne!(moved.fp_id, fp.fp_id);
        assert_eq!(moved.stable_key, fp.stable_key);
        assert_ne!(Fingerprinter::new(b"secret-b").fingerprint(&input), fp);
        // Length prefixes: moving text between fields changes the hash.
        let shifted = DecisionInput {
            ip: Some("192.0.2.1u".into()),
            user_agent: Some("a".into()),
            ..DecisionInput::default()
        };
        assert_ne!(a.fingerprint(&shifted).stable_key, fp.stable_key);
    }

    /// Fingerprints computed before the hashing moved to `sessiond_http::signing` (pinned
    /// from the old code): a doID or fpID stays the same across an upgrade.
    #[test]
    fn pinned_vectors() {
        let input = DecisionInput {
            ip: Some("192.0.2.1".into()),
            user_agent: Some("ua".into()),
            accept_language: Some("en".into()),
            region: Some("fra".into()),
            ..DecisionInput::default()
        };
        let fp = Fingerprinter::new(&[7u8; 32]).fingerprint(&input);
        assert_eq!(fp.fp_id, "idd95FrGusFyY_ecOds5BA");
        assert_eq!(fp.stable_key, "T28WCLQqmjiC2epHSYe90g");
    }
}
