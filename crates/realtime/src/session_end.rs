//! What the hub is told when sessions end: the reason and the sessions, with the texts each
//! protocol closes with.
//!
//! Below the hub: the hub's state (its broadcast of endings), the bus (which carries an
//! ending to the other nodes) and `ending` (which closes the sockets) all need these, and
//! none of them may import another for it.

/// The reason of every logout close frame (seed C's hook matches on it).
pub const LOGOUT_REASON: &str = "Logged out from all devices";

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Revoked one by one, or all but one.
    Revoked,
    /// Every session of the user revoked: log out everywhere.
    LoggedOut,
    /// Evicted to make room under the per-user session cap.
    Evicted,
    /// The idle deadline passed.
    ExpiredIdle,
    /// The absolute deadline passed.
    ExpiredAbsolute,
    /// The user was erased (`DELETE /v1/users/{u}`): every session and socket of the user.
    Erased,
    /// Not an ending: the session continues under a new id. What the old id opened closes
    /// with [`ROTATED_CLOSE`] (reconnect with the current credential), without a
    /// `session_ended` frame.
    Rotated,
}

/// The close of sockets opened with a session id that was rotated away, on every protocol.
pub const ROTATED_CLOSE: (u16, &str) = (4004, "Session rotated");

impl EndReason {
    /// The `reason` of the v1 `session_ended` frame: every revoke is `revoked` (log out
    /// everywhere is told apart by its close reason).
    pub fn frame_reason(self) -> &'static str {
        match self {
            EndReason::LoggedOut => "revoked",
            other => other.wire(),
        }
    }

    /// The name that tells reasons apart (bus signals between nodes, metrics labels).
    pub fn wire(self) -> &'static str {
        match self {
            EndReason::Revoked => "revoked",
            EndReason::LoggedOut => "logged_out",
            EndReason::Evicted => "evicted",
            EndReason::ExpiredIdle => "expired_idle",
            EndReason::ExpiredAbsolute => "expired_absolute",
            EndReason::Erased => "erased",
            EndReason::Rotated => "rotated",
        }
    }

    /// The close frame's reason text on v1 and SSE connections (seed C's sockets always get
    /// [`LOGOUT_REASON`], which its React hook compares).
    pub fn close_reason(self) -> &'static str {
        match self {
            EndReason::Revoked => "Session revoked",
            EndReason::LoggedOut => LOGOUT_REASON,
            EndReason::Evicted => "Session evicted",
            EndReason::ExpiredIdle => "Session expired (idle)",
            EndReason::ExpiredAbsolute => "Session expired (absolute)",
            EndReason::Erased => "User erased",
            EndReason::Rotated => ROTATED_CLOSE.1,
        }
    }
}

/// Sessions of one user that ended (or whose ids were rotated away).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEnded {
    /// Whose sessions.
    pub user_id: String,
    /// The ended session ids.
    pub session_ids: Vec<String>,
    /// Every session of the user ended (log out everywhere): close every socket of the user,
    /// whatever authenticated it.
    pub all: bool,
    /// Why.
    pub reason: EndReason,
}
