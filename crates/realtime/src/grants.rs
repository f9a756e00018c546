//! Signed channel grants: `<payload>.<signature>`, HMAC-SHA256 over the base64url payload.
//!
//! An app backend that already decides who may enter a room should not need a round trip to
//! sessiond per join: it signs `{"sub","ch","pub","iat","exp"}` with a shared key and hands the token
//! to its client, which presents it on `subscribe`. A grant is a sealed token of
//! `sessiond_http::signing` (its body the base64url JSON claims): several keys are accepted at
//! once (the first signs), so keys rotate without a flag day, and the MAC is compared in
//! constant time. The format is in docs/realtime.md §2.3.
//!
//! `iat` (issued at, unix seconds) lets a revocation outlive the grants it revokes: revoking a
//! user's grant of a channel records the time in the user's object, and a signed grant issued
//! at or before it is refused from then on (see [`revoked`]).

use serde::{Deserialize, Serialize};
use sessiond_http::signing::{self, Key, Keys};

/// What a grant allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// The user it is for.
    pub sub: String,
    /// The channel.
    pub ch: String,
    /// May publish from a client.
    #[serde(default, rename = "pub")]
    pub publish: bool,
    /// Issued at, unix seconds (0 when absent: older than any revocation).
    #[serde(default)]
    pub iat: i64,
    /// Expiry, unix seconds.
    pub exp: i64,
}

/// Whether a grant issued at `iat` is void because the user's grant of the channel was
/// revoked at `revoked_at` (unix seconds; `None` = never revoked). A grant issued in the same
/// second as the revocation is void too: seconds cannot order them.
pub fn revoked(iat: i64, revoked_at: Option<i64>) -> bool {
    revoked_at.is_some_and(|at| iat <= at)
}

/// Signs `claims` with `key`.
pub fn sign(key: &[u8], claims: &GrantClaims) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_default();
    signing::seal(&Key::new(key), &signing::encode(json))
}

/// The claims of `token` if one of `keys` (empty ones skipped) signed it and it has not
/// expired at `now_s`.
pub fn verify(keys: &[String], token: &str, now_s: i64) -> Option<GrantClaims> {
    let payload = signing::open(&Keys::new(keys)?, token)?;
    let claims: GrantClaims = serde_json::from_slice(&signing::decode(payload)?).ok()?;
    (claims.exp > now_s).then_some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> GrantClaims {
        GrantClaims {
            sub: "alice".into(),
            ch: "room:lobby".into(),
            publish: true,
            iat: 0,
            exp,
        }
    }

    #[test]
    fn signed_grants_verify_with_any_configured_key_until_expiry() {
        let token = sign(b"old", &claims(100));
        let keys = vec!["new".to_string(), "old".to_string()];
        assert_eq!(verify(&keys, &token, 99), Some(claims(100)));
        assert_eq!(verify(&keys, &token, 100), None, "expired");
        assert_eq!(verify(&["new".to_string()], &token, 0), None, "unknown key");
        let (payload, sig) = token.split_once('.').expect("two parts");
        let forged = sign(b"x", &claims(1000));
        let (forged_payload, _) = forged.split_once('.').expect("two parts");
        assert_eq!(verify(&keys, &format!("{forged_payload}.{sig}"), 0), None);
        assert_eq!(verify(&keys, payload, 0), None);
        assert_eq!(verify(&[], &token, 0), None);
    }

    /// A grant signed before the signing code moved to `sessiond_http::signing` (pinned from
    /// the old code): app backends keep minting exactly this.
    #[test]
    fn pinned_vectors() {
        const TOKEN: &str = "eyJzdWIiOiJhbGljZSIsImNoIjoicm9vbTpsb2JieSIsInB1YiI6dHJ1ZSwiaWF0Ijox\
            NzAwMDAwMDAwLCJleHAiOjE5MDAwMDAwMDB9.sCvSqwAX0XGestLp-0Zi5GzYyTAoo6DmNFVwGdlA_9I";
        let key = "grant-key-0123456789abcdef012345";
        let claims = GrantClaims {
            iat: 1_700_000_000,
            ..claims(1_900_000_000)
        };
        assert_eq!(sign(key.as_bytes(), &claims), TOKEN);
        let keys = vec![
            "new-key-0123456789abcdef01234567".to_string(),
            key.to_string(),
        ];
        assert_eq!(verify(&keys, TOKEN, 1_800_000_000), Some(claims));
    }
}
