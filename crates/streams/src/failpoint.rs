//! Test-only pause points, so a test can `kill -9` the real binary at an exact step of a
//! multi-write operation (fork creation) and check what a restart finds.
//!
//! Compiled in only in debug builds (`cfg(debug_assertions)`: the binary `cargo test` starts);
//! release builds contain no check at all. With the environment variable
//! `STREAMS_TEST_FAILPOINT=<name>` set, the request reaching [`hit`] with that name logs
//! `failpoint reached` (field `failpoint`) and then waits forever, holding whatever locks it
//! holds. The variable is deliberately not `SESSIOND_`-prefixed: those are configuration.

/// Pauses forever when the failpoint `name` is armed (debug builds only).
pub async fn hit(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("STREAMS_TEST_FAILPOINT").is_ok_and(|armed| armed == name) {
        tracing::warn!(failpoint = name, "failpoint reached");
        std::future::pending::<()>().await;
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
