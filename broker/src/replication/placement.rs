//! Where a new partition's copies go: computed from the topic name, the partition number and the
//! (fixed) member list alone, so every node applying the same create computes the same replica
//! sets. Consecutive partitions start on consecutive nodes, which spreads leaders evenly; the
//! topic's name picks the first node, so one-partition topics do not all land on node 1.

use crate::cluster::{NodeId, PartitionState};

/// The states of partitions `first..first + count` of `topic`, each with `rf` replicas from
/// `members` (ascending ids), the first one leading in epoch 0, all in sync.
pub fn assign(
    topic: &str,
    first: u32,
    count: u32,
    rf: u32,
    min_insync: u32,
    members: &[NodeId],
) -> Vec<PartitionState> {
    let n = members.len().max(1);
    let offset = crc32c::crc32c(topic.as_bytes()) as usize % n;
    (first..first + count)
        .map(|p| {
            let start = (offset + p as usize) % n;
            let replicas: Vec<NodeId> = (0..rf as usize)
                .filter_map(|i| members.get((start + i) % n).copied())
                .collect();
            PartitionState {
                leader: replicas.first().copied(),
                epoch: 0,
                isr: replicas.clone(),
                replicas,
                min_insync,
                version: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_and_leaders_spread() {
        let states = assign("orders", 0, 6, 3, 2, &[1, 2, 3]);
        let mut leaders = [0; 4];
        for s in &states {
            let mut r = s.replicas.clone();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 3);
            assert_eq!(s.isr, s.replicas);
            leaders[s.leader.unwrap() as usize] += 1;
        }
        assert_eq!(&leaders[1..], &[2, 2, 2]);
        // Every node computes the same.
        assert_eq!(states, assign("orders", 0, 6, 3, 2, &[1, 2, 3]));
        // Added partitions continue the rotation.
        assert_eq!(
            assign("orders", 4, 2, 3, 2, &[1, 2, 3]),
            states[4..].to_vec()
        );
    }
}
