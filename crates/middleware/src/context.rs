//! What a decision answers: seed A's session context (its field names, which app code already
//! reads), the `Set-Cookie` values to emit, and the `isFallback` flag A's analytics expected
//! but its context never had (bug 4).
//!
//! Times are unix milliseconds, like every sessiond API (A returned `Date` objects).

use serde::{Deserialize, Serialize};
use sessiond_store::Millis;

use crate::ids::{id_time, new_id};

/// A set of ids with their embedded times; `oldState` of the context.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdState {
    /// Client id.
    #[serde(rename = "cID")]
    pub cid: Option<String>,
    /// Session id.
    #[serde(rename = "sID")]
    pub sid: Option<String>,
    /// Event id.
    #[serde(rename = "eID")]
    pub eid: Option<String>,
    /// Time embedded in the cID.
    #[serde(rename = "clientTime")]
    pub client_time: Option<Millis>,
    /// Time embedded in the sID.
    #[serde(rename = "sessionTime")]
    pub session_time: Option<Millis>,
    /// Time embedded in the eID (the last activity).
    #[serde(rename = "eventTime")]
    pub event_time: Option<Millis>,
}

impl IdState {
    /// The state of these ids, times decoded from them.
    pub fn of(cid: Option<&str>, sid: Option<&str>, eid: Option<&str>) -> Self {
        IdState {
            client_time: cid.and_then(id_time),
            session_time: sid.and_then(id_time),
            event_time: eid.and_then(id_time),
            cid: cid.map(str::to_string),
            sid: sid.map(str::to_string),
            eid: eid.map(str::to_string),
        }
    }
}

/// The session context of one request (seed A's `.session`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionContext {
    /// Long-lived client id.
    #[serde(rename = "cID")]
    pub cid: String,
    /// Session id (new after `session_timeout_ms` of inactivity).
    #[serde(rename = "sID")]
    pub sid: String,
    /// This request's event id.
    #[serde(rename = "eID")]
    pub eid: String,
    /// Time embedded in the cID.
    pub client_time: Millis,
    /// Time embedded in the sID (session start).
    pub session_time: Millis,
    /// Time embedded in the eID (now).
    pub event_time: Millis,
    /// The ids before this request (what was stored, or what the client's cookies said).
    pub old_state: IdState,
    /// No client id was known.
    pub is_new_client: bool,
    /// A session started with this request.
    pub is_new_session: bool,
    /// The request carried no valid client cookie, so it was bootstrapped (named by its
    /// fingerprint) rather than routed to its client object.
    #[serde(rename = "isNewDoID")]
    pub is_new_do_id: bool,
    /// The fpID cookie was missing or differs from this request's fingerprint.
    #[serde(rename = "isNewFpID")]
    pub is_new_fp_id: bool,
    /// The object that decided: the cID, or the fingerprint's stable key for a bootstrap.
    #[serde(rename = "doID")]
    pub do_id: String,
    /// This request's fingerprint (null when fingerprints are off).
    #[serde(rename = "fpID")]
    pub fp_id: Option<String>,
    /// The engine could not be reached: ids are fresh, no cookies are set.
    pub is_fallback: bool,
}

/// A decision: the context and the cookies to set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The session context.
    pub session: SessionContext,
    /// `Set-Cookie` header values, in order.
    pub set_cookies: Vec<String>,
}

impl Decision {
    /// The answer when no client state could be had: fresh ids made at `now`, no cookies
    /// (nothing would back them), `isFallback`. `stable` is the device id a fingerprint
    /// vouches for (else the fresh id) and `fp_id` the request's fingerprint, when known.
    pub fn fallback(now: Millis, stable: Option<String>, fp_id: Option<String>) -> Decision {
        let id = new_id(now);
        Decision {
            session: SessionContext {
                cid: id.clone(),
                sid: id.clone(),
                eid: id.clone(),
                client_time: now,
                session_time: now,
                event_time: now,
                old_state: IdState::default(),
                is_new_client: true,
                is_new_session: true,
                is_new_do_id: true,
                is_new_fp_id: fp_id.is_some(),
                do_id: stable.unwrap_or(id),
                fp_id,
                is_fallback: true,
            },
            set_cookies: Vec::new(),
        }
    }
}

/// Why a decision was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The client made more decisions this second than `limits.max_decisions_per_client_per_s`.
    #[error("too many decisions for this client; retry in a second")]
    RateLimited,
}
