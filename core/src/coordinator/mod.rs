//! Per-request coordination: small state machines keyed by a coordination id, advanced by replica
//! replies and by their deadline. They decide; the [`Node`](crate::node::Node) performs.

pub(crate) mod get;
pub(crate) mod put;
pub(crate) mod quorum;
pub(crate) mod speculation;

use crate::id::{CoordinationId, Millis, NodeId, RequestId};

/// Who is waiting for a coordination's reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Client {
    /// A client of this node.
    Local(RequestId),
    /// A node that forwarded its client's request here.
    Remote { from: NodeId, id: CoordinationId },
    /// The node itself (an anti-entropy repair): the reply is dropped.
    Internal,
    /// The node itself, checking whether a deleted key's tombstone can be reaped.
    Reap,
    /// A conditional write waiting under this id: the read checks its condition.
    Condition(CoordinationId),
    /// A watch waiting under this id: the read tells whether the key changed already.
    Watch(CoordinationId),
}

/// A node a request goes to, and the unreachable preference-list node it stands in for, if any
/// (a sloppy quorum's fallback).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub node: NodeId,
    pub hint: Option<NodeId>,
    /// The zone of `node`, which its reply counts for in a zone quorum.
    pub zone: Option<alloc::string::String>,
}

/// The zones of the `nodes` that are among `targets` (one entry each).
pub(crate) fn zones_of<'a>(
    targets: &'a [Target],
    nodes: impl Iterator<Item = &'a NodeId>,
) -> alloc::vec::Vec<Option<&'a str>> {
    nodes
        .filter_map(|node| {
            targets
                .iter()
                .find(|t| t.node == *node)
                .map(|t| t.zone.as_deref())
        })
        .collect()
}

/// Nodes of `targets` that are fallbacks, in the order given by `nodes`.
pub(crate) fn fallbacks_among(targets: &[Target], nodes: &[NodeId]) -> alloc::vec::Vec<NodeId> {
    nodes
        .iter()
        .filter(|n| targets.iter().any(|t| t.node == **n && t.hint.is_some()))
        .cloned()
        .collect()
}

/// A write forwarded to a replica, waiting for that replica's reply.
#[derive(Clone, Debug)]
pub(crate) struct ForwardState {
    pub request_id: RequestId,
    pub target: NodeId,
    /// The request, kept to coordinate it here if the target is not heard from.
    pub request: crate::request::ClientRequest,
    pub quorums: crate::bucket::Quorums,
    /// When it was sent: hearing from the target since says it is alive.
    pub sent_at: Millis,
    /// Whether the target was pinged once its fallback time came without a word from it.
    pub probed: bool,
    /// When a target not heard from since `sent_at` is given up (see
    /// [`NodeConfig::fallback_after_percent`](crate::config::NodeConfig::fallback_after_percent)).
    pub fallback_at: Millis,
    pub deadline: Millis,
}
