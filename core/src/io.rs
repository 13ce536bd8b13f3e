//! The node's inputs and outputs: [`Input`], [`Output`], [`Event`] and operator [`Command`]s.
//!
//! What they carry has its own modules: client requests and replies in [`crate::request`],
//! storage effects in [`crate::storage`], peer messages in [`crate::wire`].
//!
//! Every output is an owned value with no borrow of the node, so a host (or Python, or JS) can hold
//! it as long as it likes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::bucket::BucketProps;
use crate::error::RequestError;
use crate::id::{Millis, NodeId, OpId, RequestId};
use crate::request::{ClientRequest, QuorumKind, Reply};
use crate::ring::PartitionId;
use crate::storage::{StorageError, StorageOp, StorageResult};
use crate::wire::Message;

/// Something that happened, for logs and metrics. Events never require an action from the host.
///
/// Serialized with stable snake_case variant names (the same as [`Event::kind`]), so hosts and
/// bindings can pass events through as documents. New kinds of event will be added: match with a
/// wildcard arm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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
    /// A request ended without its quorum: answered [`Reply::Unavailable`], or, when the write
    /// may still take effect, [`Reply::OutcomeUnknown`].
    QuorumFailed {
        /// Which quorum.
        kind: QuorumKind,
        /// Needed.
        needed: u32,
        /// Got.
        answered: u32,
        /// Whether the answer was `outcome_unknown` (the write may still land) rather than
        /// `unavailable`.
        #[serde(default)]
        outcome_unknown: bool,
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
    /// A node that holds no replica of the key and reached no owner coordinated a write itself,
    /// with a dot of a fresh actor (the always-writable path).
    FallbackCoordinated {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The write's dot.
        dot: crate::version::Dot,
    },
    /// A coordinated write left more siblings than the bucket's `siblings_warn`.
    ManySiblings {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// Siblings the object now has.
        siblings: u32,
    },
    /// A coordinated write was refused: it would have passed the bucket's `max_siblings` or
    /// `max_object_bytes` (the reply says which).
    WriteRefused {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// `too_many_siblings` or `object_too_large`.
        bound: String,
    },
    /// A forwarded write's coordinator was not heard from within its share of the timeout (nor
    /// answered a ping): the write is coordinated elsewhere.
    ForwardAbandoned {
        /// The silent coordinator.
        to: NodeId,
    },
    /// This node left the ring and has handed over every hint and orphaned record: it may be
    /// stopped, and its disk discarded.
    Drained,
    /// This node sent a chunk of a partition to a node pulling it under the next ring.
    TransferSent {
        /// The partition.
        partition: PartitionId,
        /// The receiver.
        to: NodeId,
        /// Records in the chunk.
        keys: u32,
        /// Bytes of those records (keys and encoded objects).
        bytes: u64,
        /// Whether it was the partition's last chunk.
        done: bool,
    },
    /// This node received a chunk of a partition it pulls under the next ring (its records are
    /// being stored).
    TransferReceived {
        /// The partition.
        partition: PartitionId,
        /// The sender.
        from: NodeId,
        /// Records in the chunk.
        keys: u32,
        /// Bytes of those records (keys and encoded objects).
        bytes: u64,
        /// Whether it was the partition's last chunk: the pull from this sender is finished.
        done: bool,
    },
}

impl Event {
    /// The event's kind as a stable snake_case name (`checksum_failure`, `peer_down`, ...): its
    /// serde variant name, for logs, metrics labels and the bindings.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ChecksumFailure { .. } => "checksum_failure",
            Event::ReadRepair { .. } => "read_repair",
            Event::QuorumFailed { .. } => "quorum_failed",
            Event::StorageFailed { .. } => "storage_failed",
            Event::MessageDropped { .. } => "message_dropped",
            Event::AntiEntropy { .. } => "anti_entropy",
            Event::AntiEntropyAbandoned { .. } => "anti_entropy_abandoned",
            Event::TombstoneReaped { .. } => "tombstone_reaped",
            Event::PeerDown { .. } => "peer_down",
            Event::PeerUp { .. } => "peer_up",
            Event::DownAlert { .. } => "down_alert",
            Event::ViewChanged { .. } => "view_changed",
            Event::ActorRenewed { .. } => "actor_renewed",
            Event::FallbackCoordinated { .. } => "fallback_coordinated",
            Event::ForwardAbandoned { .. } => "forward_abandoned",
            Event::Drained => "drained",
            Event::ManySiblings { .. } => "many_siblings",
            Event::WriteRefused { .. } => "write_refused",
            Event::TransferSent { .. } => "transfer_sent",
            Event::TransferReceived { .. } => "transfer_received",
        }
    }
}

/// `bucket/key` for a line of text: lossy UTF-8, since keys are bytes.
struct KeyText<'a>(&'a [u8], &'a [u8]);

impl fmt::Display for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            String::from_utf8_lossy(self.0),
            String::from_utf8_lossy(self.1)
        )
    }
}

/// One human-readable line, as the simulator's trace and the bindings show it.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::ChecksumFailure {
                bucket,
                key,
                detail,
            } => write!(f, "checksum failure on {}: {detail}", KeyText(bucket, key)),
            Event::ReadRepair {
                bucket,
                key,
                replicas,
            } => {
                write!(f, "read repair of {} on ", KeyText(bucket, key))?;
                for (i, replica) in replicas.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{replica}")?;
                }
                Ok(())
            }
            Event::QuorumFailed {
                kind,
                needed,
                answered,
                outcome_unknown,
            } => {
                write!(f, "{kind} quorum failed: {answered} of {needed} answered")?;
                if *outcome_unknown {
                    f.write_str(" (outcome unknown)")?;
                }
                Ok(())
            }
            Event::StorageFailed { error } => write!(f, "storage failed: {error}"),
            Event::MessageDropped { from, reason } => {
                write!(f, "message from {from} dropped: {reason}")
            }
            Event::AntiEntropy {
                partition,
                peer,
                differing,
                repaired,
                ..
            } => write!(
                f,
                "anti-entropy of partition {} with {peer}: {differing} differing, {repaired} repaired",
                partition.0
            ),
            Event::AntiEntropyAbandoned {
                partition,
                peer,
                reason,
            } => write!(
                f,
                "anti-entropy of partition {} with {peer} abandoned: {reason}",
                partition.0
            ),
            Event::TombstoneReaped { bucket, key } => {
                write!(f, "tombstone of {} reaped", KeyText(bucket, key))
            }
            Event::PeerDown { peer } => write!(f, "{peer} is down"),
            Event::PeerUp { peer } => write!(f, "{peer} is up"),
            Event::DownAlert { peer, down_ms } => {
                write!(f, "{peer} has been down for {down_ms} ms")
            }
            Event::ViewChanged { digest } => {
                write!(f, "cluster view changed (digest {digest:016x})")
            }
            Event::ActorRenewed { actor } => write!(f, "new version-vector actor {actor}"),
            Event::FallbackCoordinated { bucket, key, dot } => write!(
                f,
                "{} written as {dot} by a node that holds no replica and reached no owner",
                KeyText(bucket, key)
            ),
            Event::ManySiblings {
                bucket,
                key,
                siblings,
            } => write!(f, "{} has {siblings} siblings", KeyText(bucket, key)),
            Event::WriteRefused { bucket, key, bound } => {
                write!(f, "write of {} refused: {bound}", KeyText(bucket, key))
            }
            Event::ForwardAbandoned { to } => write!(
                f,
                "forwarded write not answered by {to}: coordinated elsewhere"
            ),
            Event::Drained => write!(
                f,
                "left the ring and handed everything over: this node may be stopped"
            ),
            Event::TransferSent {
                partition,
                to,
                keys,
                bytes,
                done,
            } => write!(
                f,
                "sent {keys} records ({bytes} bytes) of partition {} to {to}{}",
                partition.0,
                if *done { ", the last" } else { "" }
            ),
            Event::TransferReceived {
                partition,
                from,
                keys,
                bytes,
                done,
            } => write!(
                f,
                "received {keys} records ({bytes} bytes) of partition {} from {from}{}",
                partition.0,
                if *done { ", the last" } else { "" }
            ),
        }
    }
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
