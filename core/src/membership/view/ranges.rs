//! What delta gossip needs of a view: member ranges by a hash of their ids, the per-range sums
//! of entry hashes kept up to date by every change (what [`ClusterView::digest`] and gossip
//! summaries are made of), and the parts of a view a delta carries, merged one by one (see
//! [`crate::membership::handle_gossip`]).

use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Ordering;

use super::{
    check_count, compare_buckets, compare_members, compare_rings, count_missing, merge_maps,
    BucketProps, ClusterView, HashFlavor, MemberInfo, RingState, ViewError, MAX_BUCKETS,
    MAX_MEMBERS,
};
use crate::id::NodeId;

/// How many parts the members are split into by [`member_range_of`]'s hash, at each level of a
/// gossip summary: 2^6, so a summary of one range is 64 hashes.
pub const RANGE_FANOUT_BITS: u32 = 6;

/// The deepest level of member ranges a summary goes to; a range of this level is always sent
/// as its entries. Level 3 splits the members into 2^18 ranges.
pub const MAX_RANGE_LEVEL: u8 = 3;

pub(super) const PARTS: usize = 1 << RANGE_FANOUT_BITS;

/// The view's hashes in parts: per level-1 member range the (wrapping) sum of its entries'
/// hashes, the ring state's hash (0 without a ring) and the sum of the bucket entries' hashes.
/// Sums, so that one entry's change updates them in O(1) whatever the order of changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Hashes {
    pub(super) parts: [u64; PARTS],
    /// How many member entries each level-1 range holds: with `parts`, the summary of all
    /// members without a scan of them.
    pub(super) counts: [u32; PARTS],
    pub(super) ring: u64,
    pub(super) buckets: u64,
}

impl Hashes {
    pub(super) fn new() -> Hashes {
        Hashes {
            parts: [0; PARTS],
            counts: [0; PARTS],
            ring: 0,
            buckets: 0,
        }
    }
}

/// A set of members chosen by a hash of their ids: level `l` splits the 64-bit id hash
/// ([`member_range_of`]) into 2^(6l) ranges, and `prefix` is the top `6l` bits of the hashes
/// of the range's members. Level 0 is every member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberRange {
    /// 0 to [`MAX_RANGE_LEVEL`].
    pub level: u8,
    /// The top `6 * level` bits of the id hashes of the members in the range.
    pub prefix: u32,
}

impl MemberRange {
    /// Every member.
    pub const ALL: MemberRange = MemberRange {
        level: 0,
        prefix: 0,
    };

    /// Whether the range holds a member whose id hashes to `hash`. A range of a level beyond
    /// [`MAX_RANGE_LEVEL`] holds nothing.
    pub fn contains(&self, hash: u64) -> bool {
        match self.level {
            0 => true,
            level if level <= MAX_RANGE_LEVEL => {
                (hash >> (64 - RANGE_FANOUT_BITS * u32::from(level))) as u32 == self.prefix
            }
            _ => false,
        }
    }

    /// The range of `level` (at most [`MAX_RANGE_LEVEL`]) that holds the id hash `hash`.
    pub fn at(hash: u64, level: u8) -> MemberRange {
        let level = level.min(MAX_RANGE_LEVEL);
        let bits = RANGE_FANOUT_BITS * u32::from(level);
        MemberRange {
            level,
            prefix: if bits == 0 {
                0
            } else {
                (hash >> (64 - bits)) as u32
            },
        }
    }

    /// The `index`-th of the 64 ranges one level down.
    pub fn child(&self, index: usize) -> MemberRange {
        MemberRange {
            level: self.level + 1,
            prefix: (self.prefix << RANGE_FANOUT_BITS) | (index as u32 & (PARTS as u32 - 1)),
        }
    }

    /// Whether the range is valid: a level up to [`MAX_RANGE_LEVEL`] and a prefix of that
    /// many bits.
    pub fn is_valid(&self) -> bool {
        self.level <= MAX_RANGE_LEVEL
            && u64::from(self.prefix) < 1u64 << (RANGE_FANOUT_BITS * u32::from(self.level))
    }
}

/// The hash of a member id that places it in [`MemberRange`]s: FNV-1a, then a finalizer that
/// spreads it over all 64 bits. Not secret: ids an attacker chooses can only make one range
/// larger, and so a summary longer.
pub fn member_range_of(id: &NodeId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_str().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The finalizer of splitmix64.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The first 8 bytes of the MD5 of a value's canonical encoding.
pub(super) fn hash_of<T: Serialize + ?Sized>(value: &T) -> u64 {
    let hash = postcard::serialize_with_flavor(value, HashFlavor(Md5::new()))
        .unwrap_or_else(|_| Md5::new().finalize());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// A member entry's hash, summed into its range's.
pub(in crate::membership) fn entry_hash(member: &MemberInfo) -> u64 {
    hash_of(member)
}

pub(super) fn bucket_hash(name: &[u8], entry: &(u64, BucketProps)) -> u64 {
    hash_of(&(name, entry))
}

pub(super) fn part_of(id: &NodeId) -> usize {
    (member_range_of(id) >> (64 - RANGE_FANOUT_BITS)) as usize
}

impl ClusterView {
    /// Recomputes every hash from the entries.
    pub(super) fn rehash(&mut self) {
        let mut parts = [0u64; PARTS];
        let mut counts = [0u32; PARTS];
        for member in self.members.values() {
            let index = part_of(&member.id);
            parts[index] = parts[index].wrapping_add(entry_hash(member));
            counts[index] += 1;
        }
        self.hashes.parts = parts;
        self.hashes.counts = counts;
        self.rehash_ring();
        self.rehash_buckets();
    }

    pub(super) fn rehash_ring(&mut self) {
        self.hashes.ring = self.ring.as_ref().map_or(0, hash_of);
    }

    pub(super) fn rehash_buckets(&mut self) {
        self.hashes.buckets = self.buckets.iter().fold(0u64, |sum, (name, entry)| {
            sum.wrapping_add(bucket_hash(name, entry))
        });
    }

    /// Puts a member entry in place of the one of its id, keeping the hashes.
    pub(super) fn put_member(&mut self, info: impl Into<Arc<MemberInfo>>) {
        let info: Arc<MemberInfo> = info.into();
        let part = part_of(&info.id);
        let added = entry_hash(&info);
        let removed = match self.members.insert(info.id.clone(), info) {
            Some(old) => entry_hash(&old),
            None => {
                self.hashes.counts[part] += 1;
                0
            }
        };
        let sum = &mut self.hashes.parts[part];
        *sum = sum.wrapping_add(added).wrapping_sub(removed);
    }

    /// A fingerprint of the whole view: the first 8 bytes of the MD5 of the cluster name and the
    /// view's hashes in parts (each member range's sum of entry hashes, the ring state's hash,
    /// the bucket entries' sum; see [`ClusterView::range_hash`]). Equal views have equal
    /// digests, so gossip sends a digest first and more only when the digests differ. Kept up
    /// to date by every change, so it costs O(1) whatever the size of the view.
    pub fn digest(&self) -> u64 {
        hash_of(&(
            &self.cluster,
            &self.hashes.parts[..],
            self.hashes.ring,
            self.hashes.buckets,
        ))
    }

    /// The hash of the state of the ring (0 without a ring): equal ring states, transfers done
    /// included, have equal hashes.
    pub fn ring_hash(&self) -> u64 {
        self.hashes.ring
    }

    /// The sum of the hashes of the bucket entries (0 without any).
    pub fn buckets_hash(&self) -> u64 {
        self.hashes.buckets
    }

    /// The sum of the hashes of the member entries in `range` (0 for an empty range). O(1) for
    /// the levels 0 and 1; deeper, a scan of the members.
    pub fn range_hash(&self, range: MemberRange) -> u64 {
        match range.level {
            0 => self
                .hashes
                .parts
                .iter()
                .fold(0u64, |sum, part| sum.wrapping_add(*part)),
            1 => self
                .hashes
                .parts
                .get(range.prefix as usize)
                .copied()
                .unwrap_or(0),
            _ => self
                .members_in(range)
                .fold(0u64, |sum, m| sum.wrapping_add(entry_hash(m))),
        }
    }

    /// The hashes of the 64 ranges one level below `range` (see [`MemberRange::child`]), and
    /// how many members each holds.
    pub fn child_hashes(&self, range: MemberRange) -> ([u64; PARTS], [u32; PARTS]) {
        let mut hashes = [0u64; PARTS];
        let mut counts = [0u32; PARTS];
        if range.level >= MAX_RANGE_LEVEL {
            return (hashes, counts);
        }
        if range.level == 0 {
            // The children of the whole are the level-1 ranges, whose sums are kept.
            return (self.hashes.parts, self.hashes.counts);
        }
        let shift = 64 - RANGE_FANOUT_BITS * u32::from(range.level + 1);
        for member in self.members_in(range) {
            let child = (member_range_of(&member.id) >> shift) as usize & (PARTS - 1);
            hashes[child] = hashes[child].wrapping_add(entry_hash(member));
            counts[child] += 1;
        }
        (hashes, counts)
    }

    /// The member entries in `range`, in id order.
    pub fn members_in(&self, range: MemberRange) -> impl Iterator<Item = &Arc<MemberInfo>> {
        self.members
            .values()
            .filter(move |m| range.level == 0 || range.contains(member_range_of(&m.id)))
    }

    /// Merges member entries (of another view, or of a gossip delta) into this view, as
    /// [`ClusterView::merge`] does. Returns whether anything changed; nothing did on error.
    ///
    /// An entry taken is shared with `theirs` (an `Arc` clone), not copied.
    pub(in crate::membership) fn merge_members<'a>(
        &mut self,
        theirs: impl Iterator<Item = &'a Arc<MemberInfo>> + Clone,
    ) -> Result<bool, ViewError> {
        let missing = theirs
            .clone()
            .filter(|m| !self.members.contains_key(&m.id))
            .count();
        check_count("member count", self.members.len() + missing, MAX_MEMBERS)?;
        let mut changed = false;
        for their in theirs {
            let newer = match self.members.get(&their.id) {
                Some(our) => compare_members(their, our) == Ordering::Greater,
                None => true,
            };
            if newer {
                self.put_member(their.clone());
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Merges another ring state into this view's, as [`ClusterView::merge`] does. Every member
    /// of their ring must have an entry here (merge their members first).
    pub(in crate::membership) fn merge_ring(&mut self, theirs: Option<&RingState>) -> bool {
        let mut changed = false;
        if let Some(theirs) = theirs {
            let order = match &self.ring {
                Some(ours) => compare_rings(theirs, ours),
                None => Ordering::Greater,
            };
            match (order, &mut self.ring) {
                (Ordering::Greater, _) => {
                    // Their ring's members all have entries in `other`, hence now in `self` too.
                    self.ring = Some(theirs.clone());
                    changed = true;
                }
                // The same claim: transfers done are a grow-only set.
                (Ordering::Equal, Some(ours)) => {
                    for done in &theirs.transferred {
                        changed |= ours.transferred.insert(done.clone());
                    }
                }
                _ => {}
            }
        }
        if changed {
            self.rehash_ring();
        }
        changed
    }

    /// Merges bucket entries into this view's, as [`ClusterView::merge`] does.
    pub(in crate::membership) fn merge_buckets(
        &mut self,
        theirs: &BTreeMap<Vec<u8>, (u64, BucketProps)>,
    ) -> Result<bool, ViewError> {
        check_count(
            "bucket count",
            self.buckets.len() + count_missing(&self.buckets, theirs),
            MAX_BUCKETS,
        )?;
        let changed = merge_maps(&mut self.buckets, theirs, compare_buckets);
        if changed {
            self.rehash_buckets();
        }
        Ok(changed)
    }

    /// Checks that a ring state received alone (in a gossip delta) fits this view once
    /// `members` are merged: its claimant and members have entries, and its zones are within
    /// the limits. Errors: [`ViewError::Malformed`], [`ViewError::TooLarge`].
    pub(in crate::membership) fn check_ring_fits(
        &self,
        state: &RingState,
        members: &[Arc<MemberInfo>],
    ) -> Result<(), ViewError> {
        let extra: BTreeSet<&NodeId> = members.iter().map(|m| &m.id).collect();
        super::check_ring_members(state, |id| {
            self.members.contains_key(id) || extra.contains(id)
        })
    }

    /// The bucket entries, as [`ClusterView::merge_buckets`] takes them.
    pub(in crate::membership) fn bucket_entries(&self) -> &BTreeMap<Vec<u8>, (u64, BucketProps)> {
        &self.buckets
    }

    /// How many member entries the view holds, Removed ones included.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The `index`-th member entry in id order (O(index)).
    pub fn nth_member(&self, index: usize) -> Option<&MemberInfo> {
        self.members.values().nth(index).map(|m| &**m)
    }
}
