//! Webhook URL validation (SSRF prevention, PROTOCOL.md §6.2 and §12.8).
//!
//! A webhook makes the server send requests wherever a client says, so the target is checked
//! twice: when the subscription is written ([`validate`]: scheme, credentials, literal
//! addresses, `localhost`) and at every connection ([`CheckedResolver`]: the webhook client's
//! own DNS resolver returns only addresses that pass, so the socket is opened to exactly an
//! address that was checked; a name that answers differently on a second lookup, DNS
//! rebinding, gets no second lookup). The rules: `https://` to a public address only; plain
//! `http://` and loopback targets only when the operator set
//! `streams.allow_insecure_webhooks` (development and the conformance suite), and even then
//! only loopback, never RFC 1918, link-local or metadata addresses.
//!
//! "Public" is judged on the IPv4 address an IPv6 address carries when it carries one:
//! IPv4-mapped (`::ffff:a.b.c.d`) and -compatible (`::a.b.c.d`) forms, NAT64
//! (`64:ff9b::/96`, which a NAT64 gateway turns into that IPv4 address) and 6to4
//! (`2002:AABB:CCDD::/48`). Teredo (`2001::/32`) and local-use NAT64 (`64:ff9b:1::/48`)
//! hide or route to addresses that cannot be judged, so they are refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// Whether a webhook may connect to `ip`.
pub fn allowed(ip: IpAddr, allow_insecure: bool) -> bool {
    is_public(ip) || (allow_insecure && canonical(ip).is_loopback())
}

/// Resolves `host` once and returns its addresses (with port 0: the URL's port applies) if
/// every one of them may be reached; a name with any non-public address is refused whole.
pub async fn resolve_checked(
    host: &str,
    allow_insecure: bool,
) -> Result<Vec<SocketAddr>, Rejection> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, 0)],
        Err(_) => tokio::net::lookup_host((bare, 0))
            .await
            .map_err(|e| format!("cannot resolve {bare}: {e}"))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{bare} resolves to no address"));
    }
    if let Some(bad) = addrs.iter().find(|a| !allowed(a.ip(), allow_insecure)) {
        return Err(format!(
            "{bare} resolves to the non-public address {}",
            bad.ip()
        ));
    }
    Ok(addrs)
}

/// The webhook client's DNS resolver: [`resolve_checked`], so every connection goes to an
/// address that passed the check, resolved once.
#[derive(Clone, Copy, Debug)]
pub struct CheckedResolver {
    /// `streams.allow_insecure_webhooks`.
    pub allow_insecure: bool,
}

impl webhook_http::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: webhook_http::dns::Name) -> webhook_http::dns::Resolving {
        let allow_insecure = self.allow_insecure;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, allow_insecure).await?;
            Ok(Box::new(addrs.into_iter()) as webhook_http::dns::Addrs)
        })
    }
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// An IPv6 address that carries an IPv4 address is judged as that IPv4 address: mapped and
/// compatible forms, NAT64 `64:ff9b::/96` and 6to4 `2002::/16`.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let seg = v6.segments();
    let o = v6.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if seg[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        // IPv4-compatible (deprecated): `::a.b.c.d`.
        return IpAddr::V4(low32);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(low32);
    }
    if seg[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    ip
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
    let seg = ip.segments();
    let first = seg[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first == 0x2001 && (seg[1] == 0x0db8 || seg[1] == 0))
        || (first == 0x0064 && seg[1] == 0xff9b)
        || (first == 0x0100 && seg[1..4] == [0, 0, 0])
        || first == 0)
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

    #[test]
    fn ipv6_forms_of_private_ipv4_are_not_public() {
        for bad in [
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
            "::",
            "::1",
        ] {
            let ip: IpAddr = bad.parse().expect(bad);
            assert!(!is_public(ip), "{bad}");
            assert!(
                validate(&format!("https://[{bad}]/x"), false).is_err(),
                "{bad}"
            );
        }
        for good in [
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            let ip: IpAddr = good.parse().expect(good);
            assert!(is_public(ip), "{good}");
        }
        // Loopback in any form is loopback (allowed only in development).
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert!(allowed(mapped, true) && !allowed(mapped, false));
    }

    #[tokio::test]
    async fn the_resolver_returns_only_checked_addresses() {
        let local = resolve_checked("localhost", true).await.expect("dev mode");
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 0));
        assert!(resolve_checked("localhost", false).await.is_err());
        assert!(resolve_checked("127.0.0.1", false).await.is_err());
        assert!(resolve_checked("[::ffff:10.1.2.3]", true).await.is_err());
    }
}
