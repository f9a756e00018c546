//! Hard deletion and the release of fork references.
//!
//! Why its own step: deleting a fork must drop its source's reference count in the same
//! engine transaction (`StreamStore::delete_fork`), or a crash between the two would leave a
//! source counting a fork that no longer exists (undeletable forever). On an engine shared by
//! several nodes that transaction can lose a race with another node's change of the source's
//! state (a close, a soft delete, another fork; not an append: the source's tail is not
//! checked, see `ForkSource`), so the release is decided again on the source's fresh
//! metadata, up to `max_commit_attempts` times.

use sessiond_store::{now_ms, Durability, ForkSource};

use crate::error::{StreamError, StreamResult};
use crate::service::{stream, Guard, Streams};
use crate::state::Stream;

impl Streams {
    /// Deletes the locked stream's data everywhere. A fork's reference on its direct source is
    /// released in the same engine transaction (`StreamStore::delete_fork`; the source is
    /// locked meanwhile: child then parent, as in fork creation). Returns that source when it
    /// should go too (soft-deleted or expired, and this was its last fork): the caller passes
    /// it to [`remove_released`](Self::remove_released) after dropping this lock.
    pub async fn hard_delete(&self, g: &mut Guard) -> StreamResult<Option<String>> {
        let parent = stream(g).and_then(|s| s.info.lineage.last().map(|a| a.path.clone()));
        let point = stream(g).map_or(0, |s| s.info.inherited_start);
        let fork_point = stream(g).map_or(0, |s| s.info.start);
        self.settle(g).await?;
        let path = g.key().to_owned();
        self.cold.delete_all(&path).await?;
        let released = match parent {
            Some(parent) => {
                self.delete_releasing(&path, &parent, (point, fork_point))
                    .await?
            }
            None => None,
        };
        let cascade = match released {
            Some(cascade) => cascade,
            None => {
                self.store
                    .delete_stream(&path, Durability::Confirmed)
                    .await?;
                None
            }
        };
        if let Some(object) = g.state_mut() {
            object.stream = None;
            object.producers.clear();
            object.notify();
            if object.is_vacant() {
                g.take();
            }
        }
        Ok(cascade)
    }

    /// Deletes the fork `path` and drops its reference on `parent` in one engine step.
    /// `None`: `parent` does not exist (the caller deletes the fork alone); otherwise the
    /// parent if it should go too.
    async fn delete_releasing(
        &self,
        path: &str,
        parent: &str,
        (point, fork_point): (u64, u64),
    ) -> StreamResult<Option<Option<String>>> {
        let mut attempt = 1;
        loop {
            let mut pg = self.lock(parent).await?;
            self.settle(&mut pg).await?;
            let Some(src) = stream(&pg).cloned() else {
                return Ok(None);
            };
            let mut info = src.info;
            info.forks = info.forks.saturating_sub(1);
            if let Some(i) = info.fork_floors.iter().position(|p| *p == point) {
                info.fork_floors.swap_remove(i);
            }
            if let Some(i) = info.fork_points.iter().position(|p| *p == fork_point) {
                info.fork_points.swap_remove(i);
            }
            let meta = Stream::encode(parent, src.tail, &info)?;
            let link = ForkSource {
                path: parent.to_owned(),
                state: meta.state,
                expires_at: meta.expires_at,
                expected_state: (!self.exclusive).then(|| src.stored_state.to_vec()),
                // Releasing a reference never reads below the start: a trim may have raised it.
                max_start: None,
            };
            if self
                .store
                .delete_fork(path, &link, Durability::Confirmed)
                .await?
            {
                let orphan = info.forks == 0 && (info.soft_deleted || info.expired(now_ms()));
                if let Some(object) = pg.state_mut() {
                    let retained = object.stream.as_ref().map_or(0, |s| s.retained);
                    object.stream = Some(Stream {
                        tail: src.tail,
                        retained,
                        info,
                        persisted_expiry: link.expires_at,
                        stored_state: link.state.into(),
                    });
                }
                return Ok(Some(orphan.then(|| parent.to_owned())));
            }
            // Refused: the fork is gone already (another node deleted it and released the
            // reference), or the source changed since it was read (another node wrote it).
            if self.store.stream_meta(path).await?.is_none() {
                return Ok(Some(None));
            }
            if self.exclusive || attempt >= self.config.max_commit_attempts {
                return Err(StreamError::busy(
                    "the stream or its fork source changed concurrently; retry",
                ));
            }
            crate::metrics::commit_retry();
            attempt += 1;
        }
    }

    /// Removes `path` if no fork reads it any more and it is soft-deleted or expired, then its
    /// own source if that became such an orphan, up the chain. Each step is atomic; a crash
    /// between two leaves a soft-deleted orphan, which `find` (and so the sweeper, which finds
    /// it in the expiry index) removes later.
    pub async fn remove_released(&self, path: &str) -> StreamResult<()> {
        crate::failpoint::hit("fork-released").await;
        let mut next = Some(path.to_owned());
        while let Some(path) = next.take() {
            let mut g = self.lock(&path).await?;
            let Some(s) = stream(&g) else {
                break;
            };
            if s.info.forks == 0 && (s.info.soft_deleted || s.info.expired(now_ms())) {
                next = self.hard_delete(&mut g).await?;
            }
        }
        Ok(())
    }
}
