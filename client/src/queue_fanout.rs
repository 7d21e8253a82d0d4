//! A queue consumer's polls on a cluster: each node leases the partitions it leads, so a poll
//! asks every node leading a partition of the topic at once and returns what the answers that
//! came first bring. Polls still waiting go on; their records come out of the next poll.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use futures_util::future::BoxFuture;

use crate::error::ClientError;
use crate::routes::Routes;

/// How long past its own wait a node's poll is given before the poll returns without it.
const ANSWER_GRACE: Duration = Duration::from_secs(2);
/// How often the partition leaders are asked again. A node that lost a partition but lives
/// answers polls without error (it serves its other partitions, or none): only fresh
/// metadata shows where the partition went.
const METADATA_EVERY: Duration = Duration::from_secs(5);

type Answer<R> = (String, Result<Vec<R>, ClientError>);

/// One node's poll (its address given), as a queue consumer makes it.
pub(crate) type PollAt<R> =
    dyn Fn(String) -> BoxFuture<'static, Result<Vec<R>, ClientError>> + Sync;

/// The polls in flight, by node address, and the way their answers (records of type `R`)
/// come back.
pub(crate) struct NodePolls<R> {
    running: HashMap<String, JoinHandle<()>>,
    refreshed: Option<Instant>,
    tx: mpsc::UnboundedSender<Answer<R>>,
    rx: mpsc::UnboundedReceiver<Answer<R>>,
}

impl<R> Default for NodePolls<R> {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        NodePolls {
            running: HashMap::new(),
            refreshed: None,
            tx,
            rx,
        }
    }
}

/// A consumer dropped with polls in flight cuts their streams: the brokers give back the
/// leases of polls still waiting.
impl<R> Drop for NodePolls<R> {
    fn drop(&mut self) {
        for h in self.running.values() {
            h.abort();
        }
    }
}

impl<R: Send + 'static> NodePolls<R> {
    /// Polls (with `poll_at`) every node leading a partition of `topic` (those not asked yet),
    /// waits for the first answer, and returns the records of every answer in by then.
    pub async fn poll(
        &mut self,
        routes: &Routes,
        topic: &str,
        wait: Duration,
        poll_at: &PollAt<R>,
    ) -> Result<Vec<R>, ClientError> {
        let stale = self.refreshed.is_none_or(|t| t.elapsed() >= METADATA_EVERY);
        if stale || routes.leaders_of(topic).is_empty() {
            routes.refresh().await;
            self.refreshed = Some(Instant::now());
        }
        for addr in routes.leaders_of(topic) {
            if self.running.contains_key(&addr) {
                continue;
            }
            let (polled, at, tx) = (poll_at(addr.clone()), addr.clone(), self.tx.clone());
            let task = tokio::spawn(async move {
                let _ = tx.send((at, polled.await));
            });
            self.running.insert(addr, task);
        }
        if self.running.is_empty() {
            // No partition has a leader now (an election runs): nothing to lease yet.
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        let mut answers = Vec::new();
        if let Ok(Some(first)) = tokio::time::timeout(wait + ANSWER_GRACE, self.rx.recv()).await {
            answers.push(first);
        }
        while let Ok(more) = self.rx.try_recv() {
            answers.push(more);
        }
        self.collect(routes, answers).await
    }

    /// The records of the polls that have answered; a failure only when none brought any.
    async fn collect(
        &mut self,
        routes: &Routes,
        answers: Vec<Answer<R>>,
    ) -> Result<Vec<R>, ClientError> {
        let (mut out, mut failure) = (Vec::new(), None);
        for (addr, answer) in answers {
            self.running.remove(&addr);
            match answer {
                Ok(records) => out.extend(records),
                // The node lost its partitions or is gone: the next poll asks their leaders.
                Err(e) if routes.moved(&e) => {
                    tracing::debug!(node = %addr, error = %e, "a queue poll failed over");
                    routes.refresh().await;
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}
