//! Backup and restore against real `ringkv server` processes (issue 17, item 7).
//!
//! Writers run (blind puts from several clients to the same keys, so there are siblings,
//! overwrites with a read's context, and deletes) while a node backup, a whole-cluster backup
//! (every member's node snapshot) and a bucket backup are taken with the `ringkv` binary. The
//! cluster is then stopped and wiped, a fresh cluster (of another cluster name) is started, a
//! damaged backup is refused without writing anything, and each backup is restored and checked
//! against what the writers had acknowledged before it started:
//!
//! - every acknowledged write's dot is in the restored key's history (its clock covers it);
//! - an acknowledged put's value is still a sibling, unless some write was made with a context
//!   that had seen it (it was superseded, as the history checker in core judges it);
//! - no sibling is one that a write acknowledged before the backup had superseded (no deleted or
//!   overwritten value comes back).
//!
//! Then newer values are written and the same backup is restored again: the newer values
//! survive (a restore merges, it never overwrites). Sizes and times are printed, never asserted.
//!
//! Needs the `ringkv` binary next to the test executable's folder.
mod common;

use common::cluster::*;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringkv_client::{Client, Options};
use ringkv_core::version::{ActorId, ConflictMode, Context, Dot, Object};

const BUCKET: &str = "bk";
const KEYS: usize = 60;
const WRITERS: usize = 4;

/// One write a writer made, as it ended.
#[derive(Clone, Debug)]
struct Write {
    key: usize,
    /// The value of a put; `None` for a delete.
    value: Option<Bytes>,
    /// The context it was made with (what it supersedes).
    context: Option<Context>,
    /// Its dot, when acknowledged.
    dot: Option<Dot>,
    /// When its acknowledgement came.
    acked_at: Option<Instant>,
}

fn key_name(i: usize) -> String {
    format!("key-{i:03}")
}

fn dot_of(text: Option<&str>) -> Option<Dot> {
    let (actor, counter) = text?.rsplit_once(':')?;
    Some(Dot {
        actor: ActorId::new(actor),
        counter: counter.parse().ok()?,
    })
}

fn context_of(text: Option<&str>) -> Option<Context> {
    text.and_then(|t| Context::from_base64(t).ok())
}

/// One writer: until `stop`, picks a key and does a blind put, an overwrite with a read's
/// context, or a delete of what a read saw, and records every write.
async fn writer(id: usize, client: Client, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Write>>>) {
    let mut rng = ChaCha8Rng::seed_from_u64(id as u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = rng.gen_range(0..KEYS);
        let name = key_name(key);
        let value = Bytes::from(format!("w{id}-{n}-{}", "x".repeat(60)));
        let choice = rng.gen_range(0..10);
        let context = if choice < 5 {
            None
        } else {
            match client
                .get(BUCKET.as_bytes(), name.as_bytes(), &Options::default())
                .await
            {
                Ok(read) => read.context,
                Err(_) => continue,
            }
        };
        let (value, result) = if choice == 9 && context.is_some() {
            let result = client
                .delete(
                    BUCKET.as_bytes(),
                    name.as_bytes(),
                    context.as_deref(),
                    &Options::default(),
                )
                .await;
            (None, result)
        } else {
            let result = client
                .put(
                    BUCKET.as_bytes(),
                    name.as_bytes(),
                    context.as_deref(),
                    value.clone(),
                    &Options::default(),
                )
                .await;
            (Some(value), result)
        };
        let acked = result.ok();
        log.lock().expect("log").push(Write {
            key,
            value,
            context: context_of(context.as_deref()),
            dot: acked.as_ref().and_then(|r| dot_of(r.dot.as_deref())),
            acked_at: acked.map(|_| Instant::now()),
        });
    }
}

fn ringkv(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(ringkv_tests::ringkv_binary())
        .args(args)
        .output()
        .expect("ringkv runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `ringkv backup` with `args`, and returns the time it took.
fn backup(args: &[&str], out: &Path) -> Duration {
    let started = Instant::now();
    let mut all = vec!["backup", "--out", out.to_str().expect("path")];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = ringkv(&all);
    let took = started.elapsed();
    assert!(ok, "ringkv backup {args:?} failed:\n{stdout}\n{stderr}");
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup {args:?}: {size} bytes in {took:?}: {}",
        stdout.trim()
    );
    took
}

fn restore(node: &str, file: &Path) -> (bool, String) {
    let started = Instant::now();
    let (ok, stdout, stderr) = ringkv(&["restore", "--node", node, file.to_str().expect("path")]);
    println!(
        "restore of {}: {:?}: {} {}",
        file.display(),
        started.elapsed(),
        stdout.trim(),
        stderr.trim()
    );
    (ok, format!("{stdout}\n{stderr}"))
}

/// Every replica's object of each key, merged (every node of the cluster holds every key: N
/// is the cluster's size).
async fn restored_state(cluster: &Cluster, nodes: usize) -> BTreeMap<usize, Object> {
    let client = cluster.pinned_client(&[0]);
    let mut state = BTreeMap::new();
    for key in 0..KEYS {
        let mut merged: Option<Object> = None;
        for i in 0..nodes {
            let record = client
                .replica(&cluster.url(i), BUCKET.as_bytes(), key_name(key).as_bytes())
                .await
                .expect("replica read");
            if let Some(record) = record {
                let object = Object::decode(&record).expect("a whole record");
                match &mut merged {
                    Some(merged) => merged.merge(&object, ConflictMode::Siblings),
                    None => merged = Some(object),
                }
            }
        }
        if let Some(object) = merged {
            state.insert(key, object);
        }
    }
    state
}

/// What is wrong with `state` for a backup started at `started`, given every write made. With
/// `live_only` (a bucket backup, taken through the listing, which leaves deleted keys out), a
/// key that is absent altogether is excused when it was deleted.
fn problems(
    writes: &[Write],
    started: Instant,
    state: &BTreeMap<usize, Object>,
    live_only: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let before: Vec<&Write> = writes
        .iter()
        .filter(|w| w.acked_at.is_some_and(|at| at < started))
        .collect();
    let empty = Object::new();
    for write in &before {
        let Some(dot) = &write.dot else { continue };
        let deleted = writes
            .iter()
            .any(|w| w.key == write.key && w.value.is_none());
        if live_only && deleted && !state.contains_key(&write.key) {
            continue;
        }
        let object = state.get(&write.key).unwrap_or(&empty);
        let name = key_name(write.key);
        if !object.clock().covers(dot) {
            problems.push(format!(
                "{name}: the history lost {dot} ({:?})",
                write.value
            ));
        }
        if let Some(value) = &write.value {
            let held = object.siblings().iter().any(|s| s.dot == *dot);
            // Superseded: some write (acknowledged or not) was made with a context that saw it.
            let superseded = writes.iter().any(|other| {
                other.key == write.key
                    && other
                        .context
                        .as_ref()
                        .is_some_and(|c| c.clock().covers(dot))
            });
            if !held && !superseded {
                problems.push(format!(
                    "{name}: lost the acknowledged value {value:?} ({dot})"
                ));
            }
        }
    }
    for (key, object) in state {
        for sibling in object.siblings() {
            let superseded_by = before.iter().find(|w| {
                w.key == *key
                    && w.context
                        .as_ref()
                        .is_some_and(|c| c.clock().covers(&sibling.dot))
            });
            if superseded_by.is_some() {
                problems.push(format!(
                    "{}: {} came back though a write acknowledged before the backup superseded it",
                    key_name(*key),
                    sibling.dot
                ));
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_taken_under_load_restore_every_acknowledged_write_and_merge() {
    let source = Cluster::start(3).await;
    let dir = tempfile::tempdir().expect("temporary folder");
    // Every key exists before the writers start, so the bucket listing finds them all.
    let setup = source.client(&[0, 1, 2]);
    let log = Arc::new(Mutex::new(Vec::new()));
    for key in 0..KEYS {
        let value = Bytes::from(format!("first-{key}"));
        let result = setup
            .put(
                BUCKET.as_bytes(),
                key_name(key).as_bytes(),
                None,
                value.clone(),
                &all_w(),
            )
            .await
            .expect("setup put");
        log.lock().expect("log").push(Write {
            key,
            value: Some(value),
            context: None,
            dot: dot_of(result.dot.as_deref()),
            acked_at: Some(Instant::now()),
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writer(
                id,
                source.client(&[id % 3]),
                Arc::clone(&stop),
                Arc::clone(&log),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let node_file = dir.path().join("n1.backup");
    let all_file = dir.path().join("all.backup");
    let bucket_file = dir.path().join("bucket.backup");
    let url = source.url(0);
    let node_file2 = node_file.clone();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || backup(&["--node", &url2], &node_file2))
        .await
        .expect("node backup");
    let all_started = Instant::now();
    let (all_file2, url2) = (all_file.clone(), url.clone());
    tokio::task::spawn_blocking(move || backup(&["--all", "--node", &url2], &all_file2))
        .await
        .expect("cluster backup");
    let bucket_started = Instant::now();
    let (bucket_file2, url2) = (bucket_file.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        backup(&["--bucket", BUCKET, "--node", &url2], &bucket_file2)
    })
    .await
    .expect("bucket backup");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let writes = log.lock().expect("log").clone();
    let acked = writes.iter().filter(|w| w.acked_at.is_some()).count();
    let siblings_made = writes.iter().filter(|w| w.context.is_none()).count();
    println!(
        "{} writes ({acked} acknowledged, {siblings_made} blind), {} deletes",
        writes.len(),
        writes.iter().filter(|w| w.value.is_none()).count()
    );
    assert!(acked > 100, "the writers barely wrote: {acked}");

    // Stop and wipe the cluster; start a fresh one of another name.
    let mut source = source;
    for i in 0..3 {
        source.stop(i);
        source.wipe(i);
    }
    drop(source);
    let other = CONFIG.replacen(
        "partitions = 64",
        "cluster = \"restored\"\npartitions = 64",
        1,
    );
    let target = Cluster::start_with(3, &other, |_| {}).await;
    let target_url = target.url(1);

    // A damaged backup is refused whole, and nothing is written.
    let damaged = dir.path().join("damaged.backup");
    let whole = std::fs::read(&all_file).expect("backup read");
    let mut bytes = whole.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&damaged, &bytes).expect("damaged copy");
    let (ok, output) = restore(&target_url, &damaged);
    assert!(!ok, "a damaged backup was restored: {output}");
    assert!(
        output.contains("damaged") || output.contains("not a usable backup"),
        "unclear error: {output}"
    );
    let page = target
        .pinned_client(&[0])
        .list_keys(BUCKET.as_bytes(), None, None, &Options::default())
        .await
        .expect("listing");
    assert!(
        page.keys.is_empty(),
        "a refused restore wrote {:?}",
        page.keys
    );
    // A truncated one too.
    let truncated = dir.path().join("truncated.backup");
    std::fs::write(&truncated, &whole[..whole.len() - 3]).expect("cut copy");
    let (ok, output) = restore(&target_url, &truncated);
    assert!(!ok && output.contains("truncated"), "{output}");

    // The whole-cluster backup, into the fresh cluster of another name.
    let (ok, output) = restore(&target_url, &all_file);
    assert!(ok, "restore failed: {output}");
    assert!(output.contains("0 failed"), "{output}");
    let state = restored_state(&target, 3).await;
    let found = problems(&writes, all_started, &state, false);
    assert!(
        found.is_empty(),
        "after the cluster backup's restore:\n{}",
        found.join("\n")
    );
    let with_siblings = state.values().filter(|o| o.siblings().len() > 1).count();
    println!(
        "restored {} keys, {with_siblings} with siblings",
        state.len()
    );

    // The bucket backup (a fuzzy scan: each key as of its read) and the node backup merge in
    // on top: nothing acknowledged before either is lost, nothing superseded comes back.
    let (ok, output) = restore(&target_url, &bucket_file);
    assert!(ok, "restore failed: {output}");
    let state = restored_state(&target, 3).await;
    // Merged on top, the bucket backup takes nothing of the cluster backup's away (a delete
    // made between the two is in neither: the listing leaves deleted keys out).
    let found = problems(&writes, all_started, &state, false);
    assert!(
        found.is_empty(),
        "after the bucket backup's restore:\n{}",
        found.join("\n")
    );
    // The node's own snapshot (with W = 2 of 3 it may miss a write only its peers had): it
    // restores whole and takes nothing away either.
    let (ok, output) = restore(&target_url, &node_file);
    assert!(ok, "restore failed: {output}");
    let state = restored_state(&target, 3).await;
    let found = problems(&writes, all_started, &state, false);
    assert!(
        found.is_empty(),
        "after the node backup's restore:\n{}",
        found.join("\n")
    );

    // A bucket backup alone restores into an empty bucket of the fresh cluster too.
    let bucket_only = Cluster::start_with(3, &other, |_| {}).await;
    let (ok, output) = restore(&bucket_only.url(0), &bucket_file);
    assert!(ok, "restore failed: {output}");
    let state = restored_state(&bucket_only, 3).await;
    let found = problems(&writes, bucket_started, &state, true);
    assert!(
        found.is_empty(),
        "bucket backup alone:\n{}",
        found.join("\n")
    );
    drop(bucket_only);

    // Newer writes, then the same backup again: they survive.
    let client = target.client(&[0, 1, 2]);
    let mut newer = BTreeMap::new();
    for key in (0..KEYS).step_by(3) {
        let name = key_name(key);
        let read = client
            .get(BUCKET.as_bytes(), name.as_bytes(), &all())
            .await
            .expect("read");
        let value = Bytes::from(format!("newer-{key}"));
        client
            .put(
                BUCKET.as_bytes(),
                name.as_bytes(),
                read.context.as_deref(),
                value.clone(),
                &all_w(),
            )
            .await
            .expect("newer write");
        newer.insert(key, value);
    }
    let mut blind = BTreeMap::new();
    for key in (1..KEYS).step_by(3) {
        let value = Bytes::from(format!("blind-{key}"));
        client
            .put(
                BUCKET.as_bytes(),
                key_name(key).as_bytes(),
                None,
                value.clone(),
                &all_w(),
            )
            .await
            .expect("blind write");
        blind.insert(key, value);
    }
    let (ok, output) = restore(&target_url, &all_file);
    assert!(ok, "restore failed: {output}");
    for (key, value) in &newer {
        let read = client
            .get(BUCKET.as_bytes(), key_name(*key).as_bytes(), &all())
            .await
            .expect("read");
        assert_eq!(
            read.values,
            vec![value.clone()],
            "{}: the newer write was not kept alone",
            key_name(*key)
        );
    }
    for (key, value) in &blind {
        let read = client
            .get(BUCKET.as_bytes(), key_name(*key).as_bytes(), &all())
            .await
            .expect("read");
        assert!(
            read.values.contains(value),
            "{}: the newer write was lost",
            key_name(*key)
        );
    }
}

fn all_w() -> Options {
    Options {
        w: Some(ringkv_core::bucket::QuorumValue::All),
        ..Options::default()
    }
}
