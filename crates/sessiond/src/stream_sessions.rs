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
use tokio::sync::broadcast::{self, error::RecvError};

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

/// Binds `streams`' read tokens to `sessions` (a no-op unless the switch is on).
pub fn bind(streams: &Streams, sessions: &SessionService, hub: Option<&Hub>, on: bool) {
    if !on {
        return;
    }
    let (endings, _) = broadcast::channel(1024);
    let forward = endings.clone();
    match hub {
        Some(hub) => {
            let mut from_hub = hub.subscribe_endings();
            tokio::spawn(async move {
                loop {
                    match from_hub.recv().await {
                        Ok(ended) => {
                            let _ = forward.send(ended.session_ids.into());
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "stream reads missed session endings");
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        None => {
            let mut revocations = sessions.subscribe_revocations();
            tokio::spawn(async move {
                loop {
                    match revocations.recv().await {
                        Ok(r) => {
                            let _ = forward.send(r.session_ids.into());
                        }
                        Err(RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "stream reads missed session endings");
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
    }
    streams.bind_sessions(Arc::new(BoundSessions {
        sessions: sessions.clone(),
        endings,
    }));
}
