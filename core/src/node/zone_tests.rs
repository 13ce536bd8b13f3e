//! Zone-aware replication at one node: replicas per zone, and quorums counted in the
//! coordinator's zone (`local_one`, `local_quorum`) or in every zone (`each_quorum`).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use super::Node;
use crate::bucket::{BucketProps, QuorumError, QuorumValue, RequestOptions};
use crate::config::NodeConfig;
use crate::error::{CommandError, RequestError};
use crate::io::{Command, Output};
use crate::request::{ClientRequest, Reply};
use crate::ring::{Member, RingConfig};
use crate::store::{drive, MemStore};
use crate::wire::Message;
use crate::NodeId;

fn per_zone(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
    counts.iter().map(|(z, c)| (String::from(*z), *c)).collect()
}

/// `me` in a cluster of three nodes in zone `a` (a1..a3) and three in zone `b` (b1..b3), whose
/// ring places two replicas in each zone, and whose default bucket asks for all four.
fn two_zones(me: &str) -> Node {
    let mut config = NodeConfig::new(me);
    config.request_timeout_ms = 10_000;
    config.ring = RingConfig {
        target_n: 4,
        replicas_per_zone: per_zone(&[("a", 2), ("b", 2)]),
        ..RingConfig::default()
    };
    config.default_bucket = BucketProps {
        n: 4,
        n_per_zone: per_zone(&[("a", 2), ("b", 2)]),
        ..BucketProps::default()
    };
    let members = ["a1", "a2", "a3", "b1", "b2", "b3"]
        .map(|id| Member::new(id, 1).in_zone(&id[..1]))
        .to_vec();
    Node::new(config, members, 0).unwrap()
}

/// A key `node` holds a replica of.
fn owned_key(node: &Node) -> Vec<u8> {
    (0..)
        .map(|i| alloc::format!("key-{i}").into_bytes())
        .find(|key| node.preference_list(b"b", key, 4).contains(node.id()))
        .unwrap()
}

fn put(key: &[u8], w: QuorumValue) -> ClientRequest {
    ClientRequest::Put {
        bucket: b"b".to_vec(),
        key: key.to_vec(),
        context: Default::default(),
        value: b"v".to_vec(),
        options: RequestOptions {
            w: Some(w),
            ..Default::default()
        },
    }
}

/// Coordinates a put at a1 and has the replicas named in `acking` acknowledge it; returns the
/// client's reply, if any came.
fn put_acked_by(w: QuorumValue, acking: &[&str]) -> Option<Reply> {
    let mut node = two_zones("a1");
    let mut store = MemStore::new();
    let key = owned_key(&node);
    let replicas = node.preference_list(b"b", &key, 4);
    node.handle_client(1, 7, put(&key, w)).unwrap();
    let mut outputs = drive(&mut node, &mut store, 1);
    let id = outputs
        .iter()
        .find_map(|o| match o {
            Output::Send {
                message: Message::Write { id, .. },
                ..
            } => Some(*id),
            _ => None,
        })
        .expect("the write was replicated");
    for peer in acking {
        assert!(
            replicas.iter().any(|r| r.as_str() == *peer),
            "{peer} is no replica"
        );
        let ack = Message::WriteReply {
            id,
            stored: true,
            synced: false,
        };
        node.handle_message(2, NodeId::new(*peer), ack).unwrap();
        outputs.extend(drive(&mut node, &mut store, 2));
    }
    outputs.into_iter().find_map(|o| match o {
        Output::Reply {
            request_id: 7,
            reply,
        } => Some(reply),
        _ => None,
    })
}

#[test]
fn each_zone_holds_two_replicas_of_every_key() {
    let node = two_zones("a1");
    for i in 0..200 {
        let key = alloc::format!("k{i}").into_bytes();
        let replicas = node.preference_list(b"b", &key, 4);
        for zone in ["a", "b"] {
            let held = replicas
                .iter()
                .filter(|r| r.as_str().starts_with(zone))
                .count();
            assert_eq!(held, 2, "{replicas:?}");
        }
    }
}

#[test]
fn local_quorum_answers_with_the_local_zone_alone() {
    // a1 and the other zone-a replica: a majority of zone a, without zone b.
    let other_local = {
        let node = two_zones("a1");
        let key = owned_key(&node);
        node.preference_list(b"b", &key, 4)
            .into_iter()
            .find(|r| r.as_str().starts_with('a') && r.as_str() != "a1")
            .unwrap()
    };
    let reply = put_acked_by(QuorumValue::LocalQuorum, &[other_local.as_str()]);
    assert!(matches!(reply, Some(Reply::Written { .. })), "{reply:?}");
    // A plain quorum (3 of 4) waits for zone b.
    assert_eq!(
        put_acked_by(QuorumValue::Quorum, &[other_local.as_str()]),
        None
    );
    // local_one is met by a1's own write.
    let reply = put_acked_by(QuorumValue::LocalOne, &[]);
    assert!(matches!(reply, Some(Reply::Written { .. })), "{reply:?}");
}

#[test]
fn each_quorum_waits_for_a_majority_in_every_zone() {
    let node = two_zones("a1");
    let key = owned_key(&node);
    let replicas = node.preference_list(b"b", &key, 4);
    let names: Vec<&str> = replicas.iter().map(NodeId::as_str).collect();
    let local: Vec<&str> = names
        .iter()
        .copied()
        .filter(|r| r.starts_with('a') && *r != "a1")
        .collect();
    let remote: Vec<&str> = names
        .iter()
        .copied()
        .filter(|r| r.starts_with('b'))
        .collect();
    let both_local = [local.clone()].concat();
    assert_eq!(put_acked_by(QuorumValue::EachQuorum, &both_local), None);
    let one_remote = [local.clone(), remote[..1].to_vec()].concat();
    assert_eq!(put_acked_by(QuorumValue::EachQuorum, &one_remote), None);
    let all = [local, remote].concat();
    let reply = put_acked_by(QuorumValue::EachQuorum, &all);
    assert!(matches!(reply, Some(Reply::Written { .. })), "{reply:?}");
}

#[test]
fn a_local_quorum_where_the_zone_holds_no_replica_is_refused() {
    let mut node = two_zones("a1");
    // A bucket kept in zone b only.
    node.handle_command(
        0,
        Command::SetBucket {
            bucket: b"b".to_vec(),
            props: BucketProps {
                n: 2,
                n_per_zone: per_zone(&[("b", 2)]),
                ..BucketProps::default()
            },
        },
    )
    .unwrap();
    let error = node
        .handle_client(1, 1, put(b"k", QuorumValue::LocalQuorum))
        .unwrap_err();
    assert!(
        matches!(
            error,
            RequestError::Quorum(QuorumError::NoLocalReplica { ref zone, .. }) if zone == "a"
        ),
        "{error:?}"
    );
    // Other quorums still work there: the replicas are all in zone b.
    node.handle_client(1, 2, put(b"k", QuorumValue::One))
        .unwrap();
}

#[test]
fn a_bucket_cannot_ask_more_of_a_zone_than_the_ring_places_there() {
    let mut node = two_zones("a1");
    for counts in [&[("a", 3), ("b", 1)][..], &[("c", 1), ("a", 2)][..]] {
        let props = BucketProps {
            n: 4,
            n_per_zone: per_zone(counts),
            ..BucketProps::default()
        };
        let error = node
            .handle_command(
                0,
                Command::SetBucket {
                    bucket: b"x".to_vec(),
                    props,
                },
            )
            .unwrap_err();
        assert!(
            matches!(
                error,
                CommandError::ZoneAboveRing { .. } | CommandError::Quorum(_)
            ),
            "{error:?}"
        );
    }
    let wrong_sum = BucketProps {
        n: 3,
        n_per_zone: per_zone(&[("a", 2), ("b", 2)]),
        ..BucketProps::default()
    };
    assert!(matches!(
        node.handle_command(
            0,
            Command::SetBucket {
                bucket: b"x".to_vec(),
                props: wrong_sum
            }
        ),
        Err(CommandError::Quorum(QuorumError::ZoneSum { .. }))
    ));
}
