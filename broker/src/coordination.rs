//! Consumer groups on a cluster (docs/replication.md "Consumer groups"): the Raft leader
//! coordinates every group, so members that reach different nodes still form one group. Any
//! node forwards a group request, already authorized, to it over the peer link; commits and
//! resets go through Raft, so every node holds each group's offsets and a new coordinator
//! (after the Raft leader changed) resumes from them. Membership lives in the coordinator's
//! memory: when it moves, members find themselves unknown and join again, as after a broker
//! restart. On a single broker the group service answers directly.
//!
//! Queue mode: each node serves queue consumers the partitions it leads, and the share
//! partitions' settled points go through Raft (batched), so a new partition leader resumes
//! from them; leases and delivery counts stay with the old leader (its records are delivered
//! again, at least once).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use quiver_proto::groups::{GroupRequest, GroupResponse};
use quiver_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::cluster::{
    Cluster, ClusterError, MetaCommand, MetaResult, NodeId, PeerHandler, SettledPoint,
};
use crate::error::BrokerError;
use crate::groups::Queues;
use crate::offload;
use crate::services::groups::GroupService;

/// How long a forwarded request may take.
const FORWARD_TTL: Duration = Duration::from_secs(10);
/// How long a request waits for the metadata group to have a leader (an election).
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// How long settled points gather before they are proposed together.
const SETTLED_EVERY: Duration = Duration::from_millis(100);

/// A forwarded request's answer, as it crosses the peer link.
#[derive(Serialize, Deserialize)]
enum Answer {
    Ok(GroupResponse),
    Err { code: u16, message: String },
}

/// Group requests on a cluster node (a single broker's go straight to the group service).
pub struct Coordination {
    me: Weak<Coordination>,
    groups: Arc<GroupService>,
    cluster: OnceLock<Arc<Cluster>>,
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination").finish_non_exhaustive()
    }
}

impl Coordination {
    pub fn new(groups: Arc<GroupService>) -> Arc<Coordination> {
        Arc::new_cyclic(|me| Coordination {
            me: me.clone(),
            groups,
            cluster: OnceLock::new(),
        })
    }

    /// What answers the group requests other nodes forward here.
    pub fn peer_handler(&self) -> Arc<dyn PeerHandler> {
        Arc::new(GroupPeer(self.me.clone()))
    }

    /// Joins `cluster`: group requests go to its coordinator from now on, and the share
    /// partitions' settled points are replicated.
    pub fn start(&self, cluster: Arc<Cluster>) {
        if self.cluster.set(cluster.clone()).is_ok() {
            replicate_queue_state(&self.groups.state().queues, cluster);
        }
    }

    /// Answers a group request (already authorized), at the groups' coordinator.
    pub async fn group(&self, req: GroupRequest) -> Result<GroupResponse, BrokerError> {
        let Some(cluster) = self.cluster.get().cloned() else {
            return self.group_here(req).await;
        };
        let coordinator = coordinator(&cluster).await?;
        if coordinator == cluster.node_id() {
            return self.coordinate(&cluster, req).await;
        }
        let request = rmp_serde::to_vec_named(&req).map_err(internal)?;
        let answer = cluster
            .call_group(coordinator, request, FORWARD_TTL)
            .await?;
        match rmp_serde::from_slice(&answer).map_err(internal)? {
            Answer::Ok(r) => Ok(r),
            Answer::Err { code, message } => Err(BrokerError::Wire(ErrorCode::from(code), message)),
        }
    }

    async fn group_here(&self, req: GroupRequest) -> Result<GroupResponse, BrokerError> {
        let groups = self.groups.clone();
        offload::blocking(move || groups.handle(req)).await
    }

    /// Answers as the coordinator: offsets are committed through Raft (after the checks a
    /// single broker makes), the rest here.
    async fn coordinate(
        &self,
        cluster: &Cluster,
        req: GroupRequest,
    ) -> Result<GroupResponse, BrokerError> {
        let groups = self.groups.clone();
        let (group, offsets, answer) = match req {
            GroupRequest::Commit {
                group,
                member_id,
                offsets,
            } => {
                let (g, o) = (group.clone(), offsets.clone());
                // The partitions' logs may lag here (or live elsewhere): offsets are not
                // bounded by this node's copy.
                offload::blocking(move || groups.check_commit(&g, member_id.as_deref(), &o, false))
                    .await?;
                let count = offsets.len() as u32;
                (group, offsets, GroupResponse::Committed { count })
            }
            GroupRequest::Reset { group, topic, to } => {
                let g = group.clone();
                let offsets = offload::blocking(move || groups.plan_reset(&g, &topic, to)).await?;
                let answer = GroupResponse::Reset {
                    offsets: offsets.clone(),
                };
                (group, offsets, answer)
            }
            other => return self.group_here(other).await,
        };
        match cluster
            .write(MetaCommand::CommitOffsets { group, offsets })
            .await?
        {
            MetaResult::Err { code, message } => {
                Err(BrokerError::Wire(ErrorCode::from(code), message))
            }
            _ => Ok(answer),
        }
    }
}

/// The groups' coordinator: the Raft leader, once there is one.
async fn coordinator(cluster: &Cluster) -> Result<NodeId, BrokerError> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        if let Some(leader) = cluster.leader() {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NoLeader(LEADER_WAIT).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn internal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(format!("a forwarded group request: {e}"))
}

/// Answers group requests other nodes forward to this one (the coordinator, as they believed).
struct GroupPeer(Weak<Coordination>);

impl PeerHandler for GroupPeer {
    fn handle(&self, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let coordination = self.0.clone();
        async move {
            let answer = match answer(coordination, &request).await {
                Ok(r) => Answer::Ok(r),
                Err(e) => Answer::Err {
                    code: e.code().as_u16(),
                    message: e.to_string(),
                },
            };
            rmp_serde::to_vec_named(&answer).unwrap_or_default()
        }
        .boxed()
    }
}

async fn answer(
    coordination: Weak<Coordination>,
    request: &[u8],
) -> Result<GroupResponse, BrokerError> {
    let c = coordination.upgrade().ok_or(BrokerError::ShuttingDown)?;
    let req: GroupRequest = rmp_serde::from_slice(request).map_err(internal)?;
    let cluster = c.cluster.get().cloned().ok_or(BrokerError::ShuttingDown)?;
    if cluster.leader() != Some(cluster.node_id()) {
        // Leadership moved while the request travelled: the sender asks again.
        return Err(BrokerError::Wire(
            ErrorCode::NotLeader,
            "this node no longer coordinates consumer groups; ask again".into(),
        ));
    }
    c.coordinate(&cluster, req).await
}

/// Replicates the share partitions' settled points this node moves: the latest of each,
/// gathered for [`SETTLED_EVERY`], in one metadata write.
fn replicate_queue_state(queues: &Queues, cluster: Arc<Cluster>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<SettledPoint>();
    queues.on_settled(Box::new(move |group, topic, partition, start| {
        let _ = tx.send(SettledPoint {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            start,
        });
    }));
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            tokio::time::sleep(SETTLED_EVERY).await;
            let mut latest: HashMap<(String, String, u32), SettledPoint> = HashMap::new();
            for p in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                latest.insert((p.group.clone(), p.topic.clone(), p.partition), p);
            }
            let points: Vec<SettledPoint> = latest.into_values().collect();
            let count = points.len();
            if let Err(e) = cluster.write(MetaCommand::QueueSettled { points }).await {
                // Lost points only mean redeliveries after a failover (at least once).
                tracing::warn!(error = %e, count, "queue settled points not replicated");
            }
        }
    });
}
