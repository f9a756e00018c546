//! Settings of the realtime capability: where it listens, who may connect, and every limit.
//!
//! Each size, count and rate a client controls has a limit here, because a WebSocket hub that
//! trusts its clients is one misbehaving tab away from unbounded memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sessiond_http::ConfigError;

/// Realtime hub settings (`[realtime]` in the server's config).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Serve the realtime routes at all.
    pub enabled: bool,
    /// Path of seed C's user-session endpoint (WebSocket upgrade; `/state`, `/clear`,
    /// `/notify` below it).
    pub seed_path: String,
    /// The old name of `sessions.cookies` (one list shared with the edge check), still read;
    /// the server refuses a configuration that sets both differently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_cookies: Option<Vec<String>>,
    /// Cookie names whose value is accepted as a session token for WebSocket upgrades
    /// (browsers cannot set an `Authorization` header on a WebSocket): `sessions.cookies`,
    /// copied in by the server (not a `[realtime]` key).
    #[serde(skip)]
    pub cookies: Vec<String>,
    /// Accept the session middleware's signed cookie (when the middleware is enabled) from a
    /// socket that presents no session token: the socket belongs to the anonymous user
    /// `client:<cID>` (docs/realtime.md §0).
    pub middleware_clients: bool,
    /// Page origins (besides the server's own) whose sockets may authenticate with a cookie
    /// (session or middleware cookie); any other `Origin` is a 403 before the upgrade
    /// (cross-site WebSocket hijacking). Token and key sockets are not affected.
    pub allowed_origins: Vec<String>,
    /// Close code sent to every socket of a user on `logout_all` or when their sessions are
    /// revoked (the reason is always `Logged out from all devices`).
    pub logout_close_code: u16,
    /// `session_expiring` lead time (seconds; 0 = off): the sessions capability's
    /// `sessions.expiry_warning_s`, copied in by the server (not a `[realtime]` key).
    #[serde(skip)]
    pub session_expiry_warning_s: u64,
    /// Largest inbound message (bytes); a larger one closes the socket with 1009.
    pub max_message_bytes: usize,
    /// Sustained inbound messages per second per socket (the burst allowance is the same
    /// number); above it the socket is closed with 1008.
    pub max_messages_per_s: u32,
    /// Most open sockets (and SSE connections) per user; past it a WebSocket is accepted and
    /// closed at once with 1013 `Too many connections for this user`, an SSE request gets 429.
    #[serde(alias = "max_connections_per_user")]
    pub max_sockets_per_user: usize,
    /// Most open sockets (and SSE connections) of this process; past it as above, 1013
    /// `Too many connections`.
    pub max_connections: usize,
    /// Most entries of a user's `activeGames`.
    pub max_active_games: usize,
    /// Longest game id, device id or user id (bytes).
    pub max_id_bytes: usize,
    /// Most entries one page of the node listings (`GET /v1/realtime/connections`,
    /// `GET /v1/realtime/channels`) returns; `limit` above it is lowered to it.
    pub max_list_page: usize,
    /// Outbound messages queued per socket; a socket that falls further behind is closed
    /// (1013) instead of buffering without bound. Presence diffs stop at half of it: a
    /// lagging socket gets a fresh `presence_state` once drained instead (never a close).
    pub outbound_queue: usize,
    /// Server WebSocket ping interval (seconds).
    pub ping_interval_s: u64,
    /// A socket that sent nothing (not even a pong) for this long is closed (seconds).
    pub liveness_timeout_s: u64,
    /// Read buffer of each socket (bytes); the largest single per-connection memory cost
    /// (release build, 10,000 idle v1 sockets: 1 KiB → 5.4 KiB RSS per socket, 2 KiB → 6.4
    /// KiB). Larger messages are still accepted, read this many bytes per read call.
    pub read_buffer_bytes: usize,
    /// Write buffer of each socket (bytes): frames already queued for a socket are written
    /// together up to this size, one syscall per batch (0 = one write per frame). Grows only
    /// on sockets that had a backlog; idle sockets do not pay it.
    pub write_buffer_bytes: usize,
    /// In-memory per-user state is dropped after this long unused (seconds); it is reloaded
    /// from the engine on the next use. Open sockets do not pin it.
    pub idle_evict_s: u64,
    /// Channels one v1 socket may be subscribed to at once.
    pub max_subscriptions_per_socket: usize,
    /// Server-side channel grants one user may hold.
    pub max_grants_per_user: usize,
    /// Recovery: always keep at least this many newest messages per channel.
    pub recovery_messages: usize,
    /// Recovery: also keep every message younger than this (seconds).
    pub recovery_window_s: u64,
    /// Recovery: never keep more than this many messages per channel.
    pub recovery_max_messages: usize,
    /// Recovery: never keep more than this many bytes of one channel's history (oldest
    /// dropped first; a client that missed a dropped message gets `recovered: false`).
    pub recovery_max_bytes: usize,
    /// All channels' histories together: past this many bytes the oldest messages of the
    /// process are dropped first (down to 90% of it).
    pub history_max_bytes: usize,
    /// Presence metas of one channel (bytes, server fields included); a subscribe or
    /// `presence_update` past it is refused with `limit_reached`.
    pub presence_max_bytes_per_channel: usize,
    /// Presence metas of all channels together (bytes); past it as above.
    pub presence_max_bytes: usize,
    /// Presence lease on a shared engine (seconds): each node renews its sockets' presence
    /// every third of it, and the sockets of a node that died vanish from presence (users,
    /// channel metas, counts, limits) at most this long after its last renewal; their
    /// `user.offline` follows within another third plus `events.debounce_ms`. Unused on one
    /// node.
    pub presence_ttl_s: u64,
    /// Keys of signed channel grants (HMAC-SHA256). The first signs grants the server mints;
    /// any verifies. Empty = signed grants are refused (server-side grants still work).
    pub grant_keys: Vec<String>,
    /// User online/offline events.
    pub events: EventsConfig,
}

/// User online/offline events: debounce, webhook, system stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// A user's online/offline change is emitted only if it still holds after this long
    /// (milliseconds).
    pub debounce_ms: u64,
    /// Webhook receiving each event (empty = none).
    pub webhook_url: String,
    /// HMAC-SHA256 keys signing the webhook body (one `v1=` signature per key).
    pub webhook_keys: Vec<String>,
    /// Deliveries tried per event before it is dropped.
    pub webhook_max_attempts: u32,
    /// Timeout of one delivery (milliseconds).
    pub webhook_timeout_ms: u64,
    /// Base of the retry backoff (milliseconds; attempt n waits base·2ⁿ).
    pub webhook_backoff_ms: u64,
    /// Most bytes of the receiver's answer that are read (the rest is dropped unread).
    pub webhook_max_response_bytes: usize,
    /// Networks (CIDRs, e.g. `10.1.0.0/16`, `127.0.0.0/8`) the webhook may reach although
    /// they are not public (private, loopback, link-local). Empty: public addresses only.
    pub webhook_allowed_networks: Vec<String>,
    /// Accept a plain `http://` webhook URL (only to an allow-listed address).
    pub webhook_allow_http: bool,
    /// Durable Stream each event is appended to (empty = none).
    pub stream: String,
}

impl EventsConfig {
    /// Where the webhook may go (`sessiond_http::webhook`).
    pub fn webhook_policy(&self) -> Result<sessiond_http::webhook::WebhookPolicy, ConfigError> {
        sessiond_http::webhook::WebhookPolicy::new(
            self.webhook_allow_http,
            &self.webhook_allowed_networks,
        )
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            debounce_ms: 3000,
            webhook_url: String::new(),
            webhook_keys: Vec::new(),
            webhook_max_attempts: 6,
            webhook_timeout_ms: 5000,
            webhook_backoff_ms: 1000,
            webhook_max_response_bytes: 64 * 1024,
            webhook_allowed_networks: Vec::new(),
            webhook_allow_http: false,
            stream: "__system/realtime/presence".into(),
        }
    }
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            enabled: true,
            seed_path: "/__user-session".into(),
            session_cookies: None,
            cookies: vec!["sessiond_session".into()],
            middleware_clients: true,
            allowed_origins: Vec::new(),
            logout_close_code: 4001,
            session_expiry_warning_s: 0,
            max_message_bytes: 16 * 1024,
            max_messages_per_s: 20,
            max_sockets_per_user: 16,
            max_connections: 100_000,
            max_active_games: 100,
            max_id_bytes: 256,
            max_list_page: 1000,
            outbound_queue: 256,
            ping_interval_s: 25,
            liveness_timeout_s: 60,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 8192,
            idle_evict_s: 300,
            max_subscriptions_per_socket: 100,
            max_grants_per_user: 1000,
            recovery_messages: 300,
            recovery_window_s: 120,
            recovery_max_messages: 10_000,
            recovery_max_bytes: 1024 * 1024,
            history_max_bytes: 256 * 1024 * 1024,
            presence_max_bytes_per_channel: 1024 * 1024,
            presence_max_bytes: 64 * 1024 * 1024,
            presence_ttl_s: 30,
            grant_keys: Vec::new(),
            events: EventsConfig::default(),
        }
    }
}

impl RealtimeConfig {
    /// Cross-field checks; the message names the key to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.seed_path.starts_with('/')
            || self.seed_path.len() < 2
            || self.seed_path.ends_with('/')
        {
            return Err(
                "realtime.seed_path must start with `/`, not end with `/`, and not be `/`".into(),
            );
        }
        if !(4000..=4999).contains(&self.logout_close_code) {
            return Err("realtime.logout_close_code must be within 4000..=4999".into());
        }
        let positive = [
            ("max_message_bytes", self.max_message_bytes),
            ("max_messages_per_s", self.max_messages_per_s as usize),
            ("max_sockets_per_user", self.max_sockets_per_user),
            ("max_connections", self.max_connections),
            ("max_active_games", self.max_active_games),
            ("max_id_bytes", self.max_id_bytes),
            ("max_list_page", self.max_list_page),
            ("outbound_queue", self.outbound_queue),
            ("ping_interval_s", self.ping_interval_s as usize),
            ("liveness_timeout_s", self.liveness_timeout_s as usize),
            ("read_buffer_bytes", self.read_buffer_bytes),
            ("idle_evict_s", self.idle_evict_s as usize),
            (
                "max_subscriptions_per_socket",
                self.max_subscriptions_per_socket,
            ),
            ("recovery_max_messages", self.recovery_max_messages),
            ("recovery_max_bytes", self.recovery_max_bytes),
            ("history_max_bytes", self.history_max_bytes),
            (
                "presence_max_bytes_per_channel",
                self.presence_max_bytes_per_channel,
            ),
            ("presence_max_bytes", self.presence_max_bytes),
            ("presence_ttl_s", self.presence_ttl_s as usize),
            (
                "events.webhook_max_attempts",
                self.events.webhook_max_attempts as usize,
            ),
            (
                "events.webhook_timeout_ms",
                self.events.webhook_timeout_ms as usize,
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("realtime.{name} must be > 0").into());
        }
        if self.recovery_messages > self.recovery_max_messages {
            return Err("realtime.recovery_messages must not exceed recovery_max_messages".into());
        }
        let policy = self
            .events
            .webhook_policy()
            .map_err(|e| e.context("realtime.events.webhook_allowed_networks"))?;
        if !self.events.webhook_url.is_empty() {
            policy
                .validate(&self.events.webhook_url)
                .map_err(|e| ConfigError::new(format!("realtime.events.webhook_url: {e}")))?;
        }
        if !self.events.webhook_url.is_empty()
            && self.events.webhook_keys.iter().all(String::is_empty)
        {
            return Err("realtime.events.webhook_keys needs a key to sign webhook bodies".into());
        }
        if self.liveness_timeout_s <= self.ping_interval_s {
            return Err(
                "realtime.liveness_timeout_s must be above realtime.ping_interval_s".into(),
            );
        }
        Ok(())
    }

    /// Ping interval as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_s)
    }

    /// Channel history retention.
    pub fn retention(&self) -> crate::channels::Retention {
        crate::channels::Retention {
            messages: self.recovery_messages,
            window: Duration::from_secs(self.recovery_window_s),
            max_messages: self.recovery_max_messages,
            max_bytes: self.recovery_max_bytes,
        }
    }

    /// The byte budgets of all channels together.
    pub fn budgets(&self) -> crate::channels::Budgets {
        crate::channels::Budgets {
            history_bytes: self.history_max_bytes,
            presence_bytes_per_channel: self.presence_max_bytes_per_channel,
            presence_bytes: self.presence_max_bytes,
        }
    }

    /// Liveness timeout as a duration.
    pub fn liveness_timeout(&self) -> Duration {
        Duration::from_secs(self.liveness_timeout_s)
    }
}
