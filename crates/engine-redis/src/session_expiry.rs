//! Session expiry on Redis, with its `session.expired` event queued exactly once.
//!
//! Why not native expiry alone: a hash Redis drops by itself ends a session without anyone
//! seeing it, so no event could be queued, let alone in the same step as the removal (see
//! `sessiond_store::outbox`). So a session hash outlives its deadline by a grace
//! (`RedisOptions::session_expiry_grace_ms`), and the session sweep of every node deletes
//! expired sessions itself:
//!
//! - An expiry index (`{sx:NN}:exp`, 16 partitions by a hash of the id, like the streams')
//!   names every session with a lower bound of its earliest deadline. Insert and rotation
//!   write the entry *before* the session, so a crash between the two leaves an entry without
//!   a session (dropped when due), never a session without an entry. Deadlines only move
//!   forward (touch, data update, reauth), so the score stays a lower bound with no write on
//!   those paths.
//! - The sweep reads the due entries of every partition, then their sessions. Gone (revoked,
//!   rotated away, forgotten natively): the entry is dropped, no event. Live (used since the
//!   entry was written): the entry is re-scored to the current deadline. Expired: the node
//!   builds the event from the record it read and runs the claim script, which deletes the
//!   hash and queues the event only if the hash still has the deadlines and version that were
//!   read and is expired at `now` (one slot: the session's hash and the outbox of its slot).
//!   When several nodes sweep the same session, one script deletes it and the others find
//!   nothing; a touch that came between the read and the claim moved the deadline, so the
//!   claim declines and the next sweep reads again.
//!
//! Delay: each node sweeps every `sessions.sweep_interval_s`, so a session's event is queued
//! at most that long after its deadline while any node runs. (Sockets do not wait for it:
//! each node's expiry watch closes its own within a second.) Sessions written before this
//! index existed have no entry; they end natively at their old TTL, without an event.

use futures_util::future::try_join_all;
use sessiond_store::{EventFor, Millis, Result, SessionRecord};

use crate::keys::STREAM_EXPIRY_PARTITIONS;
use crate::{redis_count, RedisEngine};

/// Deletes an expired session and queues its event, if the hash is still the one read.
/// KEYS: session hash, outbox. ARGV: now, idle deadline, absolute deadline, version (as
/// read), event. Returns 0 gone, 1 changed or not expired at `now` (kept), 2 deleted.
pub(crate) const CLAIM: &str = r"
local k = KEYS[1]
local d = redis.call('HMGET', k, 'idle_expires_at', 'absolute_expires_at', 'version')
local idle, abs = num(d[1]), num(d[2])
if not (idle and abs and d[3]) then return 0 end
if idle ~= num(ARGV[2]) or abs ~= num(ARGV[3]) or d[3] ~= ARGV[4] then return 1 end
if num(ARGV[1]) < math.min(idle, abs) then return 1 end
redis.call('DEL', k)
outbox(ARGV[5], KEYS[2])
return 2
";

/// Outcomes of the claim script (0: gone).
const KEPT: i64 = 1;
const DELETED: i64 = 2;

impl RedisEngine {
    /// Writes the expiry-index entry of session `id` (before the session itself).
    pub(crate) async fn index_expiry(&self, id: &str, expires_at: Millis) -> Result<()> {
        let cmd = redis::cmd("ZADD")
            .arg(self.keys.session_expiry(id))
            .arg(expires_at)
            .arg(id)
            .clone();
        self.query::<i64>("session_expiry_index", &cmd).await?;
        Ok(())
    }

    /// Ends up to `batch` sessions whose index entries are due at `now` (queueing
    /// `events(record)` for each deleted one) and settles their entries; returns how many
    /// entries it settled (deleted, dropped or re-scored), so a full batch means "call again".
    pub(crate) async fn sweep_expired(
        &self,
        now: Millis,
        batch: usize,
        events: Option<&EventFor>,
    ) -> Result<usize> {
        let mut pipe = redis::pipe();
        for n in 0..STREAM_EXPIRY_PARTITIONS {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(self.keys.session_expiry_partition(n))
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(redis_count(batch));
        }
        let due: Vec<Vec<String>> = self.query_pipe("session_expiry_due", &pipe).await?;
        let ids: Vec<String> = due.into_iter().flatten().take(batch).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let hashes = self.fetch_sessions(&ids).await?;
        let mut expired = Vec::new();
        let mut settle = redis::pipe();
        let mut settled = 0;
        for (id, hash) in ids.iter().zip(hashes) {
            match crate::sessions::decode(id, hash) {
                Ok(Some(r)) if r.is_expired(now) => expired.push(r),
                Ok(Some(r)) => {
                    settle
                        .cmd("ZADD")
                        .arg(self.keys.session_expiry(id))
                        .arg("XX")
                        .arg(r.expires_at())
                        .arg(id);
                    settled += 1;
                }
                Ok(None) => {
                    settle.cmd("ZREM").arg(self.keys.session_expiry(id)).arg(id);
                    settled += 1;
                }
                Err(_) => {
                    // Left to its native TTL; its entry must not stall the sweep.
                    metrics::counter!("sessiond_engine_redis_unreadable_sessions_total")
                        .increment(1);
                    settle.cmd("ZREM").arg(self.keys.session_expiry(id)).arg(id);
                    settled += 1;
                }
            }
        }
        let claims = expired.iter().map(|r| {
            let event = events.and_then(|f| f(r));
            self.claim_expired(r, now, event)
        });
        let outcomes = try_join_all(claims).await?;
        for (r, (outcome, queued)) in expired.iter().zip(outcomes) {
            if outcome == KEPT {
                continue; // used or changed since it was read: read again next sweep
            }
            settled += 1;
            settle
                .cmd("ZREM")
                .arg(self.keys.session_expiry(&r.id))
                .arg(&r.id);
            if outcome != DELETED {
                continue;
            }
            metrics::counter!("sessiond_engine_redis_sessions_expired_total").increment(1);
            if let Some(user) = &r.user_id {
                settle
                    .cmd("ZREM")
                    .arg(self.keys.user_sessions(user))
                    .arg(&r.id);
            }
            if queued {
                settle
                    .cmd("SADD")
                    .arg(self.keys.outbox_index())
                    .arg(self.keys.outbox_of_session(&r.id));
            }
        }
        if !settle.is_empty() {
            self.query_pipe::<redis::Value>("session_expiry_settle", &settle)
                .await?;
        }
        Ok(settled)
    }

    /// Runs the claim script for `r` as read; returns its outcome and whether it queued an
    /// event.
    async fn claim_expired(
        &self,
        r: &SessionRecord,
        now: Millis,
        event: Option<Vec<u8>>,
    ) -> Result<(i64, bool)> {
        let mut inv = self
            .scripts
            .session_claim_expired
            .key(self.keys.session(&r.id));
        inv.key(self.keys.outbox_of_session(&r.id));
        inv.arg(now)
            .arg(r.idle_expires_at)
            .arg(r.absolute_expires_at)
            .arg(r.version.to_string())
            .arg(event.as_deref().unwrap_or_default());
        let outcome: i64 = self.eval("session_expire", &inv).await?;
        Ok((outcome, outcome == DELETED && event.is_some()))
    }
}
