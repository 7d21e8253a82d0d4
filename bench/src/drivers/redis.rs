//! The Redis Streams driver: `redis-server` on a free loopback port, data in the run's temp dir, no
//! RDB snapshots, the append-only file on (`appendfsync no` = written, fsync left to the OS;
//! `appendfsync always` = fsync before replying, once per event-loop pass, i.e. once per pipeline)
//! and automatic AOF rewrites off (a rewrite is compaction, which no other row pays for). A batch is
//! one pipeline of XADDs; up to `window` pipelines are in flight per producer. Reads are `XREAD
//! COUNT B BLOCK ms` (no group: XREADGROUP's pending-entry bookkeeping belongs to the `group`
//! workload). The reply is parsed from the raw value, without a map per entry.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::task::JoinHandle;

use super::{
    ConsumerHandle, Driver, DriverConfig, IdleConnection, ProducerHandle, Sink, StartAt, TOPIC,
};
use crate::case::Case;
use crate::durability::Durability;
use crate::server::{self, ServerProcess};

pub struct RedisDriver {
    server: ServerProcess,
    client: redis::Client,
    cfg: DriverConfig,
}

impl RedisDriver {
    async fn connection(&self) -> Result<MultiplexedConnection> {
        // The default 500 ms response timeout is shorter than a fsync'd pipeline can take here.
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }
}

fn fsync_setting(durability: Durability) -> &'static str {
    match durability {
        Durability::NoneFsync => "no",
        Durability::FsyncPerBatch => "always",
    }
}

impl Driver for RedisDriver {
    type Producer = RedisProducer;
    type Consumer = RedisConsumer;

    fn unsupported(case: &Case) -> Option<&'static str> {
        match case {
            Case::Filter { .. } => Some(
                "Redis Streams have no read filter (XREAD returns every entry): nothing comparable",
            ),
            _ => case.quiver_only().then_some(super::QUIVER_ONLY),
        }
    }

    fn describe(durability: Durability) -> String {
        format!(
            "redis-server --save '' --appendonly yes --appendfsync {} \
             --auto-aof-rewrite-percentage 0; 1 stream key (titled partitions: one key each); XADD pipelined B per pipeline, up to \
             window pipelines in flight; XREAD COUNT B BLOCK",
            fsync_setting(durability)
        )
    }

    fn version() -> String {
        server::version_of("redis-server", &["--version"])
    }

    async fn start(cfg: DriverConfig) -> Result<Self> {
        let dir = server::run_dir(&cfg.work_dir, "redis")?;
        let port = server::free_tcp_port()?;
        let mut cmd = tokio::process::Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", fsync_setting(cfg.durability)])
            .args(["--auto-aof-rewrite-percentage", "0", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path());
        let mut server = ServerProcess::spawn("redis", cmd, dir)?;
        server::wait_for_tcp(&mut server, port).await?;
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let driver = RedisDriver {
            server,
            client,
            cfg,
        };
        let mut conn = driver.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .context("redis PING")?;
        Ok(driver)
    }

    async fn create_topic(&self) -> Result<()> {
        Ok(()) // XADD creates the stream key.
    }

    async fn producer(&self) -> Result<RedisProducer> {
        let keys = match self.cfg.partitions {
            0 | 1 => vec![TOPIC.to_owned()],
            n => (0..n).map(|p| format!("{TOPIC}:{p}")).collect(),
        };
        Ok(RedisProducer {
            keys,
            batches: 0,
            conn: self.connection().await?,
            pending: VecDeque::new(),
            window: self.cfg.window,
        })
    }

    async fn consumer(&self, from: StartAt) -> Result<RedisConsumer> {
        let mut conn = self.connection().await?;
        let last_id = match from {
            StartAt::Earliest => "0-0".to_owned(),
            StartAt::Latest => newest_id(&mut conn).await?,
        };
        Ok(RedisConsumer {
            conn,
            last_id,
            count: self.cfg.batch,
        })
    }

    async fn idle_connection(&self) -> Result<IdleConnection> {
        Ok(Box::new(self.connection().await?))
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        self.server.peak_rss_kib()
    }

    fn open_files(&self) -> Option<usize> {
        self.server.open_fds()
    }

    async fn stop(self) -> Result<()> {
        self.server.stop().await
    }
}

/// The id of the newest entry, or `0-0` for a missing or empty stream.
async fn newest_id(conn: &mut MultiplexedConnection) -> Result<String> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(TOPIC)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    let entries = items(&reply);
    match entries.first() {
        Some(entry) => Ok(entry_parts(entry)?.0),
        None => Ok("0-0".to_owned()),
    }
}

pub struct RedisProducer {
    /// The stream keys ([`TOPIC`] alone, or `TOPIC:0` … for titled partitions); batch number k
    /// goes to `keys[k % len]`.
    keys: Vec<String>,
    batches: usize,
    conn: MultiplexedConnection,
    pending: VecDeque<JoinHandle<redis::RedisResult<()>>>,
    window: usize,
}

impl RedisProducer {
    async fn await_oldest(&mut self) -> Result<()> {
        if let Some(task) = self.pending.pop_front() {
            task.await?.context("XADD pipeline failed")?;
        }
        Ok(())
    }
}

impl ProducerHandle for RedisProducer {
    async fn send(&mut self, batch: &[Bytes]) -> Result<()> {
        let mut pipe = redis::pipe();
        let key = &self.keys[self.batches % self.keys.len()];
        self.batches += 1;
        for value in batch {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("v")
                .arg(&value[..])
                .ignore();
        }
        let mut conn = self.conn.clone();
        // A task per pipeline so it is written at once, not when the window is next awaited.
        self.pending.push_back(tokio::spawn(async move {
            pipe.query_async::<()>(&mut conn).await
        }));
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

pub struct RedisConsumer {
    conn: MultiplexedConnection,
    last_id: String,
    count: usize,
}

impl ConsumerHandle for RedisConsumer {
    async fn poll(&mut self, wait: Duration, sink: &mut Sink<'_>) -> Result<usize> {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(self.count)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(TOPIC)
            .arg(&self.last_id)
            .query_async(&mut self.conn)
            .await?;
        let mut n = 0;
        for entry in read_entries(&reply) {
            let (id, value) = entry_parts(entry)?;
            sink(value);
            self.last_id = id;
            n += 1;
        }
        Ok(n)
    }
}

/// The entries of an XREAD reply: `[[key, [entry, ...]]]` in RESP2, `{key: [entry, ...]}` in RESP3,
/// nil when nothing arrived in time.
fn read_entries(reply: &Value) -> Vec<&Value> {
    let per_stream: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(kv) => kv.get(1),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    per_stream.into_iter().flat_map(items).collect()
}

/// The elements of an array reply (the values of a map reply); nothing for nil.
fn items(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a.iter().collect(),
        Value::Map(m) => m.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    }
}

/// `[id, [field, value]]` → (id, value).
fn entry_parts(entry: &Value) -> Result<(String, &[u8])> {
    let Value::Array(parts) = entry else {
        bail!("unexpected stream entry: {entry:?}");
    };
    let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
        bail!("unexpected stream entry: {entry:?}");
    };
    let id = match id {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => bail!("unexpected stream id: {other:?}"),
    };
    match fields.get(1) {
        Some(Value::BulkString(value)) => Ok((id, value)),
        _ => Err(anyhow!("stream entry {id} has no value field")),
    }
}
