//! Messages between peers and their binary codec.
//!
//! A frame is `[WIRE_VERSION][postcard body]`; the host adds the length prefix and enforces
//! [`MAX_FRAME_BYTES`]. Objects travel in their stored record form, so every sibling's checksum is
//! checked again by the receiver before it merges anything.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::io::{ClientRequest, Reply, StorageKey};
use crate::membership::GossipMessage;
use crate::merkle::{ExchangeRequest, ExchangeResponse};
use crate::ring::PartitionId;

/// Version byte of the wire format.
pub const WIRE_VERSION: u8 = 1;
/// Largest frame a peer accepts: the largest value plus generous room for keys and clocks.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Id a coordinator gives to one request it coordinates; replies carry it back.
pub type CoordinationId = u64;

/// What one replica answered to a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadResult {
    /// The encoded object (a record, see [`Object::encode`](crate::version::Object::encode)).
    Found(Vec<u8>),
    /// No record.
    NotFound,
    /// The record failed its checksum: treated as missing, and repaired.
    Corrupt,
    /// Storage failed on the replica.
    Failed,
}

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A write reached a node that is not a replica; it asks a replica to coordinate it.
    Forward {
        /// The forwarder's id for the request.
        id: CoordinationId,
        /// The request as the client made it.
        request: ClientRequest,
    },
    /// The answer to a `Forward`.
    ForwardReply {
        /// The forwarder's id.
        id: CoordinationId,
        /// The coordinator's reply.
        reply: Reply,
    },
    /// Read a key's local replica (or, with `hint`, the copy held for that unreachable owner).
    Read {
        /// Coordinator's id.
        id: CoordinationId,
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The owner this node stands in for, when it is a sloppy-quorum fallback.
        hint: Option<NodeId>,
    },
    /// A replica's answer to `Read`.
    ReadReply {
        /// Coordinator's id.
        id: CoordinationId,
        /// What it found.
        result: ReadResult,
    },
    /// Merge this object into the local replica and acknowledge.
    Write {
        /// Coordinator's id.
        id: CoordinationId,
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The encoded object.
        record: Vec<u8>,
        /// Whether the replica must make it durable before acknowledging.
        sync: bool,
        /// The unreachable owner this node holds the write for (a sloppy-quorum fallback keeps
        /// it as a hint and hands it over later).
        hint: Option<NodeId>,
    },
    /// A replica's answer to `Write`.
    WriteReply {
        /// Coordinator's id.
        id: CoordinationId,
        /// Whether it was stored.
        stored: bool,
        /// Whether it is durable.
        synced: bool,
    },
    /// One step of a Merkle exchange over `partition`: the initiator's request.
    Exchange {
        /// The initiator's id for the exchange.
        id: CoordinationId,
        /// The partition compared.
        partition: PartitionId,
        /// The request.
        request: ExchangeRequest,
    },
    /// The answer to `Exchange`; `None` when this node has no ready tree for the partition or
    /// the request was malformed (the exchange is abandoned).
    ExchangeReply {
        /// The initiator's id.
        id: CoordinationId,
        /// The answer.
        response: Option<ExchangeResponse>,
    },
    /// Cluster-view gossip (push-pull, see
    /// [`handle_gossip`](crate::membership::handle_gossip)).
    Gossip(GossipMessage),
    /// A receiver of `partition` under the next ring asks a current replica for the partition's
    /// records after `after` (hand-over, in bounded, resumable chunks).
    HandoffPull {
        /// The receiver's id for the transfer.
        id: CoordinationId,
        /// The partition.
        partition: PartitionId,
        /// Resume point: the last key of the previous chunk.
        after: Option<StorageKey>,
    },
    /// One chunk of a hand-over; `done` when the partition has nothing after it.
    HandoffChunk {
        /// The receiver's id.
        id: CoordinationId,
        /// Keys and records.
        items: Vec<(StorageKey, Vec<u8>)>,
        /// Whether this was the last chunk.
        done: bool,
    },
    /// Every replica holds this key's tombstone and its grace period is over: delete the record
    /// if its object still has this digest (a write since then keeps it).
    Reap {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// [`object_digest`](crate::merkle::object_digest) of the tombstone object.
        digest: u64,
        /// Version of the ring the check was made under; a replica with another ignores it.
        ring_version: u64,
    },
    /// Are you there? Sent now and then to peers this node suspects; any message back clears
    /// the suspicion.
    Ping,
    /// The answer to `Ping`.
    Pong,
    /// Merge this object into the local replica; no answer (read repair).
    Repair {
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// The encoded object.
        record: Vec<u8>,
        /// As for `Write`.
        hint: Option<NodeId>,
    },
}

/// A frame that could not be decoded. The frame is dropped; a host closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame was empty.
    #[error("empty frame")]
    Empty,
    /// The version byte is not one this node speaks.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// The frame is over [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The body is not a valid message.
    #[error("malformed message")]
    Malformed,
}

impl Message {
    /// Encodes a frame: version byte then postcard body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(WIRE_VERSION);
        // Serializing owned, finite data into a Vec cannot fail.
        postcard::to_extend(self, out).unwrap_or_else(|_| alloc::vec![WIRE_VERSION])
    }

    /// Decodes a frame made by [`Message::encode`].
    pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(WireError::TooLarge(frame.len()));
        }
        let (&version, body) = frame.split_first().ok_or(WireError::Empty)?;
        if version != WIRE_VERSION {
            return Err(WireError::UnknownVersion(version));
        }
        let (message, rest) =
            postcard::take_from_bytes::<Message>(body).map_err(|_| WireError::Malformed)?;
        if !rest.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let message = Message::Write {
            id: 7,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            record: alloc::vec![1, 2, 3],
            sync: true,
            hint: Some(NodeId::new("n3")),
        };
        assert_eq!(Message::decode(&message.encode()), Ok(message));
    }

    #[test]
    fn rejects_bad_frames() {
        assert_eq!(Message::decode(&[]), Err(WireError::Empty));
        assert_eq!(Message::decode(&[9, 0]), Err(WireError::UnknownVersion(9)));
        assert_eq!(Message::decode(&[WIRE_VERSION]), Err(WireError::Malformed));
        let mut frame = Message::ReadReply {
            id: 1,
            result: ReadResult::NotFound,
        }
        .encode();
        frame.push(0);
        assert_eq!(Message::decode(&frame), Err(WireError::Malformed));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
            let mut framed = alloc::vec![WIRE_VERSION];
            framed.extend_from_slice(&bytes);
            let _ = Message::decode(&framed);
        }
    }
}
