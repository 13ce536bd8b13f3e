//! What a member may still have to hand over: published by each node in its view entry.

use alloc::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What a member may still hold of partitions that are not its own (hints it took as a fallback,
/// orphaned records of partitions it gave up) and must hand to their owners. Each node publishes
/// its own in its entry; tombstone reaping waits for it ([`ClusterView::handoff_holder`](super::ClusterView::handoff_holder)), and
/// an operator waits for [`Handoff::Drained`] before stopping a node that left.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Handoff {
    /// Not known: the node has not finished a scan of its hints and orphans since it started
    /// (or never said). It may hold records of any partition.
    #[default]
    Unknown,
    /// The partitions it may hold such records of, as of its last complete scan plus whatever
    /// it took or gave up since.
    Pending(BTreeSet<u32>),
    /// It holds no partition in the ring or the next one, and a complete scan since found
    /// nothing to hand over: it may be stopped and its disk discarded.
    Drained,
}

impl Handoff {
    /// Whether the member may hold records of `partition` that belong to other nodes.
    pub fn may_hold(&self, partition: u32) -> bool {
        match self {
            Handoff::Unknown => true,
            Handoff::Pending(partitions) => partitions.contains(&partition),
            Handoff::Drained => false,
        }
    }
}
