//! Routing: which nodes a request for a key goes to. The ring in force, the preference list,
//! the sloppy quorum's fallbacks for unreachable owners, and the checks a request must pass.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::Node;
use crate::bucket::{BucketProps, Quorums};
use crate::coordinator::quorum::Need;
use crate::coordinator::Target;
use crate::error::RequestError;
use crate::id::NodeId;
use crate::request::ClientRequest;
use crate::ring::{key_position, Ring};
use crate::storage::StorageKey;
use crate::version::ConflictMode;

/// The routing state: the ring requests are routed by and the peers suspected of not answering.
#[derive(Debug)]
pub(super) struct Routing {
    pub(super) ring: Ring,
    /// Version of the view's ring `ring` was taken from (`None`: no ring known yet).
    pub(super) ring_version: Option<u64>,
    /// Peers that let a request time out without answering; cleared when they are heard from.
    pub(super) suspects: BTreeSet<NodeId>,
}

impl Routing {
    pub(super) fn new(ring: Ring, ring_version: Option<u64>) -> Routing {
        Routing {
            ring,
            ring_version,
            suspects: BTreeSet::new(),
        }
    }
}

impl Node {
    /// The one request check ([`ClientRequest::check`]) with the props and limits in force here.
    pub(super) fn validate(&self, request: &ClientRequest) -> Result<Quorums, RequestError> {
        let (bucket, _) = request.target();
        request.check(self.bucket_props(bucket), &self.config.request_limits())
    }

    /// The replicas of `bucket`/`key` for a request of replication factor `n`: the bucket's
    /// replicas per zone when it has them (the first `n` of them, zone-diverse, for a request
    /// asking fewer), else the first `n` of the ring's replica order.
    pub(super) fn preference_list(&self, bucket: &[u8], key: &[u8], n: u32) -> Vec<NodeId> {
        let position = key_position(bucket, key);
        let per_zone = &self.bucket_props(bucket).n_per_zone;
        if per_zone.is_empty() {
            return self.routing.ring.preference_list(position, n as usize);
        }
        let mut list = self.routing.ring.zone_preference_list(position, per_zone);
        list.truncate(n as usize);
        list
    }

    /// This node's zone, as its entry in the view says (`None`: it has none).
    pub(super) fn zone(&self) -> Option<&str> {
        self.membership
            .view
            .member(&self.config.node_id)
            .and_then(|m| m.zone.as_deref())
    }

    /// The zone of a member, as the view says.
    pub(super) fn zone_of(&self, id: &NodeId) -> Option<&str> {
        self.membership
            .view
            .member(id)
            .and_then(|m| m.zone.as_deref())
    }

    /// What each quorum of a request for a key with these `replicas` needs here: `r` for a read,
    /// `w` and `dw` for a write. Errors for a local scope when this node's zone holds no replica.
    pub(super) fn needs(
        &self,
        quorums: &Quorums,
        replicas: &[NodeId],
    ) -> Result<Needs, crate::bucket::QuorumError> {
        let zones: Vec<Option<&str>> = replicas.iter().map(|r| self.zone_of(r)).collect();
        let local = self.zone();
        let scopes = quorums.scopes;
        Ok(Needs {
            r: Need::new("r", quorums.r, scopes.r, local, &zones)?,
            w: Need::new("w", quorums.w, scopes.w, local, &zones)?,
            dw: Need::new("dw", quorums.dw, scopes.dw, local, &zones)?,
        })
    }

    /// [`Node::needs`] for a coordination already admitted; if the zones changed since (a view
    /// update), a majority of N from anywhere stands in for a local need that cannot be met.
    pub(super) fn needs_or_majority(&self, quorums: &Quorums, replicas: &[NodeId]) -> Needs {
        self.needs(quorums, replicas).unwrap_or_else(|_| {
            let majority = Need::anywhere(quorums.n / 2 + 1);
            Needs {
                r: majority.clone(),
                w: majority.clone(),
                dw: Need::anywhere(quorums.dw.min(quorums.n / 2 + 1)),
            }
        })
    }

    /// Checks a bucket's replicas per zone against the ring's: each zone it names must be one the
    /// ring places replicas in, with at least as many (so that the replicas every node plans
    /// transfers, anti-entropy and reaping for cover the bucket's).
    pub(super) fn check_zone_placement(
        &self,
        props: &BucketProps,
    ) -> Result<(), crate::error::CommandError> {
        check_zone_placement(self.routing.ring.config(), props)
    }

    /// The largest N any bucket may have (the ring's `target_n`, which bucket properties are
    /// checked against): what decides which partitions a node holds, receives and scans.
    pub(super) fn max_n(&self) -> usize {
        self.routing.ring.config().target_n
    }

    /// The properties in force for a bucket: the cluster's (set by command, spread by gossip),
    /// else this node's configuration.
    pub(super) fn bucket_props(&self, bucket: &[u8]) -> &BucketProps {
        self.membership
            .view
            .bucket(bucket)
            .unwrap_or_else(|| self.config.bucket(bucket))
    }

    /// Whether requests should go to `peer`: the failure detector hears from it, and it has not
    /// let a request time out since it was last heard from.
    pub(super) fn reachable(&self, peer: &NodeId) -> bool {
        *peer == self.config.node_id
            || (!self.routing.suspects.contains(peer)
                && self.membership.detector.is_alive(peer, self.now))
    }

    /// Where a request for a key goes: each reachable preference-list node, and in place of each
    /// unreachable one the next reachable node of the extended preference list (in the owner's
    /// zone when one is left, so zone quorums and per-zone copies hold), carrying a hint naming
    /// the owner (a sloppy quorum). An unreachable owner with no fallback left is still asked:
    /// it may be back.
    pub(super) fn targets(
        &self,
        bucket: &[u8],
        key: &[u8],
        preference: Vec<NodeId>,
    ) -> Vec<Target> {
        let extended = self
            .routing
            .ring
            .extended_preference_list(key_position(bucket, key), preference.len());
        let mut fallbacks: Vec<NodeId> = extended
            .into_iter()
            .filter(|node| !preference.contains(node) && self.reachable(node))
            .collect();
        preference
            .iter()
            .cloned()
            .map(|owner| {
                if self.reachable(&owner) {
                    return self.target(owner, None);
                }
                match self.take_fallback(&mut fallbacks, &owner) {
                    Some(fallback) => self.target(fallback, Some(owner)),
                    None => self.target(owner, None),
                }
            })
            .collect::<Vec<_>>()
    }

    /// For each of `silent` (targets of a request that have not answered yet), the next reachable
    /// node of the extended preference list that is not a target yet, standing in for the owner
    /// the silent one stands for (a fallback that is itself silent is joined by another, for the
    /// same owner). Fewer when the list runs out.
    pub(super) fn extra_fallbacks(
        &self,
        bucket: &[u8],
        key: &[u8],
        n: u32,
        targets: &[Target],
        silent: &[Target],
    ) -> Vec<Target> {
        let extended = self
            .routing
            .ring
            .extended_preference_list(key_position(bucket, key), n as usize);
        let mut fallbacks: Vec<NodeId> = extended
            .into_iter()
            .filter(|node| !targets.iter().any(|t| t.node == *node) && self.reachable(node))
            .collect();
        silent
            .iter()
            .filter(|t| t.node != self.config.node_id)
            .map_while(|silent| {
                let owner = silent.hint.clone().unwrap_or_else(|| silent.node.clone());
                self.take_fallback(&mut fallbacks, &owner)
                    .map(|node| self.target(node, Some(owner)))
            })
            .collect()
    }

    fn target(&self, node: NodeId, hint: Option<NodeId>) -> Target {
        let zone = self.zone_of(&node).map(alloc::string::String::from);
        Target { node, hint, zone }
    }

    /// Takes from `fallbacks` (in extended-list order) the first in `owner`'s zone, else the
    /// first.
    fn take_fallback(&self, fallbacks: &mut Vec<NodeId>, owner: &NodeId) -> Option<NodeId> {
        if fallbacks.is_empty() {
            return None;
        }
        let zone = self.zone_of(owner);
        let at = fallbacks
            .iter()
            .position(|f| zone.is_some() && self.zone_of(f) == zone)
            .unwrap_or(0);
        Some(fallbacks.remove(at))
    }

    /// Where this node keeps its own replica of `bucket`/`key` (for hosts that inspect a
    /// replica directly, as a history checker does).
    pub fn storage_key(&self, bucket: &[u8], key: &[u8]) -> StorageKey {
        StorageKey::data(
            self.routing.ring.partition_of(key_position(bucket, key)),
            bucket,
            key,
        )
    }

    pub(super) fn mode(&self, bucket: &[u8]) -> ConflictMode {
        self.bucket_props(bucket).conflict_mode
    }
}

/// What each quorum of one request needs (see [`Need`]).
#[derive(Clone, Debug)]
pub(crate) struct Needs {
    pub r: Need,
    pub w: Need,
    pub dw: Need,
}

/// [`Node::check_zone_placement`] against a ring configuration.
pub(super) fn check_zone_placement(
    ring: &crate::ring::RingConfig,
    props: &BucketProps,
) -> Result<(), crate::error::CommandError> {
    for (zone, &count) in &props.n_per_zone {
        let ring_count = ring.replicas_per_zone.get(zone).copied().unwrap_or(0);
        if count > ring_count {
            return Err(crate::error::CommandError::ZoneAboveRing {
                zone: zone.clone(),
                n: count,
                ring: ring_count,
            });
        }
    }
    Ok(())
}
