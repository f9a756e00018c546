//! Which web pages and host names may reach the server: open-mode locality (DNS rebinding,
//! cross-site pages, proxies) and the same-origin rule for cookie-authenticated requests.
//!
//! A browser attaches cookies on its own and lets any page send simple requests, so two
//! credentials are dangerous without an origin rule: *no credential at all* (open development
//! mode, where any page the developer visits could call the server, and a rebinding DNS name
//! could make it same-origin) and *cookies* (cross-site WebSocket hijacking and CSRF). Bearer
//! keys and tokens are not: a page cannot make a victim's browser send them. Every check
//! here is decided from headers only, before any body is read.

use axum::extract::Request;
use axum::http::header::{FORWARDED, HOST, ORIGIN, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

use crate::error::ApiError;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Host names that are this machine whatever DNS says.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The host of a `host[:port]` authority as written (`[::1]` keeps its brackets); compared
/// case-insensitively by the callers, without a lowercased copy per request.
fn authority_host(authority: &str) -> &str {
    let authority = authority.trim();
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Whether a `Host` header value (`host[:port]`) names the loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
    let host = authority_host(host);
    LOOPBACK_HOSTS.iter().any(|l| l.eq_ignore_ascii_case(host))
}

/// Splits an `Origin` (`scheme://host[:port]`) into scheme and authority; `None` for `null`
/// and anything that is not a serialized origin.
fn parse_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    Some((scheme, authority))
}

/// Whether `origin` is a page served from this machine (`http(s)://localhost|127.0.0.1|[::1]`
/// on any port).
pub fn is_loopback_origin(origin: &str) -> bool {
    parse_origin(origin).is_some_and(|(_, authority)| is_loopback_host(authority))
}

/// `authority` without the scheme's default port, lowercased.
fn without_default_port(scheme: &str, authority: &str) -> String {
    let authority = authority.to_ascii_lowercase();
    let default = if scheme.eq_ignore_ascii_case("https") {
        ":443"
    } else {
        ":80"
    };
    authority
        .strip_suffix(default)
        .map(str::to_string)
        .unwrap_or(authority)
}

/// Whether `origin` names the same host and port as the request's `Host`.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = parse_origin(origin) else {
        return false;
    };
    without_default_port(scheme, authority) == without_default_port(scheme, host)
}

fn listed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The request's `Host` (HTTP/1.1 header, or the URI authority of HTTP/2).
fn request_host(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

/// The cross-site rule for a request authenticated by a cookie: a browser sends `Origin` on
/// every WebSocket handshake and cross-origin request, so it must name the request's own
/// host or one of `allowed`. No `Origin` at all is not a browser acting for another site
/// (non-browser clients do not send one) and passes.
pub fn check_cookie_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("null");
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if (!host.is_empty() && same_origin(origin, host)) || listed(origin, allowed) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "a cookie-authenticated request from origin `{origin}` is refused: it is neither this \
         server's origin nor in realtime.allowed_origins"
    )))
}

/// What open development mode accepts besides loopback (`[http] allowed_hosts` and
/// `allowed_origins`).
#[derive(Clone, Debug, Default)]
pub struct OpenModePolicy {
    /// Extra `Host` names (without port) served in open mode.
    pub allowed_hosts: Vec<String>,
    /// Extra page origins allowed in open mode.
    pub allowed_origins: Vec<String>,
}

impl OpenModePolicy {
    fn host_allowed(&self, host: &str) -> bool {
        let name = authority_host(host);
        is_loopback_host(host)
            || self
                .allowed_hosts
                .iter()
                .any(|h| authority_host(h).eq_ignore_ascii_case(name))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        is_loopback_origin(origin) || listed(origin, &self.allowed_origins)
    }

    /// Decides from the headers whether an open-mode request is local; the 403 says why not.
    pub fn check(&self, request: &Request) -> Result<(), ApiError> {
        let headers = request.headers();
        if headers.contains_key(FORWARDED) || headers.contains_key(X_FORWARDED_FOR) {
            return Err(ApiError::forbidden(
                "open mode (no API key) serves only local clients, and this request came \
                 through a proxy (Forwarded / X-Forwarded-For): configure api_keys",
            ));
        }
        let host = request_host(request).unwrap_or_default();
        if !self.host_allowed(host) {
            return Err(ApiError::forbidden(format!(
                "open mode (no API key) answers only Host localhost, 127.0.0.1 or [::1] (DNS \
                 rebinding protection), not `{host}`: add it to http.allowed_hosts or \
                 configure api_keys"
            )));
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("null");
            if !self.origin_allowed(origin) {
                return Err(ApiError::forbidden(format!(
                    "open mode (no API key) answers only pages served from this machine, not \
                     origin `{origin}`: add it to http.allowed_origins or configure api_keys"
                )));
            }
        }
        Ok(())
    }
}

/// After an open-mode request was let through: narrows a wildcard
/// `Access-Control-Allow-Origin` to the calling `origin` (a browser's cross-origin request
/// always carries `Origin`; without one nothing needs narrowing).
pub fn narrow_allow_origin(origin: HeaderValue, response: &mut Response) {
    let headers = response.headers_mut();
    if headers.contains_key("access-control-allow-origin") {
        headers.insert("access-control-allow-origin", origin);
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_origins() {
        for host in [
            "localhost",
            "LOCALHOST:7700",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["rebind.example", "127.0.0.2", "localhost.evil", "::1", ""] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(is_loopback_origin("http://localhost:5173"));
        assert!(is_loopback_origin("https://[::1]:8443"));
        assert!(!is_loopback_origin("https://evil.example"));
        assert!(!is_loopback_origin("null"));
        assert!(!is_loopback_origin("http://localhost@evil.example"));
        assert!(!is_loopback_origin("file://localhost"));
    }

    #[test]
    fn open_mode_hosts_compare_without_case_or_port() {
        let policy = OpenModePolicy {
            allowed_hosts: vec!["MyApp.test".to_string(), "[fd00::1]:9".to_string()],
            allowed_origins: Vec::new(),
        };
        for host in [
            "myapp.TEST:8080",
            "myapp.test",
            " localhost ",
            "[FD00::1]:443",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
        for host in ["other.test", "myapp.test.evil", "[fd00::2]", ""] {
            assert!(!policy.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn cookie_origin_rule() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("app.example"));
        assert!(check_cookie_origin(&headers, &[]).is_ok(), "no Origin");
        headers.insert(ORIGIN, HeaderValue::from_static("https://app.example"));
        assert!(check_cookie_origin(&headers, &[]).is_ok(), "same host");
        headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(check_cookie_origin(&headers, &[]).is_err());
        let allowed = vec!["https://evil.example/".to_string()];
        assert!(check_cookie_origin(&headers, &allowed).is_ok(), "listed");
        headers.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(check_cookie_origin(&headers, &allowed).is_err());
        headers.insert(HOST, HeaderValue::from_static("app.example:8080"));
        headers.insert(ORIGIN, HeaderValue::from_static("http://app.example"));
        assert!(check_cookie_origin(&headers, &[]).is_err(), "other port");
    }
}
