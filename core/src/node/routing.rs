//! Routing: which nodes a request for a key goes to. The ring in force, the preference list,
//! the sloppy quorum's fallbacks for unreachable owners, and the checks a request must pass.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::Node;
use crate::bucket::{BucketProps, Quorums};
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

    pub(super) fn preference_list(&self, bucket: &[u8], key: &[u8], n: u32) -> Vec<NodeId> {
        self.routing
            .ring
            .preference_list(key_position(bucket, key), n as usize)
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
    /// unreachable one the next reachable node of the extended preference list, carrying a hint
    /// naming the owner (a sloppy quorum). An unreachable owner with no fallback left is still
    /// asked: it may be back.
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
        let mut fallbacks = extended
            .into_iter()
            .filter(|node| !preference.contains(node) && self.reachable(node));
        preference
            .iter()
            .cloned()
            .map(|owner| {
                if self.reachable(&owner) {
                    return Target {
                        node: owner,
                        hint: None,
                    };
                }
                match fallbacks.next() {
                    Some(fallback) => Target {
                        node: fallback,
                        hint: Some(owner),
                    },
                    None => Target {
                        node: owner,
                        hint: None,
                    },
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
        let mut fallbacks = extended
            .into_iter()
            .filter(|node| !targets.iter().any(|t| t.node == *node) && self.reachable(node));
        silent
            .iter()
            .filter(|t| t.node != self.config.node_id)
            .map_while(|silent| {
                fallbacks.next().map(|node| Target {
                    node,
                    hint: Some(silent.hint.clone().unwrap_or_else(|| silent.node.clone())),
                })
            })
            .collect()
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
