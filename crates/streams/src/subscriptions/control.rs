//! Managing subscriptions (PROTOCOL.md §6): create or re-confirm, read, delete, explicit
//! stream links, and the webhook key set.
//!
//! Re-confirmation compares the normalized configuration (type, pattern, sorted explicit
//! streams, delivery target, lease, description): identical is a 200 with the current state,
//! anything else a 409, so a deploy script can PUT its subscriptions on every start. New
//! links start at the stream's current tail (creating a subscription never replays history);
//! a pattern is backfilled from the stream listing, scanning only the pattern's literal prefix.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sessiond_store::now_ms;

use super::error::{SubError, SubResult};
use super::model::{
    Delivery, Link, PutBody, StreamsBody, SubConfig, Subscription, DEFAULT_LEASE_MS, LEASE_RANGE,
};
use super::{glob, Subscriptions};

/// Checks a subscription id (client-chosen, used in URLs and as a storage key).
pub fn check_id(id: &str) -> SubResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(SubError::bad_request(
            "subscription ids are 1-200 characters of letters, digits, - _ . : ~",
        ))
    }
}

/// Checks a stream-root-relative stream path from a body (at most `max_depth` segments).
fn check_path(path: &str, max_depth: usize) -> SubResult<()> {
    if glob::depth(path) > max_depth {
        return Err(SubError::bad_request(format!(
            "{path:?} has more than {max_depth} segments (streams.subscriptions.max_path_segments)"
        )));
    }
    let bad = path.is_empty()
        || path.len() > 1024
        || path.bytes().any(|b| b.is_ascii_control())
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || path == "__ds"
        || path.starts_with("__ds/");
    if bad {
        return Err(SubError::bad_request(format!(
            "{path:?} is not a stream path"
        )));
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> SubResult<T> {
    super::error::parse_body(body)
}

/// `scheme://host` of the request, for the URLs the server hands out.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

fn too_many_links(max: usize) -> SubError {
    SubError::bad_request(format!(
        "a subscription links at most {max} streams (streams.subscriptions.max_links)"
    ))
}

impl Subscriptions {
    fn check_path(&self, path: &str) -> SubResult<()> {
        check_path(path, self.inner.config.max_path_segments)
    }

    fn normalize(&self, body: PutBody) -> SubResult<SubConfig> {
        let limits = &self.inner.config;
        let pattern = body.pattern.filter(|p| !p.is_empty());
        if let Some(p) = &pattern {
            glob::validate(p, limits.max_pattern_segments)
                .map_err(|e| SubError::bad_request(e.to_string()))?;
        }
        let streams: BTreeSet<String> = body.streams.unwrap_or_default().into_iter().collect();
        if streams.len() > limits.max_links {
            return Err(too_many_links(limits.max_links));
        }
        for s in &streams {
            self.check_path(s)?;
        }
        if pattern.is_none() && streams.is_empty() {
            return Err(SubError::bad_request("give a pattern, streams, or both"));
        }
        let lease_ttl_ms = body.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !LEASE_RANGE.contains(&lease_ttl_ms) {
            return Err(SubError::bad_request(
                "lease_ttl_ms must be between 1000 and 600000",
            ));
        }
        let (webhook_url, wake_stream) = match body.delivery {
            Delivery::Webhook => {
                let url = body
                    .webhook
                    .ok_or_else(|| SubError::bad_request("webhook subscriptions need webhook.url"))?
                    .url;
                self.inner.webhooks.validate(&url).map_err(|reason| {
                    SubError::new(
                        StatusCode::BAD_REQUEST,
                        "WEBHOOK_URL_REJECTED",
                        reason.to_string(),
                    )
                })?;
                (Some(url), None)
            }
            Delivery::PullWake => {
                let wake = body.wake_stream.ok_or_else(|| {
                    SubError::bad_request("pull-wake subscriptions need wake_stream")
                })?;
                self.check_path(&wake)?;
                (None, Some(wake))
            }
        };
        Ok(SubConfig {
            delivery: body.delivery,
            pattern,
            streams: streams.into_iter().collect(),
            webhook_url,
            wake_stream,
            lease_ttl_ms,
            description: body.description,
        })
    }

    /// `PUT …/__ds/subscriptions/:id`.
    pub async fn put(&self, id: &str, headers: &HeaderMap, body: Bytes) -> SubResult<Response> {
        check_id(id)?;
        let config = self.normalize(parse(&body)?)?;
        let base = base_url(headers);
        self.retrying(|| self.put_once(id, &config, &base)).await
    }

    async fn put_once(&self, id: &str, config: &SubConfig, base: &str) -> SubResult<Response> {
        let mut g = self.inner.objects.lock(id).await;
        if let Some(existing) = self.load(&mut g).await? {
            if existing.config != *config {
                return Err(SubError::new(
                    StatusCode::CONFLICT,
                    "CONFLICT",
                    "a subscription with this id and a different configuration exists",
                ));
            }
            let view = existing.view(self.inner.signer.kid());
            return Ok((StatusCode::OK, Json(view)).into_response());
        }
        let mut sub = Subscription {
            id: id.to_owned(),
            config: config.clone(),
            created_at: now_ms(),
            base_url: base.to_owned(),
            links: Default::default(),
            links_loaded: true,
            explicit: Some(config.streams.iter().cloned().collect()),
            generation: 0,
            wake: None,
            retry: None,
        };
        // Index first, so appends racing with the backfill are seen (they wait for our lock).
        self.inner.index.set(
            id,
            sub.config.pattern.clone(),
            sub.config.streams.iter().cloned().collect(),
        );
        self.refresh_active();
        let created = async {
            // Links left by a creation that crashed before its record was written.
            self.delete_links(id).await?;
            for path in sub.config.streams.clone() {
                self.link_explicit(&mut sub, &path).await;
            }
            if let Some(pattern) = sub.config.pattern.clone() {
                self.backfill(&mut sub, &pattern).await?;
            }
            let paths: Vec<String> = sub.links.keys().cloned().collect();
            self.write_links(&sub, &paths).await?;
            let view = sub.view(self.inner.signer.kid());
            // Create-if-absent: a node that created this id meanwhile wins (we retry).
            g.set(sub);
            self.save(&mut g).await?;
            self.index_changed().await?;
            Ok::<_, SubError>(view)
        }
        .await;
        match created {
            Ok(view) => Ok((StatusCode::CREATED, Json(view)).into_response()),
            Err(e) if e.is_raced() => {
                // Another node created it: its links stay; re-read decides 200 or 409.
                self.inner.index.remove(id);
                self.refresh_active();
                Err(e)
            }
            Err(e) => {
                self.inner.index.remove(id);
                self.refresh_active();
                if let Err(cleanup) = self.delete_links(id).await {
                    tracing::warn!(subscription = %id, error = ?cleanup, "cannot drop the links of a failed create");
                }
                Err(e)
            }
        }
    }

    /// Links `path` explicitly (in memory; the caller writes the link).
    async fn link_explicit(&self, sub: &mut Subscription, path: &str) {
        let glob = sub
            .config
            .pattern
            .as_deref()
            .is_some_and(|p| glob::matches(p, path));
        if let Some(link) = sub.links.get_mut(path) {
            link.explicit = true;
            return;
        }
        let acked = self.tail_of(path).await.unwrap_or(0);
        sub.links.insert(
            path.to_owned(),
            Link {
                explicit: true,
                glob,
                acked,
            },
        );
    }

    /// Links every existing stream matching `pattern` at its current tail (in memory; the
    /// caller writes the links). More than `max_links` is a 400.
    async fn backfill(&self, sub: &mut Subscription, pattern: &str) -> SubResult<()> {
        let max_links = self.inner.config.max_links;
        for path in self.matching_streams(pattern).await? {
            if let Some(link) = sub.links.get_mut(&path) {
                link.glob = true;
                continue;
            }
            if sub.links.len() >= max_links {
                return Err(too_many_links(max_links));
            }
            if let Some(tail) = self.tail_of(&path).await {
                sub.links.insert(
                    path,
                    Link {
                        explicit: false,
                        glob: true,
                        acked: tail,
                    },
                );
            }
        }
        Ok(())
    }

    /// `GET …/__ds/subscriptions/:id`.
    pub async fn get(&self, id: &str) -> SubResult<Response> {
        check_id(id)?;
        let mut g = self.inner.objects.lock(id).await;
        let sub = self.load(&mut g).await?.ok_or_else(SubError::not_found)?;
        Ok(Json(sub.view(self.inner.signer.kid())).into_response())
    }

    /// `DELETE …/__ds/subscriptions/:id` (idempotent; in-flight wakes are fenced from now on).
    pub async fn delete(&self, id: &str) -> SubResult<Response> {
        check_id(id)?;
        let mut g = self.inner.objects.lock(id).await;
        g.delete(sessiond_store::Durability::Confirmed).await?;
        self.inner.index.remove(id);
        self.refresh_active();
        // After the record: a crash in between leaves links that the next create of this id
        // removes, never a record with links missing.
        self.delete_links(id).await?;
        self.index_changed().await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// `POST …/__ds/subscriptions/:id/streams`.
    pub async fn add_streams(&self, id: &str, body: Bytes) -> SubResult<Response> {
        check_id(id)?;
        let body: StreamsBody = parse(&body)?;
        for path in &body.streams {
            self.check_path(path)?;
        }
        self.retrying(|| self.add_streams_once(id, &body.streams))
            .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn add_streams_once(&self, id: &str, paths: &[String]) -> SubResult<()> {
        let max_links = self.inner.config.max_links;
        let mut g = self.inner.objects.lock(id).await;
        let sub = self.load(&mut g).await?.ok_or_else(SubError::not_found)?;
        let new: BTreeSet<&String> = paths
            .iter()
            .filter(|p| !sub.links.contains_key(*p))
            .collect();
        if sub.links.len() + new.len() > max_links {
            return Err(too_many_links(max_links));
        }
        let mut sub = sub.clone();
        for path in paths {
            self.link_explicit(&mut sub, path).await;
        }
        self.write_links(&sub, paths).await?;
        sub.explicit
            .get_or_insert_with(Default::default)
            .extend(paths.iter().cloned());
        g.set(sub);
        self.save(&mut g).await?;
        for path in paths {
            self.inner.index.set_explicit(id, path, true);
        }
        self.index_changed().await
    }

    /// `DELETE …/__ds/subscriptions/:id/streams/:path` (idempotent; a glob link stays).
    pub async fn remove_stream(&self, id: &str, path: &str) -> SubResult<Response> {
        check_id(id)?;
        self.retrying(|| self.remove_stream_once(id, path)).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    async fn remove_stream_once(&self, id: &str, path: &str) -> SubResult<()> {
        let mut g = self.inner.objects.lock(id).await;
        let sub = self.load(&mut g).await?.ok_or_else(SubError::not_found)?;
        let Some(link) = sub.links.get_mut(path).filter(|l| l.explicit) else {
            return Ok(());
        };
        if link.glob {
            link.explicit = false;
        } else {
            sub.links.remove(path);
        }
        self.write_links(sub, &[path.to_owned()]).await?;
        if let Some(explicit) = sub.explicit.as_mut() {
            explicit.remove(path);
        }
        self.save(&mut g).await?;
        self.inner.index.set_explicit(id, path, false);
        self.index_changed().await
    }

    /// `GET …/__ds/jwks.json`.
    pub fn jwks(&self) -> Response {
        (
            [
                ("content-type", "application/jwk-set+json"),
                ("cache-control", "public, max-age=300"),
            ],
            Json(self.inner.signer.jwks()),
        )
            .into_response()
    }
}
