//! The server's "start draining" signal as live reads check it.
//!
//! An SSE reader checks it every time it is woken, so with 1,000 subscribers every append
//! checks it 1,000 times. `CancellationToken::is_cancelled` takes the token's mutex, one
//! mutex for the whole server, from every worker thread: measured at 3.4 % of the server's
//! CPU in the SSE fan-out benchmark (perf, 2026-12-07). The check here is an atomic load of a
//! flag set once, when the token is cancelled, before the readers are woken to see it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The drain token with a lock-free "has it been cancelled" flag.
#[derive(Clone, Default)]
pub(crate) struct Draining {
    token: CancellationToken,
    seen: Arc<AtomicBool>,
}

impl Draining {
    /// Follows `token`; [`Draining::mark`] must run once it is cancelled.
    pub(crate) fn new(token: CancellationToken) -> Draining {
        Draining {
            token,
            seen: Arc::default(),
        }
    }

    /// Resolves when draining starts (for waits that do not loop on the flag).
    pub(crate) fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Waits for the token, then sets the flag; readers woken after this returns see it.
    pub(crate) async fn mark(&self) {
        self.token.cancelled().await;
        self.seen.store(true, Ordering::Release);
    }

    /// Whether draining has started (as of the last [`Draining::mark`]).
    pub(crate) fn is_draining(&self) -> bool {
        self.seen.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_flag_follows_the_token_once_marked() {
        let token = CancellationToken::new();
        let draining = Draining::new(token.clone());
        assert!(!draining.is_draining());
        let marked = tokio::spawn({
            let draining = draining.clone();
            async move { draining.mark().await }
        });
        token.cancel();
        assert!(marked.await.is_ok());
        assert!(draining.is_draining());
        draining.cancelled().await;
    }
}
