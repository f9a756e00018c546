//! Counts refused requests (401, 403) for the global stream's `request.refused` summaries.
//!
//! Why a layer on every route: refusals come from many places (API keys, stream tokens,
//! scoped keys, the edge check), and what the client sees is the one thing they share.
//! Socket and SSE attempts are left out: the realtime hub records those as `socket.refused`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sessiond_sessions::security::{route_class, SecurityEvents};

/// Middleware (`from_fn_with_state`): notes a 401/403 answer in the summary's counts.
pub async fn count_refused(
    State(events): State<std::sync::Arc<SecurityEvents>>,
    request: Request,
    next: Next,
) -> Response {
    let class = route_class(request.uri().path());
    let socket = is_socket_attempt(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !socket && (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN) {
        events.note_refused_request(class, status.as_u16());
    }
    response
}

/// A WebSocket upgrade or an SSE (`EventSource`) request.
fn is_socket_attempt(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .any(|v| contains_ignoring_case(v.as_bytes(), token.as_bytes()))
    };
    has(header::UPGRADE, "websocket") || has(header::ACCEPT, "text/event-stream")
}

/// Whether `lowercase` occurs in `text`, ASCII case ignored (no lowercased copy of every
/// `Accept` header a browser sends).
fn contains_ignoring_case(text: &[u8], lowercase: &[u8]) -> bool {
    text.windows(lowercase.len())
        .any(|w| w.eq_ignore_ascii_case(lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_attempts_are_recognised_in_any_case() {
        let attempt = |name: &'static str, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().expect("header"));
            is_socket_attempt(&h)
        };
        assert!(attempt("upgrade", "WebSocket"));
        assert!(attempt("accept", "text/html, Text/Event-Stream;q=0.9"));
        assert!(!attempt("accept", "application/json"));
        assert!(!attempt("upgrade", "h2c"));
        assert!(!is_socket_attempt(&HeaderMap::new()));
    }
}
