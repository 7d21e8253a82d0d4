//! The group coordinator: membership by heartbeat, session expiry, and incremental cooperative
//! rebalancing. Each member has a target (from the sticky assignor) and reports what it owns; a
//! member is given `target ∩ not held by anyone else` (held: reported owned, or granted in the last
//! answer and not yet reported back), so a moving partition is released by its old
//! owner before its new owner gets it, and partitions that stay put are never withdrawn.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use quiver_proto::groups::{MemberDescription, PartitionOffset, TopicPartition};

use super::assign::{assign, MemberView};
use super::GroupError;

/// Bounds on what members may ask for as a session timeout.
pub const MIN_SESSION: Duration = Duration::from_millis(500);
pub const MAX_SESSION: Duration = Duration::from_secs(300);
/// Heartbeat pace while a partition is moving (the new owner is waiting for the old one).
const REBALANCE_HEARTBEAT_MS: u32 = 100;
/// Heartbeat pace when the group is stable (members may heartbeat less often).
const STABLE_HEARTBEAT_MS: u32 = 1000;
/// Most live members one group may have (each costs memory and assignor time).
pub const MAX_MEMBERS: usize = 10_000;

#[derive(Debug)]
struct Member {
    client_id: String,
    topics: BTreeSet<String>,
    session: Duration,
    last_seen: Instant,
    owned: BTreeSet<TopicPartition>,
    target: BTreeSet<TopicPartition>,
    /// What the last answer gave it: it may be reading these before its next heartbeat reports
    /// them, so nobody else may be given them meanwhile.
    granted: BTreeSet<TopicPartition>,
}

#[derive(Debug, Default)]
struct Group {
    epoch: u64,
    members: BTreeMap<String, Member>,
    /// The epoch and topic sizes the targets were computed for: heartbeats of a stable group
    /// skip the assignor.
    targeted: Option<(u64, BTreeMap<String, u32>)>,
}

/// What a heartbeat asks.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub group: String,
    pub member_id: Option<String>,
    pub client_id: String,
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub owned: Vec<TopicPartition>,
}

/// What a heartbeat gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub member_id: String,
    pub epoch: u64,
    pub assigned: Vec<TopicPartition>,
    pub heartbeat_interval_ms: u32,
}

#[derive(Debug, Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: AtomicU64,
}

impl Coordinator {
    /// Joins or heartbeats; `partitions` tells how many partitions a topic has (None: unknown).
    pub fn heartbeat(
        &self,
        hb: Heartbeat,
        partitions: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<Assignment, GroupError> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let group = groups.entry(hb.group.clone()).or_default();
        expire_members(group, now);
        let id = match hb.member_id {
            Some(id) if group.members.contains_key(&id) => id,
            Some(id) => {
                return Err(GroupError::UnknownMember {
                    group: hb.group,
                    member: id,
                })
            }
            None if group.members.len() >= MAX_MEMBERS => {
                return Err(GroupError::Full {
                    group: hb.group,
                    max: MAX_MEMBERS,
                })
            }
            None => self.new_member(group, &hb.client_id),
        };
        let topics: BTreeSet<String> = hb.topics.into_iter().collect();
        let changed = match group.members.get_mut(&id) {
            Some(m) => {
                m.last_seen = now;
                m.session = hb.session_timeout.clamp(MIN_SESSION, MAX_SESSION);
                m.owned = hb.owned.into_iter().collect();
                m.client_id = hb.client_id;
                std::mem::replace(&mut m.topics, topics) != m.topics
            }
            None => false,
        };
        if changed {
            group.epoch += 1;
        }
        retarget(group, partitions);
        let answer = answer(group, &id);
        if let Some(m) = group.members.get_mut(&id) {
            m.granted = answer.assigned.iter().cloned().collect();
        }
        Ok(answer)
    }

    fn new_member(&self, group: &mut Group, client_id: &str) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        let id = format!("{client_id}-{:x}-{n}", crate::util::now_ms());
        group.members.insert(
            id.clone(),
            Member {
                client_id: client_id.to_owned(),
                topics: BTreeSet::new(),
                session: MIN_SESSION,
                last_seen: Instant::now(),
                owned: BTreeSet::new(),
                target: BTreeSet::new(),
                granted: BTreeSet::new(),
            },
        );
        group.epoch += 1;
        id
    }

    /// Removes a member at once; its partitions go to the others on their next heartbeat.
    pub fn leave(&self, group: &str, member: &str) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let unknown = || GroupError::UnknownMember {
            group: group.to_owned(),
            member: member.to_owned(),
        };
        let g = groups.get_mut(group).ok_or_else(unknown)?;
        g.members.remove(member).ok_or_else(unknown)?;
        g.epoch += 1;
        Ok(())
    }

    /// Removes members whose session ran out; returns how many.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let mut removed = 0;
        for g in groups.values_mut() {
            removed += expire_members(g, now);
        }
        groups.retain(|_, g| !g.members.is_empty());
        removed
    }

    /// Checks that `member` may commit these offsets: it must be live and own (or be assigned)
    /// each partition. Without a member, no live member may own or be assigned the partition.
    pub fn check_commit(
        &self,
        group: &str,
        member: Option<&str>,
        offsets: &[PartitionOffset],
    ) -> Result<(), GroupError> {
        let groups = self.groups.lock();
        let g = groups.get(group);
        if let Some(id) = member {
            if !g.is_some_and(|g| g.members.contains_key(id)) {
                return Err(GroupError::UnknownMember {
                    group: group.to_owned(),
                    member: id.to_owned(),
                });
            }
        }
        for o in offsets {
            let tp = TopicPartition::new(o.topic.clone(), o.partition);
            let allowed = match member {
                Some(id) => owns(g, id, &tp),
                None => !g.is_some_and(|g| g.members.keys().any(|id| owns(Some(g), id, &tp))),
            };
            if !allowed {
                return Err(GroupError::NotPartitionOwner {
                    group: group.to_owned(),
                    partition: tp,
                });
            }
        }
        Ok(())
    }

    /// Whether a live member consumes `topic`.
    pub fn consumes(&self, group: &str, topic: &str) -> bool {
        self.groups
            .lock()
            .get(group)
            .is_some_and(|g| g.members.values().any(|m| m.topics.contains(topic)))
    }

    /// Live groups with their epoch and members.
    pub fn snapshot(&self, group: &str) -> Option<(u64, Vec<MemberDescription>)> {
        let groups = self.groups.lock();
        let g = groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                topics: m.topics.iter().cloned().collect(),
                assigned: given(g, id).into_iter().collect(),
                owned: m.owned.iter().cloned().collect(),
                session_timeout_ms: m.session.as_millis() as u32,
                last_heartbeat_ms_ago: m.last_seen.elapsed().as_millis() as u64,
            })
            .collect();
        Some((g.epoch, members))
    }

    /// Names of the groups with live members, and their member counts.
    pub fn live_groups(&self) -> Vec<(String, u32)> {
        let groups = self.groups.lock();
        let mut v: Vec<(String, u32)> = groups
            .iter()
            .map(|(n, g)| (n.clone(), g.members.len() as u32))
            .collect();
        v.sort();
        v
    }
}

/// Whether `id` holds `tp`: reports owning it, or was given it (it may be reading it without
/// having reported so yet). A partition only targeted at it is still another member's.
fn owns(g: Option<&Group>, id: &str, tp: &TopicPartition) -> bool {
    g.and_then(|g| g.members.get(id))
        .is_some_and(|m| m.owned.contains(tp) || m.granted.contains(tp))
}

fn expire_members(g: &mut Group, now: Instant) -> usize {
    let before = g.members.len();
    g.members
        .retain(|_, m| now.duration_since(m.last_seen) <= m.session);
    let removed = before - g.members.len();
    if removed > 0 {
        g.epoch += 1;
    }
    removed
}

/// Recomputes every member's target from the current ones (sticky) and the topics' sizes, when
/// the membership or a topic's partition count changed since the last time.
fn retarget(g: &mut Group, partitions: &dyn Fn(&str) -> Option<u32>) {
    let topics: BTreeSet<&String> = g.members.values().flat_map(|m| &m.topics).collect();
    let counts: BTreeMap<String, u32> = topics
        .into_iter()
        .filter_map(|t| partitions(t).map(|n| (t.clone(), n)))
        .collect();
    if g.targeted.as_ref() == Some(&(g.epoch, counts.clone())) {
        return;
    }
    let views: BTreeMap<String, MemberView> = g
        .members
        .iter()
        .map(|(id, m)| {
            let mut current: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
            for tp in &m.target {
                current
                    .entry(tp.topic.clone())
                    .or_default()
                    .insert(tp.partition);
            }
            let view = MemberView {
                topics: m.topics.clone(),
                current,
            };
            (id.clone(), view)
        })
        .collect();
    let mut targets = assign(&views, &counts);
    g.targeted = Some((g.epoch, counts));
    for (id, m) in g.members.iter_mut() {
        m.target = targets
            .remove(id)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(t, ps)| {
                ps.into_iter()
                    .map(move |p| TopicPartition::new(t.clone(), p))
            })
            .collect();
    }
}

/// What member `id` may own now: its target minus partitions another member holds (owns, or was
/// given and may already be reading).
fn given(g: &Group, id: &str) -> BTreeSet<TopicPartition> {
    let Some(m) = g.members.get(id) else {
        return BTreeSet::new();
    };
    m.target
        .iter()
        .filter(|tp| {
            !g.members
                .iter()
                .any(|(other, o)| other != id && (o.owned.contains(*tp) || o.granted.contains(*tp)))
        })
        .cloned()
        .collect()
}

fn answer(g: &Group, id: &str) -> Assignment {
    let moving = g.members.values().any(|m| m.owned != m.target);
    Assignment {
        member_id: id.to_owned(),
        epoch: g.epoch,
        assigned: given(g, id).into_iter().collect(),
        heartbeat_interval_ms: if moving {
            REBALANCE_HEARTBEAT_MS
        } else {
            STABLE_HEARTBEAT_MS
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(member: Option<&str>, owned: &[u32]) -> Heartbeat {
        Heartbeat {
            group: "g".into(),
            member_id: member.map(str::to_owned),
            client_id: "c".into(),
            topics: vec!["t".into()],
            session_timeout: Duration::from_secs(10),
            owned: owned.iter().map(|p| TopicPartition::new("t", *p)).collect(),
        }
    }

    fn parts(a: &Assignment) -> Vec<u32> {
        a.assigned.iter().map(|tp| tp.partition).collect()
    }

    const SIX: &dyn Fn(&str) -> Option<u32> = &|_| Some(6);

    #[test]
    fn a_moving_partition_waits_for_its_old_owner_and_the_rest_keep_flowing() {
        let c = Coordinator::default();
        let a = c.heartbeat(hb(None, &[]), SIX).unwrap();
        assert_eq!(parts(&a), vec![0, 1, 2, 3, 4, 5]);
        let a_id = a.member_id.clone();
        c.heartbeat(hb(Some(&a_id), &[0, 1, 2, 3, 4, 5]), SIX)
            .unwrap();
        // b joins: it gets nothing until a releases.
        let b = c.heartbeat(hb(None, &[]), SIX).unwrap();
        assert!(b.assigned.is_empty());
        assert_eq!(b.heartbeat_interval_ms, REBALANCE_HEARTBEAT_MS);
        // a is told to keep three: those it keeps are a subset of what it had (no pause).
        let a2 = c
            .heartbeat(hb(Some(&a_id), &[0, 1, 2, 3, 4, 5]), SIX)
            .unwrap();
        let kept = parts(&a2);
        assert_eq!(kept.len(), 3);
        // a releases the others; b now gets them.
        c.heartbeat(hb(Some(&a_id), &kept), SIX).unwrap();
        let b2 = c.heartbeat(hb(Some(&b.member_id), &[]), SIX).unwrap();
        let moved = parts(&b2);
        assert_eq!(moved.len(), 3);
        assert!(moved.iter().all(|p| !kept.contains(p)));
        // Only the owner (or nobody, without a member id) may commit.
        let off = |p| PartitionOffset {
            topic: "t".into(),
            partition: p,
            offset: 1,
        };
        c.check_commit("g", Some(&a_id), &[off(kept[0])]).unwrap();
        let e = c
            .check_commit("g", Some(&a_id), &[off(moved[0])])
            .unwrap_err();
        assert!(matches!(e, GroupError::NotPartitionOwner { .. }), "{e}");
        assert!(c.check_commit("g", None, &[off(0)]).is_err());
    }

    #[test]
    fn a_partition_granted_but_not_yet_reported_is_not_given_twice() {
        let c = Coordinator::default();
        let a = c.heartbeat(hb(None, &[]), SIX).unwrap();
        assert_eq!(parts(&a).len(), 6);
        // b joins before a's next heartbeat reports what it reads: b must wait.
        let b = c.heartbeat(hb(None, &[]), SIX).unwrap();
        assert!(b.assigned.is_empty(), "{b:?}");
        // a hears it must give three up, still reading all six...
        let a2 = c
            .heartbeat(hb(Some(&a.member_id), &[0, 1, 2, 3, 4, 5]), SIX)
            .unwrap();
        let b2 = c.heartbeat(hb(Some(&b.member_id), &[]), SIX).unwrap();
        assert!(b2.assigned.is_empty(), "{b2:?}");
        // ...and once it reports them released, b gets them.
        c.heartbeat(hb(Some(&a.member_id), &parts(&a2)), SIX)
            .unwrap();
        let b3 = c.heartbeat(hb(Some(&b.member_id), &[]), SIX).unwrap();
        assert_eq!(b3.assigned.len(), 3);
        assert!(parts(&b3).iter().all(|p| !parts(&a2).contains(p)));
    }

    #[test]
    fn leave_and_unknown_members() {
        let c = Coordinator::default();
        let a = c.heartbeat(hb(None, &[]), SIX).unwrap();
        c.leave("g", &a.member_id).unwrap();
        let e = c.heartbeat(hb(Some(&a.member_id), &[]), SIX).unwrap_err();
        assert!(matches!(e, GroupError::UnknownMember { .. }));
        assert!(c.leave("g", "nobody").is_err());
        assert_eq!(c.expire(), 0);
        assert!(c.live_groups().is_empty());
    }
}
