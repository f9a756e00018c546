//! Signed cookie values: `<payload>.<issued ms>.<HMAC-SHA-256, base64url>`.
//!
//! Seed A trusted raw, partly JS-writable cookies (bug 7): anyone could claim any cID or set a
//! future eID so a session never expired. Every value the session middleware issues is signed
//! here:
//! - the MAC covers a label (the logical cookie, e.g. `cID`), the payload and the issue time, so
//!   a value cannot be moved to another cookie or re-dated;
//! - several keys verify, the first signs ([`Keys`]: rotation, constant-time comparison);
//! - a value issued in the future (beyond a small clock skew) is refused, so a leaked key
//!   cannot mint eternally fresh cookies ahead of time unnoticed;
//! - a value older than its lifetime is refused too: the browser dropped it at `Expires`, so
//!   whoever still presents it copied it (a years-old cookie must not open a socket). Live
//!   clients never get there: their cookies are re-issued at half their lifetime.
//!
//! Callers put whatever a value must stay bound to into the label (the middleware's cookie
//! codec adds the app prefix, and the cID for sID and eID), so a value cannot be replayed
//! under another app's prefix or next to another browser's cID.
//!
//! A value that fails any check is simply absent to the caller: never an error, never trusted.

use sessiond_store::Millis;

use super::{decode, encode, Keys};

/// Clock skew tolerated between the issuer and the verifier (ms).
pub const MAX_SKEW_MS: Millis = 60_000;
/// Bytes of the encoded tag (the full 256-bit MAC).
const TAG_LEN: usize = 43;

/// A value that passed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The payload as signed.
    pub payload: String,
    /// When it was issued (unix ms).
    pub issued: Millis,
}

/// Signs with the first key and verifies with any.
#[derive(Clone, Debug)]
pub struct Signer {
    keys: Keys,
}

/// What the MAC of a stamped value covers: label, payload and issue time (big-endian ms),
/// the first two terminated by a NUL byte.
fn covered<'a>(label: &'a str, payload: &'a str, issued: &'a [u8; 8]) -> [&'a [u8]; 5] {
    [label.as_bytes(), b"\0", payload.as_bytes(), b"\0", issued]
}

impl Signer {
    /// A signer over `keys` (first signs; empty ones are skipped). With no key, a random one
    /// is drawn: the cookies it signs are worthless after a restart, which is what an
    /// unconfigured development server should do.
    pub fn new<K: AsRef<[u8]>>(keys: &[K]) -> Signer {
        Signer {
            keys: Keys::new(keys).unwrap_or_else(Keys::random),
        }
    }

    /// A keyed hash of `label` under the signing key (for deriving other secrets).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        self.keys
            .sign(&covered("derive", label, &0i64.to_be_bytes()))
    }

    /// Signs `payload` (which must not contain `.`) for the cookie `label`, issued at `issued`.
    pub fn sign(&self, label: &str, payload: &str, issued: Millis) -> String {
        let tag = self
            .keys
            .sign(&covered(label, payload, &issued.to_be_bytes()));
        format!("{payload}.{issued}.{}", encode(tag))
    }

    /// The payload of `value` if it is a well-formed, untampered value for `label` issued no
    /// later than `now` (plus skew) and no earlier than `max_age_ms` before it, under any key.
    pub fn verify(
        &self,
        label: &str,
        value: &str,
        now: Millis,
        max_age_ms: Millis,
    ) -> Option<Verified> {
        let (rest, tag) = value.rsplit_once('.')?;
        let (payload, issued) = rest.rsplit_once('.')?;
        if tag.len() != TAG_LEN || issued.is_empty() || issued.len() > 15 {
            return None;
        }
        if !issued.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let issued: Millis = issued.parse().ok()?;
        let tag = decode(tag)?;
        if !self
            .keys
            .verify(&covered(label, payload, &issued.to_be_bytes()), &tag)
            || issued > now.saturating_add(MAX_SKEW_MS)
            || now.saturating_sub(issued) > max_age_ms
        {
            return None;
        }
        Some(Verified {
            payload: payload.to_string(),
            issued,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;
    /// A lifetime long enough not to matter in the tests that are not about it.
    const AGE: Millis = Millis::MAX;

    #[test]
    fn round_trip_and_tampering() {
        let s = Signer::new(&["k".repeat(32)]);
        let v = s.sign("cID", "abc", NOW);
        let ok = s.verify("cID", &v, NOW, AGE).expect("valid");
        assert_eq!(ok.payload, "abc");
        assert_eq!(ok.issued, NOW);
        assert!(s.verify("sID", &v, NOW, AGE).is_none(), "label is bound");
        assert!(s
            .verify("cID", &v.replacen("abc", "abd", 1), NOW, AGE)
            .is_none());
        let redated = v.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert!(s.verify("cID", &redated, NOW, AGE).is_none());
        assert!(s.verify("cID", "abc", NOW, AGE).is_none(), "unsigned");
        assert!(s.verify("cID", "", NOW, AGE).is_none());
    }

    #[test]
    fn future_dated_values_are_refused() {
        let s = Signer::new(&["k".repeat(32)]);
        let v = s.sign("cID", "abc", NOW + MAX_SKEW_MS + 1);
        assert!(s.verify("cID", &v, NOW, AGE).is_none());
        assert!(s.verify("cID", &v, NOW + 2 * MAX_SKEW_MS, AGE).is_some());
    }

    #[test]
    fn values_older_than_their_lifetime_are_refused() {
        let s = Signer::new(&["k".repeat(32)]);
        let v = s.sign("cID", "abc", NOW);
        assert!(s.verify("cID", &v, NOW + 1000, 1000).is_some());
        assert!(s.verify("cID", &v, NOW + 1001, 1000).is_none());
    }

    #[test]
    fn rotation_first_signs_all_verify() {
        let old = Signer::new(&["o".repeat(32)]);
        let rotated = Signer::new(&["n".repeat(32), "o".repeat(32)]);
        let new_only = Signer::new(&["n".repeat(32)]);
        let by_old = old.sign("cID", "x", NOW);
        assert!(rotated.verify("cID", &by_old, NOW, AGE).is_some());
        assert!(new_only.verify("cID", &by_old, NOW, AGE).is_none());
        let by_rotated = rotated.sign("cID", "x", NOW);
        assert!(new_only.verify("cID", &by_rotated, NOW, AGE).is_some());
        assert!(old.verify("cID", &by_rotated, NOW, AGE).is_none());
    }

    /// Values signed before the signing code moved to `sessiond_http::signing` (pinned from
    /// the old code): cookies in browsers must keep verifying after an upgrade.
    #[test]
    fn pinned_vectors() {
        let s = Signer::new(&["k".repeat(32)]);
        assert_eq!(
            s.sign("_ss_\0cID", "abc", NOW),
            "abc.1700000000000.deUwq-Hfn-IO_CaTnjVljQ0j9nI3xIzR1X0O9AUwaRA"
        );
        let rotated = Signer::new(&["n".repeat(32), "k".repeat(32)]);
        let ok = rotated
            .verify(
                "_ss_\0cID",
                "abc.1700000000000.deUwq-Hfn-IO_CaTnjVljQ0j9nI3xIzR1X0O9AUwaRA",
                NOW,
                AGE,
            )
            .expect("valid");
        assert_eq!((ok.payload.as_str(), ok.issued), ("abc", NOW));
        let derived: String = s
            .derive("fingerprint")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            derived,
            "bf7d0d331bceec529c3f3e18d3597094c4073f46477fbf84c37561f37b6bd721"
        );
    }
}
