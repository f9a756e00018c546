//! Settings of the session and cache capability: default lifetimes and every limit.
//!
//! Each field is documented because the binary's example config is generated from the same
//! names; every size and count a client controls has a limit here.

use serde::{Deserialize, Serialize};

/// Session lifetimes, refresh policy and limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Idle timeout of a session when the create request names none (seconds).
    pub idle_ttl_s: u64,
    /// Absolute lifetime of a session when the create request names none (seconds).
    pub absolute_ttl_s: u64,
    /// Largest idle timeout a client may ask for (seconds).
    pub max_idle_ttl_s: u64,
    /// Largest absolute lifetime a client may ask for (seconds).
    pub max_absolute_ttl_s: u64,
    /// A read slides the idle deadline, but writes the new deadline only when it moved by at
    /// least this fraction of the idle window (0.0–1.0), so reads are not all writes.
    pub touch_fraction: f64,
    /// Most live sessions one user may hold; creating one more evicts the oldest.
    pub max_sessions_per_user: usize,
    /// Most live sessions of one user created on an open route (`open_routes`, no service
    /// credential); a separate budget, so anonymous creates never evict keyed sessions.
    pub max_open_route_sessions_per_user: usize,
    /// Longest session id, user id, cache namespace or cache key (bytes).
    pub max_id_bytes: usize,
    /// Largest session `data` or `device`, or cache value, as JSON (bytes).
    pub max_value_bytes: usize,
    /// Sockets of a session get a `session_expiring` frame this long before its idle
    /// deadline (seconds; 0 = never). Sessions whose idle window is not longer than this get
    /// none (they would be "expiring" from birth).
    pub expiry_warning_s: u64,
    /// Cookies whose value is a session id: the edge check (`GET /v1/sessions/forward-auth`)
    /// reads the first one present in the forwarded request, and socket upgrades accept them
    /// too (browsers cannot set `Authorization` on a WebSocket). Unset = the old name
    /// `realtime.session_cookies` if that is set, else `["sessiond_session"]`; use
    /// [`SessionsConfig::cookie_names`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookies: Option<Vec<String>>,
    /// How often expired rows are swept (seconds).
    pub sweep_interval_s: u64,
    /// Rows deleted per sweep transaction.
    pub sweep_batch: usize,
    /// Cache settings.
    pub cache: CacheConfig,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            idle_ttl_s: 30 * 60,
            absolute_ttl_s: 7 * 24 * 3600,
            max_idle_ttl_s: 30 * 24 * 3600,
            max_absolute_ttl_s: 365 * 24 * 3600,
            touch_fraction: 0.1,
            max_sessions_per_user: 100,
            max_open_route_sessions_per_user: 20,
            max_id_bytes: 256,
            max_value_bytes: 256 * 1024,
            expiry_warning_s: 60,
            cookies: None,
            sweep_interval_s: 30,
            sweep_batch: 1000,
            cache: CacheConfig::default(),
        }
    }
}

/// Cache settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// TTL of an entry written without `ttl_s` (seconds; 0 = no expiry).
    pub default_ttl_s: u64,
    /// Largest TTL a client may ask for (seconds).
    pub max_ttl_s: u64,
    /// Most namespaces holding live entries at once; a write into a new namespace beyond it
    /// is refused with 429. Counts the native API's namespaces only.
    pub max_namespaces: usize,
    /// The same budget for the reserved `_`-prefixed namespaces of the compat surfaces,
    /// counted separately: a compat surface opened with `open_routes` can fill only its own.
    pub max_compat_namespaces: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            default_ttl_s: 3600,
            max_ttl_s: 30 * 24 * 3600,
            max_namespaces: 10_000,
            max_compat_namespaces: 10_000,
        }
    }
}

/// The session cookie's name when none is configured.
pub const DEFAULT_SESSION_COOKIE: &str = "sessiond_session";

impl SessionsConfig {
    /// The session cookie names in force (`cookies`, or the default).
    pub fn cookie_names(&self) -> Vec<String> {
        self.cookies
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_SESSION_COOKIE.to_string()])
    }

    /// Checks the values make sense together; the message names the offending key.
    pub fn validate(&self) -> Result<(), sessiond_http::ConfigError> {
        if self.idle_ttl_s == 0 || self.absolute_ttl_s == 0 {
            return Err("sessions.idle_ttl_s and sessions.absolute_ttl_s must be > 0".into());
        }
        if self.idle_ttl_s > self.max_idle_ttl_s || self.absolute_ttl_s > self.max_absolute_ttl_s {
            return Err("sessions default TTLs must not exceed their max_* limits".into());
        }
        if !(0.0..=1.0).contains(&self.touch_fraction) {
            return Err("sessions.touch_fraction must be within 0.0..=1.0".into());
        }
        if self.max_sessions_per_user == 0
            || self.max_open_route_sessions_per_user == 0
            || self.max_id_bytes == 0
            || self.max_value_bytes == 0
        {
            return Err("sessions limits must be > 0".into());
        }
        if self.sweep_interval_s == 0 || self.sweep_batch == 0 {
            return Err("sessions.sweep_interval_s and sessions.sweep_batch must be > 0".into());
        }
        if let Some(names) = &self.cookies {
            if names.is_empty() || names.iter().any(|n| !valid_cookie_name(n)) {
                return Err(
                    "sessions.cookies must list at least one cookie name, each a \
                            non-empty token (no spaces, `=`, `;` or quotes)"
                        .into(),
                );
            }
        }
        if self.cache.default_ttl_s > self.cache.max_ttl_s {
            return Err("sessions.cache.default_ttl_s must not exceed max_ttl_s".into());
        }
        Ok(())
    }
}

/// A cookie name as RFC 6265 allows it (an HTTP token).
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
