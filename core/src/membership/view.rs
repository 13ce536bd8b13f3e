//! The cluster view: who is in the cluster, the ring everyone routes by, and bucket properties, as
//! one state-based CRDT that replicas merge in any order.
//!
//! Every entry carries its own version, bumped by whoever changes it. [`ClusterView::merge`] keeps,
//! per entry, the greater one in a fixed total order (version first, then a deterministic
//! tie-break), so a merge is the least upper bound of two views: commutative, associative and
//! idempotent. Gossip may therefore deliver views late, twice or in any order and every replica
//! still ends up with the same view.
//!
//! The ring is not merged entry by entry: one node, the *claimant* (the lowest-id member that is
//! [`MemberStatus::Up`]), computes it from the membership with [`ClusterView::claim`] and gossips
//! it as a [`RingState`] with a version of its own. Computing the ring in one place is what makes
//! it identical everywhere: the claim moves the fewest partitions from the previous ring, and a
//! merge of two rings could not keep that property.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;

use md5::{Digest as _, Md5};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

pub use super::handoff::Handoff;
mod member;
mod ranges;

pub use member::{MemberInfo, MemberStatus, MemberStatusError};

pub(super) use ranges::entry_hash;
use ranges::{bucket_hash, Hashes};
pub use ranges::{member_range_of, MemberRange, MAX_RANGE_LEVEL, RANGE_FANOUT_BITS};

use super::view_formats::{ViewReprV1, ViewReprV2, ViewReprV3, ViewReprV4};
use crate::bucket::BucketProps;
use crate::id::NodeId;
use crate::ring::{Member, PartitionId, Ring, RingConfig, RingError};

/// The format byte that opens [`ClusterView::encode`]'s output. Format 1 (bucket properties
/// without object limits) still decodes, with the default limits; formats 1 and 2 (members
/// without a [`Handoff`]) decode with every member's handoff [`Handoff::Unknown`]; formats 1 to
/// 3 (bucket properties without a default time to live) with none.
pub const VIEW_FORMAT: u8 = 5;

/// The most members a view holds (Removed members included: their entries are tombstones).
pub const MAX_MEMBERS: usize = 100_000;

/// The most buckets with their own properties a view holds.
pub const MAX_BUCKETS: usize = 100_000;

/// The longest cluster name, node id, address, zone or bucket name a view accepts, in bytes.
pub const MAX_STRING_BYTES: usize = 1024;

/// Length of the crc32 trailer of an encoded view.
const CRC_LEN: usize = 4;

/// The ring everyone routes by, as decided by the claimant (the lowest-id Up member) and gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// Bumped by every claim; the higher version wins a merge.
    pub version: u64,
    /// The member that claimed this ring. Between two rings of the same version (two claimants on
    /// the two sides of a partition), the one of the lower claimant id wins.
    pub claimant: NodeId,
    /// The placement itself.
    pub ring: Ring,
    /// The ring the cluster is moving to, while partitions are transferred; see
    /// [`ClusterView::advance`].
    #[serde(default)]
    pub next: Option<Ring>,
    /// Transfers done for `next`: (partition, receiving node). Merged by union.
    #[serde(default)]
    pub transferred: BTreeSet<(u32, NodeId)>,
}

impl RingState {
    /// What moving from `ring` to `next` takes, for replication factor `n`: per partition whose
    /// replica set changes, the nodes that must receive its data (in `next`'s list but not in
    /// `ring`'s). Empty when nothing is moving.
    pub fn transfers(&self, n: usize) -> Vec<(PartitionId, Vec<NodeId>)> {
        let Some(next) = &self.next else {
            return Vec::new();
        };
        (0..self.ring.partition_count())
            .map(PartitionId)
            .filter_map(|p| {
                let now = self.ring.partition_preference_list(p, n);
                let receivers: Vec<NodeId> = next
                    .partition_preference_list(p, n)
                    .into_iter()
                    .filter(|node| !now.contains(node))
                    .collect();
                (!receivers.is_empty()).then_some((p, receivers))
            })
            .collect()
    }

    /// Whether every transfer to `next` is done.
    pub fn transfers_done(&self, n: usize) -> bool {
        self.transfers(n).iter().all(|(p, receivers)| {
            receivers
                .iter()
                .all(|r| self.transferred.contains(&(p.0, r.clone())))
        })
    }
}

/// Why a view could not be changed, merged or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViewError {
    /// The other view belongs to another cluster. Nothing was changed: views of two clusters are
    /// never mixed, which keeps a misconfigured node from merging two clusters into one.
    #[error("view of cluster {theirs:?} cannot be merged into cluster {ours:?}")]
    ClusterMismatch {
        /// This view's cluster.
        ours: String,
        /// The other view's cluster.
        theirs: String,
    },
    /// A string, the member count or the bucket count is over its limit ([`MAX_STRING_BYTES`],
    /// [`MAX_MEMBERS`], [`MAX_BUCKETS`]). Nothing was changed (nothing was decoded).
    #[error("{what} is {size}, over the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size (bytes or entries).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A member's capacity is 0, which no ring accepts. Nothing was changed (nothing was decoded).
    #[error("member {0} has capacity 0")]
    ZeroCapacity(NodeId),
    /// The encoded view's crc32 does not match: it was altered or cut. Nothing was decoded.
    #[error("the encoded view fails its checksum")]
    Corrupt,
    /// The encoded view's format byte is not [`VIEW_FORMAT`]. Nothing was decoded.
    #[error("unknown view format {0}")]
    UnknownVersion(u8),
    /// The encoded view passed its checksum but does not decode, or breaks an invariant (named in
    /// `reason`). Nothing was decoded.
    #[error("malformed view: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// [`ClusterView::claim`] was called on a node that is not the claimant. Nothing was changed.
    #[error("only the claimant claims the ring (the claimant is {claimant:?})")]
    NotClaimant {
        /// The claimant, if the view has an `Up` member.
        claimant: Option<NodeId>,
    },
    /// [`ClusterView::claim`] was given a ring configuration other than the current ring's; the
    /// configuration is fixed for the life of a cluster. Nothing was changed.
    #[error("the ring configuration differs from the current ring's")]
    ConfigMismatch,
    /// The claim could not build a ring for the target membership (for instance more members than
    /// partitions). Nothing was changed.
    #[error("cannot build the ring: {0}")]
    Ring(#[from] RingError),
    /// An entry's version is already `u64::MAX`, so no change can outrank it. Nothing was changed.
    #[error("version exhausted")]
    VersionOverflow,
}

/// The mergeable view of the cluster: members, the claimed ring and bucket properties.
///
/// Every value of this type is valid: the constructors ([`ClusterView::new`],
/// [`ClusterView::decode`], deserialization) and every change check the limits, and every ring
/// member and the claimant have an entry among the members. Serialization is canonical (members in
/// id order), which is what [`ClusterView::digest`] hashes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ViewRepr")]
pub struct ClusterView {
    cluster: String,
    /// The member entries by id. An entry is immutable once made (a change makes a new one), so
    /// views share them: a merge takes the other view's (or a delta's) entry, not a copy, and in
    /// one process (a simulated cluster) every view's entry of a member is usually the one
    /// allocation its last writer made.
    members: BTreeMap<NodeId, Arc<MemberInfo>>,
    ring: Option<RingState>,
    buckets: BTreeMap<Vec<u8>, (u64, BucketProps)>,
    /// Hashes of the parts of the view, kept up to date by every change: what
    /// [`ClusterView::digest`] and gossip summaries are made of. A function of the fields
    /// above, so the derived equality is unaffected.
    hashes: Hashes,
}

/// The serialized shape of a [`ClusterView`]: members as a sequence sorted by id, the rest as is.
#[derive(Deserialize)]
#[serde(rename = "ClusterView")]
pub(super) struct ViewRepr {
    pub(super) cluster: String,
    pub(super) members: Vec<MemberInfo>,
    pub(super) ring: Option<RingState>,
    pub(super) buckets: BTreeMap<Vec<u8>, (u64, BucketProps)>,
}

/// Serializes the members map's values as a sequence, without cloning them into a `ViewRepr`.
struct MembersSeq<'a>(&'a BTreeMap<NodeId, Arc<MemberInfo>>);

impl Serialize for MembersSeq<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.values())
    }
}

impl Serialize for ClusterView {
    // Written by hand so that encoding and digests borrow the view; the shape is `ViewRepr`'s.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut state = serializer.serialize_struct("ClusterView", 4)?;
        state.serialize_field("cluster", &self.cluster)?;
        state.serialize_field("members", &MembersSeq(&self.members))?;
        state.serialize_field("ring", &self.ring)?;
        state.serialize_field("buckets", &self.buckets)?;
        state.end()
    }
}

impl TryFrom<ViewRepr> for ClusterView {
    type Error = ViewError;

    fn try_from(repr: ViewRepr) -> Result<ClusterView, ViewError> {
        check_str("cluster name", &repr.cluster)?;
        check_count("member count", repr.members.len(), MAX_MEMBERS)?;
        check_count("bucket count", repr.buckets.len(), MAX_BUCKETS)?;
        // Requiring the canonical order (rather than sorting) keeps one encoding per view.
        if repr.members.windows(2).any(|w| w[0].id >= w[1].id) {
            return Err(ViewError::Malformed {
                reason: "members not strictly sorted by id",
            });
        }
        for member in &repr.members {
            member.check()?;
        }
        for bucket in repr.buckets.keys() {
            check_count("bucket name", bucket.len(), MAX_STRING_BYTES)?;
        }
        let members: BTreeMap<NodeId, Arc<MemberInfo>> = repr
            .members
            .into_iter()
            .map(|m| (m.id.clone(), Arc::new(m)))
            .collect();
        if let Some(state) = &repr.ring {
            // The ring deserialized through `Ring`'s own validation; what is left is how it fits
            // the members. Entries are never deleted, so every ring member has one.
            check_ring_members(state, |id| members.contains_key(id))?;
        }
        let mut view = ClusterView {
            cluster: repr.cluster,
            members,
            ring: repr.ring,
            buckets: repr.buckets,
            hashes: Hashes::new(),
        };
        view.rehash();
        Ok(view)
    }
}

impl ClusterView {
    /// An empty view of the cluster named `cluster`.
    ///
    /// Fails with [`ViewError::TooLarge`] if the name is over [`MAX_STRING_BYTES`].
    pub fn new(cluster: impl Into<String>) -> Result<Self, ViewError> {
        let cluster = cluster.into();
        check_str("cluster name", &cluster)?;
        Ok(ClusterView {
            cluster,
            members: BTreeMap::new(),
            ring: None,
            buckets: BTreeMap::new(),
            hashes: Hashes::new(),
        })
    }

    /// Rebuilds the member map with full nodes. A map built by inserting members one by one
    /// in id order has half-empty nodes; a copy of it (every node of a simulated cluster starts
    /// from a copy of one view) keeps that shape, so compacting the original first halves
    /// the memory all the copies take. Changes nothing else.
    pub fn compact(&mut self) {
        let members = core::mem::take(&mut self.members);
        self.members = members.into_iter().collect();
    }

    /// The cluster's name. Views of different clusters never merge.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Every member entry, Removed ones included, in id order.
    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values().map(|m| &**m)
    }

    /// The member entries in id order, as shared entries (see [`ClusterView::merge_members`]).
    pub(super) fn shared_members(&self) -> impl Iterator<Item = &Arc<MemberInfo>> + Clone {
        self.members.values()
    }

    /// The members with the given status, in id order.
    pub fn members_with_status(&self, status: MemberStatus) -> impl Iterator<Item = &MemberInfo> {
        self.members
            .values()
            .map(|m| &**m)
            .filter(move |m| m.status == status)
    }

    /// The entry of member `id`, if the view has one.
    pub fn member(&self, id: &NodeId) -> Option<&MemberInfo> {
        self.members.get(id).map(|m| &**m)
    }

    /// Adds or changes a member's entry, bumping its version above what this view has: the stored
    /// version is `max(existing + 1, info.version)` (an absent entry counts as version 0). Returns
    /// the stored version.
    ///
    /// This is also how a Removed member re-joins: its new entry outranks the tombstone.
    ///
    /// Errors (nothing changed): [`ViewError::TooLarge`] for a string over [`MAX_STRING_BYTES`] or
    /// a member beyond [`MAX_MEMBERS`], [`ViewError::ZeroCapacity`], and
    /// [`ViewError::VersionOverflow`] when the existing entry is at `u64::MAX`.
    pub fn set_member(&mut self, mut info: MemberInfo) -> Result<u64, ViewError> {
        info.check()?;
        let floor = match self.members.get(&info.id) {
            Some(existing) => existing
                .version
                .checked_add(1)
                .ok_or(ViewError::VersionOverflow)?,
            None => {
                check_count("member count", self.members.len() + 1, MAX_MEMBERS)?;
                1
            }
        };
        info.version = info.version.max(floor);
        let version = info.version;
        self.put_member(info);
        Ok(version)
    }

    /// Publishes what member `id` may still have to hand over, bumping its version. Returns
    /// whether anything changed (as [`ClusterView::set_status`]). A node sets its own; an
    /// operator's removal of a node that is gone for good sets [`Handoff::Drained`] for it.
    pub fn set_handoff(&mut self, id: &NodeId, handoff: Handoff) -> bool {
        self.change_member(id, |member| {
            let changed = member.handoff != handoff;
            member.handoff = handoff;
            changed
        })
    }

    /// Applies `change` to member `id`'s entry and bumps its version, when the view has the
    /// entry, its version can still grow, and `change` says it altered something.
    fn change_member(&mut self, id: &NodeId, change: impl FnOnce(&mut MemberInfo) -> bool) -> bool {
        let Some(member) = self.members.get(id) else {
            return false;
        };
        let Some(version) = member.version.checked_add(1) else {
            return false;
        };
        let mut member = MemberInfo::clone(member);
        if !change(&mut member) {
            return false;
        }
        member.version = version;
        self.put_member(member);
        true
    }

    /// A member that may hold hints or orphaned records of `partition` (see [`Handoff`]):
    /// while there is one, a tombstone of that partition may not be reaped, since the record
    /// it holds could be older than the delete and would come back once delivered.
    pub fn handoff_holder(&self, partition: u32) -> Option<&NodeId> {
        self.members
            .values()
            .find(|m| m.handoff.may_hold(partition))
            .map(|m| &m.id)
    }

    /// Whether member `id` left and has handed everything over (see [`Handoff::Drained`]).
    pub fn is_drained(&self, id: &NodeId) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| m.handoff == Handoff::Drained && !m.in_target_ring())
    }

    /// Changes a member's status, bumping its version. Returns whether anything changed: `false`
    /// when the view has no entry for `id`, when the status is already `status`, or when the
    /// entry's version is at `u64::MAX`.
    pub fn set_status(&mut self, id: &NodeId, status: MemberStatus) -> bool {
        self.change_member(id, |member| {
            let changed = member.status != status;
            member.status = status;
            changed
        })
    }

    /// Merges another view into this one and returns whether this view changed.
    ///
    /// - Members: per member the entry of higher version wins. Between equal versions the later
    ///   [`MemberStatus`] wins, then the greater canonical (postcard) encoding. So a Removed entry
    ///   beats every entry of a lower or equal version (removal is sticky), and a removed member
    ///   re-joins only with a higher version.
    /// - Ring: the higher version wins; then the lower claimant id; then the greater encoding.
    /// - Buckets: per bucket the higher version wins; then the greater encoding of the properties.
    ///
    /// Each rule picks the greater of two entries in a total order, so merging is commutative,
    /// associative and idempotent. Stale entries are simply not taken.
    ///
    /// Errors (nothing changed): [`ViewError::ClusterMismatch`] for a view of another cluster, and
    /// [`ViewError::TooLarge`] if the union would hold more than [`MAX_MEMBERS`] members or
    /// [`MAX_BUCKETS`] buckets.
    pub fn merge(&mut self, other: &ClusterView) -> Result<bool, ViewError> {
        if self.cluster != other.cluster {
            return Err(ViewError::ClusterMismatch {
                ours: self.cluster.clone(),
                theirs: other.cluster.clone(),
            });
        }
        // Check the limits before touching anything, so that an error leaves the view as it was.
        check_count(
            "member count",
            self.members.len() + count_missing(&self.members, &other.members),
            MAX_MEMBERS,
        )?;
        check_count(
            "bucket count",
            self.buckets.len() + count_missing(&self.buckets, &other.buckets),
            MAX_BUCKETS,
        )?;
        let mut changed = self.merge_members(other.shared_members())?;
        changed |= self.merge_ring(other.ring.as_ref());
        changed |= self.merge_buckets(&other.buckets)?;
        Ok(changed)
    }

    /// The members the next ring should hold, sorted by id: the `Joining`, `Up` and `Down` ones
    /// (see [`MemberInfo::in_target_ring`]).
    ///
    /// Joining members are in so that they are given partitions; Leaving members are out so that
    /// their partitions are handed to others; Down members stay in, because being down is taken to
    /// be transient and only an explicit leave or removal moves data away.
    pub fn ring_members_target(&self) -> Vec<Member> {
        self.members
            .values()
            .filter(|m| m.in_target_ring())
            .map(|m| m.ring_member())
            .collect()
    }

    /// The ring as last claimed, if any claim has been made.
    pub fn ring(&self) -> Option<&RingState> {
        self.ring.as_ref()
    }

    /// The claimant: the lowest-id member whose status is `Up`. Every node that has the same view
    /// agrees on it, so no election is needed.
    pub fn claimant(&self) -> Option<&NodeId> {
        self.members
            .values()
            .find(|m| m.status == MemberStatus::Up)
            .map(|m| &m.id)
    }

    /// Called on the claimant `me`: if the target membership ([`ClusterView::ring_members_target`],
    /// capacities and zones included) differs from the current ring's members, computes the next
    /// ring with [`Ring::with_members`] (fewest partitions moved), or with [`Ring::new`] when there
    /// is no ring yet, and installs it with the next ring version. Returns whether the ring
    /// changed.
    ///
    /// Deterministic: two views with the same members and ring claim the same next ring.
    ///
    /// Errors (nothing changed): [`ViewError::NotClaimant`] when `me` is not
    /// [`ClusterView::claimant`], [`ViewError::ConfigMismatch`] when `config` is not the current
    /// ring's configuration, [`ViewError::Ring`] when no ring can be built for the membership, and
    /// [`ViewError::VersionOverflow`].
    pub fn claim(&mut self, me: &NodeId, config: &RingConfig) -> Result<bool, ViewError> {
        match self.claimant() {
            Some(claimant) if claimant == me => {}
            claimant => {
                return Err(ViewError::NotClaimant {
                    claimant: claimant.cloned(),
                })
            }
        }
        let target = self.ring_members_target();
        let (ring, version) = match &self.ring {
            Some(state) => {
                if state.ring.config() != config {
                    return Err(ViewError::ConfigMismatch);
                }
                if state.ring.members() == target.as_slice() {
                    return Ok(false);
                }
                let version = state
                    .version
                    .checked_add(1)
                    .ok_or(ViewError::VersionOverflow)?;
                (state.ring.with_members(target)?, version)
            }
            None => (Ring::new(config.clone(), target)?, 1),
        };
        self.ring = Some(RingState {
            version,
            claimant: me.clone(),
            ring,
            next: None,
            transferred: BTreeSet::new(),
        });
        self.rehash_ring();
        Ok(true)
    }

    /// The claimant's step of a membership change with transfers, called on the claimant `me`
    /// every gossip round:
    /// - no ring yet: claims one at once (a new cluster has no data to move);
    /// - the target membership differs from the ring's and nothing is moving: sets the next ring
    ///   ([`Ring::with_members`], fewest partitions moved), so the receivers start pulling;
    /// - every transfer to the next ring is done: makes it the ring everyone routes by, marks
    ///   Leaving members that hold nothing Removed and Joining members Up.
    ///
    /// A change of membership while a move is under way waits for the move to finish. Returns
    /// whether the view changed. Errors as [`ClusterView::claim`]; nothing changed.
    pub fn advance(
        &mut self,
        me: &NodeId,
        config: &RingConfig,
        n: usize,
    ) -> Result<bool, ViewError> {
        let Some(state) = &self.ring else {
            return self.claim(me, config);
        };
        match self.claimant() {
            Some(claimant) if claimant == me => {}
            claimant => {
                return Err(ViewError::NotClaimant {
                    claimant: claimant.cloned(),
                })
            }
        }
        if state.ring.config() != config {
            return Err(ViewError::ConfigMismatch);
        }
        let version = state
            .version
            .checked_add(1)
            .ok_or(ViewError::VersionOverflow)?;
        let target = self.ring_members_target();
        match &state.next {
            // The target changed under a move (a receiver was removed, say): a plan that can
            // never finish is replaced by one for the current target.
            Some(next) if next.members() != target.as_slice() => {
                let ring = state.ring.clone();
                let next = if ring.members() == target.as_slice() {
                    None
                } else {
                    Some(ring.with_members(target)?)
                };
                self.ring = Some(RingState {
                    version,
                    claimant: me.clone(),
                    ring,
                    next,
                    transferred: BTreeSet::new(),
                });
                self.rehash_ring();
                Ok(true)
            }
            Some(next) if state.transfers_done(n) => {
                let ring = next.clone();
                let settled: Vec<(NodeId, MemberStatus)> = self
                    .members
                    .values()
                    .filter_map(|m| match m.status {
                        MemberStatus::Leaving if ring.member(&m.id).is_none() => {
                            Some((m.id.clone(), MemberStatus::Removed))
                        }
                        MemberStatus::Joining if ring.member(&m.id).is_some() => {
                            Some((m.id.clone(), MemberStatus::Up))
                        }
                        _ => None,
                    })
                    .collect();
                self.ring = Some(RingState {
                    version,
                    claimant: me.clone(),
                    ring,
                    next: None,
                    transferred: BTreeSet::new(),
                });
                self.rehash_ring();
                for (id, status) in settled {
                    self.set_status(&id, status);
                }
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                if state.ring.members() == target.as_slice() {
                    return Ok(false);
                }
                let next = state.ring.with_members(target)?;
                let ring = state.ring.clone();
                self.ring = Some(RingState {
                    version,
                    claimant: me.clone(),
                    ring,
                    next: Some(next),
                    transferred: BTreeSet::new(),
                });
                self.rehash_ring();
                Ok(true)
            }
        }
    }

    /// Records that `receiver` holds all of `partition`'s data for the next ring. Returns whether
    /// that is news.
    pub fn mark_transferred(&mut self, partition: PartitionId, receiver: &NodeId) -> bool {
        let news = match &mut self.ring {
            Some(state) if state.next.is_some() => {
                state.transferred.insert((partition.0, receiver.clone()))
            }
            _ => false,
        };
        if news {
            self.rehash_ring();
        }
        news
    }

    /// Sets a bucket's properties, bumping its version. Returns the stored version.
    ///
    /// Errors (nothing changed): [`ViewError::TooLarge`] for a name over [`MAX_STRING_BYTES`] or a
    /// bucket beyond [`MAX_BUCKETS`], and [`ViewError::VersionOverflow`].
    pub fn set_bucket(&mut self, bucket: Vec<u8>, props: BucketProps) -> Result<u64, ViewError> {
        check_count("bucket name", bucket.len(), MAX_STRING_BYTES)?;
        let version = match self.buckets.get(&bucket) {
            Some((version, _)) => version.checked_add(1).ok_or(ViewError::VersionOverflow)?,
            None => {
                check_count("bucket count", self.buckets.len() + 1, MAX_BUCKETS)?;
                1
            }
        };
        let entry = (version, props);
        let added = bucket_hash(&bucket, &entry);
        let removed = self
            .buckets
            .insert(bucket.clone(), entry)
            .map_or(0, |old| bucket_hash(&bucket, &old));
        self.hashes.buckets = self
            .hashes
            .buckets
            .wrapping_add(added)
            .wrapping_sub(removed);
        Ok(version)
    }

    /// The properties of `bucket`, if it has its own.
    pub fn bucket(&self, bucket: &[u8]) -> Option<&BucketProps> {
        self.buckets.get(bucket).map(|(_, props)| props)
    }

    /// Every bucket with its own properties, with its version, in name order.
    pub fn buckets(&self) -> impl Iterator<Item = (&[u8], u64, &BucketProps)> {
        self.buckets
            .iter()
            .map(|(name, (version, props))| (name.as_slice(), *version, props))
    }

    /// The persisted form: `[VIEW_FORMAT][postcard body][crc32 LE]`, the crc covering the format
    /// byte and the body.
    pub fn encode(&self) -> Vec<u8> {
        let out = vec![VIEW_FORMAT];
        // Postcard into a growing Vec fails only for sequences of unknown length, and every
        // sequence here has one.
        let mut out = postcard::to_extend(self, out).unwrap_or_default();
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes [`ClusterView::encode`]'s output, checking the format byte, the crc32, the body and
    /// every invariant of a view (limits, canonical member order, ring members and claimant among
    /// the members, the ring's own consistency).
    ///
    /// Errors: [`ViewError::UnknownVersion`], [`ViewError::Corrupt`], [`ViewError::Malformed`]
    /// (also for input too short to hold a format byte and a crc), [`ViewError::TooLarge`] and
    /// [`ViewError::ZeroCapacity`].
    pub fn decode(bytes: &[u8]) -> Result<ClusterView, ViewError> {
        // The format byte is read first: another format may lay out the rest differently.
        let (&format, _) = bytes.split_first().ok_or(ViewError::Malformed {
            reason: "empty input",
        })?;
        if !(1..=VIEW_FORMAT).contains(&format) {
            return Err(ViewError::UnknownVersion(format));
        }
        if bytes.len() < 1 + CRC_LEN {
            return Err(ViewError::Malformed {
                reason: "shorter than a format byte and a crc32",
            });
        }
        let (framed, trailer) = bytes.split_at(bytes.len() - CRC_LEN);
        let mut stored = [0u8; CRC_LEN];
        stored.copy_from_slice(trailer);
        if crc32fast::hash(framed) != u32::from_le_bytes(stored) {
            return Err(ViewError::Corrupt);
        }
        // Decoding the unchecked shape first keeps the invariant that failed in the error.
        let malformed = ViewError::Malformed {
            reason: "the body does not decode",
        };
        let body = &framed[1..];
        let repr = match format {
            1 => decode_whole::<ViewReprV1>(body),
            2 => decode_whole::<ViewReprV2>(body),
            3 => decode_whole::<ViewReprV3>(body),
            4 => decode_whole::<ViewReprV4>(body),
            _ => decode_whole::<ViewRepr>(body),
        }
        .ok_or(malformed)?;
        ClusterView::try_from(repr)
    }
}

/// `body` decoded whole as a view of some format, in the current shape (`None`: it does not
/// decode, or bytes are left over).
fn decode_whole<'a, T: Deserialize<'a> + Into<ViewRepr>>(body: &'a [u8]) -> Option<ViewRepr> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((repr, [])) => Some(repr.into()),
        _ => None,
    }
}

/// Feeds postcard's output straight into a hash.
struct HashFlavor(Md5);

impl postcard::ser_flavors::Flavor for HashFlavor {
    type Output = md5::digest::Output<Md5>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update([data]);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Self::Output> {
        Ok(self.0.finalize())
    }
}

/// How many keys of `theirs` are not in `ours`.
fn count_missing<K: Ord, V>(ours: &BTreeMap<K, V>, theirs: &BTreeMap<K, V>) -> usize {
    // One ordered pass over both maps rather than a lookup per key: views are mostly equal, and
    // this is linear and cache-friendly.
    let mut mine = ours.keys().peekable();
    theirs
        .keys()
        .filter(|key| {
            while mine.next_if(|k| k < key).is_some() {}
            mine.next_if(|k| k == key).is_none()
        })
        .count()
}

/// Merges `theirs` into `ours` key by key, keeping the greater entry under `compare` (`Greater`
/// wins), in one ordered pass over both maps. Returns whether `ours` changed.
fn merge_maps<K: Ord + Clone, V: Clone>(
    ours: &mut BTreeMap<K, V>,
    theirs: &BTreeMap<K, V>,
    compare: impl Fn(&V, &V) -> Ordering,
) -> bool {
    let mut changed = false;
    let mut missing = Vec::new();
    let mut mine = ours.iter_mut().peekable();
    for (key, their) in theirs {
        while mine.next_if(|(k, _)| *k < key).is_some() {}
        match mine.next_if(|(k, _)| *k == key) {
            Some((_, our)) => {
                if compare(their, our) == Ordering::Greater {
                    our.clone_from(their);
                    changed = true;
                }
            }
            None => missing.push((key, their)),
        }
    }
    changed |= !missing.is_empty();
    for (key, their) in missing {
        ours.insert(key.clone(), their.clone());
    }
    changed
}

/// The canonical encoding of a value, the last tie-break of merges.
fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    // Cannot fail for the same reason as in `encode`.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// The total order of member entries: version, then status, then encoding. `Greater` wins.
fn compare_members(a: &MemberInfo, b: &MemberInfo) -> Ordering {
    a.version
        .cmp(&b.version)
        .then(a.status.cmp(&b.status))
        .then_with(|| {
            if a == b {
                Ordering::Equal
            } else {
                canonical(a).cmp(&canonical(b))
            }
        })
}

/// The total order of rings: version, then the *lower* claimant, then encoding. `Greater` wins.
/// The total order of ring states: version, then lower claimant, then the rings' encodings.
/// `Equal` means the same claim (its transfer sets may differ, and merge by union).
fn compare_rings(a: &RingState, b: &RingState) -> Ordering {
    a.version
        .cmp(&b.version)
        .then_with(|| b.claimant.cmp(&a.claimant))
        .then_with(|| {
            if a.ring == b.ring && a.next == b.next {
                Ordering::Equal
            } else {
                canonical(&(&a.ring, &a.next)).cmp(&canonical(&(&b.ring, &b.next)))
            }
        })
}

/// The total order of bucket entries: version, then encoding. `Greater` wins.
fn compare_buckets(a: &(u64, BucketProps), b: &(u64, BucketProps)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| {
        if a.1 == b.1 {
            Ordering::Equal
        } else {
            canonical(&a.1).cmp(&canonical(&b.1))
        }
    })
}

/// Errors unless the claimant and every member of `state`'s rings are `known` (and their zones
/// are well-formed): a ring only ever names members the view holds entries of.
fn check_ring_members(state: &RingState, known: impl Fn(&NodeId) -> bool) -> Result<(), ViewError> {
    if !known(&state.claimant) {
        return Err(ViewError::Malformed {
            reason: "the ring's claimant is not a member",
        });
    }
    for member in state
        .ring
        .members()
        .iter()
        .chain(state.next.iter().flat_map(|next| next.members().iter()))
    {
        if !known(&member.id) {
            return Err(ViewError::Malformed {
                reason: "a ring member is not a member",
            });
        }
        if let Some(zone) = &member.zone {
            check_str("zone", zone)?;
        }
    }
    Ok(())
}

fn check_str(what: &'static str, s: &str) -> Result<(), ViewError> {
    check_count(what, s.len(), MAX_STRING_BYTES)
}

fn check_count(what: &'static str, size: usize, max: usize) -> Result<(), ViewError> {
    if size > max {
        Err(ViewError::TooLarge { what, size, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::QuorumValue;
    use crate::ring::Strategy as Placement;
    use proptest::prelude::*;
    use std::format;
    use std::vec;

    fn config() -> RingConfig {
        RingConfig {
            partitions: 64,
            strategy: Placement::Partitions,
            target_n: 3,
            ..RingConfig::default()
        }
    }

    fn info(id: &str, status: MemberStatus) -> MemberInfo {
        let mut info = MemberInfo::new(id, format!("{id}:7000"), format!("{id}:8000"), 1);
        info.status = status;
        info
    }

    fn view_with(statuses: &[(&str, MemberStatus)]) -> ClusterView {
        let mut view = ClusterView::new("c").unwrap();
        for (id, status) in statuses {
            view.set_member(info(id, *status)).unwrap();
        }
        view
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s)
    }

    /// Merges `b` into a copy of `a`.
    fn joined(a: &ClusterView, b: &ClusterView) -> ClusterView {
        let mut out = a.clone();
        out.merge(b).unwrap();
        out
    }

    #[test]
    fn set_member_bumps_versions() {
        let mut view = ClusterView::new("c").unwrap();
        assert_eq!(view.set_member(info("a", MemberStatus::Joining)), Ok(1));
        assert_eq!(view.set_member(info("a", MemberStatus::Up)), Ok(2));
        let mut ahead = info("a", MemberStatus::Up);
        ahead.version = 10;
        assert_eq!(view.set_member(ahead), Ok(10));
        assert!(view.set_status(&id("a"), MemberStatus::Leaving));
        assert_eq!(view.member(&id("a")).unwrap().version, 11);
        // No change, no bump; unknown members are not created.
        assert!(!view.set_status(&id("a"), MemberStatus::Leaving));
        assert!(!view.set_status(&id("zz"), MemberStatus::Up));
        assert_eq!(view.member(&id("a")).unwrap().version, 11);
        assert_eq!(view.members_with_status(MemberStatus::Leaving).count(), 1);
        // An exhausted version refuses changes rather than wrapping.
        let mut last = info("a", MemberStatus::Up);
        last.version = u64::MAX;
        view.set_member(last).unwrap();
        assert_eq!(
            view.set_member(info("a", MemberStatus::Down)),
            Err(ViewError::VersionOverflow)
        );
        assert!(!view.set_status(&id("a"), MemberStatus::Down));
        assert_eq!(view.member(&id("a")).unwrap().status, MemberStatus::Up);
    }

    #[test]
    fn bad_entries_are_refused() {
        let before = view_with(&[("a", MemberStatus::Up)]);
        let mut view = before.clone();
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let mut bad = info("b", MemberStatus::Up);
        bad.peer_address = long.clone();
        assert!(matches!(
            view.set_member(bad),
            Err(ViewError::TooLarge {
                what: "peer address",
                ..
            })
        ));
        let mut bad = info("b", MemberStatus::Up);
        bad.zone = Some(long.clone());
        assert!(matches!(
            view.set_member(bad),
            Err(ViewError::TooLarge { .. })
        ));
        assert!(matches!(
            view.set_member(info(&long, MemberStatus::Up)),
            Err(ViewError::TooLarge {
                what: "node id",
                ..
            })
        ));
        let mut bad = info("b", MemberStatus::Up);
        bad.capacity = 0;
        assert_eq!(view.set_member(bad), Err(ViewError::ZeroCapacity(id("b"))));
        assert!(matches!(
            view.set_bucket(long.into_bytes(), BucketProps::default()),
            Err(ViewError::TooLarge { .. })
        ));
        assert_eq!(view, before);
        assert!(matches!(
            ClusterView::new("x".repeat(MAX_STRING_BYTES + 1)),
            Err(ViewError::TooLarge { .. })
        ));
        // Exactly at the limit is fine.
        let mut fine = info("b", MemberStatus::Up);
        fine.client_address = "y".repeat(MAX_STRING_BYTES);
        view.set_member(fine).unwrap();
    }

    #[test]
    fn higher_versions_win_whatever_the_status() {
        let mut old = view_with(&[("a", MemberStatus::Up)]);
        let mut new = old.clone();
        new.set_status(&id("a"), MemberStatus::Joining);
        new.set_status(&id("a"), MemberStatus::Up);
        new.set_status(&id("a"), MemberStatus::Joining);
        // Down beats Joining at equal versions, but not at lower ones.
        old.set_status(&id("a"), MemberStatus::Down);
        assert_eq!(
            joined(&old, &new).member(&id("a")).unwrap().status,
            MemberStatus::Joining
        );
        assert_eq!(
            joined(&new, &old).member(&id("a")).unwrap().status,
            MemberStatus::Joining
        );
        // A stale view changes nothing.
        let mut current = joined(&old, &new);
        assert_eq!(current.merge(&old), Ok(false));
        assert_eq!(current.merge(&new), Ok(false));
    }

    #[test]
    fn equal_versions_resolve_deterministically() {
        let base = view_with(&[("a", MemberStatus::Up)]);
        let (mut left, mut right) = (base.clone(), base.clone());
        left.set_status(&id("a"), MemberStatus::Leaving);
        right.set_status(&id("a"), MemberStatus::Down);
        let l = joined(&left, &right);
        assert_eq!(l, joined(&right, &left));
        assert_eq!(l.member(&id("a")).unwrap().status, MemberStatus::Down);
        // Same version and status, different addresses: the encodings decide, either way round.
        let (mut left, mut right) = (base.clone(), base);
        let mut moved = info("a", MemberStatus::Up);
        moved.peer_address = "elsewhere:7000".into();
        left.set_member(moved).unwrap();
        right.set_member(info("a", MemberStatus::Up)).unwrap();
        assert_ne!(left, right);
        assert_eq!(joined(&left, &right), joined(&right, &left));
    }

    #[test]
    fn removal_is_sticky_until_a_higher_version() {
        let base = view_with(&[("a", MemberStatus::Up), ("b", MemberStatus::Up)]);
        let mut remover = base.clone();
        remover.set_status(&id("b"), MemberStatus::Removed);
        // b, unaware, changes its own entry concurrently, at the same version.
        let mut unaware = base.clone();
        unaware.set_status(&id("b"), MemberStatus::Joining);
        for merged in [joined(&remover, &unaware), joined(&unaware, &remover)] {
            assert_eq!(
                merged.member(&id("b")).unwrap().status,
                MemberStatus::Removed
            );
        }
        // Re-joining through set_member outranks the tombstone everywhere.
        let mut rejoin = joined(&remover, &unaware);
        rejoin.set_member(info("b", MemberStatus::Joining)).unwrap();
        let mut stale = remover.clone();
        assert_eq!(stale.merge(&rejoin), Ok(true));
        assert_eq!(
            stale.member(&id("b")).unwrap().status,
            MemberStatus::Joining
        );
        assert_eq!(rejoin.merge(&remover), Ok(false));
    }

    #[test]
    fn views_of_other_clusters_do_not_merge() {
        let mut ours = view_with(&[("a", MemberStatus::Up)]);
        let before = ours.clone();
        let mut theirs = ClusterView::new("other").unwrap();
        theirs.set_member(info("b", MemberStatus::Up)).unwrap();
        assert_eq!(
            ours.merge(&theirs),
            Err(ViewError::ClusterMismatch {
                ours: "c".into(),
                theirs: "other".into()
            })
        );
        assert_eq!(ours, before);
    }

    #[test]
    fn merges_beyond_the_member_limit_are_refused_whole() {
        let mut big = ClusterView::new("c").unwrap();
        for i in 0..MAX_MEMBERS {
            big.members.insert(
                id(&format!("m{i:06}")),
                info(&format!("m{i:06}"), MemberStatus::Up).into(),
            );
        }
        let before_len = big.members.len();
        assert!(matches!(
            big.set_member(info("zzz", MemberStatus::Up)),
            Err(ViewError::TooLarge { .. })
        ));
        let mut other = view_with(&[("m000000", MemberStatus::Down), ("zzz", MemberStatus::Up)]);
        other.set_status(&id("m000000"), MemberStatus::Leaving);
        assert!(matches!(big.merge(&other), Err(ViewError::TooLarge { .. })));
        assert_eq!(big.members.len(), before_len);
        assert_eq!(big.member(&id("m000000")).unwrap().status, MemberStatus::Up);
        // Changing an existing entry is fine at the limit.
        big.set_status(&id("m000001"), MemberStatus::Down);
    }

    #[test]
    fn buckets_merge_by_version() {
        let mut a = ClusterView::new("c").unwrap();
        assert_eq!(a.set_bucket(b"b".to_vec(), BucketProps::default()), Ok(1));
        let mut b = a.clone();
        let props = BucketProps {
            n: 5,
            ..BucketProps::default()
        };
        assert_eq!(b.set_bucket(b"b".to_vec(), props.clone()), Ok(2));
        assert_eq!(a.merge(&b), Ok(true));
        assert_eq!(a.bucket(b"b"), Some(&props));
        assert_eq!(a.bucket(b"none"), None);
        // Concurrent settings of the same version: the same winner either way round.
        let mut c = a.clone();
        let mut d = a.clone();
        c.set_bucket(
            b"b".to_vec(),
            BucketProps {
                n: 1,
                ..props.clone()
            },
        )
        .unwrap();
        d.set_bucket(
            b"b".to_vec(),
            BucketProps {
                r: QuorumValue::All,
                ..props
            },
        )
        .unwrap();
        assert_eq!(joined(&c, &d), joined(&d, &c));
        assert_eq!(joined(&c, &d).buckets().count(), 1);
    }

    #[test]
    fn the_claimant_is_the_lowest_up_member() {
        let mut view = view_with(&[
            ("a", MemberStatus::Joining),
            ("b", MemberStatus::Up),
            ("c", MemberStatus::Up),
        ]);
        assert_eq!(view.claimant(), Some(&id("b")));
        assert_eq!(
            view.claim(&id("c"), &config()),
            Err(ViewError::NotClaimant {
                claimant: Some(id("b"))
            })
        );
        assert!(view.ring().is_none());
        view.set_status(&id("a"), MemberStatus::Up);
        assert_eq!(view.claimant(), Some(&id("a")));
        let none = view_with(&[("a", MemberStatus::Joining)]);
        assert_eq!(none.claimant(), None);
        assert_eq!(
            none.clone().claim(&id("a"), &config()),
            Err(ViewError::NotClaimant { claimant: None })
        );
    }

    #[test]
    fn claims_follow_the_target_membership() {
        let mut view = view_with(&[
            ("a", MemberStatus::Up),
            ("b", MemberStatus::Joining),
            ("c", MemberStatus::Up),
            ("d", MemberStatus::Leaving),
            ("e", MemberStatus::Removed),
        ]);
        assert_eq!(view.claim(&id("a"), &config()), Ok(true));
        let state = view.ring().unwrap().clone();
        assert_eq!((state.version, &state.claimant), (1, &id("a")));
        assert_eq!(state.ring.members(), view.ring_members_target().as_slice());
        let ids: Vec<&str> = state.ring.members().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // Nothing to do when the membership has not changed.
        assert_eq!(view.claim(&id("a"), &config()), Ok(false));
        // Down stays in the ring; capacity changes are membership changes.
        view.set_status(&id("c"), MemberStatus::Down);
        assert_eq!(view.claim(&id("a"), &config()), Ok(false));
        let mut bigger = info("b", MemberStatus::Up);
        bigger.capacity = 3;
        view.set_member(bigger).unwrap();
        assert_eq!(view.claim(&id("a"), &config()), Ok(true));
        let next = view.ring().unwrap();
        assert_eq!(next.version, 2);
        assert_eq!(
            next.ring,
            state.ring.with_members(view.ring_members_target()).unwrap()
        );
        assert_eq!(next.ring.members(), view.ring_members_target().as_slice());
        // The configuration is fixed once there is a ring.
        view.set_status(&id("c"), MemberStatus::Leaving);
        let before = view.clone();
        let other = RingConfig {
            partitions: 128,
            ..config()
        };
        assert_eq!(view.claim(&id("a"), &other), Err(ViewError::ConfigMismatch));
        assert_eq!(view, before);
    }

    #[test]
    fn impossible_rings_are_refused() {
        let tiny = RingConfig {
            partitions: 2,
            ..config()
        };
        let mut view = view_with(&[
            ("a", MemberStatus::Up),
            ("b", MemberStatus::Up),
            ("c", MemberStatus::Up),
        ]);
        let before = view.clone();
        assert!(matches!(
            view.claim(&id("a"), &tiny),
            Err(ViewError::Ring(RingError::TooManyMembers { .. }))
        ));
        assert_eq!(view, before);
        let bad = RingConfig {
            partitions: 3,
            ..config()
        };
        assert!(matches!(
            view.claim(&id("a"), &bad),
            Err(ViewError::Ring(_))
        ));
    }

    #[test]
    fn equal_memberships_claim_equal_rings() {
        let members = [
            ("a", MemberStatus::Up),
            ("b", MemberStatus::Joining),
            ("c", MemberStatus::Down),
            ("d", MemberStatus::Up),
        ];
        let mut forward = view_with(&members);
        let mut reversed: Vec<_> = members.to_vec();
        reversed.reverse();
        let mut backward = view_with(&reversed);
        forward.claim(&id("a"), &config()).unwrap();
        backward.claim(&id("a"), &config()).unwrap();
        assert_eq!(forward.ring(), backward.ring());
        assert_eq!(forward.digest(), backward.digest());
        // And the next claim from the same ring is the same too.
        forward
            .set_member(info("e", MemberStatus::Joining))
            .unwrap();
        backward
            .set_member(info("e", MemberStatus::Joining))
            .unwrap();
        forward.claim(&id("a"), &config()).unwrap();
        backward.claim(&id("a"), &config()).unwrap();
        assert_eq!(forward.ring(), backward.ring());
    }

    #[test]
    fn concurrent_claims_resolve_to_the_lower_claimant() {
        let base = view_with(&[("a", MemberStatus::Up), ("b", MemberStatus::Up)]);
        // A partition: each side thinks the other is gone and claims on its own.
        let mut side_a = base.clone();
        side_a.set_status(&id("b"), MemberStatus::Leaving);
        side_a.claim(&id("a"), &config()).unwrap();
        let mut side_b = base;
        side_b.set_status(&id("a"), MemberStatus::Leaving);
        side_b.claim(&id("b"), &config()).unwrap();
        let healed = joined(&side_a, &side_b);
        assert_eq!(healed, joined(&side_b, &side_a));
        assert_eq!(healed.ring().unwrap().claimant, id("a"));
    }

    #[test]
    fn encoding_round_trips_and_digests_track_content() {
        let mut view = view_with(&[("a", MemberStatus::Up), ("b", MemberStatus::Joining)]);
        let mut zoned = info("c", MemberStatus::Down);
        zoned.zone = Some("east".into());
        view.set_member(zoned).unwrap();
        view.claim(&id("a"), &config()).unwrap();
        view.set_bucket(b"users".to_vec(), BucketProps::default())
            .unwrap();
        let bytes = view.encode();
        assert_eq!(bytes[0], VIEW_FORMAT);
        assert_eq!(ClusterView::decode(&bytes), Ok(view.clone()));
        let empty = ClusterView::new("c").unwrap();
        assert_eq!(ClusterView::decode(&empty.encode()), Ok(empty.clone()));
        assert_ne!(empty.digest(), view.digest());
        let mut changed = view.clone();
        changed.set_status(&id("b"), MemberStatus::Up);
        assert_ne!(changed.digest(), view.digest());
        assert_eq!(view.clone().digest(), view.digest());
    }

    #[test]
    fn every_bit_flip_is_an_error() {
        let mut view = view_with(&[("a", MemberStatus::Up), ("b", MemberStatus::Up)]);
        view.claim(&id("a"), &config()).unwrap();
        view.set_bucket(b"b".to_vec(), BucketProps::default())
            .unwrap();
        let bytes = view.encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let result = ClusterView::decode(&flipped);
            assert!(result.is_err(), "flip of bit {bit} decoded");
            if bit < 8 && !(1..=VIEW_FORMAT).contains(&flipped[0]) {
                assert!(matches!(result, Err(ViewError::UnknownVersion(_))));
            } else {
                assert_eq!(result, Err(ViewError::Corrupt));
            }
        }
        for cut in 0..bytes.len() {
            assert!(ClusterView::decode(&bytes[..cut]).is_err());
        }
        assert_eq!(
            ClusterView::decode(&[]),
            Err(ViewError::Malformed {
                reason: "empty input"
            })
        );
        assert!(matches!(
            ClusterView::decode(&[VIEW_FORMAT, 0]),
            Err(ViewError::Malformed { .. })
        ));
    }

    /// The serialized shape of a view, for building frames that break its invariants.
    #[derive(Serialize)]
    struct RawView(
        String,
        Vec<MemberInfo>,
        Option<RingState>,
        BTreeMap<Vec<u8>, (u64, BucketProps)>,
    );

    type ErrorCheck = fn(&ViewError) -> bool;

    fn frame(raw: &RawView) -> Vec<u8> {
        let mut out = vec![VIEW_FORMAT];
        out.extend(postcard::to_allocvec(raw).unwrap());
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    /// A member entry as formats 1 and 2 wrote it: no handoff.
    fn member_v2(
        id: &str,
        status: MemberStatus,
    ) -> (
        NodeId,
        String,
        String,
        u32,
        Option<String>,
        MemberStatus,
        u64,
    ) {
        (NodeId::new(id), "".into(), "".into(), 1, None, status, 1)
    }

    #[test]
    fn a_view_of_format_2_decodes_with_unknown_handoffs_but_for_removed_members() {
        let members = vec![
            member_v2("n1", MemberStatus::Up),
            member_v2("n2", MemberStatus::Removed),
        ];
        let mut bytes = vec![2u8];
        let buckets: BTreeMap<Vec<u8>, (u64, BucketProps)> = BTreeMap::new();
        bytes = postcard::to_extend(&("c", members, None::<RingState>, buckets), bytes).unwrap();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let decoded = ClusterView::decode(&bytes).unwrap();
        assert_eq!(decoded.member(&id("n1")).unwrap().handoff, Handoff::Unknown);
        // Nothing can wait for a member removed before handoffs were published.
        assert_eq!(decoded.member(&id("n2")).unwrap().handoff, Handoff::Drained);
        assert_eq!(decoded.handoff_holder(7), Some(&id("n1")));
        assert_eq!(ClusterView::decode(&decoded.encode()).unwrap(), decoded);
    }

    #[test]
    fn handoffs_hold_reaping_of_their_partitions_and_say_when_a_leaver_is_drained() {
        let mut view = view_with(&[("a", MemberStatus::Up), ("b", MemberStatus::Leaving)]);
        // Unknown holds every partition.
        assert_eq!(view.handoff_holder(3), Some(&id("a")));
        assert!(view.set_handoff(&id("a"), Handoff::Pending(BTreeSet::from([3]))));
        assert!(!view.set_handoff(&id("a"), Handoff::Pending(BTreeSet::from([3]))));
        assert!(view.set_handoff(&id("b"), Handoff::Pending(BTreeSet::new())));
        assert_eq!(view.handoff_holder(3), Some(&id("a")));
        assert_eq!(view.handoff_holder(4), None);
        assert!(!view.is_drained(&id("b")));
        view.set_handoff(&id("b"), Handoff::Drained);
        assert!(view.is_drained(&id("b")));
        // A member in the target ring is never drained, whatever it says.
        view.set_handoff(&id("a"), Handoff::Drained);
        assert!(!view.is_drained(&id("a")));
        // The change travels with the entry's version.
        let mut other = view_with(&[("a", MemberStatus::Up), ("b", MemberStatus::Leaving)]);
        other.merge(&view).unwrap();
        assert!(other.is_drained(&id("b")));
    }

    #[test]
    fn a_view_of_format_1_decodes_with_default_object_limits() {
        #[derive(Serialize)]
        struct PropsV1 {
            n: u32,
            r: crate::bucket::QuorumValue,
            w: crate::bucket::QuorumValue,
            dw: crate::bucket::QuorumValue,
            conflict_mode: crate::version::ConflictMode,
        }
        let members = vec![member_v2("n1", MemberStatus::Joining)];
        let props = PropsV1 {
            n: 2,
            r: crate::bucket::QuorumValue::One,
            w: crate::bucket::QuorumValue::Quorum,
            dw: crate::bucket::QuorumValue::Count(0),
            conflict_mode: crate::version::ConflictMode::LastWriterWins,
        };
        let buckets: BTreeMap<Vec<u8>, (u64, PropsV1)> =
            BTreeMap::from([(b"b".to_vec(), (3u64, props))]);
        let mut bytes = vec![1u8];
        bytes = postcard::to_extend(&("c", members, None::<RingState>, buckets), bytes).unwrap();
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let decoded = ClusterView::decode(&bytes).unwrap();
        let props = decoded.bucket(b"b").unwrap();
        assert_eq!(props.n, 2);
        assert_eq!(
            props.conflict_mode,
            crate::version::ConflictMode::LastWriterWins
        );
        assert_eq!(props.limits, crate::bucket::ObjectLimits::default());
        // Written again, it is of the current format.
        assert_eq!(decoded.encode()[0], VIEW_FORMAT);
        assert_eq!(ClusterView::decode(&decoded.encode()).unwrap(), decoded);
    }

    #[test]
    fn invariants_are_checked_on_decode() {
        let a = info("a", MemberStatus::Up);
        let b = info("b", MemberStatus::Up);
        let ring = |ids: &[&str]| RingState {
            version: 1,
            claimant: id("a"),
            ring: Ring::new(config(), ids.iter().map(|i| Member::new(*i, 1)).collect()).unwrap(),
            next: None,
            transferred: Default::default(),
        };
        let good = RawView(
            "c".into(),
            vec![a.clone(), b.clone()],
            Some(ring(&["a", "b"])),
            BTreeMap::new(),
        );
        assert!(ClusterView::decode(&frame(&good)).is_ok());
        let cases: Vec<(RawView, ErrorCheck)> = vec![
            (
                RawView(
                    "c".into(),
                    vec![b.clone(), a.clone()],
                    None,
                    BTreeMap::new(),
                ),
                |e| matches!(e, ViewError::Malformed { .. }),
            ),
            (
                RawView(
                    "c".into(),
                    vec![a.clone(), a.clone()],
                    None,
                    BTreeMap::new(),
                ),
                |e| matches!(e, ViewError::Malformed { .. }),
            ),
            (
                RawView(
                    "c".into(),
                    vec![a.clone()],
                    Some(ring(&["a", "b"])),
                    BTreeMap::new(),
                ),
                |e| matches!(e, ViewError::Malformed { .. }),
            ),
            (
                RawView(
                    "c".into(),
                    vec![b.clone()],
                    Some(ring(&["b"])),
                    BTreeMap::new(),
                ),
                |e| matches!(e, ViewError::Malformed { .. }),
            ),
            (
                RawView(
                    "c".into(),
                    vec![MemberInfo {
                        capacity: 0,
                        ..a.clone()
                    }],
                    None,
                    BTreeMap::new(),
                ),
                |e| matches!(e, ViewError::ZeroCapacity(_)),
            ),
            (
                RawView("x".repeat(2000), vec![], None, BTreeMap::new()),
                |e| matches!(e, ViewError::TooLarge { .. }),
            ),
            (
                RawView(
                    "c".into(),
                    vec![],
                    None,
                    [(vec![0u8; 2000], (1, BucketProps::default()))]
                        .into_iter()
                        .collect(),
                ),
                |e| matches!(e, ViewError::TooLarge { .. }),
            ),
        ];
        for (raw, expected) in cases {
            let error = ClusterView::decode(&frame(&raw)).unwrap_err();
            assert!(expected(&error), "{error:?}");
        }
        // Trailing bytes inside the checksummed frame are malformed too.
        let mut padded = frame(&good);
        padded.truncate(padded.len() - CRC_LEN);
        padded.push(0);
        let crc = crc32fast::hash(&padded);
        padded.extend(crc.to_le_bytes());
        assert!(matches!(
            ClusterView::decode(&padded),
            Err(ViewError::Malformed { .. })
        ));
        // Deserialization through serde (as gossip does) checks the same invariants.
        let bad = RawView("c".into(), vec![b, a], None, BTreeMap::new());
        let body = postcard::to_allocvec(&bad).unwrap();
        assert!(postcard::from_bytes::<ClusterView>(&body).is_err());
    }

    // ---- Properties over random histories ----

    const NODES: usize = 6;
    const REPLICAS: usize = 4;

    #[derive(Clone, Debug)]
    enum Op {
        SetMember {
            replica: usize,
            node: usize,
            capacity: u32,
            address: u8,
            zone: Option<u8>,
            status: MemberStatus,
            version: u64,
        },
        SetStatus {
            replica: usize,
            node: usize,
            status: MemberStatus,
        },
        SetBucket {
            replica: usize,
            bucket: u8,
            n: u32,
        },
        Claim {
            replica: usize,
        },
        Merge {
            from: usize,
            to: usize,
        },
    }

    fn arb_status() -> impl Strategy<Value = MemberStatus> {
        prop::sample::select(vec![
            MemberStatus::Joining,
            MemberStatus::Up,
            MemberStatus::Leaving,
            MemberStatus::Down,
            MemberStatus::Removed,
        ])
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let replica = 0..REPLICAS;
        let node = 0..NODES;
        prop_oneof![
            3 => (
                replica.clone(),
                node.clone(),
                1u32..4,
                0u8..3,
                prop::option::of(0u8..2),
                arb_status(),
                0u64..6,
            )
                .prop_map(|(replica, node, capacity, address, zone, status, version)| {
                    Op::SetMember { replica, node, capacity, address, zone, status, version }
                }),
            3 => (replica.clone(), node, arb_status())
                .prop_map(|(replica, node, status)| Op::SetStatus { replica, node, status }),
            1 => (replica.clone(), 0u8..3, 1u32..5)
                .prop_map(|(replica, bucket, n)| Op::SetBucket { replica, bucket, n }),
            2 => replica.clone().prop_map(|replica| Op::Claim { replica }),
            2 => (replica.clone(), replica).prop_map(|(from, to)| Op::Merge { from, to }),
        ]
    }

    fn node(i: usize) -> NodeId {
        NodeId::new(format!("n{i}"))
    }

    /// Runs a history of operations on `REPLICAS` views of one cluster.
    fn run(ops: &[Op]) -> Vec<ClusterView> {
        let mut views = vec![ClusterView::new("c").unwrap(); REPLICAS];
        for op in ops {
            match *op {
                Op::SetMember {
                    replica,
                    node: n,
                    capacity,
                    address,
                    zone,
                    status,
                    version,
                } => {
                    let mut m = MemberInfo::new(node(n), format!("p{address}"), "c", capacity);
                    m.zone = zone.map(|z| format!("z{z}"));
                    m.status = status;
                    m.version = version;
                    views[replica].set_member(m).unwrap();
                }
                Op::SetStatus {
                    replica,
                    node: n,
                    status,
                } => {
                    views[replica].set_status(&node(n), status);
                }
                Op::SetBucket { replica, bucket, n } => {
                    let props = BucketProps {
                        n,
                        ..BucketProps::default()
                    };
                    views[replica].set_bucket(vec![bucket], props).unwrap();
                }
                Op::Claim { replica } => {
                    if let Some(me) = views[replica].claimant().cloned() {
                        views[replica].claim(&me, &config()).unwrap();
                    }
                }
                Op::Merge { from, to } => {
                    let from = views[from].clone();
                    views[to].merge(&from).unwrap();
                }
            }
        }
        views
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn merge_is_a_join(ops in prop::collection::vec(arb_op(), 0..40)) {
            let views = run(&ops);
            let (a, b, c) = (&views[0], &views[1], &views[2]);
            // Commutative.
            let ab = joined(a, b);
            prop_assert_eq!(&ab, &joined(b, a));
            prop_assert_eq!(ab.digest(), joined(b, a).digest());
            // Associative.
            prop_assert_eq!(joined(&ab, c), joined(a, &joined(b, c)));
            // Idempotent, and the result is above both inputs.
            let mut again = a.clone();
            prop_assert_eq!(again.merge(a), Ok(false));
            prop_assert_eq!(&again, a);
            let mut absorbed = ab.clone();
            prop_assert_eq!(absorbed.merge(a), Ok(false));
            prop_assert_eq!(absorbed.merge(b), Ok(false));
            // `changed` is exactly "the view is different".
            let mut into_a = a.clone();
            prop_assert_eq!(into_a.merge(b), Ok(ab != *a));
            // Every merged view is valid and round-trips through its encoding.
            prop_assert_eq!(ClusterView::decode(&ab.encode()), Ok(ab.clone()));
        }

        #[test]
        fn a_delta_exchange_leaves_both_sides_at_the_merge(
            ops in prop::collection::vec(arb_op(), 0..40),
            from in 0..REPLICAS,
            to in 0..REPLICAS,
        ) {
            use crate::membership::{handle_gossip, GossipMessage};
            let views = run(&ops);
            let expected = joined(&views[from], &views[to]);
            let (mut a, mut b) = (views[from].clone(), views[to].clone());
            let mut message = Some(GossipMessage::Digest(a.digest()));
            let mut at_b = true;
            let mut steps = 0;
            while let Some(m) = message {
                message = handle_gossip(if at_b { &mut b } else { &mut a }, &m).unwrap();
                at_b = !at_b;
                steps += 1;
                prop_assert!(steps < 20, "the exchange does not end");
            }
            prop_assert_eq!(&a, &expected);
            prop_assert_eq!(&b, &expected);
        }

        #[test]
        fn replicas_converge_in_any_order(
            ops in prop::collection::vec(arb_op(), 0..40),
            order in Just((0..REPLICAS).collect::<Vec<usize>>()).prop_shuffle(),
            other_order in Just((0..REPLICAS).collect::<Vec<usize>>()).prop_shuffle(),
        ) {
            let views = run(&ops);
            let fold = |order: &[usize]| {
                let mut out = views[order[0]].clone();
                for &i in &order[1..] {
                    out.merge(&views[i]).unwrap();
                }
                out
            };
            let first = fold(&order);
            prop_assert_eq!(&first, &fold(&other_order));
            // Pairwise gossip in a ring of replicas also ends at the same view everywhere.
            let mut gossiped = views.clone();
            for _ in 0..REPLICAS {
                for &i in &order {
                    let next = (i + 1) % REPLICAS;
                    let from = gossiped[i].clone();
                    gossiped[next].merge(&from).unwrap();
                }
            }
            for view in &gossiped {
                prop_assert_eq!(view, &first);
                prop_assert_eq!(view.digest(), first.digest());
            }
            // Once merged, the ring everyone holds is the same, and a claim made on the merged
            // view holds exactly the target membership.
            let mut claimed = first.clone();
            if let Some(me) = claimed.claimant().cloned() {
                claimed.claim(&me, &config()).unwrap();
                let target = claimed.ring_members_target();
                prop_assert_eq!(claimed.ring().unwrap().ring.members(), target.as_slice());
            }
        }

        #[test]
        fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = ClusterView::decode(&bytes);
            // With a valid frame round it, the body itself is exercised.
            let mut framed = vec![VIEW_FORMAT];
            framed.extend(&bytes);
            let crc = crc32fast::hash(&framed);
            framed.extend(crc.to_le_bytes());
            if let Ok(view) = ClusterView::decode(&framed) {
                prop_assert_eq!(ClusterView::decode(&view.encode()), Ok(view));
            }
        }

        #[test]
        fn random_views_round_trip(ops in prop::collection::vec(arb_op(), 0..30)) {
            for view in run(&ops) {
                prop_assert_eq!(ClusterView::decode(&view.encode()), Ok(view));
            }
        }
    }
}

#[cfg(test)]
mod status_names {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            MemberStatus::Joining,
            MemberStatus::Up,
            MemberStatus::Leaving,
            MemberStatus::Down,
            MemberStatus::Removed,
        ] {
            assert_eq!(status.to_string().parse(), Ok(status));
        }
        assert_eq!(" UP ".parse(), Ok(MemberStatus::Up));
        assert!("gone".parse::<MemberStatus>().is_err());
    }
}
