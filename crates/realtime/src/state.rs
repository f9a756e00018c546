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
