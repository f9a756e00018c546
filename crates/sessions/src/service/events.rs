//! Security events of the session lifecycle (see [`crate::security`]): built here, written by
//! the store in the same step as the change.

use serde_json::{Map, Value};
use sessiond_store::{SessionOrigin, SessionRecord};

use super::SessionService;
use crate::security::{details, SecurityEvents};

impl SessionService {
    /// Records security events with every session change (see [`crate::security`]).
    pub fn with_security(mut self, events: SecurityEvents) -> Self {
        self.security = Some(events);
        self
    }

    /// The security events builder, when events are recorded.
    pub fn security(&self) -> Option<&SecurityEvents> {
        self.security.as_ref()
    }

    /// The outbox event of `kind` about `record` for a store `*_with` call (`None` when
    /// security events are off), for session operations defined outside this module (e.g.
    /// `session.reauth`); call [`SessionService::events_queued`] after the write.
    pub fn security_event(
        &self,
        kind: &str,
        record: &SessionRecord,
        more: Map<String, Value>,
    ) -> Option<Vec<u8>> {
        self.event(kind, record, more)
    }

    /// Wakes the relay after a write that queued an event built by
    /// [`security_event`](Self::security_event).
    pub fn events_queued(&self) {
        self.queued();
    }

    /// Wakes the relay after a write that queued events.
    pub(super) fn queued(&self) {
        if let Some(security) = &self.security {
            security.notify();
        }
    }

    /// The event of `kind` about `record`, when events are recorded.
    pub(super) fn event(
        &self,
        kind: &str,
        record: &SessionRecord,
        more: Map<String, Value>,
    ) -> Option<Vec<u8>> {
        self.security.as_ref().map(|s| s.about(kind, record, more))
    }

    /// The new-device signal of a created session (keyed sessions of a user with a device
    /// only: an open-route session proves no identity); `None` when events are off.
    pub(super) async fn new_device_signal(
        &self,
        record: &SessionRecord,
        device: Option<&Value>,
    ) -> Option<bool> {
        let security = self.security.as_ref()?;
        match (&record.user_id, device, record.origin) {
            (Some(user), Some(device), SessionOrigin::Service) => {
                Some(security.new_device(user, device, record.created_at).await)
            }
            _ => None,
        }
    }

    /// The `session.created` event (with the signal of
    /// [`new_device_signal`](Self::new_device_signal)), when events are recorded.
    pub(super) fn created_event(
        &self,
        record: &SessionRecord,
        device: Option<&Value>,
        new_device: Option<bool>,
    ) -> Option<Vec<u8>> {
        let security = self.security.as_ref()?;
        let mut more = details([("origin", record.origin.as_str().into())]);
        if let Some(device) = device {
            more.insert("device".into(), security.device_view(device));
        }
        if let Some(new_device) = new_device {
            more.insert("new_device".into(), new_device.into());
        }
        Some(security.about("session.created", record, more))
    }
}
