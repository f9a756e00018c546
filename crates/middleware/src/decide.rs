//! The decision: one pass from a request's cookies and metadata to its session context.
//!
//! Rules (seed A's intent, its bugs fixed):
//! - A request with a validly signed cID is decided by that client's object: its stored state
//!   if there is one; otherwise the state is **rehydrated** from the cookies (after the TTL
//!   deleted it, or after data loss) in the same pass, so `oldState` and the flags describe
//!   what the client sent (A ran the decision twice, bug 9).
//! - The session rotates when the last activity (eID time, else sID, else cID) is older than
//!   `session_timeout_ms`; the eID is new on every request.
//! - A request without a valid cID always gets a fresh one (A bug 6). Its `doID` is the
//!   fingerprint's stable key, reported for compatibility; no state is shared by fingerprint.
//! - **A first visit stores nothing** (express-session's `saveUninitialized: false`): its ids
//!   travel in the signed cookies, and the client is stored when a cookie comes back. A bot
//!   that never returns cookies costs no storage, no TTL alarm and no resident object. The
//!   first return is then an ordinary decision from the cookies (the stored state is absent
//!   because there never was one, which is told apart from a rehydration by the cookies
//!   still holding the first visit's ids: eID = cID, or sID = cID issued at the cID's time).
//! - If the engine fails or does not answer within `engine_timeout_ms`, the decision is a
//!   **fallback**: fresh ids, no cookies, `isFallback: true`, counted.
//! - Ids are new from the CSPRNG; as in A, a new client's first ids are one value
//!   (cID = sID = eID), and a rotated sID equals that request's eID.

use std::sync::Arc;
use std::time::Duration;

use sessiond_runtime::RuntimeBuilder;
use sessiond_store::{now_ms, Millis, ObjectStore, StoreError};

use crate::analytics::{sampled, AnalyticsSink, DataPoint, Dataset};
use crate::client::{ClientState, Clients, TtlHandler, KIND};
use crate::config::MiddlewareConfig;
use crate::context::{Decision, IdState, Refusal, SessionContext};
use crate::cookies::{CookieCodec, Issue, Presented};
use crate::fingerprint::Fingerprinter;
use crate::ids::{id_time, new_id};
use crate::input::DecisionInput;
use crate::metrics::Metrics;
use crate::signing::Signer;

/// Makes decisions. Cheap to clone.
#[derive(Clone)]
pub struct Decider {
    inner: Arc<Inner>,
}

struct Inner {
    config: MiddlewareConfig,
    codec: CookieCodec,
    fingerprinter: Option<Fingerprinter>,
    clients: Clients,
    sink: Arc<dyn AnalyticsSink>,
    metrics: Metrics,
    timeout_ms: Millis,
}

/// The ids before this request and where they came from.
struct Prior {
    cid: String,
    sid: Option<String>,
    eid: Option<String>,
    last_activity: Option<Millis>,
    rehydrated: bool,
}

/// Engine failure or refusal inside a decision.
enum Failure {
    Engine(StoreError),
    Refused(Refusal),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Engine(e)
    }
}

impl Decider {
    /// Builds a decider on the server's handles: registers the per-client object kind and its
    /// TTL alarm handler on `runtime` (before it starts) and keeps `store` for client states.
    /// `resident` keeps states cached between requests; pass true only when no other process
    /// writes the store (`EngineAdmin::exclusive`).
    pub fn new(
        config: MiddlewareConfig,
        runtime: &mut RuntimeBuilder,
        store: Arc<dyn ObjectStore>,
        resident: bool,
        sink: Arc<dyn AnalyticsSink>,
    ) -> Result<Self, sessiond_http::ConfigError> {
        config.validate()?;
        if config.signing_keys.is_empty() {
            tracing::warn!(
                "middleware.signing_keys is empty: cookies are signed with a random key and \
                 every client is forgotten at restart (set keys in production)"
            );
        }
        let signer = Signer::new(
            &config
                .signing_keys
                .iter()
                .map(|k| k.trim())
                .collect::<Vec<_>>(),
        );
        let fingerprinter = config.fingerprint.enabled.then(|| {
            let secret = config.fingerprint.secret.trim();
            if secret.is_empty() {
                Fingerprinter::new(&signer.derive("fingerprint"))
            } else {
                Fingerprinter::new(secret.as_bytes())
            }
        });
        let metrics = Metrics::register();
        let clients = Clients {
            store,
            objects: runtime.kind(KIND),
            alarms: runtime.alarms(),
            resident,
            ttl_ms: Millis::try_from(config.client_ttl_s.saturating_mul(1000))
                .unwrap_or(Millis::MAX),
            write_behind_ms: Millis::try_from(
                config.session_timeout_ms / crate::client::WRITE_BEHIND_FRACTION,
            )
            .unwrap_or(Millis::MAX),
        };
        runtime.alarm_handler(
            KIND,
            TtlHandler {
                clients: clients.clone(),
                metrics: metrics.clone(),
            },
        );
        let codec = CookieCodec::new(config.cookies.clone(), signer, config.session_timeout_ms);
        let timeout_ms = Millis::try_from(config.limits.engine_timeout_ms).unwrap_or(Millis::MAX);
        Ok(Decider {
            inner: Arc::new(Inner {
                config,
                codec,
                fingerprinter,
                clients,
                sink,
                metrics,
                timeout_ms,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &MiddlewareConfig {
        &self.inner.config
    }

    /// The client id (cID) a request's `Cookie` header proves: validly signed under the
    /// configured keys (any of them, so rotation holds), in the configured layout. Reads
    /// nothing from the store and decides nothing: for other capabilities (realtime sockets)
    /// that identify a browser by its middleware cookie.
    /// Only the `HttpOnly` copy counts in layout A: the `_cs_` copy is readable (and so
    /// replayable) by any script on the page.
    pub fn verified_client(&self, cookie_header: &str) -> Option<String> {
        self.inner
            .codec
            .read_header_copies(cookie_header, &self.inner.config.limits, now_ms(), true)
            .cid
    }

    /// Decides for one request. Never fails for engine trouble (that is a fallback); refuses
    /// only when the client exceeds its decision rate.
    pub async fn decide(&self, input: &DecisionInput) -> Result<Decision, Refusal> {
        let inner = &self.inner;
        let now = now_ms();
        let presented = input
            .cookie
            .as_deref()
            .map(|h| inner.codec.read_header(h, &inner.config.limits, now))
            .unwrap_or_default();
        // The fpID is part of every answer; the stable key only of a new client's.
        let fp_id = inner.fingerprinter.as_ref().map(|f| f.fp_id(input));
        let budget = Duration::from_millis(u64::try_from(inner.timeout_ms).unwrap_or(u64::MAX));
        let outcome = tokio::time::timeout(
            budget,
            self.decide_stored(&presented, fp_id.as_deref(), input, now),
        )
        .await;
        let decision = match outcome {
            Ok(Ok(decision)) => decision,
            Ok(Err(Failure::Refused(refusal))) => {
                inner.metrics.rate_limited.increment(1);
                return Err(refusal);
            }
            Ok(Err(Failure::Engine(e))) => {
                tracing::warn!(error = %e, "middleware decision falls back: engine failed");
                self.fallback(fp_id, input, now)
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = inner.timeout_ms,
                    "middleware decision falls back: engine too slow"
                );
                self.fallback(fp_id, input, now)
            }
        };
        self.count_and_record(&decision, input, now);
        Ok(decision)
    }

    async fn decide_stored(
        &self,
        presented: &Presented,
        fp_id: Option<&str>,
        input: &DecisionInput,
        now: Millis,
    ) -> Result<Decision, Failure> {
        let inner = &self.inner;
        let clients = &inner.clients;
        let eid = new_id(now);
        let Some(cid) = presented.cid.clone() else {
            // A first visit: nothing is stored until the cookie comes back.
            let ids = (eid.clone(), eid.clone(), eid);
            return Ok(self.answer(presented, None, ids, true, fp_id, input, now));
        };
        let mut guard = clients.objects.lock(&cid).await;
        let limit = inner.config.limits.max_decisions_per_client_per_s;
        if !guard.get_or_insert_with(Default::default).admit(now, limit) {
            return Err(Failure::Refused(Refusal::RateLimited));
        }
        let from_cookies = |rehydrated| Prior {
            cid: cid.clone(),
            sid: presented.sid.clone(),
            eid: presented.eid.clone(),
            last_activity: presented.last_activity,
            rehydrated,
        };
        let stored = clients.load(&mut guard).await?;
        let created = stored.is_none();
        let prior = match stored {
            // The client's signed cookies are newer than the store (a write-behind lost
            // at eviction or restart): they describe the client better.
            Some(stored)
                if presented.sid.is_some()
                    && presented.last_activity > stored.last_activity()
                    && stored.cid == cid =>
            {
                from_cookies(false)
            }
            Some(stored) => Prior {
                last_activity: stored.last_activity(),
                cid: stored.cid,
                sid: Some(stored.sid),
                eid: Some(stored.eid),
                rehydrated: false,
            },
            // Never stored (the first return) or gone (TTL, data loss: a rehydration).
            None => from_cookies(!first_visit_ids(presented, &cid)),
        };
        let timeout = Millis::try_from(inner.config.session_timeout_ms).unwrap_or(Millis::MAX);
        let (sid, is_new_session) = match (&prior.sid, prior.last_activity) {
            (Some(sid), Some(last)) if now.saturating_sub(last) <= timeout => (sid.clone(), false),
            _ => (eid.clone(), true),
        };
        let state = ClientState {
            cid: cid.clone(),
            sid: sid.clone(),
            eid: eid.clone(),
        };
        clients.save(&mut guard, state).await?;
        if created {
            clients.arm_ttl(&cid, now).await?;
        }
        drop(guard);
        if prior.rehydrated {
            inner.metrics.rehydrations.increment(1);
        }
        let ids = (cid, sid, eid);
        Ok(self.answer(
            presented,
            Some(&prior),
            ids,
            is_new_session,
            fp_id,
            input,
            now,
        ))
    }

    /// The decision for `(cid, sid, eid)` given what came before (`None`: a new client).
    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        presented: &Presented,
        prior: Option<&Prior>,
        (cid, sid, eid): (String, String, String),
        is_new_session: bool,
        fp_id: Option<&str>,
        input: &DecisionInput,
        now: Millis,
    ) -> Decision {
        let inner = &self.inner;
        let is_new_fp_id = fp_id.is_some() && presented.fpid.as_deref() != fp_id;
        let old_state = prior
            .map(|p| IdState::of(Some(&p.cid), p.sid.as_deref(), p.eid.as_deref()))
            .unwrap_or_default();
        let do_id = match (prior, &inner.fingerprinter) {
            (None, Some(f)) => f.stable_key(input),
            _ => cid.clone(),
        };
        let set_cookies = inner.codec.set_cookies(
            presented,
            &Issue {
                cid: &cid,
                sid: &sid,
                eid: &eid,
                fpid: fp_id,
            },
            now,
        );
        Decision {
            session: SessionContext {
                client_time: id_time(&cid).unwrap_or(now),
                session_time: id_time(&sid).unwrap_or(now),
                event_time: now,
                cid,
                sid,
                eid,
                old_state,
                is_new_client: prior.is_none(),
                is_new_session,
                is_new_do_id: prior.is_none(),
                is_new_fp_id,
                do_id,
                fp_id: fp_id.map(str::to_string),
                is_fallback: false,
            },
            set_cookies,
        }
    }

    /// The answer when the engine is unavailable: fresh ids, no cookies (nothing would back
    /// them), `isFallback`. The fingerprint is still this request's own (A bug 4).
    fn fallback(&self, fp_id: Option<String>, input: &DecisionInput, now: Millis) -> Decision {
        let stable_key = self
            .inner
            .fingerprinter
            .as_ref()
            .map(|f| f.stable_key(input));
        Decision::fallback(now, stable_key, fp_id)
    }

    fn count_and_record(&self, decision: &Decision, input: &DecisionInput, now: Millis) {
        let m = &self.inner.metrics;
        let s = &decision.session;
        m.decisions.increment(1);
        if s.is_fallback {
            m.fallbacks.increment(1);
        } else {
            if s.is_new_client {
                m.new_clients.increment(1);
            }
            if s.is_new_session {
                m.new_sessions.increment(1);
            }
        }
        if !sampled(self.inner.config.analytics.sample_rate) {
            return;
        }
        let (host, path) = split_url(input.url.as_deref());
        let point = DataPoint {
            dataset: Dataset::Events,
            ts: now,
            cid: s.cid.clone(),
            sid: s.sid.clone(),
            eid: s.eid.clone(),
            fp_id: s.fp_id.clone(),
            region: input.region.clone(),
            host,
            path,
            method: input.method.clone(),
            accept: input.accept.clone(),
            is_new_client: s.is_new_client,
            is_new_fp_id: s.is_new_fp_id,
            is_new_session: s.is_new_session,
            is_fallback: s.is_fallback,
        };
        let sink = &self.inner.sink;
        if s.is_new_session {
            sink.record(DataPoint {
                dataset: Dataset::Sessions,
                ..point.clone()
            });
        }
        if s.is_new_client {
            sink.record(DataPoint {
                dataset: Dataset::Clients,
                ..point.clone()
            });
        }
        sink.record(point);
    }
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("layout", &self.inner.config.cookies.layout)
            .finish_non_exhaustive()
    }
}

/// Whether the cookies still carry a first visit's ids (cID = sID = eID, minted together):
/// then an absent stored state means "never stored", not "lost".
fn first_visit_ids(presented: &Presented, cid: &str) -> bool {
    match presented.eid.as_deref() {
        Some(eid) => eid == cid,
        None => presented.sid.as_deref() == Some(cid) && presented.last_activity == id_time(cid),
    }
}

/// Host and path of an absolute URL (`https://h/p?q`), or the path of a relative one (`/p?q`).
fn split_url(url: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(uri) = url.and_then(|u| u.parse::<axum::http::Uri>().ok()) else {
        return (None, None);
    };
    (uri.host().map(str::to_string), Some(uri.path().to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_url_takes_host_and_path() {
        use super::split_url;
        assert_eq!(
            split_url(Some("https://a.example/x/y?q=1")),
            (Some("a.example".into()), Some("/x/y".into()))
        );
        assert_eq!(split_url(Some("/p?q")), (None, Some("/p".into())));
        assert_eq!(
            split_url(Some("http://h")),
            (Some("h".into()), Some("/".into()))
        );
        assert_eq!(split_url(None), (None, None));
    }
}
