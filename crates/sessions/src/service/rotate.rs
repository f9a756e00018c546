//! Rotation: the session continues under a new id, and the old id is dead at once.
//!
//! Why: an id that existed before a login or a privilege change may be known to someone else
//! (fixed by an attacker, or leaked); giving the upgraded session a fresh CSPRNG id means the
//! old one never carries the new privileges. Everything else of the session (user, data,
//! device, creation time, absolute deadline, origin) continues, and the version keeps
//! counting, so a client's bookkeeping stays valid. The store moves the record in one atomic
//! step, so no reader on any node sees both ids or neither; the hub closes the sockets the old
//! id opened (announced like an ending, with [`EndReason::Rotated`]).

use serde_json::{Map, Value};
use sessiond_http::{ids::random_id, ApiError, ApiResult};
use sessiond_store::{now_ms, Durability, RecordWrite, Rotation, SessionRecord};

use super::{not_found, EndReason, Revocation, SessionService, Update, MAX_CAS_RETRIES};

impl SessionService {
    /// Moves the live session `id` to a new id, applying the merge patch `patch` to its data
    /// in the same step. `if_match` as for updates. Returns the session under its new id.
    pub async fn rotate(
        &self,
        id: &str,
        patch: Option<Value>,
        if_match: Option<u64>,
        durability: Durability,
    ) -> ApiResult<SessionRecord> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        let update = Update::MergePatch(patch.clone().unwrap_or(Value::Object(Map::new())));
        for _ in 0..MAX_CAS_RETRIES {
            let now = now_ms();
            let current = self.current(&mut guard, id, now).await?;
            if let Some(expected) = if_match.filter(|v| *v != current.version) {
                return Err(ApiError::precondition_failed(format!(
                    "session is at version {}, not {expected}",
                    current.version
                )));
            }
            // A rotation is a use (the idle deadline slides) and a new version; `updated_at`
            // tells when the data last changed, so it moves only with a patch.
            let mut next = self.apply(&current, &update, now)?;
            if patch.is_none() {
                next.updated_at = current.updated_at;
            }
            next.id = self.store.rotation_id(id, random_id());
            let event = self.event(
                "session.rotated",
                &next,
                crate::security::details([("previous_session_id", id.into())]),
            );
            let write = RecordWrite::new(&next, current.version, now)
                .event(event)
                .durability(durability);
            match self.store.rotate_session(id, write).await? {
                Rotation::Rotated => {
                    self.queued();
                    guard.take();
                    drop(guard);
                    let mut fresh = self.sessions.lock(&next.id).await;
                    self.remember(&mut fresh, &next);
                    drop(fresh);
                    metrics::counter!("sessiond_sessions_rotated_total").increment(1);
                    if let Some(user_id) = next.user_id.clone() {
                        let _ = self.revocations.send(Revocation {
                            user_id,
                            session_ids: vec![id.to_string()],
                            all: false,
                            reason: EndReason::Rotated,
                        });
                    }
                    return Ok(next);
                }
                Rotation::Missing => {
                    guard.take();
                    return Err(not_found());
                }
                // Another node changed it between our read and write: read the store again.
                Rotation::VersionMismatch => {
                    guard.take();
                }
                // A CSPRNG collision with a live id: draw another.
                Rotation::IdTaken => {}
            }
        }
        Err(ApiError::conflict(
            "session is being changed concurrently; retry",
        ))
    }
}
