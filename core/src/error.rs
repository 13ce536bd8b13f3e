//! Typed errors of the core. Each variant's doc says what it did to the node's state.
use alloc::string::String;
use serde::{Deserialize, Serialize};

use crate::bucket::{QuorumError, TtlError};
use crate::id::{NodeId, RequestId};

/// Why a client request was refused before any work was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The key was empty. The request was dropped; no state changed.
    #[error("the key is empty")]
    EmptyKey,
    /// The key was over the limit. The request was dropped; no state changed.
    #[error("the key is {len} bytes, over the limit of {max}")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bucket name was over the limit. The request was dropped; no state changed.
    #[error("the bucket name is {len} bytes, over the limit of {max}")]
    BucketTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value was over the limit. The request was dropped; no state changed.
    #[error("the value is {len} bytes, over the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A quorum override was invalid. The request was dropped; no state changed.
    #[error("invalid quorum: {0}")]
    Quorum(#[from] QuorumError),
    /// A request with this id is still in flight on this node. The new request was dropped; the
    /// one in flight goes on.
    #[error("request id {0} is already in flight")]
    DuplicateRequestId(RequestId),
    /// A put or delete carried a context read from another bucket or key (see
    /// [`Context::check_key`](crate::version::Context::check_key)). The request was dropped; no
    /// state changed.
    #[error("{}", crate::version::ContextError::OtherKey)]
    ContextOfAnotherKey,
    /// A delete carried no context. It would delete nothing (a tombstone supersedes only what its
    /// context has seen) and must not be answered as a success. The request was dropped; no
    /// state changed.
    #[error(
        "a delete needs the context of a read of the key (it removes exactly what that read saw): \
         read the key and send its context (the CLI and the clients do this when given none)"
    )]
    DeleteWithoutContext,
    /// The time to live was 0 or over the maximum. The request was dropped; no state changed.
    #[error("invalid ttl: {0}")]
    Ttl(#[from] TtlError),
    /// A get or delete named a time to live: only a put's value expires. The request was
    /// dropped; no state changed.
    #[error(
        "a ttl applies to puts only (a get reads, and a delete's tombstone is reaped on its own)"
    )]
    TtlNotOnPut,
    /// A get carried a write condition. The request was dropped; no state changed.
    #[error("a write condition (If-None-Match, If-Match) applies to puts and deletes only")]
    ConditionOnRead,
    /// A delete asked for the key to be absent: it would never delete anything. The request
    /// was dropped; no state changed.
    #[error("a delete cannot require the key to be absent (If-None-Match: *): it would delete nothing; use If-Match with the read's context")]
    DeleteIfAbsent,
    /// A listing asked for 0 keys or more than the maximum. The request was dropped; no state
    /// changed.
    #[error("a listing's limit is 1 to {max} keys, not {limit}")]
    ListLimit {
        /// The limit asked for.
        limit: u32,
        /// The maximum.
        max: u32,
    },
    /// A listing's cursor was refused. The request was dropped; no state changed.
    #[error("invalid cursor: {0}")]
    Cursor(#[from] crate::listing::CursorError),
    /// A watch asked to wait 0 ms or longer than the maximum. The request was dropped; no state
    /// changed.
    #[error("a watch waits 1 to {max} ms, not {wait_ms}")]
    WatchWait {
        /// The wait asked for.
        wait_ms: u64,
        /// The maximum.
        max: u64,
    },
    /// The node already holds as many watches as it is configured for. The request was
    /// dropped; no state changed: retry later, or on another node.
    #[error("this node already holds {max} watches (its max_watches): retry later or elsewhere")]
    TooManyWatches {
        /// The node's bound.
        max: usize,
    },
    /// A restore's record is damaged, of another format or too large. The request was
    /// dropped; no state changed.
    #[error("invalid record to restore: {detail}")]
    BadRecord {
        /// What is wrong with it.
        detail: String,
    },
    /// The ring has no member to hold the key (an empty cluster). No state changed.
    #[error("the ring has no members")]
    NoReplicas,
    /// The quorum asked for is larger than the cluster: fewer members than the bucket's N hold
    /// the key, and fewer than the quorum. No state changed; the request could never succeed.
    #[error(
        "{quorum}={needed} cannot be met: the cluster has {members} member(s) for a bucket with \
         n={n}; ask for a smaller quorum (?{quorum}=1), lower the bucket's n \
         (PUT /buckets/<bucket>/props with {{\"n\": {members}}}), or add nodes"
    )]
    TooFewMembers {
        /// The quorum's request option: `r`, `w` or `dw`.
        quorum: String,
        /// Its size.
        needed: u32,
        /// Members of the ring (distinct nodes that can hold the key).
        members: usize,
        /// The bucket's N.
        n: u32,
    },
}

/// Why a peer message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The sender is not a member of this node's ring. The message was dropped; no state changed.
    #[error("message from {0}, which is not a member")]
    UnknownPeer(crate::id::NodeId),
    /// The message carried a key or bucket over the limits. It was dropped; no state changed.
    #[error("message with an oversized key or bucket")]
    Oversized,
}

/// A node configuration that cannot be used. No node is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The ring cannot be built from the configuration and members.
    #[error("ring: {0}")]
    Ring(#[from] crate::ring::RingError),
    /// The Merkle tree shape is invalid.
    #[error("merkle: {0}")]
    Merkle(#[from] crate::merkle::MerkleError),
    /// A bucket's N is above the ring's `target_n`.
    #[error("n = {n} is above the ring's target_n = {max}")]
    NAboveTarget {
        /// The bucket's N.
        n: u32,
        /// The ring's target_n.
        max: usize,
    },
    /// The cluster view cannot be built (a cluster name or member field over the limits).
    #[error("view: {0}")]
    View(#[from] crate::membership::ViewError),
    /// A configured bucket's object limits would make it unwritable.
    #[error("bucket limits: {0}")]
    Limits(#[from] crate::bucket::LimitsError),
    /// A configured bucket's default time to live is 0 or over the maximum.
    #[error("bucket default_ttl: {0}")]
    Ttl(#[from] TtlError),
    /// A configured bucket asks for more replicas in a zone than the ring places there.
    #[error("bucket: {0}")]
    Placement(#[from] CommandError),
}

/// Any refused input, for [`Node::handle_input`](crate::node::Node::handle_input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A refused client request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A refused peer message.
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// An operator command that was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A bucket's N must be between 1 and the ring's `target_n` (the replicas every node plans
    /// placement, transfers and anti-entropy for).
    #[error("n = {n} is out of range 1..={max}")]
    NOutOfRange {
        /// N asked for.
        n: u32,
        /// The ring's target_n.
        max: usize,
    },
    /// The bucket's quorums are invalid for its N.
    #[error("invalid quorum: {0}")]
    Quorum(#[from] QuorumError),
    /// The bucket asks for more replicas in a zone than the ring places there (the ring's
    /// `replicas_per_zone`, fixed for the cluster, bounds every bucket's, as `target_n` bounds N).
    #[error("n_per_zone asks {n} replicas in zone {zone:?}, but the ring places {ring} there (its replicas_per_zone)")]
    ZoneAboveRing {
        /// The zone.
        zone: alloc::string::String,
        /// Replicas the bucket asks there.
        n: u32,
        /// Replicas the ring places there.
        ring: u32,
    },
    /// The bucket's object limits would make it unwritable.
    #[error("invalid limits: {0}")]
    Limits(#[from] crate::bucket::LimitsError),
    /// The bucket's default time to live is 0 or over the maximum.
    #[error("invalid default_ttl: {0}")]
    Ttl(#[from] TtlError),
    /// The view refused the change (a limit).
    #[error("view: {0}")]
    View(#[from] crate::membership::ViewError),
    /// `remove` of an id that is not a member.
    #[error("{0} is not a member of the cluster")]
    UnknownMember(NodeId),
    /// `leave` of a node that has already left (it is removed; to come back it joins again).
    #[error("this node has already left the cluster (it is removed); to come back, join it again")]
    AlreadyLeft,
    /// The change would leave no member up to take the partitions over: the ring could never
    /// move again.
    #[error("{node} is the last member up: no member would be left to take its partitions over (add a node first)")]
    LastMemberUp {
        /// The member that would leave.
        node: NodeId,
    },
}
