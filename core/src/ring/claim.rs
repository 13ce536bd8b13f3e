//! The claim: which member owns each partition (the [`Strategy::Partitions`] strategy).
//!
//! [`target_counts`] says how many partitions each member should own; [`claim`] hands them out,
//! starting from the previous ring's owners so that as few partitions as possible move.

use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

#[cfg(doc)]
use super::Strategy;
use super::{Member, MAX_TARGET_N, NONE};

/// The claim looks at most `MAX_TARGET_N - 1` partitions either side of a candidate.
const NEIGHBOR_CAP: usize = 2 * (MAX_TARGET_N - 1);

/// Upper bound on swap evaluations in the claim's repair pass, so that memberships where conflicts
/// cannot be avoided (fewer nodes or zones than replicas) do not make the claim quadratic.
const REPAIR_BUDGET: u64 = 1 << 22;

/// At most this many passes of the repair over the movable partitions.
const REPAIR_PASSES: usize = 8;

/// Partitions each member should own: `⌊Q·c/C⌋`, plus one for the `Q - Σ⌊Q·c/C⌋` members with the
/// largest remainders `Q·c mod C`, ties to the lower index (members are sorted by id).
pub(super) fn target_counts(partitions: u32, members: &[Member]) -> Vec<u32> {
    let total: u128 = members.iter().map(|m| u128::from(m.capacity)).sum();
    let q = u128::from(partitions);
    let mut targets = Vec::with_capacity(members.len());
    let mut remainders = Vec::with_capacity(members.len());
    let mut given = 0u128;
    for (i, member) in members.iter().enumerate() {
        let share = q * u128::from(member.capacity);
        // The floor of a share is at most Q, so it fits in a u32.
        targets.push((share / total) as u32);
        given += share / total;
        remainders.push((share % total, i));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let leftover = (q - given) as usize;
    for &(_, i) in remainders.iter().take(leftover) {
        targets[i] += 1;
    }
    targets
}

/// Neighbourhood arithmetic shared by the claim's phases.
struct Layout<'a> {
    partitions: usize,
    /// How far either side of a partition two owners count as conflicting: `target_n - 1`, capped
    /// so the two sides never overlap.
    window: usize,
    zones: &'a [u32],
}

impl Layout<'_> {
    fn neighbour(&self, p: usize, d: usize, forward: bool) -> usize {
        if forward {
            (p + d) % self.partitions
        } else {
            (p + self.partitions - d) % self.partitions
        }
    }

    /// Owners of the partitions within the window of `p` (unowned ones left out).
    fn neighbours(&self, owner: &[u32], p: usize, out: &mut [u32; NEIGHBOR_CAP]) -> usize {
        let mut count = 0;
        for d in 1..=self.window {
            for forward in [true, false] {
                let o = owner[self.neighbour(p, d, forward)];
                if o != NONE {
                    out[count] = o;
                    count += 1;
                }
            }
        }
        count
    }

    /// (same-node, same-zone) neighbours member `x` would have at `p`.
    fn conflicts_among(&self, neighbours: &[u32], x: u32) -> (u32, u32) {
        let zone = self.zones[x as usize];
        let mut same_node = 0;
        let mut same_zone = 0;
        for &o in neighbours {
            same_node += u32::from(o == x);
            same_zone += u32::from(self.zones[o as usize] == zone);
        }
        (same_node, same_zone)
    }

    fn conflicts(&self, owner: &[u32], x: u32, p: usize) -> (u32, u32) {
        let mut buffer = [0u32; NEIGHBOR_CAP];
        let count = self.neighbours(owner, p, &mut buffer);
        self.conflicts_among(&buffer[..count], x)
    }
}

/// How well a taker fits a partition, best lowest: same-node neighbours, same-zone neighbours, and
/// (reversed) how far behind its fair share of hand-outs it is.
type TakerRank = (u32, u32, Reverse<i128>);

/// Per-member bookkeeping of the claim.
struct Claimants {
    /// Partitions each member still has to take.
    deficit: Vec<u32>,
    /// Partitions each member still has to give up.
    surplus: Vec<u32>,
    /// Members that had a deficit at the start, ascending.
    takers: Vec<u32>,
    /// Each taker's starting deficit and how many it has taken.
    demand: Vec<u64>,
    taken: Vec<u64>,
    total_demand: u64,
    /// Partitions handed out so far: the clock of the takers' weighted round robin.
    handed_out: u64,
}

impl Claimants {
    /// The taker for partition `p`: fewest same-node then same-zone neighbours, then the one most
    /// behind its share of the hand-outs so far (smooth weighted round robin, which spreads each
    /// taker's partitions evenly round the ring), then the lowest index.
    fn best_taker(
        &self,
        layout: &Layout<'_>,
        owner: &[u32],
        p: usize,
    ) -> Option<(u32, (u32, u32))> {
        let mut buffer = [0u32; NEIGHBOR_CAP];
        let count = layout.neighbours(owner, p, &mut buffer);
        let neighbours = &buffer[..count];
        let mut best: Option<(TakerRank, u32)> = None;
        for &x in &self.takers {
            let xi = x as usize;
            if self.deficit[xi] == 0 {
                continue;
            }
            let (node, zone) = layout.conflicts_among(neighbours, x);
            let credit = i128::from(self.demand[xi]) * i128::from(self.handed_out + 1)
                - i128::from(self.total_demand) * i128::from(self.taken[xi]);
            let key = (node, zone, Reverse(credit));
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, x));
            }
        }
        best.map(|((node, zone, _), x)| (x, (node, zone)))
    }

    fn hand_out(&mut self, owner: &mut [u32], p: usize, x: u32) {
        owner[p] = x;
        self.deficit[x as usize] -= 1;
        self.taken[x as usize] += 1;
        self.handed_out += 1;
    }
}

/// Assigns every partition to a member so that each member ends at its target count, starting from
/// `owner` (NONE for unowned partitions) and changing as few owners as possible.
///
/// Only unowned partitions and the surplus of members above target change hands, and only to members
/// below target, so the number of moves is the minimum. The freedom left is *which* surplus
/// partitions go and who takes each free one; that is chosen to keep owners (and zones) distinct
/// within `target_n` consecutive partitions, which makes preference lists runs of consecutive
/// partitions and balances replica load.
///
/// One lap round the ring hands out the unowned partitions and releases surplus partitions where a
/// schedule spreads the releases evenly round the ring (so a joining node's partitions are spread
/// too) and the taker does not add conflicts. Later laps, ever less choosy, release whatever surplus
/// is left. A final repair swaps owners between newly handed-out partitions, and between those and
/// the partitions donors keep, where that removes conflicts (this moves nothing more: it only changes
/// which partitions move, see [`repair`]). Without conflicts a member is a replica of exactly
/// `target_n` partitions per partition it owns, so replica load is as balanced as ownership.
/// Cost: O(Q · takers · target_n) per lap, plus a bounded repair.
pub(super) fn claim(
    target_n: usize,
    zones: &[u32],
    zone_count: usize,
    targets: &[u32],
    mut owner: Vec<u32>,
) -> Vec<u32> {
    let partitions = owner.len();
    let members = targets.len();
    let layout = Layout {
        partitions,
        window: (target_n - 1).min((partitions - 1) / 2),
        zones,
    };
    let previous = owner.clone();
    let mut count = vec![0u32; members];
    for &o in &owner {
        if o != NONE {
            count[o as usize] += 1;
        }
    }
    let deficit: Vec<u32> = (0..members)
        .map(|i| targets[i].saturating_sub(count[i]))
        .collect();
    let surplus: Vec<u32> = (0..members)
        .map(|i| count[i].saturating_sub(targets[i]))
        .collect();
    let initial_surplus = surplus.clone();
    let total_surplus: u64 = surplus.iter().map(|&s| u64::from(s)).sum();
    let mut claimants = Claimants {
        takers: (0..members as u32)
            .filter(|&i| deficit[i as usize] > 0)
            .collect(),
        demand: deficit.iter().map(|&d| u64::from(d)).collect(),
        taken: vec![0; members],
        total_demand: deficit.iter().map(|&d| u64::from(d)).sum(),
        handed_out: 0,
        deficit,
        surplus,
    };
    // Invariant: total deficit = unowned partitions not yet passed + total surplus, so whenever a
    // partition is free or a surplus is left, some member still has a deficit.
    let mut seen = vec![0u64; members];
    let mut released = vec![0u64; members];
    let mut released_total = 0u64;
    for lap in 0..5 {
        if lap > 0 && claimants.surplus.iter().all(|&s| s == 0) {
            break;
        }
        for p in 0..partitions {
            let o = owner[p];
            if o == NONE {
                // Only on the first lap: it leaves no partition unowned.
                let x = claimants
                    .best_taker(&layout, &owner, p)
                    .map_or(0, |(x, _)| x);
                claimants.hand_out(&mut owner, p, x);
                continue;
            }
            let oi = o as usize;
            if claimants.surplus[oi] == 0 {
                continue;
            }
            let current = layout.conflicts(&owner, o, p);
            let mut overdue = false;
            let candidate = match lap {
                // First the surplus partitions that sit next to their own owner (or zone), where a
                // move repairs the layout.
                0 => current.0 > 0,
                1 => {
                    seen[oi] += 1;
                    // The donor's own schedule: by its s-th partition it should have released
                    // s·surplus/count of them. At most one ahead of it; two behind is overdue.
                    let quota = seen[oi] * u64::from(initial_surplus[oi]) / u64::from(count[oi]);
                    let within_quota = released[oi] <= quota;
                    overdue = released[oi] + 1 < quota;
                    // The global schedule: the k-th release of all belongs near (k + ½)·Q/surplus,
                    // so that the takers' new partitions spread round the ring.
                    let due = (2 * p as u64 + 1) * total_surplus
                        >= (2 * released_total + 1) * partitions as u64;
                    overdue || (due && within_quota)
                }
                _ => true,
            };
            if !candidate {
                continue;
            }
            let Some((x, new)) = claimants.best_taker(&layout, &owner, p) else {
                continue;
            };
            let release = match lap {
                0 => new < current,
                1 => new <= current || (overdue && new.0 <= current.0),
                2 => new <= current,
                3 => new.0 <= current.0,
                _ => true,
            };
            if release {
                claimants.surplus[oi] -= 1;
                released[oi] += 1;
                released_total += 1;
                claimants.hand_out(&mut owner, p, x);
            }
        }
    }
    let donors: Vec<bool> = initial_surplus.iter().map(|&s| s > 0).collect();
    repair(
        &layout, zone_count, target_n, &previous, &donors, &mut owner,
    );
    owner
}

/// The partitions whose owner the repair may still choose: those that change hands in this claim,
/// and those a donor (a member that had a surplus to give up) keeps. Which of a donor's partitions
/// it gives up is free, so the repair may trade a kept partition for a released one.
fn movable(previous: &[u32], donors: &[bool], owner: &[u32]) -> Vec<usize> {
    (0..owner.len())
        .filter(|&p| owner[p] != previous[p] || donors[owner[p] as usize])
        .collect()
}

/// Whether swapping the owners of `p` and `q` keeps the number of partitions that change hands
/// (which the claim made the minimum, so it can only stay equal). A swap that keeps the minimum
/// also keeps every move going from a departed or shrinking member to a growing one.
fn keeps_moves(previous: &[u32], owner: &[u32], p: usize, q: usize) -> bool {
    let moved = |r: usize, o: u32| u32::from(o != previous[r]);
    moved(p, owner[q]) + moved(q, owner[p]) <= moved(p, owner[p]) + moved(q, owner[q])
}

/// Swaps owners between movable partitions (see [`movable`]) where that lowers the number of
/// same-node (then same-zone) neighbours. Each swap keeps every member's count and the number of
/// partitions that change hands, so the claim stays minimal.
///
/// Trading a donor's kept partitions matters when a batch of members joins: the hand-out laps give
/// the joiners the first partitions that conflict, so a member that owned a long run (say the only
/// member before) would otherwise keep the run's tail whole, and be the replica of few partitions.
fn repair(
    layout: &Layout<'_>,
    zone_count: usize,
    target_n: usize,
    previous: &[u32],
    donors: &[bool],
    owner: &mut [u32],
) {
    let movable = movable(previous, donors, owner);
    if movable.len() < 2 || layout.window == 0 {
        return;
    }
    // With fewer zones than replicas, zone conflicts cannot all go: only node conflicts are worth
    // the work then.
    let zones_matter = zone_count >= target_n;
    let mut budget = REPAIR_BUDGET;
    for _pass in 0..REPAIR_PASSES {
        let mut improved = false;
        for &p in &movable {
            let a = owner[p];
            let here = layout.conflicts(owner, a, p);
            if here.0 == 0 && (here.1 == 0 || !zones_matter) {
                continue;
            }
            let mut best: Option<((i64, i64), usize)> = None;
            for &q in &movable {
                let b = owner[q];
                if b == a || !keeps_moves(previous, owner, p, q) {
                    continue;
                }
                if budget == 0 {
                    return;
                }
                budget -= 1;
                let before = add(layout.conflicts(owner, a, p), layout.conflicts(owner, b, q));
                owner.swap(p, q);
                let after = add(layout.conflicts(owner, b, p), layout.conflicts(owner, a, q));
                owner.swap(p, q);
                let delta = (after.0 - before.0, after.1 - before.1);
                let gain = if zones_matter { delta } else { (delta.0, 0) };
                if gain < (0, 0) && best.is_none_or(|(d, _)| gain < d) {
                    best = Some((gain, q));
                }
            }
            if let Some((_, q)) = best {
                owner.swap(p, q);
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
}

fn add(a: (u32, u32), b: (u32, u32)) -> (i64, i64) {
    (
        i64::from(a.0) + i64::from(b.0),
        i64::from(a.1) + i64::from(b.1),
    )
}
