//! Realtime channel grants (`payload.signature`): the token as sent, and the input as the
//! payload of a grant signed with the hub's key, so claim parsing and expiry are reached.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiond_http::signing::{encode, seal, Key};
use sessiond_realtime::grants;

const KEY: &str = "fuzz-grant-key-0123456789abcdef";
const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let keys = vec![String::new(), KEY.to_string()];
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = grants::verify(&keys, token, NOW);
    }
    let token = seal(&Key::new(KEY.as_bytes()), &encode(data));
    if let Some(claims) = grants::verify(&keys, &token, NOW) {
        assert!(claims.exp > NOW);
        // What the server signs, it verifies.
        let again = grants::sign(KEY.as_bytes(), &claims);
        assert_eq!(grants::verify(&keys, &again, NOW), Some(claims));
    }
    // A grant signed with a key that is not configured is refused.
    assert!(grants::verify(&["other".into()], &token, NOW).is_none());
});
