//! The Redis key scheme: every key the engine touches is built here, nowhere else.
//!
//! Why one module: the scheme is a contract with data already on disk and with Redis Cluster's
//! slot rules, so it must be readable in one place. Every user-controlled part (session id,
//! user id, namespace, cache key, object kind and key) is escaped with [`escape`] before it is
//! spliced into a key, so ids containing `{`, `}`, `:` or `%` can neither collide with another
//! key nor break a hash tag. Escaping is injective (`%` itself is escaped), so distinct inputs
//! always give distinct keys; unicode passes through as UTF-8.
//!
//! `P` is the configured key prefix (default `sessiond`; it must not contain `{` or `}`).
//! `esc(x)` is [`escape`]. The part in braces is the Redis Cluster hash tag: all keys of one
//! object share it, so a Lua script touching several keys of one object stays in one slot.
//!
//! | Key | Type | Contents |
//! |-----|------|----------|
//! | `P:{s:esc(id)}` | HASH | one session: one field per `SessionRecord` field (`user_id` and `device` absent when `None`; `origin` absent on hashes written before it existed = `service`); `PEXPIREAT` = min(idle, absolute) deadline + `session_expiry_grace_ms` (the sweep deletes it at the deadline and queues its `session.expired` event; the native TTL only catches what no sweep reached) |
//! | `P:{sx:NN}:exp` | ZSET | session expiry index partition `NN` (00..15, by a hash of the id): member = session id, score = a lower bound of its earliest deadline (written before the session, re-scored by the sweep when the session was used) |
//! | `P:{u:esc(user)}:sessions` | ZSET | per-user index: member = session id, score = `created_at`; no TTL, stale members are removed lazily by listing and by the sweeper |
//! | `P:{c:esc(ns)}:e:esc(key)` | HASH | one cache entry: `v` value, `s` stored_at, `e` expires_at (absent = never); `PEXPIREAT` = expires_at |
//! | `P:{c:esc(ns)}:idx` | ZSET | namespace index: member = raw cache key, score = expires_at (`+inf` = never); expires with its longest-lived entry |
//! | `P:cache:namespaces` | ZSET | namespace registry for the namespace-count limit: member = raw namespace, score = upper bound of its latest expiry (`+inf` = never); cleaned lazily |
//! | `P:cache:namespaces:reserved` | ZSET | the same for the reserved `_…` namespaces (a separate budget) |
//! | `P:{o:esc(kind):esc(key)}:state` | STRING | object state bytes |
//! | `P:{k:esc(kind)}:objects` | ZSET | per-kind object index: member = raw object key, score 0 (ZRANGEBYLEX for prefix + cursor) |
//! | `P:{alarms}:due` | ZSET | every alarm: member = [`alarm_member`], score = due_at (due scanning) |
//! | `P:{alarms}:lex` | ZSET | every alarm: same member, score 0 (per-object listing by lexicographic prefix) |
//! | `P:{alarms}:rec` | HASH | every alarm: member -> the `AlarmRecord` as JSON |
//! | `P:{st:esc(path)}:m` | HASH | one stream's metadata: `tail`, `exp` (absent = never), `state` (opaque bytes), `fence` (greatest sealing-lease token that sealed it), `pend` (Redis Cluster only: a fork creation or deletion in flight, `<nonce> <deadline ms> <c or d> <source path>`) |
//! | `P:{st:esc(path)}:c` | STREAM | its hot chunks: entry id `<offset>-1`, one field `d` = the bytes |
//! | `P:{st:esc(path)}:g` | LIST | its cold segments in offset order: `<start> <end> <object key>` |
//! | `P:{st:esc(path)}:p` | HASH | its idempotent producers: id -> `<used_at> <state bytes>` |
//! | `P:{st:esc(path)}:pu` | ZSET | the same ids scored by `used_at` (least recently used first: the eviction order) |
//! | `P:{st:esc(path)}:fk` | HASH | fork links in flight on Redis Cluster (see `stream_forks.rs`): nonce -> `live <fork path>` (the source's half of a fork creation or deletion happened) or `dead` (aborted by a repair); removed with the stream |
//! | `P:{seal}:lease` | HASH | the cold tier's sealing lease: `holder` (node id), `token`; `PEXPIRE` = the lease's TTL |
//! | `P:{seal}:fence` | STRING | counter of sealing-lease fencing tokens (`INCR` per takeover) |
//! | `P:{stx:NN}:exp` | ZSET | expiry index partition `NN` (00..15, by a hash of the path): member = raw path, score = expires_at |
//! | `P:streams:names` | ZSET | every stream path, score 0 (ZRANGEBYLEX for prefix listing) |
//! | `P:streams:wake` | pub/sub channel | a tail notification per stream change: `<node id> <tail or -> <Redis ms> <path>` |
//! | `P:{r:esc(channel)}:meta` | HASH | realtime channel: `epoch`, `top` (latest offset); `PEXPIRE` = channel TTL, renewed by every publish and read |
//! | `P:{r:esc(channel)}:log` | STREAM | realtime channel history: entry id `<offset>-0`, fields `t` (publish ms), `p` (payload); same TTL |
//! | `P:rt:bus` | pub/sub channel | realtime deliveries to every node (`m` + JSON message, `s` + signal) |
//! | `P:{p:esc(set)}:z` | ZSET | realtime presence set (a user's or a channel's connections): member = connection id, score = lease expire-at; `PEXPIRE` = 3 leases, renewed by joins and refreshes |
//! | `P:{p:esc(set)}:h` | HASH | the same members' infos (JSON written by the hub); same TTL |
//! | `P:{p:esc(set)}:s` | HASH | the set's transitions: `on` (non-empty as of the last transition), `g` (generation), `em` (last settled state); `PEXPIRE` 24 h |
//! | `P:erasures` | ZSET | the erasure list: member = `base64url(sha256(user_id))` of an erased user, score = erased at (ms); no TTL |
//! | `P:rtp:index` | ZSET | presence sets to sweep: member = raw set name, score = earliest lease end among its members |
//!
//! A stream's keys share its hash tag, so create, commit (tail check + chunks + metadata +
//! producer rows + notification), seal and delete are each one script. Fork creation and
//! deletion also rewrite the source's metadata hash: on a standalone Redis one script over
//! two hash tags; on Redis Cluster, where a script cannot span slots, a protocol of
//! single-slot scripts (`stream_forks.rs`). No other script or multi-key command spans two
//! hash tags (the cluster test suite proves it: Redis Cluster refuses them with `CROSSSLOT`). The expiry index and the name index
//! span streams, so they are separate keys updated right after the script in the same round
//! trip; readers verify every index entry against the stream's own hash (see `streams.rs`).
//! The expiry index is split into partitions, each its own hash tag, so on Redis Cluster the
//! sweep load spreads over slots instead of one hot key.
//!
//! The alarm keys share one hash tag on purpose: put, guarded delete and "drop all alarms of an
//! object" are then single atomic scripts. Alarms are low-volume compared with sessions and
//! cache entries, and due scanning needs one global ordered set anyway.
//!
//! Cross-slot pairs (session hash vs. user index, object state vs. kind index vs. alarms, cache
//! namespace keys vs. registry) are updated by separate calls in an order that keeps readers
//! correct: the record is written before its index entry and readers verify every index entry
//! against the record it points to.

use crate::slots::{crc16, key_slot, SLOTS};

/// Escapes a user-controlled key part: `%`, `{`, `}` and `:` become `%25`, `%7B`, `%7D`, `%3A`.
pub fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
    out
}

/// The digits of a suffix: base64url, like the ids themselves (and free of `{`, `}`, `:`,
/// `%`, so escaping leaves it as is).
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Suffix length: 64^4 candidates cover the 16,384 slots with certainty in practice (the
/// search expects ~16k steps of four CRC table lookups each).
const SUFFIX: usize = 4;

/// A rotated session id: `fresh` (a base64url CSPRNG id) plus a suffix, such that the session
/// hash of the result shares the slot of `old_id`'s session hash.
///
/// Rotation moves a session from its old hash to a new one in one script, and Redis Cluster
/// runs a script only over keys of one slot. A session's slot is fixed by its hash tag
/// (`{s:esc(id)}`), so the new id is chosen to land in the old id's slot: a fresh CSPRNG id
/// followed by a short suffix found by search. The suffix is a function of the random part and
/// the old slot, so the id keeps every random bit of the fresh id (an attacker who knows the
/// old id learns only the 14 bits of the slot, which the key layout shares anyway).
pub fn session_id_in_slot_of(old_id: &str, fresh: &str) -> String {
    let target = key_slot(&format!("{{s:{}}}", escape(old_id)));
    let base = crc16(0, format!("s:{}", escape(fresh)).as_bytes());
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

/// Escapes the glob metacharacters of `SCAN ... MATCH` patterns.
fn glob_escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Separator between the parts of an [`alarm_member`].
const SEP: [u8; 2] = [0x00, 0x01];

/// Appends `part` with NUL bytes escaped (`00` -> `00 FF`) followed by the separator `00 01`.
/// This encoding preserves tuple order under plain byte comparison.
fn push_tuple_part(out: &mut Vec<u8>, part: &str) {
    for &b in part.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&SEP);
}

/// The member naming one alarm in the alarm sets: `(kind, key, name)` encoded so that byte
/// order equals tuple order (ties of equal due times then sort like the memory engine).
pub fn alarm_member(kind: &str, key: &str, name: &str) -> Vec<u8> {
    let mut out = alarm_object_prefix(kind, key);
    push_tuple_part(&mut out, name);
    out
}

/// The common prefix of the members of every alarm of one object.
pub fn alarm_object_prefix(kind: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(kind.len() + key.len() + 8);
    push_tuple_part(&mut out, kind);
    push_tuple_part(&mut out, key);
    out
}

/// `ZRANGEBYLEX` bounds `[min, max)` covering exactly the members that start with `prefix`.
/// An empty prefix covers everything (`-`, `+`).
pub fn lex_prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (b"-".to_vec(), b"+".to_vec());
    }
    let mut min = Vec::with_capacity(prefix.len() + 1);
    min.push(b'[');
    min.extend_from_slice(prefix);
    // The smallest string greater than every string starting with `prefix`: drop trailing 0xFF
    // bytes and increment the last remaining one.
    let mut upper = prefix.to_vec();
    while upper.last() == Some(&0xFF) {
        upper.pop();
    }
    let max = match upper.last_mut() {
        Some(last) => {
            *last += 1;
            let mut max = Vec::with_capacity(upper.len() + 1);
            max.push(b'(');
            max.extend_from_slice(&upper);
            max
        }
        None => b"+".to_vec(),
    };
    (min, max)
}

/// Builds every key from the configured prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Key builder for `prefix` (validated by the caller: no braces).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// Session hash.
    pub fn session(&self, id: &str) -> String {
        format!("{}:{{s:{}}}", self.prefix, escape(id))
    }

    /// The outbox stream (`sessiond_store::outbox`) in the slot of session `id`'s hash.
    pub fn outbox_of_session(&self, id: &str) -> String {
        let slot = key_slot(&self.session(id));
        self.outbox_in_slot(slot)
    }

    /// The outbox stream of one slot.
    pub fn outbox_in_slot(&self, slot: u16) -> String {
        format!(
            "{}:{{o:{}}}:outbox",
            self.prefix,
            crate::slots::outbox_tag(slot)
        )
    }

    /// `SCAN MATCH` pattern for every outbox stream.
    pub fn outbox_pattern(&self) -> String {
        format!("{}:{{o:*}}:outbox", glob_escape(&self.prefix))
    }

    /// The outbox relay lease (STRING: the holder; PEXPIRE = the lease). One key, so one
    /// slot on Redis Cluster.
    pub fn relay_lease(&self) -> String {
        format!("{}:{{relay}}:lease", self.prefix)
    }

    /// The set of outbox streams that may hold events.
    pub fn outbox_index(&self) -> String {
        format!("{}:outbox:index", self.prefix)
    }

    /// The session expiry-index partition of session `id`.
    pub fn session_expiry(&self, id: &str) -> String {
        self.session_expiry_partition(stream_partition(id))
    }

    /// Session expiry-index partition `n` (`0..STREAM_EXPIRY_PARTITIONS`).
    pub fn session_expiry_partition(&self, n: usize) -> String {
        format!("{}:{{sx:{n:02}}}:exp", self.prefix)
    }

    /// Per-user session index.
    pub fn user_sessions(&self, user: &str) -> String {
        format!("{}:{{u:{}}}:sessions", self.prefix, escape(user))
    }

    /// `SCAN MATCH` pattern for every per-user session index.
    pub fn user_sessions_pattern(&self) -> String {
        format!("{}:{{u:*}}:sessions", glob_escape(&self.prefix))
    }

    /// One cache entry.
    pub fn cache_entry(&self, ns: &str, key: &str) -> String {
        format!("{}:{{c:{}}}:e:{}", self.prefix, escape(ns), escape(key))
    }

    /// Index of one cache namespace.
    pub fn cache_index(&self, ns: &str) -> String {
        format!("{}:{{c:{}}}:idx", self.prefix, escape(ns))
    }

    /// Registry of cache namespaces of one budget class (reserved `_…` namespaces or not).
    pub fn cache_namespaces(&self, reserved: bool) -> String {
        if reserved {
            format!("{}:cache:namespaces:reserved", self.prefix)
        } else {
            format!("{}:cache:namespaces", self.prefix)
        }
    }

    /// State of one object.
    pub fn object_state(&self, kind: &str, key: &str) -> String {
        format!(
            "{}:{{o:{}:{}}}:state",
            self.prefix,
            escape(kind),
            escape(key)
        )
    }

    /// Per-kind object index.
    pub fn object_index(&self, kind: &str) -> String {
        format!("{}:{{k:{}}}:objects", self.prefix, escape(kind))
    }

    /// Alarm set ordered by due time.
    pub fn alarms_due(&self) -> String {
        format!("{}:{{alarms}}:due", self.prefix)
    }

    /// Alarm set ordered by member (per-object listing).
    pub fn alarms_lex(&self) -> String {
        format!("{}:{{alarms}}:lex", self.prefix)
    }

    /// Alarm records.
    pub fn alarms_records(&self) -> String {
        format!("{}:{{alarms}}:rec", self.prefix)
    }

    /// A stream's keys: metadata hash, chunk stream, segment list, producer rows, producer
    /// use order (one hash tag).
    pub fn stream(&self, path: &str) -> [String; 5] {
        let base = format!("{}:{{st:{}}}", self.prefix, escape(path));
        [
            format!("{base}:m"),
            format!("{base}:c"),
            format!("{base}:g"),
            format!("{base}:p"),
            format!("{base}:pu"),
        ]
    }

    /// A stream's fork links in flight (Redis Cluster), under the stream's hash tag.
    pub fn stream_fork_links(&self, path: &str) -> String {
        format!("{}:{{st:{}}}:fk", self.prefix, escape(path))
    }

    /// The expiry-index partition of `path`.
    pub fn stream_expiry(&self, path: &str) -> String {
        self.stream_expiry_partition(stream_partition(path))
    }

    /// Expiry-index partition `n` (`0..STREAM_EXPIRY_PARTITIONS`).
    pub fn stream_expiry_partition(&self, n: usize) -> String {
        format!("{}:{{stx:{n:02}}}:exp", self.prefix)
    }

    /// The index of every stream path.
    pub fn stream_names(&self) -> String {
        format!("{}:streams:names", self.prefix)
    }

    /// The cold tier's sealing lease (HASH `holder`, `token`; PEXPIRE = the lease) and the
    /// counter its fencing tokens come from (one hash tag: one script takes the lease).
    pub fn seal_lease(&self) -> [String; 2] {
        [
            format!("{}:{{seal}}:lease", self.prefix),
            format!("{}:{{seal}}:fence", self.prefix),
        ]
    }

    /// The pub/sub channel of stream tail notifications.
    pub fn stream_wake_channel(&self) -> String {
        format!("{}:streams:wake", self.prefix)
    }

    /// A realtime channel's epoch and latest offset.
    pub fn rt_meta(&self, channel: &str) -> String {
        format!("{}:{{r:{}}}:meta", self.prefix, escape(channel))
    }

    /// A realtime channel's history.
    pub fn rt_log(&self, channel: &str) -> String {
        format!("{}:{{r:{}}}:log", self.prefix, escape(channel))
    }

    /// A realtime presence set's keys: members by lease end, their infos, its transitions.
    pub fn presence(&self, set: &str) -> [String; 3] {
        let base = format!("{}:{{p:{}}}", self.prefix, escape(set));
        [
            format!("{base}:z"),
            format!("{base}:h"),
            format!("{base}:s"),
        ]
    }

    /// The index of presence sets to sweep.
    pub fn presence_index(&self) -> String {
        format!("{}:rtp:index", self.prefix)
    }

    /// The erasure list.
    pub fn erasures(&self) -> String {
        format!("{}:erasures", self.prefix)
    }

    /// The pub/sub channel of realtime deliveries.
    pub fn rt_bus(&self) -> String {
        format!("{}:rt:bus", self.prefix)
    }
}

/// How many expiry-index partitions there are (of streams, and of sessions).
pub const STREAM_EXPIRY_PARTITIONS: usize = 16;

/// The expiry-index partition of a path or session id (FNV-1a, stable across builds and
/// nodes).
pub fn stream_partition(path: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in path.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % STREAM_EXPIRY_PARTITIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_injective_and_brace_free() {
        let inputs = ["a:b", "a%3Ab", "a}", "{a", "a%", "ü", ""];
        let escaped: Vec<String> = inputs.iter().map(|s| escape(s)).collect();
        for (i, a) in escaped.iter().enumerate() {
            assert!(!a.contains(['{', '}', ':']));
            for b in &escaped[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn cache_keys_do_not_collide_across_namespaces() {
        let k = Keys::new("p");
        assert_ne!(k.cache_entry("a", "b:c"), k.cache_entry("a:b", "c"));
        assert_ne!(k.object_state("a", "b:c"), k.object_state("a:b", "c"));
    }

    #[test]
    fn alarm_members_sort_like_tuples() {
        let mut tuples = [
            ("a", "b", "c"),
            ("a", "b\0", "c"),
            ("a\0", "", ""),
            ("ab", "", ""),
            ("a", "", "z"),
            ("", "x", "y"),
        ];
        let mut encoded: Vec<Vec<u8>> = tuples
            .iter()
            .map(|(a, b, c)| alarm_member(a, b, c))
            .collect();
        tuples.sort();
        encoded.sort();
        let expected: Vec<Vec<u8>> = tuples
            .iter()
            .map(|(a, b, c)| alarm_member(a, b, c))
            .collect();
        assert_eq!(encoded, expected);
    }

    /// The keys one script or one atomic change touches share a Redis Cluster slot, whatever
    /// the user-controlled parts (the cluster suite proves it end to end; this catches a key
    /// change early).
    #[test]
    fn keys_of_one_atomic_change_share_a_slot() {
        use redis::cluster_routing::Slot;
        let k = Keys::new("p");
        let same = |keys: &[String]| {
            let first = Slot::for_key(&keys[0]);
            for key in keys {
                assert_eq!(Slot::for_key(key), first, "{key} vs {}", keys[0]);
            }
        };
        for part in ["a", "a}b", "{x}", "ü:%"] {
            let mut stream = k.stream(part).to_vec();
            stream.push(k.stream_fork_links(part));
            same(&stream);
            same(&[k.cache_entry(part, "k{1}"), k.cache_index(part)]);
            same(&[k.rt_meta(part), k.rt_log(part)]);
        }
        same(&[k.alarms_due(), k.alarms_lex(), k.alarms_records()]);
        // The expiry claim: a session and the outbox of its slot.
        for id in ["a", "{x}", "ü:%"] {
            same(&[k.session(id), k.outbox_of_session(id)]);
        }
        same(&k.seal_lease());
    }

    #[test]
    fn prefix_ranges() {
        assert_eq!(lex_prefix_range(b""), (b"-".to_vec(), b"+".to_vec()));
        assert_eq!(lex_prefix_range(b"ab"), (b"[ab".to_vec(), b"(ac".to_vec()));
        assert_eq!(
            lex_prefix_range(b"a\xff"),
            (b"[a\xff".to_vec(), b"(b".to_vec())
        );
        assert_eq!(lex_prefix_range(b"\xff").1, b"+".to_vec());
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
