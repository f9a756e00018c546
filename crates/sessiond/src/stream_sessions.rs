//! Wires Durable Streams read tokens to account sessions when
//! `streams.read_tokens_bound_to_sessions` is on: the streams capability asks the sessions
//! capability whether a token's session lives, and hears of endings from the same
//! announcements that close sockets — the realtime hub's, which carry other nodes' endings
//! too; without a hub, the sessions capability's own (this node's) revocations.

use std::sync::Arc;

use sessiond_realtime::Hub;
use sessiond_sessions::SessionService;
use sessiond_store::Millis;
use sessiond_streams::bound::SessionBinding;
use sessiond_streams::Streams;
use tokio::sync::broadcast;

use crate::realtime::forward_endings;
use crate::supervisor::{Supervisor, Task};

struct BoundSessions {
    sessions: SessionService,
    endings: broadcast::Sender<Arc<[String]>>,
}

#[async_trait::async_trait]
impl SessionBinding for BoundSessions {
    async fn live_until(&self, id: &str) -> Result<Option<Millis>, sessiond_http::ApiError> {
        match self.sessions.peek(id).await {
            Ok(record) => Ok(record.map(|r| r.expires_at())),
            // An id no session could have (too long): not live.
            Err(e) if e.status.is_client_error() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn endings(&self) -> broadcast::Receiver<Arc<[String]>> {
        self.endings.subscribe()
    }
}

/// Binds `streams`' read tokens to `sessions` (nothing unless the switch is on); the task
/// forwards session endings to the stream reads.
pub fn bind(
    streams: &Streams,
    sessions: &SessionService,
    hub: Option<&Hub>,
    on: bool,
    supervisor: &Supervisor,
) -> Option<Task> {
    if !on {
        return None;
    }
    let (endings, _) = broadcast::channel(1024);
    let forward = endings.clone();
    let send = move |ids: Vec<String>| {
        // No stream read listening is nothing to tell.
        let _ = forward.send(ids.into());
    };
    let lagged = "stream reads missed session endings";
    let task = match hub {
        Some(hub) => Task::new(
            "stream-read-session-endings",
            forward_endings(
                hub.subscribe_endings(),
                supervisor.stopped(),
                lagged,
                move |ended| send(ended.session_ids),
            ),
        ),
        None => Task::new(
            "stream-read-session-endings",
            forward_endings(
                sessions.subscribe_revocations(),
                supervisor.stopped(),
                lagged,
                move |revoked| send(revoked.session_ids),
            ),
        ),
    };
    streams.bind_sessions(Arc::new(BoundSessions {
        sessions: sessions.clone(),
        endings,
    }));
    Some(task)
}
