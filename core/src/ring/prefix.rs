//! Preference lists precomputed per segment of the ring: for each segment, the first distinct
//! owners met walking clockwise (zone-aware), so a lookup is a table read.

use alloc::vec;
use alloc::vec::Vec;

use super::NONE;

/// A doubly linked list over `0..len` supporting move-to-front in O(1).
struct FrontList {
    head: u32,
    next: Vec<u32>,
    prev: Vec<u32>,
}

impl FrontList {
    /// The list `0, 1, .., len - 1`.
    fn new(len: usize) -> Self {
        FrontList {
            head: if len == 0 { NONE } else { 0 },
            next: (1..=len as u32)
                .map(|i| if i as usize == len { NONE } else { i })
                .collect(),
            prev: (0..len as u32)
                .map(|i| if i == 0 { NONE } else { i - 1 })
                .collect(),
        }
    }

    fn move_to_front(&mut self, x: u32) {
        if self.head == x {
            return;
        }
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        // x is not the head, so it has a predecessor.
        self.next[p as usize] = n;
        if n != NONE {
            self.prev[n as usize] = p;
        }
        self.prev[x as usize] = NONE;
        self.next[x as usize] = self.head;
        self.prev[self.head as usize] = x;
        self.head = x;
    }
}

/// The first `k` of the replica order of every segment, `k` per segment.
///
/// Walking backwards round the ring (twice, the first time only to see the wrap-around), a
/// move-to-front list of members gives the walk order from the current segment, and a move-to-front
/// list of zones, each with the member that last moved it, gives the zones in order of first
/// appearance with their first members. O((segments + members) · k) in all.
pub(super) fn prefix_lists(
    seg_owner: &[u32],
    zones: &[u32],
    zone_count: usize,
    k: usize,
) -> Vec<u32> {
    let k = k.min(zones.len());
    let segments = seg_owner.len();
    let mut table = vec![0u32; segments * k];
    if k == 0 {
        return table;
    }
    let mut walk = FrontList::new(zones.len());
    let mut zone_walk = FrontList::new(zone_count);
    // Before any segment is seen, each zone's first member is its lowest-index one (members owning
    // nothing close the walk order in index order), and zone numbering follows that order.
    let mut first_of_zone = vec![NONE; zone_count];
    for (i, &z) in zones.iter().enumerate().rev() {
        first_of_zone[z as usize] = i as u32;
    }
    for lap in 0..2 {
        for j in (0..segments).rev() {
            let x = seg_owner[j];
            let z = zones[x as usize];
            walk.move_to_front(x);
            zone_walk.move_to_front(z);
            first_of_zone[z as usize] = x;
            if lap == 0 {
                continue;
            }
            let row = &mut table[j * k..(j + 1) * k];
            let mut filled = 0;
            let mut cursor = zone_walk.head;
            while filled < k && cursor != NONE {
                row[filled] = first_of_zone[cursor as usize];
                filled += 1;
                cursor = zone_walk.next[cursor as usize];
            }
            let mut cursor = walk.head;
            while filled < k && cursor != NONE {
                if first_of_zone[zones[cursor as usize] as usize] != cursor {
                    row[filled] = cursor;
                    filled += 1;
                }
                cursor = walk.next[cursor as usize];
            }
        }
    }
    table
}
