//! Bad input to a node gets a typed error and changes nothing.

use proptest::prelude::*;
use ringkv_core::bucket::{QuorumError, QuorumValue, RequestOptions};
use ringkv_core::config::NodeConfig;
use ringkv_core::error::{MessageError, RequestError};
use ringkv_core::io::Output;
use ringkv_core::node::Node;
use ringkv_core::request::{ClientRequest, Reply};
use ringkv_core::ring::Member;
use ringkv_core::store::{drive, MemStore};
use ringkv_core::version::Context;
use ringkv_core::wire::Message;
use ringkv_core::NodeId;

fn single_node() -> Node {
    let mut config = NodeConfig::new("n1");
    config.default_bucket.n = 1;
    config.default_bucket.r = QuorumValue::One;
    config.default_bucket.w = QuorumValue::One;
    Node::new(config, vec![Member::new("n1", 1)], 0).unwrap()
}

fn put(key: &[u8], value: Vec<u8>, options: RequestOptions) -> ClientRequest {
    ClientRequest::Put {
        bucket: b"b".to_vec(),
        key: key.to_vec(),
        context: Context::default(),
        value,
        options,
    }
}

#[test]
fn malformed_requests_are_typed_errors() {
    let mut node = single_node();
    let max_key = node.config().max_key_bytes;
    let max_value = node.config().max_value_bytes;
    let cases = [
        (put(b"", vec![1], RequestOptions::default()), "empty key"),
        (
            put(&vec![b'k'; max_key + 1], vec![1], RequestOptions::default()),
            "huge key",
        ),
        (
            put(b"k", vec![0; max_value + 1], RequestOptions::default()),
            "huge value",
        ),
        (
            put(
                b"k",
                vec![1],
                RequestOptions {
                    w: Some(QuorumValue::Count(0)),
                    ..Default::default()
                },
            ),
            "w=0",
        ),
        (
            put(
                b"k",
                vec![1],
                RequestOptions {
                    w: Some(QuorumValue::Count(2)),
                    ..Default::default()
                },
            ),
            "w>n",
        ),
    ];
    for (i, (request, what)) in cases.into_iter().enumerate() {
        let result = node.handle_client(0, i as u64, request);
        assert!(result.is_err(), "{what} was accepted");
        assert!(node.poll_output().is_none(), "{what} produced output");
    }
    assert!(matches!(
        node.handle_client(
            0,
            99,
            put(
                b"k",
                vec![1],
                RequestOptions {
                    w: Some(QuorumValue::Count(5)),
                    ..Default::default()
                }
            )
        ),
        Err(RequestError::Quorum(QuorumError::OutOfRange { .. }))
    ));
    assert_eq!(node.in_flight(), 0);
}

#[test]
fn duplicate_request_ids_are_refused_while_in_flight() {
    let mut node = single_node();
    node.handle_client(0, 1, put(b"k", vec![1], RequestOptions::default()))
        .unwrap();
    assert_eq!(
        node.handle_client(0, 1, put(b"k", vec![2], RequestOptions::default())),
        Err(RequestError::DuplicateRequestId(1))
    );
    let mut store = MemStore::new();
    let outputs = drive(&mut node, &mut store, 0);
    let replies: Vec<_> = outputs
        .iter()
        .filter(|o| {
            matches!(
                o,
                Output::Reply {
                    request_id: 1,
                    reply: Reply::Written { .. }
                }
            )
        })
        .collect();
    assert_eq!(replies.len(), 1);
    // Once answered, the id may be used again.
    assert!(node
        .handle_client(0, 1, put(b"k", vec![3], RequestOptions::default()))
        .is_ok());
}

#[test]
fn messages_from_strangers_are_dropped() {
    let mut node = single_node();
    let message = Message::Read {
        id: 1,
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        hint: None,
    };
    assert_eq!(
        node.handle_message(0, NodeId::new("mallory"), message),
        Err(MessageError::UnknownPeer(NodeId::new("mallory")))
    );
    while let Some(output) = node.poll_output() {
        assert!(matches!(output, Output::Event(_)), "{output:?}");
    }
}

#[test]
fn a_full_disk_fails_the_write_clearly_and_keeps_what_was_stored() {
    let mut node = single_node();
    let mut store = MemStore::new();
    node.handle_client(0, 1, put(b"k", b"kept".to_vec(), RequestOptions::default()))
        .unwrap();
    drive(&mut node, &mut store, 0);
    store.set_capacity(Some(store.iter().map(|(_, v)| v.len() + 16).sum()));
    node.handle_client(
        1,
        2,
        put(b"other", vec![7; 1024], RequestOptions::default()),
    )
    .unwrap();
    let outputs = drive(&mut node, &mut store, 1);
    assert!(
        outputs.iter().any(|o| matches!(
            o,
            Output::Reply {
                request_id: 2,
                reply: Reply::StorageFull { .. }
            }
        )),
        "{outputs:?}"
    );
    node.handle_client(
        2,
        3,
        ClientRequest::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions::default(),
        },
    )
    .unwrap();
    let outputs = drive(&mut node, &mut store, 2);
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Reply { request_id: 3, reply: Reply::Got { values, .. } } if values == &vec![b"kept".to_vec()]
    )));
}

proptest! {
    /// Whatever a peer sends, decoded or not, the node never panics.
    #[test]
    fn random_frames_never_panic_a_node(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut node = single_node();
        let mut frame = vec![ringkv_core::wire::WIRE_VERSION];
        frame.extend_from_slice(&bytes);
        for candidate in [&bytes[..], &frame[..]] {
            if let Ok(message) = Message::decode(candidate) {
                let _ = node.handle_message(0, NodeId::new("n1"), message);
                let mut store = MemStore::new();
                drive(&mut node, &mut store, 0);
            }
        }
    }

    /// Random quorum strings never panic and are either parsed or a typed error.
    #[test]
    fn quorum_strings_parse_or_fail(s in ".{0,12}") {
        let _ = s.parse::<QuorumValue>();
    }
}

#[test]
fn a_bootstrapped_node_serves_alone_and_announces_new_addresses() {
    use ringkv_core::io::Event;
    use ringkv_core::membership::{ClusterView, MemberInfo, MemberStatus};
    use ringkv_core::storage::{StorageKey, StorageOp};

    let mut config = NodeConfig::new("n1");
    config.default_bucket.n = 1;
    config.default_bucket.r = QuorumValue::One;
    config.default_bucket.w = QuorumValue::One;
    let me = MemberInfo::new("n1", "127.0.0.1:7001", "127.0.0.1:8001", 2);
    let mut node = Node::bootstrap(config.clone(), me, 0).unwrap();
    assert!(node.view().ring().is_some(), "a founder has a ring");
    assert_eq!(node.ring().members().len(), 1);
    let entry = node.view().member(&NodeId::new("n1")).unwrap().clone();
    assert_eq!(entry.status, MemberStatus::Up);
    assert_eq!(entry.peer_address, "127.0.0.1:7001");

    let mut store = MemStore::default();
    node.handle_client(1, 1, put(b"k", b"v".to_vec(), RequestOptions::default()))
        .unwrap();
    let replies = drive(&mut node, &mut store, 1);
    assert!(
        replies.iter().any(|o| matches!(
            o,
            Output::Reply {
                request_id: 1,
                reply: Reply::Written { .. }
            }
        )),
        "{replies:?}"
    );

    // Same addresses: nothing to gossip.
    node.announce(2, "127.0.0.1:7001", "127.0.0.1:8001")
        .unwrap();
    assert!(node.poll_output().is_none());
    // New addresses: a newer entry, persisted, reported.
    node.announce(3, "10.0.0.1:7001", "10.0.0.1:8001").unwrap();
    let outputs: Vec<Output> = std::iter::from_fn(|| node.poll_output()).collect();
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Storage { op: StorageOp::Put { key, .. }, .. } if *key == StorageKey::view()
    )));
    assert!(outputs
        .iter()
        .any(|o| matches!(o, Output::Event(Event::ViewChanged { .. }))));
    let updated = node.view().member(&NodeId::new("n1")).unwrap();
    assert_eq!(updated.client_address, "10.0.0.1:8001");
    assert!(updated.version > entry.version);

    // A joining node knows only itself and refuses requests until it has a ring.
    let mut joiner = Node::join_as(
        NodeConfig::new("n2"),
        MemberInfo::new("n2", "127.0.0.1:7002", "127.0.0.1:8002", 1),
        0,
    )
    .unwrap();
    assert!(joiner.view().ring().is_none());
    assert_eq!(
        joiner.handle_client(0, 1, put(b"k", b"v".to_vec(), RequestOptions::default())),
        Err(RequestError::NoReplicas)
    );
    let _: &ClusterView = joiner.view();
}

#[test]
fn a_member_learned_from_gossip_and_never_heard_from_is_found_down() {
    use ringkv_core::membership::{ClusterView, GossipMessage, MemberInfo, MemberStatus};

    let config = NodeConfig::new("n1");
    let mut node = Node::bootstrap(
        config.clone(),
        MemberInfo::new("n1", "127.0.0.1:7001", "127.0.0.1:8001", 1),
        0,
    )
    .unwrap();
    // n2 gossips a view naming n3, which never says anything itself.
    let mut view = ClusterView::new(config.cluster.clone()).unwrap();
    for id in ["n1", "n2", "n3"] {
        let mut info = MemberInfo::new(id, format!("{id}:7"), format!("{id}:8"), 1);
        info.status = MemberStatus::Up;
        view.set_member(info).unwrap();
    }
    node.handle_message(
        10,
        NodeId::new("n2"),
        Message::Gossip(GossipMessage::View(Box::new(view))),
    )
    .unwrap();
    let n3 = NodeId::new("n3");
    assert!(node.view().member(&n3).is_some());
    // n2 keeps talking, n3 never does.
    let mut now = 10;
    for _ in 0..120 {
        now += 500;
        node.handle_message(now, NodeId::new("n2"), Message::Ping)
            .unwrap();
        node.handle_timeout(now);
        while node.poll_output().is_some() {}
    }
    assert!(node.is_alive(&NodeId::new("n2")));
    assert!(!node.is_alive(&n3), "a silent member must be found down");
}

/// Runs the node's timers up to `until`, performing every storage operation at once except a
/// scan of `hold`'s partition, which is returned unperformed (op id and operation) when it
/// comes.
fn run_until(
    node: &mut Node,
    store: &mut MemStore,
    until: u64,
    hold: Option<ringkv_core::ring::PartitionId>,
) -> Option<(ringkv_core::id::OpId, ringkv_core::storage::StorageOp)> {
    use ringkv_core::storage::{ScanRange, StorageOp};
    while let Some(at) = node.poll_timeout() {
        if at > until {
            break;
        }
        node.handle_timeout(at);
        while let Some(output) = node.poll_output() {
            if let Output::Storage { op_id, op } = output {
                if let StorageOp::Scan {
                    range: ScanRange::Partition(p),
                    ..
                } = &op
                {
                    if Some(*p) == hold {
                        return Some((op_id, op));
                    }
                }
                let result = store.apply(&op);
                node.handle_storage(at, op_id, result);
            }
        }
    }
    None
}

#[test]
fn a_write_during_a_tree_build_page_is_not_overwritten_by_the_page() {
    // The host reads a build page on one thread while writes commit on another: a page read
    // before a write may arrive after it. The page's stale digest must not replace the write's,
    // or the tree differs from the store until its next rebuild (hours) and anti-entropy never
    // settles. (A 240 s soak between network namespaces caught it.)
    let mut node = single_node();
    let mut store = MemStore::new();
    let key_of = |node: &Node| node.storage_key(b"b", b"k");
    let partition = key_of(&node).partition;
    let mut request_id = 0;
    let mut write = |node: &mut Node, store: &mut MemStore, value: &[u8], now: u64| {
        request_id += 1;
        node.handle_client(
            now,
            request_id,
            put(b"k", value.to_vec(), RequestOptions::default()),
        )
        .unwrap();
        drive(node, store, now);
    };
    write(&mut node, &mut store, b"old", 0);

    let (scan_id, scan) = run_until(&mut node, &mut store, 3_600_000, Some(partition))
        .expect("the tree of the key's partition is built");
    let now = node.poll_timeout().unwrap_or(0).saturating_sub(1);
    // The page is read now (it holds "old"), the write lands, then the page arrives.
    let stale_page = store.apply(&scan);
    write(&mut node, &mut store, b"new", now);
    node.handle_storage(now, scan_id, stale_page);
    run_until(&mut node, &mut store, now + 3_600_000, None);

    // A node that builds its trees from the final store is the reference.
    let mut fresh = single_node();
    let mut fresh_store = store.clone();
    run_until(&mut fresh, &mut fresh_store, 3_600_000, None);
    let built = node.merkle_roots();
    let reference = fresh.merkle_roots();
    assert!(
        reference.contains_key(&partition),
        "the reference tree is built"
    );
    assert_eq!(built.get(&partition), reference.get(&partition));
}
