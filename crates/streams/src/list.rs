//! `GET /v1/streams?prefix=&cursor=&limit=`: the operator's view of which streams exist (a
//! sessiond extension, not part of the Durable Streams protocol).
//!
//! Why it is shaped this way:
//! - **Same guard as the protocol.** The route sits behind the stream guard ([`StreamGuard`]'s
//!   middleware step), which authenticates and refuses read tokens here (a token is minted for one user's reads, not
//!   to enumerate a tenant). What a caller sees is then the intersection of the requested
//!   prefix with its scope: a full key sees everything, a tenant key only the subtrees of its
//!   prefixes (a prefix disjoint from all of them is a 403, like an out-of-scope stream), and
//!   nobody but a full key sees server-owned streams or `__ds` names: they carry other users'
//!   data.
//! - **Opaque cursor.** The cursor is the last name the previous page *examined*, base64url
//!   encoded, so clients do not build it and a later format change breaks no one. Paging is
//!   in path order, and a name that appears after the cursor is never skipped.
//! - **Bounded work per page.** Hidden, soft-deleted and expired names are skipped, but a page
//!   examines at most `limit + max_list_limit` names; it may then be short (even empty) with a
//!   non-null `next_cursor`. Only a null cursor means the end.
//! - **Honest numbers.** Each listed stream is looked at under its object lock (a snapshot,
//!   like HEAD, with no side effect), so the tail is the one readers see and a sliding TTL's
//!   expiry is current. No per-stream message count is stored and counting would read every
//!   chunk, so entries carry no `messages` field rather than a guess.
//!
//! [`StreamGuard`]: crate::access::StreamGuard

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use sessiond_http::auth::covers_prefix;
use sessiond_http::ApiError;
use sessiond_store::now_ms;

use crate::access::{StreamAccess, StreamGuard};
use crate::error::{StreamError, StreamResult};
use crate::service::{stream, Streams};
use crate::{offset, time};

/// Entries per page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;

/// A listing's page size: `limit` from the query string ([`DEFAULT_LIMIT`] when absent),
/// from 1 to `max` (`streams.max_list_limit`).
pub(crate) fn page_limit(limit: Option<&str>, max: usize) -> StreamResult<usize> {
    match limit {
        None => Ok(DEFAULT_LIMIT.min(max)),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                StreamError::bad_request(format!(
                    "limit must be an integer from 1 to {max} (streams.max_list_limit)"
                ))
            }),
    }
}

/// The query string.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// Handles the listing (the guard stored the caller and itself as request extensions).
pub async fn list(
    State(streams): State<Streams>,
    access: Option<Extension<StreamAccess>>,
    guard: Option<Extension<StreamGuard>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (Some(Extension(access)), Some(Extension(guard))) = (access, guard) else {
            return Err(ApiError::forbidden("the stream listing needs the stream guard").into());
        };
        let Query(query) = query.map_err(|e| StreamError::bad_request(e.body_text()))?;
        page(&streams, &access, &guard, query).await
    }
    .await;
    // Changes with every create and depends on the credential: never cached.
    let no_store = [("cache-control", "no-store")];
    result.map_or_else(IntoResponse::into_response, |page| {
        (no_store, Json(page)).into_response()
    })
}

async fn page(
    streams: &Streams,
    access: &StreamAccess,
    guard: &StreamGuard,
    query: ListQuery,
) -> StreamResult<Value> {
    let max = streams.config.max_list_limit;
    let limit = page_limit(query.limit.as_deref(), max)?;
    let mut after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let prefix = query.prefix.unwrap_or_default();
    let ranges = ranges(access, &prefix)?;
    let full = matches!(access, StreamAccess::Full);
    let budget = limit + max;
    let (mut examined, mut more) = (0usize, false);
    let mut out = Vec::new();
    'ranges: for range in &ranges {
        loop {
            let batch = streams
                .store
                .list_streams(range, after.as_deref(), limit + 1)
                .await?;
            let exhausted = batch.len() <= limit;
            for path in batch {
                if examined == budget {
                    more = true;
                    break 'ranges;
                }
                examined += 1;
                let shown = full || !(guard.is_server_owned(&path) || is_control(&path));
                if shown {
                    if let Some(entry) = describe(streams, &path).await? {
                        if out.len() == limit {
                            more = true;
                            break 'ranges;
                        }
                        out.push(entry);
                    }
                }
                after = Some(path);
            }
            if exhausted {
                break;
            }
        }
    }
    let next = after.filter(|_| more).map(|p| URL_SAFE_NO_PAD.encode(p));
    Ok(json!({ "streams": out, "next_cursor": next }))
}

/// The store prefixes to walk, in path order: the requested prefix itself, or for a tenant key
/// its intersection with each of the key's subtrees.
fn ranges(access: &StreamAccess, prefix: &str) -> StreamResult<Vec<String>> {
    let scopes = match access {
        StreamAccess::Full | StreamAccess::Open => return Ok(vec![prefix.to_owned()]),
        StreamAccess::Read(_) => {
            return Err(ApiError::forbidden("read tokens cannot list streams").into())
        }
        StreamAccess::Key(scope) => &scope.prefixes,
    };
    let mut subtrees: Vec<String> = scopes
        .iter()
        .map(|s| format!("{}/", s.trim_end_matches('/')))
        .collect();
    subtrees.sort();
    // A subtree inside another one is walked with it.
    subtrees.dedup_by(|inner, outer| inner.starts_with(outer.as_str()));
    let ranges: Vec<String> = subtrees
        .into_iter()
        .filter_map(|s| {
            if prefix.starts_with(&s) {
                Some(prefix.to_owned())
            } else if s.starts_with(prefix) {
                Some(s)
            } else {
                None
            }
        })
        .collect();
    if ranges.is_empty() {
        return Err(ApiError::forbidden("this credential does not cover this prefix").into());
    }
    Ok(ranges)
}

/// `__ds` names belong to the protocol's control APIs, never to a tenant.
fn is_control(path: &str) -> bool {
    path == "__ds" || covers_prefix("__ds", path)
}

fn decode_cursor(cursor: &str) -> StreamResult<String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| StreamError::bad_request("cursor is not one this server handed out"))
}

/// One listed stream, or `None` when it is gone, soft-deleted or expired.
async fn describe(streams: &Streams, path: &str) -> StreamResult<Option<Value>> {
    let g = streams.lock(path).await?;
    let (Some(s), Some(tail)) = (stream(&g), g.state().and_then(|o| o.visible_tail())) else {
        return Ok(None);
    };
    let info = &s.info;
    // The stream's own stored data that retention kept.
    let start = info.start.max(s.retained);
    if info.soft_deleted || info.expired(now_ms()) {
        return Ok(None);
    }
    Ok(Some(json!({
        "path": path,
        "content_type": info.content_type,
        "tail_offset": offset::format(tail),
        "start_offset": offset::format(start),
        "bytes": tail.saturating_sub(start),
        "closed": info.closed,
        "expires_at": info.expiry().map(time::format_rfc3339),
        "created_at": time::format_rfc3339(info.created_at),
    })))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sessiond_http::auth::KeyScope;

    use super::*;

    fn tenant(prefixes: &[&str]) -> StreamAccess {
        StreamAccess::Key(Arc::new(KeyScope {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            read_only: true,
        }))
    }

    #[test]
    fn tenant_ranges_are_the_intersection_with_its_subtrees() {
        let key = tenant(&["b", "a/", "a/x"]);
        assert_eq!(ranges(&key, "").ok(), Some(vec!["a/".into(), "b/".into()]));
        assert_eq!(ranges(&key, "a").ok(), Some(vec!["a/".into()]));
        assert_eq!(ranges(&key, "a/x/1").ok(), Some(vec!["a/x/1".into()]));
        let refused = ranges(&key, "ab").map_err(|e| e.api.status.as_u16());
        assert_eq!(refused, Err(403));
        assert_eq!(
            ranges(&StreamAccess::Full, "z").ok(),
            Some(vec!["z".into()])
        );
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = URL_SAFE_NO_PAD.encode("a/b c");
        assert_eq!(decode_cursor(&c).ok().as_deref(), Some("a/b c"));
        for bad in ["!!", "a/b", "_w"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
        assert!(is_control("__ds/x") && is_control("__ds") && !is_control("__dsx"));
    }
}
