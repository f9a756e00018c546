//! The server's background tasks under its one shutdown signal.
//!
//! Why a supervisor: a sweeper, relay or compactor that dies leaves the server answering
//! requests while expired sessions pile up or events stop flowing, with nothing but a lost
//! `JoinHandle` to tell. So every background task of the server is started here, by name, on
//! one [`TaskTracker`] and observes one [`CancellationToken`] (the same token stops the
//! listener), the object runtime's alarm scheduler and eviction sweep included. A task that panics or returns an error is logged at
//! ERROR with its name and cancels that token: the server then shuts down in its usual order
//! and [`crate::Server::serve`] returns the failure, so the binary exits non-zero and the
//! orchestrator restarts it. A task that returns `Ok` has simply finished (nothing to do).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinError;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

type Run = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A named background task, not started yet.
pub struct Task {
    name: &'static str,
    run: Run,
}

impl Task {
    /// The task `name` running `future` (which returns `()` or `Result<(), E>`).
    pub fn new<F>(name: &'static str, future: F) -> Task
    where
        F: Future + Send + 'static,
        F::Output: Outcome,
    {
        Task {
            name,
            run: Box::pin(async move { future.await.into_result() }),
        }
    }

    /// The task's name (in logs and in a failure).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// What a task's future may return: `()` always succeeds, a `Result` fails with its error.
pub trait Outcome {
    /// The outcome as a result with the error's text.
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A background task that panicked or returned an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// The task's name.
    pub task: &'static str,
    /// True when it panicked (else it returned an error).
    pub panicked: bool,
    /// The panic message or the error.
    pub reason: String,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.panicked { "panicked" } else { "failed" };
        write!(f, "background task `{}` {how}: {}", self.task, self.reason)
    }
}

impl std::error::Error for TaskFailure {}

/// Starts tasks, stops them on one token, and remembers the first that failed.
#[derive(Clone, Default)]
pub struct Supervisor {
    stop: CancellationToken,
    tracker: TaskTracker,
    failure: Arc<Mutex<Option<TaskFailure>>>,
}

impl Supervisor {
    /// A supervisor with a fresh shutdown token.
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// The shutdown token: cancelled on the shutdown signal or when a task fails.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves once the server stops (the future every background task is handed).
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Starts `task`; its panic or error stops the server.
    pub fn spawn(&self, task: Task) {
        let Task { name, run } = task;
        let handle = self.tracker.spawn(run);
        let this = self.clone();
        self.tracker.spawn(async move {
            match handle.await {
                Ok(Ok(())) => tracing::debug!(task = name, "background task finished"),
                Ok(Err(reason)) => this.failed(TaskFailure {
                    task: name,
                    panicked: false,
                    reason,
                }),
                Err(e) => this.failed(TaskFailure {
                    task: name,
                    panicked: e.is_panic(),
                    reason: panic_text(e),
                }),
            }
        });
    }

    /// Cancels the token when `signal` resolves (the process's SIGTERM/SIGINT).
    pub fn stop_on(&self, signal: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = signal => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }

    /// Waits until every task started here has ended (call after cancelling the token).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// The first task that failed, if one did.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failed(&self, failure: TaskFailure) {
        tracing::error!(
            task = failure.task,
            panicked = failure.panicked,
            reason = %failure.reason,
            "background task failed; stopping the server"
        );
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(failure);
        self.stop.cancel();
    }
}

/// The message of a panic (or why the task ended otherwise).
fn panic_text(e: JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    match (
        payload.downcast_ref::<&'static str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(text), _) => (*text).to_string(),
        (None, Some(text)) => text.clone(),
        (None, None) => "panic with a non-text payload".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn stopped_within(supervisor: &Supervisor) {
        tokio::time::timeout(Duration::from_secs(5), supervisor.stopped())
            .await
            .expect("the failure did not cancel the shutdown token");
    }

    #[tokio::test]
    async fn a_panicking_task_cancels_the_token_and_is_reported_by_name() {
        let supervisor = Supervisor::new();
        let stopped = supervisor.stopped();
        supervisor.spawn(Task::new("quiet", stopped));
        supervisor.spawn(Task::new("exploding", async {
            if true {
                panic!("the store went away");
            }
        }));
        stopped_within(&supervisor).await;
        supervisor.wait().await;
        assert_eq!(
            supervisor.failure(),
            Some(TaskFailure {
                task: "exploding",
                panicked: true,
                reason: "the store went away".to_string(),
            })
        );
    }

    #[tokio::test]
    async fn a_task_returning_an_error_cancels_the_token() {
        let supervisor = Supervisor::new();
        supervisor.spawn(Task::new("relay", async {
            Err::<(), _>("outbox unreadable")
        }));
        stopped_within(&supervisor).await;
        supervisor.wait().await;
        let failure = supervisor.failure().expect("no failure recorded");
        assert_eq!(
            failure.to_string(),
            "background task `relay` failed: outbox unreadable"
        );
    }

    #[tokio::test]
    async fn finished_tasks_and_the_signal_stop_nothing_else() {
        let supervisor = Supervisor::new();
        supervisor.spawn(Task::new("done", async {}));
        supervisor.spawn(Task::new("ok", async { Ok::<(), String>(()) }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        supervisor.stop_on(async move {
            let _ = rx.await;
        });
        // Both tasks (and their watchers) end; the token stays until the signal.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while supervisor.tracker.len() > 1 {
            assert!(tokio::time::Instant::now() < deadline, "tasks did not end");
            tokio::task::yield_now().await;
        }
        assert!(!supervisor.token().is_cancelled());
        tx.send(()).expect("signal task gone");
        stopped_within(&supervisor).await;
        supervisor.wait().await;
        assert_eq!(supervisor.failure(), None);
    }
}
