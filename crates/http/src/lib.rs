//! HTTP plumbing every sessiond capability shares, so each capability's router only describes
//! its own routes.
//!
//! - [`error`]: `ApiError`, the one JSON error shape, its status discipline and the one
//!   mapping of engine failures to HTTP.
//! - [`config`]: `ConfigError`, what every capability's configuration check reports.
//! - [`body`]: body extractors with size limits (413) and JSON decoding (400).
//! - [`auth`]: API keys with rotation and constant-time comparison.
//! - [`metrics`]: per-route request counters and latency histograms.
//! - [`ids`]: random URL-safe identifiers.
//! - [`signing`]: every HMAC-SHA-256 of the server (keys in rotation, constant-time checks,
//!   base64url) and the signed formats: sealed tokens, stamped cookie values, webhook
//!   signature headers.
//! - [`jwt`]: HS256 token verification (sealed tokens with a JOSE header and claims).
//! - [`origin`]: open-mode locality (Host, Origin, proxies) and the cookie same-origin rule.
//! - [`access`]: the access log and `X-Request-Id`; [`access_line`] writes its lines.
//! - [`server_layer`]: the one server-wide request layer (access log, metrics, the JSON 405,
//!   refused-request counting, open-mode locality, the body limit), a [`step::Step`]: a
//!   synchronous middleware step run without boxing.
//! - [`forwarded`]: the client address behind trusted proxies.
//! - [`user_data`]: what each capability holds about a user (export and erasure).
//! - [`webhook`]: where outbound webhooks may connect (SSRF rules, checked DNS) and how much
//!   of an answer is read.

pub mod access;
pub mod access_line;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod forwarded;
pub mod ids;
pub mod jwt;
pub mod metrics;
pub mod origin;
pub mod server_layer;
pub mod signing;
pub mod step;
pub mod user_data;
pub mod webhook;

pub use auth::ApiKeys;
pub use body::{JsonBody, RawBody};
pub use config::ConfigError;
pub use error::{ApiError, ApiResult};
