//! Assembles the HTTP application from the capabilities' routers.
//!
//! Open development mode is not decided here: `keys` carries the server's one decision
//! (`Config::open_mode`), the same value the realtime hub was given.
//!
//! Authentication is applied per route set with `route_layer`, so an unknown path is a 404
//! for everyone (no 401 that reveals nothing but costs a lookup), and `open_routes` can
//! exempt whole sets. Durable Streams have their own guard (prefix-scoped keys, read
//! tokens: `sessiond_streams::access`); every other set wants a full-access key. Health and metrics endpoints (and the OpenAPI document) are always open:
//! orchestrators and Prometheus scrape them without credentials, and they reveal no user data.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sessiond_http::access::AccessLog;
use sessiond_http::auth::FullKey;
use sessiond_http::body::{check_json_media, JsonMedia};
use sessiond_http::metrics::RequestMetrics;
use sessiond_http::origin::OpenModePolicy;
use sessiond_http::server_layer::{RefusalCounter, ServerStack};
use sessiond_http::step;
use sessiond_http::{ApiError, ApiKeys};
use sessiond_sessions::routes::{edge, native, session_state, state};
use sessiond_sessions::SessionsState;
use sessiond_store::Stores;
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
    /// A user's devices, export and erasure.
    pub users: crate::users::Users,
    /// Security events (refused requests are counted for their summaries).
    pub security: Option<sessiond_sessions::security::SecurityEvents>,
}

/// Builds the whole router. `keys` carries the server's open-mode decision.
pub fn router(
    config: &Config,
    keys: &ApiKeys,
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
        users,
        security,
    } = capabilities;
    let is_open = |set: RouteSet| keys.is_open() || config.open_routes.contains(&set);
    // Route sets that need a full-access key (a scoped key is a 403 there).
    let guard = |set: RouteSet, router: Router| {
        // With no key configured (development mode) there is nothing to check: no layer.
        if is_open(set) {
            router
        } else {
            router.route_layer(step::layer(FullKey(keys.clone())))
        }
    };
    // The streams themselves: full keys, prefix-scoped keys, read tokens and anonymous
    // callers where streams are open. The guard runs in every mode, because server-owned
    // streams stay closed even there, and it decides from the headers before any body is
    // read.
    let stream_guard = StreamGuard::new(keys.clone(), &config.streams)
        .open_routes(config.open_routes.contains(&RouteSet::Streams))
        .server_owned([
            config.realtime.events.stream.clone(),
            config.middleware.analytics.stream.clone(),
            sessiond_sessions::security::PREFIX.to_string(),
        ]);

    // Sessions remember whether their create carried a service credential (an open route's
    // do not prove who their user is): the server decides that, per request.
    let origin = sessiond_sessions::routes::OriginCheck {
        keys: keys.clone(),
        open_mode: keys.is_open(),
    };
    let mark = |router: Router| router.layer(step::layer(origin.clone()));
    let native = json_only(
        JsonMedia::Strict,
        mark(native::router().with_state(sessions.clone())),
    );
    // Routes of the security boundary itself (rotation, touch, reauth): a full key even where `open_routes`
    // opens the sessions set; only open development mode (no keys at all) needs none.
    let full_key = |router: Router| {
        if keys.is_open() {
            router
        } else {
            router.route_layer(step::layer(FullKey(keys.clone())))
        }
    };
    let strict = json_only(
        JsonMedia::Strict,
        mark(native::service_only_router().with_state(sessions.clone())),
    );
    // A user's devices, export and erasure: the same rule.
    let users = json_only(JsonMedia::Strict, crate::users::router(users));
    // The account-session check of proxies: the same strict rule; it reads no body, so no
    // media-type rule (proxies copy a form post's `Content-Type` onto the bodiless check).
    let strict = strict.merge(edge::router().with_state(sessions.clone()));
    let mut app = Router::new()
        .merge(guard(RouteSet::Sessions, native))
        .merge(full_key(strict))
        .merge(full_key(users))
        .fallback(|| async { ApiError::not_found("no such route").into_response() });
    // Durable Streams (only on engines that store streams).
    if let Some(streams) = streams {
        let routes = sessiond_streams::router(streams).route_layer(step::layer(stream_guard));
        app = app.merge(routes);
    }
    // The reserved `__ds` subscription APIs: management needs a full-access key (patterns span
    // tenants, and subscription ids are one global namespace); callback, ack and release carry
    // the wake's own bearer token instead of an API key, and the JWKS is public.
    if let Some(subs) = subscriptions {
        use sessiond_streams::subscriptions::routes::{control_router, token_router};
        let control = json_only(JsonMedia::Strict, control_router(subs.clone()));
        app = app
            .merge(guard(RouteSet::Streams, control))
            .merge(json_only(JsonMedia::Strict, token_router(subs)));
    }
    if let Some(decider) = decider {
        let routes = sessiond_middleware::router(decider).route_layer(step::layer(JsonByPath));
        app = app.merge(guard(RouteSet::Middleware, routes));
    }
    // Realtime routes authenticate each request themselves (session tokens for sockets,
    // service keys for the HTTP APIs, with the same `keys`), so they sit outside the API-key
    // guard. Its `/v1` APIs take JSON only; seed C's endpoints are a compat surface.
    if let Some(realtime) = realtime {
        app = app.merge(realtime.route_layer(step::layer(JsonByPath)));
    }
    if config.compat.session_state.enabled {
        let compat = mark(session_state::router().with_state(sessions.clone()));
        app = app.nest(
            &config.compat.session_state.prefix,
            guard(RouteSet::Compat, json_only(JsonMedia::Compat, compat)),
        );
    }
    if config.compat.state.enabled {
        let compat = json_only(
            JsonMedia::Compat,
            mark(state::router().with_state(sessions)),
        );
        app = app.nest(&config.compat.state.prefix, guard(RouteSet::Compat, compat));
    }
    // The admin console: its page and login check. Its actions are calls of the routes above.
    if config.admin.enabled {
        app = app.merge(sessiond_admin::router(keys.clone(), stores.admin.name()));
    }
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/v1/openapi.json", get(openapi))
        .with_state(OpsState { stores, metrics });

    // One server-wide layer (access log, metrics, the JSON 405, refused-request counts, the
    // open-mode check, the body limit): see `sessiond_http::server_layer` for why one.
    // Open mode answers only local callers: loopback Host names (DNS rebinding), pages served
    // from this machine, no proxy in between, decided from headers before anything else runs.
    let open_mode = keys.is_open().then(|| OpenModePolicy {
        allowed_hosts: config.http.allowed_hosts.clone(),
        allowed_origins: config.http.allowed_origins.clone(),
    });
    let refusals = security.map(|events| {
        Arc::new(crate::security::RefusedRequests(events)) as Arc<dyn RefusalCounter>
    });
    app.merge(ops).layer(step::layer(ServerStack {
        access: AccessLog {
            enabled: config.log.access,
            trusted_proxies: config.http.trusted_proxies.clone().into(),
        },
        metrics: RequestMetrics::default(),
        open_mode,
        refusals,
        max_body_bytes: config.http.max_body_bytes,
    }))
}

/// A JSON route set: bodies not labelled JSON are a 415 before they are read.
fn json_only(media: JsonMedia, router: Router) -> Router {
    router.route_layer(step::layer(media))
}

/// The media-type rule of routers mixing `/v1` JSON APIs with a seed surface (realtime) or
/// a route that reads no body (forward-auth: proxies copy the original request's headers,
/// `Content-Type` of a form post included, onto a bodiless check).
struct JsonByPath;

impl step::Step for JsonByPath {
    type Seen = ();

    fn before(&self, request: &mut Request) -> ((), Option<Response>) {
        let path = request.uri().path();
        let media = if path == FORWARD_AUTH {
            return ((), None);
        } else if path.starts_with("/v1/") {
            JsonMedia::Strict
        } else {
            JsonMedia::Compat
        };
        let refusal = check_json_media(request.headers(), media).map(IntoResponse::into_response);
        ((), refusal)
    }
}

/// The middleware's forward-auth check (headers only).
const FORWARD_AUTH: &str = "/v1/middleware/forward-auth";

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(ops): State<OpsState>) -> Response {
    match ops.stores.admin.ping().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "engine": ops.stores.admin.name() })).into_response()
        }
        Err(e) => {
            // The engine's own error names hosts, ports and files: logged, never sent to an
            // unauthenticated caller.
            tracing::warn!(error = %e, engine = ops.stores.admin.name(), "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "engine": ops.stores.admin.name(),
                    "error": "the storage engine is not reachable (details in the server log)",
                })),
            )
                .into_response()
        }
    }
}

/// The OpenAPI 3.1 document of every route, kept by hand in `docs/openapi.json` (the test
/// `tests/openapi.rs` holds it to the route table). Public like the other ops routes: it
/// describes the API, it holds no data.
async fn openapi() -> Response {
    (
        [("content-type", "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
        .into_response()
}

async fn render_metrics(State(ops): State<OpsState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        ops.metrics.render(),
    )
        .into_response()
}
