//! Opens the configured storage engine: the one place that names engine crates.

use std::sync::Arc;

use sessiond_engine_redis::{RedisEngine, RedisOptions};
pub use sessiond_engine_sqlite::backup::Snapshot as SqliteSnapshot;
use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_store::memory::MemoryEngine;
use sessiond_store::Stores;

use crate::config::{Config, EngineKind};

/// Opens the engine `config.engine` names and returns its trait handles.
pub async fn open(config: &Config) -> anyhow::Result<Stores> {
    match config.engine {
        EngineKind::Sqlite => {
            let dir = config.data_dir.clone();
            let options = SqliteOptions {
                max_batch: config.sqlite.max_batch,
                readers: config.sqlite.readers,
                max_queued_writes: config.sqlite.max_queued_writes,
                stream_tails: config.sqlite.stream_tails,
            };
            let engine = tokio::task::spawn_blocking(move || SqliteEngine::open(&dir, options))
                .await?
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open SQLite engine in {}: {e}",
                        config.data_dir.display()
                    )
                })?;
            // Its only notifications: appends of routed events (`security/route.rs`).
            Ok(Stores::from_engine(engine.clone())
                .with_streams(engine.clone())
                .with_stream_wakes(engine))
        }
        EngineKind::Redis => {
            let options = RedisOptions {
                key_prefix: config.redis.key_prefix.clone(),
                session_expiry_grace_ms: config.redis.session_expiry_grace_s.saturating_mul(1000),
            };
            let engine = if config.redis.cluster {
                let seeds = config.redis.seeds();
                RedisEngine::connect_cluster(&seeds, options)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "cannot connect to the Redis Cluster at {}: {e}",
                            seeds.join(", ")
                        )
                    })?
            } else {
                RedisEngine::connect(&config.redis.url, options)
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("cannot connect to Redis at {}: {e}", config.redis.url)
                    })?
            };
            let bus = engine.shared_realtime_bus()?;
            Ok(Stores::from_engine(engine.clone())
                .with_streams(engine.clone())
                .with_stream_wakes(engine.clone())
                .with_seal_lease(engine.clone())
                .with_presence(engine)
                .with_realtime(bus))
        }
        EngineKind::Memory => {
            let engine = Arc::new(MemoryEngine::new());
            Ok(Stores::from_engine(engine.clone()).with_streams(engine))
        }
    }
}

/// Copies the SQLite database of `data_dir` to `dest` as of one moment, while a server may be
/// writing it (`sessiond backup`); see `sessiond_engine_sqlite::backup`.
pub fn sqlite_snapshot(
    data_dir: &std::path::Path,
    dest: &std::path::Path,
) -> anyhow::Result<SqliteSnapshot> {
    sessiond_engine_sqlite::backup::snapshot(data_dir, dest).map_err(|e| {
        anyhow::anyhow!(
            "cannot snapshot the database in {}: {e}",
            data_dir.display()
        )
    })
}

pub use sessiond_engine_sqlite::erasures::Reapplied;

/// Applies the erasure list `entries` to the SQLite database file `db` (`sessiond restore`);
/// see `sessiond_engine_sqlite::erasures`.
pub fn reapply_erasures(
    db: &std::path::Path,
    entries: &[(String, sessiond_store::Millis)],
) -> anyhow::Result<Reapplied> {
    sessiond_engine_sqlite::erasures::reapply(db, entries)
        .map_err(|e| anyhow::anyhow!("cannot re-apply the erasure list to {}: {e}", db.display()))
}
