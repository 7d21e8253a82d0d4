//! The no-op driver: the harness's own ceiling. The same workload loops run, but nothing leaves the
//! process: producers count the records they are handed (and pass them through a channel when a
//! latency consumer is listening), a consumer from the start replays as many records as were
//! produced. Its numbers say how fast the harness itself can go, not what a broker could.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{ConsumerHandle, Driver, DriverConfig, IdleConnection, ProducerHandle, Sink, StartAt};
use crate::case::Case;
use crate::durability::Durability;

#[derive(Default)]
struct Shared {
    produced: AtomicU64,
    /// Set while a consumer from `Latest` listens: batches go to it.
    live: Mutex<Option<mpsc::UnboundedSender<Vec<Bytes>>>>,
}

pub struct NoopDriver {
    shared: Arc<Shared>,
    cfg: DriverConfig,
}

impl Driver for NoopDriver {
    type Producer = NoopProducer;
    type Consumer = NoopConsumer;

    fn unsupported(case: &Case) -> Option<&'static str> {
        match case {
            Case::Filter { .. } => Some(
                "no broker, so no server-side filter (`consume` gives the harness's read ceiling)",
            ),
            _ => case
                .quiver_only()
                .then_some("no broker, so no consumer groups or queues"),
        }
    }

    fn describe(_durability: Durability) -> String {
        "no broker: the workload loops with sends that only count (or hand over in memory)"
            .to_owned()
    }

    fn version() -> String {
        "harness loops only".to_owned()
    }

    async fn start(cfg: DriverConfig) -> Result<Self> {
        Ok(NoopDriver {
            shared: Arc::default(),
            cfg,
        })
    }

    async fn create_topic(&self) -> Result<()> {
        Ok(())
    }

    async fn producer(&self) -> Result<NoopProducer> {
        Ok(NoopProducer {
            shared: self.shared.clone(),
        })
    }

    async fn consumer(&self, from: StartAt) -> Result<NoopConsumer> {
        Ok(match from {
            StartAt::Earliest => NoopConsumer::Replay {
                remaining: self.shared.produced.load(Ordering::Relaxed),
                value: Bytes::from(vec![b'x'; self.cfg.size]),
                batch: self.cfg.batch as u64,
            },
            StartAt::Latest => {
                let (tx, rx) = mpsc::unbounded_channel();
                *self.shared.live.lock() = Some(tx);
                NoopConsumer::Live(rx)
            }
        })
    }

    async fn idle_connection(&self) -> Result<IdleConnection> {
        Ok(Box::new(()))
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        None
    }

    async fn stop(self) -> Result<()> {
        Ok(())
    }
}

pub struct NoopProducer {
    shared: Arc<Shared>,
}

impl ProducerHandle for NoopProducer {
    async fn send(&mut self, batch: &[Bytes]) -> Result<()> {
        self.shared
            .produced
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Some(tx) = self.shared.live.lock().as_ref() {
            let _ = tx.send(batch.to_vec());
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

pub enum NoopConsumer {
    Replay {
        remaining: u64,
        value: Bytes,
        batch: u64,
    },
    Live(mpsc::UnboundedReceiver<Vec<Bytes>>),
}

impl ConsumerHandle for NoopConsumer {
    async fn poll(&mut self, wait: Duration, sink: &mut Sink<'_>) -> Result<usize> {
        match self {
            NoopConsumer::Replay {
                remaining,
                value,
                batch,
            } => {
                let n = (*remaining).min(*batch);
                if n == 0 {
                    tokio::time::sleep(wait).await;
                }
                for _ in 0..n {
                    sink(value);
                }
                *remaining -= n;
                Ok(n as usize)
            }
            NoopConsumer::Live(rx) => {
                let Ok(Some(batch)) = tokio::time::timeout(wait, rx.recv()).await else {
                    return Ok(0);
                };
                batch.iter().for_each(|v| sink(v));
                Ok(batch.len())
            }
        }
    }
}
