//! A cluster of three real `quiver serve` processes on 127.0.0.1 sharing a dev CA, for the
//! cluster and replication tests: their peer addresses, data folders and clients.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quiver::proto::batch::Batches;
use quiver::{Client, ClientOptions};

use super::serve::Serve;

/// How long the cluster may take to agree on a leader or to show a write everywhere.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A free UDP port below the kernel's ephemeral range (32768 and up): a port taken from that
/// range and released could be handed to another socket (a client's, another node's `:0`
/// listener) before its node binds it.
pub fn free_udp_port() -> String {
    let seed =
        std::process::id() as u64 ^ std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64;
    for i in 0..1000u64 {
        let port = 20_000
            + (seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(i * 7919)
                % 12_000) as u16;
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free UDP port in 20000..32000");
}

/// Three nodes' peer addresses and the shared CA folder; nodes start and restart from here.
pub struct Layout {
    pub dir: PathBuf,
    pub members: String,
    pub extra: Vec<String>,
}

impl Layout {
    pub fn new(dir: &Path, extra: &[&str]) -> Layout {
        let mut ports: Vec<String> = Vec::new();
        while ports.len() < 3 {
            let port = free_udp_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let members: Vec<String> = (1..=3)
            .zip(&ports)
            .map(|(id, port)| format!("{id}@{port}"))
            .collect();
        Layout {
            dir: dir.to_owned(),
            members: members.join(","),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A layout whose nodes notice lag and death within a test's patience: followers leave the
    /// ISR after `lag_ms` without catching up, a silent node counts as gone after 2 s. Leaders
    /// stay where failovers put them (no preferred-leader rebalancing).
    pub fn tuned(dir: &Path, lag_ms: u64) -> Layout {
        Layout::tuned_with(dir, lag_ms, "leader_rebalance_ms = 0\n")
    }

    /// [`Layout::tuned`] with other `[cluster]` settings (TOML lines) than its `leader_rebalance_ms = 0`.
    pub fn tuned_with(dir: &Path, lag_ms: u64, more: &str) -> Layout {
        let file = dir.join("cluster.toml");
        let tuning = format!(
            "[cluster]\nheartbeat_ms = 100\nreplica_lag_ms = {lag_ms}\nnode_timeout_ms = 2000\n{more}"
        );
        std::fs::write(&file, tuning).unwrap();
        Layout::new(dir, &["--config", file.to_str().unwrap()])
    }

    /// Partition `p` of `topic` as node `id`'s segment files hold it: (offset, value) pairs.
    pub fn replica_log(&self, id: u64, topic: &str, p: u32) -> Vec<(u64, String)> {
        let dir = self.data(id).join("topics").join(topic).join(p.to_string());
        let mut logs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        let mut out = Vec::new();
        for log in logs {
            let bytes = bytes::Bytes::from(std::fs::read(log).unwrap());
            for batch in Batches::new(bytes).map_while(Result::ok) {
                for r in batch.records() {
                    out.push((r.offset, String::from_utf8_lossy(r.value).into_owned()));
                }
            }
        }
        out
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca/ca.pem")
    }

    pub fn data(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    pub fn start(&self, id: u64) -> Serve {
        let (id_s, ca_dir) = (id.to_string(), self.dir.join("ca"));
        let mut flags = vec![
            "--node-id",
            &id_s,
            "--cluster",
            &self.members,
            "--dev-ca",
            ca_dir.to_str().unwrap(),
        ];
        flags.extend(self.extra.iter().map(String::as_str));
        Serve::start_in(&self.data(id), &flags)
    }

    pub fn token(&self, id: u64) -> String {
        std::fs::read_to_string(self.data(id).join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub async fn client(&self, node: &Serve, token: Option<String>) -> Client {
        let mut opts = ClientOptions::new(node.addr.clone(), self.ca());
        opts.token = token;
        Client::connect_with(opts).await.unwrap()
    }
}

/// Polls `check` until it holds, or panics after [`SETTLE`] saying what was awaited.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + SETTLE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
