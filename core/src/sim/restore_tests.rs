//! Restores in the simulator: a backup (each key's stored object) merged back into a cluster
//! that has newer writes keeps them, and into an empty cluster recreates siblings and contexts.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::vec::Vec;

use super::*;
use crate::checker::OpOutcome;
use crate::error::RequestError;
use crate::request::Reply;
use crate::version::Dot;

const BUCKET: &[u8] = b"b";
const KEYS: usize = 12;

fn key(i: usize) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

fn sim(seed: u64) -> Sim {
    Sim::new(SimConfig {
        nodes: 3,
        seed,
        ..SimConfig::default()
    })
}

fn reply(op: &Operation) -> &Reply {
    match &op.outcome {
        Some(OpOutcome::Replied(reply)) => reply,
        other => panic!("operation {} did not reply: {other:?}", op.index),
    }
}

/// The values and context of a get at `node`.
fn read(sim: &mut Sim, node: &str, key: &[u8]) -> (BTreeSet<Vec<u8>>, Context) {
    match reply(&sim.get(node, BUCKET, key)) {
        Reply::Got {
            values, context, ..
        } => (values.iter().cloned().collect(), context.clone()),
        other => panic!("get of {key:?}: {other}"),
    }
}

fn restore(sim: &mut Sim, node: &str, key: &[u8], record: &[u8]) {
    let index = sim.submit(
        node,
        ClientRequest::Restore {
            bucket: BUCKET.to_vec(),
            key: key.to_vec(),
            record: record.to_vec(),
            options: RequestOptions::default(),
        },
    );
    let op = sim.wait(index);
    assert!(
        matches!(reply(&op), Reply::Restored { replicas, .. } if replicas.len() >= 2),
        "restore of {key:?}: {:?}",
        op.outcome
    );
}

/// Writes of every shape: single values, concurrent blind writes through different nodes
/// (siblings), overwrites with a context, and deletes.
fn populate(sim: &mut Sim, rng: &mut ChaCha8Rng) {
    let nodes = ["n1", "n2", "n3"];
    for i in 0..KEYS {
        let k = key(i);
        let writers = rng.gen_range(1..=3);
        // Concurrent: submitted together, run together.
        let started: Vec<usize> = (0..writers)
            .map(|w| {
                sim.submit(
                    nodes[(i + w) % 3],
                    ClientRequest::Put {
                        bucket: BUCKET.to_vec(),
                        key: k.clone(),
                        context: Context::default(),
                        value: format!("v{i}.{w}").into_bytes(),
                        options: RequestOptions::default(),
                    },
                )
            })
            .collect();
        for index in started {
            sim.wait(index);
        }
        match rng.gen_range(0..4) {
            0 => {
                let (_, context) = read(sim, "n1", &k);
                sim.put(
                    "n2",
                    BUCKET,
                    &k,
                    format!("over{i}").as_bytes(),
                    Some(&context),
                );
            }
            1 => {
                let (_, context) = read(sim, "n3", &k);
                sim.delete("n3", BUCKET, &k, Some(&context));
            }
            _ => {}
        }
    }
    sim.run_until_quiet(60_000);
}

/// Each key's object as one replica stores it: what a node backup holds.
fn backup(sim: &Sim) -> Vec<(Vec<u8>, Object)> {
    (0..KEYS)
        .filter_map(|i| {
            let k = key(i);
            let object = sim
                .replicas_of(BUCKET, &k)
                .into_iter()
                .find_map(|replica| replica.object)?;
            Some((k, object))
        })
        .collect()
}

fn dots(object: &Option<Object>) -> BTreeSet<Dot> {
    object
        .iter()
        .flat_map(|o| o.siblings().iter().map(|s| s.dot.clone()))
        .collect()
}

#[test]
fn restoring_into_an_empty_cluster_recreates_siblings_and_contexts() {
    for seed in 0..4 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut source = sim(seed);
        populate(&mut source, &mut rng);
        let saved = backup(&source);
        assert!(
            saved.iter().any(|(_, o)| o.siblings().len() > 1),
            "seed {seed}: no siblings"
        );

        // A wiped cluster: its nodes restart as new actors, as a real node's incarnation is.
        let mut target = sim(seed + 100);
        for node in ["n1", "n2", "n3"] {
            target.crash(node);
            target.restart(node);
        }
        target.run(2_000);
        for (i, (k, object)) in saved.iter().enumerate() {
            restore(&mut target, ["n1", "n2", "n3"][i % 3], k, &object.encode());
        }
        target.run(3_000);
        for (k, object) in &saved {
            for replica in target.replicas_of(BUCKET, k) {
                assert_eq!(replica.object.as_ref(), Some(object), "seed {seed} {k:?}");
            }
            let (values, context) = read(&mut target, "n2", k);
            let expected: BTreeSet<Vec<u8>> = object.values().map(<[u8]>::to_vec).collect();
            assert_eq!(values, expected, "seed {seed} {k:?}");
            assert_eq!(context.clock(), object.clock(), "seed {seed} {k:?}");
            // A put with the restored context supersedes exactly what it saw.
            let resolved = format!("resolved{seed}").into_bytes();
            let put = target.put("n1", BUCKET, k, &resolved, Some(&context));
            assert!(matches!(reply(&put), Reply::Written { .. }));
            let (values, _) = read(&mut target, "n3", k);
            assert_eq!(values, BTreeSet::from([resolved]), "seed {seed} {k:?}");
        }
    }
}

#[test]
fn restoring_an_old_backup_keeps_every_newer_write() {
    for seed in 0..4 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sim = sim(seed);
        populate(&mut sim, &mut rng);
        let saved = backup(&sim);
        // Newer writes: overwrites that saw the backed-up state, concurrent blind writes, and
        // deletes.
        let mut superseding = Vec::new();
        let mut concurrent = Vec::new();
        let mut deleted = Vec::new();
        for i in 0..KEYS {
            let k = key(i);
            match i % 3 {
                0 => {
                    let (_, context) = read(&mut sim, "n2", &k);
                    let value = format!("newer{i}").into_bytes();
                    sim.put("n1", BUCKET, &k, &value, Some(&context));
                    superseding.push((k, value));
                }
                1 => {
                    let value = format!("blind{i}").into_bytes();
                    sim.put("n3", BUCKET, &k, &value, None);
                    concurrent.push((k, value));
                }
                _ => {
                    let (_, context) = read(&mut sim, "n1", &k);
                    if !context.is_empty() {
                        sim.delete("n1", BUCKET, &k, Some(&context));
                        deleted.push(k);
                    }
                }
            }
        }
        // Within the tombstone grace period (10 s here): a delete whose tombstone has been reaped
        // is forgotten, and a restore of an older backup brings the deleted values back (see
        // docs/backup.md).
        sim.run(3_000);
        let before: Vec<Vec<BTreeSet<Dot>>> = (0..KEYS)
            .map(|i| {
                sim.replicas_of(BUCKET, &key(i))
                    .iter()
                    .map(|r| dots(&r.object))
                    .collect()
            })
            .collect();
        for (i, (k, object)) in saved.iter().enumerate() {
            restore(&mut sim, ["n3", "n1", "n2"][i % 3], k, &object.encode());
        }
        sim.run(3_000);
        for (i, held_before) in before.iter().enumerate() {
            let after = sim.replicas_of(BUCKET, &key(i));
            for (replica, held) in after.iter().zip(held_before) {
                let now = dots(&replica.object);
                assert!(
                    held.is_subset(&now),
                    "seed {seed} k{i}: {held:?} lost in {now:?}"
                );
            }
        }
        for (k, value) in &superseding {
            let (values, _) = read(&mut sim, "n3", k);
            assert_eq!(values, BTreeSet::from([value.clone()]), "seed {seed} {k:?}");
        }
        for (k, value) in &concurrent {
            let (values, _) = read(&mut sim, "n2", k);
            assert!(values.contains(value), "seed {seed} {k:?}: {values:?}");
        }
        for k in &deleted {
            let (values, _) = read(&mut sim, "n2", k);
            assert!(values.is_empty(), "seed {seed} {k:?} came back: {values:?}");
        }
    }
}

#[test]
fn a_damaged_record_is_refused_before_anything_is_sent() {
    let mut sim = sim(7);
    sim.put("n1", BUCKET, b"k", b"v", None);
    sim.run_until_quiet(10_000);
    let mut record = sim
        .replicas_of(BUCKET, b"k")
        .into_iter()
        .find_map(|replica| replica.object)
        .map(|object| object.encode())
        .expect("a replica holds the key");
    let middle = record.len() / 2;
    record[middle] ^= 0x40;
    let index = sim.submit(
        "n2",
        ClientRequest::Restore {
            bucket: BUCKET.to_vec(),
            key: b"k".to_vec(),
            record,
            options: RequestOptions::default(),
        },
    );
    let op = sim.wait(index);
    assert!(
        matches!(
            op.outcome,
            Some(OpOutcome::Rejected(RequestError::BadRecord { .. }))
        ),
        "{:?}",
        op.outcome
    );
}
