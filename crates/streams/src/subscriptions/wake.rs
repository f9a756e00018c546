//! Wakes: when a subscription has pending work it gets a new generation and wake id, the wake
//! is recorded (durably) and then delivered; acks move cursors; leases and retries are timers.
//!
//! Rules (PROTOCOL.md §7): a subscription is idle when no wake is in flight and no lease is
//! held (a lapsed lease counts as none, so any node that looks at it first moves on); pending work on an idle subscription issues a wake, unless a webhook retry is
//! scheduled for later. A lapsed lease clears the wake (its token stops working) and, if work
//! remains, issues a new one. Webhook retries back off exponentially from 1 s to 60 s with
//! ±20 % jitter. Acks are "last processed, inclusive" byte positions and never move a cursor
//! backwards.

use std::collections::BTreeMap;

use sessiond_store::{now_ms, Durability, Millis};

use super::error::{SubError, SubResult};
use super::model::{AckEntry, Delivery, Link, Retry, Subscription, Wake};
use super::observe::Change;
use super::{glob, SubGuard, Subscriptions};
use crate::offset;
use crate::service::stream;

/// Backoff before retry number `attempt` (1-based): 1 s doubling up to 60 s, ±20 % jitter.
pub fn backoff_ms(attempt: u32) -> u64 {
    let base = 1_000u64
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(6))
        .min(60_000);
    let mut r = [0u8; 2];
    let unit = match getrandom::fill(&mut r) {
        Ok(()) => f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    };
    let jitter = 0.8 + 0.4 * unit;
    (base as f64 * jitter) as u64
}

impl Subscriptions {
    /// The tail of a live stream, if it exists.
    pub(crate) async fn tail_of(&self, path: &str) -> Option<u64> {
        let g = self.inner.streams.lock(path).await.ok()?;
        stream(&g).filter(|s| !s.info.soft_deleted)?;
        g.state().and_then(|o| o.visible_tail())
    }

    /// Where a new link of `path` starts for `sub`, first seen by a change that wrote from
    /// `before`: a stream created after the subscription is followed from its first byte
    /// (on several nodes its first write may be observed after a later one), an older one
    /// from `before`.
    async fn link_start(&self, sub: &Subscription, path: &str, before: u64) -> u64 {
        let Ok(g) = self.inner.streams.lock(path).await else {
            return before;
        };
        match stream(&g) {
            Some(s) if s.info.created_at >= sub.created_at => s.info.start.min(before),
            _ => before,
        }
    }

    /// Linked streams whose tail is past their cursor, with those tails: at most
    /// `max_streams_per_wake` of them (the rest are picked up by the next wake).
    pub(crate) async fn pending(&self, sub: &Subscription) -> BTreeMap<String, u64> {
        let max = self.inner.config.max_streams_per_wake;
        let mut out = BTreeMap::new();
        for (path, link) in &sub.links {
            if out.len() >= max {
                break;
            }
            if let Some(tail) = self.tail_of(path).await {
                if tail > link.acked {
                    out.insert(path.clone(), tail);
                }
            }
        }
        out
    }

    /// Writes the cached record through (the caller changed it under the lock), arming its
    /// alarm first (so no crash leaves a lease without a timer). `raced` when another node
    /// wrote the record since it was loaded (nothing written; reload and decide again).
    pub(crate) async fn save(&self, g: &mut SubGuard) -> SubResult<()> {
        if let Some(at) = g.state().and_then(Subscription::next_due) {
            let id = g.key().to_owned();
            self.arm(&id, at).await?;
        }
        if !g.persist_checked(Durability::Confirmed).await? {
            return Err(SubError::raced());
        }
        Ok(())
    }

    /// Issues a wake if the locked subscription is idle and has pending work. True if issued.
    pub(crate) async fn maybe_wake(&self, g: &mut SubGuard, now: Millis) -> SubResult<bool> {
        self.wake_or_save(g, now, false).await
    }

    /// [`maybe_wake`](Self::maybe_wake), also writing the record when `dirty` (the caller
    /// changed it) and no wake is issued: every outcome is one write.
    async fn wake_or_save(&self, g: &mut SubGuard, now: Millis, dirty: bool) -> SubResult<bool> {
        let Some(sub) = g.state().cloned() else {
            return Ok(false);
        };
        let idle = sub.wake.as_ref().is_none_or(|w| w.lease_until <= now);
        let retry_later = sub.retry.as_ref().is_some_and(|r| r.next_attempt_at > now);
        let pending = match idle && !retry_later {
            true => self.pending(&sub).await,
            false => BTreeMap::new(),
        };
        if pending.is_empty() {
            let lapsed = idle && sub.wake.is_some();
            if lapsed {
                if let Some(s) = g.state_mut() {
                    s.wake = None;
                }
            }
            if dirty || lapsed {
                self.save(g).await?;
            }
            return Ok(false);
        }
        let token = match sub.config.delivery {
            Delivery::Webhook => Some(sessiond_http::ids::random_id()),
            Delivery::PullWake => None,
        };
        let lease_until = now + sub.config.lease_ttl_ms as Millis;
        let wake = Wake {
            wake_id: format!("w_{}", sessiond_http::ids::random_id()),
            token,
            holder: None,
            snapshot: pending,
            lease_until,
        };
        let Some(s) = g.state_mut() else {
            return Ok(false);
        };
        s.generation += 1;
        s.wake = Some(wake.clone());
        let generation = s.generation;
        // The compare-and-set makes this node the only one that issued this generation.
        self.save(g).await?;
        match sub.config.delivery {
            Delivery::Webhook => {
                tokio::spawn(self.deliver(sub.id.clone(), generation, wake.wake_id));
            }
            Delivery::PullWake => {
                if let Err(e) = self.announce(&sub, generation, &wake, now).await {
                    tracing::warn!(subscription = %sub.id, error = ?e, "cannot write wake event");
                    self.failed(g, now).await?;
                }
            }
        }
        Ok(true)
    }

    /// Records a failed delivery of the current wake: clears it and schedules a retry.
    pub(crate) async fn failed(&self, g: &mut SubGuard, now: Millis) -> SubResult<()> {
        let Some(s) = g.state_mut() else {
            return Ok(());
        };
        let attempt = s.retry.as_ref().map_or(1, |r| r.attempt + 1);
        let at = now + backoff_ms(attempt) as Millis;
        s.wake = None;
        s.retry = Some(Retry {
            attempt,
            next_attempt_at: at,
        });
        self.save(g).await
    }

    /// Ends the current wake (done, released, or lapsed) and wakes again if work remains, in
    /// one write. Returns whether a new wake was issued.
    pub(crate) async fn finish(&self, g: &mut SubGuard, now: Millis) -> SubResult<bool> {
        if let Some(s) = g.state_mut() {
            s.wake = None;
        }
        self.wake_or_save(g, now, true).await
    }

    /// Checks a callback / ack / release against the current wake (token, generation,
    /// wake id, lease). `FENCED` otherwise.
    pub(crate) fn check_fence(
        sub: &Subscription,
        token: &str,
        generation: u64,
        wake_id: &str,
        now: Millis,
    ) -> SubResult<()> {
        use subtle::ConstantTimeEq;
        let Some(wake) = &sub.wake else {
            return Err(SubError::fenced());
        };
        let token_ok = wake
            .token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes())));
        if !token_ok
            || generation != sub.generation
            || wake_id != wake.wake_id
            || wake.lease_until <= now
        {
            return Err(SubError::fenced());
        }
        Ok(())
    }

    /// Applies acks to the cursors, moving each forward in the store (unknown streams and bad
    /// offsets are 400s, checked before anything changes; a lower offset than the cursor is
    /// ignored).
    pub(crate) async fn apply_acks(
        &self,
        sub: &mut Subscription,
        acks: &[AckEntry],
    ) -> SubResult<()> {
        let mut moved = Vec::new();
        for ack in acks {
            let pos = offset::parse_token(&ack.offset).ok_or_else(|| {
                SubError::bad_request(format!("ack offset {:?} is not an offset", ack.offset))
            })?;
            let link = sub.links.get(&ack.stream).ok_or_else(|| {
                SubError::bad_request(format!("{} is not linked to this subscription", ack.stream))
            })?;
            if pos > link.acked {
                moved.push((ack.stream.clone(), pos));
            }
        }
        for (path, pos) in moved {
            self.advance_link(sub, &path, pos).await?;
        }
        Ok(())
    }

    /// A timer fired (on whichever node claimed the alarm): lapse an expired lease, then
    /// wake if due; otherwise re-arm for the record's next due time.
    pub(crate) async fn on_timer(&self, id: &str) -> SubResult<()> {
        self.retrying(|| async {
            let mut g = self.inner.objects.lock(id).await;
            let Some(sub) = self.load(&mut g).await?.cloned() else {
                return Ok(());
            };
            let now = now_ms();
            match &sub.wake {
                Some(wake) if wake.lease_until <= now => {
                    self.finish(&mut g, now).await?;
                }
                _ => {
                    if !self.maybe_wake(&mut g, now).await? {
                        if let Some(at) = sub.next_due().filter(|at| *at > now) {
                            self.arm(id, at).await?;
                        }
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Handles one observed change.
    pub(crate) async fn on_change(&self, change: Change) {
        let path = match &change {
            Change::Appended { path, .. } | Change::Created { path, .. } => path,
            Change::Deleted { path } => path,
        };
        for id in self.inner.index.following(path) {
            let result = self.retrying(|| self.change_one(&id, &change)).await;
            if let Err(e) = result {
                tracing::warn!(subscription = %id, error = ?e, "cannot process stream change");
            }
        }
    }

    /// One change for one subscription. On a shared engine this reads the record and the
    /// one link, not all links (an append to a followed stream is the hot path); they are
    /// read only to issue a wake.
    async fn change_one(&self, id: &str, change: &Change) -> SubResult<()> {
        let (path, before, tail) = match change {
            Change::Appended { path, before, tail } => (path, *before, Some(*tail)),
            Change::Created { path, tail } => (path, *tail, None),
            Change::Deleted { path } => (path, 0, None),
        };
        let mut g = self.inner.objects.lock(id).await;
        let shared = self.inner.shared;
        let existing = if shared {
            if g.reload().await?.is_none() {
                return Ok(());
            }
            self.read_link(id, path).await?
        } else {
            let Some(sub) = self.load(&mut g).await? else {
                return Ok(());
            };
            sub.links.get(path.as_str()).cloned()
        };
        let Some(sub) = g.state_mut() else {
            return Ok(());
        };
        if matches!(change, Change::Deleted { .. }) {
            let Some(mut link) = existing else {
                return Ok(());
            };
            if link.explicit {
                link.acked = 0;
                self.put_link(id, path, &link).await?;
                sub.links.insert(path.clone(), link);
            } else {
                self.delete_link(id, path).await?;
                sub.links.remove(path.as_str());
            }
            return Ok(());
        }
        let link = match existing {
            Some(link) => link,
            None => {
                let max = self.inner.config.max_links;
                let count = match shared {
                    true => self.count_links(id, max).await?,
                    false => sub.links.len(),
                };
                if count >= max {
                    links_refused(id, path);
                    return Ok(());
                }
                let glob = sub
                    .config
                    .pattern
                    .as_deref()
                    .is_some_and(|p| glob::matches(p, path));
                let acked = self.link_start(sub, path, before).await;
                let link = Link {
                    explicit: false,
                    glob,
                    acked,
                };
                self.put_link(id, path, &link).await?;
                sub.links.insert(path.clone(), link.clone());
                link
            }
        };
        let now = now_ms();
        let pending = tail.is_some_and(|t| t > link.acked);
        let idle = sub.wake.as_ref().is_none_or(|w| w.lease_until <= now);
        if pending && idle {
            if shared {
                // With every link, fresh.
                self.load(&mut g).await?;
            }
            self.maybe_wake(&mut g, now).await?;
        }
        Ok(())
    }
}

/// A matching stream was not linked because the subscription is full.
fn links_refused(id: &str, path: &str) {
    ::metrics::counter!("sessiond_streams_subscription_links_refused_total").increment(1);
    tracing::warn!(
        subscription = %id,
        stream = %path,
        "stream not followed: the subscription has streams.subscriptions.max_links links"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_minute_with_jitter() {
        for _ in 0..20 {
            let first = backoff_ms(1);
            assert!((800..=1200).contains(&first), "{first}");
            let late = backoff_ms(12);
            assert!((48_000..=72_000).contains(&late), "{late}");
        }
        assert!(backoff_ms(3) >= 3_200);
    }
}
