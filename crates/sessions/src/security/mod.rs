//! Security events: what happened to a user's sessions, as JSON messages for the user's own
//! stream (`__security/users/<base64url(sha256(user_id))>`) and the global one
//! (`__security/all`).
//!
//! Why here and why encoded this way: the session service knows what changed and why, and
//! the store writes the event in the same atomic step as the change (its outbox, see
//! `sessiond_store::outbox`), so an acknowledged change always has its event. This module only
//! builds the outbox entry, an [`Envelope`]: the event with the user's id and the name of the
//! user's stream. The relay that delivers it (in the server, which owns the streams) derives
//! the global copy, replacing the user id with a keyed hash and dropping the address, so
//! nothing identifying is ever written to the global stream.

mod device;
mod envelope;
mod refusals;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sessiond_store::{DataEvent, EventFor, EventPart, Millis, ObjectStore, Outbox, SessionRecord};

pub use device::DeviceSignal;
pub use envelope::{order_stamp, user_hash, user_stream, Envelope};
pub use refusals::{route_class, CLASSES as REFUSAL_CLASSES};

/// The user streams' prefix (under it, one stream per user).
pub const USER_STREAMS: &str = "__security/users/";
/// The global stream.
pub const GLOBAL_STREAM: &str = "__security/all";
/// Every security stream is under this server-owned prefix.
pub const PREFIX: &str = "__security";

/// `[security]`: security event streams.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Record security events (needs the streams capability).
    pub enabled: bool,
    /// Messages older than this are trimmed from the security streams (seconds; 0 = kept
    /// until the user's erasure). Applied as a `[[streams.retention]]` rule for `__security/`.
    pub retention_s: u64,
    /// Store only the network prefix of a device's IP in events (`/24` for IPv4, `/48` for
    /// IPv6); false keeps the whole address in the user's own stream (never in the global one).
    pub truncate_ip: bool,
    /// A device (user-agent family and OS, IP prefix) unseen for this many days is new
    /// (`new_device: true` on create).
    pub known_device_days: u64,
    /// Most refusal events (`socket.refused`, `request.refused`) written to the global stream
    /// per minute. Socket refusals beyond it are only counted in `/metrics`; a request summary
    /// beyond it is merged into the next one.
    pub max_refused_events_per_minute: u32,
    /// Refused requests (401/403) are counted in memory and written as one `request.refused`
    /// summary per this interval at most (milliseconds; never one write per request).
    pub refused_summary_ms: u64,
    /// Most events the relay moves from the outbox to the streams per batch.
    pub relay_batch: usize,
    /// After a change queued an event, the relay waits this long for more before its pass
    /// (milliseconds): the delay of an event in the streams, traded for fewer engine commits.
    pub relay_linger_ms: u64,
    /// The relay lease's TTL on an engine several nodes share (milliseconds): one node's
    /// relay moves the events at a time and renews the lease on each pass (at least every
    /// second); when it dies, another node takes over once this ran out, so events are late
    /// by about this much, never lost. Keep it several times the one-second pass.
    pub relay_lease_ms: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: true,
            retention_s: 90 * 24 * 3600,
            truncate_ip: true,
            known_device_days: 30,
            max_refused_events_per_minute: 60,
            refused_summary_ms: 10_000,
            relay_batch: 256,
            relay_linger_ms: 100,
            relay_lease_ms: 5_000,
        }
    }
}

/// Builds security events. Cheap to clone.
#[derive(Clone)]
pub struct SecurityEvents {
    config: Arc<SecurityConfig>,
    objects: Arc<dyn ObjectStore>,
    queued: Arc<tokio::sync::Notify>,
    /// Where events that record no session change go (sockets, grants, erasures).
    outbox: Option<Arc<dyn Outbox>>,
    /// Refusal events written in the current minute: (minute, count).
    refused: Arc<std::sync::Mutex<(Millis, u32)>>,
    /// Refused requests since the last `request.refused` summary.
    requests: Arc<refusals::Tally>,
}

impl SecurityEvents {
    /// Events per `config`; `objects` remembers each user's known devices.
    pub fn new(config: SecurityConfig, objects: Arc<dyn ObjectStore>) -> Self {
        SecurityEvents {
            config: Arc::new(config),
            objects,
            queued: Arc::default(),
            outbox: None,
            refused: Arc::default(),
            requests: Arc::default(),
        }
    }

    /// Also records events that go with no session change, through `outbox`.
    pub fn with_outbox(mut self, outbox: Arc<dyn Outbox>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Queues an event that records no session change (a socket closed by an ending, a
    /// grant): to `user_id`'s stream and the global one, or the global one only without a
    /// user. Written in the background (the caller is a socket or a request that must not
    /// wait); a failed write is logged. `socket.refused` is rate-limited to
    /// `max_refused_events_per_minute` (every refusal is counted in `/metrics` by the caller).
    pub fn record(
        &self,
        kind: &str,
        user_id: Option<&str>,
        session_id: Option<&str>,
        more: Map<String, Value>,
    ) {
        let Some(outbox) = self.outbox.clone() else {
            return;
        };
        if kind == "socket.refused" && !self.admit_refusal() {
            metrics::counter!("sessiond_security_refused_events_dropped_total").increment(1);
            return;
        }
        let entry = unattached(kind, user_id, session_id, more);
        let queued = self.queued.clone();
        tokio::spawn(async move {
            match outbox
                .outbox_push(vec![entry], sessiond_store::Durability::Confirmed)
                .await
            {
                Ok(()) => queued.notify_one(),
                Err(e) => tracing::warn!(error = %e, "cannot queue a security event"),
            }
        });
    }

    /// Counts a refused request (401/403) of route class `class` (see [`route_class`]) for
    /// the next `request.refused` summary: memory only.
    pub fn note_refused_request(&self, class: &'static str, status: u16) {
        self.requests.note(class, status, sessiond_store::now_ms());
    }

    /// Writes the `request.refused` summary of the requests refused since the last one, if
    /// any and if the refusal budget allows (otherwise they go out with the next summary).
    /// The relay calls it every `refused_summary_ms`.
    pub async fn summarize_refused_requests(&self) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let Some(details) = self.requests.take(sessiond_store::now_ms()) else {
            return;
        };
        if !self.admit_refusal() {
            self.requests.restore(&details);
            return;
        }
        let entry = unattached("request.refused", None, None, details.clone());
        match outbox
            .outbox_push(vec![entry], sessiond_store::Durability::Confirmed)
            .await
        {
            Ok(()) => self.queued.notify_one(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot queue a refusal summary; kept for the next");
                self.requests.restore(&details);
            }
        }
    }

    /// Whether one more refusal event fits this minute's budget.
    fn admit_refusal(&self) -> bool {
        let minute = sessiond_store::now_ms() / 60_000;
        let mut window = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if window.0 != minute {
            *window = (minute, 0);
        }
        if window.1 >= self.config.max_refused_events_per_minute {
            return false;
        }
        window.1 += 1;
        true
    }

    /// Signalled after events were queued (the relay waits on it).
    pub fn queued(&self) -> Arc<tokio::sync::Notify> {
        self.queued.clone()
    }

    /// Wakes the relay: events were queued.
    pub fn notify(&self) {
        self.queued.notify_one();
    }

    /// The configuration in force.
    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// The outbox entry of a `kind` event about `record` (fields of `details` added).
    ///
    /// Written field by field rather than as an [`Envelope`] of a map: building the event's
    /// map (a key and a value allocated per field, then walked to encode it) cost more than
    /// the rest of the event's way into the session's commit. It decodes as that envelope
    /// would (a `details` field named like a leading one comes later, so it wins, as it did
    /// in the map).
    pub fn about(
        &self,
        kind: &str,
        record: &SessionRecord,
        details: Map<String, Value>,
    ) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, prefix: &[u8], value: &dyn erased::Json) {
            out.extend_from_slice(prefix);
            value.write(out);
        }
        let mut out = Vec::with_capacity(256);
        // The user's stream is left to the relay (`Envelope::destination`): its name is a
        // hash of the user id, which the relay remembers across the user's events.
        out.extend_from_slice(br#"{"stream":null"#);
        field(&mut out, br#","user_id":"#, &record.user_id);
        field(&mut out, br#","origin":"#, &record.origin);
        field(&mut out, br#","ord":"#, &order_stamp());
        field(
            &mut out,
            br#","event":{"id":"#,
            &sessiond_http::ids::random_id(),
        );
        field(&mut out, br#","type":"#, &kind);
        field(&mut out, br#","at":"#, &sessiond_store::now_ms());
        field(&mut out, br#","session_id":"#, &record.id.as_str());
        field(&mut out, br#","user_id":"#, &record.user_id);
        for (key, value) in &details {
            field(&mut out, b",", key);
            field(&mut out, b":", value);
        }
        out.extend_from_slice(b"}}");
        out
    }

    /// The outbox entry of `session.context_changed` for a change of session `session_id`'s
    /// data that the store applies itself, without a read first: the store fills in what only
    /// the change knows (the changed keys, the new version) and the session's owner and
    /// origin; the result reads like [`about`](Self::about)'s, the user's stream named by
    /// [`Envelope::destination`].
    pub fn data_changed(&self, session_id: &str) -> DataEvent {
        template(
            "session.context_changed",
            session_id,
            vec![
                EventPart::Text(br#","version":"#.to_vec()),
                EventPart::Version,
                EventPart::Text(br#","changed":"#.to_vec()),
                EventPart::ChangedKeys,
            ],
        )
    }

    /// The outbox entry of a `kind` event about session `session_id` (fields of `details`
    /// added) for a store step that reads the session itself, e.g. a delete without a read
    /// first: the store fills in the owner and origin; the result reads like
    /// [`about`](Self::about)'s.
    pub fn about_unread(
        &self,
        kind: &str,
        session_id: &str,
        details: Map<String, Value>,
    ) -> DataEvent {
        let fields = encode_map(&details);
        // `{...}` without its braces: the fields continue the event's.
        let inner = fields
            .get(1..fields.len().saturating_sub(1))
            .unwrap_or_default();
        let tail = match inner.is_empty() {
            true => Vec::new(),
            false => vec![EventPart::Text([&b","[..], inner].concat())],
        };
        template(kind, session_id, tail)
    }

    /// The outbox entry of `user.erased`: global only, no user at all, a random erasure id
    /// the operator can quote (the erasure list keeps it with the hashed user id).
    pub fn erased(&self, erasure_id: &str) -> Vec<u8> {
        let mut event = Map::new();
        event.insert("id".into(), sessiond_http::ids::random_id().into());
        event.insert("type".into(), "user.erased".into());
        event.insert("at".into(), sessiond_store::now_ms().into());
        event.insert("erasure_id".into(), erasure_id.into());
        encode(Envelope {
            stream: None,
            user_id: None,
            origin: None,
            ord: order_stamp(),
            routed: false,
            event,
        })
    }

    /// [`about`](Self::about) for every record a bulk operation removes.
    pub fn for_each(
        &self,
        kind: &'static str,
        details: impl Fn(&SessionRecord) -> Map<String, Value> + Send + Sync + 'static,
    ) -> EventFor {
        let me = self.clone();
        Arc::new(move |r| Some(me.about(kind, r, details(r))))
    }

    /// The `device` of a created session as events show it: its IP (truncated when
    /// configured) and user agent, nothing else the app put there.
    pub fn device_view(&self, device: &Value) -> Value {
        let mut view = Map::new();
        if let Some(ip) = device.get("ip").and_then(Value::as_str) {
            let shown = match self.config.truncate_ip {
                true => device::ip_prefix(ip).unwrap_or_default(),
                false => ip.to_string(),
            };
            view.insert("ip".into(), shown.into());
        }
        if let Some(ua) = device.get("user_agent").and_then(Value::as_str) {
            view.insert("user_agent".into(), ua.into());
        }
        Value::Object(view)
    }

    /// Whether `device` (from a create body) is new for `user`, remembering it as seen now.
    /// Devices without an IP or user agent are never new (nothing to compare).
    pub async fn new_device(&self, user: &str, device: &Value, now: Millis) -> bool {
        let Some(signal) = DeviceSignal::of(device) else {
            return false;
        };
        let key = format!("{}/{}", user_hash(user), signal.key());
        let window = (self.config.known_device_days as Millis).saturating_mul(86_400_000);
        let seen = match self.objects.load_object(DEVICES, &key).await {
            Ok(Some(bytes)) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse::<Millis>().ok()),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read known devices; treating the device as known");
                return false;
            }
        };
        let known = seen.is_some_and(|at| now.saturating_sub(at) < window);
        let stored = now.to_string();
        if let Err(e) = self
            .objects
            .save_object(
                DEVICES,
                &key,
                stored.as_bytes(),
                sessiond_store::Durability::Unconfirmed,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot remember a device");
        }
        !known
    }

    /// Forgets every known device of `user` (erasure).
    pub async fn forget_devices(&self, user: &str) -> sessiond_store::Result<()> {
        let prefix = format!("{}/", user_hash(user));
        loop {
            let keys = self
                .objects
                .list_objects(DEVICES, &prefix, None, 256)
                .await?;
            if keys.is_empty() {
                return Ok(());
            }
            for key in keys {
                self.objects
                    .delete_object(DEVICES, &key, sessiond_store::Durability::Confirmed)
                    .await?;
            }
        }
    }
}

/// Object kind of the known-devices memory (`<user hash>/<device key>` → last seen, ms).
const DEVICES: &str = "security-device";

/// The outbox entry of an event that records no session change.
fn unattached(
    kind: &str,
    user_id: Option<&str>,
    session_id: Option<&str>,
    more: Map<String, Value>,
) -> Vec<u8> {
    let mut event = new_event(kind, session_id);
    event.insert("user_id".into(), user_id.into());
    event.extend(more);
    encode(Envelope {
        stream: user_id.map(user_stream),
        user_id: user_id.map(str::to_string),
        origin: None,
        ord: order_stamp(),
        routed: false,
        event,
    })
}

/// One JSON value written into a buffer (a trait object, so [`SecurityEvents::about`] writes
/// its fields of different types with one closure).
mod erased {
    pub(super) trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Strings, numbers, options and JSON values always serialize.
            let _ = serde_json::to_writer(out, self);
        }
    }
}

fn encode(envelope: Envelope) -> Vec<u8> {
    // A map of strings and numbers always serializes.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

fn encode_map(map: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(map).unwrap_or_default()
}

/// The fields every event starts with: a random id, its type, the time, the session (null for
/// an event about no session).
fn new_event(kind: &str, session_id: impl Into<Value>) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("id".into(), sessiond_http::ids::random_id().into());
    event.insert("type".into(), kind.into());
    event.insert("at".into(), sessiond_store::now_ms().into());
    event.insert("session_id".into(), session_id.into());
    event
}

/// An event about session `session_id` with holes for its owner and origin (filled by the
/// store, [`DataEvent`]), then the event fields of `tail`.
fn template(kind: &str, session_id: &str, tail: Vec<EventPart>) -> DataEvent {
    let fixed = encode_map(&new_event(kind, session_id));
    // `fixed` is a non-empty JSON object: the filled fields continue it.
    let open = fixed.strip_suffix(b"}").unwrap_or(&fixed);
    let text = |t: &[u8]| EventPart::Text(t.to_vec());
    let mut parts = vec![
        text(br#"{"stream":null,"user_id":"#),
        EventPart::UserId,
        text(br#","origin":"#),
        EventPart::Origin,
        text(
            &[
                &br#","ord":"#[..],
                order_stamp().to_string().as_bytes(),
                br#","event":"#,
                open,
                br#","user_id":"#,
            ]
            .concat(),
        ),
        EventPart::UserId,
    ];
    parts.extend(tail);
    parts.push(text(b"}}"));
    DataEvent(parts)
}

/// `{"key": value, ...}` from pairs, for event details.
pub fn details<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_store::memory::MemoryEngine;
    use sessiond_store::testsuite::session;

    fn decoded(bytes: &[u8]) -> (Envelope, Option<String>) {
        let mut envelope: Envelope = serde_json::from_slice(bytes).expect("an envelope");
        envelope.event.remove("id");
        envelope.event.remove("at");
        let destination = envelope.destination();
        (envelope, destination)
    }

    /// `about` writes what the envelope of the event's map encodes to: same fields and values
    /// (strings escaped, nested details, a details field overriding a leading one).
    #[test]
    fn about_decodes_like_the_envelope_of_its_map() {
        let events = SecurityEvents::new(SecurityConfig::default(), Arc::new(MemoryEngine::new()));
        let keyed = session("s-\"1", Some("ada \"/é\n"));
        let anonymous = session("s-2", None);
        let more = details([
            ("origin", "service".into()),
            (
                "device",
                serde_json::json!({"ip": "10.0.0.0", "user_agent": "x\"y"}),
            ),
            ("new_device", true.into()),
            ("type", "overridden".into()),
        ]);
        for record in [&keyed, &anonymous] {
            let (written, to) = decoded(&events.about("session.created", record, more.clone()));
            let mut event = new_event("session.created", record.id.as_str());
            event.insert("user_id".into(), record.user_id.clone().into());
            event.extend(more.clone());
            let reference = encode(Envelope {
                stream: (record.user_id.as_deref())
                    .filter(|_| record.origin == sessiond_store::SessionOrigin::Service)
                    .map(user_stream),
                user_id: record.user_id.clone(),
                origin: None,
                ord: 0,
                routed: false,
                event,
            });
            let (reference, want) = decoded(&reference);
            assert_eq!(written.event, reference.event);
            assert_eq!(written.event["type"], "overridden");
            assert_eq!((written.user_id, to), (reference.user_id, want));
        }
    }

    /// What the store writes from the template reads like the event the service builds when
    /// it knows the record (SQLite): same fields, same user stream.
    #[test]
    fn a_filled_data_change_event_reads_like_one_built_from_the_record() {
        let events = SecurityEvents::new(SecurityConfig::default(), Arc::new(MemoryEngine::new()));
        let mut keyed = session("s-1", Some("ada \"/é"));
        keyed.data = r#"{"role":"admin","b":1}"#.into();
        keyed.version = 5;
        let mut open = keyed.clone();
        open.origin = sessiond_store::SessionOrigin::OpenRoute;
        let anonymous = session("s-2", None);
        for record in [&keyed, &open, &anonymous] {
            let before = r#"{"b":1}"#;
            let filled = events.data_changed(&record.id).render(before, record);
            let more = details([
                ("version", record.version.into()),
                (
                    "changed",
                    sessiond_store::changed_keys(before, &record.data).into(),
                ),
            ]);
            let built = events.about("session.context_changed", record, more);
            let ((filled, to), (built, want)) = (decoded(&filled), decoded(&built));
            assert_eq!(filled.event, built.event, "{record:?}");
            assert_eq!(filled.user_id, built.user_id);
            assert_eq!(to, want, "the same user stream");
        }
        assert_eq!(
            decoded(&events.data_changed("s-1").render("{}", &keyed)).1,
            Some(user_stream("ada \"/é"))
        );
    }
}
