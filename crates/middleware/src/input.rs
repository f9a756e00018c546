//! What a decision looks at: the raw `Cookie` header and the request's metadata.
//!
//! Every field is optional text, as the HTTP decide endpoint receives it; forward-auth and
//! embedders fill the same struct from a live request. The length limit is applied in two
//! ways: the decide API refuses an oversized field with a 400 naming it
//! ([`DecisionInput::check`]), while forward-auth truncates ([`DecisionInput::truncate`])
//! because it must never fail the user's page over a long user agent.

use serde::{Deserialize, Serialize};

/// The request a decision is made for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionInput {
    /// The raw `Cookie` header.
    pub cookie: Option<String>,
    /// Client IP address.
    pub ip: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `Accept-Language`.
    pub accept_language: Option<String>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<String>,
    /// `Accept` (analytics only).
    pub accept: Option<String>,
    /// TLS cipher of the client connection.
    pub tls_cipher: Option<String>,
    /// HTTP protocol of the client connection (`HTTP/2.0`, …).
    pub http_protocol: Option<String>,
    /// Region or point of presence (seed A's `colo`); part of fpID, not of the stable key.
    pub region: Option<String>,
    /// Request URL (analytics: host and path).
    pub url: Option<String>,
    /// Request method (analytics).
    pub method: Option<String>,
}

impl DecisionInput {
    fn metadata_mut(&mut self) -> [(&'static str, &mut Option<String>); 10] {
        [
            ("ip", &mut self.ip),
            ("user_agent", &mut self.user_agent),
            ("accept_language", &mut self.accept_language),
            ("accept_encoding", &mut self.accept_encoding),
            ("accept", &mut self.accept),
            ("tls_cipher", &mut self.tls_cipher),
            ("http_protocol", &mut self.http_protocol),
            ("region", &mut self.region),
            ("url", &mut self.url),
            ("method", &mut self.method),
        ]
    }

    /// The name of the first metadata field longer than `max` bytes, if any. The cookie
    /// header has its own limit (it is ignored when too long, see [`crate::cookies`]).
    pub fn check(&mut self, max: usize) -> Result<(), &'static str> {
        for (name, value) in self.metadata_mut() {
            if value.as_ref().is_some_and(|v| v.len() > max) {
                return Err(name);
            }
        }
        Ok(())
    }

    /// Cuts every metadata field to at most `max` bytes (on a character boundary).
    pub fn truncate(&mut self, max: usize) {
        for (_, value) in self.metadata_mut() {
            if let Some(v) = value {
                if v.len() > max {
                    let mut end = max;
                    while !v.is_char_boundary(end) {
                        end -= 1;
                    }
                    v.truncate(end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_field_and_truncate_respects_characters() {
        let mut input = DecisionInput {
            user_agent: Some("ééé".into()),
            ..DecisionInput::default()
        };
        assert_eq!(input.check(4), Err("user_agent"));
        input.truncate(3);
        assert_eq!(input.user_agent.as_deref(), Some("é"));
        assert_eq!(input.check(4), Ok(()));
    }
}
