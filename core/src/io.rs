//! The node's inputs and outputs: client requests and replies, storage effects and events.
//!
//! Every output is an owned value with no borrow of the node, so a host (or Python, or JS) can hold
//! it as long as it likes.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::config::{BucketProps, Millis, RequestOptions};
use crate::error::RequestError;
use crate::id::NodeId;
use crate::ring::PartitionId;
use crate::version::{Context, Dot};
use crate::wire::Message;

/// Id of a client request, chosen by the host; unique among the requests in flight on one node.
pub type RequestId = u64;

/// Id of a storage operation, chosen by the node; the host answers with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// What a client asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key: all its siblings and one context.
    Get {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Quorum and timeout overrides.
        options: RequestOptions,
    },
    /// Write a value. It replaces exactly the siblings `context` has seen; with an empty context it
    /// adds a sibling.
    Put {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Context from an earlier get (or put), or empty.
        context: Context,
        /// The value.
        value: Vec<u8>,
        /// Quorum and timeout overrides.
        options: RequestOptions,
    },
    /// Delete: a put of a tombstone, with the same context rules.
    Delete {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Context from an earlier get, or empty.
        context: Context,
        /// Quorum and timeout overrides.
        options: RequestOptions,
    },
}

impl ClientRequest {
    /// The bucket and key the request is about.
    pub fn target(&self) -> (&[u8], &[u8]) {
        match self {
            ClientRequest::Get { bucket, key, .. }
            | ClientRequest::Put { bucket, key, .. }
            | ClientRequest::Delete { bucket, key, .. } => (bucket, key),
        }
    }

    /// The request's overrides.
    pub fn options(&self) -> &RequestOptions {
        match self {
            ClientRequest::Get { options, .. }
            | ClientRequest::Put { options, .. }
            | ClientRequest::Delete { options, .. } => options,
        }
    }
}

/// Which quorum a request failed to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuorumKind {
    /// R replies to a get.
    Read,
    /// W acknowledgements of a put.
    Write,
    /// DW durable acknowledgements of a put.
    Durable,
}

/// The answer to a client request. Quorum failures are outcomes, not errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A get reached R replies.
    Got {
        /// Live sibling values; empty when the key is absent or deleted.
        values: Vec<Vec<u8>>,
        /// Context to pass to the next put; non-empty for a deleted key (its tombstone's history).
        context: Context,
        /// Replicas whose replies were merged.
        replicas: Vec<NodeId>,
        /// Of those, the fallbacks that stood in for unreachable preference-list nodes.
        fallbacks: Vec<NodeId>,
        /// False when `r + w <= n` for this request and the bucket's w.
        read_your_writes: bool,
    },
    /// A put or delete reached W acknowledgements (DW of them durable).
    Written {
        /// Context of the object at the coordinator after the write.
        context: Context,
        /// The dot the write was given: its identity in every clock.
        dot: Dot,
        /// Replicas that acknowledged before the reply.
        replicas: Vec<NodeId>,
        /// Of those, the ones that had made it durable.
        durable: Vec<NodeId>,
        /// Of those, the fallbacks that stood in for unreachable preference-list nodes (a sloppy
        /// quorum): they hold the write as a hint until the owner is back.
        fallbacks: Vec<NodeId>,
        /// False when `r + w <= n` for this request and the bucket's r.
        read_your_writes: bool,
    },
    /// The quorum was not reached before the timeout. A write may still have been applied on the
    /// replicas that answered and on the coordinator.
    Unavailable {
        /// Which quorum failed.
        kind: QuorumKind,
        /// How many were needed.
        needed: u32,
        /// Replicas that answered in time.
        answered: Vec<NodeId>,
    },
    /// The request could not be carried out (a storage failure on the coordinator, say).
    Failed {
        /// What went wrong, for the client.
        reason: String,
    },
    /// The coordinator's disk is full: its local write failed before any replica was asked, so
    /// nothing was written. (Last, so that the encoding of the other variants is unchanged.)
    StorageFull {
        /// The storage engine's description.
        reason: String,
    },
}

/// Which kind of record a storage key names. Data sorts before hints, so a host can keep both in
/// one ordered keyspace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Space {
    /// This node's replica of a key.
    Data,
    /// A replica this node holds for `owner`, which was unreachable when it was written (a hint);
    /// delivered to the owner and deleted once the owner has it.
    Hint {
        /// The preference-list node the write was meant for.
        owner: NodeId,
    },
    /// The node's own metadata (its cluster view), under `key`; bucket and partition unused.
    Meta,
}

/// The key under which a node stores an object: grouped by space then partition, so a
/// partition's keys (or all hints) can be scanned in order. Ordered as its encoding is, so a host
/// that scans encoded keys and [`MemStore`](crate::store::MemStore) agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StorageKey {
    /// Data or hint.
    pub space: Space,
    /// The Q-partition of the key.
    pub partition: PartitionId,
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key.
    pub key: Vec<u8>,
}

impl StorageKey {
    /// A key of this node's own replica.
    pub fn data(partition: PartitionId, bucket: &[u8], key: &[u8]) -> StorageKey {
        StorageKey {
            space: Space::Data,
            partition,
            bucket: bucket.to_vec(),
            key: key.to_vec(),
        }
    }

    /// Where a node keeps its cluster view.
    pub fn view() -> StorageKey {
        StorageKey {
            space: Space::Meta,
            partition: PartitionId(0),
            bucket: Vec::new(),
            key: b"view".to_vec(),
        }
    }

    /// The same bucket and key in another space.
    pub fn in_space(&self, space: Space) -> StorageKey {
        StorageKey {
            space,
            partition: self.partition,
            bucket: self.bucket.clone(),
            key: self.key.clone(),
        }
    }

    fn order_key(&self) -> (u8, usize, &[u8], PartitionId, usize, &[u8], &[u8]) {
        let (tag, owner): (u8, &[u8]) = match &self.space {
            Space::Data => (0, &[]),
            Space::Hint { owner } => (1, owner.as_str().as_bytes()),
            Space::Meta => (2, &[]),
        };
        (
            tag,
            owner.len(),
            owner,
            self.partition,
            self.bucket.len(),
            &self.bucket,
            &self.key,
        )
    }
}

impl Ord for StorageKey {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartialOrd for StorageKey {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A storage key that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed storage key")]
pub struct StorageKeyError;

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], StorageKeyError> {
    if bytes.len() < n {
        return Err(StorageKeyError);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8]) -> Result<u32, StorageKeyError> {
    let b = take(bytes, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl StorageKey {
    /// Bytes whose lexicographic order is the order of storage keys: space tag (0 data, 1 hint),
    /// for hints the owner's length (u32 BE) and name, then partition (u32 BE), bucket length
    /// (u32 BE), bucket, key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.bucket.len() + self.key.len());
        match &self.space {
            Space::Data => out.push(0),
            Space::Hint { owner } => {
                out.push(1);
                out.extend_from_slice(&(owner.as_str().len() as u32).to_be_bytes());
                out.extend_from_slice(owner.as_str().as_bytes());
            }
            Space::Meta => out.push(2),
        }
        out.extend_from_slice(&self.partition.0.to_be_bytes());
        out.extend_from_slice(&(self.bucket.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.bucket);
        out.extend_from_slice(&self.key);
        out
    }

    /// The inverse of [`StorageKey::encode`].
    pub fn decode(mut bytes: &[u8]) -> Result<StorageKey, StorageKeyError> {
        let input = &mut bytes;
        let space = match take(input, 1)?[0] {
            0 => Space::Data,
            1 => {
                let len = take_u32(input)? as usize;
                let owner = core::str::from_utf8(take(input, len)?).map_err(|_| StorageKeyError)?;
                Space::Hint {
                    owner: NodeId::new(owner),
                }
            }
            2 => Space::Meta,
            _ => return Err(StorageKeyError),
        };
        let partition = PartitionId(take_u32(input)?);
        let bucket_len = take_u32(input)? as usize;
        let bucket = take(input, bucket_len)?.to_vec();
        Ok(StorageKey {
            space,
            partition,
            bucket,
            key: input.to_vec(),
        })
    }
}

/// Which records a scan walks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanRange {
    /// This node's replicas of one partition.
    Partition(PartitionId),
    /// Every hint, whoever it is for.
    Hints,
}

impl ScanRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &StorageKey) -> bool {
        match self {
            ScanRange::Partition(partition) => {
                key.space == Space::Data && key.partition == *partition
            }
            ScanRange::Hints => matches!(key.space, Space::Hint { .. }),
        }
    }

    /// The smallest key of the range.
    pub fn start(&self) -> StorageKey {
        match self {
            ScanRange::Partition(partition) => StorageKey::data(*partition, &[], &[]),
            ScanRange::Hints => StorageKey {
                space: Space::Hint {
                    owner: NodeId::new(""),
                },
                partition: PartitionId(0),
                bucket: Vec::new(),
                key: Vec::new(),
            },
        }
    }
}

/// One write of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    /// Store a record.
    Put {
        /// Where.
        key: StorageKey,
        /// The encoded object.
        record: Vec<u8>,
    },
    /// Remove a record.
    Delete {
        /// Where.
        key: StorageKey,
    },
}

/// A storage operation the node asks the host to perform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageOp {
    /// Read one record.
    Get {
        /// Which.
        key: StorageKey,
    },
    /// Store one record; with `sync` the host answers only once it is durable (fsynced).
    Put {
        /// Where.
        key: StorageKey,
        /// The encoded object (see [`Object::encode`](crate::version::Object::encode)).
        record: Vec<u8>,
        /// Whether the write must be durable before the answer.
        sync: bool,
    },
    /// Remove one record.
    Delete {
        /// Which.
        key: StorageKey,
    },
    /// Apply all the writes or none.
    Batch {
        /// The writes, applied in order.
        ops: Vec<BatchOp>,
        /// Whether the batch must be durable before the answer.
        sync: bool,
    },
    /// Records of a range in key order, strictly after `after`, at most `limit` of them.
    Scan {
        /// Which records.
        range: ScanRange,
        /// Resume point: the last key of the previous page.
        after: Option<StorageKey>,
        /// Page size.
        limit: usize,
    },
}

/// Why a storage operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageErrorKind {
    /// No space left; nothing of the operation was applied.
    Full,
    /// Any other I/O failure.
    Io,
}

/// A storage operation that failed; the host guarantees it was not applied (batches are atomic).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("storage {kind:?}: {message}")]
pub struct StorageError {
    /// Class of failure.
    pub kind: StorageErrorKind,
    /// The host's description.
    pub message: String,
}

/// The host's answer to a [`StorageOp`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageResult {
    /// Answer to `Get`: the record, if any.
    Record(Option<Vec<u8>>),
    /// Answer to `Put`, `Delete` and `Batch`: applied; `synced` tells whether it is durable.
    Written {
        /// Whether the write is durable.
        synced: bool,
    },
    /// Answer to `Scan`.
    Scanned {
        /// Keys and records in key order.
        items: Vec<(StorageKey, Vec<u8>)>,
        /// True when the range has no records after the last one returned.
        done: bool,
    },
    /// The operation failed and was not applied.
    Failed(StorageError),
}

/// Something that happened, for logs and metrics. Events never require an action from the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A stored record failed its checksum; the replica is treated as missing and will be repaired.
    ChecksumFailure {
        /// Bucket of the damaged record.
        bucket: Vec<u8>,
        /// Key of the damaged record.
        key: Vec<u8>,
        /// What the decoder said.
        detail: String,
    },
    /// A get sent the merged object to replicas that were missing part of it.
    ReadRepair {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Replicas repaired.
        replicas: Vec<NodeId>,
    },
    /// A request ended without its quorum.
    QuorumFailed {
        /// Which quorum.
        kind: QuorumKind,
        /// Needed.
        needed: u32,
        /// Got.
        answered: u32,
    },
    /// A storage operation failed.
    StorageFailed {
        /// The error.
        error: StorageError,
    },
    /// A peer message was dropped (unknown sender, stale reply, undecodable).
    MessageDropped {
        /// Sender.
        from: NodeId,
        /// Why.
        reason: String,
    },
    /// An anti-entropy exchange ended.
    AntiEntropy {
        /// The partition compared.
        partition: PartitionId,
        /// The peer replica.
        peer: NodeId,
        /// Keys whose replicas differed.
        differing: u32,
        /// Of those, the keys this exchange repaired (the rest wait for the next one).
        repaired: u32,
        /// Messages the exchange took.
        requests: u32,
    },
    /// An anti-entropy exchange was abandoned (a malformed or missing answer).
    AntiEntropyAbandoned {
        /// The partition.
        partition: PartitionId,
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// A deleted key's tombstone was removed from this replica.
    TombstoneReaped {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
    },
    /// The failure detector stopped hearing from a peer: requests go to fallbacks meanwhile.
    PeerDown {
        /// The peer.
        peer: NodeId,
    },
    /// A peer that was down is heard from again.
    PeerUp {
        /// The peer.
        peer: NodeId,
    },
    /// A peer has been down longer than the configured alert time (once per outage). Being
    /// down is not leaving: its partitions stay its own until an operator says leave or remove.
    DownAlert {
        /// The peer.
        peer: NodeId,
        /// How long it has been down.
        down_ms: Millis,
    },
    /// This node's cluster view changed (merged from gossip, or by an operator command).
    ViewChanged {
        /// The new view's digest.
        digest: u64,
    },
    /// The node started using a new version-vector actor (after finding its own record damaged,
    /// it cannot know which dots it issued for that key).
    ActorRenewed {
        /// The new actor.
        actor: String,
    },
}

/// What the node wants done. Drain with [`Node::poll_output`](crate::node::Node::poll_output)
/// until `None` after every input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Send a message to a peer (best effort: the protocol tolerates loss).
    Send {
        /// Receiver.
        to: NodeId,
        /// The message.
        message: Message,
    },
    /// Perform a storage operation and answer with
    /// [`Node::handle_storage`](crate::node::Node::handle_storage) and the same `op_id`.
    Storage {
        /// Id to answer with.
        op_id: OpId,
        /// The operation.
        op: StorageOp,
    },
    /// Answer a client request.
    Reply {
        /// The request's id.
        request_id: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Something for logs and metrics.
    Event(Event),
}

/// An operator's command to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// This node leaves the cluster: its partitions are handed to the others, then it is
    /// marked removed.
    Leave,
    /// Mark a member removed without its cooperation (it is gone for good); its partitions are
    /// rebuilt on others from the remaining replicas.
    Remove {
        /// The member.
        node: NodeId,
    },
    /// Set a bucket's properties cluster-wide (they spread by gossip).
    SetBucket {
        /// Bucket name.
        bucket: Vec<u8>,
        /// Its properties.
        props: BucketProps,
    },
}

/// Every input of a node, as one value (for hosts that queue inputs, and for the bindings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A client request.
    Client {
        /// Id chosen by the host.
        request_id: RequestId,
        /// The request.
        request: ClientRequest,
    },
    /// A message from a peer.
    Message {
        /// Sender.
        from: NodeId,
        /// The message.
        message: Message,
    },
    /// The answer to a storage operation.
    StorageDone {
        /// The operation's id.
        op_id: OpId,
        /// Its result.
        result: StorageResult,
    },
    /// Time passed; deadlines at or before `now` fire.
    Timeout,
}

/// Returned by [`Node::handle_client`](crate::node::Node::handle_client): the typed error of a refused request.
pub type ClientResult = Result<(), RequestError>;
