//! `/v1/users/{u}/devices`, `/v1/users/{u}/export` and `DELETE /v1/users/{u}?confirm={u}`
//! (issue 19 §5): views over a user that span capabilities, so they are assembled here, where
//! the capabilities are wired, and no capability has to name another.
//!
//! Export and erasure go through the registered [`UserDataSource`]s in order (sessions first,
//! so sockets are closed as `erased` while their sessions are already gone and cannot
//! reconnect; then the hub, which also closes the sockets sessions did not open). Erasure
//! records the user in the engine's erasure list *before* deleting anything: an erasure cut
//! short by a crash is still re-applied by a later restore, and a retry finishes it (every
//! source's erase is idempotent). On SQLite the list is mirrored to `erasures.list` beside the
//! database, the copy `sessiond restore` re-applies to an older backup (see [`crate::backup`]).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sessiond_http::user_data::UserDataSource;
use sessiond_http::{ApiError, ApiResult};
use sessiond_realtime::Hub;
use sessiond_sessions::routes::native::SessionView;
use sessiond_sessions::SessionService;
use sessiond_store::{erasure_hash, now_ms, ErasureStore, Millis, SessionOrigin};

/// Name of the erasure list's mirror file in a SQLite data directory.
pub const ERASURE_FILE: &str = "erasures.list";

/// What the routes need. Cheap to clone.
#[derive(Clone)]
pub struct Users(Arc<Parts>);

struct Parts {
    sessions: SessionService,
    hub: Option<Hub>,
    sources: Vec<Arc<dyn UserDataSource>>,
    erasures: Arc<dyn ErasureStore>,
    mirror: Option<PathBuf>,
}

impl Users {
    /// The routes over `sessions` and (when realtime runs) `hub`; `sources` in erasure order;
    /// `mirror`: the erasure list's file copy (SQLite data directories).
    pub fn new(
        sessions: SessionService,
        hub: Option<Hub>,
        sources: Vec<Arc<dyn UserDataSource>>,
        erasures: Arc<dyn ErasureStore>,
        mirror: Option<PathBuf>,
    ) -> Users {
        Users(Arc::new(Parts {
            sessions,
            hub,
            sources,
            erasures,
            mirror,
        }))
    }
}

/// The users' views over the wired capabilities. Export and erasure ask every capability
/// holding data keyed by a user, in this order; security events last: the sessions' endings
/// before them write no events for an erasure, so nothing recreates the user's security
/// stream after that source deleted it.
pub fn wire(
    wiring: &crate::Wiring<'_>,
    sessions: &crate::sessions::Wired,
    hub: Option<&Hub>,
) -> Users {
    let mut sources = vec![sessions.state.sessions.user_data()];
    sources.extend(hub.map(Hub::user_data));
    sources.extend(
        sessions
            .security
            .as_ref()
            .map(|w| Arc::new(w.user_data.clone()) as Arc<dyn UserDataSource>),
    );
    let config = wiring.config;
    let mirror = (config.engine == crate::config::EngineKind::Sqlite)
        .then(|| config.data_dir.join(ERASURE_FILE));
    Users::new(
        sessions.state.sessions.clone(),
        hub.cloned(),
        sources,
        wiring.stores.erasures.clone(),
        mirror,
    )
}

/// The routes (the server mounts them behind the full-key guard, whatever `open_routes`).
pub fn router(users: Users) -> Router {
    Router::new()
        .route("/v1/users/{user}/devices", get(devices))
        .route("/v1/users/{user}/export", get(export))
        .route("/v1/users/{user}", axum::routing::delete(erase))
        .with_state(users)
}

/// When a device was last active: its session's last use or its sockets' latest frame or
/// connect, whichever is latest.
fn activity(device: &Value) -> Millis {
    let conns = device["connections"].as_array().into_iter().flatten();
    let sockets = conns
        .flat_map(|c| [c["last_frame_at"].as_i64(), c["connected_at"].as_i64()])
        .flatten();
    sockets
        .chain(device["session"]["last_seen_at"].as_i64())
        .max()
        .unwrap_or(0)
}

async fn devices(State(u): State<Users>, Path(user): Path<String>) -> ApiResult<Json<Value>> {
    // Open-route sessions never prove who their user is: they are not the user's devices.
    let records: Vec<_> =
        u.0.sessions
            .list_user(&user)
            .await?
            .into_iter()
            .filter(|r| r.origin == SessionOrigin::Service)
            .collect();
    let mut conns = match &u.0.hub {
        Some(hub) => hub.device_connections(&user).await?,
        None => Vec::new(),
    };
    let mut devices = Vec::with_capacity(records.len() + 1);
    for record in &records {
        let (mine, rest): (Vec<Value>, Vec<Value>) = conns
            .into_iter()
            .partition(|c| c["session_id"].as_str() == Some(record.id.as_str()));
        conns = rest;
        let session = serde_json::to_value(SessionView::of(record)).map_err(ApiError::internal)?;
        devices.push(json!({"session": session, "connections": mine}));
    }
    // Sockets opened without a session (a service key, the middleware's cookie); those of a
    // session that ended a moment ago are closing and left out.
    let sessionless: Vec<Value> = conns
        .into_iter()
        .filter(|c| c["session_id"].is_null())
        .collect();
    if !sessionless.is_empty() {
        devices.push(json!({"session": null, "connections": sessionless}));
    }
    devices.sort_by_key(|d| std::cmp::Reverse(activity(d)));
    Ok(Json(json!({"user_id": user, "devices": devices})))
}

async fn export(State(u): State<Users>, Path(user): Path<String>) -> ApiResult<Json<Value>> {
    u.0.sessions.check_id("user id", &user)?;
    let mut doc = Map::new();
    doc.insert("user_id".into(), json!(user));
    doc.insert("exported_at".into(), json!(now_ms()));
    for source in &u.0.sources {
        doc.insert(source.name().into(), source.export(&user).await?);
    }
    Ok(Json(Value::Object(doc)))
}

#[derive(Deserialize)]
struct EraseQuery {
    confirm: Option<String>,
}

async fn erase(
    State(u): State<Users>,
    Path(user): Path<String>,
    query: Result<Query<EraseQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    u.0.sessions.check_id("user id", &user)?;
    // Constant-time is not needed: `confirm` guards against mistakes, not attackers (the
    // caller holds a full key).
    if query.confirm.as_deref() != Some(user.as_str()) {
        return Err(ApiError::bad_request(
            "erasure needs ?confirm=<the same user id>: it deletes everything of the user",
        ));
    }
    let hash = erasure_hash(&user);
    let at = now_ms();
    u.0.erasures.record_erasure(&hash, at).await?;
    if let Some(file) = u.0.mirror.clone() {
        tokio::task::spawn_blocking(move || append_mirror(&file, &hash, at))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(format!("cannot write the erasure list: {e}")))?;
    }
    for source in &u.0.sources {
        source.erase(&user).await?;
    }
    metrics::counter!("sessiond_users_erased_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}

/// Appends one entry (`<hash> <ms>`) to the mirror file and syncs it.
fn append_mirror(file: &std::path::Path, hash: &str, at: Millis) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    writeln!(f, "{hash} {at}")?;
    f.sync_all()
}

/// Reads a mirror file: `Ok(empty)` when it does not exist; malformed lines are an error (a
/// list that cannot be read must stop a restore, not be skipped).
pub fn read_mirror(file: &std::path::Path) -> anyhow::Result<Vec<(String, Millis)>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", file.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (
                parts.next(),
                parts.next().map(str::parse::<Millis>),
                parts.next(),
            ) {
                (Some(hash), Some(Ok(at)), None) => Ok((hash.to_string(), at)),
                _ => Err(anyhow::anyhow!(
                    "{}: malformed line {line:?} (expected `<hash> <ms>`)",
                    file.display()
                )),
            }
        })
        .collect()
}

/// Writes `list` as the whole mirror file (atomically: a temporary file renamed over it).
pub fn write_mirror(file: &std::path::Path, list: &[(String, Millis)]) -> std::io::Result<()> {
    let partial = file.with_extension("list.partial");
    let mut f = std::fs::File::create(&partial)?;
    for (hash, at) in list {
        writeln!(f, "{hash} {at}")?;
    }
    f.sync_all()?;
    std::fs::rename(&partial, file)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_round_trips_and_refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(ERASURE_FILE);
        assert!(
            read_mirror(&file).unwrap().is_empty(),
            "no file: no entries"
        );
        append_mirror(&file, "aaa", 5).unwrap();
        append_mirror(&file, "bbb", 7).unwrap();
        let list = read_mirror(&file).unwrap();
        assert_eq!(list, vec![("aaa".into(), 5), ("bbb".into(), 7)]);
        write_mirror(&file, &list[..1]).unwrap();
        assert_eq!(read_mirror(&file).unwrap(), vec![("aaa".into(), 5)]);
        for bad in ["aaa", "aaa x", "aaa 5 extra"] {
            std::fs::write(&file, format!("{bad}\n")).unwrap();
            assert!(read_mirror(&file).is_err(), "{bad:?} accepted");
        }
    }
}
