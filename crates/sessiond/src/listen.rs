//! The listen address: `host:port`, where the host may be a name.
//!
//! Users write `localhost:7704` as often as `127.0.0.1:7704`; a bare socket-address parser
//! refuses the first with "invalid socket address syntax". A name is resolved once, when the
//! configuration is loaded, and the server binds the one address it gives: the first IPv4
//! address when there is one (`localhost` then means 127.0.0.1, the address the docs and the
//! open-mode loopback rule use), else the first address. Binding every address of a name
//! would turn one listener into several and is not what a single `listen` key promises.

use std::net::{SocketAddr, ToSocketAddrs};

/// Why a listen address was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Not `host:port`.
    #[error("`{0}` is not an address: write host:port, e.g. 127.0.0.1:7700 or localhost:7700")]
    Syntax(String),
    /// The name could not be resolved.
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The name resolved to nothing.
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
}

/// Parses `ip:port`, `[v6]:port` or `name:port` (resolved).
pub fn parse(text: &str) -> Result<SocketAddr, ListenError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let syntax = || ListenError::Syntax(text.to_owned());
    let (host, port) = text.rsplit_once(':').ok_or_else(syntax)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(syntax());
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|source| ListenError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ListenError::NoAddress(host.to_owned()))
}

/// `#[serde(with = "crate::listen")]`: written as text, read through [`parse`].
pub fn serialize<S: serde::Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(addr)
}

/// See [`serialize`].
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::parse;

    #[test]
    fn numeric_names_and_mistakes() {
        assert_eq!(
            parse("127.0.0.1:7700").unwrap().to_string(),
            "127.0.0.1:7700"
        );
        assert_eq!(parse("[::1]:7700").unwrap().to_string(), "[::1]:7700");
        let local = parse("localhost:7704").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 7704, "{local}");
        assert!(parse("localhost")
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        assert!(parse("localhost:http")
            .unwrap_err()
            .to_string()
            .contains("host:port"));
        assert!(parse(":7700")
            .unwrap_err()
            .to_string()
            .contains("host:port"));
    }
}
