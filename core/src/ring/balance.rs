//! How balanced a ring is (each member's share of ownership and of replicas) and how much of
//! the key space a change of ring moves: the measures the claim is judged by.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::{Arc, PartitionId, Ring, NONE, TWO_POW_128};
use crate::id::NodeId;

impl Ring {
    /// Fraction of the key space for which each member is the first replica. Every member is present;
    /// the fractions add up to 1.
    pub fn ownership(&self) -> BTreeMap<NodeId, f64> {
        self.replica_load(1)
    }

    /// Fraction of all n replicas of the key space each member holds: the member's share of the
    /// storage the cluster needs for `n` copies of everything. Every member is present; the fractions
    /// add up to 1 (all 0 when `n` is 0). With fewer than `n` members, the `min(n, members)` copies
    /// there are count.
    pub fn replica_load(&self, n: usize) -> BTreeMap<NodeId, f64> {
        let k = n.min(self.members.len());
        let mut sums = vec![WideSum::default(); self.members.len()];
        if k > 0 {
            let (lists, stride) = self.lists_for(k);
            for segment in 0..self.seg_owner.len() {
                let arc = self.arc(segment);
                for &i in &lists[segment * stride..segment * stride + k] {
                    sums[i as usize].add(arc);
                }
            }
        }
        let copies = k.max(1) as f64;
        self.per_member(sums.iter().map(|s| s.fraction() / copies).collect())
    }

    /// Fraction of the key space whose preference list for `n` differs between the two rings
    /// (at least one replica changed), and fraction whose first owner changed.
    ///
    /// This returns the first: the share of keys whose *set* of `n` replicas differs (a reordering of
    /// the same nodes moves no data). The second is [`Ring::owner_moved_fraction`]. Exact: computed
    /// over the arcs of both rings, not by sampling keys. The rings may differ in anything, even
    /// strategy and partition count.
    pub fn moved_fraction(&self, other: &Ring, n: usize) -> f64 {
        let k_self = n.min(self.members.len());
        let k_other = n.min(other.members.len());
        if k_self == 0 && k_other == 0 {
            return 0.0;
        }
        // Other's member index -> self's member index, so lists compare as integers.
        let renumber: Vec<u32> = other
            .members
            .iter()
            .map(|m| self.member_index(&m.id).map_or(NONE, |i| i as u32))
            .collect();
        let (lists_self, stride_self) = self.lists_for(k_self.max(1));
        let (lists_other, stride_other) = other.lists_for(k_other.max(1));
        let differs = |position: u128| -> bool {
            if k_self != k_other {
                return true;
            }
            let a = self.segment_of(position) * stride_self;
            let b = other.segment_of(position) * stride_other;
            let mine = &lists_self[a..a + k_self];
            lists_other[b..b + k_other]
                .iter()
                .any(|&o| !mine.contains(&renumber[o as usize]))
        };
        // Cut the ring at every segment end of either ring: each piece lies in one segment of each.
        let mut ends: Vec<u128> = (0..self.seg_owner.len())
            .map(|j| self.segment_end(j))
            .chain((0..other.seg_owner.len()).map(|j| other.segment_end(j)))
            .collect();
        ends.sort_unstable();
        ends.dedup();
        if ends.len() == 1 {
            // A single piece: the whole ring.
            return if differs(ends[0]) { 1.0 } else { 0.0 };
        }
        let mut moved = WideSum::default();
        for (i, &end) in ends.iter().enumerate() {
            if differs(end) {
                let previous = if i == 0 {
                    ends[ends.len() - 1]
                } else {
                    ends[i - 1]
                };
                moved.add(Arc::Part(end.wrapping_sub(previous)));
            }
        }
        moved.fraction()
    }

    /// Fraction of the key space whose first owner differs between the two rings: the same as
    /// [`Ring::moved_fraction`] with `n` = 1.
    pub fn owner_moved_fraction(&self, other: &Ring) -> f64 {
        self.moved_fraction(other, 1)
    }

    /// Partitions (Q-partitions) whose owner differs between the two rings.
    ///
    /// Counted over this ring's partitions, comparing the owners of each partition's first position
    /// (so for rings with equal Q and the partitions strategy, exactly the partitions that change
    /// hands; for the tokens strategy, by [`Ring::partition_owner`]).
    pub fn partitions_moved(&self, other: &Ring) -> usize {
        (0..self.config.partitions)
            .filter(|&p| {
                let start = self.partition_start(PartitionId(p));
                let mine = &self.members[self.owner_at(start) as usize].id;
                let theirs = &other.members[other.owner_at(start) as usize].id;
                mine != theirs
            })
            .count()
    }

    // ----- building -----
}

/// A sum of arc lengths, exact up to 2^32 whole rings.
#[derive(Clone, Copy, Default)]
struct WideSum {
    rings: u32,
    rest: u128,
}

impl WideSum {
    fn add(&mut self, arc: Arc) {
        match arc {
            Arc::Whole => self.rings += 1,
            Arc::Part(length) => {
                let (sum, carried) = self.rest.overflowing_add(length);
                self.rest = sum;
                self.rings += u32::from(carried);
            }
        }
    }

    /// The sum as a fraction of one ring.
    fn fraction(&self) -> f64 {
        f64::from(self.rings) + self.rest as f64 / TWO_POW_128
    }
}
