//! HS256 JWTs (session-token auth, streams read tokens): the token as sent, and the same
//! bytes as header and claims of a token signed with the verifier's key, so the claim
//! checks behind the signature are reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiond_http::jwt::Hs256Verifier;
use sessiond_http::signing::{encode, seal, Key};

const KEY: &[u8] = b"fuzz-jwt-key-0123456789abcdef012";
const NOW: f64 = 1_700_000_000.0;

fuzz_target!(|data: &[u8]| {
    let verifier = Hs256Verifier::new([KEY], 8192).expect("a key");
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verifier.verify(token, NOW);
    }
    // header \0 claims, signed.
    let (header, claims) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&br#"{"alg":"HS256"}"#[..], data),
    };
    let signed = format!("{}.{}", encode(header), encode(claims));
    let token = seal(&Key::new(KEY), &signed);
    if let Ok(verified) = verifier.verify(&token, NOW) {
        let exp = verified.get("exp").and_then(serde_json::Value::as_f64);
        assert!(
            exp.is_some_and(|e| e > NOW),
            "accepted without a future exp"
        );
    }
});
