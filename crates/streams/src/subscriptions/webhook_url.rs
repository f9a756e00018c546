//! Webhook URL validation (SSRF prevention, PROTOCOL.md §6.2 and §12.8).
//!
//! A webhook makes the server send requests wherever a client says, so the target is checked
//! twice: when the subscription is written ([`validate`]: scheme, credentials, literal
//! addresses, `localhost`) and right before every delivery ([`check_resolved`]: every address
//! the host name resolves to), so a public-looking name that points inside the network is
//! refused too. The rules: `https://` to a public address only; plain `http://` and loopback
//! targets only when the operator set `streams.allow_insecure_webhooks` (development and the
//! conformance suite), and even then only loopback, never RFC 1918, link-local or metadata
//! addresses. (A name that changes its answer between the check and the connection is not
//! caught; pinning the resolved address would need a client per delivery.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use webhook_http::Url;

/// Why a URL was refused (sent to the client as `WEBHOOK_URL_REJECTED`).
pub type Rejection = String;

/// Parses and checks a webhook URL as given by a client.
pub fn validate(raw: &str, allow_insecure: bool) -> Result<Url, Rejection> {
    let url = Url::parse(raw).map_err(|e| format!("not a valid URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("webhook URLs may not carry credentials".into());
    }
    let host = url.host_str().ok_or("webhook URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = is_loopback_name(host)
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| canonical(ip).is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure && loopback => {}
        "http" => {
            return Err(
                "webhook URLs must use https:// (http:// is allowed only for loopback in development mode)"
                    .into(),
            )
        }
        other => return Err(format!("unsupported webhook URL scheme {other}")),
    }
    if loopback {
        return if allow_insecure {
            Ok(url)
        } else {
            Err("loopback webhook targets are allowed only in development mode".into())
        };
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !is_public(ip) {
            return Err(format!(
                "webhook target {ip} is a private or reserved address"
            ));
        }
    }
    if host.ends_with(".local") || host.ends_with(".internal") {
        return Err("webhook target is a local network name".into());
    }
    Ok(url)
}

/// Resolves the URL's host and checks every address it names (before each delivery).
pub async fn check_resolved(url: &Url, allow_insecure: bool) -> Result<(), Rejection> {
    let host = url.host_str().ok_or("webhook URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve {bare}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{bare} resolves to no address"));
    }
    for ip in addrs {
        let ip = canonical(ip);
        if !(is_public(ip) || (allow_insecure && ip.is_loopback())) {
            return Err(format!("{bare} resolves to the non-public address {ip}"));
        }
    }
    Ok(())
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// True for globally routable unicast addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_accepts_only_public_https() {
        assert!(validate("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "http://hooks.example.com/x",
            "https://10.0.0.1/hook",
            "https://169.254.169.254/latest",
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://[::1]/x",
            "https://[fd00::1]/x",
            "https://user:pw@hooks.example.com/",
            "ftp://hooks.example.com/",
        ] {
            assert!(validate(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn development_adds_loopback_only() {
        assert!(validate("http://127.0.0.1:4000/webhook", true).is_ok());
        assert!(validate("http://localhost:4000/webhook", true).is_ok());
        assert!(validate("http://10.0.0.1/hook", true).is_err());
        assert!(validate("http://192.168.1.10/hook", true).is_err());
        assert!(validate("http://hooks.example.com/", true).is_err());
    }

    #[tokio::test]
    async fn resolved_addresses_are_checked() {
        let url = validate("http://127.0.0.1:9/x", true).expect("valid");
        assert!(check_resolved(&url, true).await.is_ok());
        assert!(check_resolved(&url, false).await.is_err());
    }
}
