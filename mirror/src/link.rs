//! One mirror's link to the core: sessions one after another with back-off between them. A
//! session connects, makes sure the core topics exist, and runs one forwarding task per edge
//! partition the mirror covers (new topics and partitions join within a second); the first task
//! that fails ends the session, since the connection or the core is then suspect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::{Acks, Client, ClientOptions, Producer, ProducerConfig};
use quiver_broker::mirrors::{MirrorDef, MirrorStatus};
use quiver_broker::Broker;
use quiver_proto::mirror::{MirrorDirection, MirrorState};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::LinkError;
use crate::session::{Session, Source};

/// A session that ran this long before failing was healthy: the back-off starts over.
const HEALTHY: Duration = Duration::from_secs(5);
/// A core silent this long is taken for dead (a restarted core does not know the old connection
/// and cannot reset it, so only the silence tells).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a session looks for new topics and partitions, and updates the rate.
const TICK: Duration = Duration::from_secs(1);

pub async fn run(broker: Arc<Broker>, def: MirrorDef, stop: CancellationToken) {
    let status = broker.mirrors().status(&def.name);
    let mut backoff = Backoff::default();
    tracing::info!(mirror = %def.name, to = %def.to, topics = %def.topics, "mirror starting");
    loop {
        status.set_state(MirrorState::Connecting);
        let started = Instant::now();
        let err = match session(&broker, &def, &status, &stop).await {
            Ok(()) => break,
            Err(e) => e,
        };
        if started.elapsed() >= HEALTHY {
            backoff.reset();
        }
        let (wait, attempts) = backoff.next();
        tracing::warn!(mirror = %def.name, error = %err, retry_in = ?wait, attempts, "mirror session ended");
        status.set_state(MirrorState::BackingOff {
            error: err.to_string(),
            retry_in_ms: wait.as_millis() as u64,
            attempts,
        });
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    status.set_state(MirrorState::Stopped);
    tracing::info!(mirror = %def.name, "mirror stopped");
}

async fn session(
    broker: &Arc<Broker>,
    def: &MirrorDef,
    status: &Arc<MirrorStatus>,
    stop: &CancellationToken,
) -> Result<(), LinkError> {
    let client = tokio::select! {
        c = connect(def) => c?,
        _ = stop.cancelled() => return Ok(()),
    };
    status.set_state(MirrorState::Connected {
        since_ms: quiver_broker::util::now_ms(),
    });
    let session = Arc::new(Session {
        broker: broker.clone(),
        def: def.clone(),
        status: status.clone(),
        producer: Producer::new(client.clone(), fenced_producer_config(def)),
        admin: client.admin(),
        client: client.clone(),
        targets: Default::default(),
    });
    let outcome = fence_then_supervise(&session, stop).await;
    // Nothing of this session may reach the core after the next one has scanned it.
    client.close().await;
    outcome
}

/// A pushing session first takes its producer id, fencing the earlier sessions' producers: before
/// any scan of the core, their batches still on their way (in a closed or dead connection's
/// buffers on the core) are refused from then on, and those being appended are in the log the
/// scans read.
async fn fence_then_supervise(
    session: &Arc<Session>,
    stop: &CancellationToken,
) -> Result<(), LinkError> {
    if matches!(session.def.direction, MirrorDirection::Push) {
        session.producer.init().await?;
    }
    supervise(session, stop).await
}

/// Runs the forwarding tasks until `stop` or the first failure of the session (a partition whose
/// core topic fails on its own is retried alone, with back-off).
async fn supervise(session: &Arc<Session>, stop: &CancellationToken) -> Result<(), LinkError> {
    let mut forwarders = Forwarders::default();
    let mut rate = (Instant::now(), session.status.forwarded_records());
    loop {
        let sources = match session.def.direction {
            MirrorDirection::Push => local_sources(session),
            MirrorDirection::Pull => crate::pull::core_sources(session).await?,
        };
        forwarders.start_new(session, &sources);
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            Some(done) = forwarders.tasks.join_next() => forwarders.ended(session, done)?,
            e = session.client.closed() => return Err(e.into()),
            _ = tokio::time::sleep(TICK) => {
                let now = (Instant::now(), session.status.forwarded_records());
                let secs = now.0.duration_since(rate.0).as_secs_f64().max(1e-3);
                session.status.set_rate(now.1.saturating_sub(rate.1) as f64 / secs);
                rate = now;
            }
        }
    }
}

/// A partition forwarded from: topic name and partition.
type Key = (String, u32);

/// This broker's topics the (pushing) mirror covers.
fn local_sources(session: &Session) -> Vec<Source> {
    let topics = session.broker.topics().list();
    let covered = topics.into_iter().filter(|t| session.def.forwards(&t.name));
    covered
        .map(|t| Source {
            name: t.name.clone(),
            partitions: t.partitions().len() as u32,
            created_ms: t.config.created_ms,
            local: Some(t),
            bounds: Vec::new(),
        })
        .collect()
}

/// The forwarding tasks of one session, one per edge partition the mirror covers.
#[derive(Default)]
struct Forwarders {
    /// Each task answers its partition and its topic's creation time with its result.
    tasks: JoinSet<(Key, i64, Result<(), LinkError>)>,
    /// Each running task, with the creation time of the topic it forwards.
    running: HashMap<Key, (AbortHandle, i64)>,
    /// Partitions whose task failed on their own, and when they may start again.
    retry: HashMap<Key, (Instant, Backoff)>,
}

impl Forwarders {
    /// Starts a task for every partition of `sources` without one (new topics and partitions
    /// too), and ends those whose topic was deleted (one created again under the name is new).
    fn start_new(&mut self, session: &Arc<Session>, sources: &[Source]) {
        self.running.retain(|(name, _), (task, created)| {
            let alive = sources
                .iter()
                .any(|s| s.name == *name && s.created_ms == *created);
            if !alive {
                task.abort();
            }
            alive
        });
        let now = Instant::now();
        for source in sources {
            for p in 0..source.partitions {
                let key = (source.name.clone(), p);
                let waiting = self.retry.get(&key).is_some_and(|(at, _)| now < *at);
                if waiting || self.running.contains_key(&key) {
                    continue;
                }
                let (s, source2, k) = (session.clone(), source.clone(), key.clone());
                let created = source.created_ms;
                let task = self.tasks.spawn(async move {
                    let result = match source2.local {
                        Some(topic) => crate::forward::partition(s, topic, p).await,
                        None => crate::pull::partition(s, source2, p).await,
                    };
                    (k, created, result)
                });
                self.running.insert(key, (task, source.created_ms));
            }
        }
    }

    /// A task ended: an error of its own partition (its core topic) is retried later; any
    /// other ends the session.
    fn ended(
        &mut self,
        session: &Session,
        done: Result<(Key, i64, Result<(), LinkError>), tokio::task::JoinError>,
    ) -> Result<(), LinkError> {
        let (key, created, result) = match done {
            Ok(ended) => ended,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => return Err(LinkError::Local(format!("forwarding task failed: {e}"))),
        };
        // A task of a topic deleted meanwhile: a newer task may run under its key already.
        if self.running.get(&key).map(|(_, c)| *c) != Some(created) {
            return Ok(());
        }
        self.running.remove(&key);
        match result {
            Ok(()) => Ok(()),
            Err(e @ LinkError::Target { .. }) => {
                let (at, backoff) = self
                    .retry
                    .entry(key.clone())
                    .or_insert_with(|| (Instant::now(), Backoff::default()));
                let (wait, attempts) = backoff.next();
                *at = Instant::now() + wait;
                tracing::warn!(mirror = %session.def.name, topic = %key.0, partition = key.1, error = %e, retry_in = ?wait, attempts, "partition not forwarded");
                *session.status.partition(&key.0, key.1).error.lock() = Some(e.to_string());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

async fn connect(def: &MirrorDef) -> Result<Client, LinkError> {
    let token = match &def.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| LinkError::Local(format!("cannot read {}: {e}", path.display())))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let opts = ClientOptions {
        server: def.to.clone(),
        ca: def.ca.clone(),
        client_cert: def.cert.clone(),
        client_id: format!("quiver-mirror-{}@{}", def.name, def.source_id),
        token,
        idle_timeout: Some(IDLE_TIMEOUT),
    };
    Ok(Client::connect_with(opts).await?)
}

/// [`producer_config`], fencing the producers of this mirror's earlier sessions (the key names
/// the edge and the mirror; the core scopes it to the principal the mirror connects as).
fn fenced_producer_config(def: &MirrorDef) -> ProducerConfig {
    ProducerConfig {
        fencing_key: Some(format!("quiver-mirror/{}/{}", def.source_id, def.name)),
        ..producer_config()
    }
}

/// acks=all and idempotent: a record is committed on the edge only once the core has it on disk,
/// and a batch retried inside a session is appended once. Sixteen batches in flight bound the
/// memory a slow core can make the mirror hold.
pub fn producer_config() -> ProducerConfig {
    ProducerConfig {
        acks: Acks::All,
        idempotent: true,
        linger: Duration::from_millis(2),
        max_in_flight: 16,
        ..ProducerConfig::default()
    }
}
