//! A channel as a mirror of its cluster-wide log (hub on a shared engine, see `crate::bus`).
//!
//! On several nodes the offsets and epoch come from the engine's bus, and each node keeps
//! its resident channels as a contiguous copy of the log's tail: loaded once from the bus's
//! history when the channel becomes resident, then extended by every delivered message in
//! offset order. Subscribe and recovery then run exactly as on one node, under the channel's
//! lock, from the local copy — so a message is still either replayed or delivered live,
//! never both and never neither. A message that does not extend the copy (a gap after a
//! lost delivery, or a new epoch) is refused, and the caller drops the mirror.

use axum::extract::ws::Utf8Bytes;
use serde_json::{json, Value};
use sessiond_store::realtime::BusMessage;
use sessiond_store::Millis;

use super::{frame, lock, Channel, Channels, Entry, Retention};

/// A `message` frame.
pub(super) fn message_frame(
    channel: &str,
    offset: u64,
    data: &Value,
    from: Option<&str>,
    ts: Millis,
) -> Utf8Bytes {
    frame(&json!({
        "type": "message", "channel": channel, "offset": offset, "data": data,
        "from": from, "ts": ts,
    }))
}

/// Rebuilds the `message` frame of a bus message (payload `{"data":…,"from":…}`).
pub(crate) fn bus_frame(message: &BusMessage) -> Utf8Bytes {
    let payload: Value = serde_json::from_str(&message.payload).unwrap_or(Value::Null);
    message_frame(
        &message.channel,
        message.offset,
        &payload["data"],
        payload["from"].as_str(),
        message.ts,
    )
}

/// What [`Channel::apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Appended and delivered to this many sockets.
    Delivered(usize),
    /// Already in the copy (delivered before).
    Duplicate,
    /// Does not extend the copy: the mirror is stale.
    Gap,
}

impl Channel {
    /// Replaces the copy with the log's state: `epoch`, latest offset `top`, and the kept
    /// messages (older ones than `top` first).
    pub fn load(&self, epoch: &str, top: u64, messages: &[BusMessage], retention: &Retention) {
        let mut st = lock(&self.state);
        st.epoch = epoch.to_string();
        while !st.history.is_empty() {
            st.pop_oldest(&self.usage);
        }
        st.last_offset = top;
        for m in messages
            .iter()
            .filter(|m| m.epoch == epoch && m.offset <= top)
        {
            let entry = Entry {
                offset: m.offset,
                ts: m.ts,
                frame: bus_frame(m),
            };
            st.keep(entry, &self.usage);
        }
        st.trim(retention, sessiond_store::now_ms(), &self.usage);
    }

    /// Extends the copy with the next message of the log and delivers it.
    pub fn apply(&self, message: &BusMessage, retention: &Retention) -> Applied {
        let mut st = lock(&self.state);
        if message.epoch != st.epoch {
            if message.offset != 1 {
                return Applied::Gap;
            }
            // The log was forgotten and restarts with this message: nothing was missed, the
            // copy restarts with it.
            st.epoch = message.epoch.clone();
            while !st.history.is_empty() {
                st.pop_oldest(&self.usage);
            }
            st.last_offset = 0;
        }
        if message.offset <= st.last_offset {
            return Applied::Duplicate;
        }
        if message.offset != st.last_offset + 1 {
            return Applied::Gap;
        }
        let entry = Entry {
            offset: message.offset,
            ts: message.ts,
            frame: bus_frame(message),
        };
        Applied::Delivered(st.append(entry, retention, &self.usage))
    }

    /// The latest offset in the copy.
    pub fn last_offset(&self) -> u64 {
        lock(&self.state).last_offset
    }

    /// How many sockets are subscribed here.
    pub fn subscriber_count(&self) -> usize {
        lock(&self.state).subscribers.len()
    }
}

impl Channels {
    /// [`Channel::apply`] within the process-wide history budget.
    pub fn apply(&self, channel: &Channel, message: &BusMessage) -> Applied {
        let applied = channel.apply(message, &self.retention);
        if self.history_bytes() > self.usage.limits.history_bytes {
            self.shed_history();
        }
        applied
    }
}
