//! The access log and request ids.
//!
//! One line per request (target `sessiond::access`, level info) is what an operator greps
//! first when "every page is a 401": it names the route template (never the raw path or query,
//! which can carry ids and tokens), the status, and for an error the message the client got —
//! a refusal's reason, never the credential (no header value is logged). The line can be
//! switched off (`log.access`), except for 401/403, which are always logged: a wrong key
//! somewhere must be visible without turning anything on.
//!
//! Every response carries `X-Request-Id`: the caller's own (a proxy's correlation id) when it
//! is a short printable token, otherwise a fresh random one, so log lines and client reports
//! can be matched.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::ids::frequent_id;

/// The request-id header, read from requests and set on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id kept (longer ones are replaced).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The message of an error response, attached by [`crate::ApiError`] for the access log.
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

/// Settings of the access log (written by [`crate::server_layer`]; the line itself is
/// [`crate::access_line`]'s).
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    /// Log every request (false: only 401 and 403).
    pub enabled: bool,
    /// Peers whose `X-Forwarded-For` / `Forwarded` name the client.
    pub trusted_proxies: Arc<[IpNet]>,
}

/// A caller's id, if it is 1..=128 visible ASCII characters without spaces.
fn incoming_id(h: &HeaderMap) -> Option<String> {
    let id = h.get(&REQUEST_ID)?.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| id.to_owned())
}

/// The id of a request: the caller's own when it is acceptable, else a fresh random one.
pub(crate) fn request_id(h: &HeaderMap) -> String {
    incoming_id(h).unwrap_or_else(frequent_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn caller_ids_are_kept_only_when_short_and_printable() {
        let mut h = HeaderMap::new();
        assert_eq!(incoming_id(&h), None);
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y"));
        assert_eq!(incoming_id(&h).as_deref(), Some("abc-123_x.y"));
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(incoming_id(&h), None);
        let long = "a".repeat(MAX_REQUEST_ID_BYTES + 1);
        h.insert(REQUEST_ID, HeaderValue::from_str(&long).expect("value"));
        assert_eq!(incoming_id(&h), None);
    }
}
