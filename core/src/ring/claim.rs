//! The claim: which member owns each partition (the [`Strategy::Partitions`] strategy).
//!
//! [`target_counts`] says how many partitions each member should own; [`claim`] hands them out,
//! starting from the previous ring's owners so that as few partitions as possible move, then
//! trades a few more where that alone leaves owners repeating (see [`rebalance`]).

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
    /// How swapping the owners of partitions `p` and `q` changes the (node, zone) repeats
    /// around them (negative: fewer). `owner` is as it was when this returns.
    fn swap_delta(&self, owner: &mut [u32], p: usize, q: usize) -> (i64, i64) {
        let (a, b) = (owner[p], owner[q]);
        let before = add(self.conflicts(owner, a, p), self.conflicts(owner, b, q));
        owner.swap(p, q);
        let after = add(self.conflicts(owner, b, p), self.conflicts(owner, a, q));
        owner.swap(p, q);
        (after.0 - before.0, after.1 - before.1)
    }

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
fn minimal_claim(
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

/// [`minimal_claim`], then [`rebalance`]: the claim every ring uses.
pub(super) fn claim(
    target_n: usize,
    zones: &[u32],
    zone_count: usize,
    targets: &[u32],
    previous: Vec<u32>,
) -> Vec<u32> {
    let mut owner = minimal_claim(target_n, zones, zone_count, targets, previous.clone());
    rebalance(target_n, zones, zone_count, targets, &previous, &mut owner);
    owner
}

/// Where the fewest moves leave owners (or zones) repeating within `target_n` consecutive
/// partitions although the membership has room for a layout without repeats, trades partitions
/// beyond the minimum. Each swap lowers the repeats (counted as in [`repeats`]) by at least two
/// and moves at most two partitions more, so the extra moves are at most the repeats removed.
///
/// The minimal claim can only choose among the partitions that change hands. When members leave
/// and others join at once, those may be exactly the departed members' partitions, sitting side
/// by side; the joiner then owns runs and replicates a third less than its share (seen: 32
/// partitions of an ideal 48 with 4 equal members, Q = 64). Riak's claim answers such layouts
/// with a full re-claim; this moves only what removes a repeat.
///
/// Runs only when the membership changed (some partition changes hands: an unchanged membership
/// moves nothing) and when a layout without repeats can exist: at least `target_n` zones (a member
/// without a zone is its own) and no zone owning more than `Q / target_n` partitions.
fn rebalance(
    target_n: usize,
    zones: &[u32],
    zone_count: usize,
    targets: &[u32],
    previous: &[u32],
    owner: &mut [u32],
) {
    let partitions = owner.len();
    let layout = Layout {
        partitions,
        window: (target_n - 1).min((partitions - 1) / 2),
        zones,
    };
    let mut per_zone = vec![0usize; zone_count];
    for (m, &t) in targets.iter().enumerate() {
        per_zone[zones[m] as usize] += t as usize;
    }
    let roomy = zone_count >= target_n && per_zone.iter().all(|&c| c * target_n <= partitions);
    if !roomy || layout.window == 0 || owner == previous {
        return;
    }
    let moved = |r: usize, o: u32| i64::from(o != previous[r]);
    let mut budget = REPAIR_BUDGET;
    for _pass in 0..REPAIR_PASSES {
        let mut improved = false;
        for p in 0..partitions {
            let a = owner[p];
            if layout.conflicts(owner, a, p).1 == 0 {
                continue;
            }
            // Best: the largest drop in repeats (neither kind may grow), then the fewest extra
            // moves.
            let mut best: Option<(i64, i64, usize)> = None;
            for q in 0..partitions {
                let b = owner[q];
                if b == a {
                    continue;
                }
                if budget == 0 {
                    return;
                }
                budget -= 1;
                let (node, zone) = layout.swap_delta(owner, p, q);
                if node > 0 || zone > 0 || node + zone == 0 {
                    continue;
                }
                let cost = moved(p, b) + moved(q, a) - moved(p, a) - moved(q, b);
                if best.is_none_or(|(g, c, _)| (node + zone, cost) < (g, c)) {
                    best = Some((node + zone, cost, q));
                }
            }
            if let Some((_, _, q)) = best {
                owner.swap(p, q);
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
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
                let delta = layout.swap_delta(owner, p, q);
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

/// Same-node plus same-zone neighbours summed over every partition (each pair counted from both
/// sides): zero exactly when no owner, and no zone, repeats within the window.
#[cfg(test)]
fn repeats(target_n: usize, zones: &[u32], owner: &[u32]) -> u64 {
    let layout = Layout {
        partitions: owner.len(),
        window: (target_n - 1).min((owner.len() - 1) / 2),
        zones,
    };
    (0..owner.len())
        .map(|p| {
            let (node, zone) = layout.conflicts(owner, owner[p], p);
            u64::from(node + zone)
        })
        .sum()
}

fn add(a: (u32, u32), b: (u32, u32)) -> (i64, i64) {
    (
        i64::from(a.0) + i64::from(b.0),
        i64::from(a.1) + i64::from(b.1),
    )
}
#[cfg(test)]
pub(super) mod tests {
    //! Replica balance of the claim: every member's *replica load* (the number of partitions whose
    //! preference list for `n` holds it) against its capacity-weighted share of `Q·n`.
    use super::super::*;
    use super::{minimal_claim, repeats};
    use alloc::format;
    use proptest::prelude::{prop, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as PropStrategy;
    use proptest::test_runner::{Config as ProptestConfig, TestCaseError};
    use std::collections::BTreeSet;

    const N: usize = 3;

    fn config(partitions: u32) -> RingConfig {
        RingConfig {
            partitions,
            strategy: Strategy::Partitions,
            target_n: N,
            ..RingConfig::default()
        }
    }

    fn named(prefix: &str, ids: core::ops::RangeInclusive<usize>) -> Vec<Member> {
        ids.map(|i| Member::new(format!("{prefix}{i}"), 1))
            .collect()
    }

    fn zone_key(m: &Member) -> String {
        m.zone
            .clone()
            .map_or(format!("node {}", m.id), |z| format!("zone {z}"))
    }

    /// Each member's replica load for `n`, counted from the partitions' preference lists.
    fn loads(ring: &Ring, n: usize) -> BTreeMap<NodeId, u32> {
        let mut load: BTreeMap<NodeId, u32> =
            ring.members().iter().map(|m| (m.id.clone(), 0)).collect();
        for p in 0..ring.partition_count() {
            for id in ring.partition_preference_list(PartitionId(p), n) {
                *load.get_mut(&id).expect("a member") += 1;
            }
        }
        load
    }

    /// Loads in member order, for printing and comparing.
    fn load_vec(ring: &Ring) -> Vec<u32> {
        loads(ring, N).into_values().collect()
    }

    /// `x_i = clamp(λ·w_i, lo_i, hi_i)` with `λ` chosen so that the `x_i` add up to `total`.
    fn water_fill(w: &[f64], lo: &[f64], hi: &[f64], total: f64) -> Vec<f64> {
        let fill = |l: f64| -> Vec<f64> {
            (0..w.len())
                .map(|i| (l * w[i]).clamp(lo[i], hi[i]))
                .collect()
        };
        let (mut low, mut high) = (0.0f64, 1e12f64);
        for _ in 0..200 {
            let mid = (low + high) / 2.0;
            if fill(mid).iter().sum::<f64>() < total {
                low = mid;
            } else {
                high = mid;
            }
        }
        fill(high)
    }

    /// Each member's capacity-weighted share of the `Q·k` replicas (`k = min(n, members)`), within
    /// what placement allows: a member is at most once in a list (so at most `Q`), and zones come
    /// first. With at least `k` zones a zone is at most once in a list (at most `Q`); with fewer,
    /// every zone is in every list (at least `Q`). Zones get their share by zone capacity under
    /// those limits, and split it among their members by capacity (each at most `Q`).
    fn ideal(ring: &Ring, n: usize) -> BTreeMap<NodeId, f64> {
        let q = f64::from(ring.partition_count());
        let k = n.min(ring.members().len());
        let mut zones: BTreeMap<String, Vec<&Member>> = BTreeMap::new();
        for m in ring.members() {
            zones.entry(zone_key(m)).or_default().push(m);
        }
        let count = zones.len();
        let groups: Vec<&Vec<&Member>> = zones.values().collect();
        let capacity = |g: &[&Member]| g.iter().map(|m| f64::from(m.capacity)).collect::<Vec<_>>();
        let weights: Vec<f64> = groups.iter().map(|g| capacity(g).iter().sum()).collect();
        let low: Vec<f64> = groups
            .iter()
            .map(|_| if count <= k { q } else { 0.0 })
            .collect();
        let high: Vec<f64> = groups
            .iter()
            .map(|g| {
                if count >= k {
                    q
                } else {
                    q * g.len().min(k + 1 - count) as f64
                }
            })
            .collect();
        let zone_loads = water_fill(&weights, &low, &high, q * k as f64);
        let mut ideal = BTreeMap::new();
        for (g, total) in groups.iter().zip(zone_loads) {
            let split = water_fill(&capacity(g), &vec![0.0; g.len()], &vec![q; g.len()], total);
            for (m, x) in g.iter().zip(split) {
                ideal.insert(m.id.clone(), x);
            }
        }
        ideal
    }

    /// Whether the members leave the claim room to keep `n` consecutive partitions on distinct
    /// nodes (and distinct zones, when zones are declared) with slack: no member, and no zone, owns
    /// more than `Q / (n + 1)` partitions, and there are no zones or at least `n` of them. Then
    /// replica load follows ownership. (When one member or zone owns more than `Q / n`, consecutive
    /// repeats cannot be avoided, and how much a small member replicates depends on where its few
    /// partitions sit between the big ones; the claim does not yet balance that.)
    fn roomy(ring: &Ring, n: usize) -> bool {
        let cap = ring.partition_count() / (n as u32 + 1);
        let counts = ring.partition_counts();
        let mut zones: BTreeMap<String, u32> = BTreeMap::new();
        for m in ring.members() {
            *zones.entry(zone_key(m)).or_default() += counts[&m.id];
        }
        let no_zones = ring.members().iter().all(|m| m.zone.is_none());
        (no_zones || zones.len() >= n) && zones.values().all(|&c| c <= cap)
    }

    /// THE BOUND: where [`roomy`], every member's replica load for N = 3 is within 25% + 2
    /// partitions of its ideal share ([`ideal`]). The 2 partitions cover rounding of owner counts
    /// (each is within one of its share, and a member replicates about N per partition owned). The
    /// 25% covers what the claim's repair (a local search over swaps that remove consecutive
    /// repeats) leaves behind when it stops short of a repeat-free layout: over 15,000 random rings
    /// (fresh, batched and single joins and leaves, capacities 1..=4, 1..=12 members, Q 64 and
    /// 256, with and without zones) the worst seen was 20% + 2; most rings are repeat-free, where
    /// the load is exactly N times the owner count. A random sequence (members a0..a4 of
    /// capacities 2,4,2,4,4, Q = 64; a0 and a2 leave as j0 joins) broke it while the claim only
    /// moved the minimum: j0 took exactly the leavers' adjacent partitions. [`rebalance`] fixed
    /// it; 3,000 cases of each property passed after. Every member whatever the membership: at most
    /// Q (once per list), and the lists are collision-free.
    fn check_replicas(ring: &Ring) -> Result<(), String> {
        let load = loads(ring, N);
        let ideal = ideal(ring, N);
        let q = ring.partition_count();
        let by_id: BTreeMap<&NodeId, &Member> = ring.members().iter().map(|m| (&m.id, m)).collect();
        let zones: BTreeSet<String> = ring.members().iter().map(zone_key).collect();
        for p in 0..q {
            let list = ring.partition_preference_list(PartitionId(p), N);
            let nodes: BTreeSet<&NodeId> = list.iter().collect();
            if nodes.len() != list.len() || list.len() != N.min(ring.members().len()) {
                return Err(format!("partition {p}: list {list:?}"));
            }
            let in_zones: BTreeSet<String> = list.iter().map(|id| zone_key(by_id[id])).collect();
            if zones.len() >= N && in_zones.len() != N {
                return Err(format!("partition {p}: zones repeat in {list:?}"));
            }
        }
        let roomy = roomy(ring, N);
        for (id, &l) in &load {
            let x = ideal[id];
            if l > q || (roomy && (f64::from(l) - x).abs() > 0.25 * x + 2.0) {
                return Err(format!("{id} replicates {l}, ideal {x:.1}: {load:?}"));
            }
        }
        Ok(())
    }

    /// First ownership: each member owns ⌊share⌋ or ⌈share⌉ of the Q partitions.
    fn check_owners(ring: &Ring) -> Result<(), String> {
        let total: u32 = ring.members().iter().map(|m| m.capacity).sum();
        let counts = ring.partition_counts();
        for m in ring.members() {
            let share =
                f64::from(ring.partition_count()) * f64::from(m.capacity) / f64::from(total);
            if (f64::from(counts[&m.id]) - share).abs() >= 1.0 {
                return Err(format!("{} owns {}, share {share}", m.id, counts[&m.id]));
            }
        }
        Ok(())
    }

    /// The fewest partitions that must change hands: the departed members' and the shrinking
    /// ones' surplus.
    fn least_moves(old: &Ring, new: &Ring) -> usize {
        let before = old.partition_counts();
        let after = new.partition_counts();
        before
            .iter()
            .map(|(id, &c)| after.get(id).map_or(c, |&a| c.saturating_sub(a)) as usize)
            .sum()
    }

    /// The fewest partitions changed hands: the departed members' and the shrinking ones' surplus.
    fn check_minimal(old: &Ring, new: &Ring) -> Result<(), String> {
        let least = least_moves(old, new);
        let moved = old.partitions_moved(new);
        if moved != least {
            return Err(format!("{moved} partitions moved, {least} had to"));
        }
        Ok(())
    }

    /// The minimal claim moved the fewest partitions, and the claim moved more only to remove
    /// repeats: at most one extra move per repeat removed (see [`rebalance`]).
    pub(in crate::ring) fn check_moves(old: &Ring, new: &Ring) -> Result<(), String> {
        let members = new.members();
        let previous: Vec<u32> = old
            .seg_owner
            .iter()
            .map(|&o| {
                members
                    .binary_search_by(|m| m.id.cmp(&old.members()[o as usize].id))
                    .map_or(NONE, |i| i as u32)
            })
            .collect();
        let (zones, zone_count) = zone_ids(members);
        let targets = target_counts(new.partition_count(), members);
        let target_n = new.config().target_n;
        let minimal = minimal_claim(target_n, &zones, zone_count, &targets, previous.clone());
        let least = least_moves(old, new);
        let minimal_moved = (0..minimal.len())
            .filter(|&p| minimal[p] != previous[p])
            .count();
        if minimal_moved != least {
            return Err(format!(
                "the minimal claim moved {minimal_moved}, {least} had to"
            ));
        }
        let moved = old.partitions_moved(new);
        let removed = repeats(target_n, &zones, &minimal).saturating_sub(repeats(
            target_n,
            &zones,
            &new.seg_owner,
        ));
        if moved < least || (moved - least) as u64 > removed {
            return Err(format!(
                "{moved} partitions moved, {least} had to, {removed} repeats removed"
            ));
        }
        Ok(())
    }

    fn check(old: Option<&Ring>, ring: &Ring) -> Result<(), TestCaseError> {
        let members = ring.members().to_vec();
        check_replicas(ring).map_err(TestCaseError::fail)?;
        check_owners(ring).map_err(TestCaseError::fail)?;
        if let Some(old) = old {
            check_moves(old, ring).map_err(TestCaseError::fail)?;
            let mut reversed = members.clone();
            reversed.reverse();
            prop_assert_eq!(&old.with_members(reversed).expect("valid"), ring);
        } else {
            let mut reversed = members.clone();
            reversed.reverse();
            prop_assert_eq!(
                &Ring::new(ring.config().clone(), reversed).expect("valid"),
                ring
            );
        }
        Ok(())
    }

    /// `count` members named `{prefix}{i}`, capacities 1..=4, in one of `zones` zones if any.
    fn arb_batch(
        prefix: &'static str,
        count: core::ops::RangeInclusive<usize>,
        zones: Option<usize>,
    ) -> impl PropStrategy<Value = Vec<Member>> {
        prop::collection::vec((1u32..=4, 0usize..5), count).prop_map(move |specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (capacity, zone))| {
                    let member = Member::new(format!("{prefix}{i}"), capacity);
                    match zones {
                        Some(zones) => member.in_zone(format!("z{}", zone % zones)),
                        None => member,
                    }
                })
                .collect()
        })
    }

    fn arb_zones() -> impl PropStrategy<Value = Option<usize>> {
        prop::option::of(1usize..=5)
    }

    fn arb_q() -> impl PropStrategy<Value = u32> {
        prop::sample::select(vec![64u32, 256])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// (a) A fresh ring of all the members at once.
        #[test]
        fn fresh_rings_balance_replicas(
            (q, members) in (arb_q(), arb_zones())
                .prop_flat_map(|(q, zones)| (prop::strategy::Just(q), arb_batch("a", 1..=12, zones))),
        ) {
            let ring = Ring::new(config(q), members).expect("valid");
            check(None, &ring)?;
        }

        /// (b) A batch of members joining an existing ring together.
        #[test]
        fn batch_joins_balance_replicas(
            (q, first, batch) in (arb_q(), arb_zones(), 1usize..=11).prop_flat_map(|(q, zones, m)| (
                prop::strategy::Just(q),
                arb_batch("a", 1..=m, zones),
                arb_batch("b", 1..=(12 - m), zones),
            )),
        ) {
            let ring = Ring::new(config(q), first.clone()).expect("valid");
            let all: Vec<Member> = first.into_iter().chain(batch).collect();
            let joined = ring.with_members(all).expect("valid");
            check(Some(&ring), &joined)?;
        }

        /// (c) Sequences of single and batched joins and leaves.
        #[test]
        fn join_and_leave_sequences_balance_replicas(
            (q, first, joins, leaves) in (arb_q(), arb_zones()).prop_flat_map(|(q, zones)| (
                prop::strategy::Just(q),
                arb_batch("a", 1..=6, zones),
                prop::collection::vec(
                    prop::strategy::Union::new([
                        arb_batch("j", 1..=1, zones).boxed(),
                        arb_batch("j", 1..=4, zones).boxed(),
                    ]),
                    4,
                ),
                prop::collection::vec(prop::collection::vec(prop::num::usize::ANY, 0..=3), 4),
            )),
        ) {
            let mut ring = Ring::new(config(q), first.clone()).expect("valid");
            check(None, &ring)?;
            let mut members = first;
            for (step, (join, leave)) in joins.into_iter().zip(leaves).enumerate() {
                for i in leave {
                    if members.len() > 1 {
                        members.remove(i % members.len());
                    }
                }
                for mut m in join {
                    if members.len() < 12 {
                        m.id = NodeId::new(format!("s{step}{}", m.id));
                        members.push(m);
                    }
                }
                let next = ring.with_members(members.clone()).expect("valid");
                check(Some(&ring), &next)?;
                ring = next;
            }
        }

        /// A single uniform member joining moves the fewest partitions, and the share of keys whose
        /// replica set changes is at least the newcomer's share of replicas (it has to get them)
        /// and, once there are N members (before that every list grows), at most N times the owner
        /// moves.
        #[test]
        fn a_single_join_moves_near_the_ideal(start in 1usize..=11, q in arb_q()) {
            let ring = Ring::new(config(q), named("n", 1..=start)).expect("valid");
            let joined = ring.with_members(named("n", 1..=start + 1)).expect("valid");
            check_minimal(&ring, &joined).map_err(TestCaseError::fail)?;
            let moved = ring.moved_fraction(&joined, N);
            let newcomer = f64::from(loads(&joined, N)[&NodeId::new(format!("n{}", start + 1))]);
            let owners = ring.partitions_moved(&joined) as f64;
            prop_assert!(moved >= newcomer / f64::from(q) - 1e-12);
            if start >= N {
                prop_assert!(moved <= N as f64 * owners / f64::from(q) + 1e-12);
            }
        }
    }

    /// Two members leave as one joins: the joiner takes exactly their partitions, which sat side
    /// by side. The minimal claim left the joiner the replica of 32 partitions (ideal 48) and the
    /// others of 56; the rebalance trades a few more partitions to break the runs.
    #[test]
    fn a_joiner_taking_adjacent_partitions_of_leavers_still_replicates_its_share() {
        let caps = [("a0", 2), ("a1", 4), ("a2", 2), ("a3", 4), ("a4", 4)];
        let first: Vec<Member> = caps.iter().map(|&(id, c)| Member::new(id, c)).collect();
        let ring = Ring::new(config(64), first).expect("valid");
        let next: Vec<Member> = [("a1", 4), ("a3", 4), ("a4", 4), ("j0", 4)]
            .iter()
            .map(|&(id, c)| Member::new(id, c))
            .collect();
        let joined = ring.with_members(next).expect("valid");
        std::println!(
            "loads {:?}, moved {} of least {}",
            load_vec(&joined),
            ring.partitions_moved(&joined),
            least_moves(&ring, &joined)
        );
        check(Some(&ring), &joined).expect("balanced, and moves bounded by the repeats removed");
    }

    /// The reported scenarios: 4 and 5 members started together (the first alone, the others
    /// joining it in one batch), and n1, then n2 + n3 together, then n4. Before the fix the member
    /// that started alone kept its partitions as one run and was the replica of few partitions:
    /// 66/255/255/192, 54/204/204/153/153, and 87/170/255/256.
    #[test]
    fn members_joining_together_share_replicas_evenly() {
        let alone = Ring::new(config(256), named("n", 1..=1)).expect("valid");
        let four = alone.with_members(named("n", 1..=4)).expect("valid");
        std::println!("4 together: {:?}", load_vec(&four));
        assert_eq!(load_vec(&four), vec![192; 4]);
        let five = alone.with_members(named("n", 1..=5)).expect("valid");
        std::println!("5 together: {:?}", load_vec(&five));
        assert!(load_vec(&five).iter().all(|&l| (153..=154).contains(&l)));
        let three = alone.with_members(named("n", 1..=3)).expect("valid");
        let then_four = three.with_members(named("n", 1..=4)).expect("valid");
        std::println!("1, 2+3, 4: {:?}", load_vec(&then_four));
        assert_eq!(load_vec(&then_four), vec![192; 4]);
        // The newcomer gets three quarters of the keys, not all of them.
        assert_eq!(three.moved_fraction(&then_four, N), 0.75);
        // One at a time.
        let mut ring = alone;
        for count in 2..=6 {
            let next = ring.with_members(named("n", 1..=count)).expect("valid");
            std::println!(
                "one at a time, {count}: {:?}, moved {}",
                load_vec(&next),
                ring.moved_fraction(&next, N)
            );
            check_replicas(&next).expect("balanced");
            ring = next;
        }
        assert_eq!(load_vec(&ring), vec![129, 129, 129, 129, 126, 126]);
    }
}
