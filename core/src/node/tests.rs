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
