//! The watchdog's phase rules (the socket-level behaviour is tested through a real listener
//! in `tests/hostile_clients.rs`; a stuck WebSocket handshake cannot be provoked from a
//! client, so its rule is tested here).

use super::*;
use crate::config::HttpConfig;

fn limits() -> Limits {
    let mut limits = Limits::from_config(&HttpConfig::default());
    limits.header_timeout = Duration::from_millis(100);
    limits.idle_timeout = Duration::from_millis(200);
    limits.handshake_timeout = Duration::from_millis(300);
    limits
}

fn ago(ms: u64) -> Instant {
    Instant::now()
        .checked_sub(Duration::from_millis(ms))
        .expect("the clock is past the test's offsets")
}

fn with_phase(phase: Phase) -> Arc<Activity> {
    let activity = Arc::new(Activity::new());
    activity.with(|state| *state = (phase, 0));
    activity
}

fn verdict(activity: &Activity) -> &'static str {
    match activity.verdict(&limits()) {
        Verdict::Keep => "keep",
        Verdict::CloseIdle => "close idle",
        Verdict::Abort(reason) => reason,
    }
}

#[test]
fn each_phase_has_its_own_timeout() {
    assert_eq!(verdict(&with_phase(Phase::Head(ago(50)))), "keep");
    assert_eq!(verdict(&with_phase(Phase::Head(ago(150)))), "header");
    assert_eq!(verdict(&with_phase(Phase::Idle(ago(150)))), "keep");
    assert_eq!(verdict(&with_phase(Phase::Idle(ago(250)))), "close idle");
    assert_eq!(verdict(&with_phase(Phase::Upgrading(ago(250)))), "keep");
    assert_eq!(
        verdict(&with_phase(Phase::Upgrading(ago(350)))),
        "websocket_handshake"
    );
    assert_eq!(verdict(&with_phase(Phase::Busy)), "keep");
}

#[test]
fn an_upgrade_counts_from_its_first_byte_until_the_socket_is_handed_over() {
    let activity = with_phase(Phase::Idle(ago(1000)));
    activity.on_read();
    let mut guard = activity.begin(true);
    assert!(activity.with(|(phase, _)| matches!(phase, Phase::Upgrading(_))));
    // A 101 answer leaves the connection upgrading (hyper hands the socket over next).
    guard.switching = true;
    drop(guard);
    assert!(activity.with(|(phase, _)| matches!(phase, Phase::Upgrading(_))));
    // A refused upgrade (any other answer) makes it an ordinary idle keep-alive connection.
    let activity = with_phase(Phase::Head(ago(10)));
    drop(activity.begin(true));
    assert!(activity.with(|(phase, _)| matches!(phase, Phase::Idle(_))));
    // Plain requests are busy until their response is done, then idle.
    let guard = activity.begin(false);
    assert_eq!(verdict(&activity), "keep");
    assert!(activity.with(|(phase, _)| matches!(phase, Phase::Busy)));
    drop(guard);
    assert!(activity.with(|(phase, _)| matches!(phase, Phase::Idle(_))));
}

/// Every open connection keeps this future parked for its whole life (hyper's connection
/// state inline, plus the watchdog): 1,312 B in a debug build as an `async fn`, 1,264 B as a
/// plain `fn` returning its body, 1,304 B with the stop signal kept across polls (its token
/// and waker: 40 B per connection for no lock per poll, `stop_signal.rs`). The request's
/// handling is boxed apart ([`handle`]).
#[test]
fn the_connection_future_stays_small() {
    fn future_size<A, B, C, D, E, G, F: Future>(_: fn(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    let size = future_size(connection);
    assert!(size <= 1320, "the connection future is {size} B");
}
