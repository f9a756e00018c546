//! The session middleware capability (seed A, the Divortio Session Worker, done right): every
//! request of an app gets a session context (client, session and event ids with their times,
//! what changed, a fingerprint) from one call, and the signed cookies that carry the ids.
//!
//! Module map:
//! - [`config`]: `[middleware]` settings: timeout, cookie layout and attributes, signing keys,
//!   fingerprint, TTL, limits, analytics, trusted proxies.
//! - [`ids`]: time-stamped CSPRNG ids; [`signing`]: HMAC-SHA-256 cookie values with key
//!   rotation (the server's one signing module, `sessiond_http::signing::stamped`, under the
//!   path embedders know); [`cookies`]: lenient parsing, both layouts, minimal `Set-Cookie`
//!   emission;
//!   [`fingerprint`]: the keyed request hash.
//! - [`input`] and [`context`]: what a decision takes and answers.
//! - [`decide`]: the [`Decider`] and its rules; [`client`]: the per-client object, its store
//!   access and TTL alarm.
//! - [`analytics`]: the three datasets and their sinks; [`metrics`]: Prometheus counters.
//! - [`routes`]: `POST /v1/middleware/decide` and `/v1/middleware/forward-auth`.
//!
//! The capability stores client states through `sessiond_store::ObjectStore` and serializes
//! them with the object runtime; it never names an engine.
//!
//! # How to embed
//!
//! A Rust server (or a tower layer) that already has an object store builds a [`Decider`]
//! before starting its runtime and calls it per request:
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn sessiond_store::ObjectStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use sessiond_middleware::{Decider, DecisionInput, MiddlewareConfig, NoSink};
//! use sessiond_runtime::{Runtime, RuntimeConfig};
//!
//! let mut builder = Runtime::builder(store.clone(), RuntimeConfig::default());
//! let decider = Decider::new(MiddlewareConfig::default(), &mut builder, store, true, Arc::new(NoSink))?;
//! let _runtime = builder.start();
//! let input = DecisionInput { cookie: Some("_ss_cID=…".into()), ..DecisionInput::default() };
//! let decision = decider.decide(&input).await?;
//! // decision.session: the context; decision.set_cookies: append each as `Set-Cookie`.
//! # Ok(()) }
//! ```
//!
//! Without a server, [`cookies::CookieCodec`], [`signing::Signer`] and
//! [`fingerprint::Fingerprinter`] are plain values usable on their own (e.g. to verify a
//! sessiond cookie in another service that shares the signing keys).

pub mod analytics;
pub mod client;
pub mod config;
pub mod context;
pub mod cookies;
pub mod decide;
pub mod fingerprint;
pub mod ids;
pub mod input;
pub mod metrics;
pub mod routes;
pub use sessiond_http::signing::stamped as signing;

pub use analytics::{
    AnalyticsSink, ChannelReceiver, ChannelSink, DataPoint, Dataset, FileSink, NoSink,
};
pub use config::{AnalyticsTarget, CookieLayout, MiddlewareConfig};
pub use context::{Decision, IdState, Refusal, SessionContext};
pub use decide::Decider;
pub use input::DecisionInput;
pub use routes::router;
