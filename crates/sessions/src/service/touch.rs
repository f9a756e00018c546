//! An explicit "I am still here": the app extends a session's idle deadline without reading
//! or changing it (e.g. when the user answers an expiry warning).
//!
//! Unlike the lazy slide of a read, which writes only when the deadline moved by
//! `touch_fraction`, an explicit touch always writes (with the caller's durability): the
//! caller asked for the extension and must be able to rely on it. The version stays, so a
//! client's `If-Match` remains valid.

use sessiond_http::ApiResult;
use sessiond_store::{now_ms, Durability, SessionRecord};

use super::{not_found, SessionService};

impl SessionService {
    /// Slides the idle deadline of the live session `id` to now + its idle window (never
    /// past the absolute deadline, never backward); returns the session. 404 when absent or
    /// expired.
    pub async fn touch(&self, id: &str, durability: Durability) -> ApiResult<SessionRecord> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        let now = now_ms();
        if !self.resident {
            // A shared engine reads and slides in one step (one round trip).
            return self
                .store
                .touch_session_now(id, now, durability)
                .await?
                .ok_or_else(not_found);
        }
        let mut record = self.current(&mut guard, id, now).await?;
        let slid = now.saturating_add(record.idle_ttl_ms);
        if !self
            .store
            .touch_session(id, slid, now, now, durability)
            .await?
        {
            guard.take();
            return Err(not_found());
        }
        record.idle_expires_at = record.idle_expires_at.max(slid);
        record.last_seen_at = record.last_seen_at.max(now);
        self.remember(&mut guard, &record);
        Ok(record)
    }
}
