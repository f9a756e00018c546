//! The per-client object: what is stored for one cID, its lock, its rate window and its TTL.
//!
//! One runtime object per client serializes that client's decisions (two parallel requests of
//! one browser cannot both start a session). Its stored state is the last (cID, sID, eID); the
//! times are inside the ids. On an engine exclusive to this process the state stays cached in
//! the object between requests; on a shared engine (Redis, several nodes) it is re-read from
//! the store every time, because another node may have decided since.
//!
//! A client is stored from its first return on, never at its first visit (see
//! [`crate::decide`]). The TTL (seed A's 90-day `DO_TTL_SECONDS`) is one alarm per client,
//! armed when the state is created. A did a storage write per request to push it forward; here the alarm handler looks
//! at the last activity when it fires and either re-arms at `last activity + TTL` or deletes
//! the state, under the object's lock and dropping the cached copy too (A's alarm left its
//! in-memory cache alive, bug 11).
//!
//! Writes are unconfirmed (acknowledged before the fsync): these are analytics ids, and a
//! crash that loses the last write costs at most a rehydration from the client's signed cookie.
//!
//! On an exclusive engine the write of a decision that only moves the eID (same cID and sID)
//! is skipped while the persisted copy's activity is less than a tenth of the session timeout
//! old ([`WRITE_BEHIND_FRACTION`]): the cached state is authoritative there, and a returning
//! request would otherwise cost a storage write (in the forward-auth benchmark, ~20 µs of the
//! ~50 µs of CPU a returning decision took). What an idle eviction or a restart can lose is
//! that little activity, and the decision takes the newer of the stored and the cookie's
//! signed last activity, so even that does not rotate a session early. The TTL alarm writes
//! the cached state through before it judges the client.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sessiond_runtime::{AlarmError, AlarmHandler, Alarms, ObjectGuard, ObjectKind};
use sessiond_store::{now_ms, Durability, Millis, ObjectStore, StoreError};

use crate::ids::id_time;
use crate::metrics::Metrics;

/// Object kind of client states (in the store and in alarms).
pub const KIND: &str = "mw_client";
/// Name of the TTL alarm.
const TTL_ALARM: &str = "ttl";
/// On an exclusive engine, an activity-only change is written once the persisted activity is
/// older than `session_timeout / WRITE_BEHIND_FRACTION`.
pub const WRITE_BEHIND_FRACTION: u64 = 10;

/// What is persisted per client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    /// Client id (also the object key).
    #[serde(rename = "cID")]
    pub cid: String,
    /// Current session id.
    #[serde(rename = "sID")]
    pub sid: String,
    /// Last event id; its time is the last activity.
    #[serde(rename = "eID")]
    pub eid: String,
}

impl ClientState {
    /// Last activity: the time of the eID, else the sID, else the cID.
    pub fn last_activity(&self) -> Option<Millis> {
        [&self.eid, &self.sid, &self.cid]
            .into_iter()
            .find_map(|id| id_time(id))
    }
}

/// The in-memory part of a client object.
#[derive(Debug, Default)]
pub struct ClientSlot {
    /// The cached stored state (authoritative only on an exclusive engine).
    pub(crate) stored: Option<ClientState>,
    /// What the store holds, as far as this process wrote or read it.
    persisted: Option<ClientState>,
    /// Start of the current one-second rate window (unix ms).
    window_start: Millis,
    /// Decisions in the current window.
    window_count: u32,
}

impl ClientSlot {
    /// Counts one decision at `now`; false when `limit` per second is exceeded.
    pub(crate) fn admit(&mut self, now: Millis, limit: u32) -> bool {
        if now.saturating_sub(self.window_start) >= 1000 || now < self.window_start {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        self.window_count <= limit
    }
}

/// Storage of client states: the store, the lock table and the TTL.
#[derive(Clone)]
pub struct Clients {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) objects: ObjectKind<ClientSlot>,
    pub(crate) alarms: Alarms,
    pub(crate) resident: bool,
    pub(crate) ttl_ms: Millis,
    /// Activity-only changes younger than this are not written (resident engines only).
    pub(crate) write_behind_ms: Millis,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("middleware client state: {e}"))
}

impl Clients {
    /// The stored state of the locked client (cached on an exclusive engine).
    pub(crate) async fn load(
        &self,
        guard: &mut ObjectGuard<ClientSlot>,
    ) -> Result<Option<ClientState>, StoreError> {
        if self.resident {
            if let Some(state) = guard.as_ref().and_then(|s| s.stored.clone()) {
                return Ok(Some(state));
            }
        }
        let bytes = self.store.load_object(KIND, guard.key()).await?;
        let state = match bytes {
            Some(b) => Some(serde_json::from_slice::<ClientState>(&b).map_err(corrupt)?),
            None => None,
        };
        let slot = guard.get_or_insert_with(ClientSlot::default);
        slot.stored = state.clone();
        slot.persisted = state.clone();
        Ok(state)
    }

    /// Writes the locked client's state through and caches it.
    pub(crate) async fn save(
        &self,
        guard: &mut ObjectGuard<ClientSlot>,
        state: ClientState,
    ) -> Result<(), StoreError> {
        let slot = guard.get_or_insert_with(ClientSlot::default);
        let recent = slot.persisted.as_ref().is_some_and(|p| {
            p.cid == state.cid
                && p.sid == state.sid
                && state
                    .last_activity()
                    .zip(p.last_activity())
                    .is_some_and(|(new, old)| new.saturating_sub(old) < self.write_behind_ms)
        });
        if self.resident && recent {
            slot.stored = Some(state);
            return Ok(());
        }
        self.write(guard, state).await
    }

    async fn write(
        &self,
        guard: &mut ObjectGuard<ClientSlot>,
        state: ClientState,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&state).map_err(corrupt)?;
        self.store
            .save_object(KIND, guard.key(), &bytes, Durability::Unconfirmed)
            .await?;
        let slot = guard.get_or_insert_with(ClientSlot::default);
        slot.persisted = Some(state.clone());
        slot.stored = Some(state);
        Ok(())
    }

    /// Writes the cached state through if the store lags behind it.
    async fn flush(&self, guard: &mut ObjectGuard<ClientSlot>) -> Result<(), StoreError> {
        let Some(slot) = guard.as_ref() else {
            return Ok(());
        };
        match (&slot.stored, &slot.persisted) {
            (Some(stored), persisted) if persisted.as_ref() != Some(stored) => {
                let stored = stored.clone();
                self.write(guard, stored).await
            }
            _ => Ok(()),
        }
    }

    /// Arms the TTL alarm of a client whose state was just created.
    pub(crate) async fn arm_ttl(&self, cid: &str, now: Millis) -> Result<(), StoreError> {
        self.alarms
            .set(KIND, cid, TTL_ALARM, now.saturating_add(self.ttl_ms), "")
            .await
            .map_err(|e| match e {
                sessiond_runtime::RuntimeError::Store(s) => s,
                other => StoreError::Unavailable(other.to_string()),
            })
    }
}

/// Fires the TTL alarm: re-arms while the client was active within the TTL, else deletes.
pub(crate) struct TtlHandler {
    pub(crate) clients: Clients,
    pub(crate) metrics: Metrics,
}

#[async_trait]
impl AlarmHandler for TtlHandler {
    async fn fire(&self, key: &str, _name: &str, _payload: &str) -> Result<(), AlarmError> {
        let clients = &self.clients;
        let mut guard = clients.objects.lock(key).await;
        // Activity kept only in memory (write-behind) first; then read the store, because the
        // cached copy may be stale on a shared engine.
        if clients.resident {
            clients.flush(&mut guard).await?;
        }
        if let Some(slot) = guard.as_mut() {
            slot.stored = None;
        }
        let state = clients.load(&mut guard).await?;
        let Some(state) = state else {
            return Ok(());
        };
        let now = now_ms();
        let due = state
            .last_activity()
            .unwrap_or(0)
            .saturating_add(clients.ttl_ms);
        if due > now {
            let delay = Duration::from_millis(u64::try_from(due - now).unwrap_or(0));
            return clients
                .alarms
                .set_in(KIND, key, TTL_ALARM, delay, "")
                .await
                .map_err(AlarmError::from);
        }
        clients
            .store
            .delete_object(KIND, key, Durability::Confirmed)
            .await?;
        if let Some(slot) = guard.as_mut() {
            slot.stored = None;
            slot.persisted = None;
        }
        self.metrics.expired.increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decider, DecisionInput, MiddlewareConfig, NoSink};
    use sessiond_runtime::{Runtime, RuntimeConfig};

    /// The Cookie header a browser sends back after storing `set_cookies`.
    fn jar(set_cookies: &[String]) -> String {
        set_cookies
            .iter()
            .filter_map(|c| c.split(';').next())
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[tokio::test]
    async fn activity_only_changes_are_written_behind_only_on_exclusive_engines() {
        for resident in [true, false] {
            let store: Arc<dyn ObjectStore> = Arc::new(sessiond_store::memory::MemoryEngine::new());
            let mut builder = Runtime::builder(store.clone(), RuntimeConfig::default());
            let config = MiddlewareConfig {
                signing_keys: vec!["k".repeat(32)],
                ..MiddlewareConfig::default()
            };
            let decider = Decider::new(
                config,
                &mut builder,
                store.clone(),
                resident,
                Arc::new(NoSink),
            )
            .expect("decider");
            let runtime = builder.start();
            let first = decider
                .decide(&DecisionInput::default())
                .await
                .expect("first");
            // A first visit stores nothing.
            let none = store.load_object(KIND, &first.session.cid).await;
            assert_eq!(none.expect("load"), None, "resident = {resident}");
            let input = DecisionInput {
                cookie: Some(jar(&first.set_cookies)),
                ..DecisionInput::default()
            };
            let second = decider.decide(&input).await.expect("second");
            assert_eq!(second.session.sid, first.session.sid);
            let third = decider.decide(&input).await.expect("third");
            let bytes = store
                .load_object(KIND, &first.session.cid)
                .await
                .expect("load")
                .expect("state");
            let stored: ClientState = serde_json::from_slice(&bytes).expect("json");
            let expected = if resident {
                &second.session.eid
            } else {
                &third.session.eid
            };
            assert_eq!(&stored.eid, expected, "resident = {resident}");
            // The next decision still sees the latest activity (the cached state).
            let fourth = decider.decide(&input).await.expect("fourth");
            assert_eq!(
                fourth.session.old_state.eid,
                Some(third.session.eid.clone())
            );
            runtime.shutdown().await;
        }
    }

    #[test]
    fn rate_window_resets_each_second() {
        let mut slot = ClientSlot::default();
        assert!(slot.admit(10_000, 2));
        assert!(slot.admit(10_100, 2));
        assert!(!slot.admit(10_200, 2));
        assert!(slot.admit(11_000, 2));
    }
}
