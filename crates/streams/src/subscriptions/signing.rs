//! The webhook signing key: Ed25519, persisted, published as a JWK Set (PROTOCOL.md §6.5).
//!
//! Receivers verify `Webhook-Signature: t=<unix s>,kid=<kid>,ed25519=<base64url sig>` over
//! `<t>.<raw body>` with the public key the server lists at `__ds/jwks.json`, so no shared
//! secret ever leaves the server. The private key is generated once from the OS CSPRNG and
//! stored through the object store (kind [`KEY_KIND`]), so it survives restarts and every
//! subscription's receivers keep verifying. The `kid` is derived from the public key bytes,
//! which keeps it stable for the key's lifetime and unique within the set.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sessiond_store::{Durability, ObjectStore, StoreError};

/// Object kind holding the server's webhook signing key.
pub const KEY_KIND: &str = "ds_webhook_key";
const KEY_NAME: &str = "active";

#[derive(Serialize, Deserialize)]
struct StoredKey {
    /// The 32-byte Ed25519 secret, base64url.
    secret: String,
}

/// The active signing key.
#[derive(Clone)]
pub struct WebhookSigner {
    key: Arc<SigningKey>,
    kid: String,
}

impl WebhookSigner {
    /// Loads the persisted key, creating (and durably storing) one on first start.
    pub async fn load_or_create(store: &dyn ObjectStore) -> Result<WebhookSigner, StoreError> {
        if let Some(bytes) = store.load_object(KEY_KIND, KEY_NAME).await? {
            let stored: StoredKey = serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("webhook signing key: {e}")))?;
            let secret: [u8; 32] = URL_SAFE_NO_PAD
                .decode(stored.secret.as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt("webhook signing key length".into()))?;
            return Ok(Self::from_secret(&secret));
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| StoreError::Unavailable(format!("no OS randomness: {e}")))?;
        let stored = StoredKey {
            secret: URL_SAFE_NO_PAD.encode(secret),
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| StoreError::Corrupt(format!("webhook signing key: {e}")))?;
        store
            .save_object(KEY_KIND, KEY_NAME, &bytes, Durability::Confirmed)
            .await?;
        Ok(Self::from_secret(&secret))
    }

    /// A signer for a known secret (tests).
    pub fn from_secret(secret: &[u8; 32]) -> WebhookSigner {
        let key = SigningKey::from_bytes(secret);
        let public = key.verifying_key().to_bytes();
        let kid = format!("ds_{}", &URL_SAFE_NO_PAD.encode(public)[..16]);
        WebhookSigner {
            key: Arc::new(key),
            kid,
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `Webhook-Signature` header value for `body` sent at `unix_s`.
    pub fn signature_header(&self, unix_s: i64, body: &[u8]) -> String {
        let mut message = Vec::with_capacity(body.len() + 24);
        message.extend_from_slice(unix_s.to_string().as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        let signature = self.key.sign(&message);
        format!(
            "t={unix_s},kid={},ed25519={}",
            self.kid,
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// The public JWK Set.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": self.kid,
                "use": "sig",
                "alg": "EdDSA",
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

    #[test]
    fn header_verifies_with_the_published_key() {
        let signer = WebhookSigner::from_secret(&[7u8; 32]);
        let header = signer.signature_header(1_700_000_000, br#"{"a":1}"#);
        let sig = header.rsplit("ed25519=").next().expect("sig");
        assert!(header.starts_with(&format!("t=1700000000,kid={},", signer.kid())));
        let jwks = signer.jwks();
        let x = jwks["keys"][0]["x"].as_str().expect("x");
        let public: [u8; 32] = URL_SAFE_NO_PAD
            .decode(x)
            .expect("b64")
            .try_into()
            .expect("32");
        let key = VerifyingKey::from_bytes(&public).expect("key");
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(sig)
            .expect("b64")
            .try_into()
            .expect("64");
        let sig = Signature::from_bytes(&sig);
        assert!(key.verify(br#"1700000000.{"a":1}"#, &sig).is_ok());
        assert!(key.verify(br#"1700000001.{"a":1}"#, &sig).is_err());
    }

    #[tokio::test]
    async fn the_key_is_persisted() {
        let store = sessiond_store::memory::MemoryEngine::new();
        let a = WebhookSigner::load_or_create(&store).await.expect("create");
        let b = WebhookSigner::load_or_create(&store).await.expect("load");
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.jwks(), b.jwks());
    }
}
