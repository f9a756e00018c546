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
use super::{glob, webhook_url, Subscriptions};

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

/// Checks a stream-root-relative stream path from a body.
fn check_path(path: &str) -> SubResult<()> {
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
    serde_json::from_slice(body).map_err(|e| SubError::bad_request(format!("invalid body: {e}")))
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

impl Subscriptions {
    fn normalize(&self, body: PutBody) -> SubResult<SubConfig> {
        let pattern = body.pattern.filter(|p| !p.is_empty());
        if let Some(p) = &pattern {
            glob::validate(p).map_err(SubError::bad_request)?;
        }
        let streams: BTreeSet<String> = body.streams.unwrap_or_default().into_iter().collect();
        for s in &streams {
            check_path(s)?;
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
                webhook_url::validate(&url, self.inner.allow_insecure).map_err(|reason| {
                    SubError::new(StatusCode::BAD_REQUEST, "WEBHOOK_URL_REJECTED", reason)
                })?;
                (Some(url), None)
            }
            Delivery::PullWake => {
                let wake = body.wake_stream.ok_or_else(|| {
                    SubError::bad_request("pull-wake subscriptions need wake_stream")
                })?;
                check_path(&wake)?;
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
        let mut g = self.inner.objects.lock(id).await;
        if let Some(existing) = g.load().await? {
            if existing.config != config {
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
            config,
            created_at: now_ms(),
            base_url: base_url(headers),
            links: Default::default(),
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
            for path in sub.config.streams.clone() {
                self.link_explicit(&mut sub, &path).await;
            }
            if let Some(pattern) = sub.config.pattern.clone() {
                self.backfill(&mut sub, &pattern).await?;
            }
            let view = sub.view(self.inner.signer.kid());
            g.save(sub, sessiond_store::Durability::Confirmed).await?;
            Ok::<_, SubError>(view)
        }
        .await;
        match created {
            Ok(view) => Ok((StatusCode::CREATED, Json(view)).into_response()),
            Err(e) => {
                self.inner.index.remove(id);
                self.refresh_active();
                Err(e)
            }
        }
    }

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

    /// Links every existing stream matching `pattern` at its current tail.
    async fn backfill(&self, sub: &mut Subscription, pattern: &str) -> SubResult<()> {
        let literal: Vec<&str> = pattern
            .split('/')
            .take_while(|s| *s != "*" && *s != "**")
            .collect();
        // Without a trailing `/`, so a pattern with no wildcard still lists its own path.
        let prefix = literal.join("/");
        let store = self.inner.streams.store.clone();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_streams(&prefix, after.as_deref(), 500).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for path in page {
                if !glob::matches(pattern, &path) {
                    continue;
                }
                if let Some(link) = sub.links.get_mut(&path) {
                    link.glob = true;
                    continue;
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
            after = Some(last);
        }
        Ok(())
    }

    /// `GET …/__ds/subscriptions/:id`.
    pub async fn get(&self, id: &str) -> SubResult<Response> {
        check_id(id)?;
        let mut g = self.inner.objects.lock(id).await;
        let sub = g.load().await?.ok_or_else(SubError::not_found)?;
        Ok(Json(sub.view(self.inner.signer.kid())).into_response())
    }

    /// `DELETE …/__ds/subscriptions/:id` (idempotent; in-flight wakes are fenced from now on).
    pub async fn delete(&self, id: &str) -> SubResult<Response> {
        check_id(id)?;
        let mut g = self.inner.objects.lock(id).await;
        g.delete(sessiond_store::Durability::Confirmed).await?;
        self.inner.index.remove(id);
        self.refresh_active();
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// `POST …/__ds/subscriptions/:id/streams`.
    pub async fn add_streams(&self, id: &str, body: Bytes) -> SubResult<Response> {
        check_id(id)?;
        let body: StreamsBody = parse(&body)?;
        for path in &body.streams {
            check_path(path)?;
        }
        let mut g = self.inner.objects.lock(id).await;
        let mut sub = g.load().await?.ok_or_else(SubError::not_found)?.clone();
        for path in &body.streams {
            self.link_explicit(&mut sub, path).await;
            self.inner.index.set_explicit(id, path, true);
        }
        g.set(sub);
        self.save(&mut g).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// `DELETE …/__ds/subscriptions/:id/streams/:path` (idempotent; a glob link stays).
    pub async fn remove_stream(&self, id: &str, path: &str) -> SubResult<Response> {
        check_id(id)?;
        let mut g = self.inner.objects.lock(id).await;
        let sub = g.load().await?.ok_or_else(SubError::not_found)?;
        let mut changed = false;
        if let Some(link) = sub.links.get_mut(path) {
            if link.explicit {
                changed = true;
                if link.glob {
                    link.explicit = false;
                } else {
                    sub.links.remove(path);
                }
            }
        }
        if changed {
            self.inner.index.set_explicit(id, path, false);
            self.save(&mut g).await?;
        }
        Ok(StatusCode::NO_CONTENT.into_response())
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
