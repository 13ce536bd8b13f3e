//! Views of earlier formats, decoded into the current shape: format 1 had no object limits
//! in bucket properties, formats 1 and 2 no hand-off in member entries, formats 1 to 3 no
//! default time to live in bucket properties, formats 1 to 4 no replicas per zone (in bucket
//! properties and in the ring's configuration).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Deserialize;

use super::view::{MemberInfo, MemberStatus, RingState, ViewRepr};
use super::Handoff;
use crate::bucket::BucketProps;
use crate::id::NodeId;
use crate::ring::LegacyRing;

/// A [`MemberInfo`] of view formats 1 and 2, without a handoff.
#[derive(Deserialize)]
struct MemberInfoV2 {
    id: NodeId,
    peer_address: String,
    client_address: String,
    capacity: u32,
    zone: Option<String>,
    status: MemberStatus,
    version: u64,
}

impl From<MemberInfoV2> for MemberInfo {
    fn from(old: MemberInfoV2) -> MemberInfo {
        MemberInfo {
            id: old.id,
            peer_address: old.peer_address,
            client_address: old.client_address,
            capacity: old.capacity,
            zone: old.zone,
            status: old.status,
            version: old.version,
            // A member removed before handoffs were published is taken as drained: nothing
            // could wait for it, and an unknown handoff would hold tombstones forever.
            handoff: if old.status == MemberStatus::Removed {
                Handoff::Drained
            } else {
                Handoff::Unknown
            },
        }
    }
}

/// [`BucketProps`] of formats 2 and 3, without a default time to live.
#[derive(Deserialize)]
struct BucketPropsV3 {
    n: u32,
    r: crate::bucket::QuorumValue,
    w: crate::bucket::QuorumValue,
    dw: crate::bucket::QuorumValue,
    conflict_mode: crate::version::ConflictMode,
    limits: crate::bucket::ObjectLimits,
}

impl From<BucketPropsV3> for BucketProps {
    fn from(p: BucketPropsV3) -> BucketProps {
        BucketProps {
            n: p.n,
            r: p.r,
            w: p.w,
            dw: p.dw,
            conflict_mode: p.conflict_mode,
            limits: p.limits,
            default_ttl_ms: None,
            n_per_zone: BTreeMap::new(),
        }
    }
}

fn buckets_from<P: Into<BucketProps>>(
    old: BTreeMap<Vec<u8>, (u64, P)>,
) -> BTreeMap<Vec<u8>, (u64, BucketProps)> {
    old.into_iter()
        .map(|(bucket, (version, props))| (bucket, (version, props.into())))
        .collect()
}

/// A view of format 3, whose bucket properties had no default time to live.
#[derive(Deserialize)]
pub(super) struct ViewReprV3 {
    cluster: String,
    members: Vec<MemberInfo>,
    ring: Option<RingStateV4>,
    buckets: BTreeMap<Vec<u8>, (u64, BucketPropsV3)>,
}

impl From<ViewReprV3> for ViewRepr {
    fn from(old: ViewReprV3) -> ViewRepr {
        ViewRepr {
            cluster: old.cluster,
            members: old.members,
            ring: old.ring.map(RingState::from),
            buckets: buckets_from(old.buckets),
        }
    }
}

/// A view of format 2, whose members had no handoff.
#[derive(Deserialize)]
pub(super) struct ViewReprV2 {
    cluster: String,
    members: Vec<MemberInfoV2>,
    ring: Option<RingStateV4>,
    buckets: BTreeMap<Vec<u8>, (u64, BucketPropsV3)>,
}

impl From<ViewReprV2> for ViewRepr {
    fn from(old: ViewReprV2) -> ViewRepr {
        ViewRepr {
            cluster: old.cluster,
            members: old.members.into_iter().map(MemberInfo::from).collect(),
            ring: old.ring.map(RingState::from),
            buckets: buckets_from(old.buckets),
        }
    }
}

/// A view of format 1, whose bucket properties had no object limits (and members no handoff).
#[derive(Deserialize)]
pub(super) struct ViewReprV1 {
    cluster: String,
    members: Vec<MemberInfoV2>,
    ring: Option<RingStateV4>,
    buckets: BTreeMap<Vec<u8>, (u64, BucketPropsV1)>,
}

/// [`BucketProps`] of format 1.
#[derive(Deserialize)]
struct BucketPropsV1 {
    n: u32,
    r: crate::bucket::QuorumValue,
    w: crate::bucket::QuorumValue,
    dw: crate::bucket::QuorumValue,
    conflict_mode: crate::version::ConflictMode,
}

impl From<BucketPropsV1> for BucketProps {
    fn from(p: BucketPropsV1) -> BucketProps {
        BucketProps {
            n: p.n,
            r: p.r,
            w: p.w,
            dw: p.dw,
            conflict_mode: p.conflict_mode,
            limits: Default::default(),
            default_ttl_ms: None,
            n_per_zone: BTreeMap::new(),
        }
    }
}

impl From<ViewReprV1> for ViewRepr {
    fn from(old: ViewReprV1) -> ViewRepr {
        ViewRepr {
            cluster: old.cluster,
            members: old.members.into_iter().map(MemberInfo::from).collect(),
            ring: old.ring.map(RingState::from),
            buckets: buckets_from(old.buckets),
        }
    }
}

/// A [`RingState`] of formats 1 to 4, whose rings had no replicas per zone.
#[derive(Deserialize)]
pub(super) struct RingStateV4 {
    version: u64,
    claimant: NodeId,
    ring: LegacyRing,
    next: Option<LegacyRing>,
    transferred: alloc::collections::BTreeSet<(u32, NodeId)>,
}

impl From<RingStateV4> for RingState {
    fn from(old: RingStateV4) -> RingState {
        RingState {
            version: old.version,
            claimant: old.claimant,
            ring: old.ring.0,
            next: old.next.map(|next| next.0),
            transferred: old.transferred,
        }
    }
}

/// [`BucketProps`] of format 4, without replicas per zone.
#[derive(Deserialize)]
struct BucketPropsV4 {
    n: u32,
    r: crate::bucket::QuorumValue,
    w: crate::bucket::QuorumValue,
    dw: crate::bucket::QuorumValue,
    conflict_mode: crate::version::ConflictMode,
    limits: crate::bucket::ObjectLimits,
    default_ttl_ms: Option<crate::id::Millis>,
}

impl From<BucketPropsV4> for BucketProps {
    fn from(p: BucketPropsV4) -> BucketProps {
        BucketProps {
            n: p.n,
            r: p.r,
            w: p.w,
            dw: p.dw,
            conflict_mode: p.conflict_mode,
            limits: p.limits,
            default_ttl_ms: p.default_ttl_ms,
            n_per_zone: BTreeMap::new(),
        }
    }
}

/// A view of format 4, before replicas per zone.
#[derive(Deserialize)]
pub(super) struct ViewReprV4 {
    cluster: String,
    members: Vec<MemberInfo>,
    ring: Option<RingStateV4>,
    buckets: BTreeMap<Vec<u8>, (u64, BucketPropsV4)>,
}

impl From<ViewReprV4> for ViewRepr {
    fn from(old: ViewReprV4) -> ViewRepr {
        ViewRepr {
            cluster: old.cluster,
            members: old.members,
            ring: old.ring.map(RingState::from),
            buckets: buckets_from(old.buckets),
        }
    }
}
