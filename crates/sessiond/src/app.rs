//! Assembles the HTTP application from the capabilities' routers.
//!
//! Authentication is applied per route set with `route_layer`, so an unknown path is a 404
//! for everyone (no 401 that reveals nothing but costs a lookup), and `open_routes` can
//! exempt whole sets. Durable Streams have their own guard (prefix-scoped keys, read
//! tokens: `sessiond_streams::access`); every other set wants a full-access key. Health and metrics endpoints are always open: orchestrators and
//! Prometheus scrape them without credentials, and they reveal no user data.

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sessiond_http::auth::{require_api_key, KeyScope};
use sessiond_http::metrics::{record_request, RequestMetrics};
use sessiond_http::{ApiError, ApiKeys};
use sessiond_sessions::routes::{native, session_state, state};
use sessiond_sessions::SessionsState;
use sessiond_store::Stores;
use sessiond_streams::access::require_stream_access;
use sessiond_streams::StreamGuard;

use crate::config::{Config, RouteSet};

/// What the operational endpoints need.
#[derive(Clone)]
struct OpsState {
    stores: Stores,
    metrics: PrometheusHandle,
}

/// The capabilities the server runs; `None` = not served (disabled, or the engine lacks the
/// storage the capability needs).
pub struct Capabilities {
    /// Sessions and cache (always served).
    pub sessions: SessionsState,
    /// Durable Streams.
    pub streams: Option<sessiond_streams::Streams>,
    /// The reserved `__ds` subscription APIs of Durable Streams.
    pub subscriptions: Option<sessiond_streams::subscriptions::Subscriptions>,
    /// Session middleware (decide, forward-auth).
    pub decider: Option<sessiond_middleware::Decider>,
    /// Realtime routes (they authenticate each request themselves).
    pub realtime: Option<Router>,
}

/// Builds the whole router.
pub fn router(
    config: &Config,
    stores: Stores,
    capabilities: Capabilities,
    metrics: PrometheusHandle,
) -> Router {
    let Capabilities {
        sessions,
        streams,
        subscriptions,
        decider,
        realtime,
    } = capabilities;
    let keys = ApiKeys::new(&config.api_keys).with_scoped(config.streams.keys.iter().map(|k| {
        let scope = KeyScope {
            prefixes: k.stream_prefixes.clone(),
            read_only: k.read_only,
        };
        (k.key.as_str(), scope)
    }));
    let is_open = |set: RouteSet| keys.is_open() || config.open_routes.contains(&set);
    // Route sets that need a full-access key (a scoped key is a 403 there).
    let guard = |set: RouteSet, router: Router| {
        // With no key configured (development mode) there is nothing to check: no layer.
        if is_open(set) {
            router
        } else {
            router.route_layer(from_fn_with_state(keys.clone(), require_api_key))
        }
    };
    // The streams themselves: full keys, prefix-scoped keys and read tokens; the handlers
    // check the scope against the stream name.
    let stream_guard = |router: Router| {
        if is_open(RouteSet::Streams) {
            router
        } else {
            let state = StreamGuard::new(keys.clone(), &config.streams);
            router.route_layer(from_fn_with_state(state, require_stream_access))
        }
    };

    // Sessions remember whether their create carried a service credential (an open route's
    // do not prove who their user is): the server decides that, per request.
    let origin = sessiond_sessions::routes::OriginCheck {
        keys: keys.clone(),
        open_mode: keys.is_open(),
    };
    let mark = |router: Router| {
        use sessiond_sessions::routes::mark_origin;
        router.layer(from_fn_with_state(origin.clone(), mark_origin))
    };
    let native = mark(native::router().with_state(sessions.clone()));
    let mut app = Router::new()
        .merge(guard(RouteSet::Sessions, native))
        .fallback(|| async { ApiError::not_found("no such route").into_response() });
    // Durable Streams (only on engines that store streams).
    if let Some(streams) = streams {
        app = app.merge(stream_guard(sessiond_streams::router(streams)));
    }
    // The reserved `__ds` subscription APIs: management needs a full-access key (patterns span
    // tenants, and subscription ids are one global namespace); callback, ack and release carry
    // the wake's own bearer token instead of an API key.
    if let Some(subs) = subscriptions {
        use sessiond_streams::subscriptions::{control_router, token_router};
        app = app
            .merge(guard(RouteSet::Streams, control_router(subs.clone())))
            .merge(token_router(subs));
    }
    if let Some(decider) = decider {
        let routes = sessiond_middleware::router(decider);
        app = app.merge(guard(RouteSet::Middleware, routes));
    }
    // Realtime routes authenticate each request themselves (session tokens for sockets,
    // service keys for the HTTP APIs), so they sit outside the API-key guard.
    if let Some(realtime) = realtime {
        app = app.merge(realtime);
    }
    if config.compat.session_state.enabled {
        let compat = mark(session_state::router().with_state(sessions.clone()));
        app = app.nest(
            &config.compat.session_state.prefix,
            guard(RouteSet::Compat, compat),
        );
    }
    if config.compat.state.enabled {
        let compat = mark(state::router().with_state(sessions));
        app = app.nest(&config.compat.state.prefix, guard(RouteSet::Compat, compat));
    }
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { stores, metrics });

    app.merge(ops)
        .layer(DefaultBodyLimit::max(config.http.max_body_bytes))
        .layer(from_fn_with_state(
            RequestMetrics::default(),
            record_request,
        ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(ops): State<OpsState>) -> Response {
    match ops.stores.admin.ping().await {
        Ok(()) => Json(json!({ "status": "ready", "engine": ops.stores.admin.name() })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "engine": ops.stores.admin.name(), "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn render_metrics(State(ops): State<OpsState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        ops.metrics.render(),
    )
        .into_response()
}
