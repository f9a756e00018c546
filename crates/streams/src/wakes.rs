//! The wake channel of every stream path, shared by the stream's object (local commits) and by
//! tail notifications from other nodes (`StreamWakes`).
//!
//! Why a registry beside the objects: a notification from another node must reach the readers
//! of a path without taking its lock (a writer may hold it across a round trip) and even while
//! its object is evicted (readers keep waiting on their receiver). So the `watch` sender of a
//! path lives here; the object holds a clone. An entry is dropped only when neither an object
//! nor a reader uses it, so a path never has two channels at once.
//!
//! The same notifications come from an exclusive engine for the streams it appends to itself
//! (`Streams::written_outside`): this process's cache of those is then not the engine's
//! state, so they are reloaded as on a shared engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sessiond_store::{StreamWake, StreamWakes};
use tokio::sync::watch;

/// A path's wake channel: the value is bumped after every change readers must see.
pub type WakeSender = Arc<watch::Sender<u64>>;

/// Smallest registry size that triggers a clean-up pass.
const MIN_CLEANUP: usize = 1024;

/// The registry (one per `Streams`).
#[derive(Default)]
pub struct WakeHub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    paths: HashMap<String, WakeSender>,
    /// Size above which the next insert drops unused entries.
    cleanup_at: usize,
}

impl WakeHub {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel of `path`, created on first use.
    pub fn sender(&self, path: &str) -> WakeSender {
        let mut inner = self.inner();
        if let Some(s) = inner.paths.get(path) {
            return s.clone();
        }
        if inner.paths.len() >= inner.cleanup_at.max(MIN_CLEANUP) {
            inner
                .paths
                .retain(|_, s| Arc::strong_count(s) > 1 || s.receiver_count() > 0);
            inner.cleanup_at = inner.paths.len() * 2;
        }
        let s = Arc::new(watch::Sender::new(0));
        inner.paths.insert(path.to_owned(), s.clone());
        s
    }

    /// Wakes the readers of `path`, if it has any.
    pub fn wake(&self, path: &str) {
        let sender = self.inner().paths.get(path).cloned();
        if let Some(s) = sender {
            bump(&s);
        }
    }

    /// Wakes every reader (notifications may have been missed).
    pub fn wake_all(&self) {
        let senders: Vec<WakeSender> = self.inner().paths.values().cloned().collect();
        for s in senders {
            bump(&s);
        }
    }

    /// Delivers `source`'s notifications to this registry.
    pub fn listen_to(self: &Arc<Self>, source: &dyn StreamWakes) {
        let hub = Arc::downgrade(self);
        source.listen(Arc::new(move |wake: StreamWake<'_>| {
            let Some(hub) = hub.upgrade() else { return };
            crate::metrics::remote_wake();
            match wake {
                StreamWake::Changed(path) => hub.wake(path),
                StreamWake::Resync => hub.wake_all(),
            }
        }));
    }
}

impl crate::Streams {
    /// Declares that the engine itself appends to the streams under `prefix`, in the
    /// transactions of changes it records for another capability (routed events,
    /// `sessiond_store::Outbox::outbox_route`), and announces them through the engine's
    /// `StreamWakes` (which [`listen`](Self::listen) must be given). Such streams' cached
    /// metadata is never trusted, even on an exclusive engine: every lock reloads it, as on a
    /// shared engine, and a reader's snapshot wakes for a change that landed between its load
    /// and its subscription. The first prefix stays (a second call is ignored).
    pub fn written_outside(&self, prefix: &str) {
        let _ = self.outside.set(prefix.to_owned());
    }

    /// Whether this process's cached metadata of `path` is what the engine holds: on an
    /// exclusive engine, for streams nobody else appends to.
    pub(crate) fn trusts_cache(&self, path: &str) -> bool {
        self.exclusive && !self.is_written_outside(path)
    }

    /// Whether the engine appends to `path` itself ([`written_outside`](Self::written_outside)).
    pub(crate) fn is_written_outside(&self, path: &str) -> bool {
        self.outside
            .get()
            .is_some_and(|p| path.starts_with(p.as_str()))
    }
}

/// Bumps a channel's value (wakes its receivers).
pub fn bump(s: &watch::Sender<u64>) {
    s.send_modify(|v| *v = v.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_channel_per_path_until_unused() {
        let hub = WakeHub::default();
        let a = hub.sender("a");
        let rx = a.subscribe();
        assert!(Arc::ptr_eq(&a, &hub.sender("a")));
        hub.wake("a");
        assert!(rx.has_changed().unwrap_or(false));
        hub.wake("nobody");
        drop(a);
        for i in 0..MIN_CLEANUP + 1 {
            hub.sender(&format!("p{i}"));
        }
        // "a" still has a reader: kept (same channel), the unused ones went.
        assert_eq!(hub.sender("a").receiver_count(), 1);
        assert!(hub.inner().paths.len() < MIN_CLEANUP);
    }
}
