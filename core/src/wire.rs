//! Messages between peers and their binary codec.
//!
//! A frame is `[WIRE_VERSION][postcard body]`; the host adds the length prefix and enforces
//! [`MAX_FRAME_BYTES`]. Objects travel in their stored record form, so every sibling's checksum is
//! checked again by the receiver before it merges anything.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::id::{CoordinationId, Millis, NodeId};
use crate::membership::GossipMessage;
use crate::merkle::{ExchangeRequest, ExchangeResponse};
use crate::request::{ClientRequest, Reply};
use crate::ring::PartitionId;
use crate::storage::StorageKey;
use crate::version::Context;

/// Version byte of the wire format. Version 2 (expiry and write conditions in requests, an
/// expiry in read answers) changed the encoding of forwards and their replies: a frame of
/// version 1 is refused whole ([`WireError::UnknownVersion`]), so nodes of the two versions
/// see each other as unreachable rather than misread each other (upgrade all nodes together;
/// until then, writes go to fallbacks and hints). Version 3 added replicas per zone to the
/// bucket properties and ring configuration that gossiped views carry.
pub const WIRE_VERSION: u8 = 3;
/// Largest frame a peer accepts: the largest value plus generous room for keys and clocks.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

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
    /// A forward without a deadline, as nodes sent it before [`Message::Forward`] carried one:
    /// still decoded (postcard encodes a variant by its position, so this one keeps the first
    /// place), and coordinated as a forward whose deadline never passes. Never sent now.
    ForwardWithoutDeadline {
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
    /// records after `after` (a transfer, in bounded, resumable chunks).
    TransferPull {
        /// The receiver's id for the transfer.
        id: CoordinationId,
        /// The partition.
        partition: PartitionId,
        /// Resume point: the last key of the previous chunk.
        after: Option<StorageKey>,
    },
    /// One chunk of a transfer; `done` when the partition has nothing after it.
    TransferChunk {
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
    /// A write reached a node that is not a replica; it asks a replica to coordinate it.
    /// (Last, so that the encoding of the other variants is unchanged.)
    Forward {
        /// The forwarder's id for the request.
        id: CoordinationId,
        /// The request as the client made it.
        request: ClientRequest,
        /// The earliest time (the forwarder's clock) at which the forwarder may give the
        /// forward up and coordinate the write elsewhere: a node that receives it later refuses
        /// it, and a host drops it from its queues, so that a write is never coordinated twice
        /// that way. Its precision is bounded by the clock skew between the two nodes.
        deadline: Millis,
    },
    /// A listing's coordinator asks a replica of `partition` for the bucket's live keys after
    /// `after`, at most `limit` of them (one bounded scan).
    ListKeys {
        /// The coordinator's id for this ask.
        id: CoordinationId,
        /// The partition.
        partition: PartitionId,
        /// Bucket.
        bucket: Vec<u8>,
        /// Resume point within the partition: the last key already scanned.
        after: Option<Vec<u8>>,
        /// Records to scan at most.
        limit: u32,
    },
    /// A replica's answer to `ListKeys`.
    KeysListed {
        /// The coordinator's id.
        id: CoordinationId,
        /// The live keys the scan found, in key order.
        keys: Vec<Vec<u8>>,
        /// The last key scanned, live or not (the resume point); `None` when none was.
        last: Option<Vec<u8>>,
        /// Whether the scan reached the end of the bucket in this partition.
        done: bool,
        /// False when the replica refused the scan (too many waiting, or a storage failure):
        /// the coordinator asks another replica.
        served: bool,
    },
    /// A watch's coordinator asks an owner of the key to tell it of a write `context` has not
    /// seen, for `lasts_ms` (then the owner forgets the registration).
    Watch {
        /// The coordinator's id for the watch.
        id: CoordinationId,
        /// Bucket.
        bucket: Vec<u8>,
        /// Key.
        key: Vec<u8>,
        /// What the watcher has seen.
        context: Context,
        /// How long the registration lasts (counted on the owner's clock).
        lasts_ms: Millis,
    },
    /// The watch `id` is over: forget its registration.
    Unwatch {
        /// The coordinator's id.
        id: CoordinationId,
    },
    /// An owner holds a write the watch `id` has not seen: its object, as stored.
    Changed {
        /// The coordinator's id.
        id: CoordinationId,
        /// The encoded object.
        record: Vec<u8>,
    },
    /// An owner refused a watch registration (its table is full).
    WatchRefused {
        /// The coordinator's id.
        id: CoordinationId,
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
    use crate::bucket::{QuorumValue, RequestOptions, WriteCondition};
    use crate::membership::{ClusterView, MemberInfo};
    use crate::merkle::MerkleConfig;
    use crate::request::QuorumKind;
    use crate::storage::Space;
    use crate::version::{ActorId, ConflictMode, Content, Dot, Object};
    // prop_oneof! with many arms builds a `vec!`, which no_std does not have in scope.
    use alloc::vec;
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

    /// Frames of version 1 are refused whole, never misread: version 2 changed how forwards
    /// (request options) and their replies (read answers) encode. Frames of the variants that
    /// did not change decode under the new version byte: postcard encodes a variant by its
    /// position, so renaming is free and reordering is not. The bytes are what the old names
    /// (`HandoffPull`/`HandoffChunk`, now `TransferPull`/`TransferChunk`) produced.
    #[test]
    fn frames_of_older_versions_are_refused_and_unchanged_variants_keep_their_bytes() {
        fn bytes(hex: &str) -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        }
        let key = StorageKey::data(PartitionId(7), b"b", b"k");
        let pull = Message::TransferPull {
            id: 5,
            partition: PartitionId(7),
            after: Some(key.clone()),
        };
        let chunk = Message::TransferChunk {
            id: 5,
            items: alloc::vec![(key, b"rec".to_vec())],
            done: true,
        };
        for old_version in ["01", "02"] {
            let frame = bytes(&alloc::format!("{old_version}0005000162016b0000000000"));
            assert!(matches!(
                Message::decode(&frame),
                Err(WireError::UnknownVersion(1 | 2))
            ));
        }
        for (message, old) in [
            (pull, "0905070100070162016b"),
            (chunk, "0a050100070162016b0372656301"),
            (Message::Ping, "0c"),
        ] {
            let mut frame = vec![WIRE_VERSION];
            frame.extend(bytes(old));
            assert_eq!(Message::decode(&frame), Ok(message.clone()));
            assert_eq!(message.encode(), frame);
        }
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

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..12)
    }

    fn node() -> impl Strategy<Value = NodeId> {
        "[a-z0-9.:-]{0,8}".prop_map(NodeId::new)
    }

    fn nodes() -> impl Strategy<Value = Vec<NodeId>> {
        proptest::collection::vec(node(), 0..3)
    }

    fn quorum() -> impl Strategy<Value = Option<QuorumValue>> {
        proptest::option::of(prop_oneof![
            Just(QuorumValue::One),
            Just(QuorumValue::Quorum),
            Just(QuorumValue::All),
            any::<u32>().prop_map(QuorumValue::Count),
        ])
    }

    fn options() -> impl Strategy<Value = RequestOptions> {
        (
            proptest::option::of(any::<u32>()),
            quorum(),
            quorum(),
            quorum(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of(proptest::option::of(object())),
        )
            .prop_map(
                |(n, r, w, dw, timeout_ms, ttl_ms, condition)| RequestOptions {
                    n,
                    r,
                    w,
                    dw,
                    timeout_ms,
                    ttl_ms,
                    condition: condition.map(|matched| match matched {
                        Some(object) => WriteCondition::IfMatch(object.context()),
                        None => WriteCondition::IfAbsent,
                    }),
                },
            )
    }

    /// An object (as its record) and its context after a few writes by a few actors.
    fn object() -> impl Strategy<Value = Object> {
        let write = (
            0u8..3,
            proptest::option::of(bytes()),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
        );
        proptest::collection::vec(write, 0..4).prop_map(|writes| {
            let mut object = Object::new();
            for (actor, value, now, expires_at) in writes {
                let content = value.map_or(Content::Tombstone, |v| Content::value(v, expires_at));
                let actor = ActorId::new(alloc::format!("n{actor}"));
                let context = object.context().into_clock();
                object.update(&context, &actor, content, now, ConflictMode::Siblings);
            }
            object
        })
    }

    fn dot() -> impl Strategy<Value = Dot> {
        ("[a-z]{1,4}", 1u64..).prop_map(|(actor, counter)| Dot {
            actor: ActorId::new(actor),
            counter,
        })
    }

    fn client_request() -> impl Strategy<Value = ClientRequest> {
        prop_oneof![
            (bytes(), bytes(), options()).prop_map(|(bucket, key, options)| ClientRequest::Get {
                bucket,
                key,
                options
            }),
            (bytes(), bytes(), object(), bytes(), options()).prop_map(
                |(bucket, key, object, value, options)| ClientRequest::Put {
                    bucket,
                    key,
                    context: object.context(),
                    value,
                    options,
                }
            ),
            (bytes(), bytes(), object(), options()).prop_map(|(bucket, key, object, options)| {
                ClientRequest::Delete {
                    bucket,
                    key,
                    context: object.context(),
                    options,
                }
            }),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            (
                proptest::collection::vec(bytes(), 0..3),
                object(),
                nodes(),
                nodes(),
                any::<bool>(),
                proptest::option::of(any::<u64>()),
            )
                .prop_map(
                    |(values, object, replicas, fallbacks, read_your_writes, expires_at)| {
                        Reply::Got {
                            values,
                            context: object.context(),
                            replicas,
                            fallbacks,
                            read_your_writes,
                            expires_at,
                        }
                    }
                ),
            (object(), dot(), nodes(), nodes(), any::<bool>()).prop_map(
                |(object, dot, replicas, fallbacks, read_your_writes)| Reply::Written {
                    context: object.context(),
                    dot,
                    durable: replicas.iter().take(1).cloned().collect(),
                    replicas,
                    fallbacks,
                    read_your_writes,
                }
            ),
            (any::<u32>(), nodes()).prop_map(|(needed, answered)| Reply::Unavailable {
                kind: QuorumKind::Write,
                needed,
                answered,
            }),
            ".{0,12}".prop_map(|reason| Reply::Failed { reason }),
            (object(), any::<bool>()).prop_map(|(object, exists)| Reply::PreconditionFailed {
                context: object.context(),
                exists,
            }),
        ]
    }

    fn storage_key() -> impl Strategy<Value = StorageKey> {
        (proptest::option::of(node()), any::<u32>(), bytes(), bytes()).prop_map(
            |(owner, partition, bucket, key)| StorageKey {
                space: owner.map_or(Space::Data, |owner| Space::Hint { owner }),
                partition: PartitionId(partition),
                bucket,
                key,
            },
        )
    }

    fn view() -> impl Strategy<Value = ClusterView> {
        (
            "[a-z]{1,6}",
            proptest::collection::btree_set("[a-z0-9]{1,6}", 0..4),
            1u32..8,
        )
            .prop_map(|(cluster, members, capacity)| {
                let mut view = ClusterView::new(cluster).unwrap();
                for id in members {
                    let info = MemberInfo::new(id.as_str(), "p:1", "c:2", capacity);
                    view.set_member(info).unwrap();
                }
                view
            })
    }

    fn exchange_request() -> impl Strategy<Value = ExchangeRequest> {
        prop_oneof![
            Just(ExchangeRequest::Root),
            proptest::collection::vec(any::<(u32, u32)>(), 0..4)
                .prop_map(|nodes| ExchangeRequest::Children { nodes }),
            proptest::collection::vec(any::<u32>(), 0..4)
                .prop_map(|segments| ExchangeRequest::Segments { segments }),
        ]
    }

    fn exchange_response() -> impl Strategy<Value = ExchangeResponse> {
        prop_oneof![
            (1u32..8, 1u32..5, any::<u64>()).prop_map(|(fanout, depth, hash)| {
                ExchangeResponse::Root {
                    config: MerkleConfig { fanout, depth },
                    hash,
                }
            }),
            proptest::collection::vec(
                (
                    any::<(u32, u32)>(),
                    proptest::collection::vec(any::<u64>(), 0..4)
                ),
                0..3
            )
            .prop_map(ExchangeResponse::Children),
            proptest::collection::vec(
                (
                    any::<u32>(),
                    proptest::collection::vec(((bytes(), bytes()), any::<u64>()), 0..3)
                ),
                0..3
            )
            .prop_map(ExchangeResponse::Segments),
        ]
    }

    /// Every kind of message, with contents of every shape.
    fn message() -> impl Strategy<Value = Message> {
        let hint = || proptest::option::of(node());
        let read_result = prop_oneof![
            object().prop_map(|object| ReadResult::Found(object.encode())),
            Just(ReadResult::NotFound),
            Just(ReadResult::Corrupt),
            Just(ReadResult::Failed),
        ];
        prop_oneof![
            (any::<u64>(), client_request())
                .prop_map(|(id, request)| Message::ForwardWithoutDeadline { id, request }),
            (any::<u64>(), client_request(), any::<u64>()).prop_map(|(id, request, deadline)| {
                Message::Forward {
                    id,
                    request,
                    deadline,
                }
            }),
            (any::<u64>(), reply()).prop_map(|(id, reply)| Message::ForwardReply { id, reply }),
            (any::<u64>(), bytes(), bytes(), hint()).prop_map(|(id, bucket, key, hint)| {
                Message::Read {
                    id,
                    bucket,
                    key,
                    hint,
                }
            }),
            (any::<u64>(), read_result).prop_map(|(id, result)| Message::ReadReply { id, result }),
            (
                any::<u64>(),
                bytes(),
                bytes(),
                object(),
                any::<bool>(),
                hint()
            )
                .prop_map(|(id, bucket, key, object, sync, hint)| Message::Write {
                    id,
                    bucket,
                    key,
                    record: object.encode(),
                    sync,
                    hint,
                }),
            (any::<u64>(), any::<bool>(), any::<bool>())
                .prop_map(|(id, stored, synced)| { Message::WriteReply { id, stored, synced } }),
            (any::<u64>(), any::<u32>(), exchange_request()).prop_map(
                |(id, partition, request)| Message::Exchange {
                    id,
                    partition: PartitionId(partition),
                    request,
                }
            ),
            (any::<u64>(), proptest::option::of(exchange_response()))
                .prop_map(|(id, response)| Message::ExchangeReply { id, response }),
            any::<u64>().prop_map(|digest| Message::Gossip(GossipMessage::Digest(digest))),
            view().prop_map(
                |view| Message::Gossip(GossipMessage::View(alloc::boxed::Box::new(view)))
            ),
            (
                any::<u64>(),
                any::<u32>(),
                proptest::option::of(storage_key())
            )
                .prop_map(|(id, partition, after)| Message::TransferPull {
                    id,
                    partition: PartitionId(partition),
                    after,
                }),
            (
                any::<u64>(),
                proptest::collection::vec((storage_key(), bytes()), 0..3),
                any::<bool>()
            )
                .prop_map(|(id, items, done)| Message::TransferChunk {
                    id,
                    items,
                    done
                }),
            (bytes(), bytes(), any::<u64>(), any::<u64>()).prop_map(
                |(bucket, key, digest, ring_version)| Message::Reap {
                    bucket,
                    key,
                    digest,
                    ring_version,
                }
            ),
            Just(Message::Ping),
            Just(Message::Pong),
            (bytes(), bytes(), object(), hint()).prop_map(|(bucket, key, object, hint)| {
                Message::Repair {
                    bucket,
                    key,
                    record: object.encode(),
                    hint,
                }
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn messages_round_trip(message in message()) {
            let frame = message.encode();
            prop_assert_eq!(frame[0], WIRE_VERSION);
            prop_assert_eq!(Message::decode(&frame), Ok(message));
        }

        #[test]
        fn a_cut_or_extended_frame_is_refused(message in message(), cut in any::<proptest::sample::Index>(), extra in 1u8..) {
            let frame = message.encode();
            // Postcard has no end marker, but a prefix always lacks a field and a suffix is
            // trailing bytes, so neither decodes (to this message or another).
            let at = cut.index(frame.len());
            prop_assert!(Message::decode(&frame[..at]).is_err());
            let mut longer = frame.clone();
            longer.push(extra);
            prop_assert!(Message::decode(&longer).is_err());
        }
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
