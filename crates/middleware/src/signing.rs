//! Signed cookie values: `<payload>.<issued ms>.<HMAC-SHA-256, base64url>`.
//!
//! Seed A trusted raw, partly JS-writable cookies (bug 7): anyone could claim any cID or set a
//! future eID so a session never expired. Every value sessiond issues is signed here:
//! - the MAC covers a label (the logical cookie, e.g. `cID`), the payload and the issue time, so
//!   a value cannot be moved to another cookie or re-dated;
//! - several keys verify, the first signs (rotation: prepend the new key, drop the old one
//!   once every cookie it signed has been re-issued or expired);
//! - tags are compared in constant time (`subtle`);
//! - a value issued in the future (beyond a small clock skew) is refused, so a leaked key
//!   cannot mint eternally fresh cookies ahead of time unnoticed;
//! - a value older than its lifetime is refused too: the browser dropped it at `Expires`, so
//!   whoever still presents it copied it (a years-old cookie must not open a socket). Live
//!   clients never get there: their cookies are re-issued at half their lifetime.
//!
//! Callers put whatever a value must stay bound to into the label (the cookie codec adds the
//! app prefix, and the cID for sID and eID), so a value cannot be replayed under another
//! app's prefix or next to another browser's cID.
//!
//! A value that fails any check is simply absent to the caller: never an error, never trusted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sessiond_store::Millis;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

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
#[derive(Clone)]
pub struct Signer {
    keys: Vec<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// A signer over `keys` (first signs). With no key, a random one is drawn: the cookies it
    /// signs are worthless after a restart, which is what an unconfigured development server
    /// should do.
    pub fn new<K: AsRef<[u8]>>(keys: &[K]) -> Signer {
        let mut macs: Vec<HmacSha256> = keys
            .iter()
            .filter_map(|k| HmacSha256::new_from_slice(k.as_ref()).ok())
            .collect();
        if macs.is_empty() {
            let mut key = [0u8; 32];
            #[allow(clippy::expect_used)]
            getrandom::fill(&mut key).expect("OS random number generator unavailable");
            #[allow(clippy::expect_used)]
            macs.push(HmacSha256::new_from_slice(&key).expect("HMAC accepts any key length"));
        }
        Signer { keys: macs }
    }

    fn tag(mac: &HmacSha256, label: &str, payload: &str, issued: Millis) -> [u8; 32] {
        let mut mac = mac.clone();
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(payload.as_bytes());
        mac.update(b"\0");
        mac.update(&issued.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A keyed hash of `data` under the signing key (for deriving other secrets).
    pub fn derive(&self, label: &str) -> [u8; 32] {
        Self::tag(&self.keys[0], "derive", label, 0)
    }

    /// Signs `payload` (which must not contain `.`) for the cookie `label`, issued at `issued`.
    pub fn sign(&self, label: &str, payload: &str, issued: Millis) -> String {
        let tag = Self::tag(&self.keys[0], label, payload, issued);
        format!("{payload}.{issued}.{}", URL_SAFE_NO_PAD.encode(tag))
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
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mut ok = subtle::Choice::from(0u8);
        for key in &self.keys {
            ok |= Self::tag(key, label, payload, issued).ct_eq(&tag);
        }
        if !bool::from(ok)
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
