//! Ending sessions before their time: one (`DELETE /v1/sessions/{id}`) or all of a user's
//! ("log out everywhere"). Each ending is announced ([`Revocation`]) so that the realtime hub
//! closes what the sessions opened, and recorded as a security event in the same store step.

use serde_json::{Map, Value};
use sessiond_http::ApiError;
use sessiond_http::ApiResult;
use sessiond_store::{now_ms, Deletion, Durability, Millis, SessionOrigin};

use super::{EndReason, Revocation, SessionService};
use crate::security::details;

impl SessionService {
    /// Deletes a session; false if there was none. `if_match` as for updates.
    pub async fn delete(
        &self,
        id: &str,
        if_match: Option<u64>,
        durability: Durability,
    ) -> ApiResult<bool> {
        self.delete_by(id, if_match, durability, None).await
    }

    /// [`delete`](Self::delete) by a caller of credential class `by` (for the event).
    pub async fn delete_by(
        &self,
        id: &str,
        if_match: Option<u64>,
        durability: Durability,
        by: Option<SessionOrigin>,
    ) -> ApiResult<bool> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        let now = now_ms();
        if !self.resident {
            // A shared engine reads, checks and deletes in one step (one round trip).
            return self.delete_unread(id, if_match, now, durability, by).await;
        }
        // The owner is read first only when someone listens for revocations (closing what
        // the session opened needs its user) or an event records it; otherwise a delete
        // stays one store call.
        let mut owner = None;
        let mut event = None;
        if if_match.is_some() || self.revocations.receiver_count() > 0 || self.security.is_some() {
            match self.current(&mut guard, id, now).await {
                Ok(current) => {
                    if let Some(expected) = if_match.filter(|v| *v != current.version) {
                        return Err(ApiError::precondition_failed(format!(
                            "session is at version {}, not {expected}",
                            current.version
                        )));
                    }
                    event = self.event("session.revoked", &current, revoked("revoked", by));
                    owner = current.user_id;
                }
                Err(e) if if_match.is_some() || e.status != axum::http::StatusCode::NOT_FOUND => {
                    return Err(e)
                }
                Err(_) => {}
            }
        }
        let deleted = self
            .store
            .delete_session_with(id, now, event, durability)
            .await?;
        guard.take();
        if deleted {
            self.queued();
        }
        if let Some(user_id) = owner.filter(|_| deleted) {
            let _ = self.revocations.send(Revocation {
                user_id,
                session_ids: vec![id.to_string()],
                all: false,
                reason: EndReason::Revoked,
            });
        }
        Ok(deleted)
    }

    /// [`delete_by`](Self::delete_by) on a shared engine: the store checks `if_match`, fills
    /// in the event and reports the owner (for the announcement) in the step that deletes.
    async fn delete_unread(
        &self,
        id: &str,
        if_match: Option<u64>,
        now: Millis,
        durability: Durability,
        by: Option<SessionOrigin>,
    ) -> ApiResult<bool> {
        let event = self
            .security
            .as_ref()
            .map(|s| s.about_unread("session.revoked", id, revoked("revoked", by)));
        let record = match self
            .store
            .delete_session_checked(id, if_match, now, event.as_ref(), durability)
            .await?
        {
            Deletion::Deleted(record) => record,
            Deletion::VersionMismatch { current } => {
                return Err(ApiError::precondition_failed(format!(
                    "session is at version {current}, not {}",
                    if_match.unwrap_or_default()
                )))
            }
            Deletion::Missing if if_match.is_some() => return Err(super::not_found()),
            Deletion::Missing => return Ok(false),
        };
        self.queued();
        if let Some(user_id) = record.user_id {
            let _ = self.revocations.send(Revocation {
                user_id,
                session_ids: vec![id.to_string()],
                all: false,
                reason: EndReason::Revoked,
            });
        }
        Ok(true)
    }

    /// Revokes the user's sessions except `except`; returns the revoked ids.
    pub async fn revoke_user(
        &self,
        user: &str,
        except: Option<&str>,
        durability: Durability,
    ) -> ApiResult<Vec<String>> {
        self.revoke_user_by(user, except, durability, None).await
    }

    /// [`revoke_user`](Self::revoke_user) by a caller of credential class `by` (for the
    /// events).
    pub async fn revoke_user_by(
        &self,
        user: &str,
        except: Option<&str>,
        durability: Durability,
        by: Option<SessionOrigin>,
    ) -> ApiResult<Vec<String>> {
        let reason = match except {
            None => EndReason::LoggedOut,
            Some(_) => EndReason::Revoked,
        };
        self.end_user_sessions(user, except, durability, by, reason)
            .await
    }

    /// Deletes every session of the user, announced as [`EndReason::Erased`]; returns the ids.
    pub async fn erase_user(&self, user: &str) -> ApiResult<Vec<String>> {
        let reason = EndReason::Erased;
        self.end_user_sessions(user, None, Durability::Confirmed, None, reason)
            .await
    }

    async fn end_user_sessions(
        &self,
        user: &str,
        except: Option<&str>,
        durability: Durability,
        by: Option<SessionOrigin>,
        reason: EndReason,
    ) -> ApiResult<Vec<String>> {
        self.check_id("user id", user)?;
        let _user = self.users.lock(user).await;
        let now = now_ms();
        // Hold the lock of every session about to go, so no read is answered from memory
        // between the store's delete and the eviction of the in-memory copy.
        let mut held = Vec::new();
        if self.resident {
            let listed = self.store.list_user_sessions(user, now, usize::MAX).await?;
            for record in listed.iter().filter(|r| Some(r.id.as_str()) != except) {
                held.push(self.sessions.lock(&record.id).await);
            }
        }
        // An erasure records no per-session events: the security source erases the user's
        // stream right after and appends one `user.erased` instead.
        let recorded = self
            .security
            .as_ref()
            .filter(|_| reason != EndReason::Erased);
        let events = recorded.map(|s| {
            let why = match (reason, except) {
                (EndReason::Erased, _) => "erased",
                (_, None) => "logout_all",
                (_, Some(_)) => "revoked",
            };
            s.for_each("session.revoked", move |_| revoked(why, by))
        });
        let revoked = self
            .store
            .delete_user_sessions_with(user, except, now, events, durability)
            .await?;
        for guard in &mut held {
            guard.take();
        }
        drop(held);
        if self.resident {
            // Sessions created after the listing (none can be: creates take the user lock),
            // or beyond it: drop their copies too.
            for id in &revoked {
                self.sessions.lock(id).await.take();
            }
        }
        self.queued();
        metrics::counter!("sessiond_sessions_revoked_total").increment(revoked.len() as u64);
        // Nobody listening is fine (no realtime hub): the send error is ignored.
        let _ = self.revocations.send(Revocation {
            user_id: user.to_string(),
            session_ids: revoked.clone(),
            all: except.is_none(),
            reason,
        });
        Ok(revoked)
    }
}

/// The details of a `session.revoked` event: why, and the credential class of the caller
/// (`service`: a full key; `open_route`: none, on an `open_routes` route; `null`: not known).
pub(super) fn revoked(reason: &str, by: Option<SessionOrigin>) -> Map<String, Value> {
    details([
        ("reason", reason.into()),
        ("by", by.map(SessionOrigin::as_str).into()),
    ])
}
