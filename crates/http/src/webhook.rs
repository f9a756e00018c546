//! Outbound webhooks (stream subscriptions, realtime presence events): where the server may
//! connect, and how much of an answer it waits for. One module for every capability that
//! sends webhooks, so the SSRF rules cannot drift apart.
//!
//! A webhook makes the server send requests wherever a configuration or a client says, so
//! the target is checked twice: when the URL is written ([`WebhookPolicy::validate`]: scheme,
//! credentials, literal addresses, `localhost`) and at every connection
//! ([`CheckedResolver`]: the webhook client's own DNS resolver returns only addresses that
//! pass, so the socket is opened to exactly an address that was checked; a name that answers
//! differently on a second lookup, DNS rebinding, gets no second lookup). The rules:
//! `https://` to a public address; plain `http://` only when the policy allows it
//! (development, the conformance suite); loopback, private, link-local, unspecified and
//! other reserved addresses only when they are in the policy's allow-list of networks.
//!
//! "Public" is judged on the IPv4 address an IPv6 address carries when it carries one:
//! IPv4-mapped (`::ffff:a.b.c.d`) and -compatible (`::a.b.c.d`) forms, NAT64
//! (`64:ff9b::/96`, which a NAT64 gateway turns into that IPv4 address) and 6to4
//! (`2002:AABB:CCDD::/48`). Teredo (`2001::/32`) and local-use NAT64 (`64:ff9b:1::/48`)
//! hide or route to addresses that cannot be judged, so they are refused.
//!
//! An answer is read for at most the delivery's time bound and up to a byte cap
//! ([`exchange`]): a receiver that streams an endless body costs neither memory nor a stuck
//! delivery.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
pub use reqwest::{Client, RequestBuilder, StatusCode, Url};

/// Why a URL or address was refused; the message is safe to show to whoever wrote the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(String);

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Rejection(reason)
    }
}

impl From<&str> for Rejection {
    fn from(reason: &str) -> Self {
        Rejection(reason.to_owned())
    }
}

/// Why a webhook was not delivered (for the log and the retry decision; never a client's).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The target may not be reached.
    #[error(transparent)]
    Refused(#[from] Rejection),
    /// The body could not be encoded.
    #[error("cannot encode the webhook body: {0}")]
    Encode(#[from] serde_json::Error),
    /// Connecting, sending or reading failed.
    #[error("{0} ({cause:?})", cause = std::error::Error::source(.0))]
    Request(#[source] reqwest::Error),
    /// No whole answer within the delivery's time bound.
    #[error("receiver did not answer within {0:?}")]
    Timeout(Duration),
    /// The receiver answered, but not with a 2xx.
    #[error("receiver answered {status}{excerpt}")]
    Status {
        /// Its status.
        status: StatusCode,
        /// The start of its body (`: …`), or nothing.
        excerpt: String,
    },
    /// The receiver's answer went on past the byte cap.
    #[error("receiver answered more than {0} bytes")]
    TooLong(usize),
    /// Every attempt failed; the last failure.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's failure.
        #[source]
        last: Box<WebhookError>,
    },
}

/// Where webhooks may go.
#[derive(Clone, Debug, Default)]
pub struct WebhookPolicy {
    allow_http: bool,
    allowed: Vec<IpNet>,
}

impl WebhookPolicy {
    /// Public `https://` targets, plus `allowed_networks` (CIDRs such as `127.0.0.0/8` or
    /// `10.1.0.0/16`); `allow_http` also accepts plain `http://`.
    pub fn new(
        allow_http: bool,
        allowed_networks: &[String],
    ) -> Result<WebhookPolicy, crate::ConfigError> {
        let allowed = allowed_networks
            .iter()
            .map(|n| {
                n.trim()
                    .parse::<IpNet>()
                    .or_else(|_| n.trim().parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        crate::ConfigError::new(format!(
                            "`{n}` is not a network (CIDR) or an IP address"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(WebhookPolicy {
            allow_http,
            allowed,
        })
    }

    /// The development setting: plain `http://` and loopback targets added.
    pub fn with_loopback(mut self) -> WebhookPolicy {
        self.allow_http = true;
        if let Ok(v4) = "127.0.0.0/8".parse() {
            self.allowed.push(v4);
        }
        self.allowed
            .push(IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        self
    }

    /// Whether a webhook may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.listed(ip)
    }

    /// Whether `ip` is in the allow-list.
    fn listed(&self, ip: IpAddr) -> bool {
        let judged = canonical(ip);
        self.allowed.iter().any(|n| n.contains(&judged))
    }

    /// Parses and checks a webhook URL.
    pub fn validate(&self, raw: &str) -> Result<Url, Rejection> {
        let url = Url::parse(raw).map_err(|e| Rejection(format!("not a valid URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("webhook URLs may not carry credentials".into());
        }
        let host = url.host_str().ok_or("webhook URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // Plain http:// never leaves for the public internet: only to allow-listed targets.
        let listed = if is_loopback_name(host) {
            self.listed(IpAddr::V4(Ipv4Addr::LOCALHOST))
        } else {
            host.parse::<IpAddr>().is_ok_and(|ip| self.listed(ip))
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http && listed => {}
            "http" => {
                return Err(
                    "webhook URLs must use https:// (http:// only to allow-listed addresses where the configuration allows it)"
                        .into(),
                )
            }
            other => return Err(format!("unsupported webhook URL scheme {other}").into()),
        }
        if is_loopback_name(host) {
            return if self.allows(IpAddr::V4(Ipv4Addr::LOCALHOST)) {
                Ok(url)
            } else {
                Err("loopback webhook targets are not allowed by the configuration".into())
            };
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if !self.allows(ip) {
                return Err(format!("webhook target {ip} is a private or reserved address").into());
            }
            return Ok(url);
        }
        if host.ends_with(".local") || host.ends_with(".internal") {
            return Err("webhook target is a local network name".into());
        }
        Ok(url)
    }

    /// Resolves `host` once and returns its addresses (with port 0: the URL's port applies)
    /// if every one of them may be reached; a name with any refused address is refused whole.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, Rejection> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, 0)],
            Err(_) => tokio::net::lookup_host((bare, 0))
                .await
                .map_err(|e| Rejection(format!("cannot resolve {bare}: {e}")))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{bare} resolves to no address").into());
        }
        if let Some(bad) = addrs.iter().find(|a| !self.allows(a.ip())) {
            return Err(format!("{bare} resolves to the non-public address {}", bad.ip()).into());
        }
        Ok(addrs)
    }

    /// The webhook HTTP client: names resolved only through this policy, no proxy, no
    /// redirects, every request bounded by `timeout`.
    pub fn client(&self, timeout: Duration) -> Result<Client, reqwest::Error> {
        Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(CheckedResolver(Arc::new(self.clone())))
            .build()
    }
}

/// The webhook client's DNS resolver: [`WebhookPolicy::resolve`], so every connection goes
/// to an address that passed the check, resolved once.
#[derive(Clone, Debug)]
pub struct CheckedResolver(Arc<WebhookPolicy>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A receiver's answer, as far as it was read.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body, at most the cap given to [`exchange`].
    pub body: Vec<u8>,
    /// Whether the body went on past the cap (the rest was not read).
    pub truncated: bool,
}

/// Sends `request` and reads at most `max_bytes` of the answer, all within `within`.
pub async fn exchange(
    request: RequestBuilder,
    max_bytes: usize,
    within: Duration,
) -> Result<Answer, WebhookError> {
    let exchange = async {
        let mut response = request.send().await.map_err(WebhookError::Request)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(WebhookError::Request)? {
            let room = max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                return Ok(Answer {
                    status,
                    body,
                    truncated: true,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body,
            truncated: false,
        })
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| WebhookError::Timeout(within))?
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
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn production() -> WebhookPolicy {
        WebhookPolicy::default()
    }

    fn development() -> WebhookPolicy {
        WebhookPolicy::default().with_loopback()
    }

    fn validate(url: &str, dev: bool) -> Result<Url, Rejection> {
        if dev { development() } else { production() }.validate(url)
    }

    fn allowed(ip: IpAddr, dev: bool) -> bool {
        if dev { development() } else { production() }.allows(ip)
    }

    async fn resolve_checked(host: &str, dev: bool) -> Result<Vec<SocketAddr>, Rejection> {
        if dev { development() } else { production() }
            .resolve(host)
            .await
    }

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

    #[test]
    fn allow_lists_open_exactly_their_networks() {
        let policy = WebhookPolicy::new(false, &["10.1.0.0/16".into(), "::1".into()]).unwrap();
        assert!(policy.validate("https://10.1.2.3/x").is_ok());
        assert!(policy.validate("https://[::ffff:10.1.2.3]/x").is_ok());
        assert!(policy.validate("https://[::1]/x").is_ok());
        assert!(policy.validate("https://10.2.0.1/x").is_err());
        assert!(policy.validate("https://127.0.0.1/x").is_err());
        assert!(policy.validate("http://10.1.2.3/x").is_err(), "no http");
        assert!(WebhookPolicy::new(false, &["nonsense".into()]).is_err());
        let http = WebhookPolicy::new(true, &["127.0.0.0/8".into()]).unwrap();
        assert!(http.validate("http://localhost:9/x").is_ok());
        assert!(http.validate("http://169.254.169.254/x").is_err());
    }

    #[tokio::test]
    async fn the_resolver_returns_only_checked_addresses() {
        let local = resolve_checked("localhost", true).await.expect("dev mode");
        assert!(local.iter().all(|a| a.ip().is_loopback() && a.port() == 0));
        assert!(resolve_checked("localhost", false).await.is_err());
        assert!(resolve_checked("127.0.0.1", false).await.is_err());
        assert!(resolve_checked("[::ffff:10.1.2.3]", true).await.is_err());
    }

    /// A loopback receiver answering `ok` (2 bytes) to every request.
    async fn receiver() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = tcp.read(&mut buf).await;
                    let answer =
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = tcp.write_all(answer).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn the_client_connects_only_to_checked_addresses() {
        let port = receiver().await;
        // A name, so the check happens after DNS resolution, in the client's resolver.
        let url = format!("http://localhost:{port}/hook");
        let bound = Duration::from_secs(10);
        let refused = production().client(bound).unwrap();
        let error = exchange(refused.post(&url), 1024, bound).await.err();
        assert!(error.is_some(), "loopback reached without an allow-list");
        let policy = WebhookPolicy::new(true, &["127.0.0.0/8".into(), "::1".into()]).unwrap();
        let allowed = policy.client(bound).unwrap();
        let answer = exchange(allowed.post(&url), 1024, bound).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            (answer.body.as_slice(), answer.truncated),
            (&b"ok"[..], false)
        );
        let capped = exchange(allowed.post(&url), 1, bound).await.unwrap();
        assert_eq!(
            (capped.body.as_slice(), capped.truncated),
            (&b"o"[..], true)
        );
    }
}
