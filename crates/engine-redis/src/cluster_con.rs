//! The cluster command connection, replaced when it stalls.
//!
//! Why a wrapper around the client's `ClusterConnection`: the client (redis-rs 1.8, and 2.0's
//! release candidates alike) can wedge for good after a master dies. While it refreshes its
//! slot map it takes its connection table's write lock and stops polling its in-flight
//! requests; a request that was queued for the read lock can already have been granted it
//! (tokio's lock hands permits to waiters in order) and, unpolled, never releases it, so the
//! refresh waits forever and every later request, to every master, ends in a response
//! timeout. It happens about once in thirty master deaths under concurrent pipelines
//! (`tests/cluster.rs` found it).
//!
//! The way out is the one a restart would take: a request that times out makes this handle
//! build a fresh connection from the same client (one rebuild at a time, awaited by the
//! requests that timed out, so a caller that retries after its error gets the new one) and
//! every later request uses it. The stalled connection is dropped with its last clone. A timeout also
//! happens without a wedge (a master that stops answering); a rebuild then costs one
//! `CLUSTER SLOTS` and new sockets, nothing else, since every command this engine sends
//! is routed by key and holds no connection state.

use std::sync::{Arc, RwLock};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::RedisResult;

/// A cheap-to-clone handle on the engine's current cluster connection.
#[derive(Clone)]
pub(crate) struct ClusterCon {
    shared: Arc<Shared>,
}

struct Shared {
    client: ClusterClient,
    /// The connection in use and its generation (bumped by each rebuild).
    current: RwLock<(u64, ClusterConnection)>,
    /// Held by the one rebuild under way.
    rebuilding: tokio::sync::Mutex<()>,
}

impl ClusterCon {
    /// Connects through `client` (its seeds) and checks the cluster answers.
    pub(crate) async fn connect(client: ClusterClient) -> RedisResult<ClusterCon> {
        let con = client.get_async_connection().await?;
        Ok(ClusterCon {
            shared: Arc::new(Shared {
                client,
                current: RwLock::new((0, con)),
                rebuilding: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The connection to send on now, with its generation.
    pub(crate) fn get(&self) -> (u64, ClusterConnection) {
        let current = self
            .shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// How many times the connection was rebuilt.
    pub(crate) fn generation(&self) -> u64 {
        self.get().0
    }

    /// Runs `send` on the current connection; when it times out, rebuilds the connection
    /// before returning the error (its command's fate is unknown), so that the caller's next
    /// request goes to the new one.
    pub(crate) async fn run<T, F, Fut>(&self, send: F) -> RedisResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let (generation, con) = self.get();
        let out = send(con).await;
        if let Err(e) = &out {
            if e.is_timeout() {
                self.rebuild(generation).await;
            }
        }
        out
    }

    /// Replaces generation `stalled` unless another request already did (rebuilds are one at
    /// a time: whoever waited for the lock finds the new generation and returns).
    async fn rebuild(&self, stalled: u64) {
        let _one_at_a_time = self.shared.rebuilding.lock().await;
        if self.generation() != stalled {
            return;
        }
        let fresh =
            tokio::time::timeout(REBUILD_TIMEOUT, self.shared.client.get_async_connection());
        match fresh.await {
            Ok(Ok(fresh)) => {
                *self
                    .shared
                    .current
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = (stalled + 1, fresh);
                tracing::warn!(
                    generation = stalled + 1,
                    "redis cluster: a request timed out; the cluster connection was rebuilt"
                );
                metrics::counter!("sessiond_engine_redis_reconnects_total").increment(1);
            }
            // The next timeout tries again.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis cluster: rebuilding the connection failed")
            }
            Err(_) => tracing::warn!("redis cluster: rebuilding the connection timed out"),
        }
    }
}

/// How long a rebuild may take (it connects to the seeds and reads the slot map).
const REBUILD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
