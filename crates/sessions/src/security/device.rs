//! The new-device signal: a coarse device identity from the create body's `device.ip` and
//! `device.user_agent` (the app's backend passes what its user's browser sent).
//!
//! Coarse on purpose: the user-agent family and OS (not the version, which changes with every
//! browser update) and the network prefix (IPv4 /24, IPv6 /48, not the address, which changes
//! with every reconnect), so a returning user on the same laptop and network is not "new",
//! while the same account used from another browser, OS or network is.

use std::net::IpAddr;

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A device as compared for the new-device signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSignal {
    /// Browser or client family.
    pub family: &'static str,
    /// Operating system.
    pub os: &'static str,
    /// Network prefix of the IP.
    pub prefix: String,
}

impl DeviceSignal {
    /// The signal of a create body's `device`, if it has both an IP and a user agent.
    pub fn of(device: &Value) -> Option<DeviceSignal> {
        let ip = device.get("ip")?.as_str()?;
        let ua = device.get("user_agent")?.as_str()?;
        Some(DeviceSignal {
            family: family(ua),
            os: os(ua),
            prefix: ip_prefix(ip)?,
        })
    }

    /// A stable, non-reversible key (the prefix is not stored in clear).
    pub fn key(&self) -> String {
        let text = format!("{}\n{}\n{}", self.family, self.os, self.prefix);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
    }
}

/// `a.b.c.0/24` or the `/48` of an IPv6 address; `None` when `ip` is not an address.
pub fn ip_prefix(ip: &str) -> Option<String> {
    match ip.trim().parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
    }
}

/// The user-agent family. Order matters: Edge and Opera also say "Chrome", Chrome also says
/// "Safari".
fn family(ua: &str) -> &'static str {
    const FAMILIES: [(&str, &str); 8] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("CriOS/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
        ("okhttp", "okhttp"),
    ];
    first_named(ua, &FAMILIES)
}

/// The operating system. iOS and Android before macOS and Linux (their agents mention both).
fn os(ua: &str) -> &'static str {
    const SYSTEMS: [(&str, &str); 7] = [
        ("iPhone", "iOS"),
        ("iPad", "iOS"),
        ("Android", "Android"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ];
    first_named(ua, &SYSTEMS)
}

/// The name of the first `(needle, name)` whose needle `ua` contains, else "other".
fn first_named(ua: &str, table: &[(&str, &'static str)]) -> &'static str {
    table
        .iter()
        .find(|(needle, _)| ua.contains(needle))
        .map_or("other", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const EDGE_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0";
    const SAFARI_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

    #[test]
    fn families_and_systems() {
        assert_eq!((family(CHROME_MAC), os(CHROME_MAC)), ("Chrome", "macOS"));
        assert_eq!((family(EDGE_WIN), os(EDGE_WIN)), ("Edge", "Windows"));
        assert_eq!((family(SAFARI_IOS), os(SAFARI_IOS)), ("Safari", "iOS"));
        assert_eq!((family("x"), os("x")), ("other", "other"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(ip_prefix("203.0.113.77").as_deref(), Some("203.0.113.0/24"));
        assert_eq!(
            ip_prefix("2001:db8:abcd:12::1").as_deref(),
            Some("2001:db8:abcd::/48")
        );
        assert_eq!(ip_prefix("not an ip"), None);
    }

    #[test]
    fn a_new_version_or_address_in_the_prefix_is_the_same_device() {
        let a = serde_json::json!({"ip": "203.0.113.7", "user_agent": CHROME_MAC});
        let newer = CHROME_MAC.replace("120.0", "121.0");
        let b = serde_json::json!({"ip": "203.0.113.200", "user_agent": newer});
        let other_net = serde_json::json!({"ip": "198.51.100.7", "user_agent": CHROME_MAC});
        let key = |v: &Value| DeviceSignal::of(v).map(|s| s.key());
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&other_net));
        assert!(DeviceSignal::of(&serde_json::json!({"ip": "203.0.113.7"})).is_none());
    }
}
