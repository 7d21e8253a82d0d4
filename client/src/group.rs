//! The group consumer: members of a consumer group share the partitions of the group's topics,
//! each partition read by one member at a time, and the group remembers how far it got (committed
//! offsets). Assignment is incremental and cooperative: a background task heartbeats the
//! coordinator, reporting the partitions this member reads (`owned`), and publishes the partitions
//! it may read now (`assigned`). `poll` / `next` apply the difference: a partition taken away is
//! committed (auto mode), dropped and reported released at once; a partition added starts at its
//! committed offset (or `GroupConfig::reset`). Partitions that stay are never paused or re-seeked.
//!
//! Delivery guarantees follow from when the application commits:
//!
//! - **At least once**: process, then commit. A crash between the two re-delivers the records
//!   processed since the last commit to the partition's next owner.
//! - **At most once**: commit, then process. A crash between the two loses those records.
//!
//! ```no_run
//! # async fn example(client: quiver::Client) -> Result<(), quiver::ClientError> {
//! use std::time::Duration;
//! use quiver::{CommitMode, GroupConfig, GroupConsumer};
//!
//! let config = GroupConfig {
//!     commit: CommitMode::Manual,
//!     ..GroupConfig::new("billing", ["orders"])
//! };
//! let mut group = GroupConsumer::join(client, config).await?;
//! loop {
//!     let records = group.poll(Duration::from_secs(1)).await?;
//!     for r in &records {
//!         println!("{}/{} @{}", r.topic, r.partition, r.record.offset); // process
//!     }
//!     group.commit().await?; // after processing: at least once
//! }
//! # }
//! ```
//!
//! With [`CommitMode::Auto`] (the default) `poll` commits, at most once per interval and before it
//! returns new records, the positions of the records it returned before: at least once, as long as
//! each batch is processed before the next `poll`.
//!
//! A member whose session expired (the coordinator answers `UnknownMember`) drops every partition
//! without committing and joins again as a new member.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quiver_proto::frame::FrameKind;
use quiver_proto::groups::{GroupRequest, GroupResponse, PartitionOffset, TopicPartition};
use quiver_proto::ErrorCode;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::Client;
use crate::consumer::{ConsumedRecord, Consumer, ConsumerConfig, SeekTo};
use crate::error::ClientError;
use crate::routes::Routes;

/// When a group consumer commits its positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// `poll` / `next` commit at most once per `interval` (before returning new records), and the
    /// consumer commits partitions taken away from it and everything on `close`.
    Auto { interval: Duration },
    /// Only [`GroupConsumer::commit`] and [`GroupConsumer::commit_offsets`] commit.
    Manual,
}

impl Default for CommitMode {
    fn default() -> Self {
        CommitMode::Auto {
            interval: Duration::from_secs(1),
        }
    }
}

/// How to join a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// The topics to consume; the group's assignment covers the union of its members' topics.
    pub topics: Vec<String>,
    pub commit: CommitMode,
    /// No heartbeat for this long and the coordinator removes the member (it may clamp the value).
    pub session_timeout: Duration,
    /// The longest time between heartbeats; the coordinator's shorter hint wins (it asks for
    /// quicker heartbeats while partitions move).
    pub heartbeat_interval: Duration,
    /// An application that does not call `poll` / `next` for this long is taken to be stuck: the
    /// consumer leaves the group so its partitions move on (it joins again on its next poll).
    pub max_poll_interval: Duration,
    /// Where to start a partition the group has committed nothing for.
    pub reset: SeekTo,
    /// How partitions are fetched.
    pub consumer: ConsumerConfig,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            group: String::new(),
            topics: Vec::new(),
            commit: CommitMode::default(),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_millis(500),
            max_poll_interval: Duration::from_secs(300),
            reset: SeekTo::Earliest,
            consumer: ConsumerConfig::default(),
        }
    }
}

impl GroupConfig {
    pub fn new<T: Into<String>>(
        group: impl Into<String>,
        topics: impl IntoIterator<Item = T>,
    ) -> Self {
        GroupConfig {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// One request on its own stream to the group coordinator.
pub(crate) async fn call_group(
    client: &Client,
    req: &GroupRequest,
) -> Result<GroupResponse, ClientError> {
    client.call(FrameKind::Group, req, FrameKind::GroupOk).await
}

pub(crate) fn unexpected(resp: GroupResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected group reply {resp:?}"))
}

/// Membership state shared by the consumer and its heartbeat task.
#[derive(Default)]
struct Member {
    member_id: Option<String>,
    /// What the consumer reads now; every heartbeat reports it.
    owned: Vec<TopicPartition>,
    /// Partitions the latest view (`pending_seq`) granted that the consumer has not applied yet.
    /// Heartbeats report them as owned: the consumer may start reading them any moment, so the
    /// coordinator must not hand them to another member meanwhile.
    pending: Vec<TopicPartition>,
    pending_seq: u64,
    /// When the application last polled (`None`: not yet).
    last_poll: Option<Instant>,
    /// Bumped whenever the membership is lost, so that answers to heartbeats of an earlier
    /// membership are ignored.
    generation: u64,
    /// The membership was lost and the consumer has not dropped its partitions yet; the heartbeat
    /// task waits for that before joining again, so that it never claims partitions the new member
    /// does not own.
    fenced: bool,
    /// A non-retriable heartbeat failure, handed to the application once by `poll` / `next`.
    failure: Option<ClientError>,
    /// Set once `failure` was handed out: the heartbeat task has ended.
    ended: Option<String>,
}

#[derive(Default)]
struct Shared {
    member: Mutex<Member>,
    /// Asks the heartbeat task to heartbeat now (after a release, or after fencing).
    wake: Notify,
}

impl Shared {
    /// Forgets the membership of `generation` (if still current): the consumer drops everything.
    fn fence(&self, generation: u64) {
        let mut m = self.member.lock();
        if m.generation == generation {
            m.member_id = None;
            m.generation += 1;
            m.fenced = true;
            m.pending.clear();
        }
    }

    fn generation(&self) -> u64 {
        self.member.lock().generation
    }

    fn member_id(&self) -> Option<String> {
        self.member.lock().member_id.clone()
    }
}

/// What the coordinator last assigned, tagged with the membership it was assigned to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct View {
    generation: u64,
    assigned: Vec<TopicPartition>,
    /// Bumped with every change, so the consumer can say which view it has applied.
    seq: u64,
}

/// A member of a consumer group. Dropping it without [`GroupConsumer::close`] stops its tasks; the
/// coordinator then frees its partitions when the session times out.
pub struct GroupConsumer {
    /// Reaches the coordinator through any live node (on a cluster every node forwards).
    routes: Arc<Routes>,
    config: GroupConfig,
    consumer: Consumer,
    shared: Arc<Shared>,
    view: watch::Receiver<View>,
    heartbeat: JoinHandle<()>,
    /// The partitions being read (mirrored into `Member::owned` for the heartbeats).
    owned: BTreeSet<TopicPartition>,
    /// The offset last committed (or found committed) per owned partition, so that commits which
    /// would change nothing are not sent.
    committed: HashMap<TopicPartition, u64>,
    last_commit: Instant,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl GroupConsumer {
    /// Joins `config.group` and starts reading the partitions the coordinator assigns. Errors of
    /// the first heartbeat (unknown topic, not authorized) are returned here.
    pub async fn join(client: Client, config: GroupConfig) -> Result<GroupConsumer, ClientError> {
        if config.group.is_empty() || config.topics.is_empty() {
            return Err(ClientError::InvalidArgument(
                "a group consumer needs a group name and at least one topic".into(),
            ));
        }
        let shared = Arc::new(Shared::default());
        let (view_tx, view_rx) = watch::channel(View::default());
        let routes = Arc::new(Routes::new(client.clone()));
        routes.ready().await;
        let mut task = Heartbeat {
            routes: routes.clone(),
            client_id: client.client_id().to_owned(),
            group: config.group.clone(),
            topics: config.topics.clone(),
            session_timeout: config.session_timeout,
            interval: config.heartbeat_interval,
            max_poll_interval: config.max_poll_interval,
            shared: shared.clone(),
            view: view_tx,
            last_ok: Instant::now(),
        };
        let first = task.beat().await?;
        let heartbeat = tokio::spawn(task.run(first));
        let mut consumer = GroupConsumer {
            consumer: Consumer::multi(client, config.consumer.clone()).routed(routes.clone()),
            routes,
            config,
            shared,
            view: view_rx,
            heartbeat,
            owned: BTreeSet::new(),
            committed: HashMap::new(),
            last_commit: Instant::now(),
        };
        consumer.sync().await?;
        Ok(consumer)
    }

    /// The member id the coordinator gave this consumer (`None` while joining again).
    pub fn member_id(&self) -> Option<String> {
        self.shared.member_id()
    }

    pub fn group(&self) -> &str {
        &self.config.group
    }

    /// The partitions this consumer reads now, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The offset of the next record the application gets from `tp` (what `commit` would store).
    pub fn position(&self, tp: &TopicPartition) -> Option<u64> {
        self.consumer.position_tp(tp)
    }

    /// Records available within `timeout` (possibly none), after applying assignment changes.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        self.shared.member.lock().last_poll = Some(Instant::now());
        let deadline = Instant::now() + timeout;
        loop {
            self.sync().await?;
            self.auto_commit().await?;
            let wait = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                biased;
                _ = view_changed(&mut self.view) => {}
                r = self.consumer.poll(wait) => {
                    let records = r?;
                    if !records.is_empty() || Instant::now() >= deadline {
                        return Ok(records);
                    }
                }
            }
        }
    }

    /// The next record, waiting as long as it takes (and applying assignment changes meanwhile).
    pub async fn next(&mut self) -> Result<ConsumedRecord, ClientError> {
        self.shared.member.lock().last_poll = Some(Instant::now());
        loop {
            self.sync().await?;
            self.auto_commit().await?;
            tokio::select! {
                biased;
                _ = view_changed(&mut self.view) => {}
                r = self.consumer.next() => return r,
            }
        }
    }

    /// Commits the positions of every owned partition: everything returned so far counts as
    /// consumed.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        let offsets = self.positions(&owned);
        self.send_commit(offsets).await
    }

    /// Commits explicit offsets (each the next offset to read) of partitions this member owns.
    pub async fn commit_offsets(
        &mut self,
        offsets: Vec<PartitionOffset>,
    ) -> Result<(), ClientError> {
        self.send_commit(offsets).await
    }

    /// Commits (auto mode) and leaves the group, so that the partitions move at once.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed = match self.config.commit {
            CommitMode::Auto { .. } => self.commit().await,
            CommitMode::Manual => Ok(()),
        };
        self.heartbeat.abort();
        let left = match self.shared.member_id() {
            Some(member_id) => self.leave(member_id).await,
            None => Ok(()),
        };
        committed.and(left)
    }

    async fn leave(&self, member_id: String) -> Result<(), ClientError> {
        let req = GroupRequest::Leave {
            group: self.config.group.clone(),
            member_id,
        };
        match call_group(&self.routes.any_node().await, &req).await {
            Ok(GroupResponse::Left) => Ok(()),
            Ok(other) => Err(unexpected(other)),
            Err(e) if e.code() == Some(ErrorCode::UnknownMember) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Applies what the heartbeat task learnt: a failure, a lost membership, assignment changes.
    async fn sync(&mut self) -> Result<(), ClientError> {
        self.check_failure()?;
        if self.shared.member.lock().fenced {
            self.drop_all();
        }
        let view = self.view.borrow_and_update().clone();
        if view.generation != self.shared.generation() {
            return Ok(()); // an answer to the membership that was lost; wait for the next one
        }
        let seq = view.seq;
        let target: BTreeSet<TopicPartition> = view.assigned.into_iter().collect();
        let (revoked, added) = diff(&self.owned, &target);
        if !revoked.is_empty() {
            self.revoke(&revoked).await;
            if view.generation != self.shared.generation() {
                return Ok(()); // the commit found the membership lost: everything was dropped
            }
        }
        if !added.is_empty() {
            self.start(&added).await?;
        }
        // Everything that view granted is read now (or, after a transient failure, not read and
        // free to go elsewhere): stop reporting it as pending.
        let mut m = self.shared.member.lock();
        if m.pending_seq == seq {
            m.pending.clear();
        }
        Ok(())
    }

    fn check_failure(&mut self) -> Result<(), ClientError> {
        let mut m = self.shared.member.lock();
        if let Some(e) = m.failure.take() {
            m.ended = Some(e.to_string());
            return Err(e);
        }
        match &m.ended {
            Some(reason) => Err(ClientError::Membership(reason.clone())),
            None => Ok(()),
        }
    }

    /// Drops every partition without committing (the membership is gone, so are the rights to
    /// commit), then lets the heartbeat task join again.
    fn drop_all(&mut self) {
        for tp in std::mem::take(&mut self.owned) {
            self.consumer.unassign_tp(&tp);
        }
        self.committed.clear();
        let mut m = self.shared.member.lock();
        m.owned.clear();
        m.fenced = false;
        drop(m);
        self.shared.wake.notify_one();
    }

    /// Gives up partitions the coordinator took away: commit (auto mode), stop, report released.
    async fn revoke(&mut self, revoked: &[TopicPartition]) {
        if matches!(self.config.commit, CommitMode::Auto { .. }) {
            let offsets = self.positions(revoked);
            if let Err(e) = self.send_commit(offsets).await {
                // The next owner starts from the previous commit: records are re-read, not lost.
                tracing::warn!(group = %self.config.group, error = %e, "cannot commit revoked partitions");
            }
        }
        for tp in revoked {
            self.consumer.unassign_tp(tp);
            self.owned.remove(tp);
            self.committed.remove(tp);
        }
        self.publish_owned();
        // The new owner waits for our release: report it now, not an interval later.
        self.shared.wake.notify_one();
    }

    /// Starts reading newly assigned partitions at their committed offsets.
    async fn start(&mut self, added: &[TopicPartition]) -> Result<(), ClientError> {
        let committed = match self.fetch_committed(added).await {
            Ok(c) => c,
            Err(e) if transient(&e) => {
                tracing::warn!(group = %self.config.group, error = %e, "cannot fetch committed offsets; retrying on the next poll");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for tp in added {
            let offset = committed.get(tp).copied().flatten();
            let from = offset.map_or(self.config.reset, SeekTo::Offset);
            self.consumer.assign_tp(tp, from);
            if let Some(o) = offset {
                self.committed.insert(tp.clone(), o);
            }
            self.owned.insert(tp.clone());
        }
        self.publish_owned();
        Ok(())
    }

    async fn fetch_committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<u64>>, ClientError> {
        let req = GroupRequest::FetchOffsets {
            group: self.config.group.clone(),
            partitions: partitions.to_vec(),
        };
        match call_group(&self.routes.any_node().await, &req).await? {
            GroupResponse::Offsets { offsets } => Ok(offsets
                .into_iter()
                .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    fn publish_owned(&self) {
        self.shared.member.lock().owned = self.owned.iter().cloned().collect();
    }

    /// The positions of `partitions` that moved since they were last committed.
    fn positions(&self, partitions: &[TopicPartition]) -> Vec<PartitionOffset> {
        partitions
            .iter()
            .filter_map(|tp| {
                let offset = self.consumer.position_tp(tp)?;
                (self.committed.get(tp) != Some(&offset)).then(|| PartitionOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset,
                })
            })
            .collect()
    }

    async fn auto_commit(&mut self) -> Result<(), ClientError> {
        let CommitMode::Auto { interval } = self.config.commit else {
            return Ok(());
        };
        if self.last_commit.elapsed() < interval {
            return Ok(());
        }
        self.last_commit = Instant::now();
        match self.commit().await {
            Err(e) if !background_tolerates(&e) => Err(e),
            Err(e) => {
                tracing::warn!(group = %self.config.group, error = %e, "auto-commit failed");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    async fn send_commit(&mut self, offsets: Vec<PartitionOffset>) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let (generation, member_id) = {
            let m = self.shared.member.lock();
            (m.generation, m.member_id.clone())
        };
        let Some(member_id) = member_id else {
            return Err(ClientError::Membership(
                "the member is joining the group again; its partitions were dropped".into(),
            ));
        };
        let req = GroupRequest::Commit {
            group: self.config.group.clone(),
            member_id: Some(member_id),
            offsets: offsets.clone(),
        };
        match call_group(&self.routes.any_node().await, &req).await {
            Ok(GroupResponse::Committed { .. }) => {
                for o in offsets {
                    self.committed
                        .insert(TopicPartition::new(o.topic, o.partition), o.offset);
                }
                Ok(())
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                if e.code() == Some(ErrorCode::UnknownMember) {
                    self.shared.fence(generation);
                    self.drop_all();
                }
                Err(e)
            }
        }
    }
}

/// Resolves when the heartbeat task publishes a change; never once the task has ended (its failure
/// is reported by `sync`).
async fn view_changed(view: &mut watch::Receiver<View>) {
    if view.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The partitions to give up and the partitions to start.
fn diff(
    owned: &BTreeSet<TopicPartition>,
    target: &BTreeSet<TopicPartition>,
) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
    (
        owned.difference(target).cloned().collect(),
        target.difference(owned).cloned().collect(),
    )
}

/// Errors that a later attempt may not have: busy or restarting broker, a broken stream.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Wire(w) => w.remote_code().is_none_or(ErrorCode::is_retriable),
        other => other.is_retriable() && !matches!(other, ClientError::Connection(_)),
    }
}

/// Errors that background work (auto-commit) logs instead of failing the application's poll:
/// transient ones, and losing partitions or the membership (the group re-reads, nothing is lost).
fn background_tolerates(e: &ClientError) -> bool {
    transient(e)
        || matches!(e, ClientError::Membership(_))
        || matches!(
            e.code(),
            Some(ErrorCode::UnknownMember | ErrorCode::NotPartitionOwner)
        )
}

/// The heartbeat interval: the configured one, or the coordinator's when shorter.
fn next_interval(configured: Duration, broker_ms: u32) -> Duration {
    let interval = match broker_ms {
        0 => configured,
        ms => configured.min(Duration::from_millis(ms as u64)),
    };
    interval.max(Duration::from_millis(10))
}

/// The heartbeat task: joins, heartbeats, publishes assignments; ends on a non-retriable failure.
struct Heartbeat {
    routes: Arc<Routes>,
    client_id: String,
    group: String,
    topics: Vec<String>,
    session_timeout: Duration,
    interval: Duration,
    max_poll_interval: Duration,
    shared: Arc<Shared>,
    view: watch::Sender<View>,
    /// The last heartbeat the coordinator answered.
    last_ok: Instant,
}

impl Heartbeat {
    async fn run(mut self, first: Duration) {
        let mut interval = first;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.shared.wake.notified() => {}
            }
            if self.stalled() {
                self.leave_stalled().await;
                continue;
            }
            match self.beat().await {
                Ok(next) => interval = next,
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "group membership failed");
                    self.shared.member.lock().failure = Some(e);
                    self.view.send_modify(|_| {}); // wakes a waiting poll
                    return;
                }
            }
        }
    }

    /// One heartbeat (or join); returns when to send the next. `Err` is a failure for good.
    async fn beat(&mut self) -> Result<Duration, ClientError> {
        let (generation, member_id, owned) = {
            let m = self.shared.member.lock();
            if m.fenced {
                return Ok(self.interval); // the consumer has not dropped its partitions yet
            }
            let mut held = m.owned.clone();
            held.extend(m.pending.iter().filter(|tp| !m.owned.contains(tp)).cloned());
            (m.generation, m.member_id.clone(), held)
        };
        let req = GroupRequest::Heartbeat {
            group: self.group.clone(),
            member_id,
            client_id: self.client_id.clone(),
            topics: self.topics.clone(),
            session_timeout_ms: millis_u32(self.session_timeout),
            owned,
        };
        match call_group(&self.routes.any_node().await, &req).await {
            Ok(GroupResponse::Assignment {
                member_id,
                assigned,
                heartbeat_interval_ms,
                ..
            }) => {
                self.last_ok = Instant::now();
                self.accept(generation, member_id, assigned);
                Ok(next_interval(self.interval, heartbeat_interval_ms))
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) if e.code() == Some(ErrorCode::UnknownMember) => {
                tracing::info!(group = %self.group, "membership expired; joining again");
                self.lose(generation);
                Ok(self.interval)
            }
            // On a cluster a lost node is passed over: the next beat goes through another.
            Err(e) if transient(&e) || self.routes.moved(&e) => {
                tracing::warn!(group = %self.group, error = %e, "heartbeat failed; retrying");
                // Past the session timeout the coordinator has given the partitions away.
                if self.last_ok.elapsed() >= self.session_timeout {
                    self.lose(generation);
                }
                Ok(self.interval)
            }
            Err(e) => Err(e),
        }
    }

    fn accept(&self, generation: u64, member_id: String, assigned: Vec<TopicPartition>) {
        let mut m = self.shared.member.lock();
        if m.generation != generation {
            return; // the membership this answers was lost meanwhile
        }
        m.member_id = Some(member_id);
        self.view.send_if_modified(|v| {
            if v.generation == generation && v.assigned == assigned {
                return false;
            }
            v.seq += 1;
            m.pending = assigned
                .iter()
                .filter(|tp| !m.owned.contains(tp))
                .cloned()
                .collect();
            m.pending_seq = v.seq;
            v.generation = generation;
            v.assigned = assigned;
            true
        });
    }

    /// The application has not polled within `max_poll_interval` (and still has a membership).
    fn stalled(&self) -> bool {
        let m = self.shared.member.lock();
        m.member_id.is_some()
            && !m.fenced
            && m.last_poll
                .is_some_and(|t| t.elapsed() > self.max_poll_interval)
    }

    /// Leaves so that a stuck application's partitions move on; its next poll drops them and the
    /// consumer joins again.
    async fn leave_stalled(&mut self) {
        let (generation, member_id) = {
            let m = self.shared.member.lock();
            (m.generation, m.member_id.clone())
        };
        tracing::warn!(group = %self.group, "no poll within max_poll_interval; leaving the group");
        if let Some(member_id) = member_id {
            let req = GroupRequest::Leave {
                group: self.group.clone(),
                member_id,
            };
            if let Err(e) = call_group(&self.routes.any_node().await, &req).await {
                tracing::debug!(group = %self.group, error = %e, "leave failed; the session will expire");
            }
        }
        self.lose(generation);
    }

    fn lose(&self, generation: u64) {
        self.shared.fence(generation);
        self.view.send_modify(|v| v.assigned.clear()); // wakes a waiting poll
    }
}

fn millis_u32(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(tps: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
        tps.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn diff_revokes_what_left_and_starts_what_came() {
        let owned = set(&[("a", 0), ("a", 1), ("b", 0)]);
        let target = set(&[("a", 1), ("b", 0), ("b", 1)]);
        let (revoked, added) = diff(&owned, &target);
        assert_eq!(revoked, vec![TopicPartition::new("a", 0)]);
        assert_eq!(added, vec![TopicPartition::new("b", 1)]);
        let (revoked, added) = diff(&owned, &owned);
        assert!(
            revoked.is_empty() && added.is_empty(),
            "stable partitions are left alone"
        );
    }

    #[test]
    fn the_coordinators_shorter_interval_wins() {
        let configured = Duration::from_millis(500);
        assert_eq!(next_interval(configured, 0), configured);
        assert_eq!(next_interval(configured, 2000), configured);
        assert_eq!(next_interval(configured, 100), Duration::from_millis(100));
        assert_eq!(next_interval(configured, 1), Duration::from_millis(10));
    }

    #[test]
    fn fencing_is_per_generation() {
        let shared = Shared::default();
        shared.member.lock().member_id = Some("m1".into());
        shared.fence(0);
        shared.fence(0); // a second report of the same loss changes nothing
        let m = shared.member.lock();
        assert_eq!(
            (m.generation, m.fenced, m.member_id.clone()),
            (1, true, None)
        );
    }

    #[test]
    fn lost_membership_is_tolerated_by_auto_commit() {
        let remote = |code| {
            ClientError::Wire(crate::wire::WireError::Remote {
                code,
                message: String::new(),
            })
        };
        assert!(background_tolerates(&remote(ErrorCode::UnknownMember)));
        assert!(background_tolerates(&remote(ErrorCode::ServerBusy)));
        assert!(!background_tolerates(&remote(ErrorCode::NotAuthorized)));
    }

    #[test]
    fn config_defaults() {
        let c = GroupConfig::new("g", ["t1", "t2"]);
        assert_eq!(c.topics, vec!["t1".to_string(), "t2".to_string()]);
        assert_eq!(c.reset, SeekTo::Earliest);
        assert_eq!(c.session_timeout, Duration::from_secs(10));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(
            c.commit,
            CommitMode::Auto {
                interval: Duration::from_secs(1)
            }
        );
    }
}
