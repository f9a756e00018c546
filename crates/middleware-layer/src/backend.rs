//! What the layer asks a decision from, and what it does when the answer does not come.
//!
//! The layer only needs "decide for this input"; whether that runs on an engine in this
//! process or on a sessiond across the network is a [`DecisionBackend`]. The in-process
//! implementation is sessiond's own [`Decider`], so the rules (rotation, rehydration, rate
//! limit, the engine fallback) are the server's, not a copy of them.

use async_trait::async_trait;
use sessiond_middleware::{Decider, Decision, DecisionInput, Refusal};
use sessiond_store::now_ms;

/// How a backend answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A decision (possibly already a fallback made by the deciding engine).
    Decided(Box<Decision>),
    /// The client is over its decision rate: the layer answers 429.
    Refused(Refusal),
    /// No decision could be had (network, timeout, credentials, a malformed answer); the
    /// reason is logged and the request proceeds with [`fallback`].
    Unavailable(String),
}

/// Something that decides a request's session context.
#[async_trait]
pub trait DecisionBackend: Send + Sync + 'static {
    /// Decides for one request.
    async fn decide(&self, input: DecisionInput) -> Outcome;

    /// Longest metadata field the backend accepts; the layer truncates to it.
    fn max_field_bytes(&self) -> usize;
}

#[async_trait]
impl DecisionBackend for Decider {
    async fn decide(&self, input: DecisionInput) -> Outcome {
        match Decider::decide(self, &input).await {
            Ok(decision) => Outcome::Decided(Box::new(decision)),
            Err(refusal) => Outcome::Refused(refusal),
        }
    }

    fn max_field_bytes(&self) -> usize {
        self.config().limits.max_field_bytes
    }
}

/// The decision used when the backend gave none: fresh ids, no cookies (nothing stores them),
/// `is_fallback: true`. Same shape as the server's own engine fallback, minus the fingerprint
/// (its key lives on the server).
pub fn fallback() -> Decision {
    Decision::fallback(now_ms(), None, None)
}
