//! The promises a user meets at the edges of the cluster (issue 14), each a scenario that broke
//! before: any live node takes a write, a cut the failure detector has not noticed costs a
//! fraction of the timeout, an answer says `outcome_unknown` whenever a write may still land,
//! a cluster smaller than the quorum says so, and a node that coordinates without holding a
//! replica never reissues a dot.

use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::checker::{OpOutcome, Operation};
use ringkv_core::config::NodeConfig;
use ringkv_core::error::RequestError;
use ringkv_core::io::Event;
use ringkv_core::node::Node;
use ringkv_core::request::{ClientRequest, QuorumKind, Reply};
use ringkv_core::ring::{key_position, Member};
use ringkv_core::sim::{Sim, SimConfig, TraceKind};
use ringkv_core::version::Context;

fn put_with(
    sim: &mut Sim,
    node: &str,
    key: &[u8],
    value: &[u8],
    context: Option<&Context>,
    options: RequestOptions,
) -> Operation {
    let index = sim.submit(
        node,
        ClientRequest::Put {
            bucket: b"b".to_vec(),
            key: key.to_vec(),
            context: context.cloned().unwrap_or_default(),
            value: value.to_vec(),
            options,
        },
    );
    sim.wait(index)
}

fn one() -> RequestOptions {
    RequestOptions {
        r: Some(QuorumValue::Count(1)),
        w: Some(QuorumValue::Count(1)),
        ..Default::default()
    }
}

fn all() -> RequestOptions {
    RequestOptions {
        r: Some(QuorumValue::All),
        ..Default::default()
    }
}

fn owners(sim: &Sim, key: &[u8]) -> Vec<String> {
    sim.ring()
        .preference_list(key_position(b"b", key), 3)
        .iter()
        .map(|n| n.to_string())
        .collect()
}

fn sorted(mut values: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    values.sort();
    values
}

/// Before: a survivor forwarded every write of a key it did not own to the key's first owner,
/// even when it knew all of them down, and answered 503 after the whole timeout.
#[test]
fn the_last_live_node_takes_writes_of_every_key() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 21,
        ..SimConfig::default()
    });
    let survivor = "n5";
    for node in ["n1", "n2", "n3", "n4"] {
        sim.crash(node);
    }
    // Long enough for the failure detector to find them down.
    sim.run(20_000);
    let keys: Vec<Vec<u8>> = (0..40).map(|i| format!("key-{i}").into_bytes()).collect();
    let unowned = keys
        .iter()
        .filter(|k| !owners(&sim, k).iter().any(|o| o == survivor))
        .count();
    assert!(
        unowned > 5,
        "the scenario needs keys the survivor does not own"
    );
    for key in &keys {
        let write = put_with(&mut sim, survivor, key, key, None, one());
        assert!(write.is_ok(), "w=1 through the last live node: {write:?}");
        let read = sim.get_with(survivor, b"b", key, one());
        assert_eq!(read.values(), vec![key.clone()], "{read:?}");
    }
    assert!(
        sim.trace()
            .iter()
            .any(|t| matches!(&t.kind, TraceKind::Event(Event::FallbackCoordinated { .. }))),
        "writes of keys it does not own were coordinated by the survivor itself"
    );
    for node in ["n1", "n2", "n3", "n4"] {
        sim.restart(node);
    }
    assert!(sim.heal_and_converge(120_000).is_some(), "hints delivered");
    for key in &keys {
        let read = sim.get_with("n1", b"b", key, all());
        assert_eq!(read.values(), vec![key.clone()], "{read:?}");
    }
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
}

/// Before: until the failure detector marked the owners across a fresh cut down (seconds),
/// writes through the near side waited for them and failed at the deadline.
#[test]
fn a_cut_the_detector_has_not_seen_costs_a_fraction_of_the_timeout() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 22,
        ..SimConfig::default()
    });
    let timeout = sim.config().request_timeout_ms;
    let keys: Vec<Vec<u8>> = (0..12).map(|i| format!("cart-{i}").into_bytes()).collect();
    let mut contexts = Vec::new();
    for key in &keys {
        let write = sim.put("n1", b"b", key, b"v1", None);
        assert!(write.is_ok(), "{write:?}");
        contexts.push(write.context().cloned());
    }
    sim.partition(&[&["n1", "n2"], &["n3", "n4", "n5"]]);
    let mut fast = 0;
    for (key, context) in keys.iter().zip(&contexts) {
        // A read succeeds when a replica on the near side holds the key; when none does, the
        // honest answer is `unavailable`, never a "not found".
        let read = sim.get("n1", b"b", key);
        match &read.outcome {
            Some(OpOutcome::Replied(Reply::Unavailable { .. })) => {}
            _ => assert_eq!(read.values(), vec![b"v1".to_vec()], "{read:?}"),
        }
        let write = put_with(
            &mut sim,
            "n1",
            key,
            b"v2",
            context.as_ref(),
            RequestOptions::default(),
        );
        assert!(write.is_ok(), "write through the near side: {write:?}");
        let took = write.completed_at.unwrap_or(u64::MAX) - write.invoked_at;
        assert!(took < timeout, "answered before the deadline: {took} ms");
        if took <= timeout / 2 {
            fast += 1;
        }
    }
    assert!(fast > 0, "some writes answered within half of the timeout");
    sim.heal();
    assert!(sim.heal_and_converge(120_000).is_some());
    for key in &keys {
        let read = sim.get_with("n3", b"b", key, all());
        assert_eq!(read.values(), vec![b"v2".to_vec()], "{read:?}");
    }
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
}

/// Before: a write that failed its quorum was answered `unavailable` though the coordinator had
/// stored it, and it showed up later.
#[test]
fn a_write_that_may_still_land_is_outcome_unknown() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed: 23,
        ..SimConfig::default()
    });
    let key = b"k";
    let owners = owners(&sim, key);
    sim.crash(&owners[2]);
    let write = put_with(
        &mut sim,
        &owners[0],
        key,
        b"v",
        None,
        RequestOptions {
            w: Some(QuorumValue::All),
            ..Default::default()
        },
    );
    match &write.outcome {
        Some(OpOutcome::Replied(Reply::OutcomeUnknown { kind, answered, .. })) => {
            assert_eq!(*kind, QuorumKind::Write);
            assert_eq!(answered.len(), 2, "{answered:?}");
        }
        other => panic!("expected outcome_unknown, got {other:?}"),
    }
    // Counted as a quorum failure, told apart from `unavailable`.
    assert!(sim.trace().iter().any(|t| matches!(
        &t.kind,
        TraceKind::Event(Event::QuorumFailed {
            kind: QuorumKind::Write,
            needed: 3,
            answered: 2,
            outcome_unknown: true,
        })
    )));
    sim.restart(&owners[2]);
    assert!(sim.heal_and_converge(60_000).is_some());
    // It did land: that is what `outcome_unknown` warned of.
    let read = sim.get_with(&owners[1], b"b", key, all());
    assert_eq!(read.values(), vec![b"v".to_vec()]);
    assert!(sim.check().is_ok());
}

/// A node that coordinates writes of a key it holds no replica of (its owners down) uses a
/// fresh actor for each: its earlier dots for the key, delivered as hints and deleted here,
/// are not in any record it holds, and counting from what it holds would reissue one (the
/// owners would then drop the second write as already seen).
#[test]
fn writes_coordinated_without_a_replica_never_reuse_a_dot() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 24,
        ..SimConfig::default()
    });
    let key = (0..)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| !owners(&sim, k).iter().any(|o| o == "n1"))
        .expect("some key n1 does not own");
    let key_owners = owners(&sim, &key);
    for round in [&b"one"[..], &b"two"[..]] {
        for owner in &key_owners {
            sim.crash(owner);
        }
        sim.run(20_000);
        let write = put_with(&mut sim, "n1", &key, round, None, one());
        assert!(write.is_ok(), "{write:?}");
        for owner in &key_owners {
            sim.restart(owner);
        }
        assert!(sim.heal_and_converge(120_000).is_some());
        assert!(sim.hints().is_empty(), "{:?}", sim.hints());
    }
    let read = sim.get_with(&key_owners[0], b"b", &key, all());
    assert_eq!(
        sorted(read.values()),
        vec![b"one".to_vec(), b"two".to_vec()],
        "two blind writes are two siblings: {read:?}"
    );
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
}

/// Before: a lone founding node answered every write with "2 needed, 1 answered in time" after
/// the full timeout, naming no fix.
#[test]
fn a_cluster_smaller_than_the_quorum_names_the_fix() {
    let mut node = Node::new(NodeConfig::new("n1"), vec![Member::new("n1", 1)], 0).unwrap();
    let put = |w: Option<QuorumValue>| ClientRequest::Put {
        bucket: b"d".to_vec(),
        key: b"k1".to_vec(),
        context: Context::default(),
        value: b"v".to_vec(),
        options: RequestOptions {
            w,
            ..Default::default()
        },
    };
    let error = node.handle_client(1, 1, put(None)).unwrap_err();
    assert_eq!(
        error,
        RequestError::TooFewMembers {
            quorum: "w".to_string(),
            needed: 2,
            members: 1,
            n: 3
        }
    );
    let message = error.to_string();
    for fix in ["?w=1", "n", "add nodes", "1 member"] {
        assert!(message.contains(fix), "{message}");
    }
    // What the message suggests works.
    node.handle_client(1, 2, put(Some(QuorumValue::Count(1))))
        .unwrap();
    let mut answered = false;
    for _ in 0..100 {
        while let Some(output) = node.poll_output() {
            match output {
                ringkv_core::io::Output::Storage { op_id, op } => {
                    let result = match op {
                        ringkv_core::storage::StorageOp::Get { .. } => {
                            ringkv_core::storage::StorageResult::Record(None)
                        }
                        _ => ringkv_core::storage::StorageResult::Written { synced: false },
                    };
                    node.handle_storage(1, op_id, result);
                }
                ringkv_core::io::Output::Reply { reply, .. } => {
                    assert!(matches!(reply, Reply::Written { .. }), "{reply:?}");
                    answered = true;
                }
                _ => {}
            }
        }
    }
    assert!(answered);
}

/// Before: a context read from key `other`, sent with a write of `victim`, answered success
/// and silently dropped `victim`'s value (the same actors count per key, so the other key's
/// clock covered its dot).
#[test]
fn a_context_of_another_key_is_refused_and_loses_nothing() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed: 25,
        ..SimConfig::default()
    });
    assert!(sim.put("n1", b"b", b"victim", b"precious", None).is_ok());
    assert!(sim.put("n1", b"b", b"other", b"x", None).is_ok());
    let other = sim.get("n1", b"b", b"other");
    let context = other.context().cloned().expect("a context");
    assert_eq!(
        context.key_fingerprint(),
        Some(ringkv_core::version::key_fingerprint(b"b", b"other"))
    );
    for node in ["n1", "n2", "n3"] {
        let write = sim.put(node, b"b", b"victim", b"overwrite", Some(&context));
        assert_eq!(
            write.outcome,
            Some(OpOutcome::Rejected(RequestError::ContextOfAnotherKey)),
            "{write:?}"
        );
        let index = sim.submit(
            node,
            ClientRequest::Delete {
                bucket: b"b".to_vec(),
                key: b"victim".to_vec(),
                context: context.clone(),
                options: RequestOptions::default(),
            },
        );
        let delete = sim.wait(index);
        assert_eq!(
            delete.outcome,
            Some(OpOutcome::Rejected(RequestError::ContextOfAnotherKey))
        );
    }
    // The same bytes through the HTTP form: the binding survives base64.
    let text = context.to_base64();
    let decoded = Context::from_base64(&text).unwrap();
    assert!(decoded.check_key(b"b", b"victim").is_err());
    assert!(decoded.check_key(b"b", b"other").is_ok());
    let read = sim.get_with("n2", b"b", b"victim", all());
    assert_eq!(read.values(), vec![b"precious".to_vec()]);
    // The context of the key itself, from a read or from the write's answer, still works.
    let own = sim.get("n2", b"b", b"victim");
    let write = sim.put("n3", b"b", b"victim", b"v2", own.context());
    assert!(write.is_ok(), "{write:?}");
    let again = sim.put("n1", b"b", b"victim", b"v3", write.context());
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(
        sim.get_with("n2", b"b", b"victim", all()).values(),
        vec![b"v3".to_vec()]
    );
    assert!(sim.check().is_ok());
}

/// Before: `ringkv put b k v1; ringkv delete b k` answered "deleted: acknowledged by 2
/// replicas" and `v1` was still there (a tombstone without a context supersedes nothing).
#[test]
fn a_delete_without_a_context_is_refused_not_answered_as_done() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed: 26,
        ..SimConfig::default()
    });
    assert!(sim.put("n1", b"b", b"k", b"v1", None).is_ok());
    let blind = sim.delete("n2", b"b", b"k", None);
    assert_eq!(
        blind.outcome,
        Some(OpOutcome::Rejected(RequestError::DeleteWithoutContext))
    );
    assert!(RequestError::DeleteWithoutContext
        .to_string()
        .contains("context of a read"));
    assert_eq!(sim.get("n3", b"b", b"k").values(), vec![b"v1".to_vec()]);
    // With the context of a read it deletes what the read saw.
    let read = sim.get("n3", b"b", b"k");
    assert!(sim.delete("n3", b"b", b"k", read.context()).is_ok());
    assert!(sim.get_with("n1", b"b", b"k", all()).values().is_empty());
    assert!(sim.check().is_ok());
}

/// Before: 1,000 blind writes made 1,000 siblings, and 24 blind 1 MiB writes a 25 MB object.
#[test]
fn a_bucket_bounds_its_siblings_and_object_size_yet_a_reconciling_write_always_passes() {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed: 27,
        ..SimConfig::default()
    });
    let props = ringkv_core::bucket::BucketProps {
        limits: ringkv_core::bucket::ObjectLimits {
            siblings_warn: 3,
            max_siblings: 5,
            max_object_bytes: 4_000,
        },
        ..Default::default()
    };
    assert!(sim.command(
        "n1",
        ringkv_core::io::Command::SetBucket {
            bucket: b"b".to_vec(),
            props,
        }
    ));
    sim.run(5_000);
    for i in 0..5 {
        let write = sim.put("n2", b"b", b"many", format!("v{i}").as_bytes(), None);
        assert!(write.is_ok(), "{write:?}");
    }
    let sixth = sim.put("n3", b"b", b"many", b"v5", None);
    assert_eq!(
        sixth.outcome,
        Some(OpOutcome::Replied(Reply::TooManySiblings {
            siblings: 6,
            max: 5
        }))
    );
    assert!(sim.trace().iter().any(|t| matches!(
        &t.kind,
        TraceKind::Event(Event::ManySiblings { siblings: 4, .. })
    )));
    let read = sim.get_with("n1", b"b", b"many", all());
    assert_eq!(read.values().len(), 5);
    let resolved = sim.put("n3", b"b", b"many", b"merged", read.context());
    assert!(resolved.is_ok(), "a reconciling write passes: {resolved:?}");
    assert_eq!(
        sim.get_with("n1", b"b", b"many", all()).values(),
        vec![b"merged".to_vec()]
    );

    let big = vec![7u8; 1_500];
    assert!(sim.put("n1", b"b", b"big", &big, None).is_ok());
    assert!(sim.put("n1", b"b", b"big", &big, None).is_ok());
    let third = sim.put("n1", b"b", b"big", &big, None);
    assert!(
        matches!(
            third.outcome,
            Some(OpOutcome::Replied(Reply::ObjectTooLarge { max: 4_000, .. }))
        ),
        "{third:?}"
    );
    // One value over the object bound, replacing every sibling it read: accepted.
    let read = sim.get_with("n1", b"b", b"big", all());
    let huge = vec![8u8; 5_000];
    let replaced = sim.put("n2", b"b", b"big", &huge, read.context());
    assert!(replaced.is_ok(), "{replaced:?}");
    assert_eq!(sim.get_with("n3", b"b", b"big", all()).values(), vec![huge]);
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
}

/// Before: a tombstone was reaped once its three replicas held it, while a fallback still held
/// a hint of the value it deleted; delivered after the reap, the hint brought the key back.
#[test]
fn a_tombstone_is_not_reaped_while_a_node_holds_a_hint_of_its_partition() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 23,
        ..SimConfig::default()
    });
    let key = b"cart".to_vec();
    let owners = owners(&sim, &key);
    let (a, c) = (owners[0].clone(), owners[2].clone());
    // The third owner is down: the write's third copy goes to fallbacks as hints.
    sim.crash(&c);
    sim.run(10_000);
    let write = sim.put(&a, b"b", &key, b"old", None);
    assert!(write.is_ok(), "{write:?}");
    sim.run(1_000);
    let holders: Vec<String> = sim
        .node_ids()
        .into_iter()
        .map(|n| n.to_string())
        .filter(|n| {
            sim.hints()
                .iter()
                .any(|h| h.starts_with(&format!("{n} holds")))
        })
        .collect();
    assert!(!holders.is_empty(), "a fallback took a hint");
    // Every hint holder is cut off from the owner it holds the hint for; the owner comes back.
    for holder in &holders {
        sim.cut(holder, &c);
        sim.cut(&c, holder);
    }
    sim.restart(&c);
    sim.run(10_000);
    let read = sim.get_with(&a, b"b", &key, all());
    assert_eq!(read.values(), vec![b"old".to_vec()], "{read:?}");
    let delete = sim.submit(
        &a,
        ClientRequest::Delete {
            bucket: b"b".to_vec(),
            key: key.clone(),
            context: read.context().cloned().expect("a context"),
            options: RequestOptions {
                w: Some(QuorumValue::All),
                ..Default::default()
            },
        },
    );
    let delete = sim.wait(delete);
    assert!(delete.is_ok(), "{delete:?}");
    // Far past the grace period: the three owners hold the same tombstone.
    sim.run(60_000);
    assert!(
        !sim.hints().is_empty(),
        "the hint is still held, its owner out of reach"
    );
    let verdict = sim.check();
    assert!(
        verdict.resurrected.is_empty(),
        "the deleted value came back: {verdict:#?}"
    );
    assert!(verdict.is_ok(), "{verdict:#?}");
    let read = sim.get_with(&a, b"b", &key, all());
    assert!(read.values().is_empty(), "{read:?}");
}

/// Owners the failure detector already knows are down are replaced by fallbacks when a write
/// starts (Dynamo's first N healthy nodes): a default-quorum write that needs a fallback does
/// not wait for the fallback time, let alone the timeout.
#[test]
fn owners_known_down_are_replaced_at_once() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 28,
        ..SimConfig::default()
    });
    let timeout = sim.config().request_timeout_ms;
    let fallback_after = timeout * u64::from(NodeConfig::new("x").fallback_after_percent) / 100;
    let key = b"k";
    let key_owners = owners(&sim, key);
    sim.crash(&key_owners[1]);
    sim.crash(&key_owners[2]);
    // Long enough for the failure detector to find them down.
    sim.run(20_000);
    let other = sim
        .node_ids()
        .into_iter()
        .map(|n| n.to_string())
        .find(|n| !key_owners.contains(n))
        .unwrap();
    for (i, node) in [&key_owners[0], &other].into_iter().enumerate() {
        let write = put_with(
            &mut sim,
            node,
            key,
            format!("v{i}").as_bytes(),
            None,
            RequestOptions::default(),
        );
        match &write.outcome {
            Some(OpOutcome::Replied(Reply::Written { fallbacks, .. })) => {
                assert!(!fallbacks.is_empty(), "{write:?}")
            }
            other => panic!("through {node}: {other:?}"),
        }
        let took = write.completed_at.unwrap_or(u64::MAX) - write.invoked_at;
        assert!(
            took < fallback_after,
            "through {node}: {took} ms, fallback time {fallback_after} ms"
        );
    }
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
}

/// Before: a node holding no replica of a key (its owners down) coordinated any write of it
/// blind, past the bucket's `max_object_bytes`. It cannot know the key's siblings, so it
/// bounds what it can see: its own write.
#[test]
fn a_write_coordinated_without_a_replica_keeps_the_object_bound() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 29,
        ..SimConfig::default()
    });
    let props = ringkv_core::bucket::BucketProps {
        limits: ringkv_core::bucket::ObjectLimits {
            max_object_bytes: 4_000,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(sim.command(
        "n1",
        ringkv_core::io::Command::SetBucket {
            bucket: b"b".to_vec(),
            props,
        }
    ));
    sim.run(5_000);
    let key = (0..)
        .map(|i| format!("k{i}").into_bytes())
        .find(|k| !owners(&sim, k).iter().any(|o| o == "n1"))
        .expect("some key n1 does not own");
    for owner in owners(&sim, &key) {
        sim.crash(&owner);
    }
    sim.run(20_000);
    let huge = put_with(&mut sim, "n1", &key, &[8u8; 5_000], None, one());
    assert!(
        matches!(
            huge.outcome,
            Some(OpOutcome::Replied(Reply::ObjectTooLarge { max: 4_000, .. }))
        ),
        "{huge:?}"
    );
    assert!(sim
        .trace()
        .iter()
        .any(|t| matches!(&t.kind, TraceKind::Event(Event::WriteRefused { .. }))));
    let small = put_with(&mut sim, "n1", &key, &[7u8; 1_500], None, one());
    assert!(small.is_ok(), "{small:?}");
    let verdict = sim.check();
    assert!(verdict.is_ok(), "{verdict:#?}");
}

/// Before: every member could leave (the cluster wedged with nobody to claim a ring), an id
/// that is no member was "removed", and a node that had left could be told to leave again
/// (its status went back from removed to leaving). Each is now refused, and nothing changes.
#[test]
fn leave_and_remove_refuse_what_would_wedge_the_ring_or_means_nothing() {
    use ringkv_core::io::Command;
    use ringkv_core::membership::MemberStatus;
    use ringkv_core::NodeId;
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        n: 2,
        seed: 29,
        ..SimConfig::default()
    });
    let status = |sim: &Sim, of: &str| {
        sim.view("n1")
            .and_then(|v| v.member(&NodeId::new(of)))
            .map(|m| m.status)
    };
    assert!(!sim.command(
        "n1",
        Command::Remove {
            node: NodeId::new("nosuch")
        }
    ));
    assert!(sim.command("n3", Command::Leave));
    assert!(sim.command("n2", Command::Leave));
    // Once gossip has told n1 (leaves given at the same moment on two nodes can still race).
    sim.run(2_000);
    // n1 is the last member up: nobody would be left to take its partitions over.
    assert!(!sim.command("n1", Command::Leave));
    assert!(!sim.command(
        "n2",
        Command::Remove {
            node: NodeId::new("n1")
        }
    ));
    sim.run(30_000);
    assert_eq!(status(&sim, "n3"), Some(MemberStatus::Removed));
    assert_eq!(status(&sim, "n1"), Some(MemberStatus::Up));
    // n3 has left: a second leave is refused, and it stays removed.
    assert!(!sim.command("n3", Command::Leave));
    sim.run(2_000);
    assert_eq!(status(&sim, "n3"), Some(MemberStatus::Removed));
    let ring = sim
        .view("n1")
        .and_then(|v| v.ring())
        .cloned()
        .expect("a ring");
    assert!(ring.next.is_none(), "the ring settled");
    assert_eq!(
        ring.ring
            .members()
            .iter()
            .map(|m| m.id.to_string())
            .collect::<Vec<_>>(),
        vec!["n1".to_string()]
    );
}
