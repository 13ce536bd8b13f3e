//! What this node may still hold of other nodes' partitions (hints, orphaned records), kept
//! from the scans of hint delivery and the orphan scan and published in its view entry as a
//! [`Handoff`]: tombstone reaping waits for every member's, and a node that left says
//! [`Handoff::Drained`] once it has handed everything over, so that it may be stopped.

use alloc::collections::BTreeSet;

use super::Node;
use crate::io::Event;
use crate::membership::{sender_holds_entry, GossipMessage, Handoff, ViewDelta};
use crate::ring::PartitionId;

/// One kind of record (hints, or orphans) as complete scans found it.
#[derive(Debug, Default)]
struct ScanTally {
    /// Partitions found in the scan under way, or taken since it started.
    this_pass: BTreeSet<PartitionId>,
    /// As of the last complete scan, plus what was taken since; `None` before one completed.
    known: Option<BTreeSet<PartitionId>>,
}

impl ScanTally {
    fn note(&mut self, partition: PartitionId) {
        self.this_pass.insert(partition);
        if let Some(known) = &mut self.known {
            known.insert(partition);
        }
    }

    fn pass_done(&mut self) {
        self.known = Some(core::mem::take(&mut self.this_pass));
    }
}

/// The tallies, and what was last published.
#[derive(Debug, Default)]
pub(super) struct HandoffTracker {
    hints: ScanTally,
    orphans: ScanTally,
    /// Partitions the orphan scan has finished in its current pass.
    orphan_pass_visited: BTreeSet<PartitionId>,
    /// How many of `orphan_pass_visited` are not in `held`: the pass is done when these and
    /// the held partitions make up every partition (counted rather than checked partition by
    /// partition, which cost O(partitions) per partition scanned).
    orphan_pass_unheld: usize,
    /// Partitions this node holds under the ring and the next one, as of the last ring change.
    held: BTreeSet<PartitionId>,
    /// Whether [`Event::Drained`] was reported (once per drain, after a peer confirmed it).
    drained_reported: bool,
}

impl Node {
    /// Whether this node left the ring, handed everything over, and a peer knows it: the
    /// host may stop it ([`Event::Drained`] was reported).
    pub fn is_drained(&self) -> bool {
        self.handoff.drained_reported && self.membership.view.is_drained(&self.config.node_id)
    }

    /// A hint was stored here for a record of `partition`.
    pub(super) fn note_hint(&mut self, partition: PartitionId) {
        self.handoff.hints.note(partition);
    }

    /// The hint scan found a hint of `partition`.
    pub(super) fn note_hint_seen(&mut self, partition: PartitionId) {
        self.handoff.hints.this_pass.insert(partition);
    }

    /// The hint scan went through every hint.
    pub(super) fn hint_pass_done(&mut self) {
        self.handoff.hints.pass_done();
    }

    /// The orphan scan found records of `partition` to hand over.
    pub(super) fn note_orphan_seen(&mut self, partition: PartitionId) {
        self.handoff.orphans.this_pass.insert(partition);
    }

    /// The orphan scan finished `partition` (or there is none to scan, `None`): when every
    /// partition this node does not hold has been scanned, the pass is done.
    pub(super) fn orphan_partition_done(&mut self, partition: Option<PartitionId>) {
        let count = self.routing.ring.partition_count();
        if let Some(partition) = partition {
            if partition.0 < count
                && self.handoff.orphan_pass_visited.insert(partition)
                && !self.handoff.held.contains(&partition)
            {
                self.handoff.orphan_pass_unheld += 1;
            }
        }
        let held = self.handoff.held.range(..PartitionId(count)).count();
        if held + self.handoff.orphan_pass_unheld >= count as usize {
            self.handoff.orphan_pass_visited.clear();
            self.handoff.orphan_pass_unheld = 0;
            self.handoff.orphans.pass_done();
        }
    }

    /// Partitions this node holds under the ring and the next one, as of the last ring change.
    pub(super) fn held_partitions(&self) -> &BTreeSet<PartitionId> {
        &self.handoff.held
    }

    /// After a ring change: partitions this node gave up may hold orphans from now on.
    pub(super) fn ring_changed_for_handoff(&mut self) {
        let held = self.compute_held_partitions();
        let released: alloc::vec::Vec<PartitionId> =
            self.handoff.held.difference(&held).copied().collect();
        for partition in released {
            self.handoff.orphans.note(partition);
        }
        self.handoff.held = held;
        self.handoff.orphan_pass_unheld = self
            .handoff
            .orphan_pass_visited
            .iter()
            .filter(|p| !self.handoff.held.contains(p))
            .count();
    }

    fn compute_held_partitions(&self) -> BTreeSet<PartitionId> {
        if self.routing.ring_version.is_none() {
            return BTreeSet::new();
        }
        let mut held: BTreeSet<PartitionId> = self.my_partitions().into_iter().collect();
        if let Some(next) = self.membership.view.ring().and_then(|s| s.next.as_ref()) {
            let (n, me) = (self.max_n(), &self.config.node_id);
            held.extend(
                (0..next.partition_count())
                    .map(PartitionId)
                    .filter(|p| next.partition_preference_list(*p, n).contains(me)),
            );
        }
        held
    }

    /// What this node may still have to hand over, from its scans.
    fn handoff_now(&self) -> Handoff {
        let (Some(hints), Some(orphans)) = (&self.handoff.hints.known, &self.handoff.orphans.known)
        else {
            return Handoff::Unknown;
        };
        let pending: BTreeSet<u32> = hints.union(orphans).map(|p| p.0).collect();
        let in_ring = self
            .membership
            .view
            .member(&self.config.node_id)
            .is_none_or(|m| m.in_target_ring());
        if pending.is_empty()
            && !in_ring
            && self.handoff.held.is_empty()
            && self.hints.deliveries.is_empty()
        {
            return Handoff::Drained;
        }
        Handoff::Pending(pending)
    }

    /// Publishes this node's [`Handoff`] in its view entry when it changed (gossip spreads it).
    pub(super) fn publish_handoff(&mut self) {
        let me = self.config.node_id.clone();
        let now = self.handoff_now();
        let Some(entry) = self.membership.view.member(&me) else {
            return;
        };
        if entry.handoff == now {
            return;
        }
        if now != Handoff::Drained {
            self.handoff.drained_reported = false;
        }
        if self.membership.view.set_handoff(&me, now) {
            self.view_changed();
        }
    }

    /// How this node opens a gossip exchange: with its digest, or with its own entry while it
    /// is drained and no peer is known to hold that.
    ///
    /// Why: a drained leaver is Removed (or soon will be), so no peer opens an exchange with it,
    /// and a peer whose view equals its own answers its digest with nothing. Were the one
    /// message that told it a peer holds its entry lost (or sent before this incarnation), the
    /// views would agree and nothing would ever tell it again: it would never report
    /// [`Event::Drained`]. A delta that carries data is always answered, with the peer's digest
    /// at least, so each round until it learns costs one small delta and one digest.
    pub(super) fn gossip_opening(&self) -> GossipMessage {
        let me = &self.config.node_id;
        if !self.handoff.drained_reported && self.membership.view.is_drained(me) {
            let delta = ViewDelta::entry_of(&self.membership.view, me);
            return GossipMessage::Delta(alloc::boxed::Box::new(delta));
        }
        GossipMessage::Digest(self.membership.view.digest())
    }

    /// A peer's gossip, merged into the view: once a peer holds this node's entry saying it is
    /// drained, the rest of the cluster learns it from there, and [`Event::Drained`] tells the
    /// host it may stop. (Reported before that, a node stopped at once would leave the others
    /// waiting forever for its hand-off, and tombstones of its partitions unreaped.)
    pub(super) fn confirm_drained(&mut self, gossip: &GossipMessage) {
        let me = self.config.node_id.clone();
        if self.handoff.drained_reported || !self.membership.view.is_drained(&me) {
            return;
        }
        if sender_holds_entry(&self.membership.view, gossip, &me) {
            self.handoff.drained_reported = true;
            self.event(Event::Drained);
        }
    }
}
