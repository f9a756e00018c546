//! The route table of the security matrix (`security_matrix.rs`): every `.route(`
//! registration of the capabilities with its auth class and the calls that exercise it.
#![allow(dead_code)]

/// Who may pass a route's authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Anyone (health, metrics, the public JWKS).
    Public,
    /// The API-key guard: a full service key (everyone in open mode).
    Service,
    /// A full service key, like `Service`; the route itself then answers 401 for a request
    /// without an account session cookie (its own 401, told apart by its message).
    Edge,
    /// Realtime's own service check: a service key in `Authorization`; in open mode no
    /// credential (a user's session token is not a service).
    RealtimeService,
    /// Sockets and SSE: an authenticated user (session token, middleware cookie) or a
    /// service key; never anonymous.
    Socket,
    /// Application streams in the tenant key's prefix.
    Stream,
    /// Server-owned streams: the service key reads; nobody writes; open mode does not open.
    ServerOwned,
    /// Subscription wake callbacks: only the wake's own token. Without a live wake no token
    /// exists, so the check is that no credential of the matrix succeeds (2xx).
    WakeToken,
}

/// One `.route(` registration: source file, its path argument as written, and the calls
/// that exercise it (method, concrete path, JSON body).
pub struct Route {
    pub file: &'static str,
    pub arg: &'static str,
    pub class: Class,
    pub calls: &'static [(&'static str, &'static str, Option<&'static str>)],
}

const SUB: &str = "/v1/stream/__ds/subscriptions/s1";
const WAKE: &str = r#"{"wake_id":"w1","generation":1}"#;

macro_rules! route {
    ($file:expr, $arg:expr, $class:expr, [$(($m:expr, $p:expr, $b:expr)),* $(,)?]) => {
        Route { file: $file, arg: $arg, class: $class, calls: &[$(($m, $p, $b)),*] }
    };
}

const NATIVE: &str = "sessions/src/routes/native.rs";
const USERS: &str = "sessiond/src/users.rs";
const EDGE: &str = "sessions/src/routes/edge.rs";
const STATE: &str = "sessions/src/routes/state.rs";
const SSTATE: &str = "sessions/src/routes/session_state.rs";
const API: &str = "realtime/src/api.rs";
const SEED: &str = "realtime/src/seed.rs";
const SUBS: &str = "streams/src/subscriptions/routes.rs";

pub use Class::*;

pub const ROUTES: &[Route] = &[
    route!(
        "sessiond/src/app.rs",
        "\"/healthz\"",
        Public,
        [("GET", "/healthz", None)]
    ),
    route!(
        "sessiond/src/app.rs",
        "\"/readyz\"",
        Public,
        [("GET", "/readyz", None)]
    ),
    route!(
        "sessiond/src/app.rs",
        "\"/metrics\"",
        Public,
        [("GET", "/metrics", None)]
    ),
    route!(
        "sessiond/src/app.rs",
        "\"/v1/openapi.json\"",
        Public,
        [("GET", "/v1/openapi.json", None)]
    ),
    route!(
        NATIVE,
        "\"/v1/sessions\"",
        Service,
        [("POST", "/v1/sessions", Some("{}"))]
    ),
    route!(
        NATIVE,
        "\"/v1/sessions/{id}\"",
        Service,
        [
            ("GET", "/v1/sessions/none", None),
            ("PUT", "/v1/sessions/none", Some(r#"{"data":{}}"#)),
            ("PATCH", "/v1/sessions/none", Some(r#"{"data":{}}"#)),
            ("DELETE", "/v1/sessions/none", None),
        ]
    ),
    route!(
        NATIVE,
        "\"/v1/sessions/{id}/rotate\"",
        Service,
        [("POST", "/v1/sessions/none/rotate", Some("{}"))]
    ),
    route!(
        USERS,
        "\"/v1/users/{user}/devices\"",
        Service,
        [("GET", "/v1/users/u1/devices", None)]
    ),
    route!(
        USERS,
        "\"/v1/users/{user}/export\"",
        Service,
        [("GET", "/v1/users/u1/export", None)]
    ),
    route!(
        USERS,
        "\"/v1/users/{user}\"",
        Service,
        [("DELETE", "/v1/users/u1?confirm=u1", None)]
    ),
    route!(
        NATIVE,
        "\"/v1/sessions/{id}/touch\"",
        Service,
        [("POST", "/v1/sessions/none/touch", None)]
    ),
    route!(
        NATIVE,
        "\"/v1/sessions/{id}/reauth\"",
        Service,
        [("POST", "/v1/sessions/none/reauth", None)]
    ),
    route!(
        EDGE,
        "\"/v1/sessions/forward-auth\"",
        Edge,
        [("GET", "/v1/sessions/forward-auth", None)]
    ),
    route!(
        NATIVE,
        "\"/v1/users/{user_id}/sessions\"",
        Service,
        [
            ("GET", "/v1/users/bob/sessions", None),
            ("DELETE", "/v1/users/bob/sessions", None),
        ]
    ),
    route!(
        NATIVE,
        "\"/v1/cache/{namespace}\"",
        Service,
        [("DELETE", "/v1/cache/ns", None)]
    ),
    route!(
        NATIVE,
        "\"/v1/cache/{namespace}/{key}\"",
        Service,
        [
            ("GET", "/v1/cache/ns/k", None),
            ("PUT", "/v1/cache/ns/k", Some(r#"{"data":1}"#)),
            ("DELETE", "/v1/cache/ns/k", None),
        ]
    ),
    route!(
        "middleware/src/routes.rs",
        "\"/v1/middleware/decide\"",
        Service,
        [(
            "POST",
            "/v1/middleware/decide",
            Some(r#"{"ip":"192.0.2.1","url":"https://a.example/","method":"GET"}"#)
        ),]
    ),
    route!(
        "middleware/src/routes.rs",
        "\"/v1/middleware/forward-auth\"",
        Service,
        [("GET", "/v1/middleware/forward-auth", None),]
    ),
    route!(
        API,
        "\"/v1/realtime/stats\"",
        RealtimeService,
        [("GET", "/v1/realtime/stats", None)]
    ),
    route!(
        API,
        "\"/v1/realtime/publish\"",
        RealtimeService,
        [(
            "POST",
            "/v1/realtime/publish",
            Some(r#"{"channel":"room:x","data":{}}"#)
        ),]
    ),
    route!(
        API,
        "\"/v1/realtime/grants\"",
        RealtimeService,
        [
            (
                "POST",
                "/v1/realtime/grants",
                Some(r#"{"user_id":"bob","channel":"room:x"}"#)
            ),
            (
                "DELETE",
                "/v1/realtime/grants",
                Some(r#"{"user_id":"bob","channel":"room:x"}"#)
            ),
        ]
    ),
    route!(
        API,
        "\"/v1/realtime/grant-tokens\"",
        RealtimeService,
        [(
            "POST",
            "/v1/realtime/grant-tokens",
            Some(r#"{"user_id":"bob","channel":"room:x"}"#)
        ),]
    ),
    route!(
        API,
        "\"/v1/realtime/users/{user}/connections\"",
        RealtimeService,
        [
            ("GET", "/v1/realtime/users/bob/connections", None),
            ("DELETE", "/v1/realtime/users/bob/connections", None),
        ]
    ),
    route!(
        API,
        "\"/v1/realtime/connections/{id}\"",
        RealtimeService,
        [("DELETE", "/v1/realtime/connections/c1", None),]
    ),
    route!(
        API,
        "\"/v1/realtime/users/{user}/send\"",
        RealtimeService,
        [(
            "POST",
            "/v1/realtime/users/bob/send",
            Some(r#"{"data":{}}"#)
        ),]
    ),
    route!(
        API,
        "\"/v1/realtime/channels/{channel}/presence\"",
        RealtimeService,
        [("GET", "/v1/realtime/channels/room:x/presence", None),]
    ),
    route!(
        "realtime/src/listing.rs",
        "\"/v1/realtime/connections\"",
        RealtimeService,
        [("GET", "/v1/realtime/connections?limit=5", None)]
    ),
    route!(
        "realtime/src/listing.rs",
        "\"/v1/realtime/channels\"",
        RealtimeService,
        [("GET", "/v1/realtime/channels?prefix=room:", None)]
    ),
    // The admin console (enabled in the matrix): the page and its files are public (they
    // hold no data; every call the page makes is authenticated by its route), the login
    // check wants a full key.
    route!(
        "admin/src/lib.rs",
        "\"/admin\"",
        Public,
        [("GET", "/admin", None)]
    ),
    route!(
        "admin/src/lib.rs",
        "\"/admin/assets/{file}\"",
        Public,
        [("GET", "/admin/assets/app.js", None)]
    ),
    route!(
        "admin/src/lib.rs",
        "\"/admin/api/info\"",
        Service,
        [("GET", "/admin/api/info", None)]
    ),
    route!(
        "realtime/src/v1.rs",
        "\"/v1/realtime\"",
        Socket,
        [("GET", "/v1/realtime", None)]
    ),
    route!(
        "realtime/src/sse.rs",
        "\"/v1/realtime/sse\"",
        Socket,
        [("GET", "/v1/realtime/sse", None)]
    ),
    route!(SEED, "&base", Socket, [("GET", "/__user-session", None)]),
    route!(
        SEED,
        "&format!(\"{base}/state\")",
        RealtimeService,
        [("GET", "/__user-session/state?userId=bob", None),]
    ),
    route!(
        SEED,
        "&format!(\"{base}/clear\")",
        RealtimeService,
        [("POST", "/__user-session/clear?userId=bob", None),]
    ),
    route!(
        SEED,
        "&format!(\"{base}/notify\")",
        RealtimeService,
        [(
            "POST",
            "/__user-session/notify?userId=bob",
            Some(r#"{"type":"notification","message":"hi"}"#)
        ),]
    ),
    route!(
        "streams/src/routes.rs",
        "\"/v1/stream/{*path}\"",
        Stream,
        [
            ("PUT", "/v1/stream/tenant-a/m", None),
            ("POST", "/v1/stream/tenant-a/m", None),
            ("GET", "/v1/stream/tenant-a/m?offset=-1", None),
            ("HEAD", "/v1/stream/tenant-a/m", None),
            ("DELETE", "/v1/stream/tenant-a/m", None),
        ]
    ),
    route!(
        "streams/src/routes.rs",
        "\"/v1/streams/{*path}\"",
        Stream,
        [(
            "PATCH",
            "/v1/streams/tenant-a/m",
            Some(r#"{"max_bytes":100}"#)
        )]
    ),
    route!(
        "streams/src/routes.rs",
        "\"/v1/stream-producers/{*path}\"",
        Stream,
        [("GET", "/v1/stream-producers/tenant-a/m", None)]
    ),
    route!(
        "streams/src/routes.rs",
        "\"/v1/streams\"",
        Stream,
        [("GET", "/v1/streams?prefix=tenant-a%2F", None)]
    ),
    route!(
        SUBS,
        "SUB",
        Service,
        [
            ("PUT", SUB, Some("{}")),
            ("GET", SUB, None),
            ("DELETE", SUB, None),
        ]
    ),
    route!(
        SUBS,
        "&format!(\"{SUB}/streams\")",
        Service,
        [(
            "POST",
            "/v1/stream/__ds/subscriptions/s1/streams",
            Some("{}")
        ),]
    ),
    route!(
        SUBS,
        "&format!(\"{SUB}/streams/{{*path}}\")",
        Service,
        [(
            "DELETE",
            "/v1/stream/__ds/subscriptions/s1/streams/a/b",
            None
        ),]
    ),
    route!(
        SUBS,
        "&format!(\"{SUB}/claim\")",
        Service,
        [("POST", "/v1/stream/__ds/subscriptions/s1/claim", Some("{}")),]
    ),
    route!(
        SUBS,
        "\"/v1/stream/__ds/{*rest}\"",
        Service,
        [("GET", "/v1/stream/__ds/other", None)]
    ),
    route!(
        SUBS,
        "\"/v1/stream/__ds/jwks.json\"",
        Public,
        [("GET", "/v1/stream/__ds/jwks.json", None)]
    ),
    route!(
        SUBS,
        "&format!(\"{SUB}/callback\")",
        WakeToken,
        [(
            "POST",
            "/v1/stream/__ds/subscriptions/s1/callback",
            Some(WAKE)
        ),]
    ),
    route!(
        SUBS,
        "&format!(\"{SUB}/ack\")",
        WakeToken,
        [("POST", "/v1/stream/__ds/subscriptions/s1/ack", Some(WAKE)),]
    ),
    route!(
        SUBS,
        "&format!(\"{SUB}/release\")",
        WakeToken,
        [(
            "POST",
            "/v1/stream/__ds/subscriptions/s1/release",
            Some(WAKE)
        ),]
    ),
    route!(
        STATE,
        "\"/create\"",
        Service,
        [("POST", "/compat/state/create", Some("{}"))]
    ),
    route!(
        STATE,
        "\"/get\"",
        Service,
        [("GET", "/compat/state/get?id=x", None)]
    ),
    route!(
        STATE,
        "\"/update\"",
        Service,
        [(
            "POST",
            "/compat/state/update",
            Some(r#"{"sessionId":"x","data":{}}"#)
        )]
    ),
    route!(
        STATE,
        "\"/delete\"",
        Service,
        [("DELETE", "/compat/state/delete?id=x", None)]
    ),
    route!(
        STATE,
        "\"/calendars\"",
        Service,
        [
            ("GET", "/compat/state/calendars", None),
            ("PUT", "/compat/state/calendars", Some("{}")),
        ]
    ),
    route!(
        STATE,
        "\"/events/\"",
        Service,
        [
            ("GET", "/compat/state/events/", None),
            ("PUT", "/compat/state/events/", Some("{}")),
        ]
    ),
    route!(
        STATE,
        "\"/events/{*rest}\"",
        Service,
        [
            ("GET", "/compat/state/events/c1", None),
            ("PUT", "/compat/state/events/c1", Some("{}")),
        ]
    ),
    route!(
        STATE,
        "\"/preferences\"",
        Service,
        [
            ("GET", "/compat/state/preferences", None),
            ("PUT", "/compat/state/preferences", Some("{}")),
        ]
    ),
    route!(
        STATE,
        "\"/clear\"",
        Service,
        [("DELETE", "/compat/state/clear", None)]
    ),
    route!(
        SSTATE,
        "\"/create\"",
        Service,
        [("POST", "/compat/session-state/create", Some("{}"))]
    ),
    route!(
        SSTATE,
        "\"/get/{id}\"",
        Service,
        [("GET", "/compat/session-state/get/x", None)]
    ),
    route!(
        SSTATE,
        "\"/update/{id}\"",
        Service,
        [("PUT", "/compat/session-state/update/x", Some("{}"))]
    ),
    route!(
        SSTATE,
        "\"/add/{id}\"",
        Service,
        [("PATCH", "/compat/session-state/add/x", Some("{}"))]
    ),
    route!(
        SSTATE,
        "\"/delete/{id}\"",
        Service,
        [("DELETE", "/compat/session-state/delete/x", None)]
    ),
    route!(
        SSTATE,
        "\"/cache/{key}\"",
        Service,
        [
            ("GET", "/compat/session-state/cache/k", None),
            ("PUT", "/compat/session-state/cache/k", Some("{}")),
            ("DELETE", "/compat/session-state/cache/k", None),
        ]
    ),
];

/// Server-owned streams are part of the wildcard route, with their own class.
pub const SERVER_OWNED_CALLS: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/v1/stream/__system/m?offset=-1", None),
    ("HEAD", "/v1/stream/__sessiond/m", None),
    ("PUT", "/v1/stream/__system/m", None),
    ("POST", "/v1/stream/__sessiond/m", None),
    ("DELETE", "/v1/stream/__system/m", None),
];
