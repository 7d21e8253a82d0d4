//! The owner of everything that runs in the background: the listener's connection and stream tasks,
//! retention, group session expiry and delayed delivery. One cancellation token starts the one
//! shutdown path, and one task tracker tells when everything has stopped, so a graceful shutdown
//! waits for all of them in the same way before storage is flushed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Background tasks with one shutdown path. Clones share the token and the tracker.
#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Cancelled when shutdown starts.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Runs a task the shutdown waits for (it should end soon after the token is cancelled).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Runs `job` on the blocking pool every `period` until shutdown (a job in progress finishes).
    pub fn every<F>(&self, name: &'static str, period: Duration, job: F)
    where
        F: Fn() + Send + Sync + 'static,
    {
        let (token, job) = (self.token.clone(), Arc::new(job));
        self.tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(period) => {}
                }
                let job = job.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || job()).await {
                    tracing::error!(task = name, error = %e, "background task failed");
                }
            }
        });
    }

    /// Calls `stop` (on the blocking pool, it may join a thread) when shutdown starts; the
    /// shutdown waits for it. For work on threads of its own, like delayed delivery.
    pub fn on_shutdown<F>(&self, stop: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            token.cancelled().await;
            let _ = tokio::task::spawn_blocking(stop).await;
        });
    }

    /// Starts the shutdown and waits up to `grace` for every task to end; false if some did not.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}
