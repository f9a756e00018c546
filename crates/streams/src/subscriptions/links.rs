//! Links (one cursor per followed stream) persisted as their own objects.
//!
//! Why not inside the subscription record: with one pattern subscription, every new matching
//! stream added a link and rewrote the whole record, so N stream creates wrote O(N²) bytes
//! (3,000 creates wrote 8.8 GB). Here a link is a small object of kind [`LINK_KIND`] keyed
//! `<subscription id>/<stream path>` (ids never contain `/`, so a subscription's links are
//! exactly the keys under `<id>/`); creating, acking or dropping a link writes that one
//! object. It goes through the same `ObjectStore` as every runtime object, so memory, SQLite
//! and Redis all keep it without engine code.
//!
//! The links of a subscription are read once per residency of its record (at startup, and
//! after the runtime evicted it) and then kept next to it in memory, changed under the
//! subscription's lock; on an engine shared with other nodes they are read with the record
//! at every load (another node may have moved a cursor), and a cursor only ever moves
//! forward by compare-and-set (`Subscriptions::advance_link`). Link objects are written
//! before the record whose state depends on them, so a crash in between can only replay a
//! wake (at-least-once), never skip data.

use sessiond_store::{now_ms, Durability};

use super::error::SubResult;
use super::model::{Link, Subscription};
use super::{glob, SubGuard, Subscriptions};

/// Object kind of links.
pub const LINK_KIND: &str = "ds_subscription_link";
/// Keys listed per page when loading or deleting links.
const PAGE: usize = 500;

fn key(id: &str, path: &str) -> String {
    format!("{id}/{path}")
}

impl Subscriptions {
    /// The locked subscription with its links loaded (read from the store once per
    /// residency; records written before links had their own objects are migrated here).
    pub(crate) async fn load<'g>(
        &self,
        g: &'g mut SubGuard,
    ) -> SubResult<Option<&'g mut Subscription>> {
        let loaded = if self.inner.shared {
            g.reload().await?
        } else {
            g.load().await?
        };
        let Some(sub) = loaded else {
            return Ok(None);
        };
        if sub.links_loaded {
            return Ok(g.state_mut());
        }
        let id = sub.id.clone();
        let legacy = std::mem::take(&mut sub.links);
        let mut links = self.read_links(&id).await?;
        let migrate = !legacy.is_empty();
        for (path, link) in legacy {
            if let std::collections::btree_map::Entry::Vacant(slot) = links.entry(path) {
                self.put_link(&id, slot.key(), &link).await?;
                slot.insert(link);
            }
        }
        let Some(sub) = g.state_mut() else {
            return Ok(None);
        };
        if sub.explicit.is_none() {
            let explicit = links
                .iter()
                .filter(|(_, l)| l.explicit)
                .map(|(p, _)| p.clone())
                .collect();
            sub.explicit = Some(explicit);
        }
        sub.links = links;
        sub.links_loaded = true;
        if migrate {
            // The record no longer carries links: rewrite it without them.
            self.save(g).await?;
        }
        Ok(g.state_mut())
    }

    async fn read_links(&self, id: &str) -> SubResult<std::collections::BTreeMap<String, Link>> {
        let store = &self.inner.store;
        let prefix = key(id, "");
        let mut links = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let keys = store
                .list_objects(LINK_KIND, &prefix, after.as_deref(), PAGE)
                .await?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for k in keys {
                let Some(bytes) = store.load_object(LINK_KIND, &k).await? else {
                    continue;
                };
                let Ok(link) = serde_json::from_slice::<Link>(&bytes) else {
                    tracing::warn!(key = %k, "unreadable subscription link skipped");
                    continue;
                };
                if let Some(path) = k.strip_prefix(&prefix) {
                    links.insert(path.to_owned(), link);
                }
            }
            after = Some(last);
        }
        Ok(links)
    }

    /// One link as stored.
    pub(crate) async fn read_link(&self, id: &str, path: &str) -> SubResult<Option<Link>> {
        let bytes = self
            .inner
            .store
            .load_object(LINK_KIND, &key(id, path))
            .await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// How many links subscription `id` has, counting at most `limit`.
    pub(crate) async fn count_links(&self, id: &str, limit: usize) -> SubResult<usize> {
        let keys = self
            .inner
            .store
            .list_objects(LINK_KIND, &key(id, ""), None, limit)
            .await?;
        Ok(keys.len())
    }

    /// Writes one link.
    pub(crate) async fn put_link(&self, id: &str, path: &str, link: &Link) -> SubResult<()> {
        let bytes = serde_json::to_vec(link)
            .map_err(|e| sessiond_store::StoreError::Corrupt(format!("subscription link: {e}")))?;
        self.inner
            .store
            .save_object(LINK_KIND, &key(id, path), &bytes, Durability::Confirmed)
            .await?;
        Ok(())
    }

    /// Moves the cursor of `path` to at least `pos` in the store (a compare-and-set loop, so
    /// a concurrent write by another node never moves it back) and in `sub`. False if the
    /// stream is not linked.
    pub(crate) async fn advance_link(
        &self,
        sub: &mut Subscription,
        path: &str,
        pos: u64,
    ) -> SubResult<bool> {
        let store = &self.inner.store;
        let k = key(&sub.id, path);
        for _ in 0..super::MAX_RACES {
            let stored = store.load_object(LINK_KIND, &k).await?;
            let Some(mut link) = stored
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Link>(b).ok())
            else {
                sub.links.remove(path);
                return Ok(false);
            };
            if link.acked < pos {
                link.acked = pos;
                let bytes = serde_json::to_vec(&link).map_err(|e| {
                    sessiond_store::StoreError::Corrupt(format!("subscription link: {e}"))
                })?;
                let swapped = store
                    .swap_object(
                        LINK_KIND,
                        &k,
                        stored.as_deref(),
                        Some(&bytes),
                        Durability::Confirmed,
                    )
                    .await?;
                if !swapped {
                    continue;
                }
            }
            sub.links.insert(path.to_owned(), link);
            return Ok(true);
        }
        Err(super::error::SubError::raced())
    }

    /// Writes the links of `sub` named in `paths` (those still linked) and deletes the others.
    pub(crate) async fn write_links(&self, sub: &Subscription, paths: &[String]) -> SubResult<()> {
        for path in paths {
            match sub.links.get(path) {
                Some(link) => self.put_link(&sub.id, path, link).await?,
                None => self.delete_link(&sub.id, path).await?,
            }
        }
        Ok(())
    }

    /// Deletes one link.
    pub(crate) async fn delete_link(&self, id: &str, path: &str) -> SubResult<()> {
        self.inner
            .store
            .delete_object(LINK_KIND, &key(id, path), Durability::Confirmed)
            .await?;
        Ok(())
    }

    /// Deletes every link of subscription `id`.
    pub(crate) async fn delete_links(&self, id: &str) -> SubResult<()> {
        let store = &self.inner.store;
        let prefix = key(id, "");
        loop {
            let keys = store.list_objects(LINK_KIND, &prefix, None, PAGE).await?;
            if keys.is_empty() {
                return Ok(());
            }
            for k in keys {
                store
                    .delete_object(LINK_KIND, &k, Durability::Confirmed)
                    .await?;
            }
        }
    }
}

impl Subscriptions {
    /// Existing streams `pattern` matches (listing only its literal prefix).
    pub(crate) async fn matching_streams(&self, pattern: &str) -> SubResult<Vec<String>> {
        let literal: Vec<&str> = pattern
            .split('/')
            .take_while(|s| *s != "*" && *s != "**")
            .collect();
        // Without a trailing `/`, so a pattern with no wildcard still lists its own path.
        let prefix = literal.join("/");
        let store = self.inner.streams.store.clone();
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_streams(&prefix, after.as_deref(), PAGE).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            out.extend(
                page.into_iter().filter(|path| {
                    self.inner.index.matchable(path) && glob::matches(pattern, path)
                }),
            );
            after = Some(last);
        }
        Ok(out)
    }

    /// Re-derives every subscription's links from the streams themselves, because the
    /// observer dropped changes (its queue was full): links the matching streams it missed
    /// (from their first byte: the change that would have linked them is lost), unlinks
    /// streams that are gone, and wakes whatever has pending work.
    pub(crate) async fn resync(&self) {
        ::metrics::counter!("sessiond_streams_subscription_resyncs_total").increment(1);
        tracing::warn!("subscription change queue overflowed: rescanning every subscription");
        for id in self.inner.index.ids() {
            if let Err(e) = self.retrying(|| self.resync_one(&id)).await {
                tracing::warn!(subscription = %id, error = ?e, "subscription rescan failed");
            }
        }
    }

    async fn resync_one(&self, id: &str) -> SubResult<()> {
        let mut g = self.inner.objects.lock(id).await;
        let Some(sub) = self.load(&mut g).await? else {
            return Ok(());
        };
        let mut changed = Vec::new();
        let paths: Vec<String> = sub.links.keys().cloned().collect();
        for path in paths {
            if self.tail_of(&path).await.is_some() {
                continue;
            }
            let Some(link) = sub.links.get_mut(&path) else {
                continue;
            };
            if !link.explicit {
                sub.links.remove(&path);
                changed.push(path);
            } else if link.acked != 0 {
                link.acked = 0;
                changed.push(path);
            }
        }
        if let Some(pattern) = sub.config.pattern.clone() {
            for path in self.matching_streams(&pattern).await? {
                if sub.links.contains_key(&path) {
                    continue;
                }
                if sub.links.len() >= self.inner.config.max_links {
                    break;
                }
                let link = Link {
                    explicit: false,
                    glob: true,
                    acked: 0,
                };
                sub.links.insert(path.clone(), link);
                changed.push(path);
            }
        }
        self.write_links(sub, &changed).await?;
        self.maybe_wake(&mut g, now_ms()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use sessiond_runtime::{JsonCodec, ObjectKind};
    use sessiond_store::memory::MemoryEngine;
    use sessiond_store::ObjectStore;

    use super::super::{observer, Subscriptions, KIND};
    use super::LINK_KIND;
    use crate::{NoCold, Streams, StreamsConfig};

    #[tokio::test]
    async fn records_with_embedded_links_are_migrated_to_link_objects() {
        let engine = Arc::new(MemoryEngine::new());
        let store: Arc<dyn ObjectStore> = engine.clone();
        // A record as written before links had their own objects.
        let legacy = json!({
            "id": "old", "created_at": 1, "base_url": "http://localhost", "generation": 3,
            "wake": null, "retry": null,
            "config": {"delivery": "pull-wake", "pattern": "a/*", "streams": ["b"],
                       "webhook_url": null, "wake_stream": "w", "lease_ttl_ms": 30000,
                       "description": null},
            "links": {"a/1": {"explicit": false, "glob": true, "acked": 7},
                      "b": {"explicit": true, "glob": false, "acked": 0}},
        });
        let bytes = serde_json::to_vec(&legacy).expect("json");
        let durability = sessiond_store::Durability::Confirmed;
        store
            .save_object(KIND, "old", &bytes, durability)
            .await
            .expect("save");
        let (observer, _changes) = observer(16);
        let streams = Streams::new(
            observer.wrap(engine.clone()),
            Arc::new(NoCold),
            ObjectKind::in_memory("stream"),
            StreamsConfig::default(),
            true,
        );
        let kind = ObjectKind::persistent(KIND, store.clone(), JsonCodec);
        let alarms = sessiond_runtime::Alarms::new(store.clone());
        let subs = Subscriptions::open(streams, kind, store.clone(), observer, alarms)
            .await
            .expect("open");
        let keys = store
            .list_objects(LINK_KIND, "old/", None, 10)
            .await
            .expect("list");
        assert_eq!(keys, vec!["old/a/1".to_string(), "old/b".to_string()]);
        let record = store.load_object(KIND, "old").await.expect("load");
        let record: serde_json::Value =
            serde_json::from_slice(&record.expect("record")).expect("json");
        assert!(record.get("links").is_none(), "{record}");
        assert_eq!(record["generation"], 3);
        let mut g = subs.inner.objects.lock("old").await;
        let sub = subs.load(&mut g).await.expect("load").expect("sub");
        assert_eq!(sub.links.len(), 2);
        assert_eq!(sub.links["a/1"].acked, 7);
    }
}
