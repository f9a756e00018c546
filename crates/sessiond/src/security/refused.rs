//! Counts refused requests (401, 403) for the global stream's `request.refused` summaries.
//!
//! Why on every route (through the server-wide layer): refusals come from many places (API
//! keys, stream tokens, scoped keys, the edge check), and what the client sees is the one
//! thing they share. Socket and SSE attempts are left out: the realtime hub records those as
//! `socket.refused`.

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use sessiond_http::server_layer::RefusalCounter;
use sessiond_sessions::security::{route_class, SecurityEvents};

/// Notes 401/403 answers in the summary's counts (a [`RefusalCounter`] of the server layer).
pub struct RefusedRequests(pub SecurityEvents);

impl RefusalCounter for RefusedRequests {
    fn watch(&self, request: &Request) -> Option<&'static str> {
        (!is_socket_attempt(request.headers())).then(|| route_class(request.uri().path()))
    }

    fn refused(&self, class: &'static str, status: StatusCode) {
        self.0.note_refused_request(class, status.as_u16());
    }
}

/// A WebSocket upgrade or an SSE (`EventSource`) request.
fn is_socket_attempt(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        // Case-insensitive, without lowercasing a copy of each value.
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.as_bytes()
                    .windows(token.len())
                    .any(|w| w.eq_ignore_ascii_case(token.as_bytes()))
            })
    };
    has(header::UPGRADE, "websocket") || has(header::ACCEPT, "text/event-stream")
}
