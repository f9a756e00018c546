//! What the server says when it starts: where its data is, what it serves, and every
//! security-relevant choice it made on its own.
//!
//! An operator reading the first lines of a log must not have to guess: a relative data
//! directory depends on the unit's working directory, and defaults such as "no key = open
//! development mode" or "no signing key = a random one per process" change what a deployment
//! promises. Each default the server picked is its own warn line, so it stands out.

use std::net::SocketAddr;

use crate::config::Config;

/// Logs the start-up summary (the `sessiond listening` line tests and tools wait for, with
/// the listen address, engine, absolute data directory and capabilities), then one warning
/// per security-relevant default.
pub fn announce(config: &Config, addr: SocketAddr, engine: &str, capabilities: &[&str]) {
    let data_dir =
        std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let keys = config.full_keys().len() + config.streams.keys.len();
    let auth = if config.open_mode() {
        "open development mode (no credentials; loopback callers only)".to_string()
    } else {
        format!("{keys} API key(s)")
    };
    tracing::info!(
        %addr,
        engine,
        data_dir = %data_dir.display(),
        capabilities = %capabilities.join(","),
        auth = %auth,
        open_routes = ?config.open_routes,
        access_log = config.log.access,
        "sessiond listening"
    );
    for default in security_defaults(config) {
        tracing::warn!(default = %default, "security default in use");
    }
}

/// The security-relevant defaults in effect (empty when everything was configured).
pub fn security_defaults(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.open_mode() {
        out.push(
            "OPEN DEVELOPMENT MODE: no API key, stream key or read-token secret is configured, \
             so every route acts as the service for any local caller. Only loopback Host \
             names and loopback page origins are answered (see docs/security.md); configure \
             api_keys before exposing this server"
                .to_string(),
        );
    }
    let middleware = &config.middleware;
    // An empty middleware.signing_keys (a random key per process) is announced by the
    // middleware itself when it starts.
    if middleware.enabled
        && middleware.signing_keys.is_empty()
        && middleware.fingerprint.enabled
        && middleware.fingerprint.secret.is_empty()
    {
        out.push(
            "middleware.fingerprint.secret is empty: derived from that random signing key"
                .to_string(),
        );
    }
    if !config.open_routes.is_empty() {
        out.push(format!(
            "open_routes {:?} are served without an API key",
            config.open_routes
        ));
    }
    if config.http.trusted_proxies.is_empty() {
        out.push(
            "http.trusted_proxies is empty: the access log shows TCP peers, X-Forwarded-For \
             is ignored"
                .to_string(),
        );
    }
    out
}
