//! Unit tests of the node facade's accounting across subsystems.

use alloc::vec::Vec;

use super::Node;
use crate::bucket::RequestOptions;
use crate::config::NodeConfig;
use crate::io::Output;
use crate::request::ClientRequest;
use crate::ring::Member;
use crate::storage::Space;
use crate::store::{drive, MemStore};
use crate::version::{ActorId, ConflictMode, Content, Object, VersionVector};
use crate::wire::Message;
use crate::NodeId;

/// Node `n1` of three, with one hint for `n2` on its disk, and peers that never answer requests
/// but keep saying they are alive.
fn node_with_a_hint() -> (Node, MemStore) {
    let mut config = NodeConfig::new("n1");
    config.request_timeout_ms = 600_000;
    config.hint_delivery_interval_ms = 1_000;
    config.anti_entropy_interval_ms = 1_000;
    let members = ["n1", "n2", "n3"].map(|id| Member::new(id, 1)).to_vec();
    let node = Node::new(config, members, 0).unwrap();
    let mut store = MemStore::new();
    let mut object = Object::new();
    object.update(
        &VersionVector::default(),
        &ActorId::new("n3.0.0"),
        Content::Value(b"v".to_vec()),
        0,
        ConflictMode::Siblings,
    );
    let hint = node.storage_key(b"b", b"k").in_space(Space::Hint {
        owner: NodeId::new("n2"),
    });
    store.apply(&crate::storage::StorageOp::Put {
        key: hint,
        record: object.encode(),
        sync: true,
    });
    (node, store)
}

/// Runs the node's timers up to `until`, with `n2` and `n3` heard from at every step; returns
/// the messages it sent.
fn run(node: &mut Node, store: &mut MemStore, until: u64) -> Vec<(NodeId, Message)> {
    let mut sent = Vec::new();
    while let Some(deadline) = node.poll_timeout().filter(|d| *d <= until) {
        for peer in ["n2", "n3"] {
            node.handle_message(deadline, NodeId::new(peer), Message::Pong)
                .unwrap();
        }
        node.handle_timeout(deadline);
        for output in drive(node, store, deadline) {
            if let Output::Send { to, message } = output {
                sent.push((to, message));
            }
        }
    }
    sent
}

#[test]
fn background_work_is_not_counted_as_client_requests_in_flight() {
    let (mut node, mut store) = node_with_a_hint();
    let sent = run(&mut node, &mut store, 3_000);
    let delivering = sent
        .iter()
        .any(|(to, m)| to.as_str() == "n2" && matches!(m, Message::Write { sync: true, .. }));
    let exchanging = sent
        .iter()
        .any(|(_, m)| matches!(m, Message::Exchange { .. }));
    assert!(delivering, "the hint was not sent to its owner: {sent:?}");
    assert!(exchanging, "no Merkle exchange started: {sent:?}");
    // Neither the hint delivery nor the exchange (both unanswered, so still waiting) is a
    // client request.
    assert!(!node.hints.deliveries.is_empty());
    assert!(!node.anti_entropy.exchanges.is_empty());
    assert_eq!(node.in_flight(), 0);

    let get = ClientRequest::Get {
        bucket: b"b".to_vec(),
        key: b"other".to_vec(),
        options: RequestOptions::default(),
    };
    node.handle_client(3_000, 1, get).unwrap();
    drive(&mut node, &mut store, 3_000);
    assert_eq!(node.in_flight(), 1);
}

/// Node `id` of five (so that some keys are not its own), default settings.
fn one_of_five(id: &str) -> Node {
    let members = ["n1", "n2", "n3", "n4", "n5"]
        .map(|id| Member::new(id, 1))
        .to_vec();
    Node::new(NodeConfig::new(id), members, 0).unwrap()
}

/// The first key `node` holds a replica of (`owned`), or the first it does not.
fn key_where(node: &Node, owned: bool) -> Vec<u8> {
    (0..)
        .map(|i| alloc::format!("key-{i}").into_bytes())
        .find(|key| {
            let replicas = node.preference_list(b"b", key, 3);
            replicas.contains(node.id()) == owned
        })
        .unwrap()
}

fn put(key: &[u8]) -> ClientRequest {
    ClientRequest::Put {
        bucket: b"b".to_vec(),
        key: key.to_vec(),
        context: Default::default(),
        value: b"v".to_vec(),
        options: RequestOptions::default(),
    }
}

fn outputs(node: &mut Node) -> Vec<Output> {
    core::iter::from_fn(|| node.poll_output()).collect()
}

/// Before: a forward was coordinated whenever it arrived, even after its forwarder had given
/// it up and coordinated the write elsewhere (twice coordinated).
#[test]
fn a_forward_past_its_deadline_is_refused() {
    let mut node = one_of_five("n1");
    let key = key_where(&node, true);
    let forward = |id, deadline| Message::Forward {
        id,
        request: put(&key),
        deadline,
    };
    node.handle_message(1_000, NodeId::new("n2"), forward(1, 1_000))
        .unwrap();
    let late = outputs(&mut node);
    assert!(
        !late.iter().any(|o| matches!(o, Output::Storage { .. })),
        "coordinated: {late:?}"
    );
    assert!(late
        .iter()
        .any(|o| matches!(o, Output::Event(crate::io::Event::MessageDropped { .. }))));
    node.handle_message(1_000, NodeId::new("n2"), forward(2, 1_001))
        .unwrap();
    let in_time = outputs(&mut node);
    assert!(
        in_time.iter().any(|o| matches!(o, Output::Storage { .. })),
        "not coordinated: {in_time:?}"
    );
}

/// The deadline a forward carries is when its forwarder may first give it up (a fraction of
/// the request's timeout), and it gives it up no earlier.
#[test]
fn a_forwarder_gives_up_no_earlier_than_the_deadline_it_sent() {
    let mut node = one_of_five("n1");
    let timeout = node.config().request_timeout_ms;
    let key = key_where(&node, false);
    node.handle_client(0, 1, put(&key)).unwrap();
    let deadline = outputs(&mut node)
        .into_iter()
        .find_map(|o| match o {
            Output::Send {
                message: Message::Forward { deadline, .. },
                ..
            } => Some(deadline),
            _ => None,
        })
        .expect("forwarded");
    assert!(deadline < timeout / 2, "{deadline} of {timeout}");
    let (given_up, _) = run_until_abandoned(&mut node, timeout);
    assert!(
        given_up >= deadline,
        "given up at {given_up}, deadline {deadline}"
    );
}

/// Runs the node's timers (nobody answering) until it abandons a forward; returns when, and
/// what it output then.
fn run_until_abandoned(node: &mut Node, until: u64) -> (u64, Vec<Output>) {
    while let Some(at) = node.poll_timeout().filter(|at| *at <= until) {
        node.handle_timeout(at);
        let out = outputs(node);
        let abandoned = out
            .iter()
            .any(|o| matches!(o, Output::Event(crate::io::Event::ForwardAbandoned { .. })));
        if abandoned {
            return (at, out);
        }
    }
    panic!("no forward abandoned before {until}");
}

/// Before: a write forwarded again after its first forward was given up carried the client's
/// whole timeout, so its new coordinator waited past the time the client had left.
#[test]
fn a_forward_sent_again_carries_the_time_left() {
    let mut node = one_of_five("n1");
    let timeout = node.config().request_timeout_ms;
    let key = key_where(&node, false);
    node.handle_client(0, 1, put(&key)).unwrap();
    let (given_up, out) = run_until_abandoned(&mut node, timeout);
    let again = out
        .into_iter()
        .find_map(|o| match o {
            Output::Send {
                message:
                    Message::Forward {
                        request, deadline, ..
                    },
                ..
            } => Some((request.options().timeout_ms, deadline)),
            _ => None,
        })
        .expect("forwarded to the next owner");
    assert_eq!(again.0, Some(timeout - given_up));
    assert!(again.1 < timeout, "{again:?}");
}

/// Before: a lone node took a write asking for two durable acknowledgements (`dw=2`) and
/// failed it at the deadline; like `w`, `dw` above the members is refused at once, naming it.
#[test]
fn a_durable_quorum_larger_than_the_cluster_names_the_fix() {
    let mut node = Node::new(NodeConfig::new("n1"), alloc::vec![Member::new("n1", 1)], 0).unwrap();
    let mut request = put(b"k");
    *request.options_mut() = RequestOptions {
        w: Some(crate::bucket::QuorumValue::One),
        dw: Some(crate::bucket::QuorumValue::Count(2)),
        ..Default::default()
    };
    let error = node.handle_client(1, 1, request).unwrap_err();
    assert_eq!(
        error,
        crate::error::RequestError::TooFewMembers {
            quorum: "dw".into(),
            needed: 2,
            members: 1,
            n: 3
        }
    );
    assert!(
        alloc::string::ToString::to_string(&error).contains("?dw=1"),
        "{error}"
    );
}

/// Before: `max_siblings: 0` was accepted, and the bucket refused every write of a new key
/// (`max_object_bytes: 0` every write that was not the key's only sibling).
#[test]
fn bucket_limits_that_refuse_every_write_are_refused() {
    use crate::bucket::{BucketProps, LimitsError, ObjectLimits};
    use crate::error::CommandError;
    use crate::io::Command;
    let mut node = one_of_five("n1");
    let set = |limits| Command::SetBucket {
        bucket: b"b".to_vec(),
        props: BucketProps {
            limits,
            ..Default::default()
        },
    };
    let zero_siblings = ObjectLimits {
        max_siblings: 0,
        ..Default::default()
    };
    let zero_bytes = ObjectLimits {
        max_object_bytes: 0,
        ..Default::default()
    };
    assert_eq!(
        node.handle_command(1, set(zero_siblings)),
        Err(CommandError::Limits(LimitsError::ZeroMaxSiblings))
    );
    assert_eq!(
        node.handle_command(1, set(zero_bytes)),
        Err(CommandError::Limits(LimitsError::ZeroMaxObjectBytes))
    );
    assert!(node.view().bucket(b"b").is_none());
    let one = ObjectLimits {
        siblings_warn: 0,
        max_siblings: 1,
        max_object_bytes: 1,
    };
    assert_eq!(node.handle_command(1, set(one)), Ok(()));
    // A configured bucket is checked alike.
    let mut config = NodeConfig::new("n1");
    config.default_bucket.limits = zero_siblings;
    let members = alloc::vec![Member::new("n1", 1)];
    assert!(matches!(
        Node::new(config, members, 0),
        Err(crate::error::ConfigError::Limits(
            LimitsError::ZeroMaxSiblings
        ))
    ));
}

/// A partition's records, served to a node pulling it, are reported as a transfer sent: how
/// many, how many bytes, and whether it was the last chunk.
#[test]
fn a_served_transfer_chunk_is_reported() {
    let mut node = one_of_five("n1");
    let mut store = MemStore::new();
    let key = key_where(&node, true);
    node.handle_client(0, 1, put(&key)).unwrap();
    drive(&mut node, &mut store, 0);
    let stored = node.storage_key(b"b", &key);
    let pull = Message::TransferPull {
        id: 7,
        partition: stored.partition,
        after: None,
    };
    node.handle_message(0, NodeId::new("n2"), pull).unwrap();
    let outputs = drive(&mut node, &mut store, 0);
    let sent = outputs.iter().find_map(|o| match o {
        Output::Event(crate::io::Event::TransferSent {
            partition,
            to,
            keys,
            bytes,
            done,
        }) => Some((*partition, to.clone(), *keys, *bytes, *done)),
        _ => None,
    });
    let (partition, to, keys, bytes, done) = sent.expect("a transfer_sent event");
    assert_eq!(
        (partition, to.as_str(), keys, done),
        (stored.partition, "n2", 1, true)
    );
    let record = store.get(&stored).expect("the record");
    assert_eq!(bytes, (1 + key.len() + record.len()) as u64);
}

/// Deleted and expired keys this node is first replica of wait in the reap schedule: counted
/// by kind, and gone from the count once reaped.
#[test]
fn the_reap_backlog_counts_deleted_and_expired_keys() {
    let mut config = NodeConfig::new("n1");
    config.default_bucket.n = 1;
    config.tombstone_grace_ms = 1_000;
    let mut node = Node::new(config, alloc::vec![Member::new("n1", 1)], 0).unwrap();
    let mut store = MemStore::new();
    let mut expiring = put(b"session");
    if let ClientRequest::Put { options, .. } = &mut expiring {
        options.ttl_ms = Some(500);
    }
    node.handle_client(0, 1, expiring).unwrap();
    drive(&mut node, &mut store, 0);
    node.handle_client(0, 2, put(b"gone")).unwrap();
    let context = drive(&mut node, &mut store, 0)
        .into_iter()
        .find_map(|o| match o {
            Output::Reply {
                reply: crate::request::Reply::Written { context, .. },
                ..
            } => Some(context),
            _ => None,
        })
        .expect("the put is written");
    let delete = ClientRequest::Delete {
        bucket: b"b".to_vec(),
        key: b"gone".to_vec(),
        context,
        options: RequestOptions::default(),
    };
    node.handle_client(0, 3, delete).unwrap();
    drive(&mut node, &mut store, 0);
    assert_eq!(
        node.reap_backlog(),
        super::ReapBacklog {
            tombstones: 1,
            expired: 1
        }
    );
    let mut now = 0;
    while let Some(deadline) = node.poll_timeout().filter(|d| *d <= 30_000) {
        now = deadline;
        node.handle_timeout(now);
        drive(&mut node, &mut store, now);
    }
    assert!(now > 1_500);
    assert_eq!(node.reap_backlog(), super::ReapBacklog::default());
}

/// The coordinator sends its write to the other replicas while its own store runs. When that
/// store fails, the write's dot may be on the others but not here: the node takes a new actor
/// (so its next dot for the key cannot repeat it) and the put is decided by the others' answers.
#[test]
fn a_coordinators_failed_store_after_replicating_renews_its_actor_and_the_next_put_stores_first() {
    use crate::request::Reply;
    use crate::storage::{StorageError, StorageErrorKind, StorageOp, StorageResult};
    let members = ["n1", "n2", "n3"].map(|id| Member::new(id, 1)).to_vec();
    let mut node = Node::new(NodeConfig::new("n1"), members, 0).unwrap();
    let mut store = MemStore::new();
    let actor = node.actor().clone();
    node.handle_client(0, 7, put(b"k")).unwrap();
    // The read of the local record, then the store and the replication together.
    let mut store_op = None;
    let mut sent_to = Vec::new();
    for _ in 0..4 {
        while let Some(output) = node.poll_output() {
            match output {
                Output::Storage {
                    op_id,
                    op: op @ StorageOp::Put { .. },
                } => store_op = Some((op_id, op)),
                Output::Storage { op_id, op } => {
                    let result = store.apply(&op);
                    node.handle_storage(0, op_id, result);
                }
                Output::Send {
                    to,
                    message: Message::Write { id, .. },
                } => sent_to.push((to, id)),
                _ => {}
            }
        }
    }
    let (op_id, _) = store_op.expect("the coordinator stores its write");
    sent_to.sort();
    let names: Vec<&str> = sent_to.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(
        names,
        ["n2", "n3"],
        "replicated before its own store finished"
    );
    node.handle_storage(
        1,
        op_id,
        StorageResult::Failed(StorageError {
            kind: StorageErrorKind::Io,
            message: "injected".into(),
        }),
    );
    assert_ne!(
        node.actor(),
        &actor,
        "a failed store after replicating renews the actor"
    );
    let replies = |node: &mut Node| -> Vec<Reply> {
        core::iter::from_fn(|| node.poll_output())
            .filter_map(|o| match o {
                Output::Reply { reply, .. } => Some(reply),
                _ => None,
            })
            .collect()
    };
    assert!(
        replies(&mut node).is_empty(),
        "the others may still take it"
    );
    for (to, id) in sent_to {
        node.handle_message(
            2,
            to,
            Message::WriteReply {
                id,
                stored: true,
                synced: true,
            },
        )
        .unwrap();
    }
    let answered = replies(&mut node);
    assert!(
        matches!(answered.as_slice(), [Reply::Written { replicas, .. }] if replicas.len() == 2),
        "W = 2 met by the other two: {answered:?}"
    );

    // Right after a failed store (a full disk), the next put is stored before it is
    // replicated: its failure is a refusal with nothing written anywhere, not one more actor.
    let renewed = node.actor().clone();
    node.handle_client(3, 8, put(b"k2")).unwrap();
    let mut store_op = None;
    for _ in 0..4 {
        while let Some(output) = node.poll_output() {
            match output {
                Output::Storage {
                    op_id,
                    op: StorageOp::Put { .. },
                } => store_op = Some(op_id),
                Output::Storage { op_id, op } => {
                    let result = store.apply(&op);
                    node.handle_storage(3, op_id, result);
                }
                Output::Send {
                    message: Message::Write { .. },
                    ..
                } => panic!("replicated before its store, right after a failed one"),
                _ => {}
            }
        }
    }
    let full = StorageResult::Failed(StorageError {
        kind: StorageErrorKind::Full,
        message: "disk full".into(),
    });
    node.handle_storage(4, store_op.expect("stored first"), full);
    assert_eq!(
        node.actor(),
        &renewed,
        "no new actor for a write nobody got"
    );
    let answered = replies(&mut node);
    assert!(
        matches!(answered.as_slice(), [Reply::StorageFull { .. }]),
        "refused whole: {answered:?}"
    );
}

/// Storage operations a node asked of its host, with their ids.
type StorageOps = Vec<(crate::id::OpId, crate::storage::StorageOp)>;

/// The reads `node` sent to peers and the storage reads it asked of its host, from its outputs.
fn reads_out(node: &mut Node) -> (Vec<(NodeId, u64)>, StorageOps) {
    use crate::storage::StorageOp;
    let (mut sent, mut local) = (Vec::new(), Vec::new());
    for output in outputs(node) {
        match output {
            Output::Send {
                to,
                message: Message::Read { id, .. },
            } => sent.push((to, id)),
            Output::Storage {
                op_id,
                op: op @ StorageOp::Get { .. },
            } => local.push((op_id, op)),
            _ => {}
        }
    }
    (sent, local)
}

fn get(key: &[u8]) -> ClientRequest {
    ClientRequest::Get {
        bucket: b"b".to_vec(),
        key: key.to_vec(),
        options: RequestOptions::default(),
    }
}

/// Before: every get asked all N replicas, moving N values to answer at R.
#[test]
fn a_get_asks_r_replicas_local_first_and_the_rest_on_a_failure_or_when_slow() {
    use crate::storage::{StorageError, StorageErrorKind, StorageResult};
    use crate::wire::ReadResult;
    let members = ["n1", "n2", "n3"].map(|id| Member::new(id, 1)).to_vec();
    let mut config = NodeConfig::new("n1");
    config.read_all_percent = 0;
    let mut node = Node::new(config, members, 0).unwrap();

    // R = 2: the local replica and one peer; a local failure brings in the third.
    node.handle_client(0, 1, get(b"k")).unwrap();
    let (sent, local) = reads_out(&mut node);
    assert_eq!((sent.len(), local.len()), (1, 1), "{sent:?} {local:?}");
    let (first_peer, id) = sent[0].clone();
    let failed = StorageResult::Failed(StorageError {
        kind: StorageErrorKind::Io,
        message: "injected".into(),
    });
    node.handle_storage(1, local[0].0, failed);
    let (more, _) = reads_out(&mut node);
    assert_eq!(more.len(), 1, "the held-back replica is asked: {more:?}");
    assert_ne!(more[0].0, first_peer);
    for (peer, id) in [(first_peer, id), more[0].clone()] {
        node.handle_message(
            2,
            peer,
            Message::ReadReply {
                id,
                result: ReadResult::NotFound,
            },
        )
        .unwrap();
    }
    assert!(
        outputs(&mut node)
            .iter()
            .any(|o| matches!(o, Output::Reply { request_id: 1, .. })),
        "answered by the two peers"
    );

    // Replicas that answer within 3 ms teach the node its read latency; then a peer silent
    // past it is joined by the third long before the fallback time.
    let mut now = 10;
    for request in 2..60 {
        node.handle_client(now, request, get(b"k")).unwrap();
        let (sent, local) = reads_out(&mut node);
        node.handle_storage(now + 1, local[0].0, StorageResult::Record(None));
        for (peer, id) in sent {
            node.handle_message(
                now + 3,
                peer,
                Message::ReadReply {
                    id,
                    result: ReadResult::NotFound,
                },
            )
            .unwrap();
        }
        outputs(&mut node);
        now += 10;
    }
    node.handle_client(now, 99, get(b"k")).unwrap();
    let (sent, local) = reads_out(&mut node);
    assert_eq!(sent.len(), 1);
    node.handle_storage(now + 1, local[0].0, StorageResult::Record(None));
    let wake = node.poll_timeout().expect("a timer");
    assert!(
        wake <= now + 3,
        "the speculative retry comes at the read latency, not the fallback time: {wake}"
    );
    node.handle_timeout(wake);
    let (more, _) = reads_out(&mut node);
    assert_eq!(
        more.len(),
        1,
        "the silent peer is joined by the third: {more:?}"
    );
    assert_ne!(more[0].0, sent[0].0);
}
