//! Placement: which nodes hold the replicas of a key.
//!
//! A key is hashed with MD5 to a 128-bit position ([`key_position`]). The position space is cut into
//! `Q` equal partitions (`Q` a power of two, [`RingConfig::partitions`]); storage, hand-off and
//! anti-entropy all group keys by partition ([`Ring::partition_of`]).
//!
//! Two strategies decide who owns what ([`Strategy`]):
//!
//! - [`Strategy::Partitions`] (Dynamo's strategy 3, the default): every partition is owned by one
//!   node, and nodes own numbers of partitions proportional to their capacity. A deterministic
//!   *claim* hands out the partitions: [`Ring::new`] claims from scratch, striping the nodes round the
//!   ring so that `target_n` consecutive partitions have distinct owners (and zones) wherever the
//!   membership allows; [`Ring::with_members`] starts from the previous assignment and moves the
//!   fewest partitions possible.
//! - [`Strategy::Tokens`] (the seed's placement, kept for comparison): every node is hashed to many
//!   pseudo-random tokens and owns the arc ending at each of them.
//!
//! Either way the replicas of a key are its *preference list*: walk clockwise from the key's
//! partition (or token) and collect distinct nodes, preferring nodes in zones not yet used.
//!
//! ## The zone-aware walk
//!
//! Walking clockwise from a position gives every member once, in order of first appearance (members
//! that own nothing come last, sorted by id): the *walk order*. A member without a zone counts as a
//! zone of its own. The *replica order* puts first the first member of each zone in walk order, then
//! the remaining members in walk order. The preference list for `n` is the first `n` members of the
//! replica order, so the list for `n` is always a prefix of the list for `n + 1`, and whenever the
//! members span at least `n` zones the list has `n` distinct zones (hence `n` distinct nodes).
//!
//! ```
//! use ringkv_core::ring::{key_position, Member, Ring, RingConfig};
//!
//! let members = vec![Member::new("a", 1), Member::new("b", 1), Member::new("c", 2)];
//! let ring = Ring::new(RingConfig::default(), members).expect("valid membership");
//! let replicas = ring.preference_list(key_position(b"users", b"alice"), 3);
//! assert_eq!(replicas.len(), 3);
//! ```

use alloc::borrow::Cow;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::id::NodeId;

mod balance;
mod claim;
mod legacy;
mod prefix;
mod zones;

pub(crate) use legacy::LegacyRing;

use claim::{claim, target_counts};
use prefix::prefix_lists;
use zones::zone_ids;

/// The partition count of [`RingConfig::default`].
pub const DEFAULT_PARTITIONS: u32 = 256;

/// The largest partition count a ring accepts (2^20).
pub const MAX_PARTITIONS: u32 = 1 << 20;

/// The largest `target_n` a ring accepts. Preference lists for up to `target_n` replicas are
/// precomputed per partition, so the bound keeps that table small.
pub const MAX_TARGET_N: usize = 16;

/// The largest number of tokens (summed over all members) the tokens strategy accepts.
pub const MAX_TOKENS: u64 = 1 << 21;

/// Marks "no member" in owner tables and the end of intrusive lists.
const NONE: u32 = u32::MAX;

/// 2^128 as a float: converts sums of arc lengths into fractions of the ring.
const TWO_POW_128: f64 = 340_282_366_920_938_463_463_374_607_431_768_211_456.0;

/// The position of a key on the ring: MD5 over (bucket length as u32 big-endian, bucket bytes, key
/// bytes), read as a big-endian `u128`.
///
/// The length prefix keeps bucket and key apart: bucket `"ab"` with key `"c"` and bucket `"a"` with
/// key `"bc"` land in unrelated places. A bucket longer than `u32::MAX` bytes hashes with the length
/// `u32::MAX` (no such bucket passes the request limits anyway).
pub fn key_position(bucket: &[u8], key: &[u8]) -> u128 {
    let length = u32::try_from(bucket.len()).unwrap_or(u32::MAX);
    let mut hasher = Md5::new();
    hasher.update(length.to_be_bytes());
    hasher.update(bucket);
    hasher.update(key);
    digest_to_u128(&hasher.finalize())
}

/// The position of a member's `index`-th token: MD5 over (node id bytes, index as u32 big-endian).
fn token_position(id: &NodeId, index: u32) -> u128 {
    let mut hasher = Md5::new();
    hasher.update(id.as_str().as_bytes());
    hasher.update(index.to_be_bytes());
    digest_to_u128(&hasher.finalize())
}

fn digest_to_u128(digest: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(digest);
    u128::from_be_bytes(bytes)
}

/// The Q-partition holding `position` in any ring of `partition_count` partitions (a power of
/// two), the same as [`Ring::partition_of`]: what a client needs to route a key with only a ring's
/// partition table.
pub fn partition_of(position: u128, partition_count: u32) -> PartitionId {
    let shift = 128 - partition_count.max(1).trailing_zeros();
    PartitionId(position.checked_shr(shift).unwrap_or(0) as u32)
}

/// The index of one of the ring's `Q` equal partitions, `0..Q`, clockwise from position 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

/// A node taking part in placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub id: NodeId,
    /// Relative weight: a member with capacity 2 owns twice the partitions of one with capacity 1.
    /// Must be at least 1.
    pub capacity: u32,
    /// The failure domain (rack, zone, data centre). Replicas of a key go to distinct zones where the
    /// membership allows. A member without a zone counts as a zone of its own.
    pub zone: Option<String>,
}

impl Member {
    /// A member with the given id and capacity, in no zone.
    pub fn new(id: impl Into<NodeId>, capacity: u32) -> Self {
        Member {
            id: id.into(),
            capacity,
            zone: None,
        }
    }

    /// The same member placed in `zone`.
    pub fn in_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// A member as an operator or a binding names it: the id and the zone are trimmed, an empty
    /// (or blank) zone is no zone, and a blank id is refused. Capacity is checked when a ring is
    /// built ([`RingError::ZeroCapacity`]).
    pub fn from_spec(id: &str, capacity: u32, zone: Option<&str>) -> Result<Member, RingError> {
        let id = id.trim();
        if id.is_empty() {
            return Err(RingError::EmptyMemberId);
        }
        let member = Member::new(id, capacity);
        Ok(match zone.map(str::trim).filter(|z| !z.is_empty()) {
            Some(zone) => member.in_zone(zone),
            None => member,
        })
    }
}

/// How partitions of the key space are given to members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Strategy {
    /// Dynamo strategy 3: Q equal partitions, each owned by one node, claimed in proportion to capacity.
    Partitions,
    /// The seed's strategy, kept for comparison: each node hashed to `tokens_per_capacity * capacity` random
    /// tokens (positions from MD5 of node id + token index, so deterministic), owning the arc up to each token.
    Tokens {
        /// Tokens per unit of capacity; at least 1.
        tokens_per_capacity: u32,
    },
}

/// Tokens per unit of capacity of the tokens strategy when a name alone selects it.
pub const DEFAULT_TOKENS_PER_CAPACITY: u32 = 16;

impl Strategy {
    /// `partitions` or `tokens`: the strategy's name, without its parameter.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Partitions => "partitions",
            Strategy::Tokens { .. } => "tokens",
        }
    }

    /// Tokens per unit of capacity for the tokens strategy, `None` for partitions.
    pub fn tokens_per_capacity(&self) -> Option<u32> {
        match self {
            Strategy::Partitions => None,
            Strategy::Tokens {
                tokens_per_capacity,
            } => Some(*tokens_per_capacity),
        }
    }

    /// The strategy named `name` (as [`FromStr`](core::str::FromStr) parses it), with
    /// `tokens_per_capacity` for the tokens strategy (ignored for partitions).
    pub fn named(name: &str, tokens_per_capacity: u32) -> Result<Strategy, StrategyError> {
        match name.parse::<Strategy>()? {
            Strategy::Tokens { .. } => Ok(Strategy::Tokens {
                tokens_per_capacity,
            }),
            partitions => Ok(partitions),
        }
    }
}

/// Writes the name only ([`Strategy::name`]); tokens per capacity is a parameter of its own.
impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy name that is neither `partitions` nor `tokens`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {0:?}: expected partitions or tokens")]
pub struct StrategyError(pub String);

impl core::str::FromStr for Strategy {
    type Err = StrategyError;

    /// Parses `partitions` or `tokens` (any case, surrounding spaces ignored); `tokens` has
    /// [`DEFAULT_TOKENS_PER_CAPACITY`] (see [`Strategy::named`] for another count).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "partitions" => Ok(Strategy::Partitions),
            "tokens" => Ok(Strategy::Tokens {
                tokens_per_capacity: DEFAULT_TOKENS_PER_CAPACITY,
            }),
            _ => Err(StrategyError(String::from(s))),
        }
    }
}

/// The parameters of a ring, fixed for the life of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingConfig {
    /// Q, the number of equal partitions: a power of two from 1 to [`MAX_PARTITIONS`].
    pub partitions: u32,
    /// How partitions (or arcs) are given to members.
    pub strategy: Strategy,
    /// The replica count the claim optimises for (any `target_n` consecutive partitions get distinct
    /// owners where possible) and for which preference lists are precomputed. From 1 to
    /// [`MAX_TARGET_N`]. Lists for larger `n` still work, computed on demand.
    pub target_n: usize,
    /// Replicas per zone (data centre), e.g. `{"dc1": 3, "dc2": 2}`: when not empty, every key's
    /// replicas are the first `n_z` members of each zone `z` met walking clockwise (see the
    /// [module docs](self)), and `target_n` must be their sum. Empty (the default): `target_n`
    /// replicas anywhere, zone-diverse where the zones allow.
    #[serde(default)]
    pub replicas_per_zone: BTreeMap<String, u32>,
}

impl Default for RingConfig {
    /// 256 partitions, [`Strategy::Partitions`], `target_n` 3.
    fn default() -> Self {
        RingConfig {
            partitions: DEFAULT_PARTITIONS,
            strategy: Strategy::Partitions,
            target_n: 3,
            replicas_per_zone: BTreeMap::new(),
        }
    }
}

/// Why a ring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The partition count is 0, not a power of two, or above [`MAX_PARTITIONS`]; no ring is built.
    #[error("partition count {partitions} is not a power of two between 1 and {max}", max = MAX_PARTITIONS)]
    InvalidPartitionCount {
        /// The rejected partition count.
        partitions: u32,
    },
    /// `target_n` is 0 or above [`MAX_TARGET_N`]; no ring is built.
    #[error("target_n {target_n} is not between 1 and {max}", max = MAX_TARGET_N)]
    InvalidTargetN {
        /// The rejected replica count.
        target_n: usize,
    },
    /// `replicas_per_zone` names a zone with 0 replicas or a blank zone, or its counts do not add
    /// up to `target_n`; no ring is built.
    #[error("replicas_per_zone: {reason}")]
    InvalidZoneReplicas {
        /// What is wrong.
        reason: String,
    },
    /// The tokens strategy has `tokens_per_capacity` 0, or the members would need more than
    /// [`MAX_TOKENS`] tokens in all; no ring is built.
    #[error(
        "tokens strategy with {tokens_per_capacity} tokens per capacity needs {tokens} tokens; \
         between 1 and {max} are allowed",
        max = MAX_TOKENS
    )]
    InvalidTokenCount {
        /// The configured tokens per unit of capacity.
        tokens_per_capacity: u32,
        /// The total number of tokens the members would have (saturating).
        tokens: u64,
    },
    /// The membership is empty; no ring is built.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// A member's id is empty or blank; no member (and so no ring) is built.
    #[error("a member's id is empty")]
    EmptyMemberId,
    /// A member has capacity 0; no ring is built.
    #[error("member {member} has capacity 0")]
    ZeroCapacity {
        /// The member with capacity 0 (the lowest such id).
        member: NodeId,
    },
    /// Two members share an id; no ring is built.
    #[error("member {member} appears more than once")]
    DuplicateMember {
        /// The repeated id (the lowest such id).
        member: NodeId,
    },
    /// The partitions strategy has more members than partitions; no ring is built.
    #[error("{members} members cannot share {partitions} partitions")]
    TooManyMembers {
        /// The number of members.
        members: usize,
        /// The partition count.
        partitions: u32,
    },
    /// A deserialized ring's assignment does not fit its members and configuration (members not
    /// sorted by id, wrong number of partitions, or an owner out of range); no ring is built.
    #[error("the serialized partition assignment does not match its members and configuration")]
    InvalidAssignment,
}

/// The placement of the key space on a membership: who owns each partition (or arc), and the
/// preference lists that follow.
///
/// A `Ring` is immutable; a membership change builds a new one with [`Ring::with_members`].
/// Serialization keeps the configuration, the members and (for the partitions strategy) the owner of
/// every partition; everything else is rebuilt, and deserialization validates it all.
///
/// The tables live behind an [`Arc`](alloc::sync::Arc): a ring is never changed once built, so the copies a node
/// keeps (its view's, its routing's) and the copies of every node of a simulated cluster that
/// took the same claimed ring share one allocation, and cloning a ring is O(1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RingRepr", into = "RingRepr")]
pub struct Ring(alloc::sync::Arc<tables::RingTables>);

mod tables {
    use super::*;

    /// The lookup tables of a [`Ring`].
    #[derive(Debug, PartialEq, Eq)]
    pub struct RingTables {
        pub(super) config: RingConfig,
        /// Sorted by id; every other table refers to members by index into this.
        pub(super) members: Vec<Member>,
        /// Zone index of each member; members without a zone get a zone of their own.
        pub(super) zones: Vec<u32>,
        pub(super) zone_count: usize,
        /// `128 - log2(Q)`: a position's partition is `position >> shift` (128 when Q is 1).
        pub(super) shift: u32,
        /// Tokens strategy: the sorted token positions. Segment `j` is the arc
        /// `(ends[j - 1], ends[j]]`, segment 0 wrapping round past the top of the ring. Empty for the
        /// partitions strategy, whose segments are the partitions.
        pub(super) token_ends: Vec<u128>,
        /// Owner (member index) of each segment: each partition, or each token's arc.
        pub(super) seg_owner: Vec<u32>,
        /// `min(target_n, members)`: the length of each precomputed preference list.
        pub(super) pref_len: usize,
        /// The precomputed preference list of each segment, `pref_len` member indices per segment.
        pub(super) prefs: Vec<u32>,
        /// Replicas per zone index ([`RingConfig::replicas_per_zone`]); empty for a ring that places
        /// replicas anywhere.
        pub(super) zone_quota: Vec<u32>,
        /// Members of each zone index.
        pub(super) zone_sizes: Vec<u32>,
        /// Members owning no segment, in index order.
        pub(super) unowned: Vec<u32>,
    }
}

impl core::ops::Deref for Ring {
    type Target = tables::RingTables;

    fn deref(&self) -> &tables::RingTables {
        &self.0
    }
}

/// What is serialized of a [`Ring`]: the rest is derived.
#[derive(Serialize, Deserialize)]
struct RingRepr {
    config: RingConfig,
    members: Vec<Member>,
    /// Partitions strategy: owner of each partition, as an index into `members`. Tokens: empty.
    assignment: Vec<u32>,
}

impl From<Ring> for RingRepr {
    fn from(ring: Ring) -> Self {
        let assignment = match ring.config.strategy {
            Strategy::Partitions => ring.seg_owner.clone(),
            Strategy::Tokens { .. } => Vec::new(),
        };
        RingRepr {
            config: ring.config.clone(),
            members: ring.members.clone(),
            assignment,
        }
    }
}

impl TryFrom<RingRepr> for Ring {
    type Error = RingError;

    fn try_from(repr: RingRepr) -> Result<Ring, RingError> {
        let members = validate(&repr.config, repr.members.clone())?;
        // The assignment refers to members by index, so the members must already be in the
        // canonical (sorted by id) order that `validate` produces.
        if members != repr.members {
            return Err(RingError::InvalidAssignment);
        }
        match repr.config.strategy {
            Strategy::Partitions => {
                let count = members.len();
                if repr.assignment.len() != repr.config.partitions as usize
                    || repr.assignment.iter().any(|&o| o as usize >= count)
                {
                    return Err(RingError::InvalidAssignment);
                }
                Ok(Ring::assemble(
                    repr.config,
                    members,
                    Vec::new(),
                    repr.assignment,
                ))
            }
            Strategy::Tokens { .. } => {
                if !repr.assignment.is_empty() {
                    return Err(RingError::InvalidAssignment);
                }
                Ok(Ring::build_tokens(repr.config, members))
            }
        }
    }
}

impl Ring {
    /// Builds the ring for a membership (in any order; it is sorted by id).
    ///
    /// Partitions strategy: the claim starts from nothing and stripes the members round the ring.
    /// **Balance bound:** with `Q` partitions and total capacity `C`, a member of capacity `c` owns
    /// `⌊Q·c/C⌋` or `⌈Q·c/C⌉` partitions, so strictly within one partition of its weighted share
    /// `Q·c/C`. (The target counts are the floors, plus one for the members with the largest
    /// remainders, ties to the lower id.) A member whose share is below one partition may own none;
    /// it still appears in extended preference lists.
    ///
    /// Any `target_n` consecutive partitions get distinct owners, and distinct zones when there are at
    /// least `target_n` zones, wherever the claim can arrange it; preference lists are distinct and
    /// zone-diverse regardless, by the zone-aware walk.
    ///
    /// Tokens strategy: every member gets `capacity * tokens_per_capacity` tokens.
    ///
    /// Deterministic: the same configuration and members always give the same ring.
    pub fn new(config: RingConfig, members: Vec<Member>) -> Result<Ring, RingError> {
        let members = validate(&config, members)?;
        match config.strategy {
            Strategy::Partitions => {
                let previous = vec![NONE; config.partitions as usize];
                Ok(Ring::build_partitions(config, members, previous))
            }
            Strategy::Tokens { .. } => Ok(Ring::build_tokens(config, members)),
        }
    }

    /// The ring for a new membership, claimed starting from this ring's assignment so that as few
    /// partitions as possible move (Partitions strategy). Deterministic: same inputs, same ring.
    ///
    /// Partitions of departed members are handed out again; a member above its new target count
    /// gives up exactly its surplus and nothing more; a member at or below its target keeps all it
    /// has. Every partition that moves goes from a departed or shrinking member to a growing one, so
    /// the number of partitions that change owner is the minimum: the departed members' partitions
    /// plus, over the staying members, `max(0, old count - new target)`. Capacity changes are
    /// membership changes like any other. The balance bound of [`Ring::new`] holds.
    ///
    /// Tokens strategy: the ring is rebuilt; a node's tokens depend only on its id and capacity, so
    /// only the arcs next to tokens that appear or disappear change hands.
    pub fn with_members(&self, members: Vec<Member>) -> Result<Ring, RingError> {
        let members = validate(&self.config, members)?;
        match self.config.strategy {
            Strategy::Partitions => {
                // Old member index -> new member index (NONE when the member left).
                let renumber: Vec<u32> = self
                    .members
                    .iter()
                    .map(|old| {
                        members
                            .binary_search_by(|m| m.id.cmp(&old.id))
                            .map_or(NONE, |i| i as u32)
                    })
                    .collect();
                let previous = self
                    .seg_owner
                    .iter()
                    .map(|&o| renumber[o as usize])
                    .collect();
                Ok(Ring::build_partitions(
                    self.config.clone(),
                    members,
                    previous,
                ))
            }
            Strategy::Tokens { .. } => Ok(Ring::build_tokens(self.config.clone(), members)),
        }
    }

    /// The ring's configuration.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this id, if it is one.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.member_index(id).map(|i| &self.members[i])
    }

    /// Q, the number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.config.partitions
    }

    /// Index of the Q-partition containing `position` (position >> (128 - log2 Q)); the same for both
    /// strategies, because storage and anti-entropy group keys by it.
    pub fn partition_of(&self, position: u128) -> PartitionId {
        PartitionId(self.partition_index(position) as u32)
    }

    /// The first position of a partition (`partition << (128 - log2 Q)`). Partition ids are taken
    /// modulo Q.
    pub fn partition_start(&self, partition: PartitionId) -> u128 {
        let index = u128::from(partition.0 & (self.config.partitions - 1));
        index.checked_shl(self.shift).unwrap_or(0)
    }

    /// Owner of a partition (Tokens strategy: the owner of the partition's first position).
    /// Partition ids are taken modulo Q.
    pub fn partition_owner(&self, partition: PartitionId) -> &NodeId {
        let owner = self.owner_at(self.partition_start(partition));
        &self.members[owner as usize].id
    }

    /// How many Q-partitions each member owns (Tokens strategy: by [`Ring::partition_owner`]).
    /// Every member is present, with 0 if it owns none.
    pub fn partition_counts(&self) -> BTreeMap<NodeId, u32> {
        let mut counts = vec![0u32; self.members.len()];
        for p in 0..self.config.partitions {
            counts[self.owner_at(self.partition_start(PartitionId(p))) as usize] += 1;
        }
        self.per_member(counts)
    }

    /// First `n` distinct nodes walking clockwise from `position`'s partition (or token), choosing
    /// nodes in not-yet-used zones first when zones allow; never the same node twice. Shorter than
    /// n only when the ring has fewer than n members.
    ///
    /// Precisely: the first `n` of the replica order described in the [module docs](self), so the
    /// list for `n` is a prefix of the list for any larger `n`. For `n` up to `target_n` the list is
    /// precomputed and this only clones the ids; larger `n` walk the ring.
    pub fn preference_list(&self, position: u128, n: usize) -> Vec<NodeId> {
        let segment = self.segment_of(position);
        let n = n.min(self.members.len());
        if n <= self.pref_len {
            let start = segment * self.pref_len;
            self.prefs[start..start + n]
                .iter()
                .map(|&i| self.members[i as usize].id.clone())
                .collect()
        } else {
            let walk = self.walk_order(segment);
            self.replica_order(&walk)[..n]
                .iter()
                .map(|&i| self.members[i as usize].id.clone())
                .collect()
        }
    }

    /// The preference list for `n` followed by every other member in walk order: the fallbacks a
    /// sloppy quorum uses. Always holds every member exactly once.
    pub fn extended_preference_list(&self, position: u128, n: usize) -> Vec<NodeId> {
        let walk = self.walk_order(self.segment_of(position));
        let order = self.replica_order(&walk);
        let n = n.min(order.len());
        let mut chosen = vec![false; self.members.len()];
        let mut list = Vec::with_capacity(self.members.len());
        for &i in &order[..n] {
            chosen[i as usize] = true;
            list.push(self.members[i as usize].id.clone());
        }
        for &i in &walk {
            if !chosen[i as usize] {
                list.push(self.members[i as usize].id.clone());
            }
        }
        list
    }

    /// Preference list of a whole partition (what `preference_list` gives for any key in it, for the
    /// Partitions strategy). Tokens strategy: the list of the partition's first position, as keys
    /// within one partition may have different lists. Partition ids are taken modulo Q.
    pub fn partition_preference_list(&self, partition: PartitionId, n: usize) -> Vec<NodeId> {
        self.preference_list(self.partition_start(partition), n)
    }

    fn build_partitions(config: RingConfig, members: Vec<Member>, previous: Vec<u32>) -> Ring {
        let (zones, zone_count) = zone_ids(&members);
        let targets = target_counts(config.partitions, &members);
        let assignment = claim(config.target_n, &zones, zone_count, &targets, previous);
        Ring::assemble(config, members, Vec::new(), assignment)
    }

    fn build_tokens(config: RingConfig, members: Vec<Member>) -> Ring {
        let per_capacity = match config.strategy {
            Strategy::Tokens {
                tokens_per_capacity,
            } => tokens_per_capacity,
            Strategy::Partitions => 0,
        };
        let mut tokens: Vec<(u128, u32)> = Vec::new();
        for (i, member) in members.iter().enumerate() {
            // `validate` bounded the total by MAX_TOKENS, so every index fits in a u32.
            let count = u64::from(member.capacity) * u64::from(per_capacity);
            for t in 0..count {
                tokens.push((token_position(&member.id, t as u32), i as u32));
            }
        }
        // Sorting whole tuples settles identical positions by member index: deterministic.
        tokens.sort_unstable();
        let (ends, owners) = tokens.into_iter().unzip();
        Ring::assemble(config, members, ends, owners)
    }

    /// Derives the lookup tables from an assignment of segments to members.
    fn assemble(
        config: RingConfig,
        members: Vec<Member>,
        token_ends: Vec<u128>,
        seg_owner: Vec<u32>,
    ) -> Ring {
        let (zones, zone_count) = zone_ids(&members);
        let pref_len = config.target_n.min(members.len());
        let zone_quota = if config.replicas_per_zone.is_empty() {
            Vec::new()
        } else {
            zones::quota_of(&members, &zones, zone_count, &config.replicas_per_zone)
        };
        let prefs = if zone_quota.is_empty() {
            prefix_lists(&seg_owner, &zones, zone_count, pref_len)
        } else {
            zones::per_zone_lists(&seg_owner, &zones, &zone_quota, pref_len)
        };
        let shift = 128 - config.partitions.trailing_zeros();
        let zone_sizes = zones::zone_sizes(&zones, zone_count);
        let unowned = zones::unowned(&seg_owner, members.len());
        Ring(alloc::sync::Arc::new(tables::RingTables {
            config,
            members,
            zones,
            zone_count,
            shift,
            token_ends,
            seg_owner,
            pref_len,
            prefs,
            zone_quota,
            zone_sizes,
            unowned,
        }))
    }

    // ----- lookups -----

    fn member_index(&self, id: &NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.id.cmp(id)).ok()
    }

    fn per_member<T>(&self, values: Vec<T>) -> BTreeMap<NodeId, T> {
        self.members
            .iter()
            .map(|m| m.id.clone())
            .zip(values)
            .collect()
    }

    fn partition_index(&self, position: u128) -> usize {
        position.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// The segment (partition, or token arc) holding `position`.
    fn segment_of(&self, position: u128) -> usize {
        if self.token_ends.is_empty() {
            self.partition_index(position)
        } else {
            // The first token at or after the position; past the last token, wrap to the first.
            let i = self.token_ends.partition_point(|&end| end < position);
            if i == self.token_ends.len() {
                0
            } else {
                i
            }
        }
    }

    fn owner_at(&self, position: u128) -> u32 {
        self.seg_owner[self.segment_of(position)]
    }

    /// The last position of segment `j` (segments are `(end[j-1], end[j]]`).
    fn segment_end(&self, j: usize) -> u128 {
        if self.token_ends.is_empty() {
            let low_bits = u128::MAX.checked_shr(128 - self.shift).unwrap_or(0);
            (j as u128).checked_shl(self.shift).unwrap_or(0) | low_bits
        } else {
            self.token_ends[j]
        }
    }

    fn arc(&self, j: usize) -> Arc {
        let count = self.seg_owner.len();
        if count == 1 {
            return Arc::Whole;
        }
        let previous = if j == 0 { count - 1 } else { j - 1 };
        Arc::Part(self.segment_end(j).wrapping_sub(self.segment_end(previous)))
    }

    /// Preference lists of length `k` for every segment: the precomputed table when it is long
    /// enough (its rows are then read as prefixes), else a freshly computed one. Returns the table
    /// and its row length.
    fn lists_for(&self, k: usize) -> (Cow<'_, [u32]>, usize) {
        if k <= self.pref_len {
            (Cow::Borrowed(&self.prefs[..]), self.pref_len)
        } else {
            let k = k.min(self.members.len());
            let table = if self.zone_quota.is_empty() {
                prefix_lists(&self.seg_owner, &self.zones, self.zone_count, k)
            } else {
                zones::per_zone_lists(&self.seg_owner, &self.zones, &self.zone_quota, k)
            };
            (Cow::Owned(table), k)
        }
    }

    /// Every member once, in order of first appearance walking clockwise from `segment`; members
    /// owning no segment last, by id.
    fn walk_order(&self, segment: usize) -> Vec<u32> {
        let count = self.members.len();
        let mut seen = vec![false; count];
        let mut walk = Vec::with_capacity(count);
        let segments = self.seg_owner.len();
        for step in 0..segments {
            if walk.len() == count {
                break;
            }
            let owner = self.seg_owner[(segment + step) % segments];
            if !seen[owner as usize] {
                seen[owner as usize] = true;
                walk.push(owner);
            }
        }
        for (i, seen) in seen.iter().enumerate() {
            if !seen {
                walk.push(i as u32);
            }
        }
        walk
    }

    /// The replica order for a walk order: the first member of each zone, then the rest, both in
    /// walk order. A ring with replicas per zone puts its per-zone picks first (in that order)
    /// and every other member after them, in walk order.
    fn replica_order(&self, walk: &[u32]) -> Vec<u32> {
        if self.zone_quota.is_empty() {
            return zones::zone_diverse(walk, &self.zones, self.zone_count);
        }
        let mut left = self.zone_quota.clone();
        let (mut picks, mut rest) = (Vec::new(), Vec::new());
        for &i in walk {
            let zone = self.zones[i as usize] as usize;
            if left[zone] > 0 {
                left[zone] -= 1;
                picks.push(i);
            } else {
                rest.push(i);
            }
        }
        let mut order = zones::zone_diverse(&picks, &self.zones, self.zone_count);
        order.extend(rest);
        order
    }
}

/// Checks a configuration and membership, and sorts the members by id.
fn validate(config: &RingConfig, mut members: Vec<Member>) -> Result<Vec<Member>, RingError> {
    let partitions = config.partitions;
    if partitions == 0 || !partitions.is_power_of_two() || partitions > MAX_PARTITIONS {
        return Err(RingError::InvalidPartitionCount { partitions });
    }
    if config.target_n == 0 || config.target_n > MAX_TARGET_N {
        return Err(RingError::InvalidTargetN {
            target_n: config.target_n,
        });
    }
    if !config.replicas_per_zone.is_empty() {
        zones::check_config(config)?;
    }
    if let Strategy::Tokens {
        tokens_per_capacity: 0,
    } = config.strategy
    {
        return Err(RingError::InvalidTokenCount {
            tokens_per_capacity: 0,
            tokens: 0,
        });
    }
    if members.is_empty() {
        return Err(RingError::NoMembers);
    }
    // Sort first, and check duplicates before capacities, so that the error does not depend on the
    // order the members came in.
    members.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = members.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(RingError::DuplicateMember {
            member: pair[0].id.clone(),
        });
    }
    if let Some(member) = members.iter().find(|m| m.capacity == 0) {
        return Err(RingError::ZeroCapacity {
            member: member.id.clone(),
        });
    }
    match config.strategy {
        Strategy::Partitions => {
            if members.len() > partitions as usize {
                return Err(RingError::TooManyMembers {
                    members: members.len(),
                    partitions,
                });
            }
        }
        Strategy::Tokens {
            tokens_per_capacity,
        } => {
            let tokens = members.iter().fold(0u64, |sum, m| {
                sum.saturating_add(u64::from(m.capacity) * u64::from(tokens_per_capacity))
            });
            if tokens > MAX_TOKENS {
                return Err(RingError::InvalidTokenCount {
                    tokens_per_capacity,
                    tokens,
                });
            }
        }
    }
    Ok(members)
}

// ----- exact arc arithmetic -----

/// The length of an arc of the ring: the whole ring (2^128, which no `u128` holds) or less.
#[derive(Clone, Copy)]
enum Arc {
    Whole,
    Part(u128),
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;
    use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just};
    use proptest::strategy::Strategy as PropStrategy;
    use proptest::test_runner::Config as ProptestConfig;
    use rand::seq::SliceRandom;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;
    use std::collections::BTreeSet;

    fn config(partitions: u32, target_n: usize) -> RingConfig {
        RingConfig {
            partitions,
            strategy: Strategy::Partitions,
            target_n,
            ..RingConfig::default()
        }
    }

    fn tokens_config(tokens_per_capacity: u32, target_n: usize) -> RingConfig {
        RingConfig {
            partitions: 256,
            strategy: Strategy::Tokens {
                tokens_per_capacity,
            },
            target_n,
            ..RingConfig::default()
        }
    }

    fn uniform(count: usize) -> Vec<Member> {
        (0..count)
            .map(|i| Member::new(format!("n{i:04}"), 1))
            .collect()
    }

    fn owners(ring: &Ring) -> Vec<NodeId> {
        (0..ring.partition_count())
            .map(|p| ring.partition_owner(PartitionId(p)).clone())
            .collect()
    }

    /// The failure domain of a member as the tests understand it: its zone, or itself.
    fn zone_key(ring: &Ring, id: &NodeId) -> String {
        match &ring.member(id).expect("a member").zone {
            Some(zone) => format!("zone {zone}"),
            None => format!("node {id}"),
        }
    }

    fn zone_count(ring: &Ring) -> usize {
        ring.members()
            .iter()
            .map(|m| zone_key(ring, &m.id))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Partitions whose window (itself and the next `n - 1`) repeats an owner, or a zone.
    fn window_conflicts(ring: &Ring, n: usize, by_zone: bool) -> usize {
        let owners = owners(ring);
        let q = owners.len();
        (0..q)
            .filter(|&p| {
                let keys: BTreeSet<String> = (0..n.min(q))
                    .map(|d| {
                        let id = &owners[(p + d) % q];
                        if by_zone {
                            zone_key(ring, id)
                        } else {
                            id.to_string()
                        }
                    })
                    .collect();
                keys.len() < n.min(q)
            })
            .count()
    }

    /// Target counts computed the slow way: hand out the leftover partitions one at a time to the
    /// largest remaining remainder, lowest id first.
    fn reference_targets(partitions: u32, members: &[Member]) -> BTreeMap<NodeId, u32> {
        let total: u64 = members.iter().map(|m| u64::from(m.capacity)).sum();
        let q = u64::from(partitions);
        let mut targets: BTreeMap<NodeId, u32> = members
            .iter()
            .map(|m| (m.id.clone(), (q * u64::from(m.capacity) / total) as u32))
            .collect();
        let mut leftover = partitions - targets.values().sum::<u32>();
        let mut bumped = BTreeSet::new();
        while leftover > 0 {
            let mut best: Option<(u64, &NodeId)> = None;
            for m in members {
                let remainder = q * u64::from(m.capacity) % total;
                if bumped.contains(&m.id) {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some((r, id)) => remainder > r || (remainder == r && m.id < *id),
                };
                if better {
                    best = Some((remainder, &m.id));
                }
            }
            let (_, id) = best.expect("fewer leftovers than members");
            bumped.insert(id.clone());
            *targets.get_mut(id).expect("a member") += 1;
            leftover -= 1;
        }
        targets
    }

    /// The preference list computed naively from the segment table: walk, then zones first.
    fn reference_list(ring: &Ring, position: u128, n: usize) -> Vec<NodeId> {
        let start = ring.segment_of(position);
        let segments = ring.seg_owner.len();
        let mut walk: Vec<NodeId> = Vec::new();
        for step in 0..segments {
            let id = &ring.members[ring.seg_owner[(start + step) % segments] as usize].id;
            if !walk.contains(id) {
                walk.push(id.clone());
            }
        }
        for m in ring.members() {
            if !walk.contains(&m.id) {
                walk.push(m.id.clone());
            }
        }
        let mut used = BTreeSet::new();
        let (mut first, mut rest) = (Vec::new(), Vec::new());
        for id in walk {
            if used.insert(zone_key(ring, &id)) {
                first.push(id);
            } else {
                rest.push(id);
            }
        }
        first.extend(rest);
        first.truncate(n);
        first
    }

    fn check_balance(ring: &Ring) {
        let counts = ring.partition_counts();
        let targets = reference_targets(ring.partition_count(), ring.members());
        assert_eq!(counts, targets, "counts are the largest-remainder targets");
        let total: u64 = ring.members().iter().map(|m| u64::from(m.capacity)).sum();
        for m in ring.members() {
            let share = f64::from(ring.partition_count()) * f64::from(m.capacity) / total as f64;
            let count = f64::from(counts[&m.id]);
            assert!(
                (count - share).abs() < 1.0,
                "{} owns {count}, share {share}",
                m.id
            );
        }
    }

    /// The minimum moved, or more only to remove repeats (`claim::tests::check_moves`); when exactly
    /// the minimum moved, every move went from a departed or shrinking member to a growing one.
    fn check_minimal(old: &Ring, new: &Ring) {
        let before = old.partition_counts();
        let after = new.partition_counts();
        let targets = reference_targets(new.partition_count(), new.members());
        let departed: u32 = before
            .iter()
            .filter(|(id, _)| new.member(id).is_none())
            .map(|(_, &c)| c)
            .sum();
        let shrinking: u32 = before
            .iter()
            .filter_map(|(id, &c)| targets.get(id).map(|&t| c.saturating_sub(t)))
            .sum();
        let least = (departed + shrinking) as usize;
        claim::tests::check_moves(old, new).expect("moves");
        if old.partitions_moved(new) > least {
            // The rebalance traded partitions between staying members to remove repeats.
            return;
        }
        let (was, now) = (owners(old), owners(new));
        for (from, to) in was.iter().zip(&now).filter(|(a, b)| a != b) {
            assert!(
                after.get(from).is_none_or(|&c| c < before[from]),
                "{from} gave up a partition"
            );
            assert!(
                before.get(to).is_none_or(|&c| c < after[to]),
                "{to} took a partition"
            );
        }
    }

    fn check_lists(ring: &Ring, position: u128) {
        let zones = zone_count(ring);
        let all: BTreeSet<NodeId> = ring.members().iter().map(|m| m.id.clone()).collect();
        let mut previous: Vec<NodeId> = Vec::new();
        for n in 0..=6 {
            let list = ring.preference_list(position, n);
            assert_eq!(list.len(), n.min(all.len()));
            let distinct: BTreeSet<_> = list.iter().cloned().collect();
            assert_eq!(distinct.len(), list.len(), "no node twice: {list:?}");
            if zones >= n {
                let distinct_zones: BTreeSet<_> =
                    list.iter().map(|id| zone_key(ring, id)).collect();
                assert_eq!(distinct_zones.len(), n, "distinct zones: {list:?}");
            }
            assert_eq!(
                list[..previous.len()],
                previous[..],
                "the list for n - 1 is a prefix"
            );
            assert_eq!(list, reference_list(ring, position, n));
            let extended = ring.extended_preference_list(position, n);
            assert_eq!(extended[..list.len()], list[..]);
            assert_eq!(extended.len(), all.len());
            assert_eq!(extended.iter().cloned().collect::<BTreeSet<_>>(), all);
            if ring.config().strategy == Strategy::Partitions {
                let partition = ring.partition_of(position);
                assert_eq!(ring.partition_preference_list(partition, n), list);
            }
            previous = list;
        }
    }

    fn check_fractions(ring: &Ring) {
        for n in 1..=4 {
            let load = ring.replica_load(n);
            assert_eq!(load.len(), ring.members().len());
            let sum: f64 = load.values().sum();
            assert!((sum - 1.0).abs() < 1e-9, "replica load sums to {sum}");
        }
        let ownership = ring.ownership();
        let sum: f64 = ownership.values().sum();
        assert!((sum - 1.0).abs() < 1e-9, "ownership sums to {sum}");
        if ring.config().strategy == Strategy::Partitions {
            let counts = ring.partition_counts();
            for (id, share) in &ownership {
                assert_eq!(
                    *share,
                    f64::from(counts[id]) / f64::from(ring.partition_count())
                );
            }
        }
    }

    #[test]
    fn key_position_known_answers() {
        // `printf '\x00\x00\x00\x00' | md5sum` and `printf '\x00\x00\x00\x05usersalice' | md5sum`.
        assert_eq!(key_position(b"", b""), 0xf1d3ff8443297732862df21dc4e57262);
        assert_eq!(
            key_position(b"users", b"alice"),
            0xbdefda3a9d458116671ce24c07b0267f
        );
        // And the token positions: `printf 'n1\x00\x00\x00\x00' | md5sum`.
        assert_eq!(
            token_position(&NodeId::new("n1"), 0),
            0x84a74340b6ac29e6e0e44cfa0e2c2066
        );
    }

    #[test]
    fn key_position_keeps_bucket_and_key_apart() {
        assert_ne!(key_position(b"ab", b"c"), key_position(b"a", b"bc"));
        assert_ne!(key_position(b"", b"abc"), key_position(b"abc", b""));
        assert_eq!(key_position(b"a", b"bc"), key_position(b"a", b"bc"));
    }

    #[test]
    fn default_config_is_strategy_three_with_256_partitions() {
        let config = RingConfig::default();
        assert_eq!(config.partitions, DEFAULT_PARTITIONS);
        assert_eq!(config.strategy, Strategy::Partitions);
        assert_eq!(config.target_n, 3);
    }

    #[test]
    fn every_error_is_reachable() {
        let one = || uniform(1);
        for partitions in [0, 3, 96, MAX_PARTITIONS * 2, u32::MAX] {
            assert_eq!(
                Ring::new(config(partitions, 3), one()),
                Err(RingError::InvalidPartitionCount { partitions })
            );
        }
        for target_n in [0, MAX_TARGET_N + 1] {
            assert_eq!(
                Ring::new(config(64, target_n), one()),
                Err(RingError::InvalidTargetN { target_n })
            );
        }
        assert_eq!(
            Ring::new(tokens_config(0, 3), one()),
            Err(RingError::InvalidTokenCount {
                tokens_per_capacity: 0,
                tokens: 0
            })
        );
        assert_eq!(
            Ring::new(tokens_config(1 << 20, 3), vec![Member::new("a", 4)]),
            Err(RingError::InvalidTokenCount {
                tokens_per_capacity: 1 << 20,
                tokens: 1 << 22
            })
        );
        assert_eq!(
            Ring::new(tokens_config(u32::MAX, 3), vec![Member::new("a", u32::MAX)]),
            Err(RingError::InvalidTokenCount {
                tokens_per_capacity: u32::MAX,
                tokens: u64::from(u32::MAX) * u64::from(u32::MAX)
            })
        );
        assert_eq!(
            Ring::new(config(64, 3), Vec::new()),
            Err(RingError::NoMembers)
        );
        let zero = vec![Member::new("b", 1), Member::new("a", 0)];
        assert_eq!(
            Ring::new(config(64, 3), zero),
            Err(RingError::ZeroCapacity {
                member: NodeId::new("a")
            })
        );
        let twice = vec![
            Member::new("a", 1),
            Member::new("b", 1),
            Member::new("a", 2),
        ];
        assert_eq!(
            Ring::new(config(64, 3), twice),
            Err(RingError::DuplicateMember {
                member: NodeId::new("a")
            })
        );
        assert_eq!(
            Ring::new(config(4, 3), uniform(5)),
            Err(RingError::TooManyMembers {
                members: 5,
                partitions: 4
            })
        );
        // A membership change is checked the same way, and leaves the old ring usable.
        let ring = Ring::new(config(4, 3), uniform(4)).expect("valid");
        assert_eq!(
            ring.with_members(uniform(5)),
            Err(RingError::TooManyMembers {
                members: 5,
                partitions: 4
            })
        );
        assert_eq!(ring.with_members(Vec::new()), Err(RingError::NoMembers));
        // Messages render (they go into logs and client errors).
        assert!(RingError::NoMembers
            .to_string()
            .contains("at least one member"));
        assert!(RingError::InvalidAssignment
            .to_string()
            .contains("assignment"));
    }

    #[test]
    fn serialization_round_trips_and_is_validated() {
        let zoned: Vec<Member> = (0..6)
            .map(|i| Member::new(format!("m{i}"), 1 + i % 3).in_zone(format!("z{}", i % 2)))
            .collect();
        for config in [config(64, 3), tokens_config(8, 2)] {
            let ring = Ring::new(config, zoned.clone()).expect("valid");
            let bytes = postcard::to_allocvec(&ring).expect("serializes");
            let back: Ring = postcard::from_bytes(&bytes).expect("deserializes");
            assert_eq!(back, ring);
        }
        let encode = |repr: &RingRepr| postcard::to_allocvec(repr).expect("serializes");
        let good = RingRepr {
            config: config(4, 2),
            members: uniform(2),
            assignment: vec![0, 1, 0, 1],
        };
        let ring: Ring = postcard::from_bytes(&encode(&good)).expect("valid");
        assert_eq!(ring.partition_owner(PartitionId(1)).as_str(), "n0001");
        let bad = [
            RingRepr {
                assignment: vec![0, 1, 2, 1],
                ..good.clone_repr()
            },
            RingRepr {
                assignment: vec![0, 1, 0],
                ..good.clone_repr()
            },
            RingRepr {
                members: uniform(2).into_iter().rev().collect(),
                ..good.clone_repr()
            },
            RingRepr {
                config: tokens_config(2, 2),
                ..good.clone_repr()
            },
        ];
        for repr in bad {
            assert!(postcard::from_bytes::<Ring>(&encode(&repr)).is_err());
            assert_eq!(Ring::try_from(repr), Err(RingError::InvalidAssignment));
        }
        let invalid_config = RingRepr {
            config: config(3, 2),
            ..good.clone_repr()
        };
        assert_eq!(
            Ring::try_from(invalid_config),
            Err(RingError::InvalidPartitionCount { partitions: 3 })
        );
    }

    impl RingRepr {
        fn clone_repr(&self) -> RingRepr {
            RingRepr {
                config: self.config.clone(),
                members: self.members.clone(),
                assignment: self.assignment.clone(),
            }
        }
    }

    #[test]
    fn partitions_cut_the_ring_evenly() {
        let ring = Ring::new(config(256, 3), uniform(3)).expect("valid");
        assert_eq!(ring.partition_of(0), PartitionId(0));
        assert_eq!(ring.partition_of(u128::MAX), PartitionId(255));
        assert_eq!(ring.partition_of(1 << 120), PartitionId(1));
        assert_eq!(ring.partition_of((1 << 120) - 1), PartitionId(0));
        assert_eq!(ring.partition_start(PartitionId(1)), 1 << 120);
        // Out-of-range ids wrap instead of panicking.
        assert_eq!(ring.partition_start(PartitionId(257)), 1 << 120);
        let _ = ring.partition_owner(PartitionId(u32::MAX));
        // One partition: everything is partition 0.
        let single = Ring::new(config(1, 3), uniform(1)).expect("valid");
        assert_eq!(single.partition_of(u128::MAX), PartitionId(0));
        assert_eq!(single.partition_start(PartitionId(5)), 0);
        assert_eq!(single.preference_list(42, 3), vec![NodeId::new("n0000")]);
        assert_eq!(single.ownership()[&NodeId::new("n0000")], 1.0);
        assert_eq!(single.moved_fraction(&single, 3), 0.0);
        // The largest ring.
        let big = Ring::new(config(MAX_PARTITIONS, 1), uniform(2)).expect("valid");
        assert_eq!(big.partition_of(u128::MAX), PartitionId(MAX_PARTITIONS - 1));
        check_balance(&big);
    }

    #[test]
    fn fresh_rings_stripe_owners() {
        for count in [4usize, 5, 7, 16, 100] {
            let ring = Ring::new(config(256, 3), uniform(count)).expect("valid");
            assert_eq!(window_conflicts(&ring, 3, false), 0, "{count} nodes");
            check_balance(&ring);
        }
        // Weighted members stripe too.
        let weighted: Vec<Member> = (0..20)
            .map(|i| Member::new(format!("w{i:02}"), 1 + (i % 5) as u32))
            .collect();
        let ring = Ring::new(config(1024, 3), weighted).expect("valid");
        assert_eq!(window_conflicts(&ring, 3, false), 0);
        // With no conflicts, replica load is exactly the partition share.
        let ring = Ring::new(config(256, 3), uniform(16)).expect("valid");
        for load in ring.replica_load(3).values() {
            assert_eq!(*load, 1.0 / 16.0);
        }
    }

    #[test]
    fn fresh_rings_stripe_zones() {
        let zoned: Vec<Member> = (0..12)
            .map(|i| Member::new(format!("z{i:02}"), 1).in_zone(format!("zone{}", i % 4)))
            .collect();
        let ring = Ring::new(config(256, 3), zoned).expect("valid");
        assert_eq!(window_conflicts(&ring, 3, true), 0);
    }

    #[test]
    fn growing_one_node_at_a_time_converges_to_a_stripe() {
        let mut ring = Ring::new(config(256, 3), uniform(1)).expect("valid");
        for count in 2..=20 {
            let next = ring.with_members(uniform(count)).expect("valid");
            check_balance(&next);
            check_minimal(&ring, &next);
            // Two nodes cannot make distinct triples, and three cannot tile 256 partitions; the
            // minimal moves from there repair the layout by the fifth node.
            if count >= 5 {
                assert_eq!(window_conflicts(&next, 3, false), 0, "{count} nodes");
            }
            ring = next;
        }
    }

    #[test]
    fn a_thousand_nodes() {
        let ring = Ring::new(config(4096, 3), uniform(1000)).expect("valid");
        check_balance(&ring);
        assert_eq!(window_conflicts(&ring, 3, false), 0);
        let joined = ring.with_members(uniform(1001)).expect("valid");
        check_minimal(&ring, &joined);
        assert_eq!(window_conflicts(&joined, 3, false), 0);
        let replaced: Vec<Member> = uniform(1000)
            .into_iter()
            .step_by(2)
            .chain((0..500).map(|i| Member::new(format!("x{i:03}"), 2)))
            .collect();
        let replaced = ring.with_members(replaced).expect("valid");
        check_balance(&replaced);
        check_minimal(&ring, &replaced);
        check_lists(&replaced, key_position(b"b", b"k"));
    }

    #[test]
    fn a_member_with_a_tiny_share_owns_nothing_but_is_a_fallback() {
        let members = vec![Member::new("big", 1000), Member::new("small", 1)];
        let ring = Ring::new(config(64, 2), members).expect("valid");
        assert_eq!(ring.partition_counts()[&NodeId::new("small")], 0);
        assert_eq!(ring.ownership()[&NodeId::new("small")], 0.0);
        // It is still the second distinct node of every walk.
        let list = ring.preference_list(7, 2);
        assert_eq!(list, vec![NodeId::new("big"), NodeId::new("small")]);
        check_lists(&ring, 7);
        // And a zone of its own counts: its zone is used before a second node of a used zone.
        let members = vec![
            Member::new("a", 1000).in_zone("east"),
            Member::new("b", 1000).in_zone("east"),
            Member::new("c", 1).in_zone("west"),
        ];
        let ring = Ring::new(config(64, 2), members).expect("valid");
        let list = ring.preference_list(0, 2);
        assert_eq!(list[1], NodeId::new("c"));
    }

    #[test]
    fn lists_are_short_only_when_members_are_few() {
        let ring = Ring::new(config(64, 3), uniform(2)).expect("valid");
        assert_eq!(ring.preference_list(0, 3).len(), 2);
        assert_eq!(ring.preference_list(0, 0), Vec::<NodeId>::new());
        assert_eq!(ring.extended_preference_list(0, 1).len(), 2);
        assert_eq!(ring.replica_load(0).values().sum::<f64>(), 0.0);
        check_lists(&ring, u128::MAX);
    }

    #[test]
    fn tokens_own_the_arc_up_to_them() {
        let members = vec![
            Member::new("a", 1),
            Member::new("b", 2),
            Member::new("c", 1),
        ];
        let ring = Ring::new(tokens_config(4, 3), members.clone()).expect("valid");
        let mut tokens: Vec<(u128, String)> = Vec::new();
        for m in &members {
            for i in 0..m.capacity * 4 {
                let mut hasher = Md5::new();
                hasher.update(m.id.as_str().as_bytes());
                hasher.update(i.to_be_bytes());
                let digest: [u8; 16] = hasher.finalize().into();
                tokens.push((u128::from_be_bytes(digest), m.id.to_string()));
            }
        }
        tokens.sort();
        let owner_of = |position: u128| {
            tokens
                .iter()
                .find(|(t, _)| *t >= position)
                .unwrap_or(&tokens[0])
                .1
                .clone()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut positions: Vec<u128> = (0..200).map(|_| rand::Rng::gen(&mut rng)).collect();
        positions.extend(
            tokens
                .iter()
                .flat_map(|(t, _)| [*t, t.wrapping_add(1), t.wrapping_sub(1)]),
        );
        positions.extend([0, u128::MAX]);
        for position in positions {
            assert_eq!(
                ring.preference_list(position, 1)[0].as_str(),
                owner_of(position)
            );
            check_lists(&ring, position);
        }
        check_fractions(&ring);
        // Membership changes just rebuild.
        let fewer = ring.with_members(members[..2].to_vec()).expect("valid");
        assert_eq!(
            fewer,
            Ring::new(tokens_config(4, 3), members[..2].to_vec()).expect("valid")
        );
        // Only arcs next to the departed node's tokens change hands.
        assert!(
            (ring.owner_moved_fraction(&fewer) - ring.ownership()[&NodeId::new("c")]).abs() < 1e-12
        );
    }

    #[test]
    fn partitions_balance_better_than_tokens() {
        let members: Vec<Member> = (0..16)
            .map(|i| Member::new(format!("n{i:02}"), 1 + i % 4))
            .collect();
        let total: u32 = members.iter().map(|m| m.capacity).sum();
        let worst = |ring: &Ring| {
            let ownership = ring.ownership();
            members
                .iter()
                .map(|m| (ownership[&m.id] - f64::from(m.capacity) / f64::from(total)).abs())
                .fold(0.0f64, f64::max)
        };
        let partitions = Ring::new(config(256, 3), members.clone()).expect("valid");
        let tokens = Ring::new(tokens_config(16, 3), members.clone()).expect("valid");
        assert!(worst(&partitions) <= 1.0 / 256.0);
        assert!(
            worst(&partitions) < worst(&tokens),
            "partitions {} tokens {}",
            worst(&partitions),
            worst(&tokens)
        );
    }

    #[test]
    fn moved_fraction_is_exact() {
        let ring = Ring::new(config(256, 3), uniform(8)).expect("valid");
        assert_eq!(ring.moved_fraction(&ring, 3), 0.0);
        let joined = ring.with_members(uniform(9)).expect("valid");
        let moved = ring.partitions_moved(&joined);
        assert_eq!(ring.owner_moved_fraction(&joined), moved as f64 / 256.0);
        let replicas = ring.moved_fraction(&joined, 3);
        assert!(replicas >= ring.owner_moved_fraction(&joined) && replicas <= 1.0);
        // A replica set changes for the moved partition and the n - 1 before it, at most.
        assert!(replicas <= 3.0 * moved as f64 / 256.0);
        // Symmetric, and comparable across strategies and partition counts.
        assert_eq!(joined.moved_fraction(&ring, 3), replicas);
        let tokens = Ring::new(tokens_config(8, 3), uniform(8)).expect("valid");
        let across = ring.moved_fraction(&tokens, 1);
        assert!(across > 0.0 && across < 1.0);
        assert_eq!(tokens.moved_fraction(&ring, 1), across);
        let other_q = Ring::new(config(64, 3), uniform(8)).expect("valid");
        assert!(ring.moved_fraction(&other_q, 2) <= 1.0);
        // Disjoint memberships move everything; n beyond target_n works too.
        let strangers: Vec<Member> = (0..8).map(|i| Member::new(format!("s{i}"), 1)).collect();
        let strangers = Ring::new(config(256, 3), strangers).expect("valid");
        assert_eq!(ring.moved_fraction(&strangers, 5), 1.0);
        assert_eq!(ring.moved_fraction(&ring, 5), 0.0);
        assert_eq!(ring.moved_fraction(&joined, 0), 0.0);
    }

    #[test]
    fn fallbacks_continue_the_walk() {
        let ring = Ring::new(config(64, 3), uniform(6)).expect("valid");
        let position = ring.partition_start(PartitionId(10));
        let extended = ring.extended_preference_list(position, 2);
        let walk: Vec<NodeId> = (10..10 + 64)
            .map(|p| ring.partition_owner(PartitionId(p % 64)).clone())
            .fold(Vec::new(), |mut walk, id| {
                if !walk.contains(&id) {
                    walk.push(id);
                }
                walk
            });
        assert_eq!(extended, walk);
    }

    fn arb_members(max: usize) -> impl PropStrategy<Value = Vec<Member>> {
        (1..=max, prop::option::of(1usize..=5)).prop_flat_map(|(count, zones)| {
            prop::collection::vec((1u32..=8, 0usize..5), count).prop_map(move |specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (capacity, zone))| {
                        let member = Member::new(format!("n{i}"), capacity);
                        match zones {
                            Some(zones) => member.in_zone(format!("z{}", zone % zones)),
                            None => member,
                        }
                    })
                    .collect()
            })
        })
    }

    #[derive(Clone, Debug)]
    enum Change {
        Join { capacity: u32, zone: usize },
        Leave(usize),
        Resize(usize, u32),
    }

    fn arb_change() -> impl PropStrategy<Value = Change> {
        prop_oneof![
            (1u32..=8, 0usize..5).prop_map(|(capacity, zone)| Change::Join { capacity, zone }),
            any::<usize>().prop_map(Change::Leave),
            (any::<usize>(), 1u32..=8).prop_map(|(i, c)| Change::Resize(i, c)),
        ]
    }

    fn apply(members: &mut Vec<Member>, change: &Change, step: usize) {
        let zoned = members[0].zone.is_some();
        match *change {
            Change::Join { capacity, zone } => {
                let member = Member::new(format!("j{step}"), capacity);
                members.push(if zoned {
                    member.in_zone(format!("z{zone}"))
                } else {
                    member
                });
            }
            Change::Leave(i) if members.len() > 1 => {
                members.remove(i % members.len());
            }
            Change::Leave(_) => {}
            Change::Resize(i, capacity) => {
                let len = members.len();
                members[i % len].capacity = capacity;
            }
        }
    }

    fn shuffled(members: &[Member], seed: u64) -> Vec<Member> {
        let mut members = members.to_vec();
        members.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        members
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn claims_are_balanced_minimal_and_deterministic(
            partitions in prop::sample::select(vec![64u32, 256, 1024]),
            target_n in 1usize..=4,
            members in arb_members(40),
            changes in prop::collection::vec(arb_change(), 1..6),
            seed in any::<u64>(),
        ) {
            let config = config(partitions, target_n);
            let mut ring = Ring::new(config.clone(), members.clone()).expect("valid");
            check_balance(&ring);
            prop_assert_eq!(&Ring::new(config.clone(), shuffled(&members, seed)).expect("valid"), &ring);
            let mut members = members;
            for (step, change) in changes.iter().enumerate() {
                apply(&mut members, change, step);
                let next = ring.with_members(members.clone()).expect("valid");
                check_balance(&next);
                check_minimal(&ring, &next);
                let again = ring.with_members(shuffled(&members, seed ^ step as u64)).expect("valid");
                prop_assert_eq!(&again, &next);
                ring = next;
            }
        }

        #[test]
        fn preference_lists_are_distinct_zone_diverse_and_consistent(
            tokens in any::<bool>(),
            partitions in prop::sample::select(vec![64u32, 256, 1024]),
            target_n in 1usize..=5,
            members in arb_members(40),
            change in arb_change(),
            positions in prop::collection::vec(any::<u128>(), 8),
        ) {
            let config = if tokens {
                RingConfig { partitions, ..tokens_config(4, target_n) }
            } else {
                config(partitions, target_n)
            };
            let ring = Ring::new(config.clone(), members.clone()).expect("valid");
            prop_assert_eq!(&Ring::new(config, shuffled(&members, 1)).expect("valid"), &ring);
            let mut changed = members;
            apply(&mut changed, &change, 0);
            let next = ring.with_members(changed).expect("valid");
            for ring in [&ring, &next] {
                check_fractions(ring);
                for &position in &positions {
                    check_lists(ring, position);
                }
                let edges = [0, u128::MAX, ring.partition_start(ring.partition_of(positions[0]))];
                for position in edges {
                    check_lists(ring, position);
                }
            }
            let moved = ring.moved_fraction(&next, target_n);
            prop_assert!((0.0..=1.0).contains(&moved));
            // (A changed first owner need not change the replica set: the order may just rotate.)
            prop_assert!((0.0..=1.0).contains(&ring.owner_moved_fraction(&next)));
        }
    }

    fn arb_config() -> impl PropStrategy<Value = RingConfig> {
        let partitions =
            prop::sample::select(vec![0u32, 1, 2, 3, 4, 8, 64, 100, 256, 1 << 21, u32::MAX]);
        let strategy = prop_oneof![
            Just(Strategy::Partitions),
            prop::sample::select(vec![0u32, 1, 3, 50, u32::MAX]).prop_map(|tokens_per_capacity| {
                Strategy::Tokens {
                    tokens_per_capacity,
                }
            }),
        ];
        (partitions, strategy, 0usize..20).prop_map(|(partitions, strategy, target_n)| RingConfig {
            partitions,
            strategy,
            target_n,
            ..RingConfig::default()
        })
    }

    fn arb_any_members() -> impl PropStrategy<Value = Vec<Member>> {
        let capacity = prop_oneof![0u32..4, Just(u32::MAX)];
        prop::collection::vec((0usize..12, capacity, prop::option::of(0usize..3)), 0..12).prop_map(
            |specs| {
                specs
                    .into_iter()
                    .map(|(id, capacity, zone)| Member {
                        id: NodeId::new(format!("m{id}")),
                        capacity,
                        zone: zone.map(|z| format!("z{z}")),
                    })
                    .collect()
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn free_partition_of_agrees_with_the_ring(
            config in arb_config(),
            members in arb_any_members(),
            position in any::<u128>(),
        ) {
            if let Ok(ring) = Ring::new(config, members) {
                prop_assert_eq!(
                    partition_of(position, ring.partition_count()),
                    ring.partition_of(position)
                );
            }
        }

        #[test]
        fn arbitrary_input_never_panics(
            config in arb_config(),
            members in arb_any_members(),
            later in arb_any_members(),
            position in any::<u128>(),
            n in 0usize..20,
        ) {
            if let Ok(ring) = Ring::new(config, members) {
                let _ = ring.preference_list(position, n);
                let _ = ring.extended_preference_list(position, n);
                let _ = ring.partition_preference_list(PartitionId(position as u32), n);
                let _ = ring.partition_owner(PartitionId(position as u32));
                let _ = ring.replica_load(n);
                let _ = ring.ownership();
                let _ = ring.partition_counts();
                if let Ok(next) = ring.with_members(later) {
                    prop_assert!(next.moved_fraction(&ring, n) <= 1.0);
                    let _ = next.partitions_moved(&ring);
                }
            }
        }
    }
}

#[cfg(test)]
mod vocabulary_tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn strategies_parse_and_display_their_names() {
        assert_eq!("partitions".parse(), Ok(Strategy::Partitions));
        assert_eq!(
            " Tokens".parse(),
            Ok(Strategy::Tokens {
                tokens_per_capacity: DEFAULT_TOKENS_PER_CAPACITY
            })
        );
        assert_eq!(
            Strategy::named("tokens", 4),
            Ok(Strategy::Tokens {
                tokens_per_capacity: 4
            })
        );
        assert_eq!(Strategy::named("partitions", 4), Ok(Strategy::Partitions));
        assert!("vnodes".parse::<Strategy>().is_err());
        let tokens = Strategy::named("tokens", 4).unwrap();
        assert_eq!(
            (tokens.to_string().as_str(), tokens.tokens_per_capacity()),
            ("tokens", Some(4))
        );
        assert_eq!(Strategy::Partitions.tokens_per_capacity(), None);
    }

    #[test]
    fn member_specs_are_trimmed_and_blank_ids_refused() {
        let m = Member::from_spec(" n1 ", 2, Some(" z1 ")).unwrap();
        assert_eq!(
            (m.id.as_str(), m.capacity, m.zone.as_deref()),
            ("n1", 2, Some("z1"))
        );
        assert_eq!(Member::from_spec("n1", 1, Some("  ")).unwrap().zone, None);
        assert_eq!(
            Member::from_spec("  ", 1, None),
            Err(RingError::EmptyMemberId)
        );
    }
}
