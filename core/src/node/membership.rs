//! Membership: the cluster view (a CRDT kept in step by gossip), operator commands, the
//! claimant's staged ring changes, the failure detector's verdicts, and taking up a new ring.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use super::{Node, PendingOp};
use crate::bucket::RequestOptions;
use crate::error::CommandError;
use crate::id::{Millis, NodeId};
use crate::io::{Command, Event};
use crate::membership::{
    choose_gossip_peer, handle_gossip, ClusterView, FailureDetector, GossipMessage, Handoff,
    Liveness, MemberStatus,
};
use crate::ring::PartitionId;
use crate::storage::{StorageKey, StorageOp};
use crate::wire::Message;

/// The membership state.
#[derive(Debug)]
pub(super) struct Membership {
    /// This node's view of the cluster, kept in step with the others' by gossip.
    pub(super) view: ClusterView,
    /// Liveness of peers, from all traffic (gossip included).
    pub(super) detector: FailureDetector,
    /// Peers down long enough to have raised their alert.
    pub(super) alerted: BTreeSet<NodeId>,
    /// The last peer pinged when more than [`MAX_PINGS`] were down: the next round's pings
    /// start after it.
    ping_cursor: Option<NodeId>,
    /// How many member entries the view held when [`Node::view_changed`] last started the
    /// clocks of members never heard from (`None`: not yet), and whether some Removed member
    /// was left without one then. Entries never leave a view and the detector forgets no
    /// peer, so while the count is the same and no such member was left, there is nobody new
    /// to start, and the scan of every member (on every change of the view) is skipped.
    clocks_scanned: Option<(usize, bool)>,
}

/// The most unreachable peers pinged in one gossip round.
pub(super) const MAX_PINGS: usize = 8;

impl Membership {
    pub(super) fn new(view: ClusterView, detector: FailureDetector) -> Membership {
        Membership {
            view,
            detector,
            alerted: BTreeSet::new(),
            ping_cursor: None,
            clocks_scanned: None,
        }
    }

    /// Which of `unreachable` (in id order) to ping this round: all of them when they are at
    /// most [`MAX_PINGS`], else the next `MAX_PINGS` after the last pinged, wrapping round.
    fn pings_due(&mut self, unreachable: &[NodeId]) -> Vec<NodeId> {
        if unreachable.len() <= MAX_PINGS {
            return unreachable.to_vec();
        }
        let start = match &self.ping_cursor {
            Some(last) => unreachable.partition_point(|p| p <= last),
            None => 0,
        };
        let due: Vec<NodeId> = unreachable
            .iter()
            .cycle()
            .skip(start)
            .take(MAX_PINGS)
            .cloned()
            .collect();
        self.ping_cursor = due.last().cloned();
        due
    }
}

impl Node {
    // ----- membership -----

    /// This node's view of the cluster.
    pub fn view(&self) -> &ClusterView {
        &self.membership.view
    }

    /// An operator command. On `Err` nothing changed.
    pub fn handle_command(&mut self, now: Millis, command: Command) -> Result<(), CommandError> {
        self.advance(now);
        match command {
            Command::SetBucket { bucket, props } => {
                // Zones first: a bad zone count makes a bad N, and the zone is the cause.
                props.check_zones()?;
                self.check_zone_placement(&props)?;
                let max = self.max_n();
                if props.n == 0 || props.n as usize > max {
                    return Err(CommandError::NOutOfRange { n: props.n, max });
                }
                props.resolve(&RequestOptions::default())?;
                props.limits.validate()?;
                if let Some(ttl) = props.default_ttl_ms {
                    crate::bucket::check_ttl(ttl)?;
                }
                self.membership.view.set_bucket(bucket, props)?;
            }
            Command::Leave => {
                let me = self.config.node_id.clone();
                match self.membership.view.member(&me).map(|m| m.status) {
                    Some(MemberStatus::Removed) => return Err(CommandError::AlreadyLeft),
                    // Asked again while leaving: nothing changes.
                    Some(MemberStatus::Leaving) => {}
                    _ => self.check_someone_stays_up(&me)?,
                }
                self.membership.view.set_status(&me, MemberStatus::Leaving);
            }
            Command::Remove { node } => {
                match self.membership.view.member(&node).map(|m| m.status) {
                    None => return Err(CommandError::UnknownMember(node)),
                    Some(MemberStatus::Removed) => {}
                    Some(_) => self.check_someone_stays_up(&node)?,
                }
                self.membership
                    .view
                    .set_status(&node, MemberStatus::Removed);
                // The operator says it is gone with its disk: nothing waits for its hand-off
                // (were it alive after all, it would publish its own again).
                self.membership.view.set_handoff(&node, Handoff::Drained);
            }
        }
        self.view_changed();
        self.drain_loopback();
        Ok(())
    }

    /// Refuses a change that takes `node` out of the ring when no other member would be left up:
    /// only an up member claims rings, so the partitions could never move again.
    fn check_someone_stays_up(&self, node: &NodeId) -> Result<(), CommandError> {
        let someone = self
            .membership
            .view
            .members()
            .any(|m| m.id != *node && m.status == MemberStatus::Up);
        if someone {
            Ok(())
        } else {
            Err(CommandError::LastMemberUp { node: node.clone() })
        }
    }

    /// Where peers and clients reach this node now (a host calls it at start, since a restarted
    /// node may listen elsewhere). Changes the view, and so gossips, only when they differ.
    pub fn announce(
        &mut self,
        now: Millis,
        peer_address: &str,
        client_address: &str,
    ) -> Result<(), CommandError> {
        self.advance(now);
        let me = self.config.node_id.clone();
        let Some(mut info) = self.membership.view.member(&me).cloned() else {
            return Ok(());
        };
        if info.peer_address == peer_address && info.client_address == client_address {
            return Ok(());
        }
        info.peer_address = peer_address.to_string();
        info.client_address = client_address.to_string();
        self.membership.view.set_member(info)?;
        self.view_changed();
        self.drain_loopback();
        Ok(())
    }

    /// After any change of the view: persist it, take up a new ring, and report it.
    pub(super) fn view_changed(&mut self) {
        // Start the clock of every member learned from the view, as `from_view` does for the
        // first ones: a member this node never hears from must be found down, not be taken
        // for alive forever (a detector deems a peer it never heard from alive).
        let me = self.config.node_id.clone();
        let now = self.now;
        let count = self.membership.view.member_count();
        if self.membership.clocks_scanned != Some((count, false)) {
            let detector = &self.membership.detector;
            let mut removed_left = false;
            let unknown: Vec<NodeId> = self
                .membership
                .view
                .members()
                .filter(|m| m.id != me && detector.last_heard(&m.id).is_none())
                .filter(|m| {
                    let removed = m.status == MemberStatus::Removed;
                    removed_left |= removed;
                    !removed
                })
                .map(|m| m.id.clone())
                .collect();
            self.membership.detector.start_clocks(&unknown, now);
            self.membership.clocks_scanned = Some((count, removed_left));
        }
        let digest = self.membership.view.digest();
        self.storage(
            StorageOp::Put {
                key: StorageKey::view(),
                record: self.membership.view.encode(),
                sync: true,
            },
            PendingOp::PersistView,
        );
        let version = self.membership.view.ring().map(|s| s.version);
        if version != self.routing.ring_version {
            if let Some(state) = self.membership.view.ring() {
                self.routing.ring = state.ring.clone();
                self.routing.ring_version = version;
                // Trees of partitions this node no longer holds are dropped; new ones get built.
                let mine: BTreeSet<PartitionId> = self.my_partitions().into_iter().collect();
                self.anti_entropy.trees.retain(|p, _| mine.contains(p));
                self.ring_changed_for_handoff();
                // A node that sees itself in the ring it routes by is up.
                let me = self.config.node_id.clone();
                if self.routing.ring.member(&me).is_some()
                    && self
                        .membership
                        .view
                        .member(&me)
                        .is_some_and(|m| m.status == MemberStatus::Joining)
                {
                    self.membership.view.set_status(&me, MemberStatus::Up);
                }
            }
        }
        self.event(Event::ViewChanged { digest });
    }

    /// A gossip round: start a push-pull exchange with one peer, and report liveness changes.
    pub(super) fn gossip_tick(&mut self) {
        self.membership_step();
        let now = self.now;
        let detector = &self.membership.detector;
        let suspects = &self.routing.suspects;
        let partner = choose_gossip_peer(
            &self.config.node_id,
            &self.membership.view,
            &|peer: &NodeId| detector.is_alive(peer, now) && !suspects.contains(peer),
            &self.config.gossip.seeds,
            &mut self.rng,
        );
        if let Some(partner) = partner {
            let opening = self.gossip_opening();
            self.send(partner, Message::Gossip(opening));
        }
        for change in self.membership.detector.poll_changes(now) {
            match change {
                Liveness::Down { peer, .. } => self.event(Event::PeerDown { peer }),
                Liveness::Up { peer } => {
                    self.membership.alerted.remove(&peer);
                    self.event(Event::PeerUp { peer });
                }
            }
        }
        // The members (other than this node, not Removed) not reachable: those the detector
        // has just reported down (after `poll_changes(now)`, exactly those it finds not alive
        // now) and the suspects, in id order. Found from those two sets rather than by asking
        // about every member, which cost O(members) a round.
        let me = &self.config.node_id;
        let view = &self.membership.view;
        let unreachable: Vec<NodeId> = self
            .membership
            .detector
            .reported_down()
            .into_iter()
            .chain(&self.routing.suspects)
            .collect::<BTreeSet<&NodeId>>()
            .into_iter()
            .filter(|peer| {
                *peer != me
                    && view
                        .member(peer)
                        .is_some_and(|m| m.status != MemberStatus::Removed)
            })
            .cloned()
            .collect();
        // Peers we believe down are pinged: gossip only goes to live peers, so two nodes that
        // each think the other down would otherwise never hear from each other. All of them
        // each round when they are few; else `MAX_PINGS` a round, taking turns, so that a node
        // of a large cluster that lost sight of many peers does not ping them all at once.
        for peer in self.membership.pings_due(&unreachable) {
            self.send(peer, Message::Ping);
        }
        for peer in unreachable {
            if let Some(down_ms) = self.membership.detector.down_for(&peer, now) {
                if down_ms >= self.config.down_alert_ms
                    && self.membership.alerted.insert(peer.clone())
                {
                    self.event(Event::DownAlert { peer, down_ms });
                }
            }
        }
    }

    pub(super) fn on_gossip(&mut self, from: NodeId, gossip: GossipMessage) {
        let before = self.membership.view.digest();
        match handle_gossip(&mut self.membership.view, &gossip) {
            Ok(reply) => {
                // Judged on the merged view: see `sender_holds_entry`.
                self.confirm_drained(&gossip);
                if let Some(reply) = reply {
                    self.send(from, Message::Gossip(reply));
                }
                if self.membership.view.digest() != before {
                    self.view_changed();
                }
            }
            Err(error) => self.event(Event::MessageDropped {
                from,
                reason: format!("gossip: {error}"),
            }),
        }
    }

    /// The claimant advances membership changes; every node pulls what it must receive under
    /// the next ring ([`Node::transfer_step`]), and records finished transfers in the view.
    pub(super) fn membership_step(&mut self) {
        let me = self.config.node_id.clone();
        let n = self.max_n();
        if self.membership.view.claimant() == Some(&me) {
            let config = self.config.ring.clone();
            if let Ok(true) = self.membership.view.advance(&me, &config, n) {
                self.view_changed();
            }
        }
        if self.transfer_step() {
            self.view_changed();
        }
    }
}
