//! The assignor: a sticky, balanced split of each topic's partitions over the members that consume
//! it. Sticky so that a rebalance moves as few partitions as possible (cooperative rebalancing only
//! pauses the partitions that move); balanced so that member counts differ by at most one per topic,
//! with the extra partitions of different topics spread over different members.

use std::collections::{BTreeMap, BTreeSet};

/// A member as the assignor sees it: the topics it consumes and what it holds now.
#[derive(Debug, Clone, Default)]
pub struct MemberView {
    pub topics: BTreeSet<String>,
    /// The member's current target, per topic (kept where the balance allows).
    pub current: BTreeMap<String, BTreeSet<u32>>,
}

/// The new target per member and topic. `partitions` gives each topic's partition count; topics
/// without a count (unknown or deleted) get no assignment.
pub fn assign(
    members: &BTreeMap<String, MemberView>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeMap<String, BTreeSet<u32>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<u32>>> = members
        .keys()
        .map(|m| (m.clone(), BTreeMap::new()))
        .collect();
    // Total partitions per member so far: the tie-breaker for who takes a topic's extras.
    let mut load: BTreeMap<&str, usize> = members.keys().map(|m| (m.as_str(), 0)).collect();
    for (topic, &count) in partitions {
        let subscribers: Vec<&str> = members
            .iter()
            .filter(|(_, v)| v.topics.contains(topic))
            .map(|(m, _)| m.as_str())
            .collect();
        if subscribers.is_empty() || count == 0 {
            continue;
        }
        let held = |m: &str| -> BTreeSet<u32> {
            members[m]
                .current
                .get(topic)
                .map(|s| s.iter().copied().filter(|&p| p < count).collect())
                .unwrap_or_default()
        };
        for (m, parts) in assign_topic(count, &subscribers, &held, &load) {
            *load.entry(m).or_default() += parts.len();
            if !parts.is_empty() {
                if let Some(per_topic) = out.get_mut(m) {
                    per_topic.insert(topic.clone(), parts);
                }
            }
        }
    }
    out
}

/// One topic: caps of `count / n` (+1 for `count % n` members), members keep what they hold up to
/// their cap, then the free partitions fill the members below their cap.
fn assign_topic<'a>(
    count: u32,
    subscribers: &[&'a str],
    held: &dyn Fn(&str) -> BTreeSet<u32>,
    load: &BTreeMap<&str, usize>,
) -> Vec<(&'a str, BTreeSet<u32>)> {
    let n = subscribers.len();
    let (base, mut extra) = (count as usize / n, count as usize % n);
    // Who gets an extra partition: those holding the most of this topic already (fewest moves),
    // then the least loaded overall, then by id for determinism.
    let mut order: Vec<(&'a str, BTreeSet<u32>)> =
        subscribers.iter().map(|m| (*m, held(m))).collect();
    order.sort_by(|(a, ha), (b, hb)| {
        hb.len()
            .cmp(&ha.len())
            .then(load.get(a).cmp(&load.get(b)))
            .then(a.cmp(b))
    });
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut plan: Vec<(&'a str, usize, BTreeSet<u32>)> = Vec::with_capacity(n);
    for (m, h) in order {
        let cap = if extra > 0 {
            extra -= 1;
            base + 1
        } else {
            base
        };
        let keep: BTreeSet<u32> = h
            .into_iter()
            .filter(|p| !taken.contains(p))
            .take(cap)
            .collect();
        taken.extend(keep.iter().copied());
        plan.push((m, cap, keep));
    }
    let mut free = (0..count).filter(|p| !taken.contains(p));
    for (_, cap, keep) in plan.iter_mut() {
        while keep.len() < *cap {
            match free.next() {
                Some(p) => {
                    keep.insert(p);
                }
                None => break,
            }
        }
    }
    plan.into_iter().map(|(m, _, keep)| (m, keep)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(topics: &[&str], current: &[(&str, &[u32])]) -> MemberView {
        MemberView {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            current: current
                .iter()
                .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
                .collect(),
        }
    }

    fn counts(t: &[(&str, u32)]) -> BTreeMap<String, u32> {
        t.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn of(a: &BTreeMap<String, BTreeMap<String, BTreeSet<u32>>>, m: &str, t: &str) -> Vec<u32> {
        a[m].get(t)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn three_members_split_six_partitions_two_each() {
        let members: BTreeMap<String, MemberView> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), view(&["t"], &[])))
            .collect();
        let a = assign(&members, &counts(&[("t", 6)]));
        let mut all = Vec::new();
        for m in ["a", "b", "c"] {
            assert_eq!(of(&a, m, "t").len(), 2, "{a:?}");
            all.extend(of(&a, m, "t"));
        }
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_join_moves_only_what_balance_needs() {
        let mut members: BTreeMap<String, MemberView> = BTreeMap::new();
        members.insert("a".into(), view(&["t"], &[("t", &[0, 1, 2])]));
        members.insert("b".into(), view(&["t"], &[("t", &[3, 4, 5])]));
        members.insert("c".into(), view(&["t"], &[]));
        let a = assign(&members, &counts(&[("t", 6)]));
        // a and b each give up exactly one partition, and keep the rest.
        let (pa, pb, pc) = (of(&a, "a", "t"), of(&a, "b", "t"), of(&a, "c", "t"));
        assert_eq!((pa.len(), pb.len(), pc.len()), (2, 2, 2));
        assert!(pa.iter().all(|p| [0, 1, 2].contains(p)));
        assert!(pb.iter().all(|p| [3, 4, 5].contains(p)));
    }

    #[test]
    fn a_leave_hands_its_partitions_to_the_rest_and_keeps_theirs() {
        let mut members: BTreeMap<String, MemberView> = BTreeMap::new();
        members.insert("a".into(), view(&["t"], &[("t", &[0, 1])]));
        members.insert("c".into(), view(&["t"], &[("t", &[4, 5])]));
        let a = assign(&members, &counts(&[("t", 6)]));
        assert!(of(&a, "a", "t").starts_with(&[0, 1]));
        assert!(of(&a, "c", "t").ends_with(&[4, 5]));
        assert_eq!(of(&a, "a", "t").len() + of(&a, "c", "t").len(), 6);
    }

    #[test]
    fn topics_go_only_to_their_subscribers_and_extras_spread() {
        let mut members: BTreeMap<String, MemberView> = BTreeMap::new();
        members.insert("a".into(), view(&["x", "y"], &[]));
        members.insert("b".into(), view(&["x", "y"], &[]));
        members.insert("c".into(), view(&["z"], &[]));
        let a = assign(
            &members,
            &counts(&[("x", 1), ("y", 1), ("z", 2), ("gone", 3)]),
        );
        // One single-partition topic each instead of both on one member.
        assert_eq!(of(&a, "a", "x").len() + of(&a, "a", "y").len(), 1);
        assert_eq!(of(&a, "b", "x").len() + of(&a, "b", "y").len(), 1);
        assert_eq!(of(&a, "c", "z"), vec![0, 1]);
        assert!(of(&a, "a", "z").is_empty());
    }

    #[test]
    fn stale_holdings_beyond_the_partition_count_are_ignored() {
        let mut members: BTreeMap<String, MemberView> = BTreeMap::new();
        members.insert("a".into(), view(&["t"], &[("t", &[7, 8])]));
        let a = assign(&members, &counts(&[("t", 2)]));
        assert_eq!(of(&a, "a", "t"), vec![0, 1]);
    }
}
