//! What sessiond remembers about one stream, and how it is stored.
//!
//! The engine keeps the stream's chunks, its tail and its `expires_at`; everything else the
//! protocol needs ([`StreamInfo`]: content type, expiry rules, closure, last `Stream-Seq`,
//! fork lineage and reference count, soft deletion) is encoded as JSON into
//! `StreamMeta::state`, and each idempotent producer's position into its own row
//! (`ProducerRecord`). Both change only through `StreamStore` commits, together with the
//! chunks they describe, so producer state and data can never disagree after a crash.
//!
//! The in-memory object ([`StreamObject`]) caches the decoded metadata between requests (held
//! by the object runtime, evicted when idle) and owns the per-stream wake-up channel that
//! long-poll and SSE readers wait on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sessiond_store::{Millis, StoreError, StreamMeta};
use tokio::sync::watch;

/// An idempotent producer's position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    /// Current epoch.
    pub epoch: u64,
    /// Highest accepted sequence number in that epoch.
    pub seq: u64,
}

/// The `(id, epoch, seq)` of the request that closed a stream, so its retries succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTuple {
    /// Producer-Id.
    pub id: String,
    /// Producer-Epoch.
    pub epoch: u64,
    /// Producer-Seq.
    pub seq: u64,
}

/// One ancestor range of a fork: `path`'s data from `start` up to the next ancestor's start
/// (or the fork's own start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Ancestor stream path.
    pub path: String,
    /// First offset of the ancestor's own data.
    pub start: u64,
}

/// How a fork was requested (compared on an idempotent re-PUT).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkRequest {
    /// Source path.
    pub source: String,
    /// `Stream-Fork-Offset` as a position, if given.
    pub offset: Option<u64>,
    /// `Stream-Fork-Sub-Offset`.
    pub sub_offset: u64,
}

/// How much history a stream keeps (`None` = no limit of that kind).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Drop data appended more than this many seconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    /// Keep at most about this many bytes (whole messages: the cut rounds up to the next one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

impl Retention {
    /// True when it limits nothing.
    pub fn is_empty(&self) -> bool {
        self.max_age_s.is_none() && self.max_bytes.is_none()
    }
}

/// A stream's compaction setting and progress (in its metadata).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// The fields whose values together are an event's key (dotted paths), fixed at creation.
    pub key: Vec<String>,
    /// Data below this offset has been compacted.
    #[serde(default)]
    pub compacted_to: u64,
    /// A dropped `delete` lies below this offset: reads above the retained start and below it
    /// are 410 `offset_gone`.
    #[serde(default)]
    pub purged: u64,
    /// Bumped by every compaction batch (part of the ETag).
    #[serde(default)]
    pub generation: u64,
    /// The tail when the last compaction finished: the background trigger counts from it.
    #[serde(default)]
    pub ran_at_tail: u64,
}

/// Everything the protocol keeps per stream besides its bytes (stored in `StreamMeta::state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Content type as given at creation.
    pub content_type: String,
    /// Sliding TTL (seconds), if any.
    pub ttl_s: Option<u64>,
    /// Absolute expiry (unix ms), if any.
    pub expires_at: Option<Millis>,
    /// Last read or write that refreshed the sliding TTL (unix ms).
    pub last_access: Millis,
    /// TTL as requested on PUT (a fork may have inherited `ttl_s` instead).
    pub req_ttl_s: Option<u64>,
    /// Expires-At as requested on PUT.
    pub req_expires_at: Option<Millis>,
    /// Closed: no more appends.
    pub closed: bool,
    /// The producer request that closed it.
    pub closed_by: Option<ProducerTuple>,
    /// Producer states to write to their own rows with the next commit (which empties this).
    /// Metadata stored before producers had rows kept every producer here; the first commit
    /// after loading such a stream moves them out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producers: BTreeMap<String, ProducerState>,
    /// Last accepted `Stream-Seq`.
    pub last_seq: Option<String>,
    /// First offset of this stream's own data (the fork point for forks, else 0).
    pub start: u64,
    /// For forks: the ancestors whose data precedes `start`, oldest first.
    pub lineage: Vec<Ancestor>,
    /// For forks: the request that created it.
    pub fork: Option<ForkRequest>,
    /// Number of live forks whose lineage includes this stream directly.
    pub forks: u64,
    /// Where each of those forks' inherited data begins (this stream's retained start when
    /// the fork was made; one entry per fork): retention never trims past the lowest (see
    /// `trim::fork_floor`). Forks from before this field have no entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fork_floors: Vec<u64>,
    /// For forks: the source's retained start when this fork was made (its entry in the
    /// source's `fork_floors`, and its own first retained offset).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inherited_start: u64,
    /// Retention as requested on PUT (empty: the configured default applies).
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    /// `(time, offset)` marks of appends, for age-based retention (see `retention.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<(Millis, u64)>,
    /// Keyed compaction (`Stream-Compaction: key` on the creating PUT) and its progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Compaction>,
    /// The fork point of each live fork counted in `forks` (one entry per fork): compaction
    /// never passes the lowest (see `compaction::fork_ceiling`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fork_points: Vec<u64>,
    /// Deleted while forks still read its data: 410 to clients.
    pub soft_deleted: bool,
    /// Creation time (unix ms); distinguishes incarnations of one path in ETags.
    pub created_at: Millis,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl ProducerState {
    /// The row encoding of a producer's state.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a producer row of `path`.
    pub fn decode(path: &str, bytes: &[u8]) -> Result<ProducerState, StoreError> {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("producer of stream {path}: {e}")))
    }
}

impl StreamInfo {
    /// A stream created at `now`: open, no TTL, no producers, marks, forks or compaction,
    /// starting at offset 0. Creators set what their request asked for on top of it.
    pub fn new(content_type: String, now: Millis, retention: Retention) -> StreamInfo {
        StreamInfo {
            content_type,
            ttl_s: None,
            expires_at: None,
            last_access: now,
            req_ttl_s: None,
            req_expires_at: None,
            closed: false,
            closed_by: None,
            producers: Default::default(),
            last_seq: None,
            start: 0,
            lineage: Vec::new(),
            fork: None,
            forks: 0,
            fork_floors: Vec::new(),
            inherited_start: 0,
            retention,
            marks: Vec::new(),
            compaction: None,
            fork_points: Vec::new(),
            soft_deleted: false,
            created_at: now,
        }
    }

    /// When the stream expires, if ever.
    pub fn expiry(&self) -> Option<Millis> {
        match (self.ttl_s, self.expires_at) {
            (Some(ttl), _) => Some(
                self.last_access
                    .saturating_add((ttl as i64).saturating_mul(1000)),
            ),
            (None, at) => at,
        }
    }

    /// True when expired at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        self.expiry().is_some_and(|at| at <= now)
    }

    /// The media type, lowercased, without parameters.
    pub fn media_type(&self) -> String {
        media_type(&self.content_type)
    }

    /// JSON mode: values are validated, flattened and stored one per chunk.
    pub fn is_json(&self) -> bool {
        same_media_type(&self.content_type, "application/json")
    }
}

/// True when two content types name the same media type (parameters and case aside), as
/// comparing their [`media_type`]s would say, without the lowercased copies: every append
/// checks its `Content-Type` against the stream's, most often byte for byte the same (so equal
/// strings are answered first, without splitting and trimming both).
pub fn same_media_type(a: &str, b: &str) -> bool {
    a == b || bare_media_type(a).eq_ignore_ascii_case(bare_media_type(b))
}

/// `Text/Plain; charset=x` → `Text/Plain`.
fn bare_media_type(content_type: &str) -> &str {
    // A byte scan, not `split(';')`: its char searcher made a comparison ~40 % dearer
    // (`is_json` runs one per append). `;` is ASCII, so `end` is a char boundary.
    let end = content_type.bytes().position(|b| b == b';');
    end.and_then(|end| content_type.get(..end))
        .unwrap_or(content_type)
        .trim()
}

/// `Text/Plain; charset=x` → `text/plain`.
pub fn media_type(content_type: &str) -> String {
    bare_media_type(content_type).to_ascii_lowercase()
}

/// A live stream as cached in memory.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Offset after the last byte.
    pub tail: u64,
    /// The retained start (`StreamMeta::start`): reads below it are 410 `offset_gone`.
    pub retained: u64,
    /// Decoded metadata.
    pub info: StreamInfo,
    /// `expires_at` as last persisted (sliding refreshes are written lazily).
    pub persisted_expiry: Option<Millis>,
    /// The stored encoding of `info` as last read or written: on a shared engine a commit
    /// requires the store to still hold exactly this (`StreamStore::commit_checked`).
    pub stored_state: std::sync::Arc<[u8]>,
}

impl Stream {
    /// Decodes stored metadata.
    pub fn decode(meta: &StreamMeta) -> Result<Stream, StoreError> {
        let info: StreamInfo = serde_json::from_slice(&meta.state)
            .map_err(|e| StoreError::Corrupt(format!("stream {}: {e}", meta.path)))?;
        Ok(Stream {
            tail: meta.tail,
            retained: meta.start,
            persisted_expiry: meta.expires_at,
            info,
            stored_state: meta.state.as_slice().into(),
        })
    }

    /// Encodes the metadata to store for `path` with `tail`.
    pub fn encode(path: &str, tail: u64, info: &StreamInfo) -> Result<StreamMeta, StoreError> {
        let state = serde_json::to_vec(info)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode stream {path}: {e}")))?;
        Ok(Stream::meta(path, tail, info, state))
    }

    /// The metadata to store for `path` with `tail`, `state` being the encoding of `info`
    /// (already at hand: a plain append that changed nothing but the tail keeps the stored
    /// bytes instead of encoding the same JSON again).
    pub fn meta(path: &str, tail: u64, info: &StreamInfo, state: Vec<u8>) -> StreamMeta {
        StreamMeta {
            path: path.to_owned(),
            tail,
            // Engine-managed (raised by trims only); commits leave the stored value alone.
            start: 0,
            // A soft-deleted stream is removed with its last fork, never by the sweeper: not
            // indexing it keeps it out of every sweep's candidates. One whose last fork is gone
            // (a crash stopped its removal) is indexed as long expired, so the sweeper finishes.
            expires_at: match (info.soft_deleted, info.forks) {
                (false, _) => info.expiry(),
                (true, 0) => Some(0),
                (true, _) => None,
            },
            state,
        }
    }
}

/// Appends enqueued to the engine but not yet confirmed, as seen by the tasks that await them
/// outside the stream's lock (so it lives in a `watch`, not in the locked object).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flight {
    /// Enqueued commits whose outcome is not known yet.
    pub in_flight: u64,
    /// The tail readers may see while commits are in flight: the end of the last commit known
    /// durable (commits are applied in order, so everything before it is durable too).
    pub durable_tail: u64,
    /// A commit in flight failed: the cached stream is ahead of the store and must be reloaded
    /// once nothing is in flight any more (its successors fail their tail check meanwhile).
    pub failed: bool,
}

/// The runtime object of one stream path.
pub struct StreamObject {
    /// The stream, or `None` when the path has none (cached absence). While appends are in
    /// flight this is the *assigned* state (tail, producers, `Stream-Seq` including them); what
    /// readers may see is [`StreamObject::visible_tail`].
    pub stream: Option<Stream>,
    /// Bumped after every durable change (here, or on another node: the channel is shared
    /// with the capability's `WakeHub`); readers at the tail wait on it.
    pub changed: crate::wakes::WakeSender,
    /// The `changed` value seen just before `stream` was loaded from a shared engine: a
    /// snapshot taken when it moved since then wakes its reader at once (a change may have
    /// landed between the load and the reader's subscription). `None` on exclusive engines.
    pub loaded_at: Option<u64>,
    /// Pipelined appends of this stream (see `pipeline.rs`).
    pub flight: watch::Sender<Flight>,
    /// Appends waiting for the stream's commit in the engine to land (see `pipeline.rs`);
    /// shared with the task that lands it.
    pub(crate) staged: std::sync::Arc<std::sync::Mutex<crate::pipeline::Staged>>,
    /// Producer states known to this object: the assigned ones of appends in flight (which the
    /// store may not have yet) and recently read or written ones. Cleared when nothing is in
    /// flight and it grew past a few entries, so it stays small (see `Streams::lock`).
    pub(crate) producers: std::collections::HashMap<String, ProducerState>,
    /// When `stream` was last replaced by the metadata a lost commit returned (shared engines):
    /// as fresh as a read made then, so a writer that started before may decide on it.
    pub(crate) refreshed_at: Option<std::time::Instant>,
    /// The tail and chunks of the last durable appends, for woken readers (see `recent.rs`).
    pub recent: std::sync::Arc<crate::recent::Recent>,
}

impl StreamObject {
    /// An object for `stream` that wakes readers through `changed`.
    pub fn new(stream: Option<Stream>, changed: crate::wakes::WakeSender) -> StreamObject {
        StreamObject {
            stream,
            changed,
            loaded_at: None,
            refreshed_at: None,
            flight: watch::Sender::new(Flight::default()),
            staged: Default::default(),
            producers: Default::default(),
            recent: Default::default(),
        }
    }

    /// True when nothing refers to this object besides its slot: no stream, no reader waiting
    /// on it, nothing in flight. Such an object is dropped rather than cached, so lookups of
    /// absent streams leave nothing resident.
    pub fn is_vacant(&self) -> bool {
        self.stream.is_none()
            && self.changed.receiver_count() == 0
            && self.flight.borrow().in_flight == 0
    }

    /// Wakes every waiting reader (call only after the change is durable). Not for plain
    /// appends: this also drops what they published (`recent.rs`), so woken readers refresh.
    pub fn notify(&self) {
        self.recent.invalidate();
        crate::wakes::bump(&self.changed);
    }

    /// The tail readers may see: the assigned tail when nothing is in flight, else the durable
    /// one (never more than the assigned tail).
    pub fn visible_tail(&self) -> Option<u64> {
        let stream = self.stream.as_ref()?;
        let flight = *self.flight.borrow();
        Some(if flight.in_flight == 0 && !flight.failed {
            stream.tail
        } else {
            flight.durable_tail.min(stream.tail)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{media_type, same_media_type};

    #[test]
    fn same_media_type_agrees_with_comparing_media_types() {
        let types = [
            "text/plain",
            "Text/Plain; charset=utf-8",
            " text/plain ;x=1",
            "application/json",
            "APPLICATION/JSON",
            "application/jsonx",
            "",
            ";",
        ];
        for a in types {
            for b in types {
                assert_eq!(
                    same_media_type(a, b),
                    media_type(a) == media_type(b),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
