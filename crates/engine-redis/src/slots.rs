//! Redis Cluster slot arithmetic: the slot a key hashes to, and a hash tag per slot for the
//! outboxes. Below the key scheme ([`crate::keys`]), which places keys with it; picking a
//! rotated session id in its old slot needs the scheme's session tag, so it is there
//! (`keys::session_id_in_slot_of`).

/// Number of Redis Cluster slots.
pub(crate) const SLOTS: u16 = 16384;

/// CRC16/XMODEM, the checksum Redis Cluster hashes keys with, continued from `crc`.
pub(crate) fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
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
}
