//! [`ErasureStore`] on Redis: one sorted set, scored by erasure time. Small (one member per
//! erased user) and read only by administrative paths, so one key without a hash tag is
//! enough; `ZADD NX` keeps the first time.

use async_trait::async_trait;
use sessiond_store::{ErasureStore, Millis, Result};

use crate::RedisEngine;

#[async_trait]
impl ErasureStore for RedisEngine {
    async fn record_erasure(&self, user_hash: &str, at: Millis) -> Result<()> {
        let cmd = redis::cmd("ZADD")
            .arg(self.keys.erasures())
            .arg("NX")
            .arg(at)
            .arg(user_hash)
            .clone();
        self.query::<i64>("erasure_record", &cmd).await?;
        Ok(())
    }

    async fn erasures(&self) -> Result<Vec<(String, Millis)>> {
        let cmd = redis::cmd("ZRANGE")
            .arg(self.keys.erasures())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .clone();
        let list: Vec<(String, f64)> = self.query("erasure_list", &cmd).await?;
        Ok(list
            .into_iter()
            .map(|(hash, at)| (hash, at as Millis))
            .collect())
    }
}
