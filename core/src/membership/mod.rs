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
//!   first, and only when the digests differ a [`ViewDelta`] exchange that narrows down what
//!   differs (hashes of member ranges by id hash, then the entries of the small ranges that
//!   differ, the ring and the bucket properties only when their hashes differ; see
//!   [`handle_gossip`]). A quiet cluster sends one digest a node a round, and a change costs a
//!   few hundred bytes of hashes plus the changed entries, whatever the size of the cluster. A
//!   change reaches every node in O(log n) rounds. Seed nodes are chosen now and then, and always when no live member
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
//! // The claimant gives b partitions; one more exchange and b routes by the same ring. b's
//! // digest differs, so a answers with a summary; b finds the ring's hash differs and asks
//! // for it with its own stamps; a sends the ring alone (the members are equal).
//! assert!(view_a.claim(&a, &RingConfig::default()).unwrap());
//! let summary = handle_gossip(&mut view_a, &GossipMessage::Digest(view_b.digest())).unwrap();
//! let stamps = handle_gossip(&mut view_b, &summary.unwrap()).unwrap().unwrap();
//! let Some(GossipMessage::Delta(ring)) = handle_gossip(&mut view_a, &stamps).unwrap() else {
//!     panic!("a sends its ring")
//! };
//! assert!(ring.ring.is_some() && ring.members.is_empty());
//! // b merges it; its digest, now equal to a's, tells a it arrived and ends the exchange.
//! let ack = handle_gossip(&mut view_b, &GossipMessage::Delta(ring)).unwrap();
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
use alloc::sync::Arc;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::id::Millis;
use crate::id::NodeId;

pub use detector::{DetectorConfig, FailureDetector, Liveness};
pub use view::{
    member_range_of, ClusterView, Handoff, MemberInfo, MemberRange, MemberStatus,
    MemberStatusError, RingState, ViewError, MAX_RANGE_LEVEL, RANGE_FANOUT_BITS,
};

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;

use crate::bucket::BucketProps;

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
    /// The sender's view digest ([`ClusterView::digest`]); if yours differs, answer with a
    /// summary of your view ([`GossipMessage::Delta`]). Also the acknowledgement that ends an
    /// exchange.
    Digest(u64),
    /// The sender's whole view; merge it, and send yours back if it still differs. Still
    /// understood (a view from a node of an earlier version), no longer sent: deltas carry only
    /// what differs. (Boxed: a view is much larger than a digest.)
    View(Box<ClusterView>),
    /// One step of the delta exchange: the parts of the sender's view the receiver may lack,
    /// and hashes of the parts still to compare. (Boxed: larger than a digest.)
    Delta(Box<ViewDelta>),
}

/// A member range of at most this many entries is sent as its entries rather than summarised
/// one level down.
pub const LEAF_ENTRIES: u32 = 8;

/// The hashes of the 64 ranges one level below a member range, in a [`ViewDelta`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSummary {
    /// The range summarised.
    pub range: MemberRange,
    /// The hash of each child range ([`MemberRange::child`]), 8 bytes big-endian each: 512
    /// bytes (fixed width: hashes are random, so a variable-length integer would be longer).
    pub hashes: Vec<u8>,
    /// How many member entries each child range holds.
    pub counts: Vec<u32>,
}

/// What a node sends of its view in a delta exchange (see [`handle_gossip`]): its stamps
/// (digest, ring hash, buckets hash), summaries of member ranges to compare, and the entries of
/// the ranges, the ring and the buckets it found to differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDelta {
    /// The sender's cluster: views of two clusters never merge.
    pub cluster: String,
    /// The sender's [`ClusterView::digest`] when it sent this (after merging what it received).
    pub digest: u64,
    /// The sender's [`ClusterView::ring_hash`].
    pub ring_hash: u64,
    /// The version and claimant of the sender's ring, if it has one: a side whose ring is older
    /// than the other's does not send it (it would lose the merge).
    pub ring_claim: Option<(u64, NodeId)>,
    /// The sender's [`ClusterView::buckets_hash`].
    pub buckets_hash: u64,
    /// Member ranges whose children the receiver should compare with its own.
    pub summaries: Vec<RangeSummary>,
    /// Member ranges of which `members` holds every entry the sender has (maybe none).
    pub covered: Vec<MemberRange>,
    /// The sender's entries of the `covered` ranges. Shared with the sender's view (encoded as
    /// plain entries): a receiver in the same process takes the very entries.
    pub members: Vec<Arc<MemberInfo>>,
    /// The sender's ring state, when its hash differs from the receiver's.
    pub ring: Option<RingState>,
    /// The sender's bucket entries (name: version, properties), when their hash differs.
    pub buckets: Option<BTreeMap<Vec<u8>, (u64, BucketProps)>>,
}

impl ViewDelta {
    /// A delta of `view` with its stamps and nothing else.
    fn stamps(view: &ClusterView) -> ViewDelta {
        ViewDelta {
            cluster: String::from(view.cluster()),
            digest: view.digest(),
            ring_hash: view.ring_hash(),
            ring_claim: view.ring().map(|r| (r.version, r.claimant.clone())),
            buckets_hash: view.buckets_hash(),
            summaries: Vec::new(),
            covered: Vec::new(),
            members: Vec::new(),
            ring: None,
            buckets: None,
        }
    }

    /// The first answer to a digest that differs: the stamps and a summary of all members.
    pub fn summary(view: &ClusterView) -> ViewDelta {
        let mut delta = ViewDelta::stamps(view);
        delta.summaries.push(summarise(view, MemberRange::ALL));
        delta
    }

    /// The stamps and member `id`'s entry (with the view's other entries of the deepest member
    /// range that holds it, usually none), to open an exchange with instead of a digest when
    /// the sender needs a peer to acknowledge that entry. A peer answers any delta that carries
    /// data, with its digest at least (see [`handle_gossip`]); a digest equal to its own it does
    /// not answer at all.
    pub fn entry_of(view: &ClusterView, id: &NodeId) -> ViewDelta {
        let mut delta = ViewDelta::stamps(view);
        let range = MemberRange::at(member_range_of(id), MAX_RANGE_LEVEL);
        delta.members = view.members_in(range).cloned().collect();
        if !delta.members.is_empty() {
            delta.covered.push(range);
        }
        delta
    }

    /// Whether it carries anything to merge (entries, a ring, buckets) rather than only hashes.
    pub fn carries_data(&self) -> bool {
        !self.covered.is_empty() || self.ring.is_some() || self.buckets.is_some()
    }

    /// Refuses what no valid view could send, before anything is merged.
    fn check(&self, view: &ClusterView) -> Result<(), ViewError> {
        let malformed = |reason| Err(ViewError::Malformed { reason });
        let ranges = self.summaries.iter().map(|s| &s.range).chain(&self.covered);
        if ranges.clone().any(|r| !r.is_valid()) {
            return malformed("a member range out of bounds");
        }
        if self.summaries.iter().any(|s| {
            s.range.level >= MAX_RANGE_LEVEL
                || s.hashes.len() != 8 << RANGE_FANOUT_BITS
                || s.counts.len() != 1 << RANGE_FANOUT_BITS
        }) {
            return malformed("a range summary of the wrong shape");
        }
        for member in &self.members {
            member.check()?;
        }
        if let Some(ring) = &self.ring {
            view.check_ring_fits(ring, &self.members)?;
        }
        if let Some(buckets) = &self.buckets {
            for name in buckets.keys() {
                if name.len() > view::MAX_STRING_BYTES {
                    return Err(ViewError::TooLarge {
                        what: "bucket name",
                        size: name.len(),
                        max: view::MAX_STRING_BYTES,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The summary of `range`: its children's hashes and counts.
fn summarise(view: &ClusterView, range: MemberRange) -> RangeSummary {
    let (hashes, counts) = view.child_hashes(range);
    RangeSummary {
        range,
        hashes: hashes.iter().flat_map(|h| h.to_be_bytes()).collect(),
        counts: counts.to_vec(),
    }
}

fn hash_at(bytes: &[u8], index: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(slice) = bytes.get(index * 8..index * 8 + 8) {
        word.copy_from_slice(slice);
    }
    u64::from_be_bytes(word)
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
///
/// In a view of more than [`SAMPLE_ABOVE`] members the candidates are not listed (that asked
/// `alive` about every member, every round): members are drawn at random until one is a
/// candidate, with one more slot standing for "a seed", which gives the same probabilities
/// (a draw is uniform over the candidates and the seed slot); after [`SAMPLE_TRIES`] draws
/// without a candidate, the list is made after all.
pub fn choose_gossip_peer(
    me: &NodeId,
    view: &ClusterView,
    alive: &dyn Fn(&NodeId) -> bool,
    seeds: &[NodeId],
    rng: &mut impl rand::Rng,
) -> Option<NodeId> {
    if view.member_count() > SAMPLE_ABOVE {
        if let Some(peer) = sample_gossip_peer(me, view, alive, seeds, rng) {
            return Some(peer);
        }
    }
    let live: Vec<&NodeId> = view
        .members()
        .filter(|m| &m.id != me && m.status != MemberStatus::Removed && alive(&m.id))
        .map(|m| &m.id)
        .collect();
    let (all_seeds, live_seeds) = seed_pools(me, view, alive, seeds);
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

/// The seeds `me` may gossip with (not itself, not Removed in `view`), sorted and deduplicated
/// so that a choice depends on the set of seeds only; and those of them `alive`.
fn seed_pools<'a>(
    me: &NodeId,
    view: &ClusterView,
    alive: &dyn Fn(&NodeId) -> bool,
    seeds: &'a [NodeId],
) -> (Vec<&'a NodeId>, Vec<&'a NodeId>) {
    let removed = |id: &NodeId| {
        view.member(id)
            .is_some_and(|m| m.status == MemberStatus::Removed)
    };
    let mut all: Vec<&NodeId> = seeds.iter().filter(|s| *s != me && !removed(s)).collect();
    all.sort();
    all.dedup();
    let live = all.iter().copied().filter(|s| alive(s)).collect();
    (all, live)
}

/// Views with more members than this choose a gossip partner by sampling (see
/// [`choose_gossip_peer`]); smaller ones list the candidates, as they always did (so small
/// seeded simulations draw the same numbers as before).
pub const SAMPLE_ABOVE: usize = 64;

/// Draws [`choose_gossip_peer`] makes before it lists the candidates after all.
pub const SAMPLE_TRIES: usize = 32;

/// [`choose_gossip_peer`] by sampling; `None` when no draw found a candidate (or the seed slot
/// with a seed to pick), and the caller then lists the candidates.
fn sample_gossip_peer(
    me: &NodeId,
    view: &ClusterView,
    alive: &dyn Fn(&NodeId) -> bool,
    seeds: &[NodeId],
    rng: &mut impl rand::Rng,
) -> Option<NodeId> {
    let candidate =
        |m: &MemberInfo| &m.id != me && m.status != MemberStatus::Removed && alive(&m.id);
    let (all_seeds, live_seeds) = seed_pools(me, view, alive, seeds);
    let seed_pool = if live_seeds.is_empty() {
        &all_seeds
    } else {
        &live_seeds
    };
    let seed_among_live = all_seeds
        .iter()
        .any(|s| view.member(s).is_some_and(&candidate));
    if !live_seeds.is_empty() && !seed_among_live {
        return pick(seed_pool, rng).cloned();
    }
    let slots = view.member_count();
    for _ in 0..SAMPLE_TRIES {
        let slot = rng.gen_range(0..=slots);
        if slot == slots {
            // The seed slot; with no seed to pick it is no candidate (the choice is then
            // uniform over the live members, as when the list finds no seed).
            match pick(seed_pool, rng) {
                Some(seed) => return Some(seed.clone()),
                None => continue,
            }
        }
        if let Some(member) = view.nth_member(slot).filter(|m| candidate(m)) {
            return Some(member.id.clone());
        }
    }
    None
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
/// The exchange is push-pull, and sends what differs rather than whole views:
///
/// 1. The initiator sends [`GossipMessage::Digest`]. A partner whose digest is equal answers
///    nothing: in a converged cluster a round costs one digest.
/// 2. Otherwise the partner answers a [`ViewDelta`] summary: its ring and buckets hashes, and the
///    hashes of its members split into 64 ranges by a hash of their ids ([`MemberRange`]).
/// 3. Each side, given a delta, merges what it carries (member entries, a ring, bucket
///    properties; the rules of [`ClusterView::merge`]) and answers with what the other lacks: for
///    a summarised range whose child hashes differ, the child's entries when it is small (at most
///    [`LEAF_ENTRIES`] here, or none there) or else the child's own summary, one level down; for a
///    range the other sent the entries of, its own entries of that range if they still differ;
///    its buckets when their hashes differ; its ring when its hash differs and no member range
///    is left to settle (so that every member of the ring has an entry at the receiver).
/// 4. A side that merged data and has nothing to send back answers its digest: the sender learns
///    that what it sent arrived (a node that left waits for that before it stops), and a digest
///    equal to the receiver's own ends the exchange (`None`).
///
/// A node that left and is drained, until it learns that a peer holds its entry, opens with
/// [`ViewDelta::entry_of`] instead of its digest (see [`sender_holds_entry`]): step 4 makes
/// the peer answer even when their views are already equal.
///
/// After one exchange both sides hold the merge of both views. What is sent is O(what differs)
/// entries plus 512 bytes per summarised range, not O(members).
///
/// Errors (nothing changed, nothing to send): those of [`ClusterView::merge`], chiefly
/// [`ViewError::ClusterMismatch`] for a view of another cluster, and [`ViewError::Malformed`] for
/// a delta no view could send.
pub fn handle_gossip(
    view: &mut ClusterView,
    message: &GossipMessage,
) -> Result<Option<GossipMessage>, ViewError> {
    match message {
        GossipMessage::Digest(digest) => Ok((*digest != view.digest())
            .then(|| GossipMessage::Delta(Box::new(ViewDelta::summary(view))))),
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
        GossipMessage::Delta(delta) => handle_delta(view, delta),
    }
}

fn handle_delta(
    view: &mut ClusterView,
    delta: &ViewDelta,
) -> Result<Option<GossipMessage>, ViewError> {
    if delta.cluster != view.cluster() {
        return Err(ViewError::ClusterMismatch {
            ours: String::from(view.cluster()),
            theirs: delta.cluster.clone(),
        });
    }
    delta.check(view)?;
    // Merge first (members before the ring, whose members must have entries), then answer
    // from the merged view. The bucket count is checked before anything changes.
    if let Some(buckets) = &delta.buckets {
        let mut probe = ClusterView::new(view.cluster())?;
        probe.merge_buckets(view.bucket_entries())?;
        probe.merge_buckets(buckets)?;
    }
    view.merge_members(delta.members.iter())?;
    view.merge_ring(delta.ring.as_ref());
    if let Some(buckets) = &delta.buckets {
        view.merge_buckets(buckets)?;
    }

    let mut reply = ViewDelta::stamps(view);
    // Ranges whose entries go back: those they sent entries of that still differ here, and
    // differing children of their summaries that are small.
    let mut covered: BTreeSet<MemberRange> = BTreeSet::new();
    if !delta.covered.is_empty() {
        let ranges: BTreeSet<MemberRange> = delta.covered.iter().copied().collect();
        let theirs = sums_of(delta.members.iter().map(|m| &**m), &ranges);
        let mine = sums_of(view.members(), &ranges);
        for range in ranges {
            if mine.get(&range) != theirs.get(&range) {
                covered.insert(range);
            }
        }
    }
    for summary in &delta.summaries {
        let (mine, counts) = view.child_hashes(summary.range);
        for (index, (my_hash, my_count)) in mine.iter().zip(counts).enumerate() {
            if *my_hash == hash_at(&summary.hashes, index) {
                continue;
            }
            let child = summary.range.child(index);
            let their_count = summary.counts.get(index).copied().unwrap_or(0);
            if my_count <= LEAF_ENTRIES || their_count == 0 || child.level >= MAX_RANGE_LEVEL {
                covered.insert(child);
            } else {
                reply.summaries.push(summarise(view, child));
            }
        }
    }
    if !covered.is_empty() {
        reply.members = view
            .shared_members()
            .filter(|m| in_any(member_range_of(&m.id), &covered).is_some())
            .cloned()
            .collect();
        reply.covered = covered.into_iter().collect();
    }
    let ring_differs = match &delta.ring {
        Some(theirs) => view.ring() != Some(theirs),
        None => delta.ring_hash != view.ring_hash(),
    };
    // The ring waits until no member range is left to settle: then both sides hold the same
    // members, so every member of the ring sent has an entry at the receiver.
    // A ring older than theirs would lose the merge there: theirs comes instead.
    let older = match (&reply.ring_claim, &delta.ring_claim) {
        (Some((mine, my_claimant)), Some((theirs, their_claimant))) => {
            (mine, their_claimant) < (theirs, my_claimant)
        }
        _ => false,
    };
    if ring_differs && !older && reply.covered.is_empty() && reply.summaries.is_empty() {
        reply.ring = view.ring().cloned();
    }
    let buckets_differ = match &delta.buckets {
        Some(theirs) => view.bucket_entries() != theirs,
        None => delta.buckets_hash != view.buckets_hash(),
    };
    if buckets_differ && view.buckets().next().is_some() {
        reply.buckets = Some(view.bucket_entries().clone());
    }
    let stamps_differ =
        delta.ring_hash != reply.ring_hash || delta.buckets_hash != reply.buckets_hash;
    Ok(
        if reply.carries_data() || !reply.summaries.is_empty() || stamps_differ {
            Some(GossipMessage::Delta(Box::new(reply)))
        } else if delta.carries_data() || delta.digest != reply.digest {
            // Nothing they lack that this exchange saw: say what this view is now, which
            // acknowledges what they sent and, if it equals theirs, ends the exchange.
            Some(GossipMessage::Digest(reply.digest))
        } else {
            None
        },
    )
}

/// Whether the sender of `message` holds member `id`'s entry as `view` has it, `view` being the
/// receiver's view after [`handle_gossip`] merged the message. A node that left waits for this
/// before it says it is drained (stopped earlier, the others would wait for its hand-off
/// forever).
///
/// A digest equal to the view's says the sender holds everything the view does; a whole view,
/// or the entries of a delta, show the sender's entry. A delta's digest counts too, compared
/// with the view after the merge: the last data of an exchange is often the sender's own news,
/// sent after it merged the receiver's entry, and without the entry itself. (Compared before
/// the merge, it never matches then; and a member that left is Removed soon, so no peer starts
/// an exchange with it, and once its view equals theirs its own digests get no answer: it
/// would never learn that its entry arrived. For the same reason such a node opens its
/// exchanges with its entry, [`ViewDelta::entry_of`], which is always answered: otherwise the
/// loss of the one message that acknowledged its entry would leave it waiting for ever.)
pub fn sender_holds_entry(view: &ClusterView, message: &GossipMessage, id: &NodeId) -> bool {
    let Some(ours) = view.member(id) else {
        return false;
    };
    match message {
        GossipMessage::Digest(digest) => *digest == view.digest(),
        GossipMessage::View(theirs) => theirs.member(id) == Some(ours),
        GossipMessage::Delta(delta) => {
            delta.digest == view.digest() || delta.members.iter().any(|m| **m == *ours)
        }
    }
}

/// The sums of the hashes of `members` in each of `ranges` that holds any (a member in two
/// nested ranges counts in the innermost only: ranges sent together never nest).
fn sums_of<'a>(
    members: impl Iterator<Item = &'a MemberInfo>,
    ranges: &BTreeSet<MemberRange>,
) -> BTreeMap<MemberRange, u64> {
    let mut sums = BTreeMap::new();
    for member in members {
        if let Some(range) = in_any(member_range_of(&member.id), ranges) {
            let sum: &mut u64 = sums.entry(range).or_insert(0);
            *sum = sum.wrapping_add(view::entry_hash(member));
        }
    }
    sums
}

/// The deepest of `ranges` that holds the id hash `hash`.
fn in_any(hash: u64, ranges: &BTreeSet<MemberRange>) -> Option<MemberRange> {
    (0..=MAX_RANGE_LEVEL)
        .rev()
        .map(|level| MemberRange::at(hash, level))
        .find(|range| ranges.contains(range))
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
    fn large_views_sample_with_the_same_odds() {
        // 200 members (sampled), a quarter of them down and one Removed: only live members are
        // chosen, each about equally, and the seed about 1 time in (candidates + 1) plus its
        // own share.
        let mut view = cluster(200);
        view.set_status(&id(7), MemberStatus::Removed);
        let alive = |p: &NodeId| p.as_str().as_bytes().last().is_some_and(|b| b % 4 != 1);
        let seeds = [id(4)];
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut seen: BTreeMap<NodeId, usize> = BTreeMap::new();
        let rounds = 40_000;
        for _ in 0..rounds {
            let peer = choose_gossip_peer(&id(0), &view, &alive, &seeds, &mut rng).unwrap();
            *seen.entry(peer).or_insert(0) += 1;
        }
        let candidates: Vec<NodeId> = view
            .members()
            .filter(|m| m.id != id(0) && m.status != MemberStatus::Removed && alive(&m.id))
            .map(|m| m.id.clone())
            .collect();
        assert!(seen.keys().all(|p| candidates.contains(p)));
        let l = candidates.len() as f64;
        let to_seed = seen[&id(4)] as f64;
        let expected = rounds as f64 * (1.0 / (l + 1.0) + l / (l + 1.0) / l);
        assert!(
            (to_seed - expected).abs() < expected * 0.25,
            "{to_seed} vs {expected}"
        );
        let other = seen[&id(8)] as f64;
        let share = rounds as f64 * l / (l + 1.0) / l;
        assert!((other - share).abs() < share * 0.4, "{other} vs {share}");
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

    #[test]
    fn deltas_send_what_differs_in_large_views() {
        // 3,000 members: a summary goes down to level 2 before it names entries.
        let base = cluster(3000);
        let mut a = base.clone();
        let mut b = base.clone();
        for i in [7, 1500, 2999] {
            let mut moved = up(i);
            moved.peer_address = "moved:7000".into();
            b.set_member(moved).unwrap();
        }
        b.set_bucket(b"carts".to_vec(), crate::bucket::BucketProps::default())
            .unwrap();
        // A new member only a knows of, and a ring claimed with it.
        a.set_member(up(3000)).unwrap();
        a.claim(&id(0), &a.ring().unwrap().ring.config().clone())
            .unwrap();
        let mut expected = a.clone();
        expected.merge(&b).unwrap();
        let whole = postcard::to_allocvec(&GossipMessage::View(Box::new(a.clone())))
            .unwrap()
            .len();
        let mut views = [a, b];
        let (deltas, digests, bytes) = exchange(&mut views, 0, 1);
        assert_eq!(views[0], expected);
        assert_eq!(views[1], expected);
        println!("{deltas} deltas, {digests} digests, {bytes} bytes (a whole view: {whole})");
        // The ring is sent once (it changed); the members cost a few summaries and entries.
        let ring = postcard::to_allocvec(expected.ring().unwrap())
            .unwrap()
            .len();
        assert!(bytes < ring + 8_000, "{bytes} bytes, ring {ring}");
        // Without the ring change, far less than a view.
        let mut c = base.clone();
        c.set_status(&id(42), MemberStatus::Down);
        let mut views = [base, c];
        let (_, _, bytes) = exchange(&mut views, 0, 1);
        assert_eq!(views[0], views[1]);
        assert!(
            bytes < 2_500,
            "{bytes} bytes for one entry, whole view {whole}"
        );
    }

    #[test]
    fn a_leaver_learns_that_its_peer_holds_its_entry_from_the_peers_own_news() {
        // The leaver's drained entry goes to the peer, which answers with news of its own (in
        // another member range) and not the leaver's entry. Judged before the merge, as it
        // was, nothing in the exchange told the leaver its entry arrived; judged on the merged
        // view, the peer's digest does.
        let leaver = id(4);
        let range = |i: usize| MemberRange::at(member_range_of(&id(i)), 1);
        let other = (0..4).find(|&i| range(i) != range(4)).unwrap();
        let (mut l, mut p) = (cluster(5), cluster(5));
        assert!(l.set_status(&leaver, MemberStatus::Leaving));
        assert!(l.set_handoff(&leaver, Handoff::Drained));
        assert!(p.set_status(&id(other), MemberStatus::Leaving));
        let mut message = Some(GossipMessage::Digest(l.digest()));
        let (mut at_p, mut confirmed, mut before_merge) = (true, false, false);
        let mut steps = 0;
        while let Some(m) = message {
            if at_p {
                message = handle_gossip(&mut p, &m).unwrap();
            } else {
                before_merge |= match &m {
                    GossipMessage::Delta(d) => {
                        d.digest == l.digest()
                            || d.members.iter().any(|e| Some(&**e) == l.member(&leaver))
                    }
                    GossipMessage::Digest(d) => *d == l.digest(),
                    GossipMessage::View(_) => false,
                };
                message = handle_gossip(&mut l, &m).unwrap();
                if sender_holds_entry(&l, &m, &leaver) {
                    assert_eq!(p.member(&leaver), l.member(&leaver));
                    confirmed = true;
                }
            }
            at_p = !at_p;
            steps += 1;
            assert!(steps < 20, "the exchange does not end");
        }
        assert_eq!(l, p);
        assert!(
            confirmed,
            "the leaver never learned that its peer holds its entry"
        );
        assert!(!before_merge, "the case no longer shows the old blind spot");
        // Once the views agree, the leaver's digest gets no answer (were the message above that
        // confirmed it lost, nothing would tell it again); its entry always gets one.
        assert!(handle_gossip(&mut p, &GossipMessage::Digest(l.digest()))
            .unwrap()
            .is_none());
        let opening = GossipMessage::Delta(Box::new(ViewDelta::entry_of(&l, &leaver)));
        let ack = handle_gossip(&mut p, &opening).unwrap().unwrap();
        assert_eq!(ack, GossipMessage::Digest(l.digest()));
        assert!(sender_holds_entry(&l, &ack, &leaver));
        // And a peer that lacks the entry does not confirm it.
        let mut stale = cluster(5);
        let digest = GossipMessage::Digest(stale.digest());
        assert!(!sender_holds_entry(&l, &digest, &leaver));
        assert!(stale.set_status(&id(other), MemberStatus::Leaving));
        let summary = handle_gossip(&mut stale, &GossipMessage::Digest(l.digest())).unwrap();
        assert!(!sender_holds_entry(&l, &summary.unwrap(), &leaver));
    }

    #[test]
    fn bad_deltas_are_refused_whole() {
        let mut view = cluster(3);
        let before = view.clone();
        let mut delta = ViewDelta::summary(&view);
        delta.summaries[0].hashes.pop();
        let refused = handle_gossip(&mut view, &GossipMessage::Delta(Box::new(delta)));
        assert!(matches!(refused, Err(ViewError::Malformed { .. })));
        // A ring naming a member nobody has an entry for.
        let mut other = cluster(5);
        other.set_member(up(9)).unwrap();
        let mut delta = ViewDelta::summary(&view);
        delta.ring = other.ring().cloned();
        delta.covered.push(MemberRange::ALL);
        delta.members.push(Arc::new(up(1)));
        assert!(handle_gossip(&mut view, &GossipMessage::Delta(Box::new(delta))).is_err());
        let mut delta = ViewDelta::summary(&view);
        delta.cluster = "other".into();
        assert!(matches!(
            handle_gossip(&mut view, &GossipMessage::Delta(Box::new(delta))),
            Err(ViewError::ClusterMismatch { .. })
        ));
        assert_eq!(view, before);
    }

    /// Counts of one simulated run.
    #[derive(Debug)]
    struct Run {
        rounds: usize,
        deltas_sent: usize,
        digests_sent: usize,
        bytes_sent: usize,
    }

    /// Runs a push-pull exchange from `from` to `to`; returns (deltas or views, digests, bytes)
    /// sent.
    fn exchange(views: &mut [ClusterView], from: usize, to: usize) -> (usize, usize, usize) {
        let first = GossipMessage::Digest(views[from].digest());
        let (mut deltas, mut digests) = (0, 1);
        let mut bytes = postcard::to_allocvec(&first).unwrap().len();
        let mut message = Some(first);
        let mut at = to;
        let mut steps = 0;
        while let Some(m) = message {
            message = handle_gossip(&mut views[at], &m).unwrap();
            match &message {
                Some(GossipMessage::Digest(_)) => digests += 1,
                Some(_) => deltas += 1,
                None => {}
            }
            if let Some(m) = &message {
                bytes += postcard::to_allocvec(m).unwrap().len();
            }
            at = if at == to { from } else { to };
            steps += 1;
            assert!(steps < 64, "an exchange that does not end");
        }
        (deltas, digests, bytes)
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
            deltas_sent: 0,
            digests_sent: 0,
            bytes_sent: 0,
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
                        let (v, d, b) = exchange(&mut views, from, to);
                        run.deltas_sent += v;
                        run.digests_sent += d;
                        run.bytes_sent += b;
                    }
                }
                Rounds::Lockstep => {
                    let start = views.clone();
                    for (from, to) in pairs {
                        // The same exchange, run on copies of the start-of-round views.
                        let mut pair = [start[from].clone(), start[to].clone()];
                        let (v, d, b) = exchange(&mut pair, 0, 1);
                        run.deltas_sent += v;
                        run.digests_sent += d;
                        run.bytes_sent += b;
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
        let (deltas, digests, _) = exchange(&mut views, 0, 1);
        assert_eq!((deltas, digests), (0, 1));
    }

    /// For the design document: rounds to convergence at 1000 nodes.
    /// `cargo test --release -p ringkv-core -- --ignored --nocapture thousand_nodes`
    #[test]
    #[ignore]
    fn thousand_nodes_converge() {
        let seeds = [id(0), id(1), id(2)];
        println!("nodes  mode       change  seed  rounds  deltas_sent  digests_sent  bytes_sent");
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
                        "{:>5}  {:<9}  {name:>6}  {seed:>4}  {:>6}  {:>11}  {:>12}  {:>10}",
                        1000,
                        format!("{rounds:?}"),
                        run.rounds,
                        run.deltas_sent,
                        run.digests_sent,
                        run.bytes_sent
                    );
                    assert!(run.rounds <= 30);
                }
            }
        }
    }
}
