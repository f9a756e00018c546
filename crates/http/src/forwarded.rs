//! The client address of a request that may have come through proxies.
//!
//! `X-Forwarded-For` and `Forwarded` are written by whoever sent the request, so they are
//! believed only from a configured trusted proxy, and read right to left: every proxy appends
//! the address it saw, so the right-most entry that is not itself a trusted proxy is the
//! first hop nobody we trust can vouch for beyond — the client as far as we can know. Entries
//! to its left could be anything the client wrote.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address: `peer`, or — when `peer` is in `trusted` — the right-most untrusted
/// hop of `X-Forwarded-For` (or, without it, of `Forwarded: for=`). `None` without a peer.
pub fn client_ip(trusted: &[IpNet], h: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = values(h, "x-forwarded-for")
        .flat_map(|v| v.split(','))
        .filter_map(parse_hop)
        .collect();
    if hops.is_empty() {
        hops = values(h, "forwarded")
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_for)
            .filter_map(parse_hop)
            .collect();
    }
    Some(
        hops.into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

fn values<'a>(h: &'a HeaderMap, name: &'static str) -> impl Iterator<Item = &'a str> {
    h.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239), quotes removed.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// One hop as an address: bare, `[v6]`, or with a `:port` suffix; `None` for anything else
/// (`unknown`, obfuscated names: that hop alone is skipped).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = hop.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse().ok();
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_is_read_like_x_forwarded_for() {
        let trusted: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static(
                "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1",
            ),
        );
        assert_eq!(
            client_ip(&trusted, &h, Some(ip("127.0.0.1"))),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client_ip(&trusted, &h, Some(ip("10.0.0.1"))),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(
            client_ip(&[], &h, Some(ip("127.0.0.1"))),
            Some(ip("127.0.0.1"))
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(
            client_ip(&trusted, &h, Some(ip("127.0.0.1"))),
            Some(ip("203.0.113.9"))
        );
    }
}
