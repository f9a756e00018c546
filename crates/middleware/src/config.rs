//! Settings of the middleware capability (the `[middleware]` section of sessiond's config).
//!
//! Seed A hard-wired most of these (Path, Secure, SameSite, a 30-minute timeout that ignored
//! its own `SESSION_TIMEOUT_MS`); here every name, lifetime and limit is a key, and
//! [`MiddlewareConfig::validate`] refuses combinations that would silently misbehave (equal
//! server/client prefixes, a `__Host-` cookie with a Domain, signing keys too short to matter).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which cookies carry the ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieLayout {
    /// Seed A's layout: every value twice, an `HttpOnly` server copy and a JS-readable client
    /// copy (`_ss_cID` / `_cs_cID`, …).
    A,
    /// One signed `HttpOnly` cookie carrying cID, sID and fpID; its issue time is the last
    /// activity it vouches for.
    Compact,
}

/// `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also on top-level cross-site navigations.
    Lax,
    /// Always (requires `Secure`).
    None,
}

/// Cookie names and attributes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// `a` (seed A's server + client copies) or `compact` (one signed cookie).
    pub layout: CookieLayout,
    /// Prefix of every cookie name (seed A's `COOKIE_APP_PREFIX`).
    pub app_prefix: String,
    /// Layout A: prefix of the `HttpOnly` server copy.
    pub server_prefix: String,
    /// Layout A: prefix of the JS-readable client copy.
    pub client_prefix: String,
    /// Layout A: cookie keys of the four values.
    pub cid_name: String,
    /// See `cid_name`.
    pub sid_name: String,
    /// See `cid_name`.
    pub eid_name: String,
    /// See `cid_name`.
    pub fpid_name: String,
    /// Compact layout: the cookie's name (after `app_prefix`).
    pub compact_name: String,
    /// Compact layout: prefix the name with `__Host-` (needs `secure`, `path = "/"`, no domain).
    pub host_prefix: bool,
    /// `Path` attribute.
    pub path: String,
    /// `Domain` attribute; empty = host-only cookie.
    pub domain: String,
    /// `Secure` attribute.
    pub secure: bool,
    /// `SameSite` attribute: `Strict`, `Lax` or `None`.
    pub same_site: SameSite,
    /// Lifetime of the id cookies (seconds). A cookie is re-issued once less than half of it
    /// is left, not on every response.
    pub lifetime_s: u64,
    /// Lifetime of the fpID cookies (seconds).
    pub fpid_lifetime_s: u64,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            layout: CookieLayout::A,
            app_prefix: String::new(),
            server_prefix: "_ss_".into(),
            client_prefix: "_cs_".into(),
            cid_name: "cID".into(),
            sid_name: "sID".into(),
            eid_name: "eID".into(),
            fpid_name: "fpID".into(),
            compact_name: "sessiond".into(),
            host_prefix: false,
            path: "/".into(),
            domain: String::new(),
            secure: true,
            same_site: SameSite::Strict,
            lifetime_s: 365 * 24 * 3600,
            fpid_lifetime_s: 365 * 24 * 3600,
        }
    }
}

/// The fingerprint used to describe cookieless clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FingerprintConfig {
    /// Compute fpID (a keyed hash of IP, user agent, languages, encodings, TLS cipher and
    /// protocol). It is personal data: turn it off when you have no use for it.
    pub enabled: bool,
    /// HMAC key of the fingerprint; empty = derived from the first signing key.
    pub secret: String,
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        FingerprintConfig {
            enabled: true,
            secret: String::new(),
        }
    }
}

/// Where analytics records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalyticsTarget {
    /// Nowhere (metrics only).
    Off,
    /// Appended to the system Durable Stream `analytics.stream` (JSON mode).
    Stream,
    /// Appended as JSON lines to `analytics.file`.
    File,
}

/// Analytics datasets (events, sessions, clients) and their sink.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// `stream` (default), `file` or `off`. Nothing leaves the machine either way.
    pub sink: AnalyticsTarget,
    /// Stream name for the `stream` sink (under `/v1/stream/`).
    pub stream: String,
    /// File path for the `file` sink.
    pub file: String,
    /// Fraction of decisions recorded (0.0–1.0); one draw per decision, so the three datasets
    /// stay consistent.
    pub sample_rate: f64,
    /// Records buffered for the sink; beyond it records are dropped (and counted), never
    /// slowing a decision.
    pub buffer: usize,
    /// How long the `stream` sink gathers records after the first one before appending them
    /// as one batch (one durable commit per batch instead of per handful of records).
    pub flush_ms: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            sink: AnalyticsTarget::Stream,
            stream: "__sessiond/middleware/events".into(),
            file: "middleware-analytics.jsonl".into(),
            sample_rate: 1.0,
            buffer: 10_000,
            flush_ms: 100,
        }
    }
}

/// Input limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// A longer `Cookie` header is ignored as a whole (the request counts as cookieless).
    pub max_cookie_header_bytes: usize,
    /// Cookie pairs looked at per request; the rest are skipped.
    pub max_cookies: usize,
    /// Longest metadata field (user agent, URL, …): the decide API answers 400, forward-auth
    /// truncates.
    pub max_field_bytes: usize,
    /// Decisions per client per second; beyond it 429.
    pub max_decisions_per_client_per_s: u32,
    /// A decision waiting longer than this for the engine answers as a fallback (ms).
    pub engine_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_cookie_header_bytes: 8 * 1024,
            max_cookies: 64,
            max_field_bytes: 2048,
            max_decisions_per_client_per_s: 50,
            engine_timeout_ms: 1000,
        }
    }
}

/// The middleware capability's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiddlewareConfig {
    /// Serve `/v1/middleware/*`.
    pub enabled: bool,
    /// Inactivity after which a request starts a new session (ms; seed A's `SESSION_TIMEOUT_MS`).
    pub session_timeout_ms: u64,
    /// A client's server-side state is deleted after this long without a request (seconds;
    /// seed A's `DO_TTL_SECONDS`). A validly signed cookie restores it afterwards.
    pub client_ttl_s: u64,
    /// HMAC-SHA-256 keys of the cookies: the first signs, all verify (rotation: put the new key
    /// first, drop the old one after a cookie lifetime). Empty = a random key per process,
    /// so every restart forgets every client (development only).
    pub signing_keys: Vec<String>,
    /// Cookie names and attributes.
    pub cookies: CookieConfig,
    /// Fingerprint of cookieless clients.
    pub fingerprint: FingerprintConfig,
    /// Analytics sink and sampling.
    pub analytics: AnalyticsConfig,
    /// Input limits.
    pub limits: LimitsConfig,
    /// Forward-auth: peers whose `X-Forwarded-For` is believed (CIDRs). Any other peer is the
    /// client itself.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for MiddlewareConfig {
    fn default() -> Self {
        MiddlewareConfig {
            enabled: true,
            session_timeout_ms: 30 * 60 * 1000,
            client_ttl_s: 90 * 24 * 3600,
            signing_keys: Vec::new(),
            cookies: CookieConfig::default(),
            fingerprint: FingerprintConfig::default(),
            analytics: AnalyticsConfig::default(),
            limits: LimitsConfig::default(),
            trusted_proxies: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
        }
    }
}

/// Shortest accepted signing key (bytes): shorter keys can be brute-forced offline from one
/// cookie.
pub const MIN_KEY_BYTES: usize = 32;

impl MiddlewareConfig {
    /// Checks the values make sense together; the message names the key to fix.
    pub fn validate(&self) -> Result<(), sessiond_http::ConfigError> {
        if self.session_timeout_ms == 0 || self.client_ttl_s == 0 {
            return Err("middleware.session_timeout_ms and client_ttl_s must be > 0".into());
        }
        if let Some(short) = self
            .signing_keys
            .iter()
            .find(|k| k.trim().len() < MIN_KEY_BYTES)
        {
            return Err(format!(
                "middleware.signing_keys: a key of {} bytes is too short (at least {MIN_KEY_BYTES})",
                short.trim().len()
            ).into());
        }
        let c = &self.cookies;
        if c.server_prefix == c.client_prefix {
            return Err(
                "middleware.cookies.server_prefix and client_prefix must differ (else the JS copy \
                 overwrites the HttpOnly one)"
                    .into(),
            );
        }
        let names = [&c.cid_name, &c.sid_name, &c.eid_name, &c.fpid_name];
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || names[..i].contains(name) {
                return Err("middleware.cookies.*_name must be non-empty and distinct".into());
            }
        }
        let all = format!(
            "{}{}{}{}{}",
            c.app_prefix,
            c.server_prefix,
            c.client_prefix,
            c.compact_name,
            names.iter().map(|n| n.as_str()).collect::<String>()
        );
        if !all.bytes().all(is_token_byte) || c.compact_name.is_empty() {
            return Err("middleware.cookies names and prefixes must be cookie-name tokens".into());
        }
        if !c.path.starts_with('/') || !c.path.bytes().all(is_attr_byte) {
            return Err("middleware.cookies.path must start with `/`".into());
        }
        if !c.domain.bytes().all(is_attr_byte) {
            return Err("middleware.cookies.domain has invalid characters".into());
        }
        if c.host_prefix && (!c.secure || c.path != "/" || !c.domain.is_empty()) {
            return Err(
                "middleware.cookies.host_prefix needs secure = true, path = \"/\" and no domain"
                    .into(),
            );
        }
        if c.same_site == SameSite::None && !c.secure {
            return Err("middleware.cookies.same_site = \"None\" needs secure = true".into());
        }
        if c.lifetime_s == 0 || c.fpid_lifetime_s == 0 {
            return Err("middleware.cookies lifetimes must be > 0".into());
        }
        let a = &self.analytics;
        if a.flush_ms > 60_000 {
            return Err("middleware.analytics.flush_ms must be at most 60000".into());
        }
        if !(0.0..=1.0).contains(&a.sample_rate) {
            return Err("middleware.analytics.sample_rate must be within 0.0..=1.0".into());
        }
        if a.buffer == 0 {
            return Err("middleware.analytics.buffer must be > 0".into());
        }
        let l = &self.limits;
        if l.max_cookie_header_bytes == 0
            || l.max_cookies == 0
            || l.max_field_bytes == 0
            || l.max_decisions_per_client_per_s == 0
            || l.engine_timeout_ms == 0
        {
            return Err("middleware.limits must be > 0".into());
        }
        Ok(())
    }
}

/// RFC 6265 cookie-name (token) characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Characters allowed in a Path/Domain attribute value (no `;`, controls or spaces).
fn is_attr_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b';'
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_combinations_are_named() {
        assert!(MiddlewareConfig::default().validate().is_ok());
        let mut c = MiddlewareConfig::default();
        c.cookies.client_prefix = c.cookies.server_prefix.clone();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("client_prefix"));
        let mut c = MiddlewareConfig::default();
        c.signing_keys = vec!["short".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("signing_keys"));
        let mut c = MiddlewareConfig::default();
        c.cookies.host_prefix = true;
        c.cookies.domain = "example.com".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("host_prefix"));
        let mut c = MiddlewareConfig::default();
        c.cookies.eid_name = "cID".into();
        assert!(c.validate().is_err());
    }
}
