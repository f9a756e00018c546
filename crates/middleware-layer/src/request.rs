//! From a live request to the [`DecisionInput`] sessiond decides on.
//!
//! - `Cookie`: every `Cookie` header, joined with `; ` (HTTP/2 clients may split it).
//! - Client IP: by default the socket peer from axum's `ConnectInfo<SocketAddr>` (serve with
//!   `into_make_service_with_connect_info::<SocketAddr>()`). Behind a proxy, name the header
//!   it writes ([`ClientIp::Header`]): the right-most entry of that header is used, because
//!   that is the one the proxy appended; entries to its left were sent by the client and prove
//!   nothing. Without a usable header value the peer is used.
//! - `User-Agent`, `Accept-Language`, `Accept-Encoding`, `Accept` as sent; the protocol from
//!   the request's HTTP version; the URL (absolute when the request line was, else built from
//!   `Host`) and the method, both for analytics.
//!
//! Fields are cut to the backend's byte limit on a character boundary (a long user agent must
//! not cost the user their page).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::header::{ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, COOKIE, HOST, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, Request, Version};
use sessiond_middleware::DecisionInput;

/// Where the client's IP address comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ClientIp {
    /// The TCP peer (`ConnectInfo<SocketAddr>`); the right choice without a proxy.
    #[default]
    Peer,
    /// The right-most address in this header (`X-Forwarded-For`, `X-Real-IP`, …), written by
    /// the proxy in front of the app; the peer when the header is missing or malformed.
    Header(HeaderName),
}

/// The decision input of `request`, each field at most `max_field_bytes`.
pub fn decision_input<B>(
    request: &Request<B>,
    client_ip: &ClientIp,
    max_field_bytes: usize,
) -> DecisionInput {
    let h = request.headers();
    let cookie = h
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = match client_ip {
        ClientIp::Peer => peer,
        ClientIp::Header(name) => right_most_ip(h, name).or(peer),
    };
    let uri = request.uri();
    let url = match (uri.scheme().is_some(), text(h, HOST)) {
        (true, _) => Some(uri.to_string()),
        (false, Some(host)) => Some(format!(
            "http://{host}{}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        )),
        (false, None) => Some(uri.to_string()),
    };
    let mut input = DecisionInput {
        cookie: (!cookie.is_empty()).then_some(cookie),
        ip: ip.map(|ip| ip.to_string()),
        user_agent: text(h, USER_AGENT),
        accept_language: text(h, ACCEPT_LANGUAGE),
        accept_encoding: text(h, ACCEPT_ENCODING),
        accept: text(h, ACCEPT),
        tls_cipher: None,
        http_protocol: protocol(request.version()).map(str::to_string),
        region: None,
        url,
        method: Some(request.method().to_string()),
    };
    input.truncate(max_field_bytes);
    input
}

fn text(h: &HeaderMap, name: HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The last comma-separated entry of the last `name` header, if it is an IP address.
fn right_most_ip(h: &HeaderMap, name: &HeaderName) -> Option<IpAddr> {
    let last = h.get_all(name).iter().next_back()?.to_str().ok()?;
    last.rsplit(',').next()?.trim().parse().ok()
}

fn protocol(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri("/page?x=1").method("POST");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 5000))));
        request
    }

    #[test]
    fn reads_cookies_metadata_and_the_peer() {
        let r = request(&[
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("host", "app.example"),
            ("user-agent", "ua/1"),
            ("accept-language", "fr"),
        ]);
        let input = decision_input(&r, &ClientIp::Peer, 100);
        assert_eq!(input.cookie.as_deref(), Some("a=1; b=2"));
        assert_eq!(input.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(input.user_agent.as_deref(), Some("ua/1"));
        assert_eq!(input.accept_language.as_deref(), Some("fr"));
        assert_eq!(input.url.as_deref(), Some("http://app.example/page?x=1"));
        assert_eq!(input.method.as_deref(), Some("POST"));
        assert_eq!(input.http_protocol.as_deref(), Some("HTTP/1.1"));
        assert_eq!(input.accept_encoding, None);
    }

    #[test]
    fn configured_header_gives_its_right_most_address_else_the_peer() {
        let xff = ClientIp::Header(HeaderName::from_static("x-forwarded-for"));
        let r = request(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]);
        assert_eq!(
            decision_input(&r, &xff, 100).ip.as_deref(),
            Some("203.0.113.9")
        );
        let r = request(&[("x-forwarded-for", "garbage")]);
        assert_eq!(
            decision_input(&r, &xff, 100).ip.as_deref(),
            Some("10.0.0.1")
        );
        let r = request(&[]);
        assert_eq!(
            decision_input(&r, &xff, 100).ip.as_deref(),
            Some("10.0.0.1")
        );
    }

    #[test]
    fn long_fields_are_cut() {
        let long = "x".repeat(50);
        let r = request(&[("user-agent", &long)]);
        assert_eq!(
            decision_input(&r, &ClientIp::Peer, 10)
                .user_agent
                .as_deref(),
            Some("xxxxxxxxxx")
        );
    }
}
