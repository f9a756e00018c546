//! Re-authentication: the user proved who they are again, so the session's `auth_time` moves
//! to now.
//!
//! Why a version bump: `auth_time` is what an edge check's `max_age` compares against, so it
//! must never be set back by a writer that read the session before the re-authentication.
//! Every write of a session is a compare-and-set on its version; bumping it here makes any
//! such stale writer retry from the fresh record instead of overwriting `auth_time` with the
//! old value. It is also a use: the idle deadline slides.

use sessiond_http::{ApiError, ApiResult};
use sessiond_store::{now_ms, Cas, Durability, RecordWrite, SessionRecord};

use super::{not_found, SessionService, MAX_CAS_RETRIES};

impl SessionService {
    /// Sets `auth_time` of the live session `id` to now (never backward). `if_match` as for
    /// updates. Returns the session.
    pub async fn reauth(
        &self,
        id: &str,
        if_match: Option<u64>,
        durability: Durability,
    ) -> ApiResult<SessionRecord> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        for _ in 0..MAX_CAS_RETRIES {
            let now = now_ms();
            let current = self.current(&mut guard, id, now).await?;
            if let Some(expected) = if_match.filter(|v| *v != current.version) {
                return Err(ApiError::precondition_failed(format!(
                    "session is at version {}, not {expected}",
                    current.version
                )));
            }
            let mut next = current.clone();
            next.auth_time = current.auth_time.max(now);
            next.last_seen_at = now;
            next.idle_expires_at = now
                .saturating_add(current.idle_ttl_ms)
                .max(current.idle_expires_at);
            next.version = current.version + 1;
            let event = self.event("session.reauth", &next, serde_json::Map::new());
            let write = RecordWrite::new(&next, current.version, now)
                .event(event)
                .durability(durability);
            match self.store.replace_session(write).await? {
                Cas::Written => {
                    self.remember(&mut guard, &next);
                    self.queued();
                    metrics::counter!("sessiond_sessions_reauth_total").increment(1);
                    return Ok(next);
                }
                Cas::Missing => {
                    guard.take();
                    return Err(not_found());
                }
                Cas::VersionMismatch => {
                    guard.take();
                }
            }
        }
        Err(ApiError::conflict(
            "session is being changed concurrently; retry",
        ))
    }
}
