//! Where each partition's requests go on a cluster: the leader the brokers' metadata names,
//! reached over a connection per node (made with the first connection's options). A request
//! refused with NotLeader, or cut off with its node, asks for fresh metadata and goes to the
//! partition's new leader. Against a single broker every request goes to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::Mutex;

use quiver_proto::ErrorCode;

use crate::client::Client;
use crate::error::ClientError;

/// Metadata is asked again at most this often (many batches fail over at once).
const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// A node that does not answer within this is passed over (it may be the one that died).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The idle timeout of connections to other nodes (at most): a node that dies without a word
/// (a crash: QUIC over UDP hears nothing) is noticed after this, and its requests fail over.
/// The first connection keeps its own; a cluster client should set about as much there.
const LINK_IDLE: Duration = Duration::from_secs(5);

pub(crate) struct Routes {
    bootstrap: Client,
    /// `(topic, partition)` → the leader's client address.
    leaders: Mutex<HashMap<(String, u32), String>>,
    /// Open connections by address.
    links: tokio::sync::Mutex<HashMap<String, Client>>,
    refreshed: Mutex<Option<Instant>>,
    /// Set once the first metadata answer is in (or no node gave one).
    asked: tokio::sync::OnceCell<()>,
    /// Whether a broker ever named replicated partitions: once a cluster, always one (while
    /// elections run, an answer may name no leader at all).
    cluster: AtomicBool,
}

impl Routes {
    pub fn new(bootstrap: Client) -> Routes {
        Routes {
            bootstrap,
            leaders: Mutex::default(),
            links: tokio::sync::Mutex::default(),
            refreshed: Mutex::new(None),
            asked: tokio::sync::OnceCell::new(),
            cluster: AtomicBool::new(false),
        }
    }

    /// The distinct nodes leading partitions of `topic` (none known: empty).
    pub fn leaders_of(&self, topic: &str) -> Vec<String> {
        let mut nodes: Vec<String> = (self.leaders.lock().iter())
            .filter(|((t, _), _)| t == topic)
            .map(|(_, addr)| addr.clone())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// A request id (for the brokers' logs).
    pub fn request_id(&self) -> u64 {
        self.bootstrap.next_request_id()
    }

    /// Asks for the partition leaders once, before the first request: requests then go to
    /// the leaders at once, and a cluster client knows it is one (a lost node fails over).
    pub async fn ready(&self) {
        self.asked.get_or_init(|| self.ask()).await;
    }

    /// Whether `e` means a request should go to its partition's leader again, after fresh
    /// metadata: the node is not the leader, or (on a cluster) it is going away or gone.
    pub fn moved(&self, e: &ClientError) -> bool {
        match e.code() {
            Some(ErrorCode::NotLeader) => true,
            Some(ErrorCode::ShuttingDown) => self.is_cluster(),
            Some(_) => false,
            None => self.is_cluster() && e.is_link_lost(),
        }
    }

    /// Whether the brokers named partition leaders (a cluster): failures then fail over.
    pub fn is_cluster(&self) -> bool {
        self.cluster.load(Ordering::Relaxed)
    }

    /// The address requests for a partition go to.
    pub fn address(&self, topic: &str, partition: u32) -> String {
        self.leaders
            .lock()
            .get(&(topic.to_owned(), partition))
            .cloned()
            .unwrap_or_else(|| self.bootstrap.server().to_owned())
    }

    /// A live connection to `addr` (the bootstrap connection for its own address). Against a
    /// single broker the producer never reconnects by itself: its connection is its session,
    /// and a broker that restarted must not take batches a replacing session (a mirror's, say)
    /// has not looked for. On a cluster a node that came back is connected to again.
    pub async fn client(&self, addr: &str) -> Result<Client, ClientError> {
        if addr == self.bootstrap.server() && (!self.bootstrap.is_closed() || !self.is_cluster()) {
            return Ok(self.bootstrap.clone());
        }
        let mut links = self.links.lock().await;
        if let Some(c) = links.get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let mut opts = self.bootstrap.options().clone();
        opts.server = addr.to_owned();
        opts.idle_timeout = Some(opts.idle_timeout.map_or(LINK_IDLE, |t| t.min(LINK_IDLE)));
        let c = tokio::time::timeout(ASK_TIMEOUT, Client::connect_with(opts))
            .await
            .map_err(|_| ClientError::Timeout(ASK_TIMEOUT))??;
        links.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// A connection to a live node for requests any node answers (producer ids): the first
    /// connection, or on a cluster, once that one is lost, another node's.
    pub async fn any_node(&self) -> Client {
        if !self.bootstrap.is_closed() || !self.is_cluster() {
            return self.bootstrap.clone();
        }
        let open = self
            .links
            .lock()
            .await
            .values()
            .find(|c| !c.is_closed())
            .cloned();
        if let Some(c) = open {
            return c;
        }
        let known: Vec<String> = self.leaders.lock().values().cloned().collect();
        for addr in known {
            if let Ok(c) = self.client(&addr).await {
                return c;
            }
        }
        self.bootstrap.clone()
    }

    /// Asks any reachable node for the partition leaders (at most every [`REFRESH_EVERY`]).
    pub async fn refresh(&self) {
        {
            let mut last = self.refreshed.lock();
            if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.ask().await;
    }

    async fn ask(&self) {
        // Other nodes first: the first node is the one most likely gone when this is asked;
        // then the leaders known but never connected to.
        let mut candidates: Vec<Client> = self.links.lock().await.values().cloned().collect();
        candidates.push(self.bootstrap.clone());
        let known: Vec<String> = self.leaders.lock().values().cloned().collect();
        for addr in known {
            if !candidates.iter().any(|c| c.server() == addr) {
                if let Ok(c) = self.client(&addr).await {
                    candidates.push(c);
                }
            }
        }
        // All at once, the first answer wins: a node that died (its connection not closed
        // yet) must not hold the answer up for a whole timeout.
        let asks = candidates.into_iter().filter(|c| !c.is_closed()).map(|c| {
            async move {
                match tokio::time::timeout(ASK_TIMEOUT, c.admin().partition_leaders()).await {
                    Ok(Ok(leaders)) => Ok(leaders),
                    _ => Err(()),
                }
            }
            .boxed()
        });
        let asks: Vec<_> = asks.collect();
        if asks.is_empty() {
            tracing::debug!("no node to ask for partition leaders");
            return;
        }
        if let Ok((leaders, _)) = futures_util::future::select_ok(asks).await {
            if !leaders.is_empty() {
                self.cluster.store(true, Ordering::Relaxed);
            }
            let mut map = self.leaders.lock();
            map.clear();
            for p in leaders {
                if let Some(addr) = p.leader_addr {
                    map.insert((p.topic, p.partition), addr);
                }
            }
            return;
        }
        tracing::debug!("no node answered for partition leaders");
    }
}
