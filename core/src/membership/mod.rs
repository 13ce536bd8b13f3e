//! Membership: who is in the cluster, who is reachable, and how every node comes to agree on it.
//!
//! Four pieces fit together:
//!
//! - **The view** ([`ClusterView`], in [`view`]): each node's copy of the members (addresses,
//!   capacity, zone, [`MemberStatus`]), the ring everyone routes by and the bucket properties. It
//!   is a state-based CRDT: every entry has a version, and [`ClusterView::merge`] keeps the greater
//!   entry in a total order, so views can be merged in any order, any number of times, and all
//!   copies end up equal. Joins, leaves and removals are explicit changes of a member's entry
//!   ([`ClusterView::set_member`], [`ClusterView::set_status`]) made on any node.
//! - **Gossip** (this module): every [`GossipConfig::interval_ms`] each node picks one partner
//!   ([`choose_gossip_peer`]) and the two run a push-pull exchange of [`GossipMessage`]s: a digest
//!   first, whole views only when the digests differ ([`handle_gossip`]). A change reaches every
//!   node in O(log n) rounds. Seed nodes are chosen now and then, and always when no live member
//!   a node knows is a seed, so that the cluster cannot split into groups that never gossip with
//!   each other (Dynamo's remedy for logical partitions).
//! - **The claimant**: the ring is not merged but computed in one place, by the lowest-id `Up`
//!   member ([`ClusterView::claimant`]), which every node with the same view agrees on without an
//!   election. When the target membership ([`ClusterView::ring_members_target`]) differs from the
//!   ring's, the claimant claims the next ring ([`ClusterView::claim`]), moving as few partitions
//!   as possible, and gossip carries it everywhere.
//! - **The failure detector** ([`FailureDetector`], in [`detector`]): phi-accrual liveness per
//!   peer from everything heard from it. It is local to each node and never gossiped: it steers
//!   routing, sloppy quorums and the choice of gossip partners, but a peer it suspects stays in the
//!   ring until an operator says leave or remove.
//!
//! A member's life: a new node adds itself as `Joining` and gossips with a seed; the claimant puts
//! it in the next ring; the node sets itself `Up` once it sees itself in the ring. `Leaving` takes
//! a member out of the next ring, and `Removed` (after its data is transferred) retires it for
//! good.
//! The first node of a cluster simply adds itself as `Up`.
//!
//! ```
//! use ringkv_core::membership::{
//!     handle_gossip, ClusterView, DetectorConfig, FailureDetector, GossipMessage, MemberInfo,
//!     MemberStatus,
//! };
//! use ringkv_core::{ring::RingConfig, NodeId};
//!
//! let (a, b) = (NodeId::new("a"), NodeId::new("b"));
//! // Node a starts the cluster and claims the first ring.
//! let mut view_a = ClusterView::new("prod").unwrap();
//! let mut info = MemberInfo::new("a", "10.0.0.1:7000", "10.0.0.1:8000", 1);
//! info.status = MemberStatus::Up;
//! view_a.set_member(info).unwrap();
//! view_a.claim(&a, &RingConfig::default()).unwrap();
//!
//! // Node b joins: it knows only itself, and gossips with a (its seed).
//! let mut view_b = ClusterView::new("prod").unwrap();
//! view_b.set_member(MemberInfo::new("b", "10.0.0.2:7000", "10.0.0.2:8000", 1)).unwrap();
//! let mut message = Some(GossipMessage::Digest(view_b.digest()));
//! let mut at_a = true;
//! while let Some(m) = message {
//!     message = handle_gossip(if at_a { &mut view_a } else { &mut view_b }, &m).unwrap();
//!     at_a = !at_a;
//! }
//! assert_eq!(view_a, view_b);
//!
//! // The claimant gives b partitions; one more exchange and b routes by the same ring.
//! assert!(view_a.claim(&a, &RingConfig::default()).unwrap());
//! let update = GossipMessage::View(view_a.clone().into());
//! // b merges it; its digest, now equal to a's, tells a it arrived.
//! let ack = handle_gossip(&mut view_b, &update).unwrap();
//! assert_eq!(ack, Some(GossipMessage::Digest(view_a.digest())));
//! assert!(handle_gossip(&mut view_a, &ack.unwrap()).unwrap().is_none());
//! assert_eq!(view_b.ring().unwrap().ring.members().len(), 2);
//!
//! // Meanwhile a's detector hears from b every second, then nothing.
//! let mut detector = FailureDetector::new(DetectorConfig::default());
//! for now in (0..10_000).step_by(1000) {
//!     detector.heartbeat(&b, now);
//! }
//! assert!(detector.is_alive(&b, 10_000));
//! assert!(!detector.is_alive(&b, 30_000));
//! ```

pub mod detector;
mod handoff;
pub mod view;
mod view_formats;

use alloc::boxed::Box;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::id::Millis;
use crate::id::NodeId;

pub use detector::{DetectorConfig, FailureDetector, Liveness};
pub use view::{
    ClusterView, Handoff, MemberInfo, MemberStatus, MemberStatusError, RingState, ViewError,
};

/// How a node gossips.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipConfig {
    /// Time between two gossip rounds of one node. Default 1000.
    pub interval_ms: Millis,
    /// The seed nodes: well-known members every node gossips with now and then, which keeps the
    /// gossip graph connected. A new node needs at least one to join. Default none.
    pub seeds: Vec<NodeId>,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            interval_ms: 1000,
            seeds: Vec::new(),
        }
    }
}

/// One message of the push-pull gossip exchange. See [`handle_gossip`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// The sender's view digest ([`ClusterView::digest`]); if yours differs, send your view.
    Digest(u64),
    /// The sender's whole view; merge it, and send yours back if it still differs. (Boxed: a view
    /// is much larger than a digest.)
    View(Box<ClusterView>),
}

/// Chooses this round's gossip partner for `me`, or `None` when there is nobody to gossip with.
///
/// The candidates are the view's members other than `me` that are not Removed and that `alive`
/// (typically [`FailureDetector::is_alive`]) accepts. A seed is chosen instead:
///
/// - with probability 1/(candidates + 1), so that every node reconciles with a seed now and then;
/// - whenever no candidate is a seed but some seed is alive: the node's view has lost sight of the
///   seeds (or, for a new node, never had it), so it may be in a group that gossips only within
///   itself;
/// - whenever there is no candidate at all.
///
/// Live seeds are preferred; when every seed seems down, one is still tried, because after a
/// partition heals a seed is the way back. Seeds that are Removed in the view, and `me`, are never
/// chosen. Uniform choices use `rng`, so a seeded RNG makes the choice replayable.
pub fn choose_gossip_peer(
    me: &NodeId,
    view: &ClusterView,
    alive: &dyn Fn(&NodeId) -> bool,
    seeds: &[NodeId],
    rng: &mut impl rand::Rng,
) -> Option<NodeId> {
    let removed = |id: &NodeId| {
        view.member(id)
            .is_some_and(|m| m.status == MemberStatus::Removed)
    };
    let live: Vec<&NodeId> = view
        .members()
        .filter(|m| &m.id != me && m.status != MemberStatus::Removed && alive(&m.id))
        .map(|m| &m.id)
        .collect();
    // Sorted and deduplicated, so that the choice depends on the set of seeds only.
    let mut all_seeds: Vec<&NodeId> = seeds.iter().filter(|s| *s != me && !removed(s)).collect();
    all_seeds.sort();
    all_seeds.dedup();
    let live_seeds: Vec<&NodeId> = all_seeds.iter().copied().filter(|s| alive(s)).collect();
    let seed_pool = if live_seeds.is_empty() {
        &all_seeds
    } else {
        &live_seeds
    };
    let seed_among_live = live.iter().any(|id| all_seeds.binary_search(id).is_ok());
    let pick_seed = live.is_empty()
        || (!live_seeds.is_empty() && !seed_among_live)
        || rng.gen_range(0..=live.len()) == 0;
    if pick_seed {
        if let Some(seed) = pick(seed_pool, rng) {
            return Some(seed.clone());
        }
    }
    pick(&live, rng).cloned()
}

fn pick<'a>(from: &[&'a NodeId], rng: &mut impl rand::Rng) -> Option<&'a NodeId> {
    if from.is_empty() {
        None
    } else {
        Some(from[rng.gen_range(0..from.len())])
    }
}

/// Handles one gossip message against this node's view and returns the reply to send back, if any.
///
/// The exchange is push-pull: the initiator sends [`GossipMessage::Digest`]; a partner whose digest
/// differs replies with its view; the initiator merges it and, if the partner lacked something,
/// replies with its merged view, else with its digest; the partner merges that and answers its
/// digest, now equal, which ends the exchange (`None`). After one exchange both sides hold the
/// merge of both views, and each knows the other has its view.
///
/// Errors (nothing changed, nothing to send): those of [`ClusterView::merge`], chiefly
/// [`ViewError::ClusterMismatch`] for a view of another cluster.
pub fn handle_gossip(
    view: &mut ClusterView,
    message: &GossipMessage,
) -> Result<Option<GossipMessage>, ViewError> {
    match message {
        GossipMessage::Digest(digest) => {
            Ok((*digest != view.digest()).then(|| GossipMessage::View(Box::new(view.clone()))))
        }
        GossipMessage::View(theirs) => {
            view.merge(theirs)?;
            // Merging made this view at least theirs; if it is more, they lack something. If
            // it is the same, the digest says so: the sender learns its view arrived (a node
            // that left waits for that before it stops), and a digest equal to its own ends
            // the exchange.
            Ok(Some(if *view != **theirs {
                GossipMessage::View(Box::new(view.clone()))
            } else {
                GossipMessage::Digest(view.digest())
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{RingConfig, Strategy};
    use alloc::collections::BTreeMap;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::{format, println, vec};

    fn id(i: usize) -> NodeId {
        NodeId::new(format!("n{i:04}"))
    }

    fn up(i: usize) -> MemberInfo {
        let mut info = MemberInfo::new(id(i), format!("10.0.{}.{}:7000", i / 256, i % 256), "c", 1);
        info.status = MemberStatus::Up;
        info
    }

    /// A view in which nodes `0..n` are all Up, with a claimed ring.
    fn cluster(n: usize) -> ClusterView {
        let mut view = ClusterView::new("sim").unwrap();
        for i in 0..n {
            view.set_member(up(i)).unwrap();
        }
        let config = RingConfig {
            partitions: (4 * n as u32).next_power_of_two(),
            strategy: Strategy::Partitions,
            target_n: 3,
            ..RingConfig::default()
        };
        view.claim(&id(0), &config).unwrap();
        view
    }

    #[test]
    fn peers_are_live_members_other_than_me() {
        let mut view = cluster(5);
        view.set_status(&id(3), MemberStatus::Removed);
        let alive = |p: &NodeId| *p != id(4);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = BTreeMap::new();
        for _ in 0..1000 {
            let peer = choose_gossip_peer(&id(0), &view, &alive, &[], &mut rng).unwrap();
            *seen.entry(peer).or_insert(0) += 1;
        }
        // Only n0001 and n0002 qualify, and both are chosen about equally.
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), vec![id(1), id(2)]);
        assert!(seen.values().all(|&c| c > 400));
        // Alone, without seeds: nobody.
        let alone = cluster(1);
        assert_eq!(
            choose_gossip_peer(&id(0), &alone, &|_| true, &[], &mut rng),
            None
        );
        // A seed that is me, or Removed, is no seed.
        assert_eq!(
            choose_gossip_peer(&id(0), &alone, &|_| true, &[id(0)], &mut rng),
            None
        );
        assert_eq!(
            choose_gossip_peer(&id(0), &view, &|p| *p == id(3), &[id(3)], &mut rng),
            None
        );
    }

    #[test]
    fn seeds_are_chosen_now_and_then() {
        // Ten live candidates, one of them a seed: a seed round about 1 time in 11, plus the
        // seed's own tenth share of the ordinary rounds.
        let view = cluster(11);
        let seeds = [id(5)];
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let rounds = 11_000;
        let to_seed = (0..rounds)
            .filter(|_| {
                choose_gossip_peer(&id(0), &view, &|_| true, &seeds, &mut rng) == Some(id(5))
            })
            .count();
        let expected = rounds as f64 * (1.0 / 11.0 + 10.0 / 11.0 / 10.0);
        assert!(
            (to_seed as f64 - expected).abs() < expected * 0.1,
            "{to_seed} vs {expected}"
        );
    }

    #[test]
    fn seeds_out_of_sight_are_sought() {
        // A node whose view does not hold the seed (a new node, or one cut off with a group that
        // lost sight of the seeds) always goes to a live seed.
        let view = cluster(4);
        let seeds = [id(9), id(8)];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let peer = choose_gossip_peer(&id(0), &view, &|_| true, &seeds, &mut rng).unwrap();
            assert!(seeds.contains(&peer));
        }
        // A seed that seems down is tried only now and then, so gossip goes on meanwhile.
        let down = |p: &NodeId| !seeds.contains(p);
        let to_seeds = (0..1000)
            .filter_map(|_| choose_gossip_peer(&id(0), &view, &down, &seeds, &mut rng))
            .filter(|p| seeds.contains(p))
            .count();
        assert!((150..350).contains(&to_seeds), "{to_seeds}");
        // With nobody else alive, the seeds are all there is.
        let lonely = cluster(1);
        let peer = choose_gossip_peer(&id(0), &lonely, &|_| false, &seeds, &mut rng).unwrap();
        assert!(seeds.contains(&peer));
    }

    #[test]
    fn gossip_messages_round_trip() {
        let view = cluster(3);
        for message in [
            GossipMessage::Digest(view.digest()),
            GossipMessage::View(Box::new(view)),
        ] {
            let bytes = postcard::to_allocvec(&message).unwrap();
            assert_eq!(
                postcard::from_bytes::<GossipMessage>(&bytes).unwrap(),
                message
            );
        }
        let mut other = ClusterView::new("other").unwrap();
        assert!(matches!(
            handle_gossip(&mut other, &GossipMessage::View(Box::new(cluster(2)))),
            Err(ViewError::ClusterMismatch { .. })
        ));
        assert_eq!(other, ClusterView::new("other").unwrap());
    }

    /// Counts of one simulated run.
    #[derive(Debug)]
    struct Run {
        rounds: usize,
        views_sent: usize,
        digests_sent: usize,
    }

    /// Runs a push-pull exchange from `from` to `to`; returns (views, digests) sent.
    fn exchange(views: &mut [ClusterView], from: usize, to: usize) -> (usize, usize) {
        let (mut sent_views, mut sent_digests) = (0, 1);
        let mut message = Some(GossipMessage::Digest(views[from].digest()));
        let mut at = to;
        while let Some(m) = message {
            message = handle_gossip(&mut views[at], &m).unwrap();
            match message {
                Some(GossipMessage::View(_)) => sent_views += 1,
                Some(GossipMessage::Digest(_)) => sent_digests += 1,
                None => {}
            }
            at = if at == to { from } else { to };
        }
        (sent_views, sent_digests)
    }

    /// How the exchanges of one round see each other.
    #[derive(Clone, Copy, Debug)]
    enum Rounds {
        /// One after another in a random order, each seeing what earlier ones brought: nodes
        /// whose timers fire at random points of the interval.
        Staggered,
        /// All at once from the views as they were at the start of the round: the slowest case.
        Lockstep,
    }

    /// `n` nodes share a converged view; `change` alters some of them (and may add nodes); then
    /// every round every node gossips with the partner `choose_gossip_peer` picks. Returns the
    /// rounds until all views are equal, and the messages sent.
    fn simulate(
        n: usize,
        seeds: &[NodeId],
        seed: u64,
        rounds: Rounds,
        change: impl FnOnce(&mut Vec<ClusterView>, &mut Vec<NodeId>),
    ) -> Run {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let base = cluster(n);
        let mut views = vec![base; n];
        let mut ids: Vec<NodeId> = (0..n).map(id).collect();
        change(&mut views, &mut ids);
        let index: BTreeMap<NodeId, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i))
            .collect();
        let mut run = Run {
            rounds: 0,
            views_sent: 0,
            digests_sent: 0,
        };
        let converged = |views: &[ClusterView]| {
            let digest = views[0].digest();
            views.iter().all(|v| v.digest() == digest)
        };
        while !converged(&views) {
            assert!(
                run.rounds < 100,
                "no convergence after 100 rounds (seed {seed})"
            );
            run.rounds += 1;
            let mut pairs: Vec<(usize, usize)> = (0..views.len())
                .filter_map(|i| {
                    let peer = choose_gossip_peer(&ids[i], &views[i], &|_| true, seeds, &mut rng)?;
                    Some((i, *index.get(&peer)?))
                })
                .collect();
            pairs.shuffle(&mut rng);
            match rounds {
                Rounds::Staggered => {
                    for (from, to) in pairs {
                        let (v, d) = exchange(&mut views, from, to);
                        run.views_sent += v;
                        run.digests_sent += d;
                    }
                }
                Rounds::Lockstep => {
                    let start = views.clone();
                    for (from, to) in pairs {
                        // The same exchange, run on copies of the start-of-round views.
                        let mut pair = [start[from].clone(), start[to].clone()];
                        let (v, d) = exchange(&mut pair, 0, 1);
                        run.views_sent += v;
                        run.digests_sent += d;
                        let [learned_from, learned_to] = pair;
                        views[from].merge(&learned_from).unwrap();
                        views[to].merge(&learned_to).unwrap();
                    }
                }
            }
        }
        assert!(views.windows(2).all(|w| w[0] == w[1]));
        run
    }

    /// Node `n / 2` changes its own entry.
    fn one_update(views: &mut [ClusterView], _: &mut Vec<NodeId>) {
        let i = views.len() / 2;
        let mut moved = up(i);
        moved.peer_address = "moved:7000".into();
        views[i].set_member(moved).unwrap();
    }

    /// A new node joins, knowing only itself and the seeds.
    fn one_join(views: &mut Vec<ClusterView>, ids: &mut Vec<NodeId>) {
        let new = views.len();
        let mut view = ClusterView::new("sim").unwrap();
        let mut info = up(new);
        info.status = MemberStatus::Joining;
        view.set_member(info).unwrap();
        views.push(view);
        ids.push(id(new));
    }

    #[test]
    fn fifty_nodes_converge_quickly() {
        let seeds = [id(0), id(1)];
        for seed in 0..5 {
            for rounds in [Rounds::Staggered, Rounds::Lockstep] {
                let update = simulate(50, &seeds, seed, rounds, |v, i| one_update(v, i));
                println!("50 nodes, {rounds:?}, seed {seed}: update {update:?}");
                assert!(
                    update.rounds <= 20,
                    "update: {update:?} ({rounds:?}, seed {seed})"
                );
                let join = simulate(50, &seeds, seed, rounds, one_join);
                println!("50 nodes, {rounds:?}, seed {seed}: join {join:?}");
                assert!(
                    join.rounds <= 20,
                    "join: {join:?} ({rounds:?}, seed {seed})"
                );
            }
        }
        // Digests keep the traffic down: a round of a converged cluster sends no view at all.
        let mut views = vec![cluster(3); 3];
        assert_eq!(exchange(&mut views, 0, 1), (0, 1));
    }

    /// For the design document: rounds to convergence at 1000 nodes.
    /// `cargo test --release -p ringkv-core -- --ignored --nocapture thousand_nodes`
    #[test]
    #[ignore]
    fn thousand_nodes_converge() {
        let seeds = [id(0), id(1), id(2)];
        println!("nodes  mode       change  seed  rounds  views_sent  digests_sent");
        for rounds in [Rounds::Staggered, Rounds::Lockstep] {
            for seed in 0..3 {
                for (name, run) in [
                    (
                        "update",
                        simulate(1000, &seeds, seed, rounds, |v, i| one_update(v, i)),
                    ),
                    ("join", simulate(1000, &seeds, seed, rounds, one_join)),
                ] {
                    println!(
                        "{:>5}  {:<9}  {name:>6}  {seed:>4}  {:>6}  {:>10}  {:>12}",
                        1000,
                        format!("{rounds:?}"),
                        run.rounds,
                        run.views_sent,
                        run.digests_sent
                    );
                    assert!(run.rounds <= 30);
                }
            }
        }
    }
}
