//! The in-process realtime bus: one node, so "every node" is this process's listeners.
//!
//! It is the reference for the Redis bus in the shared suite: same offsets, same trimming
//! (at least `keep`, everything younger than the window, never more than `max`), same TTL.
//! Listeners are called while the bus lock is held, so per-channel offset order holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::realtime::{BusEvent, BusListener, BusMessage, History, HistoryLimits, RealtimeBus};
use crate::{Millis, Result};

struct Log {
    epoch: String,
    top: u64,
    messages: VecDeque<BusMessage>,
    expires_at: Millis,
}

#[derive(Default)]
struct Inner {
    logs: HashMap<String, Log>,
    listeners: Vec<Arc<dyn BusListener>>,
}

/// The in-process [`RealtimeBus`].
#[derive(Default)]
pub struct MemoryBus {
    inner: Mutex<Inner>,
}

impl MemoryBus {
    /// A bus without channels or listeners.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// The live log of `channel`, created (or restarted, when expired) with `new_epoch`.
    fn log(&mut self, channel: &str, new_epoch: &str, now: Millis, ttl: Millis) -> &mut Log {
        let log = self.logs.entry(channel.to_string()).or_insert_with(|| Log {
            epoch: new_epoch.to_string(),
            top: 0,
            messages: VecDeque::new(),
            expires_at: now + ttl,
        });
        if log.expires_at <= now {
            *log = Log {
                epoch: new_epoch.to_string(),
                top: 0,
                messages: VecDeque::new(),
                expires_at: now + ttl,
            };
        }
        log.expires_at = now + ttl;
        log
    }

    fn deliver(&self, event: &BusEvent) {
        for listener in &self.listeners {
            listener.deliver(event);
        }
    }
}

fn trim(log: &mut Log, now: Millis, limits: &HistoryLimits) {
    while let Some(front) = log.messages.front() {
        let over_cap = log.messages.len() > limits.max;
        let beyond_count = log.messages.len() > limits.keep;
        if over_cap || (beyond_count && now - front.ts > limits.window_ms) {
            log.messages.pop_front();
        } else {
            break;
        }
    }
}

#[async_trait]
impl RealtimeBus for MemoryBus {
    async fn publish(
        &self,
        channel: &str,
        payload: &str,
        new_epoch: &str,
        now: Millis,
        limits: &HistoryLimits,
    ) -> Result<(String, u64)> {
        let mut inner = self.lock();
        inner.logs.retain(|_, log| log.expires_at > now);
        let log = inner.log(channel, new_epoch, now, limits.ttl_ms);
        log.top += 1;
        let message = BusMessage {
            channel: channel.to_string(),
            epoch: log.epoch.clone(),
            offset: log.top,
            ts: now,
            payload: payload.to_string(),
        };
        log.messages.push_back(message.clone());
        trim(log, now, limits);
        let out = (message.epoch.clone(), message.offset);
        inner.deliver(&BusEvent::Message(message));
        Ok(out)
    }

    async fn history(
        &self,
        channel: &str,
        after: u64,
        new_epoch: &str,
        now: Millis,
        limits: &HistoryLimits,
    ) -> Result<History> {
        let mut inner = self.lock();
        let log = inner.log(channel, new_epoch, now, limits.ttl_ms);
        Ok(History {
            epoch: log.epoch.clone(),
            top: log.top,
            messages: log
                .messages
                .iter()
                .filter(|m| m.offset > after)
                .cloned()
                .collect(),
        })
    }

    async fn signal(&self, payload: &str) -> Result<()> {
        self.lock().deliver(&BusEvent::Signal(payload.to_string()));
        Ok(())
    }

    fn listen(&self, listener: Arc<dyn BusListener>) {
        listener.deliver(&BusEvent::Resync);
        self.lock().listeners.push(listener);
    }
}
