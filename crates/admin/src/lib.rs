//! The admin console at `/admin`: a browser page for operators, off unless `admin.enabled`.
//!
//! The console is a client of the server's own APIs and nothing more: the page keeps the
//! operator's key in `sessionStorage` and calls `/v1/...` and `/metrics` with it as a bearer,
//! exactly as a script would, so every action is authorized, validated and logged by the
//! route that owns it. This crate serves the page's files, compiled from `ui/` and embedded
//! here at build time (no CDN, no network at run time, and `cargo build` needs no Node), and
//! one small route the page needs for itself: the login check, which also tells the page what
//! no `/v1` API does (engine, version, uptime).
//!
//! `assets/app.js` is generated (`ui/build.mjs`) and committed; `ui/test/admin.test.mjs` fails
//! when it no longer matches `ui/src`. The page and its stylesheet need no build step, so they
//! are embedded from `ui/` as written (one copy, nothing to keep in step).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sessiond_http::auth::auth_failure;
use sessiond_http::{ApiError, ApiKeys};

/// `[admin]` configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the console at `/admin`.
    pub enabled: bool,
    /// The console's own full-access key (accepted wherever an API key is, while the console
    /// is enabled), so an operator's browser holds a key that can be rotated apart from the
    /// applications'. Empty: log in with an `api_keys` entry.
    pub key: String,
}

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page may load only its own files and talk only to this server; nothing may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Clone)]
struct Admin {
    keys: ApiKeys,
    engine: String,
    started: Instant,
    started_at_ms: u128,
}

/// The console's routes. `keys` is the server's key set (with the admin key in it), `engine`
/// the storage engine's name as `/readyz` reports it.
pub fn router(keys: ApiKeys, engine: &str) -> Router {
    let state = Admin {
        keys,
        engine: engine.to_string(),
        started: Instant::now(),
        started_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    };
    Router::new()
        .route("/admin", get(index))
        .route("/admin/assets/{file}", get(asset))
        .route("/admin/api/info", get(info))
        .with_state(state)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new binary may ship a new page: always revalidate.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page("text/css; charset=utf-8", APP_CSS),
        _ => ApiError::not_found("no such asset").into_response(),
    }
}

/// The login check: 200 with the server's facts for a full-access key, else 401/403.
async fn info(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if let Err(err) = admin.keys.check_full(&headers) {
        return auth_failure(err);
    }
    let mut response = Json(json!({
        "engine": admin.engine,
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": admin.started_at_ms,
        "uptime_s": admin.started.elapsed().as_secs(),
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str, bearer: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(key) = bearer {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        app.clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn page_and_assets_are_embedded_with_a_strict_policy() {
        let app = router(ApiKeys::new(["k".repeat(24)]), "memory");
        for (path, kind) in [
            ("/admin", "text/html"),
            ("/admin/assets/app.js", "text/javascript"),
            ("/admin/assets/app.css", "text/css"),
        ] {
            let r = get(&app, path, None).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with(kind)));
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP);
        }
        assert_eq!(
            get(&app, "/admin/assets/other.js", None).await.status(),
            StatusCode::NOT_FOUND
        );
        // No third-party origin anywhere in what the page loads.
        for text in [INDEX, APP_JS, APP_CSS] {
            assert!(!text.contains("https://"), "an external URL in the assets");
        }
    }

    #[tokio::test]
    async fn info_needs_a_full_key() {
        let key = "k".repeat(24);
        let app = router(ApiKeys::new([key.as_str()]), "sqlite");
        assert_eq!(
            get(&app, "/admin/api/info", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&app, "/admin/api/info", Some("wrong-key-0123456789abc"))
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        let r = get(&app, "/admin/api/info", Some(&key)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}
