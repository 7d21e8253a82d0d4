//! The NATS JetStream driver: `nats-server -js` (Debian's 2.9) on a free loopback port with its store
//! in the run's temp dir; one stream with file storage on one subject; publishes are async with a
//! JetStream ack per message (JetStream has no batch publish in 2.9), every ack checked; reads use a
//! pull consumer with `AckPolicy::None` (like Quiver's offset reads, no per-message ack round trip).
//!
//! Durability: nats-server 2.9 acknowledges a publish once the message is written to its file store
//! and fsyncs on its own timer; it has no per-write fsync setting (the config parser rejects
//! `sync_interval`, which arrived in 2.10). So NATS runs only in the `none-fsync` class.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{ContextBuilder, PublishAckFuture};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::Context as JetStream;
use async_nats::Subject;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use super::{
    ConsumerHandle, Driver, DriverConfig, IdleConnection, ProducerHandle, Sink, StartAt, TOPIC,
};
use crate::case::Case;
use crate::durability::Durability;
use crate::server::{self, ServerProcess};

pub struct NatsDriver {
    server: ServerProcess,
    url: String,
    js: JetStream,
    cfg: DriverConfig,
}

/// Publish acks a client may have outstanding: a window of batches plus the one being sent. The
/// producer keeps below it itself, so the client's semaphore never blocks a publish.
fn ack_capacity(cfg: &DriverConfig) -> usize {
    (cfg.window + 1) * cfg.batch.max(1)
}

fn context(client: async_nats::Client, cfg: &DriverConfig) -> JetStream {
    ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(ack_capacity(cfg))
        .backpressure_on_inflight(true)
        .build(client)
}

impl Driver for NatsDriver {
    type Producer = NatsProducer;
    type Consumer = NatsConsumer;

    fn unsupported(case: &Case) -> Option<&'static str> {
        if let Case::Filter { .. } = case {
            return Some(
                "no server-side tag filter or plugin host (JetStream consumers filter by subject \
                 only): nothing comparable",
            );
        }
        if case.quiver_only() {
            return Some(super::QUIVER_ONLY);
        }
        (case.durability() == Durability::FsyncPerBatch).then_some(
            "nats-server 2.9 has no per-write fsync (sync_interval arrived in 2.10): no comparable setting",
        )
    }

    fn describe(_durability: Durability) -> String {
        "nats-server -js, file storage, 1 stream on 1 subject (\
         titled partitions: one subject each in that stream; JetStream has no partitions); async publish, one JetStream ack per \
         message, up to window × B acks outstanding; pull consumer, AckPolicy::None, B per pull; \
         fsync only on the server's own timer (2.9 has no per-write fsync)"
            .to_owned()
    }

    fn version() -> String {
        server::version_of("nats-server", &["--version"])
    }

    async fn start(cfg: DriverConfig) -> Result<Self> {
        let dir = server::run_dir(&cfg.work_dir, "nats")?;
        let port = server::free_tcp_port()?;
        let mut cmd = tokio::process::Command::new("nats-server");
        cmd.arg("-js").arg("-sd").arg(dir.path().join("js")).args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let mut server = ServerProcess::spawn("nats", cmd, dir)?;
        server::wait_for_tcp(&mut server, port).await?;
        let url = format!("nats://127.0.0.1:{port}");
        let client = async_nats::connect(&url)
            .await
            .context("connecting to nats-server")?;
        let js = context(client, &cfg);
        Ok(NatsDriver {
            server,
            url,
            js,
            cfg,
        })
    }

    async fn create_topic(&self) -> Result<()> {
        self.js
            .create_stream(stream::Config {
                name: TOPIC.to_owned(),
                subjects: subjects(self.cfg.partitions),
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating the JetStream stream: {e}"))?;
        Ok(())
    }

    async fn producer(&self) -> Result<NatsProducer> {
        let client = async_nats::connect(&self.url).await?;
        Ok(NatsProducer {
            js: context(client, &self.cfg),
            subjects: subjects(self.cfg.partitions)
                .into_iter()
                .map(Subject::from)
                .collect(),
            batches: 0,
            pending: VecDeque::new(),
            outstanding: 0,
            window: self.cfg.window,
            capacity: ack_capacity(&self.cfg),
        })
    }

    async fn consumer(&self, from: StartAt) -> Result<NatsConsumer> {
        let client = async_nats::connect(&self.url).await?;
        let js = context(client, &self.cfg);
        let stream = js
            .get_stream(TOPIC)
            .await
            .map_err(|e| anyhow!("opening the stream: {e}"))?;
        let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
            .create_consumer(pull::Config {
                ack_policy: AckPolicy::None,
                deliver_policy: match from {
                    StartAt::Earliest => DeliverPolicy::All,
                    StartAt::Latest => DeliverPolicy::New,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!("creating the pull consumer: {e}"))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.cfg.batch)
            .messages()
            .await
            .map_err(|e| anyhow!("starting the pull consumer: {e}"))?;
        Ok(NatsConsumer {
            messages,
            most: self.cfg.batch,
        })
    }

    async fn idle_connection(&self) -> Result<IdleConnection> {
        Ok(Box::new(async_nats::connect(&self.url).await?))
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        self.server.peak_rss_kib()
    }

    fn open_files(&self) -> Option<usize> {
        self.server.open_fds()
    }

    async fn stop(self) -> Result<()> {
        drop(self.js);
        self.server.stop().await
    }
}

/// The stream's subjects: [`TOPIC`] alone, or `TOPIC.0` … `TOPIC.{n-1}` for n "partitions".
fn subjects(partitions: u32) -> Vec<String> {
    match partitions {
        0 | 1 => vec![TOPIC.to_owned()],
        n => (0..n).map(|p| format!("{TOPIC}.{p}")).collect(),
    }
}

pub struct NatsProducer {
    js: JetStream,
    /// Batch number k goes to `subjects[k % len]`.
    subjects: Vec<Subject>,
    batches: usize,
    /// One entry per unacknowledged batch: the ack of each of its messages.
    pending: VecDeque<Vec<PublishAckFuture>>,
    /// Acks in `pending`.
    outstanding: usize,
    window: usize,
    capacity: usize,
}

impl NatsProducer {
    async fn await_oldest(&mut self) -> Result<()> {
        if let Some(acks) = self.pending.pop_front() {
            self.outstanding -= acks.len();
            for ack in acks {
                ack.await.map_err(|e| anyhow!("publish failed: {e}"))?;
            }
        }
        Ok(())
    }
}

impl ProducerHandle for NatsProducer {
    async fn send(&mut self, batch: &[Bytes]) -> Result<()> {
        while !self.pending.is_empty() && self.outstanding + batch.len() > self.capacity {
            self.await_oldest().await?;
        }
        let mut acks = Vec::with_capacity(batch.len());
        let subject = &self.subjects[self.batches % self.subjects.len()];
        self.batches += 1;
        for value in batch {
            let ack = self
                .js
                .publish(subject.clone(), value.clone())
                .await
                .map_err(|e| anyhow!("publish failed: {e}"))?;
            acks.push(ack);
        }
        self.outstanding += acks.len();
        self.pending.push_back(acks);
        while self.pending.len() > self.window {
            self.await_oldest().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }
}

pub struct NatsConsumer {
    messages: pull::Stream,
    most: usize,
}

impl ConsumerHandle for NatsConsumer {
    async fn poll(&mut self, wait: Duration, sink: &mut Sink<'_>) -> Result<usize> {
        let Ok(first) = tokio::time::timeout(wait, self.messages.next()).await else {
            return Ok(0);
        };
        let mut next = first;
        let mut n = 0;
        while let Some(item) = next {
            let message = item.map_err(|e| anyhow!("pull consumer: {e}"))?;
            sink(&message.payload);
            n += 1;
            if n >= self.most {
                break;
            }
            // Take what is already here without waiting again.
            next = match self.messages.next().now_or_never() {
                Some(item) => item,
                None => break,
            };
        }
        Ok(n)
    }
}
