//! Replicas per zone (as Cassandra's NetworkTopologyStrategy): a ring whose configuration names
//! a replica count for each zone ([`RingConfig::replicas_per_zone`](super::RingConfig)) places,
//! for every key, the first `n_z` members of each zone `z` met walking clockwise from the key, so
//! each data centre holds its own copies whatever the others do.
//!
//! The *per-zone picks* of a walk are those members; the replica order of such a ring is the
//! picks in zone-diverse order (the first pick of each zone, then the other picks, both in walk
//! order), then every other member in walk order (the fallbacks). A bucket may ask for fewer
//! replicas in some zones: its list is the first `m_z` picks of each zone, always a subset of the
//! ring's, so the replicas every node plans transfers, anti-entropy and reaping for cover it.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::{Member, Ring, RingConfig, RingError};
use crate::id::NodeId;

/// Replica count of each zone index (0 for zones the map does not name); the map's names are
/// matched against the members' zones. Zones named but without members get nothing.
pub(super) fn quota_of(
    members: &[Member],
    zones: &[u32],
    zone_count: usize,
    per_zone: &BTreeMap<String, u32>,
) -> Vec<u32> {
    let mut quota = vec![0u32; zone_count];
    for (member, &zone) in members.iter().zip(zones) {
        if let Some(count) = member.zone.as_deref().and_then(|z| per_zone.get(z)) {
            quota[zone as usize] = *count;
        }
    }
    quota
}

/// Members of each zone index.
pub(super) fn zone_sizes(zones: &[u32], zone_count: usize) -> Vec<u32> {
    let mut sizes = vec![0u32; zone_count];
    for &zone in zones {
        sizes[zone as usize] += 1;
    }
    sizes
}

/// How many replicas a quota places: each zone's count, at most its size.
pub(super) fn placed(quota: &[u32], sizes: &[u32]) -> usize {
    quota
        .iter()
        .zip(sizes)
        .map(|(&q, &size)| q.min(size) as usize)
        .sum()
}

/// Members owning no segment, in index order (they close every walk).
pub(super) fn unowned(seg_owner: &[u32], members: usize) -> Vec<u32> {
    let mut owned = vec![false; members];
    for &owner in seg_owner {
        owned[owner as usize] = true;
    }
    (0..members as u32)
        .filter(|&i| !owned[i as usize])
        .collect()
}

/// The per-zone picks walking clockwise from `segment` (members owning no segment, `unowned`,
/// last), in zone-diverse order, then, up to `len` members in all, the other members in walk
/// order. `sizes` are [`zone_sizes`]. Walks only as far as it must.
pub(super) fn per_zone_row(
    seg_owner: &[u32],
    zones: &[u32],
    (sizes, unowned): (&[u32], &[u32]),
    quota: &[u32],
    segment: usize,
    len: usize,
) -> Vec<u32> {
    let wanted = placed(quota, sizes);
    let mut left = quota.to_vec();
    let mut seen = vec![false; zones.len()];
    let (mut picks, mut others) = (Vec::with_capacity(wanted), Vec::new());
    let mut visit = |member: u32, picks: &mut Vec<u32>, others: &mut Vec<u32>| {
        if core::mem::replace(&mut seen[member as usize], true) {
            return;
        }
        let zone = zones[member as usize] as usize;
        if left[zone] > 0 {
            left[zone] -= 1;
            picks.push(member);
        } else {
            others.push(member);
        }
    };
    let done = |picks: &Vec<u32>, others: &Vec<u32>| {
        picks.len() == wanted && picks.len() + others.len() >= len
    };
    let segments = seg_owner.len();
    for step in 0..segments {
        if done(&picks, &others) {
            break;
        }
        visit(
            seg_owner[(segment + step) % segments],
            &mut picks,
            &mut others,
        );
    }
    for &member in unowned {
        if done(&picks, &others) {
            break;
        }
        visit(member, &mut picks, &mut others);
    }
    let mut row = zone_diverse(&picks, zones, quota.len());
    row.extend(others);
    row.truncate(len);
    row
}

/// `members` reordered: the first of each zone, then the rest, both in the given order.
pub(super) fn zone_diverse(members: &[u32], zones: &[u32], zone_count: usize) -> Vec<u32> {
    let mut zone_used = vec![false; zone_count];
    let mut first = Vec::with_capacity(members.len());
    let mut rest = Vec::new();
    for &i in members {
        let zone = zones[i as usize] as usize;
        if core::mem::replace(&mut zone_used[zone], true) {
            rest.push(i);
        } else {
            first.push(i);
        }
    }
    first.extend(rest);
    first
}

/// The rows of [`per_zone_row`] for every segment, `len` per segment (`len` is at most the
/// member count, and every row reaches it: the walk visits every member).
pub(super) fn per_zone_lists(
    seg_owner: &[u32],
    zones: &[u32],
    quota: &[u32],
    len: usize,
) -> Vec<u32> {
    let sizes = zone_sizes(zones, quota.len());
    let unowned = unowned(seg_owner, zones.len());
    let mut table = Vec::with_capacity(seg_owner.len() * len);
    for segment in 0..seg_owner.len() {
        table.extend(per_zone_row(
            seg_owner,
            zones,
            (&sizes, &unowned),
            quota,
            segment,
            len,
        ));
    }
    table
}

/// Zone index of each member, numbered in member order of first appearance (so zone `z`'s first
/// member comes before zone `z + 1`'s); a member without a zone gets a zone of its own.
pub(super) fn zone_ids(members: &[Member]) -> (Vec<u32>, usize) {
    let mut named: BTreeMap<&str, u32> = BTreeMap::new();
    let mut ids = Vec::with_capacity(members.len());
    let mut next = 0u32;
    for member in members {
        let id = match &member.zone {
            Some(zone) => *named.entry(zone.as_str()).or_insert_with(|| {
                next += 1;
                next - 1
            }),
            None => {
                next += 1;
                next - 1
            }
        };
        ids.push(id);
    }
    (ids, next as usize)
}

/// Checks a configuration's replicas per zone: each zone named, with at least 1 replica, and
/// `target_n` their sum.
pub(super) fn check_config(config: &RingConfig) -> Result<(), RingError> {
    let invalid = |reason: String| Err(RingError::InvalidZoneReplicas { reason });
    if let Some((zone, _)) = config
        .replicas_per_zone
        .iter()
        .find(|(zone, count)| **count == 0 || zone.trim().is_empty())
    {
        return invalid(alloc::format!(
            "zone {zone:?} needs a name and at least 1 replica"
        ));
    }
    let sum: u64 = config
        .replicas_per_zone
        .values()
        .map(|&c| u64::from(c))
        .sum();
    if sum != config.target_n as u64 {
        return invalid(alloc::format!(
            "the counts add up to {sum}, not target_n = {}",
            config.target_n
        ));
    }
    Ok(())
}

impl Ring {
    /// The replicas of `position` for a bucket that asks for `per_zone[z]` replicas in each zone
    /// `z`: the first that many members of each zone walking clockwise, in zone-diverse order (see
    /// the [module docs](self)). Zones without members, or not named, hold none; a zone with fewer
    /// members than asked holds all it has. For a ring with replicas per zone and counts no larger
    /// than the ring's, a subset of [`Ring::preference_list`] for `target_n`.
    pub fn zone_preference_list(
        &self,
        position: u128,
        per_zone: &BTreeMap<String, u32>,
    ) -> Vec<NodeId> {
        let quota = quota_of(&self.members, &self.zones, self.zone_count, per_zone);
        let wanted = placed(&quota, &self.zone_sizes);
        let shape = (&self.zone_sizes[..], &self.unowned[..]);
        let segment = self.segment_of(position);
        per_zone_row(&self.seg_owner, &self.zones, shape, &quota, segment, wanted)
            .into_iter()
            .map(|i| self.members[i as usize].id.clone())
            .collect()
    }

    /// The zone of a member (`None` for a member without one, or an unknown id).
    pub fn zone_of(&self, id: &NodeId) -> Option<&str> {
        self.member(id).and_then(|m| m.zone.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{key_position, LegacyRing, Member, Ring, RingConfig, RingError, Strategy};
    use alloc::collections::{BTreeMap, BTreeSet};
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    use crate::id::NodeId;

    fn per_zone(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
        counts.iter().map(|(z, c)| (String::from(*z), *c)).collect()
    }

    fn config(partitions: u32, counts: &[(&str, u32)]) -> RingConfig {
        let replicas_per_zone = per_zone(counts);
        RingConfig {
            partitions,
            strategy: Strategy::Partitions,
            target_n: replicas_per_zone.values().sum::<u32>() as usize,
            replicas_per_zone,
        }
    }

    /// `sizes[z]` members in zone `z{z}`, capacities cycling 1..=3 when `mixed`.
    fn members(sizes: &[usize], mixed: bool) -> Vec<Member> {
        let mut all = Vec::new();
        for (z, &size) in sizes.iter().enumerate() {
            for i in 0..size {
                let capacity = if mixed { 1 + (i % 3) as u32 } else { 1 };
                all.push(Member::new(format!("z{z}-m{i}"), capacity).in_zone(format!("z{z}")));
            }
        }
        all
    }

    fn zone_of(ring: &Ring, id: &NodeId) -> String {
        String::from(ring.zone_of(id).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every key's replicas are `n_z` distinct members of each zone (all of a zone smaller
        /// than that), and they are the first members of their zone walking clockwise: the same
        /// as a ring of that zone's members alone would hold, in the global walk.
        #[test]
        fn each_zone_holds_its_count_of_distinct_replicas(
            sizes in prop::collection::vec(1usize..7, 1..4),
            counts in prop::collection::vec(1u32..4, 3),
            mixed in any::<bool>(),
            position in any::<u128>(),
        ) {
            let names: Vec<String> = (0..sizes.len()).map(|z| format!("z{z}")).collect();
            let wanted: Vec<(&str, u32)> =
                names.iter().zip(&counts).map(|(n, c)| (n.as_str(), *c)).collect();
            let ring = Ring::new(config(64, &wanted), members(&sizes, mixed)).unwrap();
            let list = ring.preference_list(position, ring.config().target_n);
            let distinct: BTreeSet<&NodeId> = list.iter().collect();
            prop_assert_eq!(distinct.len(), list.len());
            let placed: usize = sizes.iter().zip(&counts).map(|(&s, &c)| s.min(c as usize)).sum();
            let in_zones: Vec<&NodeId> = list.iter().take(placed).collect();
            for (z, (&size, &count)) in sizes.iter().zip(&counts).enumerate() {
                let zone = format!("z{z}");
                let held = in_zones.iter().filter(|id| zone_of(&ring, id) == zone).count();
                prop_assert_eq!(held, size.min(count as usize), "zone {}", zone);
            }
            // The bucket's own list for the ring's counts is the same set, and for smaller
            // counts a subset.
            let same = ring.zone_preference_list(position, &per_zone(&wanted));
            prop_assert_eq!(
                same.iter().collect::<BTreeSet<_>>(),
                in_zones.iter().copied().collect::<BTreeSet<_>>()
            );
            let fewer: Vec<(&str, u32)> = wanted.iter().map(|(z, c)| (*z, (c - 1).max(1))).collect();
            let subset = ring.zone_preference_list(position, &per_zone(&fewer));
            prop_assert!(subset.iter().all(|id| same.contains(id)));
            // Lists are prefixes of longer ones, and the extended list holds everyone once.
            let shorter = ring.preference_list(position, list.len().min(2));
            prop_assert_eq!(&list[..shorter.len()], &shorter[..]);
            let extended = ring.extended_preference_list(position, list.len());
            prop_assert_eq!(extended.len(), ring.members().len());
            prop_assert_eq!(&extended[..list.len()], &list[..]);
        }
    }

    #[test]
    fn zones_share_the_replica_load_by_capacity_within_each_zone() {
        // Two data centres of unequal size, three copies in one and two in the other: each
        // member's share of its zone's copies is close to its share of the zone's capacity.
        let counts = [("z0", 3), ("z1", 2)];
        let ring = Ring::new(config(1024, &counts), members(&[6, 4], true)).unwrap();
        let load = ring.replica_load(5);
        for (zone, copies) in counts {
            let in_zone: Vec<&Member> = ring
                .members()
                .iter()
                .filter(|m| m.zone.as_deref() == Some(zone))
                .collect();
            let capacity: u32 = in_zone.iter().map(|m| m.capacity).sum();
            for member in in_zone {
                // Fraction of all 5 copies; the zone holds copies/5 of them.
                let share = load[&member.id] * 5.0 / f64::from(copies);
                let fair = f64::from(member.capacity) / f64::from(capacity);
                assert!(
                    (share / fair - 1.0).abs() < 0.25,
                    "{} holds {share:.3} of zone {zone}'s copies, fair {fair:.3}",
                    member.id
                );
            }
        }
    }

    #[test]
    fn bad_zone_counts_are_refused() {
        let sum_wrong = RingConfig {
            target_n: 4,
            ..config(64, &[("a", 2), ("b", 1)])
        };
        let zero = config(64, &[("a", 0), ("b", 3)]);
        for bad in [sum_wrong, zero] {
            assert!(matches!(
                Ring::new(bad, members(&[2, 2], false)),
                Err(RingError::InvalidZoneReplicas { .. })
            ));
        }
    }

    #[test]
    fn a_ring_serialized_before_zone_replicas_decodes_as_it_was() {
        let flat = RingConfig {
            partitions: 32,
            ..RingConfig::default()
        };
        let ring = Ring::new(flat, members(&[3, 2], false)).unwrap();
        let config = ring.config();
        let old = (
            (config.partitions, config.strategy.clone(), config.target_n),
            ring.members().to_vec(),
            ring.seg_owner.clone(),
        );
        let bytes = postcard::to_allocvec(&old).unwrap();
        let decoded: LegacyRing = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.0, ring);
        let position = key_position(b"b", b"k");
        assert_eq!(
            decoded.0.preference_list(position, 3),
            ring.preference_list(position, 3)
        );
    }
}
