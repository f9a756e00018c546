//! Sessions and the outbox of the memory engine: one lock covers both, so an event is queued
//! in the same step as the change it records.

use async_trait::async_trait;

use super::{MemoryEngine, State};
use crate::outbox::{Outbox, OutboxItem};
use crate::sessions::{Cas, EventFor, RecordWrite, Rotation, SessionRecord, SessionStore};
use crate::{Durability, Millis, Result};

fn live_session<'a>(s: &'a State, id: &str, now: Millis) -> Option<&'a SessionRecord> {
    s.sessions.get(id).filter(|r| !r.is_expired(now))
}

impl State {
    fn queue(&mut self, event: Option<Vec<u8>>) {
        if let Some(event) = event {
            self.outbox_seq += 1;
            self.outbox.insert(self.outbox_seq, event);
        }
    }

    fn queue_for(&mut self, events: &Option<EventFor>, record: &SessionRecord) {
        let event = events.as_ref().and_then(|f| f(record));
        self.queue(event);
    }
}

#[async_trait]
impl SessionStore for MemoryEngine {
    async fn insert_session_with(
        &self,
        record: &SessionRecord,
        event: Option<Vec<u8>>,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            if live_session(s, &record.id, record.created_at).is_some() {
                return false;
            }
            s.sessions.insert(record.id.clone(), record.clone());
            s.queue(event);
            true
        })
    }

    async fn get_session(&self, id: &str, now: Millis) -> Result<Option<SessionRecord>> {
        self.with(|s| live_session(s, id, now).cloned())
    }

    async fn replace_session(&self, w: RecordWrite<'_>) -> Result<Cas> {
        self.with(|s| match live_session(s, &w.record.id, w.now) {
            None => Cas::Missing,
            Some(old) if old.version != w.expected_version => Cas::VersionMismatch,
            Some(old) => {
                let mut new = w.record.clone();
                new.user_id = old.user_id.clone();
                new.origin = old.origin;
                s.sessions.insert(new.id.clone(), new);
                s.queue(w.event);
                Cas::Written
            }
        })
    }

    async fn rotate_session(&self, old_id: &str, w: RecordWrite<'_>) -> Result<Rotation> {
        self.with(|s| {
            let (user_id, origin) = match live_session(s, old_id, w.now) {
                None => return Rotation::Missing,
                Some(old) if old.version != w.expected_version => return Rotation::VersionMismatch,
                Some(old) => (old.user_id.clone(), old.origin),
            };
            if live_session(s, &w.record.id, w.now).is_some() {
                return Rotation::IdTaken;
            }
            s.sessions.remove(old_id);
            let mut new = w.record.clone();
            new.user_id = user_id;
            new.origin = origin;
            s.sessions.insert(new.id.clone(), new);
            s.queue(w.event);
            Rotation::Rotated
        })
    }

    async fn touch_session(
        &self,
        id: &str,
        idle_expires_at: Millis,
        last_seen_at: Millis,
        now: Millis,
        _: Durability,
    ) -> Result<bool> {
        self.with(
            |s| match s.sessions.get_mut(id).filter(|r| !r.is_expired(now)) {
                None => false,
                Some(r) => {
                    r.idle_expires_at = r.idle_expires_at.max(idle_expires_at);
                    r.last_seen_at = r.last_seen_at.max(last_seen_at);
                    true
                }
            },
        )
    }

    async fn delete_session_with(
        &self,
        id: &str,
        now: Millis,
        event: Option<Vec<u8>>,
        _: Durability,
    ) -> Result<bool> {
        self.with(|s| {
            let live = s.sessions.remove(id).is_some_and(|r| !r.is_expired(now));
            if live {
                s.queue(event);
            }
            live
        })
    }

    async fn list_user_sessions(
        &self,
        user_id: &str,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<SessionRecord>> {
        self.with(|s| {
            let mut list: Vec<SessionRecord> = s
                .sessions
                .values()
                .filter(|r| r.user_id.as_deref() == Some(user_id) && !r.is_expired(now))
                .cloned()
                .collect();
            list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            list.truncate(limit);
            list
        })
    }

    async fn delete_user_sessions_with(
        &self,
        user_id: &str,
        except: Option<&str>,
        now: Millis,
        events: Option<EventFor>,
        _: Durability,
    ) -> Result<Vec<String>> {
        self.with(|s| {
            let doomed: Vec<String> = s
                .sessions
                .values()
                .filter(|r| r.user_id.as_deref() == Some(user_id) && Some(r.id.as_str()) != except)
                .map(|r| r.id.clone())
                .collect();
            let mut gone = Vec::new();
            for id in doomed {
                if let Some(r) = s.sessions.remove(&id).filter(|r| !r.is_expired(now)) {
                    gone.push(r);
                }
            }
            gone.sort_by(|a, b| a.id.cmp(&b.id));
            for r in &gone {
                s.queue_for(&events, r);
            }
            gone.into_iter().map(|r| r.id).collect()
        })
    }

    async fn sweep_sessions_with(
        &self,
        now: Millis,
        batch: usize,
        events: Option<EventFor>,
    ) -> Result<usize> {
        self.with(|s| {
            let doomed: Vec<String> = s
                .sessions
                .values()
                .filter(|r| r.is_expired(now))
                .take(batch)
                .map(|r| r.id.clone())
                .collect();
            for id in &doomed {
                if let Some(r) = s.sessions.remove(id) {
                    s.queue_for(&events, &r);
                }
            }
            doomed.len()
        })
    }
}

#[async_trait]
impl Outbox for MemoryEngine {
    async fn outbox_push(&self, events: Vec<Vec<u8>>, _: Durability) -> Result<()> {
        self.with(|s| events.into_iter().for_each(|e| s.queue(Some(e))))
    }

    async fn outbox_read(&self, limit: usize) -> Result<Vec<OutboxItem>> {
        self.with(|s| {
            s.outbox
                .iter()
                .take(limit)
                .map(|(seq, data)| OutboxItem {
                    key: seq.to_string(),
                    data: data.clone(),
                    queue: "memory".into(),
                    position: Some(*seq),
                    more_in_queue: false,
                })
                .collect::<Vec<_>>()
        })
        .map(|mut items| {
            OutboxItem::mark_limit(&mut items, limit);
            items
        })
    }

    async fn outbox_remove(&self, keys: &[String]) -> Result<()> {
        self.with(|s| {
            for key in keys {
                if let Ok(seq) = key.parse::<u64>() {
                    s.outbox.remove(&seq);
                }
            }
        })
    }
}
