//! Entry points for the fuzz targets in `fuzz/` (not an API): a client's WebSocket frames go
//! through the real protocol handlers on a real hub (in-memory store), and the SSE recovery
//! position through the real decoder, so the fuzzer exercises the code a hostile client
//! reaches rather than a copy of it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use sessiond_http::{ApiError, ApiKeys};
use sessiond_runtime::{JsonCodec, Runtime, RuntimeConfig};
use sessiond_store::memory::MemoryEngine;

use crate::auth::{SessionAuthority, SessionDeadlines, SessionUser};
use crate::conn::{ConnInfo, ConnReceiver, Outbound};
use crate::socket::Protocol;
use crate::{Hub, RealtimeConfig};

/// Knows no session: frames come from a service connection, as a backend's would.
struct NoSessions;

#[async_trait::async_trait]
impl SessionAuthority for NoSessions {
    async fn authenticate(&self, _token: &str) -> Result<Option<SessionUser>, ApiError> {
        Ok(None)
    }
    async fn revoke_user(&self, _user_id: &str) -> Result<usize, ApiError> {
        Ok(0)
    }
    async fn session_deadlines(&self, _id: &str) -> Result<Option<SessionDeadlines>, ApiError> {
        Ok(None)
    }
    async fn extend_session(&self, _id: &str) -> Result<Option<SessionDeadlines>, ApiError> {
        Ok(None)
    }
}

/// Which protocol a frame is fed to.
#[derive(Clone, Copy, Debug)]
pub enum Wire {
    /// Seed C's user-session protocol.
    Seed,
    /// The v1 channel protocol.
    V1,
}

/// A hub on an in-memory store, driven on its own single-threaded runtime.
pub struct Frames {
    rt: tokio::runtime::Runtime,
    hub: Hub,
    _runtime: Runtime,
}

impl Frames {
    /// A hub with the default configuration and a grant key (so `token` fields are checked).
    pub fn new() -> Frames {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let (hub, runtime) = rt.block_on(async {
            let store = Arc::new(MemoryEngine::new());
            let mut builder = Runtime::builder(store, RuntimeConfig::default());
            let users = builder.persistent_kind(crate::USER_KIND, JsonCodec);
            let runtime = builder.start();
            let config = RealtimeConfig {
                grant_keys: vec!["fuzz-grant-key-0123456789abcdef".into()],
                ..RealtimeConfig::default()
            };
            let hub = Hub::new(
                config,
                users,
                Arc::new(NoSessions),
                ApiKeys::new([""; 0]),
                vec![],
            );
            (hub, runtime)
        });
        Frames {
            rt,
            hub,
            _runtime: runtime,
        }
    }

    /// Opens one socket of user `u` (as a service would), feeds it `frames` in order (each
    /// answer drained before the next), closes it, and returns every frame it was sent.
    pub fn run(&self, wire: Wire, frames: &[&str]) -> Vec<String> {
        self.rt.block_on(async {
            let info = ConnInfo {
                user_id: "u".into(),
                device_id: "d".into(),
                session_id: None,
                service: true,
                ip: None,
                connected_at: sessiond_store::now_ms(),
                protocol: "fuzz",
                user_agent: None,
                deadlines: None,
            };
            let Ok((conn, mut rx)) = self.hub.connect(info, |_, _| None).await else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for text in frames {
                let text = Utf8Bytes::from(text.to_string());
                match wire {
                    Wire::Seed => {
                        crate::seed::SeedProtocol
                            .on_text(&self.hub, &conn, text)
                            .await
                    }
                    Wire::V1 => crate::v1::V1Protocol.on_text(&self.hub, &conn, text).await,
                }
                if !drain(&mut rx, &mut out).await {
                    break;
                }
            }
            self.hub.disconnect(&conn).await;
            out
        })
    }
}

impl Default for Frames {
    fn default() -> Self {
        Frames::new()
    }
}

/// Collects queued frames; false once the server asked to close the socket.
async fn drain(rx: &mut ConnReceiver, out: &mut Vec<String>) -> bool {
    loop {
        match tokio::time::timeout(Duration::ZERO, rx.next()).await {
            Err(_) => return true,
            Ok(Outbound::Frame(frame)) => out.push(frame.to_string()),
            Ok(Outbound::Close(..)) => return false,
        }
    }
}

/// The SSE route's `since` decoder (the client's recovery position).
pub fn sse_since(text: &str) -> Option<usize> {
    crate::sse::decode_positions(text).map(|p| p.len())
}
