//! Every HMAC-SHA-256 sessiond computes: keys and their rotation, constant-time checks, the
//! base64url text of MACs, and the signed formats built on them.
//!
//! Five places used to key their own HMAC, each with its own idea of rotation and comparison
//! (and of what an empty key means). They now share one implementation, so a fix or a
//! review of "how does sessiond sign" happens here once:
//!
//! - [`Key`]: one keyed HMAC state (keying costs two hash blocks, so it is done once and the
//!   state cloned per MAC).
//! - [`Keys`]: several keys, the first signs and every one verifies. Keys rotate without a flag
//!   day: prepend the new key, and drop the old one once nothing it signed is still in use.
//!   Verification computes the MAC under *every* key and compares each in constant time, so
//!   timing reveals neither which key matched nor how close a forgery came. Empty keys are
//!   skipped: an HMAC under an empty key is a MAC anyone can compute.
//! - [`encode`]/[`decode`]: base64url without padding, the text form of every MAC and token
//!   part.
//! - The formats, each kept byte for byte as clients and stored cookies know them (the
//!   `pinned_vectors` tests hold values computed before the formats moved here):
//!   - sealed tokens, [`seal`]/[`open`]: `<body>.<base64url MAC of body>`. A realtime grant is
//!     one with a base64url JSON body; an HS256 JWT (`crate::jwt`) is one whose body is
//!     `<header>.<claims>`;
//!   - [`stamped`]: `<payload>.<issued ms>.<MAC>` cookie values bound to a label and dated;
//!   - [`signature_header`]: `t=<unix s>,v1=<hex MAC>…`, one `v1` per key, for webhook
//!     receivers that verify against the key they hold.
//!
//! Not here: the stream subscriptions' webhook signatures, which are Ed25519 (asymmetric: a
//! receiver verifies with the published JWKS and cannot sign), and API keys, which are
//! compared as SHA-256 digests (`crate::auth`), not MACed.

use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub mod stamped;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA-256 tag.
pub type Tag = [u8; 32];

/// One HMAC-SHA-256 key, already keyed (cheap to clone).
#[derive(Clone)]
pub struct Key {
    keyed: HmacSha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").finish_non_exhaustive()
    }
}

impl Key {
    /// A key of `secret`'s bytes (HMAC takes keys of any length).
    pub fn new(secret: &[u8]) -> Key {
        let keyed = match HmacSha256::new_from_slice(secret) {
            Ok(keyed) => keyed,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        Key { keyed }
    }

    /// A key of 256 bits from the OS CSPRNG (what it signs is worthless after a restart).
    pub fn random() -> Key {
        let mut secret = [0u8; 32];
        // Without the OS CSPRNG no key is safe to make: abort loudly (as for every id).
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut secret).expect("OS random number generator unavailable");
        Key::new(&secret)
    }

    /// The MAC of the concatenation of `parts`.
    pub fn mac(&self, parts: &[&[u8]]) -> Tag {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Keys in rotation: the first signs, every one verifies (cheap to clone).
#[derive(Clone)]
pub struct Keys {
    keys: std::sync::Arc<[Key]>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Keys {
    /// The non-empty ones of `secrets`, in order; `None` when there is none.
    pub fn new<I, S>(secrets: I) -> Option<Keys>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let keys: Vec<Key> = secrets
            .into_iter()
            .filter(|s| !s.as_ref().is_empty())
            .map(|s| Key::new(s.as_ref()))
            .collect();
        (!keys.is_empty()).then(|| Keys { keys: keys.into() })
    }

    /// One random key (see [`Key::random`]).
    pub fn random() -> Keys {
        Keys {
            keys: vec![Key::random()].into(),
        }
    }

    /// How many keys verify.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a `Keys` has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that signs.
    pub fn signing(&self) -> &Key {
        &self.keys[0]
    }

    /// The MAC of `parts` under the signing key.
    pub fn sign(&self, parts: &[&[u8]]) -> Tag {
        self.signing().mac(parts)
    }

    /// Whether `tag` is the MAC of `parts` under any key. Every key is tried and compared in
    /// constant time, whatever matched first.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let mut matched = subtle::Choice::from(0u8);
        for key in self.keys.iter() {
            matched |= key.mac(parts).as_slice().ct_eq(tag);
        }
        matched.into()
    }
}

/// `bytes` as base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of base64url text without padding; `None` when it is not.
pub fn decode(text: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// `body` sealed by `key`: `<body>.<base64url MAC of body>`.
pub fn seal(key: &Key, body: &str) -> String {
    format!("{body}.{}", encode(key.mac(&[body.as_bytes()])))
}

/// Splits a sealed token at its last `.`: the body and the decoded MAC; `None` when there is
/// no `.` or the MAC is not base64url. Nothing is verified yet.
fn split_sealed(token: &str) -> Option<(&str, Vec<u8>)> {
    let (body, mac) = token.rsplit_once('.')?;
    Some((body, decode(mac)?))
}

/// The body of `token` if one of `keys` sealed it.
pub fn open<'t>(keys: &Keys, token: &'t str) -> Option<&'t str> {
    let (body, mac) = split_sealed(token)?;
    keys.verify(&[body.as_bytes()], &mac).then_some(body)
}

/// The webhook signature header value for `body` sent at unix second `t`:
/// `t=<t>,v1=<hex>[,v1=<hex>…]`, one lowercase hex MAC of `"<t>.<body>"` per key, so a
/// receiver holding any one key (old or new) verifies, and rejects replays by `t`.
pub fn signature_header(keys: &Keys, t: i64, body: &[u8]) -> String {
    let prefix = format!("{t}.");
    let mut value = format!("t={t}");
    for key in keys.keys.iter() {
        value.push_str(",v1=");
        for byte in key.mac(&[prefix.as_bytes(), body]) {
            let _ = write!(value, "{byte:02x}");
        }
    }
    value
}

#[cfg(test)]
mod tests;
