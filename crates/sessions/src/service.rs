//! Session lifecycle: the rules every route (native and compat) goes through.
//!
//! Why this shape:
//! - Every change of one session runs under the object runtime's lock for that session id, so a
//!   read-modify-write (merge patch) is atomic on this node without retries; the store's
//!   compare-and-set on `version` keeps it atomic across nodes too (a lost race retries). On a
//!   shared engine the store applies the change itself, security event included
//!   (`update_session_data`: one Redis round trip, however many nodes write the session).
//! - Creates for one user run under that user's lock, so the per-user limit (evict the oldest)
//!   cannot be overshot by parallel logins.
//! - Reads slide the idle deadline but only write it when it moved by `touch_fraction` of the
//!   idle window, with an unconfirmed write: losing a touch in a crash only shortens a
//!   session's life by that fraction, and reads stay reads.
//! - When this process is the only one writing the data (an exclusive engine: SQLite, memory),
//!   a session that was used recently stays in memory as its object's state, like a Durable
//!   Object's in-memory state: reads are served from it, every change updates it under the
//!   object's lock, and the runtime evicts it when idle. On a shared engine (Redis, several
//!   nodes) every read goes to the store, because another node may have changed the record.

use std::sync::Arc;

use serde_json::{Map, Value};
use sessiond_http::{ids::random_id, ApiError, ApiResult};
use sessiond_runtime::{ObjectGuard, ObjectKind};
use sessiond_store::{
    now_ms, Cas, Durability, Millis, RecordWrite, SessionOrigin, SessionRecord, SessionStore,
};

use crate::config::SessionsConfig;
use crate::security::{details, SecurityEvents};

pub use edge::{parse_max_age, EdgeVerdict, MAX_AGE_HEADER};

mod edge;
mod events;
mod reauth;
mod revoke;
mod rotate;
mod store_update;
mod touch;
use crate::merge::{merge_patch, shallow_merge};
use sessiond_store::changed_keys;

/// A session to create.
#[derive(Debug, Default)]
pub struct NewSession {
    /// Owner.
    pub user_id: Option<String>,
    /// Initial data.
    pub data: Map<String, Value>,
    /// Idle timeout in seconds (default from config).
    pub idle_ttl_s: Option<u64>,
    /// Absolute lifetime in seconds (default from config).
    pub absolute_ttl_s: Option<u64>,
    /// Device description.
    pub device: Option<Value>,
    /// Whether the request carried a service credential ([`SessionOrigin`]); decides which
    /// per-user budget the session counts against and whether it may prove an identity.
    pub origin: SessionOrigin,
}

/// How an update changes the data.
#[derive(Debug)]
pub enum Update {
    /// Replace the whole data object.
    Replace(Map<String, Value>),
    /// RFC 7396 merge patch.
    MergePatch(Value),
    /// Top-level merge (`{...old, ...new}`), the seeds' semantics.
    Shallow(Map<String, Value>),
}

/// Sessions that ended before their time — revoked through [`SessionService::revoke_user`],
/// deleted one by one ([`SessionService::delete`]) or evicted by the per-user cap — or whose
/// id was rotated away ([`SessionService::rotate`]), announced
/// so that other capabilities (the realtime hub) can close what those sessions opened. The
/// sessions capability does not know who listens. (Expiry is not announced here: nothing
/// happens at an expiry instant in the store, so the listener watches the deadlines of the
/// sessions it cares about itself.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Whose sessions.
    pub user_id: String,
    /// The revoked session ids.
    pub session_ids: Vec<String>,
    /// True when every session of the user was revoked (no `except`): "log out everywhere".
    pub all: bool,
    /// Why they ended.
    pub reason: EndReason,
}

/// Why sessions ended early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Deleted one by one, or all but one (`except`).
    Revoked,
    /// Every session of the user revoked: log out everywhere.
    LoggedOut,
    /// Evicted to make room under the per-user cap.
    Evicted,
    /// The user was erased (`DELETE /v1/users/{u}`).
    Erased,
    /// Not an ending: the session continues under a new id ([`SessionService::rotate`]);
    /// what the old id opened must close all the same.
    Rotated,
}

/// Revocations buffered per listener before a slow one starts missing them.
const REVOCATION_BUFFER: usize = 1024;

/// The session service. Cheap to clone.
#[derive(Clone)]
pub struct SessionService {
    store: Arc<dyn SessionStore>,
    config: Arc<SessionsConfig>,
    sessions: ObjectKind<SessionRecord>,
    users: ObjectKind<()>,
    /// Keep used sessions in memory (only when the engine is exclusive to this process).
    resident: bool,
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    /// Security events, when recorded.
    security: Option<SecurityEvents>,
}

/// A created session and whether its device is new for its user (`None`: not computed,
/// security events are off or the session proves no identity).
#[derive(Debug)]
pub struct Created {
    /// The stored session.
    pub record: SessionRecord,
    /// The new-device signal.
    pub new_device: Option<bool>,
}

const MAX_CAS_RETRIES: usize = 64;

impl SessionService {
    /// A service over `store`, serializing per session and per user through runtime kinds.
    /// `resident` keeps used sessions in memory; pass true only when no other process writes
    /// the store (`EngineAdmin::exclusive`).
    pub fn new(
        store: Arc<dyn SessionStore>,
        config: Arc<SessionsConfig>,
        sessions: ObjectKind<SessionRecord>,
        users: ObjectKind<()>,
        resident: bool,
    ) -> Self {
        SessionService {
            store,
            config,
            sessions,
            users,
            resident,
            revocations: tokio::sync::broadcast::channel(REVOCATION_BUFFER).0,
            security: None,
        }
    }

    /// Announcements of revoked sessions (see [`Revocation`]).
    pub fn subscribe_revocations(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    /// Rejects ids that are empty or longer than the limit (400).
    pub fn check_id(&self, what: &str, id: &str) -> ApiResult<()> {
        if id.is_empty() {
            return Err(ApiError::bad_request(format!("{what} must not be empty")));
        }
        if id.len() > self.config.max_id_bytes {
            return Err(ApiError::bad_request(format!(
                "{what} is longer than {} bytes",
                self.config.max_id_bytes
            )));
        }
        Ok(())
    }

    /// Serializes a JSON value, refusing it when above the value limit (413).
    pub fn encode_value(&self, what: &str, value: &Value) -> ApiResult<String> {
        let text = serde_json::to_string(value).map_err(ApiError::internal)?;
        if text.len() > self.config.max_value_bytes {
            return Err(ApiError::too_large(format!(
                "{what} is {} bytes, above the limit of {} bytes",
                text.len(),
                self.config.max_value_bytes
            )));
        }
        Ok(text)
    }

    /// Creates a session; evicts the user's oldest sessions beyond the per-user limit.
    pub async fn create(
        &self,
        new: NewSession,
        durability: Durability,
    ) -> ApiResult<SessionRecord> {
        Ok(self.create_signalled(new, durability).await?.record)
    }

    /// [`create`](Self::create), also answering the new-device signal.
    pub async fn create_signalled(
        &self,
        new: NewSession,
        durability: Durability,
    ) -> ApiResult<Created> {
        if let Some(user) = &new.user_id {
            self.check_id("user_id", user)?;
        }
        let idle_s = new.idle_ttl_s.unwrap_or(self.config.idle_ttl_s);
        let absolute_s = new.absolute_ttl_s.unwrap_or(self.config.absolute_ttl_s);
        if idle_s == 0 || idle_s > self.config.max_idle_ttl_s {
            return Err(ApiError::bad_request(format!(
                "idle_ttl_s must be within 1..={}",
                self.config.max_idle_ttl_s
            )));
        }
        if absolute_s == 0 || absolute_s > self.config.max_absolute_ttl_s {
            return Err(ApiError::bad_request(format!(
                "absolute_ttl_s must be within 1..={}",
                self.config.max_absolute_ttl_s
            )));
        }
        let data = self.encode_value("session data", &Value::Object(new.data))?;
        let device = match &new.device {
            None => None,
            Some(v @ Value::Object(_)) => Some(self.encode_value("device", v)?),
            Some(_) => return Err(ApiError::bad_request("device must be a JSON object")),
        };
        let now = now_ms();
        let idle_ttl_ms = secs_to_ms(idle_s);
        let record = SessionRecord {
            id: random_id(),
            user_id: new.user_id,
            data,
            device,
            created_at: now,
            updated_at: now,
            last_seen_at: now,
            idle_ttl_ms,
            idle_expires_at: now.saturating_add(idle_ttl_ms),
            absolute_expires_at: now.saturating_add(secs_to_ms(absolute_s)),
            version: 1,
            origin: new.origin,
            auth_time: now,
        };
        let _user_guard = match &record.user_id {
            Some(user) => Some(self.users.lock(user).await),
            None => None,
        };
        let device = new.device.as_ref();
        let new_device = self.new_device_signal(&record, device).await;
        // Where the engine can tell at once that the user is below the cap, the insert is one
        // step with that check (no listing first); else list, evict, insert.
        let quick = match &record.user_id {
            Some(_) => {
                let cap = self.user_cap(record.origin);
                let event = self.created_event(&record, device, new_device);
                self.store
                    .insert_session_if_room(&record, cap, event.as_deref(), durability)
                    .await?
            }
            None => None,
        };
        let inserted = match quick {
            Some(inserted) => inserted,
            None => {
                if let Some(user) = &record.user_id {
                    self.evict_beyond_limit(user, record.origin, now, durability)
                        .await?;
                }
                // Built after the evictions, so it follows their events.
                let event = self.created_event(&record, device, new_device);
                self.store
                    .insert_session_with(&record, event, durability)
                    .await?
            }
        };
        if !inserted {
            return Err(ApiError::internal(
                "random session id collided with a live session",
            ));
        }
        self.queued();
        metrics::counter!("sessiond_sessions_created_total").increment(1);
        Ok(Created { record, new_device })
    }

    /// The per-user cap of sessions of `origin`: keyed and open-route sessions have separate
    /// budgets, so anonymous creates on an open route can never evict a keyed login.
    pub fn user_cap(&self, origin: SessionOrigin) -> usize {
        match origin {
            SessionOrigin::Service => self.config.max_sessions_per_user,
            SessionOrigin::OpenRoute => self.config.max_open_route_sessions_per_user,
        }
    }

    /// Makes room for one more session of `user` of `origin` (oldest of that origin first).
    async fn evict_beyond_limit(
        &self,
        user: &str,
        origin: SessionOrigin,
        now: Millis,
        durability: Durability,
    ) -> ApiResult<()> {
        let max = self.user_cap(origin);
        // Each origin is held to its own cap, so both together fit in this listing.
        let all = self.config.max_sessions_per_user + self.config.max_open_route_sessions_per_user;
        let live: Vec<SessionRecord> = self
            .store
            .list_user_sessions(user, now, all + 1)
            .await?
            .into_iter()
            .filter(|r| r.origin == origin)
            .collect();
        if live.len() < max {
            return Ok(());
        }
        let mut evicted = Vec::new();
        for old in &live[..=live.len() - max] {
            let mut guard = self.sessions.lock(&old.id).await;
            let event = self.event("session.evicted", old, details([("reason", "cap".into())]));
            if self
                .store
                .delete_session_with(&old.id, now, event, durability)
                .await?
            {
                evicted.push(old.id.clone());
            }
            guard.take();
            metrics::counter!("sessiond_sessions_evicted_total").increment(1);
        }
        if !evicted.is_empty() {
            self.queued();
            let _ = self.revocations.send(Revocation {
                user_id: user.to_string(),
                session_ids: evicted,
                all: false,
                reason: EndReason::Evicted,
            });
        }
        Ok(())
    }

    /// The live session without sliding its deadline (for watchers such as the realtime
    /// hub, whose checks must not keep a session alive). `None` when absent or expired.
    pub async fn peek(&self, id: &str) -> ApiResult<Option<SessionRecord>> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        match self.current(&mut guard, id, now_ms()).await {
            Ok(record) => Ok(Some(record)),
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The live session, sliding its idle deadline. 404 when absent or expired.
    pub async fn get(&self, id: &str) -> ApiResult<SessionRecord> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        let now = now_ms();
        let mut record = self.current(&mut guard, id, now).await?;
        let slid = now.saturating_add(record.idle_ttl_ms);
        let step = (record.idle_ttl_ms as f64 * self.config.touch_fraction) as Millis;
        if slid.saturating_sub(record.idle_expires_at) >= step.max(1) {
            if !self
                .store
                .touch_session(id, slid, now, now, Durability::Unconfirmed)
                .await?
            {
                guard.take();
                return Err(not_found());
            }
            record.idle_expires_at = slid;
            record.last_seen_at = now;
            self.remember(&mut guard, &record);
        }
        Ok(record)
    }

    /// The live record: the object's in-memory state when resident, else the store's (then
    /// kept in memory when allowed).
    async fn current(
        &self,
        guard: &mut ObjectGuard<SessionRecord>,
        id: &str,
        now: Millis,
    ) -> ApiResult<SessionRecord> {
        if self.resident {
            match guard.state() {
                Some(record) if !record.is_expired(now) => return Ok(record.clone()),
                Some(_) => {
                    guard.take();
                    return Err(not_found());
                }
                None => {}
            }
        }
        let record = self
            .store
            .get_session(id, now)
            .await?
            .ok_or_else(not_found)?;
        self.remember(guard, &record);
        Ok(record)
    }

    /// Keeps `record` as the object's in-memory state (on exclusive engines only).
    fn remember(&self, guard: &mut ObjectGuard<SessionRecord>, record: &SessionRecord) {
        if self.resident {
            guard.set(record.clone());
        }
    }

    /// Applies `update` atomically. `if_match` is the version the client last saw.
    pub async fn update(
        &self,
        id: &str,
        update: Update,
        if_match: Option<u64>,
        durability: Durability,
    ) -> ApiResult<SessionRecord> {
        self.check_id("session id", id)?;
        let mut guard = self.sessions.lock(id).await;
        // On a shared engine the store applies the change itself, and fills in its security
        // event (the keys that changed, the version) in the same step.
        if !self.resident {
            return self
                .update_in_store(id, &update, if_match, durability)
                .await;
        }
        for _ in 0..MAX_CAS_RETRIES {
            let now = now_ms();
            let current = self.current(&mut guard, id, now).await?;
            if let Some(expected) = if_match {
                if expected != current.version {
                    return Err(ApiError::precondition_failed(format!(
                        "session is at version {}, not {expected}",
                        current.version
                    )));
                }
            }
            let next = self.apply(&current, &update, now)?;
            let event = self.security.as_ref().map(|s| {
                let more = details([
                    ("version", next.version.into()),
                    ("changed", changed_keys(&current.data, &next.data).into()),
                ]);
                s.about("session.context_changed", &next, more)
            });
            let write = RecordWrite::new(&next, current.version, now)
                .event(event)
                .durability(durability);
            match self.store.replace_session(write).await? {
                Cas::Written => {
                    self.remember(&mut guard, &next);
                    self.queued();
                    return Ok(next);
                }
                Cas::Missing => {
                    guard.take();
                    return Err(not_found());
                }
                // Another node changed it between our read and write: read the store again.
                Cas::VersionMismatch => {
                    guard.take();
                }
            }
        }
        Err(ApiError::conflict(
            "session is being changed concurrently; retry",
        ))
    }

    fn apply(
        &self,
        current: &SessionRecord,
        update: &Update,
        now: Millis,
    ) -> ApiResult<SessionRecord> {
        let old: Map<String, Value> = serde_json::from_str(&current.data).map_err(|e| {
            ApiError::internal(format!("stored session data is not an object: {e}"))
        })?;
        let data = match update {
            Update::Replace(data) => Value::Object(data.clone()),
            Update::Shallow(addition) => {
                let mut merged = old;
                shallow_merge(&mut merged, addition.clone());
                Value::Object(merged)
            }
            Update::MergePatch(patch) => {
                let mut merged = Value::Object(old);
                merge_patch(&mut merged, patch);
                if !merged.is_object() {
                    return Err(not_an_object());
                }
                merged
            }
        };
        let mut next = current.clone();
        next.data = self.encode_value("session data", &data)?;
        next.updated_at = now;
        next.last_seen_at = now;
        next.idle_expires_at = now
            .saturating_add(current.idle_ttl_ms)
            .max(current.idle_expires_at);
        next.version = current.version + 1;
        Ok(next)
    }

    /// The user's live sessions, oldest first.
    pub async fn list_user(&self, user: &str) -> ApiResult<Vec<SessionRecord>> {
        self.check_id("user id", user)?;
        let all = self.config.max_sessions_per_user + self.config.max_open_route_sessions_per_user;
        Ok(self.store.list_user_sessions(user, now_ms(), all).await?)
    }
}

pub(super) fn not_an_object() -> ApiError {
    ApiError::bad_request("the patch must leave session data a JSON object")
}

pub(super) fn not_found() -> ApiError {
    ApiError::not_found("session not found or expired")
}

/// Seconds to milliseconds, saturating.
pub fn secs_to_ms(s: u64) -> Millis {
    Millis::try_from(s)
        .unwrap_or(Millis::MAX / 1000)
        .saturating_mul(1000)
}
