//! Key listing and watches in the simulator (issue 15): a listing's pages, walked to the end from
//! any node, hold exactly the live keys (none twice, none deleted or expired), with a replica
//! down or a partition cut; a watch answers with the first write its context has not seen, at
//! once when there already is one, and "unchanged" at its deadline otherwise. Failures print
//! their seed; replay one with `RINGKV_SEED=<seed> cargo test -p ringkv-tests --test
//! listing_and_watch`.

use std::collections::BTreeSet;

use ringkv_core::bucket::RequestOptions;
use ringkv_core::checker::{OpOutcome, Operation};
use ringkv_core::error::RequestError;
use ringkv_core::listing::ListCursor;
use ringkv_core::request::{ClientRequest, Reply};
use ringkv_core::sim::{Sim, SimConfig};
use ringkv_core::version::Context;

const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

fn seeds() -> Vec<u64> {
    match std::env::var("RINGKV_SEED") {
        Ok(seed) => vec![seed.parse().expect("RINGKV_SEED is a number")],
        Err(_) => (1..=6).collect(),
    }
}

fn reply(op: &Operation) -> &Reply {
    match &op.outcome {
        Some(OpOutcome::Replied(reply)) => reply,
        other => panic!("no reply: {other:?}"),
    }
}

fn sim(seed: u64) -> Sim {
    Sim::new(SimConfig {
        nodes: NODES.len(),
        seed,
        partitions: 32,
        ..SimConfig::default()
    })
}

/// Walks a listing to its end from `node`, `limit` keys a page; `None` if a page failed.
fn list_all(sim: &mut Sim, node: &str, limit: u32) -> Option<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut cursor: Option<ListCursor> = None;
    for _ in 0..10_000 {
        let index = sim.submit(
            node,
            ClientRequest::List {
                bucket: b"b".to_vec(),
                cursor: cursor.clone(),
                limit,
                options: RequestOptions::default(),
            },
        );
        match reply(&sim.wait(index)) {
            Reply::Listed {
                keys: page,
                cursor: next,
            } => {
                assert!(page.len() <= limit as usize, "a page over its limit");
                keys.extend(page.iter().cloned());
                match next {
                    None => return Some(keys),
                    Some(next) => cursor = Some(next.clone()),
                }
            }
            Reply::Unavailable { .. } => return None,
            other => panic!("unexpected answer to a listing: {other:?}"),
        }
    }
    panic!("a listing that never ends");
}

/// Writes `count` keys, deletes every fifth and gives every seventh a short life; returns the
/// keys that are live once those have expired.
fn fill(sim: &mut Sim, count: usize) -> BTreeSet<Vec<u8>> {
    let mut live = BTreeSet::new();
    for i in 0..count {
        let key = format!("key-{i:04}").into_bytes();
        let node = NODES[i % NODES.len()];
        let options = RequestOptions {
            ttl_ms: (i % 7 == 0).then_some(1_000),
            ..Default::default()
        };
        let index = sim.submit(
            node,
            ClientRequest::Put {
                bucket: b"b".to_vec(),
                key: key.clone(),
                context: Context::default(),
                value: b"v".to_vec(),
                options,
            },
        );
        let written = sim.wait(index);
        assert!(written.is_ok(), "{written:?}");
        if i % 5 == 0 {
            let context = written.context().cloned();
            let deleted = sim.delete(node, b"b", &key, context.as_ref());
            assert!(deleted.is_ok(), "{deleted:?}");
        } else if i % 7 != 0 {
            live.insert(key);
        }
    }
    // Another bucket's keys share the partitions and must not be listed.
    for i in 0..20 {
        let other = sim.put("n1", b"other", format!("key-{i}").as_bytes(), b"v", None);
        assert!(other.is_ok(), "{other:?}");
    }
    sim.run(1_500);
    live
}

#[test]
fn a_listing_walked_to_its_end_holds_exactly_the_live_keys() {
    for seed in seeds() {
        let mut sim = sim(seed);
        let live = fill(&mut sim, 240);
        let node = NODES[seed as usize % NODES.len()];
        let listed = list_all(&mut sim, node, 37)
            .unwrap_or_else(|| panic!("seed {seed}: a listing failed with every node up"));
        let set: BTreeSet<Vec<u8>> = listed.iter().cloned().collect();
        assert_eq!(set.len(), listed.len(), "seed {seed}: a key listed twice");
        assert_eq!(set, live, "seed {seed}: the listing is not the live keys");
    }
}

#[test]
fn a_listing_completes_with_a_replica_down_and_fails_clearly_when_a_partition_has_none() {
    for seed in seeds() {
        let mut sim = sim(seed);
        let live = fill(&mut sim, 120);
        sim.crash("n2");
        let listed = list_all(&mut sim, "n1", 1_000)
            .unwrap_or_else(|| panic!("seed {seed}: one node down failed the listing"));
        let set: BTreeSet<Vec<u8>> = listed.into_iter().collect();
        assert_eq!(set, live, "seed {seed}: with n2 down");
        // Cut off from everyone, a node holds only some partitions: the walk stops at the first
        // it cannot read, with an answer that says so, never a silently short listing.
        sim.restart("n2");
        sim.partition(&[&["n1"], &["n2", "n3", "n4", "n5"]]);
        match list_all(&mut sim, "n1", 1_000) {
            None => {}
            Some(keys) => panic!(
                "seed {seed}: a node cut off from every owner of some partitions listed {} keys \
                 as if complete",
                keys.len()
            ),
        }
        sim.heal();
        sim.run(2_000);
        let healed = list_all(&mut sim, "n1", 100).expect("healed");
        assert_eq!(healed.into_iter().collect::<BTreeSet<_>>(), live);
    }
}

#[test]
fn a_listing_refuses_a_bad_limit_and_a_cursor_past_the_ring() {
    let mut sim = sim(1);
    for (limit, cursor) in [
        (0, None),
        (1_001, None),
        (
            10,
            Some(ListCursor {
                partition: ringkv_core::ring::PartitionId(32),
                after: None,
            }),
        ),
    ] {
        let index = sim.submit(
            "n1",
            ClientRequest::List {
                bucket: b"b".to_vec(),
                cursor,
                limit,
                options: RequestOptions::default(),
            },
        );
        let op = sim.wait(index);
        assert!(
            matches!(
                op.outcome,
                Some(OpOutcome::Rejected(
                    RequestError::ListLimit { .. } | RequestError::Cursor(_)
                ))
            ),
            "{op:?}"
        );
    }
}

fn watch(sim: &mut Sim, node: &str, key: &[u8], context: &Context, wait_ms: u64) -> usize {
    sim.submit(
        node,
        ClientRequest::Watch {
            bucket: b"b".to_vec(),
            key: key.to_vec(),
            context: context.clone(),
            wait_ms,
            options: RequestOptions::default(),
        },
    )
}

#[test]
fn a_watch_answers_with_the_first_write_it_has_not_seen_soon_after_its_ack() {
    for seed in seeds() {
        let mut sim = sim(seed);
        let first = sim.put("n1", b"b", b"cart", b"one", None);
        let context = first.context().cloned().expect("a context");
        let watcher = watch(&mut sim, "n4", b"cart", &context, 30_000);
        sim.run(2_000);
        assert!(
            sim.history()[watcher].outcome.is_none(),
            "seed {seed}: a watch answered with no change: {:?}",
            sim.history()[watcher]
        );
        let second = sim.put("n2", b"b", b"cart", b"two", Some(&context));
        assert!(second.is_ok(), "{second:?}");
        let acked_at = second.completed_at.expect("completed");
        let answered = sim.wait(watcher);
        assert_eq!(answered.values(), vec![b"two".to_vec()], "seed {seed}");
        // An owner may tell the watcher before the coordinator has its W acks: no wait at all.
        let latency = answered
            .completed_at
            .expect("completed")
            .saturating_sub(acked_at);
        // The owner's message to the watcher is one network delay; the simulator's delays are
        // at most 20 ms, so a watch that polled (or waited for its deadline) would show here.
        assert!(
            latency <= 100,
            "seed {seed}: the watch answered {latency} ms after the write's ack"
        );
        let newer = answered.context().cloned().expect("a context");
        assert!(
            second
                .context()
                .is_some_and(|written| newer.clock().descends(written.clock())),
            "seed {seed}: the watch's context does not cover the write it reports"
        );
    }
}

#[test]
fn a_watch_with_a_stale_context_answers_at_once_and_one_with_the_latest_waits_its_time() {
    let mut sim = sim(3);
    let first = sim.put("n1", b"b", b"k", b"one", None);
    let stale = first.context().cloned().expect("a context");
    let second = sim.put("n1", b"b", b"k", b"two", Some(&stale));
    let latest = second.context().cloned().expect("a context");
    let at_once = watch(&mut sim, "n3", b"k", &stale, 60_000);
    let answered = sim.wait(at_once);
    assert_eq!(answered.values(), vec![b"two".to_vec()]);
    assert!(answered.completed_at.unwrap() - answered.invoked_at < 1_000);

    let waiting = watch(&mut sim, "n3", b"k", &latest, 3_000);
    let unchanged = sim.wait(waiting);
    match reply(&unchanged) {
        Reply::Unchanged { context } => assert_eq!(context.clock(), latest.clock()),
        other => panic!("{other:?}"),
    }
    let waited = unchanged.completed_at.unwrap() - unchanged.invoked_at;
    assert!((3_000..3_500).contains(&waited), "waited {waited} ms");
}

#[test]
fn a_watch_of_a_key_never_written_answers_its_creation_and_a_delete_is_a_change() {
    let mut sim = sim(4);
    let creation = watch(&mut sim, "n5", b"new", &Context::empty(), 30_000);
    sim.run(500);
    assert!(sim.history()[creation].outcome.is_none());
    let created = sim.put("n2", b"b", b"new", b"hello", None);
    assert_eq!(sim.wait(creation).values(), vec![b"hello".to_vec()]);
    let context = created.context().cloned().expect("a context");
    let deletion = watch(&mut sim, "n1", b"new", &context, 30_000);
    sim.run(500);
    let deleted = sim.delete("n3", b"b", b"new", Some(&context));
    assert!(deleted.is_ok(), "{deleted:?}");
    let answered = sim.wait(deletion);
    assert!(answered.is_ok(), "{answered:?}");
    assert!(answered.values().is_empty(), "a delete reads as no value");
}

#[test]
fn a_watch_outlives_a_crashed_owner_and_its_coordinator_hears_from_the_others() {
    for seed in seeds() {
        let mut sim = sim(seed);
        let first = sim.put("n1", b"b", b"k", b"one", None);
        let context = first.context().cloned().expect("a context");
        let watcher = watch(&mut sim, "n1", b"k", &context, 30_000);
        sim.run(300);
        // Crash one owner that is not the watcher: the other owners still tell.
        let owners = sim
            .node("n1")
            .expect("n1")
            .ring()
            .preference_list(ringkv_core::ring::key_position(b"b", b"k"), 3);
        if let Some(owner) = owners.iter().find(|o| o.as_str() != "n1") {
            sim.crash(owner.as_str());
        }
        let second = sim.put("n1", b"b", b"k", b"two", Some(&context));
        assert!(second.is_ok() || matches!(reply(&second), Reply::OutcomeUnknown { .. }));
        let answered = sim.wait(watcher);
        assert_eq!(answered.values(), vec![b"two".to_vec()], "seed {seed}");
    }
}
