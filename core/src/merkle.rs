//! Merkle trees for anti-entropy: one tree per partition replica, and the exchange that finds the
//! keys two replicas disagree on.
//!
//! # The tree
//!
//! A [`MerkleTree`] has a fixed shape, [`MerkleConfig`]: `fanout` children per inner node and
//! `depth` levels of inner nodes above `fanout^depth` leaf *segments* (16 and 3 by default: 4096
//! segments). A key's segment is taken from its ring position ([`key_position`]): the top
//! `depth * log2(fanout)` bits of the position's low 64 bits. Partitions are cut from the top bits
//! of the position, so the low half spreads one partition's keys evenly over the segments.
//!
//! Each key holds a 64-bit digest of its stored object ([`object_digest`]). A leaf's hash is the
//! wrapping sum of a 64-bit hash of every `(key, digest)` pair in it, so a write is incremental:
//! subtract the old pair's hash, add the new one. An inner node's hash is a non-linear fold of its
//! children's hashes, recomputed lazily: a write only marks the path above its segment dirty (and
//! stops at the first node already dirty, so it is O(1) amortized), and [`MerkleTree::root`] or
//! [`MerkleTree::children`] recompute just the dirty nodes they need. For a fixed key the pair
//! hash is a bijection of the digest, and the fold is a bijection of each child, so changing one
//! key always changes the root; several changes cancel out only with probability about 2^-64.
//!
//! Each segment also keeps its keys and digests in a `BTreeMap`, so that an exchange can list
//! them ([`MerkleTree::segment`]). That costs memory, on the order of 120 bytes per key plus the
//! bucket and key bytes, and it is the reason the trees are not persisted: a node rebuilds them by
//! scanning its store when it starts (or on demand), then keeps them current on every write.
//!
//! # The exchange
//!
//! Two replicas of a partition compare their trees top-down over plain serde messages. One side
//! runs an [`Exchange`] against its own tree and sends each [`ExchangeRequest`] it produces; the
//! other answers with [`MerkleTree::answer`]. The initiator compares the hashes it gets back with
//! its own, descends only into the children that differ, asks for the segments under differing
//! bottom nodes, and ends with exactly the keys whose digests differ or that only one side holds
//! ([`ExchangeOutcome::differing`]). No request names more than `max_items` nodes or segments, so
//! the work per message is bounded; a node paces exchanges to keep anti-entropy at a bounded rate.
//!
//! Writes keep arriving while an exchange runs. That is harmless: the exchange always terminates
//! (it only ever moves down the tree), a key written meanwhile may be reported as differing, and a
//! key that came to differ after its branch was compared is found by the next exchange. Repairs
//! are merges, which are idempotent, so a spurious repair only costs a read.
//!
//! # How a node uses it
//!
//! ```
//! use ringkv_core::merkle::{object_digest, Exchange, ExchangeStep, MerkleConfig, MerkleTree};
//! use ringkv_core::version::{ActorId, ConflictMode, Content, Object, VersionVector};
//!
//! // One tree per partition replica; both replicas of a partition use the same config.
//! let mut local = MerkleTree::new(MerkleConfig::default()).expect("the default config is valid");
//! let mut remote = local.clone();
//!
//! // Every write applied to the store updates the tree with the stored object's digest.
//! let mut object = Object::new();
//! let actor = ActorId::new("n1.1");
//! let value = Content::Value(b"v".to_vec());
//! object.update(&VersionVector::new(), &actor, value, 10, ConflictMode::Siblings);
//! local.update(b"users", b"alice", Some(object_digest(&object)));
//!
//! // Anti-entropy: `local` asks, `remote` answers. In a cluster each request and response
//! // travels in a peer message.
//! let (mut exchange, mut request) = Exchange::new(64);
//! let outcome = loop {
//!     let response = remote.answer(&request).expect("a request from a matching exchange");
//!     match exchange.on_response(&mut local, response).expect("an answer to our request") {
//!         ExchangeStep::Request(next) => request = next,
//!         ExchangeStep::Done(outcome) => break outcome,
//!     }
//! };
//! // The node then repairs each differing key: it reads both replicas, merges, writes back.
//! assert_eq!(outcome.differing, [(b"users".to_vec(), b"alice".to_vec())]);
//! assert_eq!(outcome.requests, 5); // root, three levels of children, one segment
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;
use core::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::ring::key_position;
use crate::version::Object;

/// The most nodes or segments one [`ExchangeRequest`] may name. [`MerkleTree::answer`] rejects
/// larger requests ([`MerkleError::TooManyItems`]) and [`Exchange::new`] caps `max_items` to it,
/// so a peer cannot make one message cost more than this much work.
pub const MAX_EXCHANGE_ITEMS: usize = 1024;

/// The largest fan-out a [`MerkleConfig`] accepts.
pub const MAX_FANOUT: u32 = 64;

/// The largest depth a [`MerkleConfig`] accepts.
pub const MAX_DEPTH: u32 = 4;

/// The shape of a tree: `fanout` children per inner node, `depth` levels of inner nodes, and
/// `fanout^depth` leaf segments. Both replicas of a partition must use the same shape.
///
/// More segments mean fewer keys listed per differing segment but more hashes exchanged on the
/// way down; the default (16, 3: 4096 segments) suits partitions of up to a few million keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MerkleConfig {
    /// Children per inner node: a power of two in `2..=64`.
    pub fanout: u32,
    /// Levels of inner nodes above the segments (the root is level 0): `1..=4`.
    pub depth: u32,
}

impl Default for MerkleConfig {
    fn default() -> Self {
        MerkleConfig {
            fanout: 16,
            depth: 3,
        }
    }
}

impl MerkleConfig {
    /// Number of leaf segments, `fanout^depth` (saturating at `u32::MAX` for invalid configs).
    pub fn segments(&self) -> u32 {
        self.fanout.checked_pow(self.depth).unwrap_or(u32::MAX)
    }

    /// Checks that `fanout` is a power of two in `2..=64` and `depth` is in `1..=4`.
    pub fn validate(&self) -> Result<(), MerkleError> {
        let fanout_ok = self.fanout.is_power_of_two() && (2..=MAX_FANOUT).contains(&self.fanout);
        if fanout_ok && (1..=MAX_DEPTH).contains(&self.depth) {
            Ok(())
        } else {
            Err(MerkleError::InvalidConfig {
                fanout: self.fanout,
                depth: self.depth,
            })
        }
    }

    /// log2 of the fan-out (valid configs only).
    fn fanout_bits(&self) -> u32 {
        self.fanout.trailing_zeros()
    }

    /// Number of nodes at `level` (level `depth` being the segments), valid configs only.
    fn width(&self, level: u32) -> u32 {
        1 << (level * self.fanout_bits())
    }
}

/// A key's identity in a tree: `(bucket, key)`. Trees order keys by bucket, then key.
pub type TreeKey = (Vec<u8>, Vec<u8>);

/// 64-bit digest of an object's causal state: its clock (counters and timestamps) and, for every
/// sibling, its dot, timestamp, value checksum and whether it is a tombstone. The value bytes are
/// not read: the checksums already stand for them, which keeps the digest cheap for large values.
///
/// Equal objects have equal digests, and any write or merge that changes an object's clock or
/// siblings changes its digest (up to MD5 collisions on the first 64 bits). The digest depends on
/// nothing but the object, so every replica computes the same one.
pub fn object_digest(object: &Object) -> u64 {
    let mut hasher = Md5::new();
    // Every variable-length field is length-prefixed, so distinct objects feed distinct streams.
    hasher.update(len_bytes(object.clock().len()));
    for (actor, entry) in object.clock().iter() {
        hasher.update(len_bytes(actor.as_str().len()));
        hasher.update(actor.as_str().as_bytes());
        hasher.update(entry.counter.to_le_bytes());
        hasher.update(entry.timestamp.to_le_bytes());
    }
    hasher.update(len_bytes(object.siblings().len()));
    for sibling in object.siblings() {
        hasher.update(len_bytes(sibling.dot.actor.as_str().len()));
        hasher.update(sibling.dot.actor.as_str().as_bytes());
        hasher.update(sibling.dot.counter.to_le_bytes());
        hasher.update(sibling.timestamp.to_le_bytes());
        hasher.update(sibling.checksum.to_le_bytes());
        // A tombstone and an empty value share a checksum; the flag tells them apart.
        hasher.update([u8::from(sibling.content.is_tombstone())]);
        // Fed only for an expiring value, so digests of records without expiry did not change
        // when it came (no anti-entropy churn after an upgrade).
        if let Some(expires_at) = sibling.content.expires_at() {
            hasher.update(expires_at.to_le_bytes());
        }
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

fn len_bytes(len: usize) -> [u8; 8] {
    (len as u64).to_le_bytes()
}

/// The splitmix64 finalizer: a bijection on `u64` with good avalanche.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Starting value of an inner node's fold (any odd constant: splitmix's increment).
const FOLD_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash one `(key, digest)` pair adds to its segment. For a fixed key it is a bijection of the
/// digest (a chain of bijections), so a changed digest always changes its segment's hash.
fn entry_hash(position: u128, digest: u64) -> u64 {
    let high = (position >> 64) as u64;
    let low = position as u64;
    mix64(high ^ mix64(low ^ mix64(digest ^ FOLD_SEED)))
}

/// One step of an inner node's fold. A bijection of `child` for a fixed `acc`, and of `acc` for a
/// fixed `child`, so changing any one child changes the node's hash.
fn fold(acc: u64, child: u64) -> u64 {
    mix64(acc ^ child).wrapping_add(FOLD_SEED)
}

/// The segment of a key at `position` in a tree with `2^bits` segments: the top `bits` bits of the
/// position's low 64 bits, away from the top bits that pick the partition.
fn segment_at(position: u128, bits: u32) -> u32 {
    // `bits` is 1..=24 for valid configs, so the shift is in range and the result fits a u32.
    ((position as u64) >> (64 - bits)) as u32
}

/// One leaf: the keys and digests hashed to it, and the wrapping sum of their [`entry_hash`]es.
#[derive(Clone, Debug, Default)]
struct Segment {
    hash: u64,
    keys: BTreeMap<TreeKey, u64>,
}

/// A Merkle tree over the keys of one partition replica and their object digests (see the
/// [module docs](self) for the hash scheme and the memory it costs).
///
/// `==` compares the shape and the keys with their digests, not cached inner hashes.
#[derive(Clone)]
pub struct MerkleTree {
    config: MerkleConfig,
    /// `log2(segments)`: how many position bits pick a segment.
    bits: u32,
    /// Non-empty segments only, so memory follows the key count, not the shape; an absent segment
    /// hashes to 0, the sum of nothing.
    segments: BTreeMap<u32, Segment>,
    /// Number of keys.
    len: usize,
    /// Inner node hashes, level by level: node `(level, index)` is at `level_start[level] + index`.
    hashes: Vec<u64>,
    /// Whether an inner node's hash is stale. Invariant: a dirty node's ancestors are all dirty,
    /// so marking stops at the first dirty ancestor and recomputing descends only into dirty nodes.
    dirty: Vec<bool>,
    /// Offsets of the levels in `hashes` and `dirty`; `depth + 1` entries, the last the total.
    level_start: Vec<usize>,
    /// The hash of an inner node at each level over empty segments, to reset the tree.
    empty: Vec<u64>,
}

impl fmt::Debug for MerkleTree {
    /// A summary: the keys of a large tree would drown any log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("config", &self.config)
            .field("keys", &self.len)
            .field("non_empty_segments", &self.segments.len())
            .finish()
    }
}

impl PartialEq for MerkleTree {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
            && self.len == other.len
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|((a, x), (b, y))| a == b && x.keys == y.keys)
    }
}

impl Eq for MerkleTree {}

impl MerkleTree {
    /// An empty tree of the given shape; `Err(InvalidConfig)` if the shape is out of range.
    ///
    /// Inner nodes are allocated up front (9 bytes per inner node, about 2.4 MB for the
    /// largest shape, 64 and 4); segments only when they get keys.
    pub fn new(config: MerkleConfig) -> Result<Self, MerkleError> {
        config.validate()?;
        let mut level_start = Vec::with_capacity(config.depth as usize + 1);
        let mut total = 0usize;
        for level in 0..=config.depth {
            level_start.push(total);
            if level < config.depth {
                total += config.width(level) as usize;
            }
        }
        // An empty segment hashes to 0; each level above folds `fanout` copies of the one below.
        let mut empty = vec![0u64; config.depth as usize + 1];
        for level in (0..config.depth as usize).rev() {
            empty[level] = (0..config.fanout).fold(FOLD_SEED, |acc, _| fold(acc, empty[level + 1]));
        }
        let mut tree = MerkleTree {
            config,
            bits: config.depth * config.fanout_bits(),
            segments: BTreeMap::new(),
            len: 0,
            hashes: vec![0; total],
            dirty: vec![false; total],
            level_start,
            empty,
        };
        tree.reset_inner();
        Ok(tree)
    }

    /// The tree's shape.
    pub fn config(&self) -> &MerkleConfig {
        &self.config
    }

    /// Sets the digest of a key: inserts it, replaces its digest, or with `None` removes it.
    /// Setting the digest a key already has changes nothing.
    ///
    /// Costs one MD5 of the bucket and key and a map update; inner hashes are only marked dirty.
    pub fn update(&mut self, bucket: &[u8], key: &[u8], digest: Option<u64>) {
        let position = key_position(bucket, key);
        let index = segment_at(position, self.bits);
        let tree_key = (bucket.to_vec(), key.to_vec());
        let changed = match digest {
            Some(digest) => {
                let segment = self.segments.entry(index).or_default();
                match segment.keys.insert(tree_key, digest) {
                    Some(old) if old == digest => false,
                    Some(old) => {
                        segment.hash = segment
                            .hash
                            .wrapping_sub(entry_hash(position, old))
                            .wrapping_add(entry_hash(position, digest));
                        true
                    }
                    None => {
                        segment.hash = segment.hash.wrapping_add(entry_hash(position, digest));
                        self.len += 1;
                        true
                    }
                }
            }
            None => match self.segments.get_mut(&index) {
                Some(segment) => match segment.keys.remove(&tree_key) {
                    Some(old) => {
                        segment.hash = segment.hash.wrapping_sub(entry_hash(position, old));
                        if segment.keys.is_empty() {
                            self.segments.remove(&index);
                        }
                        self.len -= 1;
                        true
                    }
                    None => false,
                },
                None => false,
            },
        };
        if changed {
            self.mark_dirty(index);
        }
    }

    /// The digest of a key, if the tree holds it.
    pub fn get(&self, bucket: &[u8], key: &[u8]) -> Option<u64> {
        let segment = self.segments.get(&self.segment_of(bucket, key))?;
        segment.keys.get(&(bucket.to_vec(), key.to_vec())).copied()
    }

    /// Number of keys in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the tree holds no key.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root hash, recomputing the dirty inner nodes first (O(dirty nodes * fanout)).
    ///
    /// Two trees of the same shape with the same keys and digests have the same root, however
    /// they were built.
    pub fn root(&mut self) -> u64 {
        self.refresh(0, 0)
    }

    /// The hashes of the `fanout` children of inner node `index` at `level` (level 0 is the root,
    /// index 0; level `l` has `fanout^l` nodes). The children of the bottom level
    /// (`depth - 1`) are segments, whose hash is 0 when empty. `Err(BadIndex)` if there is no
    /// such node.
    pub fn children(&mut self, level: u32, index: u32) -> Result<Vec<u64>, MerkleError> {
        self.check_node(level, index)?;
        let mut out = Vec::with_capacity(self.config.fanout as usize);
        self.for_each_child(level, index, |hash| out.push(hash));
        Ok(out)
    }

    /// The keys and digests of one leaf segment (`0..segments`), in key order. `Err(BadIndex)`
    /// (with `level` = `depth`) if there is no such segment.
    pub fn segment(&self, segment: u32) -> Result<Vec<(TreeKey, u64)>, MerkleError> {
        self.check_segment(segment)?;
        Ok(self.segments.get(&segment).map_or_else(Vec::new, |s| {
            s.keys.iter().map(|(k, d)| (k.clone(), *d)).collect()
        }))
    }

    /// The segment a key belongs to (whether or not the tree holds it).
    pub fn segment_of(&self, bucket: &[u8], key: &[u8]) -> u32 {
        segment_at(key_position(bucket, key), self.bits)
    }

    /// Removes every key, keeping the shape (before a rebuild from a storage scan).
    pub fn clear(&mut self) {
        self.segments.clear();
        self.len = 0;
        self.reset_inner();
    }

    /// Answers a peer's [`ExchangeRequest`] from this tree: the root with the tree's shape, the
    /// children of the named nodes, or the contents of the named segments, in the order named.
    ///
    /// Every index is checked before any work: a request naming a level or index outside the
    /// shape is `Err(BadIndex)`, one naming more than [`MAX_EXCHANGE_ITEMS`] items is
    /// `Err(TooManyItems)`. Errors change nothing; the node drops the request (and may end the
    /// exchange with that peer).
    pub fn answer(&mut self, request: &ExchangeRequest) -> Result<ExchangeResponse, MerkleError> {
        match request {
            ExchangeRequest::Root => Ok(ExchangeResponse::Root {
                config: self.config,
                hash: self.root(),
            }),
            ExchangeRequest::Children { nodes } => {
                check_items(nodes.len())?;
                for &(level, index) in nodes {
                    self.check_node(level, index)?;
                }
                let mut out = Vec::with_capacity(nodes.len());
                for &(level, index) in nodes {
                    out.push(((level, index), self.children(level, index)?));
                }
                Ok(ExchangeResponse::Children(out))
            }
            ExchangeRequest::Segments { segments } => {
                check_items(segments.len())?;
                for &segment in segments {
                    self.check_segment(segment)?;
                }
                let mut out = Vec::with_capacity(segments.len());
                for &segment in segments {
                    out.push((segment, self.segment(segment)?));
                }
                Ok(ExchangeResponse::Segments(out))
            }
        }
    }

    /// Marks the inner nodes above `segment` dirty, stopping at the first node already dirty (its
    /// ancestors are, by the invariant).
    fn mark_dirty(&mut self, segment: u32) {
        let mut index = segment >> self.config.fanout_bits();
        for level in (0..self.config.depth).rev() {
            let at = self.level_start[level as usize] + index as usize;
            match self.dirty.get_mut(at) {
                Some(flag) if !*flag => *flag = true,
                _ => break,
            }
            index >>= self.config.fanout_bits();
        }
    }

    /// The hash of inner node `(level, index)`, recomputed first if dirty. Callers pass valid
    /// nodes; an invalid one hashes to 0 rather than panicking.
    fn refresh(&mut self, level: u32, index: u32) -> u64 {
        let at = self.level_start[level as usize] + index as usize;
        match self.dirty.get(at) {
            Some(true) => {}
            Some(false) => return self.hashes[at],
            None => return 0,
        }
        let mut acc = FOLD_SEED;
        self.for_each_child(level, index, |hash| acc = fold(acc, hash));
        self.hashes[at] = acc;
        self.dirty[at] = false;
        acc
    }

    /// Calls `f` with the hash of each child of a valid inner node, in order.
    fn for_each_child(&mut self, level: u32, index: u32, mut f: impl FnMut(u64)) {
        let first = index << self.config.fanout_bits();
        let end = first + self.config.fanout;
        if level + 1 == self.config.depth {
            // Children are segments; absent ones are empty and hash to 0.
            let mut present = self.segments.range(first..end).peekable();
            for child in first..end {
                match present.next_if(|(i, _)| **i == child) {
                    Some((_, segment)) => f(segment.hash),
                    None => f(0),
                }
            }
        } else {
            for child in first..end {
                let hash = self.refresh(level + 1, child);
                f(hash);
            }
        }
    }

    fn reset_inner(&mut self) {
        for level in 0..self.config.depth as usize {
            let range = self.level_start[level]..self.level_start[level + 1];
            self.hashes[range.clone()].fill(self.empty[level]);
            self.dirty[range].fill(false);
        }
    }

    fn check_node(&self, level: u32, index: u32) -> Result<(), MerkleError> {
        if level < self.config.depth && index < self.config.width(level) {
            Ok(())
        } else {
            Err(MerkleError::BadIndex { level, index })
        }
    }

    fn check_segment(&self, segment: u32) -> Result<(), MerkleError> {
        if segment < self.config.segments() {
            Ok(())
        } else {
            Err(MerkleError::BadIndex {
                level: self.config.depth,
                index: segment,
            })
        }
    }
}

fn check_items(items: usize) -> Result<(), MerkleError> {
    if items <= MAX_EXCHANGE_ITEMS {
        Ok(())
    } else {
        Err(MerkleError::TooManyItems {
            items,
            max: MAX_EXCHANGE_ITEMS,
        })
    }
}

/// What the initiator of an exchange asks the other replica (answered by
/// [`MerkleTree::answer`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExchangeRequest {
    /// The root hash and the tree's shape.
    Root,
    /// The child hashes of each named inner node, as `(level, index)`.
    Children {
        /// The nodes, at most [`MAX_EXCHANGE_ITEMS`].
        nodes: Vec<(u32, u32)>,
    },
    /// The keys and digests of each named segment.
    Segments {
        /// The segments, at most [`MAX_EXCHANGE_ITEMS`].
        segments: Vec<u32>,
    },
}

/// The answer to an [`ExchangeRequest`], fed to [`Exchange::on_response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExchangeResponse {
    /// The answer to [`ExchangeRequest::Root`].
    Root {
        /// The answering tree's shape, which must match the initiator's.
        config: MerkleConfig,
        /// The answering tree's root hash.
        hash: u64,
    },
    /// The answer to [`ExchangeRequest::Children`]: per node asked, in order, its child hashes.
    Children(Vec<((u32, u32), Vec<u64>)>),
    /// The answer to [`ExchangeRequest::Segments`]: per segment asked, in order, its keys and
    /// digests in key order.
    Segments(Vec<(u32, Vec<(TreeKey, u64)>)>),
}

/// What to do after a response: send another request, or stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeStep {
    /// Send this request to the same peer and feed its answer to [`Exchange::on_response`].
    Request(ExchangeRequest),
    /// The exchange is complete.
    Done(ExchangeOutcome),
}

/// The result of a complete exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeOutcome {
    /// The keys whose digests differ between the two trees or that only one tree holds, in key
    /// order. The node repairs each one (read both replicas, merge, write back).
    pub differing: Vec<TreeKey>,
    /// Requests sent, the first `Root` included.
    pub requests: u32,
    /// Hashes compared: the roots, every child hash received, and every key digest in the
    /// segments compared.
    pub hashes_compared: u64,
}

/// Where an exchange stands: the request it waits an answer for, or over.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Awaiting {
    Root,
    Children(Vec<(u32, u32)>),
    Segments(Vec<u32>),
    /// Done, or abandoned after an error: every further response is unexpected.
    Nothing,
}

/// The initiator's side of an exchange with one peer, over one partition's trees.
///
/// The obligations of the caller: send the request from [`Exchange::new`], then feed each answer
/// to [`Exchange::on_response`] with this replica's tree and send the request it returns, until it
/// returns [`ExchangeStep::Done`] or an error. Exactly one request is outstanding at a time. If the
/// peer does not answer, drop the `Exchange`: it holds no resources and changes no tree.
#[derive(Clone, Debug)]
pub struct Exchange {
    max_items: usize,
    awaiting: Awaiting,
    /// The shape agreed on in the root exchange; later responses are checked against it.
    config: Option<MerkleConfig>,
    /// Differing inner nodes whose children are still to be asked for, breadth first.
    nodes: VecDeque<(u32, u32)>,
    /// Differing segments still to be listed.
    segments: VecDeque<u32>,
    differing: Vec<TreeKey>,
    requests: u32,
    hashes_compared: u64,
}

impl Exchange {
    /// Starts an exchange; returns it and the first request to send (`Root`).
    ///
    /// `max_items` bounds how many nodes or segments one request names (bounded work and message
    /// size per round trip); it is capped to `1..=MAX_EXCHANGE_ITEMS`. A segment response carries
    /// every key of each segment named, so with large partitions a smaller value keeps messages
    /// small.
    pub fn new(max_items: usize) -> (Exchange, ExchangeRequest) {
        let exchange = Exchange {
            max_items: max_items.clamp(1, MAX_EXCHANGE_ITEMS),
            awaiting: Awaiting::Root,
            config: None,
            nodes: VecDeque::new(),
            segments: VecDeque::new(),
            differing: Vec::new(),
            requests: 1,
            hashes_compared: 0,
        };
        (exchange, ExchangeRequest::Root)
    }

    /// True once the exchange has returned [`ExchangeStep::Done`] or an error.
    pub fn is_finished(&self) -> bool {
        self.awaiting == Awaiting::Nothing
    }

    /// Feeds the peer's answer to the outstanding request, compares it with `local` (this
    /// replica's tree for the same partition), and returns the next request or the outcome.
    ///
    /// `local` may have changed since the previous call. An error means the response was not an
    /// answer to the outstanding request (wrong kind, other nodes or segments, wrong number of
    /// hashes, unsorted keys or keys outside their segment: `UnexpectedResponse`), or the shapes
    /// differ (`ConfigMismatch`): the exchange is abandoned, trees unchanged, and every later call
    /// fails too.
    pub fn on_response(
        &mut self,
        local: &mut MerkleTree,
        response: ExchangeResponse,
    ) -> Result<ExchangeStep, MerkleError> {
        // Abandoned unless the response is applied in full.
        let awaiting = core::mem::replace(&mut self.awaiting, Awaiting::Nothing);
        if let Some(agreed) = self.config {
            if agreed != local.config {
                return Err(MerkleError::ConfigMismatch {
                    local: local.config,
                    remote: agreed,
                });
            }
        }
        match (awaiting, response) {
            (Awaiting::Root, ExchangeResponse::Root { config, hash }) => {
                if config != local.config {
                    return Err(MerkleError::ConfigMismatch {
                        local: local.config,
                        remote: config,
                    });
                }
                self.config = Some(config);
                self.hashes_compared += 1;
                if hash != local.root() {
                    self.nodes.push_back((0, 0));
                }
            }
            (Awaiting::Children(asked), ExchangeResponse::Children(answers)) => {
                self.on_children(local, &asked, answers)?;
            }
            (Awaiting::Segments(asked), ExchangeResponse::Segments(answers)) => {
                self.on_segments(local, &asked, answers)?;
            }
            (Awaiting::Nothing, _) => {
                return Err(MerkleError::UnexpectedResponse("the exchange is over"));
            }
            _ => {
                return Err(MerkleError::UnexpectedResponse(
                    "response of another kind than the request",
                ));
            }
        }
        Ok(self.next_step())
    }

    fn on_children(
        &mut self,
        local: &mut MerkleTree,
        asked: &[(u32, u32)],
        answers: Vec<((u32, u32), Vec<u64>)>,
    ) -> Result<(), MerkleError> {
        let fanout = local.config.fanout;
        if answers.len() != asked.len() {
            return Err(MerkleError::UnexpectedResponse(
                "children for another number of nodes than asked",
            ));
        }
        // Check the whole response before acting on any of it.
        for (&node, (answered, hashes)) in asked.iter().zip(&answers) {
            if node != *answered {
                return Err(MerkleError::UnexpectedResponse(
                    "children of a node not asked for",
                ));
            }
            if hashes.len() != fanout as usize {
                return Err(MerkleError::UnexpectedResponse(
                    "a node with another number of children than the fan-out",
                ));
            }
        }
        for ((level, index), theirs) in answers {
            let mine = local.children(level, index)?;
            self.hashes_compared += u64::from(fanout);
            let first = index << local.config.fanout_bits();
            for (child, (a, b)) in (first..).zip(mine.iter().zip(&theirs)) {
                if a == b {
                    continue;
                }
                if level + 1 < local.config.depth {
                    self.nodes.push_back((level + 1, child));
                } else {
                    self.segments.push_back(child);
                }
            }
        }
        Ok(())
    }

    fn on_segments(
        &mut self,
        local: &MerkleTree,
        asked: &[u32],
        answers: Vec<(u32, Vec<(TreeKey, u64)>)>,
    ) -> Result<(), MerkleError> {
        if answers.len() != asked.len() {
            return Err(MerkleError::UnexpectedResponse(
                "another number of segments than asked",
            ));
        }
        for (&segment, (answered, keys)) in asked.iter().zip(&answers) {
            if segment != *answered {
                return Err(MerkleError::UnexpectedResponse("a segment not asked for"));
            }
            // The diff below walks both lists in order, so the peer's must be strictly sorted.
            if keys.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(MerkleError::UnexpectedResponse(
                    "segment keys not strictly sorted",
                ));
            }
            if keys
                .iter()
                .any(|((bucket, key), _)| local.segment_of(bucket, key) != segment)
            {
                return Err(MerkleError::UnexpectedResponse("a key outside its segment"));
            }
        }
        for (segment, theirs) in answers {
            let mine = local.segment(segment)?;
            self.diff(mine, theirs);
        }
        Ok(())
    }

    /// Adds to `differing` the keys of two sorted lists that one side lacks or whose digests
    /// differ.
    fn diff(&mut self, mine: Vec<(TreeKey, u64)>, theirs: Vec<(TreeKey, u64)>) {
        let mut mine = mine.into_iter().peekable();
        let mut theirs = theirs.into_iter().peekable();
        loop {
            let order = match (mine.peek(), theirs.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            self.hashes_compared += 1;
            match order {
                Ordering::Less => self.differing.extend(mine.next().map(|(k, _)| k)),
                Ordering::Greater => self.differing.extend(theirs.next().map(|(k, _)| k)),
                Ordering::Equal => {
                    if let (Some((key, a)), Some((_, b))) = (mine.next(), theirs.next()) {
                        if a != b {
                            self.differing.push(key);
                        }
                    }
                }
            }
        }
    }

    /// The next batch of differing nodes, then of segments, or the outcome when none is left.
    fn next_step(&mut self) -> ExchangeStep {
        if !self.nodes.is_empty() {
            let take = self.max_items.min(self.nodes.len());
            let batch: Vec<(u32, u32)> = self.nodes.drain(..take).collect();
            self.requests = self.requests.saturating_add(1);
            self.awaiting = Awaiting::Children(batch.clone());
            return ExchangeStep::Request(ExchangeRequest::Children { nodes: batch });
        }
        if !self.segments.is_empty() {
            let take = self.max_items.min(self.segments.len());
            let batch: Vec<u32> = self.segments.drain(..take).collect();
            self.requests = self.requests.saturating_add(1);
            self.awaiting = Awaiting::Segments(batch.clone());
            return ExchangeStep::Request(ExchangeRequest::Segments { segments: batch });
        }
        self.awaiting = Awaiting::Nothing;
        let mut differing = core::mem::take(&mut self.differing);
        differing.sort_unstable();
        ExchangeStep::Done(ExchangeOutcome {
            differing,
            requests: self.requests,
            hashes_compared: self.hashes_compared,
        })
    }
}

/// Why a tree could not be built, a request answered, or an exchange continued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The config's fan-out is not a power of two in `2..=64` or its depth is not in `1..=4`. No
    /// tree is built.
    #[error(
        "invalid Merkle tree shape: fanout {fanout}, depth {depth} \
         (fanout must be a power of two in 2..=64, depth in 1..=4)"
    )]
    InvalidConfig {
        /// The fan-out given.
        fanout: u32,
        /// The depth given.
        depth: u32,
    },
    /// A node or segment outside the tree's shape was named (segments are level `depth`). Nothing
    /// is changed; when it comes from a peer's request, the request is dropped.
    #[error("no node {index} at level {level} of the Merkle tree")]
    BadIndex {
        /// The level named.
        level: u32,
        /// The index named.
        index: u32,
    },
    /// A request names more nodes or segments than [`MAX_EXCHANGE_ITEMS`]. Nothing is changed;
    /// the request is dropped.
    #[error("exchange request names {items} items, more than {max}")]
    TooManyItems {
        /// Items named.
        items: usize,
        /// The limit.
        max: usize,
    },
    /// A response does not answer the outstanding request (named here), or came after the
    /// exchange ended. The exchange is abandoned; trees unchanged.
    #[error("unexpected exchange response: {0}")]
    UnexpectedResponse(&'static str),
    /// The two trees have different shapes, so their hashes cannot be compared. The exchange is
    /// abandoned; trees unchanged. (Replicas of a partition must be configured alike; a node
    /// rebuilds its trees when the shape changes.)
    #[error("Merkle tree shapes differ: local {local:?}, remote {remote:?}")]
    ConfigMismatch {
        /// This replica's shape.
        local: MerkleConfig,
        /// The peer's shape.
        remote: MerkleConfig,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{ActorId, ConflictMode, Content, VersionVector};
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::format;

    /// Test keys: three buckets, so bucket order matters too.
    fn key(i: u32) -> TreeKey {
        (
            format!("b{}", i % 3).into_bytes(),
            format!("key-{i}").into_bytes(),
        )
    }

    fn tree(config: MerkleConfig, entries: &BTreeMap<u32, u64>) -> MerkleTree {
        let mut t = MerkleTree::new(config).unwrap();
        for (&i, &d) in entries {
            let (b, k) = key(i);
            t.update(&b, &k, Some(d));
        }
        t
    }

    /// Runs an exchange to completion: initiator on `a`, responder `b`.
    fn run(a: &mut MerkleTree, b: &mut MerkleTree, max_items: usize) -> ExchangeOutcome {
        let (mut exchange, mut request) = Exchange::new(max_items);
        loop {
            let response = b.answer(&request).unwrap();
            match exchange.on_response(a, response).unwrap() {
                ExchangeStep::Request(next) => request = next,
                ExchangeStep::Done(outcome) => return outcome,
            }
        }
    }

    /// Upper bound on the requests of any exchange: one per inner node and segment, plus root.
    fn max_requests(config: MerkleConfig) -> u32 {
        (0..=config.depth).map(|l| config.width(l)).sum::<u32>() + 1
    }

    fn any_config() -> impl Strategy<Value = MerkleConfig> {
        prop::sample::select(vec![
            (2, 1),
            (2, 4),
            (4, 3),
            (16, 3),
            (64, 2),
            (8, 4),
            (64, 1),
        ])
        .prop_map(|(fanout, depth)| MerkleConfig { fanout, depth })
    }

    /// `None` removes the key.
    fn any_ops() -> impl Strategy<Value = Vec<(u32, Option<u64>, bool)>> {
        prop::collection::vec(
            (
                0u32..60,
                prop::option::weighted(0.8, 0u64..4),
                any::<bool>(),
            ),
            0..200,
        )
    }

    fn object(writes: &[(u8, u8)]) -> Object {
        let mut o = Object::new();
        for (i, &(actor, value)) in writes.iter().enumerate() {
            let ctx = if value % 2 == 0 {
                o.context().into_clock()
            } else {
                VersionVector::new()
            };
            o.update(
                &ctx,
                &ActorId::new(format!("n{actor}.1")),
                Content::Value(vec![value]),
                i as u64,
                ConflictMode::Siblings,
            );
        }
        o
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn incremental_equals_rebuilt(
            config in any_config(),
            ops in any_ops(),
            seed in any::<u64>(),
        ) {
            let mut incremental = MerkleTree::new(config).unwrap();
            let mut model = BTreeMap::new();
            for &(i, digest, ask_root) in &ops {
                let (b, k) = key(i);
                incremental.update(&b, &k, digest);
                match digest {
                    Some(d) => model.insert(i, d),
                    None => model.remove(&i),
                };
                // Computing roots part way exercises the lazy recomputation.
                if ask_root {
                    incremental.root();
                }
            }
            let mut rebuilt = tree(config, &model);
            prop_assert_eq!(incremental.root(), rebuilt.root());
            prop_assert_eq!(&incremental, &rebuilt);
            prop_assert_eq!(incremental.len(), model.len());
            prop_assert_eq!(incremental.is_empty(), model.is_empty());
            for (&i, &d) in &model {
                let (b, k) = key(i);
                prop_assert_eq!(incremental.get(&b, &k), Some(d));
            }

            // Insertion order does not matter: insert in a scrambled order.
            let mut order: Vec<(u32, u64)> = model.iter().map(|(&i, &d)| (i, d)).collect();
            order.sort_by_key(|&(i, _)| mix64(u64::from(i) ^ seed));
            let mut scrambled = MerkleTree::new(config).unwrap();
            for (i, d) in order {
                let (b, k) = key(i);
                scrambled.update(&b, &k, Some(d));
            }
            prop_assert_eq!(scrambled.root(), rebuilt.root());

            // Every inner node agrees too, and the segments list the model's keys in key order.
            for level in 0..config.depth.min(2) {
                for index in 0..config.width(level) {
                    prop_assert_eq!(
                        incremental.children(level, index).unwrap(),
                        scrambled.children(level, index).unwrap()
                    );
                }
            }
            let mut listed = Vec::new();
            for s in 0..config.segments().min(4096) {
                let keys = incremental.segment(s).unwrap();
                prop_assert!(keys.windows(2).all(|w| w[0].0 < w[1].0));
                listed.extend(keys);
            }
            if config.segments() <= 4096 {
                listed.sort();
                let mut expected: Vec<(TreeKey, u64)> =
                    model.iter().map(|(&i, &d)| (key(i), d)).collect();
                expected.sort();
                prop_assert_eq!(listed, expected);
            }

            // Clearing gives back an empty tree.
            incremental.clear();
            prop_assert_eq!(incremental.root(), MerkleTree::new(config).unwrap().root());
            prop_assert!(incremental.is_empty());
        }

        #[test]
        fn one_change_always_changes_the_root(
            config in any_config(),
            keys in prop::collection::btree_map(0u32..500, any::<u64>(), 0..100),
            changed in 0u32..600,
            delta in 1u64..,
        ) {
            let mut t = tree(config, &keys);
            let before = t.root();
            let (b, k) = key(changed);
            let old = t.get(&b, &k);
            t.update(&b, &k, Some(old.unwrap_or(0).wrapping_add(delta)));
            prop_assert_ne!(t.root(), before);
            t.update(&b, &k, old);
            prop_assert_eq!(t.root(), before);
        }

        #[test]
        fn exchange_finds_exactly_the_differing_keys(
            config in any_config(),
            // Per key: 0 both alike, 1 only in a, 2 only in b, 3 both with different digests.
            keys in prop::collection::btree_map(0u32..2000, (0u8..4, any::<u64>()), 0..300),
            same_weight in 0usize..8,
        ) {
            let (mut a_keys, mut b_keys) = (BTreeMap::new(), BTreeMap::new());
            let mut expected = BTreeSet::new();
            for (n, (&i, &(kind, d))) in keys.iter().enumerate() {
                // Bias toward mostly-alike trees, as in a running cluster.
                let kind = if n % 8 < same_weight { 0 } else { kind };
                match kind {
                    0 => { a_keys.insert(i, d); b_keys.insert(i, d); }
                    1 => { a_keys.insert(i, d); }
                    2 => { b_keys.insert(i, d); }
                    _ => { a_keys.insert(i, d); b_keys.insert(i, d ^ 1); }
                }
                if kind != 0 {
                    expected.insert(key(i));
                }
            }
            let expected: Vec<TreeKey> = expected.into_iter().collect();
            for max_items in [1, 3, 64, 5000] {
                let mut a = tree(config, &a_keys);
                let mut b = tree(config, &b_keys);
                let outcome = run(&mut a, &mut b, max_items);
                prop_assert_eq!(&outcome.differing, &expected);
                prop_assert!(outcome.requests <= max_requests(config));
                if expected.is_empty() {
                    prop_assert_eq!(outcome.requests, 1);
                    prop_assert_eq!(outcome.hashes_compared, 1);
                }
                // Symmetric: the other side as initiator finds the same keys.
                let outcome = run(&mut b, &mut a, max_items);
                prop_assert_eq!(&outcome.differing, &expected);
            }
        }

        #[test]
        fn exchange_survives_writes_between_messages(
            config in any_config(),
            keys in prop::collection::btree_map(0u32..300, any::<u64>(), 0..100),
            writes in prop::collection::vec(
                (any::<bool>(), 0u32..400, prop::option::of(0u64..3)),
                0..40,
            ),
            max_items in 1usize..5,
        ) {
            let mut a = tree(config, &keys);
            let mut b = MerkleTree::new(config).unwrap();
            let (mut exchange, mut request) = Exchange::new(max_items);
            let mut writes = writes.into_iter();
            let mut seen: BTreeSet<TreeKey> = keys.keys().map(|&i| key(i)).collect();
            let outcome = loop {
                let response = b.answer(&request).unwrap();
                // Writes land on both sides between the messages.
                if let Some((on_a, i, digest)) = writes.next() {
                    let (bk, kk) = key(i);
                    let side = if on_a { &mut a } else { &mut b };
                    side.update(&bk, &kk, digest);
                    seen.insert(key(i));
                }
                match exchange.on_response(&mut a, response).unwrap() {
                    ExchangeStep::Request(next) => request = next,
                    ExchangeStep::Done(outcome) => break outcome,
                }
            };
            prop_assert!(outcome.requests <= max_requests(config));
            prop_assert!(outcome.differing.iter().all(|k| seen.contains(k)));
            prop_assert!(exchange.is_finished());
        }

        #[test]
        fn answer_never_panics(
            config in any_config(),
            keys in prop::collection::btree_map(0u32..100, any::<u64>(), 0..20),
            nodes in prop::collection::vec((0u32..6, prop_oneof![0u32..70, any::<u32>()]), 0..20),
            segments in prop::collection::vec(prop_oneof![0u32..5000, any::<u32>()], 0..20),
            many in any::<bool>(),
        ) {
            let mut t = tree(config, &keys);
            let nodes = if many { vec![(0, 0); MAX_EXCHANGE_ITEMS + 1] } else { nodes };
            for request in [
                ExchangeRequest::Root,
                ExchangeRequest::Children { nodes: nodes.clone() },
                ExchangeRequest::Segments { segments: segments.clone() },
            ] {
                match t.answer(&request) {
                    Ok(ExchangeResponse::Children(c)) => {
                        prop_assert_eq!(c.len(), nodes.len());
                        prop_assert!(c.iter().all(|(_, h)| h.len() == config.fanout as usize));
                    }
                    Ok(ExchangeResponse::Segments(s)) => prop_assert_eq!(s.len(), segments.len()),
                    Ok(ExchangeResponse::Root { config: c, .. }) => prop_assert_eq!(c, config),
                    Err(MerkleError::BadIndex { .. } | MerkleError::TooManyItems { .. }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }

        #[test]
        fn garbage_responses_never_panic(
            config in any_config(),
            keys in prop::collection::btree_map(0u32..200, any::<u64>(), 1..50),
            steps in 0usize..6,
            garbage in any_response(),
            bytes in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut a = tree(config, &keys);
            let mut b = MerkleTree::new(config).unwrap();
            let (mut exchange, mut request) = Exchange::new(2);
            // Advance a few honest steps, then feed garbage.
            for _ in 0..steps {
                let response = b.answer(&request).unwrap();
                match exchange.on_response(&mut a, response).unwrap() {
                    ExchangeStep::Request(next) => request = next,
                    ExchangeStep::Done(_) => break,
                }
            }
            let decoded: Option<ExchangeResponse> = postcard::from_bytes(&bytes).ok();
            for response in [Some(garbage), decoded].into_iter().flatten() {
                let mut e = exchange.clone();
                let mut local = a.clone();
                if e.on_response(&mut local, response.clone()).is_err() {
                    prop_assert!(e.is_finished());
                    let honest = b.answer(&request).unwrap();
                    prop_assert!(e.on_response(&mut local, honest).is_err());
                }
                prop_assert_eq!(&local, &a);
            }
            let _ = postcard::from_bytes::<ExchangeRequest>(&bytes).map(|r| b.answer(&r));
        }

        #[test]
        fn object_digests_follow_object_equality(
            writes in prop::collection::vec((0u8..3, any::<u8>()), 0..6),
            others in prop::collection::vec((0u8..3, any::<u8>()), 0..6),
            more in (0u8..3, any::<u8>()),
        ) {
            let o = object(&writes);
            prop_assert_eq!(object_digest(&o), object_digest(&o.clone()));
            // Rebuilt from its record: equal object, equal digest.
            let decoded = Object::decode(&o.encode()).unwrap();
            prop_assert_eq!(object_digest(&decoded), object_digest(&o));
            let mut updated = o.clone();
            updated.update(
                &o.context().into_clock(),
                &ActorId::new(format!("n{}.1", more.0)),
                Content::Value(vec![more.1]),
                99,
                ConflictMode::Siblings,
            );
            prop_assert_ne!(object_digest(&updated), object_digest(&o));

            // Replicas that merged each other's state are equal, and so are their digests; the
            // digest tells them apart exactly when the objects differ.
            let (mut a, mut b) = (o.clone(), object(&others));
            prop_assert_eq!(a == b, object_digest(&a) == object_digest(&b));
            a.merge(&b, ConflictMode::Siblings);
            b.merge(&a, ConflictMode::Siblings);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(object_digest(&a), object_digest(&b));
        }
    }

    #[test]
    fn a_tombstone_and_an_empty_value_have_different_digests() {
        // Same dot, timestamp and checksum (crc32 of nothing): only the tombstone flag differs.
        let write = |content| {
            let mut o = Object::new();
            let actor = ActorId::new("n1.1");
            o.update(
                &VersionVector::new(),
                &actor,
                content,
                5,
                ConflictMode::Siblings,
            );
            o
        };
        let (value, tombstone) = (write(Content::Value(Vec::new())), write(Content::Tombstone));
        assert_eq!(
            value.siblings()[0].checksum,
            tombstone.siblings()[0].checksum
        );
        assert_ne!(object_digest(&value), object_digest(&tombstone));
        assert_ne!(object_digest(&value), object_digest(&Object::new()));
    }

    fn any_response() -> impl Strategy<Value = ExchangeResponse> {
        let node = (0u32..5, prop_oneof![0u32..70, any::<u32>()]);
        let hashes = prop::collection::vec(any::<u64>(), 0..70);
        let entry = (
            (
                prop::collection::vec(any::<u8>(), 0..3),
                prop::collection::vec(any::<u8>(), 0..3),
            ),
            any::<u64>(),
        );
        prop_oneof![
            ((1u32..70, 0u32..6), any::<u64>()).prop_map(|((fanout, depth), hash)| {
                ExchangeResponse::Root {
                    config: MerkleConfig { fanout, depth },
                    hash,
                }
            }),
            prop::collection::vec((node, hashes), 0..4).prop_map(ExchangeResponse::Children),
            prop::collection::vec(
                (
                    prop_oneof![0u32..70, any::<u32>()],
                    prop::collection::vec(entry, 0..4)
                ),
                0..4
            )
            .prop_map(ExchangeResponse::Segments),
        ]
    }

    #[test]
    fn one_differing_key_among_ten_thousand_is_cheap() {
        let config = MerkleConfig::default();
        let keys: BTreeMap<u32, u64> = (0..10_000).map(|i| (i, u64::from(i) * 7)).collect();
        let base = tree(config, &keys);
        let (b0, k0) = key(4242);
        let mut changed = base.clone();
        changed.update(&b0, &k0, Some(1));
        let mut removed = base.clone();
        removed.update(&b0, &k0, None);
        for other in [changed, removed] {
            for max_items in [1, 64] {
                for (mut a, mut b) in [(base.clone(), other.clone()), (other.clone(), base.clone())]
                {
                    let outcome = run(&mut a, &mut b, max_items);
                    assert_eq!(outcome.differing, [key(4242)]);
                    assert!(outcome.requests <= config.depth + 2, "{outcome:?}");
                }
            }
        }
        let (mut a, mut b) = (base.clone(), base);
        let outcome = run(&mut a, &mut b, 16);
        assert_eq!(outcome.requests, 1);
        assert!(outcome.differing.is_empty());
    }

    #[test]
    fn configs_are_validated() {
        for (fanout, depth) in [(0, 3), (1, 3), (3, 3), (128, 2), (16, 0), (16, 5), (2, 99)] {
            let config = MerkleConfig { fanout, depth };
            let err = MerkleError::InvalidConfig { fanout, depth };
            assert_eq!(config.validate(), Err(err.clone()));
            assert_eq!(MerkleTree::new(config).map(|_| ()), Err(err));
        }
        assert_eq!(MerkleConfig::default().segments(), 4096);
        let largest = MerkleConfig {
            fanout: 64,
            depth: 4,
        };
        assert_eq!(largest.segments(), 1 << 24);
        let mut t = MerkleTree::new(largest).unwrap();
        t.update(b"b", b"k", Some(1));
        let s = t.segment_of(b"b", b"k");
        assert_eq!(t.segment(s).unwrap().len(), 1);
        assert!(t.segment(1 << 24).is_err());
        assert!(t.children(4, 0).is_err());
        assert!(t.children(3, (1 << 18) - 1).is_ok());
        assert!(t.children(3, 1 << 18).is_err());
    }

    #[test]
    fn misuse_of_an_exchange_is_an_error() {
        let config = MerkleConfig::default();
        let mut a = tree(config, &[(1, 1)].into_iter().collect());
        let mut b = MerkleTree::new(config).unwrap();
        let mut other = MerkleTree::new(MerkleConfig {
            fanout: 4,
            depth: 3,
        })
        .unwrap();

        // A different shape on the other side.
        let (mut e, request) = Exchange::new(8);
        let response = other.answer(&request).unwrap();
        assert!(matches!(
            e.on_response(&mut a, response),
            Err(MerkleError::ConfigMismatch { .. })
        ));
        assert!(e.is_finished());

        // A different local tree part way.
        let (mut e, request) = Exchange::new(8);
        let response = b.answer(&request).unwrap();
        assert!(matches!(
            e.on_response(&mut a, response),
            Ok(ExchangeStep::Request(_))
        ));
        let response = ExchangeResponse::Children(vec![((0, 0), vec![0; 4])]);
        assert!(matches!(
            e.on_response(&mut other, response),
            Err(MerkleError::ConfigMismatch { .. })
        ));

        // Answers to something else.
        let (mut e, _) = Exchange::new(8);
        let wrong = ExchangeResponse::Segments(Vec::new());
        assert!(matches!(
            e.on_response(&mut a, wrong),
            Err(MerkleError::UnexpectedResponse(_))
        ));

        // A response after the end.
        let (mut e, request) = Exchange::new(8);
        let mut same = a.clone();
        let response = same.answer(&request).unwrap();
        assert!(matches!(
            e.on_response(&mut a, response.clone()),
            Ok(ExchangeStep::Done(_))
        ));
        assert_eq!(
            e.on_response(&mut a, response),
            Err(MerkleError::UnexpectedResponse("the exchange is over"))
        );

        // Unsorted keys and keys outside their segment.
        let (mut e, mut request) = Exchange::new(8);
        let segment = loop {
            let response = b.answer(&request).unwrap();
            match e.on_response(&mut a, response).unwrap() {
                ExchangeStep::Request(ExchangeRequest::Segments { segments }) => break segments[0],
                ExchangeStep::Request(next) => request = next,
                ExchangeStep::Done(_) => unreachable!("the trees differ"),
            }
        };
        let (b1, k1) = key(1);
        let wrong_segment = (segment + 1) % config.segments();
        let bad = ExchangeResponse::Segments(vec![(wrong_segment, Vec::new())]);
        assert!(e.clone().on_response(&mut a, bad).is_err());
        let stranger = ((b"x".to_vec(), b"y".to_vec()), 0);
        let mut stranger_keys = vec![((b1.clone(), k1.clone()), 5)];
        if a.segment_of(b"x", b"y") != segment {
            stranger_keys.push(stranger);
            let bad = ExchangeResponse::Segments(vec![(segment, stranger_keys)]);
            assert!(e.clone().on_response(&mut a, bad).is_err());
        }
        let twice = vec![((b1.clone(), k1.clone()), 5), ((b1, k1), 6)];
        let bad = ExchangeResponse::Segments(vec![(segment, twice)]);
        assert!(e.clone().on_response(&mut a, bad).is_err());
    }

    #[test]
    fn oversized_requests_are_refused() {
        let mut t = MerkleTree::new(MerkleConfig::default()).unwrap();
        let request = ExchangeRequest::Segments {
            segments: vec![0; MAX_EXCHANGE_ITEMS + 1],
        };
        assert_eq!(
            t.answer(&request),
            Err(MerkleError::TooManyItems {
                items: MAX_EXCHANGE_ITEMS + 1,
                max: MAX_EXCHANGE_ITEMS
            })
        );
        let request = ExchangeRequest::Children {
            nodes: vec![(0, 0), (3, 0)],
        };
        assert_eq!(
            t.answer(&request),
            Err(MerkleError::BadIndex { level: 3, index: 0 })
        );
    }

    #[test]
    fn messages_round_trip_through_postcard() {
        let config = MerkleConfig::default();
        let mut a = tree(config, &(0..50).map(|i| (i, 1)).collect());
        let mut b = tree(config, &(0..50).map(|i| (i, u64::from(i % 2))).collect());
        let (mut e, mut request) = Exchange::new(4);
        let outcome = loop {
            let bytes = postcard::to_allocvec(&request).unwrap();
            let received: ExchangeRequest = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(received, request);
            let response = b.answer(&received).unwrap();
            let bytes = postcard::to_allocvec(&response).unwrap();
            let received: ExchangeResponse = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(received, response);
            match e.on_response(&mut a, received).unwrap() {
                ExchangeStep::Request(next) => request = next,
                ExchangeStep::Done(outcome) => break outcome,
            }
        };
        let mut expected: Vec<TreeKey> = (0..50).filter(|i| i % 2 == 0).map(key).collect();
        expected.sort();
        assert_eq!(outcome.differing, expected);
    }

    #[test]
    fn empty_trees_and_children_fold_to_the_root() {
        let config = MerkleConfig::default();
        let mut empty = MerkleTree::new(config).unwrap();
        let mut t = tree(config, &(0..100).map(|i| (i, 3)).collect());
        for tree in [&mut empty, &mut t] {
            let root = tree.root();
            let children = tree.children(0, 0).unwrap();
            assert_eq!(children.into_iter().fold(FOLD_SEED, fold), root);
        }
        assert!(format!("{t:?}").len() < 200);
        assert_ne!(empty.root(), t.root());
    }
}
