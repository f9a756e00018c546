//! HS256 JSON Web Tokens: verification only, for short-lived grants minted by an application
//! backend that shares a secret with sessiond (e.g. read tokens for Durable Streams).
//!
//! Why not a JWT library: HS256 verification is a base64url split, one HMAC-SHA256 and two
//! small JSON objects; a general JWT crate would add several algorithms (and their key
//! handling) this server must refuse anyway. What is enforced here:
//! - the header's `alg` is exactly `HS256` (`none` and every other algorithm are refused, so a
//!   token cannot choose how it is checked), and a `crit` header is refused (we understand no
//!   extension);
//! - the signature is checked by `crate::signing` (a JWT is a sealed token whose body is
//!   `<header>.<claims>`): against every configured secret, in constant time, so secrets
//!   rotate (add the new one, mint with it, drop the old one) and timing reveals neither
//!   which secret matched nor how close a forgery came;
//! - only then are the claims read: a numeric `exp` (seconds) is required and must be in the
//!   future, a numeric `nbf`, if any, must be past.

use serde_json::{Map, Value};

use crate::signing::{self, Key, Keys};

/// Why a token was refused. The `Display` text is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than the configured limit.
    TooLong,
    /// Not three base64url parts of JSON objects.
    Malformed,
    /// `alg` other than `HS256`, or a `crit` header.
    Algorithm,
    /// No configured secret produced this signature.
    Signature,
    /// `exp` missing or not a number.
    MissingExpiry,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::TooLong => "token too long",
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "token algorithm must be HS256",
            TokenError::Signature => "invalid token signature",
            TokenError::MissingExpiry => "token needs a numeric exp claim",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
        })
    }
}

impl std::error::Error for TokenError {}

/// Verifies HS256 tokens against one or more secrets (cheap to clone).
#[derive(Clone, Debug)]
pub struct Hs256Verifier {
    keys: Keys,
    max_token_bytes: usize,
}

impl Hs256Verifier {
    /// A verifier accepting tokens signed with any of `secrets` (their UTF-8 bytes), refusing
    /// tokens longer than `max_token_bytes`. `None` when no (non-empty) secret is given.
    pub fn new<I, S>(secrets: I, max_token_bytes: usize) -> Option<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        Some(Hs256Verifier {
            keys: Keys::new(secrets)?,
            max_token_bytes,
        })
    }

    /// Checks `token` at `now_s` (unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now_s: f64) -> Result<Map<String, Value>, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let fields = decode_object(header)?;
        if fields.get("alg").and_then(Value::as_str) != Some("HS256") || fields.contains_key("crit")
        {
            return Err(TokenError::Algorithm);
        }
        let signature = signing::decode(signature).ok_or(TokenError::Malformed)?;
        // Header and payload exactly as sent: the signature covers the encoded form.
        let signed = &token[..header.len() + payload.len() + 1];
        if !self.keys.verify(&[signed.as_bytes()], &signature) {
            return Err(TokenError::Signature);
        }
        let claims = decode_object(payload)?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(TokenError::MissingExpiry)?;
        if exp <= now_s {
            return Err(TokenError::Expired);
        }
        match claims.get("nbf") {
            None => {}
            Some(nbf) => match nbf.as_f64() {
                Some(nbf) if nbf <= now_s => {}
                Some(_) => return Err(TokenError::NotYetValid),
                None => return Err(TokenError::Malformed),
            },
        }
        Ok(claims)
    }
}

fn decode_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = signing::decode(part).ok_or(TokenError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed),
    }
}

/// Signs `claims` as an HS256 token with `secret` (for tests and tools; the server only
/// verifies).
pub fn sign_hs256(claims: &Value, secret: &[u8]) -> String {
    sign_with_header(
        &serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        claims,
        secret,
    )
}

/// Signs with an arbitrary header (tests use it to forge `alg` values).
pub fn sign_with_header(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let body = format!(
        "{}.{}",
        signing::encode(header.to_string()),
        signing::encode(claims.to_string())
    );
    signing::seal(&Key::new(secret), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: f64 = 1_763_900_000.0;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Hs256Verifier {
        Hs256Verifier::new(
            [
                SECRET.to_vec(),
                b"older-secret-still-accepted-0000".to_vec(),
            ],
            4096,
        )
        .expect("secrets")
    }

    fn claims(exp: f64) -> Value {
        json!({"session_id": "s1", "exp": exp})
    }

    #[test]
    fn accepts_a_valid_token_from_any_secret() {
        let token = sign_hs256(&claims(NOW + 60.0), SECRET);
        let got = verifier().verify(&token, NOW).expect("valid");
        assert_eq!(got["session_id"], "s1");
        let rotated = sign_hs256(&claims(NOW + 60.0), b"older-secret-still-accepted-0000");
        assert!(verifier().verify(&rotated, NOW).is_ok());
        // Fractional expiry is a number too.
        let fractional = sign_hs256(&claims(NOW + 0.5), SECRET);
        assert!(verifier().verify(&fractional, NOW).is_ok());
    }

    #[test]
    fn refuses_expired_and_not_yet_valid() {
        let expired = sign_hs256(&claims(NOW - 1.0), SECRET);
        assert_eq!(verifier().verify(&expired, NOW), Err(TokenError::Expired));
        let exactly_now = sign_hs256(&claims(NOW), SECRET);
        assert_eq!(
            verifier().verify(&exactly_now, NOW),
            Err(TokenError::Expired)
        );
        let early = sign_hs256(&json!({"exp": NOW + 60.0, "nbf": NOW + 30.0}), SECRET);
        assert_eq!(verifier().verify(&early, NOW), Err(TokenError::NotYetValid));
        assert_eq!(TokenError::Expired.to_string(), "token expired");
    }

    #[test]
    fn refuses_missing_or_non_numeric_exp() {
        for c in [json!({"session_id": "s"}), json!({"exp": "9999999999"})] {
            let token = sign_hs256(&c, SECRET);
            assert_eq!(
                verifier().verify(&token, NOW),
                Err(TokenError::MissingExpiry)
            );
        }
    }

    #[test]
    fn refuses_wrong_secret_and_tampering() {
        let wrong = sign_hs256(&claims(NOW + 60.0), b"not-the-configured-secret-000000");
        assert_eq!(verifier().verify(&wrong, NOW), Err(TokenError::Signature));
        // Swap in another payload and keep the signature.
        let good = sign_hs256(&claims(NOW + 60.0), SECRET);
        let other = sign_hs256(&json!({"session_id": "admin", "exp": NOW + 60.0}), SECRET);
        let mut parts: Vec<&str> = good.split('.').collect();
        let other_payload = other.split('.').nth(1).expect("payload");
        parts[1] = other_payload;
        let forged = parts.join(".");
        assert_eq!(verifier().verify(&forged, NOW), Err(TokenError::Signature));
        // Truncated signature.
        let truncated = &good[..good.len() - 2];
        assert!(verifier().verify(truncated, NOW).is_err());
    }

    #[test]
    fn refuses_other_algorithms() {
        let none_header = json!({"alg": "none", "typ": "JWT"});
        let payload = signing::encode(claims(NOW + 60.0).to_string());
        let unsigned = format!("{}.{payload}.", signing::encode(none_header.to_string()));
        assert_eq!(
            verifier().verify(&unsigned, NOW),
            Err(TokenError::Algorithm)
        );
        for header in [
            json!({"alg": "HS512"}),
            json!({"alg": "RS256"}),
            json!({"alg": "hs256"}),
            json!({"typ": "JWT"}),
            json!({"alg": "HS256", "crit": ["b64"]}),
        ] {
            let token = sign_with_header(&header, &claims(NOW + 60.0), SECRET);
            assert_eq!(
                verifier().verify(&token, NOW),
                Err(TokenError::Algorithm),
                "{header}"
            );
        }
    }

    #[test]
    fn refuses_malformed_and_oversized() {
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "e30.e30.",
            "W10.e30.AA",
        ] {
            assert!(verifier().verify(bad, NOW).is_err(), "{bad:?}");
        }
        let small = Hs256Verifier::new([SECRET], 16).expect("secret");
        let token = sign_hs256(&claims(NOW + 60.0), SECRET);
        assert_eq!(small.verify(&token, NOW), Err(TokenError::TooLong));
        assert!(Hs256Verifier::new(Vec::<Vec<u8>>::new(), 16).is_none());
    }

    /// Tokens signed before the signing code moved to `crate::signing` (pinned from the old code):
    /// what applications and tests mint must keep verifying, byte for byte.
    #[test]
    fn pinned_vectors() {
        const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJleHAiOjE5MDAwMDAwMDAsInNlc3Npb25faWQiOiJzMSJ9.\
            KBwQolemplE8hmkWP7bp2zXRnIK763I-mMKBgLKOyW8";
        let claims = json!({"session_id": "s1", "exp": 1_900_000_000});
        assert_eq!(sign_hs256(&claims, SECRET), TOKEN);
        let verifier = Hs256Verifier::new(
            [
                b"new-secret-0123456789abcdef01234".to_vec(),
                SECRET.to_vec(),
            ],
            4096,
        )
        .expect("secrets");
        assert_eq!(
            verifier.verify(TOKEN, NOW).expect("valid")["session_id"],
            "s1"
        );
    }
}
