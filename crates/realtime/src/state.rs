//! The persisted per-user state of seed C: `activeGames`, `presence`, `lastActive`, `userId`.
//!
//! Seed C kept `userId` only in instance memory (reported as `""` after hibernation) and
//! defaulted `lastActive` to "now" (a lie for a user never seen). Here the user id is part of
//! the stored record and `lastActive` is `null` until the user is first active.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sessiond_store::Millis;

/// A user's presence, validated (seed C accepted any truthy value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// At least one device connected and active.
    Online,
    /// Connected but away (set by the client).
    Away,
    /// No device connected.
    #[default]
    Offline,
}

impl Presence {
    /// Parses a client-supplied presence.
    pub fn parse(value: &str) -> Option<Presence> {
        match value {
            "online" => Some(Presence::Online),
            "away" => Some(Presence::Away),
            "offline" => Some(Presence::Offline),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }
}

/// One user's persisted state (object kind [`KIND`](crate::hub::USER_KIND)).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserState {
    /// The owner (persisted, so it is known after eviction or restart).
    pub user_id: String,
    /// Games the user is in, in join order, without duplicates.
    pub active_games: Vec<String>,
    /// Presence.
    pub presence: Presence,
    /// Last state-changing activity (unix ms); `None` before the first.
    pub last_active: Option<Millis>,
    /// Channels granted by the app through the server API, by channel name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, Grant>,
    /// When the app last revoked the user's grant of a channel (unix seconds), by channel:
    /// signed grants issued up to then are refused. Persisted, so it holds after a restart.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub grant_revocations: BTreeMap<String, i64>,
}

/// A server-side channel grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// May publish from a client.
    pub publish: bool,
    /// Expiry (unix ms); `None` = until revoked.
    pub expires_at: Option<Millis>,
}

impl Grant {
    /// Whether the grant still holds at `now`.
    pub fn is_live(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl UserState {
    /// Records a revocation of the user's grant of `channel` at `now_s`, keeping at most
    /// `max` revocations (the oldest go first: a grant outliving that many later revocations
    /// is the app's long-lived grant, not an abuse).
    pub fn record_revocation(&mut self, channel: &str, now_s: i64, max: usize) {
        self.grant_revocations.insert(channel.to_string(), now_s);
        while self.grant_revocations.len() > max.max(1) {
            let oldest = self
                .grant_revocations
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(ch, _)| ch.clone());
            match oldest {
                Some(ch) => self.grant_revocations.remove(&ch),
                None => break,
            };
        }
    }

    /// Nothing worth keeping: no games, grants or revocations (the row of an anonymous
    /// `client:` user in this state is dropped at its last disconnect).
    pub fn is_empty(&self) -> bool {
        self.active_games.is_empty() && self.grants.is_empty() && self.grant_revocations.is_empty()
    }

    /// The state of a user never seen.
    pub fn empty(user_id: &str) -> UserState {
        UserState {
            user_id: user_id.to_string(),
            ..UserState::default()
        }
    }

    /// Seed C's `initial_state` frame.
    pub fn initial_state(&self, device_id: &str) -> Value {
        json!({
            "type": "initial_state",
            "userId": self.user_id,
            "activeGames": self.active_games,
            "presence": self.presence,
            "lastActive": self.last_active,
            "deviceId": device_id,
        })
    }

    /// Seed C's `state` frame (reply to `sync_state`).
    pub fn state_frame(&self) -> Value {
        json!({
            "type": "state",
            "userId": self.user_id,
            "activeGames": self.active_games,
            "presence": self.presence,
            "lastActive": self.last_active,
        })
    }

    /// The HTTP `GET …/state` body; `isHibernating` means no socket is open.
    pub fn http_state(&self, connected_devices: usize) -> Value {
        json!({
            "userId": self.user_id,
            "activeGames": self.active_games,
            "presence": self.presence,
            "lastActive": self.last_active,
            "connectedDevices": connected_devices,
            "isHibernating": connected_devices == 0,
        })
    }
}
