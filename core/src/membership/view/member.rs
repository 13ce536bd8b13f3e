//! A member's entry in the view: its status in the life of the cluster, capacity, zone,
//! addresses, hand-off state and version.

use alloc::string::String;
use serde::{Deserialize, Serialize};

use super::{check_count, check_str, Handoff, ViewError};
use crate::id::NodeId;
use crate::ring::Member;

/// Where a member is in its life in the cluster.
///
/// The order of the variants is the order of that life, and it is also the tie-break of
/// [`ClusterView::merge`] between two entries of equal version: the later stage wins, so a
/// concurrent leave, down-mark or removal is never undone by a same-version entry that missed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Announced, not yet serving. Counted in the next ring so that it is given partitions.
    Joining,
    /// Serving. The lowest-id `Up` member is the claimant.
    Up,
    /// Handing its partitions over before going away: left out of the next ring.
    Leaving,
    /// Marked down by an operator. Still in the ring: a transient outage is not a removal, and
    /// moving its partitions would cost more than the outage. Sloppy quorum covers it meanwhile.
    Down,
    /// Gone for good. The entry stays as a tombstone so that gossip from nodes that have not heard
    /// of the removal cannot bring the member back; re-joining takes a higher version.
    Removed,
}

impl MemberStatus {
    /// `joining`, `up`, `leaving`, `down` or `removed`: the names of the HTTP API and the bindings.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joining => "joining",
            MemberStatus::Up => "up",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Down => "down",
            MemberStatus::Removed => "removed",
        }
    }
}

impl core::fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member status name that is none of `joining`, `up`, `leaving`, `down`, `removed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown member status {0:?}: expected joining, up, leaving, down or removed")]
pub struct MemberStatusError(pub String);

impl core::str::FromStr for MemberStatus {
    type Err = MemberStatusError;

    /// Parses a name as [`MemberStatus::as_str`] writes it (any case, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "joining" => Ok(MemberStatus::Joining),
            "up" => Ok(MemberStatus::Up),
            "leaving" => Ok(MemberStatus::Leaving),
            "down" => Ok(MemberStatus::Down),
            "removed" => Ok(MemberStatus::Removed),
            _ => Err(MemberStatusError(String::from(s))),
        }
    }
}

/// One member's entry in the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The node's id; also its key in the view.
    pub id: NodeId,
    /// Where peers reach it (host:port).
    pub peer_address: String,
    /// Where clients reach it (host:port).
    pub client_address: String,
    /// Its weight in the ring, at least 1 (see [`Member::capacity`]).
    pub capacity: u32,
    /// Its failure domain (see [`Member::zone`]).
    pub zone: Option<String>,
    /// Where it is in its life in the cluster.
    pub status: MemberStatus,
    /// Bumped by whoever changes this member's entry; the higher version wins a merge.
    pub version: u64,
    /// What it may still have to hand over, as it last said (see [`Handoff`]).
    pub handoff: Handoff,
}

impl MemberInfo {
    /// A `Joining` member at version 0, in no zone.
    pub fn new(
        id: impl Into<NodeId>,
        peer_address: impl Into<String>,
        client_address: impl Into<String>,
        capacity: u32,
    ) -> Self {
        MemberInfo {
            id: id.into(),
            peer_address: peer_address.into(),
            client_address: client_address.into(),
            capacity,
            zone: None,
            status: MemberStatus::Joining,
            version: 0,
            handoff: Handoff::Unknown,
        }
    }

    /// What the ring needs of this member.
    pub fn ring_member(&self) -> Member {
        Member {
            id: self.id.clone(),
            capacity: self.capacity,
            zone: self.zone.clone(),
        }
    }

    /// Whether the claim gives this member partitions: `Joining`, `Up` and `Down` members are in
    /// the target ring, `Leaving` and `Removed` ones are not.
    pub fn in_target_ring(&self) -> bool {
        matches!(
            self.status,
            MemberStatus::Joining | MemberStatus::Up | MemberStatus::Down
        )
    }

    pub(in crate::membership) fn check(&self) -> Result<(), ViewError> {
        check_str("node id", self.id.as_str())?;
        check_str("peer address", &self.peer_address)?;
        check_str("client address", &self.client_address)?;
        if let Some(zone) = &self.zone {
            check_str("zone", zone)?;
        }
        if self.capacity == 0 {
            return Err(ViewError::ZeroCapacity(self.id.clone()));
        }
        if let Handoff::Pending(partitions) = &self.handoff {
            check_count(
                "handoff partition count",
                partitions.len(),
                crate::ring::MAX_PARTITIONS as usize,
            )?;
        }
        Ok(())
    }
}
