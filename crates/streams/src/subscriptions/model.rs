//! What a subscription is: its normalized configuration, its stream links (one cursor each),
//! and its delivery state (generation, the wake in flight, lease, retry schedule).
//!
//! The record (configuration and delivery state) is one JSON object persisted through the
//! object runtime (kind [`KIND`](super::KIND)), written under the subscription's lock after
//! every change, so the fencing counter and the retry schedule survive eviction and restarts
//! exactly as the protocol requires (§7.1: retry metadata MUST persist). The links are not
//! part of it: each is its own small object ([`super::links`]), because a pattern can link
//! thousands of streams and rewriting all their cursors for every new stream made stream
//! creation quadratic in bytes written. Offsets are kept as byte positions (the streams' own
//! representation) and formatted as tokens on the wire.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sessiond_store::Millis;

use crate::offset;

/// Default lease (PROTOCOL.md §6.2).
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Lease bounds: 1 s to 10 min.
pub const LEASE_RANGE: std::ops::RangeInclusive<u64> = 1_000..=600_000;

/// Delivery mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// POST to `webhook.url`.
    Webhook,
    /// Wake events appended to `wake_stream`; workers claim.
    PullWake,
}

/// The normalized configuration: what a re-PUT must repeat exactly to get a 200.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubConfig {
    /// `type`.
    pub delivery: Delivery,
    /// `pattern`.
    pub pattern: Option<String>,
    /// `streams`, sorted and deduplicated.
    pub streams: Vec<String>,
    /// `webhook.url`.
    pub webhook_url: Option<String>,
    /// `wake_stream`.
    pub wake_stream: Option<String>,
    /// `lease_ttl_ms`.
    pub lease_ttl_ms: u64,
    /// `description`.
    pub description: Option<String>,
}

/// One linked stream's cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Added through `streams[]` / `POST …/streams`.
    pub explicit: bool,
    /// Matched by the pattern.
    pub glob: bool,
    /// Position after the last acknowledged byte (next read starts here).
    pub acked: u64,
}

/// The wake in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wake {
    /// Unique per wake.
    pub wake_id: String,
    /// Bearer token for callback / ack / release (set at issue for webhooks, at claim for
    /// pull-wake).
    pub token: Option<String>,
    /// Pull-wake worker holding the lease.
    pub holder: Option<String>,
    /// Tails of the pending streams when the wake was issued (what `done` acks).
    pub snapshot: BTreeMap<String, u64>,
    /// When the lease (or an unclaimed wake) lapses.
    pub lease_until: Millis,
}

/// Webhook retry schedule after a failed delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Failed attempts in a row.
    pub attempt: u32,
    /// Not before this time.
    pub next_attempt_at: Millis,
}

/// A subscription as persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Client-chosen id.
    pub id: String,
    /// Normalized configuration.
    pub config: SubConfig,
    /// Creation time (unix ms).
    pub created_at: Millis,
    /// Scheme + authority the subscription was created through (for callback / JWKS URLs).
    pub base_url: String,
    /// Linked streams by path: in memory only, persisted one object per link
    /// ([`super::links`]). Still read from records written before links had their own
    /// objects, which are migrated at their first load.
    #[serde(default, skip_serializing)]
    pub links: BTreeMap<String, Link>,
    /// Whether `links` holds the persisted links (they are loaded once per residency).
    #[serde(skip)]
    pub links_loaded: bool,
    /// Paths linked explicitly (`streams`, `POST …/streams`): the copy every node's path index
    /// reads, so finding the subscriptions of a path never reads links. `None` in records
    /// written before it existed (derived from the links at their first load).
    #[serde(default)]
    pub explicit: Option<BTreeSet<String>>,
    /// Fencing counter: incremented for every wake.
    pub generation: u64,
    /// The wake in flight, if any.
    pub wake: Option<Wake>,
    /// Retry schedule after a failed webhook delivery.
    pub retry: Option<Retry>,
}

/// The stream root URL for `base` (`http://host:port`).
pub fn stream_root(base: &str) -> String {
    format!("{base}{}", crate::protocol::STREAM_PREFIX)
}

impl Subscription {
    /// When the record next needs attention: the lease of the wake in flight, else the
    /// scheduled webhook retry.
    pub fn next_due(&self) -> Option<Millis> {
        match (&self.wake, &self.retry) {
            (Some(wake), _) => Some(wake.lease_until),
            (None, Some(retry)) => Some(retry.next_attempt_at),
            (None, None) => None,
        }
    }

    /// `active`, or `failed` while a webhook retry is scheduled.
    pub fn status(&self) -> &'static str {
        if self.retry.is_some() {
            "failed"
        } else {
            "active"
        }
    }

    /// The callback URL of this subscription.
    pub fn callback_url(&self) -> String {
        format!(
            "{}__ds/subscriptions/{}/callback",
            stream_root(&self.base_url),
            self.id
        )
    }

    /// The `webhook` object of responses (no secret: signing is asymmetric).
    fn webhook_view(&self, kid: &str) -> Value {
        match &self.config.webhook_url {
            Some(url) => json!({
                "url": url,
                "signing": {
                    "alg": "ed25519",
                    "kid": kid,
                    "jwks_url": format!("{}__ds/jwks.json", stream_root(&self.base_url)),
                },
            }),
            None => Value::Null,
        }
    }

    /// The GET / PUT response body.
    pub fn view(&self, kid: &str) -> Value {
        let streams: Vec<Value> = self
            .links
            .iter()
            .map(|(path, link)| {
                json!({
                    "path": path,
                    "link_type": if link.explicit { "explicit" } else { "glob" },
                    "acked_offset": offset::format(link.acked),
                })
            })
            .collect();
        json!({
            "id": self.id,
            "subscription_id": self.id,
            "type": self.config.delivery,
            "pattern": self.config.pattern,
            "streams": streams,
            "webhook": self.webhook_view(kid),
            "wake_stream": self.config.wake_stream,
            "lease_ttl_ms": self.config.lease_ttl_ms,
            "created_at": crate::time::format_rfc3339(self.created_at),
            "status": self.status(),
            "description": self.config.description,
            "generation": self.generation,
        })
    }

    /// The `streams` array of a wake (webhook body, claim response): the snapshot's streams
    /// with their cursors and tails.
    pub fn wake_streams(&self, snapshot: &BTreeMap<String, u64>) -> Vec<Value> {
        snapshot
            .iter()
            .filter_map(|(path, tail)| {
                let link = self.links.get(path)?;
                Some(json!({
                    "path": path,
                    "link_type": if link.explicit { "explicit" } else { "glob" },
                    "acked_offset": offset::format(link.acked),
                    "tail_offset": offset::format(*tail),
                    "has_pending": *tail > link.acked,
                }))
            })
            .collect()
    }
}

/// The PUT body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    #[serde(rename = "type")]
    pub delivery: Delivery,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub streams: Option<Vec<String>>,
    #[serde(default)]
    pub webhook: Option<WebhookBody>,
    #[serde(default)]
    pub wake_stream: Option<String>,
    #[serde(default)]
    pub lease_ttl_ms: Option<u64>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `webhook` in the PUT body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    pub url: String,
}

/// One entry of `acks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckEntry {
    pub stream: String,
    pub offset: String,
}

/// Body of callback / ack / release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    pub wake_id: String,
    pub generation: u64,
    #[serde(default)]
    pub acks: Vec<AckEntry>,
    #[serde(default)]
    pub done: bool,
}

/// Body of claim.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    pub worker: String,
}

/// Body of `POST …/streams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsBody {
    pub streams: Vec<String>,
}
