use super::*;

const OLD: &str = "old-key-0123456789abcdef01234567";
const NEW: &str = "new-key-0123456789abcdef01234567";

#[test]
fn the_first_key_signs_and_every_key_verifies() {
    let old = Keys::new([OLD]).expect("key");
    let rotated = Keys::new([NEW, OLD]).expect("keys");
    let new_only = Keys::new([NEW]).expect("key");
    let parts: [&[u8]; 2] = [b"a", b"bc"];
    let by_old = old.sign(&parts);
    assert!(rotated.verify(&parts, &by_old));
    assert!(!new_only.verify(&parts, &by_old));
    let by_rotated = rotated.sign(&parts);
    assert_eq!(by_rotated, new_only.sign(&parts));
    assert!(!old.verify(&parts, &by_rotated));
    // Parts are concatenated: the split does not matter, the bytes do.
    assert_eq!(old.sign(&[b"abc"]), by_old);
    assert!(!old.verify(&[b"abd"], &by_old));
    // A truncated or extended tag is no tag.
    assert!(!old.verify(&parts, &by_old[..31]));
    assert!(!old.verify(&parts, &[by_old.as_slice(), &[0]].concat()));
    assert!(!old.verify(&parts, &[]));
}

#[test]
fn empty_keys_are_skipped() {
    assert!(Keys::new(Vec::<String>::new()).is_none());
    assert!(Keys::new(["", ""]).is_none());
    let keys = Keys::new(["", OLD]).expect("one key");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys.sign(&[b"x"]), Key::new(OLD.as_bytes()).mac(&[b"x"]));
    // Two random keys differ.
    assert_ne!(Keys::random().sign(&[b"x"]), Keys::random().sign(&[b"x"]));
}

#[test]
fn sealed_tokens_open_under_any_key_and_nothing_else() {
    let old = Key::new(OLD.as_bytes());
    let keys = Keys::new([NEW, OLD]).expect("keys");
    let token = seal(&old, "e30");
    assert_eq!(open(&keys, &token), Some("e30"));
    // The body may itself hold dots (a JWT's header and claims).
    let jwt_like = seal(keys.signing(), "e30.e30");
    assert_eq!(open(&keys, &jwt_like), Some("e30.e30"));
    assert_eq!(open(&Keys::new([NEW]).expect("key"), &token), None);
    let (body, mac) = split_sealed(&token).expect("sealed");
    assert_eq!((body, mac.len()), ("e30", 32));
    for bad in [
        "",
        "e30",
        "e30.",
        "e30.!!",
        &token.replacen("e30", "e31", 1),
        &token[..token.len() - 1],
    ] {
        assert_eq!(open(&keys, bad), None, "{bad:?}");
    }
}

#[test]
fn base64url_without_padding() {
    assert_eq!(encode([0xfb, 0xff]), "-_8");
    assert_eq!(decode("-_8"), Some(vec![0xfb, 0xff]));
    assert_eq!(decode("-_8="), None, "padding");
    assert_eq!(decode("+/8"), None, "standard alphabet");
}

/// The webhook header as the realtime webhook sent it before it moved here (pinned from the
/// old code, with the same keys and body as `sessiond_realtime::webhook`'s vector).
#[test]
fn signature_header_pinned_vector() {
    let keys = Keys::new(["a".repeat(32), "b".repeat(32)]).expect("keys");
    assert_eq!(
        signature_header(&keys, 1_700_000_000, br#"{"type":"join"}"#),
        "t=1700000000,v1=dfdd193f762fd55821177645c63453e2ae1cd4d23aa37a5602ead3c4627dc58a,\
         v1=55ec8a48e9d0d2ede9f450931dbbdfa8b33e80c2b1e5de3de9451ab2a57fa44b"
    );
}
