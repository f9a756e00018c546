//! `ErasureStore` on the memory engine's maps.

use async_trait::async_trait;

use super::MemoryEngine;
use crate::erasures::ErasureStore;
use crate::{Millis, Result};

#[async_trait]
impl ErasureStore for MemoryEngine {
    async fn record_erasure(&self, user_hash: &str, at: Millis) -> Result<()> {
        self.with(|s| {
            s.erasures.entry(user_hash.to_string()).or_insert(at);
        })
    }

    async fn erasures(&self) -> Result<Vec<(String, Millis)>> {
        let mut list: Vec<(String, Millis)> = self.with(|s| {
            s.erasures
                .iter()
                .map(|(hash, at)| (hash.clone(), *at))
                .collect()
        })?;
        list.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(list)
    }
}
