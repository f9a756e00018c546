//! Redis Cluster slots, for the one place where the engine picks a key: a rotated session id.
//!
//! Rotation moves a session from its old hash to a new one in one script, and Redis Cluster
//! runs a script only over keys of one slot. A session's slot is fixed by its hash tag
//! (`{s:esc(id)}`, see [`crate::keys`]), so the new id is chosen to land in the old id's slot:
//! a fresh CSPRNG id followed by a short suffix found by search. The suffix is a function of
//! the random part and the old slot, so the id keeps every random bit of the fresh id (an
//! attacker who knows the old id learns only the 14 bits of the slot, which the key layout
//! shares anyway).

/// Number of Redis Cluster slots.
const SLOTS: u16 = 16384;

/// The digits of a suffix: base64url, like the ids themselves (and free of `{`, `}`, `:`,
/// `%`, so escaping leaves it as is).
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Suffix length: 64^4 candidates cover the 16,384 slots with certainty in practice (the
/// search expects ~16k steps of four CRC table lookups each).
const SUFFIX: usize = 4;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with, continued from `crc`.
fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key: the CRC of its hash tag (the text between the first `{` and the next
/// `}`, when non-empty), else of the whole key.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(0, tagged.unwrap_or(bytes)) % SLOTS
}

/// For each slot, a number `n` whose tag `o:<n>` hashes to that slot: the outbox of the
/// sessions of a slot is `{o:<n>}`, so a session script can write its event next to the
/// session (a script may touch one slot only). Computed once (about 10^5 CRCs).
pub fn outbox_tag(slot: u16) -> u32 {
    static TABLE: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = table.len();
        let mut n = 0u32;
        while missing > 0 {
            let slot = usize::from(crc16(0, format!("o:{n}").as_bytes()) % SLOTS);
            if table[slot] == u32::MAX {
                table[slot] = n;
                missing -= 1;
            }
            n += 1;
        }
        table
    });
    table[usize::from(slot % SLOTS)]
}

/// `fresh` (a base64url CSPRNG id) plus a suffix, such that the session hash of the result
/// shares the slot of `old_id`'s session hash.
pub fn session_id_in_slot_of(old_id: &str, fresh: &str) -> String {
    let target = key_slot(&format!("{{s:{}}}", crate::keys::escape(old_id)));
    let base = crc16(0, format!("s:{}", crate::keys::escape(fresh)).as_bytes());
    let mut suffix = [0u8; SUFFIX];
    for n in 0..64usize.pow(SUFFIX as u32) {
        let mut rest = n;
        for digit in suffix.iter_mut() {
            *digit = DIGITS[rest % 64];
            rest /= 64;
        }
        if crc16(base, &suffix) % SLOTS == target {
            break;
        }
    }
    let mut id = fresh.to_string();
    id.extend(suffix.iter().map(|&b| char::from(b)));
    id
}

#[cfg(test)]
mod outbox_tests {
    use super::*;

    #[test]
    fn every_slot_has_an_outbox_tag_in_it() {
        for slot in [0u16, 1, 777, 16383] {
            let tag = outbox_tag(slot);
            assert_eq!(key_slot(&format!("x:{{o:{tag}}}:outbox")), slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // CRC16/XMODEM check value, and `CLUSTER KEYSLOT` answers of a real cluster.
        assert_eq!(crc16(0, b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
    }

    #[test]
    fn rotated_ids_share_the_old_slot_and_keep_the_fresh_part() {
        let keys = crate::keys::Keys::new("p");
        for old in ["a", "{x}", "ü:%", "AAAAAAAAAAAAAAAAAAAAAAAA"] {
            for fresh in ["0123456789abcdefABCDEF-_", "zzzzzzzzzzzzzzzzzzzzzzzz"] {
                let id = session_id_in_slot_of(old, fresh);
                assert!(id.starts_with(fresh) && id.len() == fresh.len() + SUFFIX);
                assert_eq!(key_slot(&keys.session(&id)), key_slot(&keys.session(old)));
            }
        }
    }
}
