//! Durability of `ringkv server` processes (issue 8, item 3): every node of a cluster killed at
//! once under dw = 1 writes, a data file with a torn or garbled tail, values flipped on disk, and
//! a full disk. Each test says what it measured on stderr (`--nocapture` to see it).
//!
//! Needs the `ringkv` binary next to the test executable's folder (`scripts/test` builds it
//! first). One test at a time, like `multiprocess.rs`. The full-disk test mounts a tmpfs, so it
//! needs root; without it, it says so and passes without testing anything.
mod common;

use common::cluster::*;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{Client, ClientError, Options};
use ringkv_core::bucket::QuorumValue;

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn one() -> Options {
    Options {
        r: Some(QuorumValue::One),
        ..Options::default()
    }
}

/// A value that occurs nowhere else in a data file: a marker naming the key, then filler.
fn value_of(key: &str, len: usize) -> Bytes {
    let mut value = marker(key).into_bytes();
    while value.len() < len {
        value.extend_from_slice(b"0123456789abcdef");
    }
    value.truncate(len.max(marker(key).len()));
    Bytes::from(value)
}

fn marker(key: &str) -> String {
    format!("durable-value-of-<{key}>:")
}

/// Writes `count` keys `{prefix}{i}` through `client`, each acknowledged (or the test fails).
async fn write_keys(
    client: &Client,
    bucket: &[u8],
    prefix: &str,
    count: u32,
) -> Vec<(String, Bytes)> {
    let mut written = Vec::new();
    for i in 0..count {
        let key = format!("{prefix}{i}");
        let value = value_of(&key, 300);
        client
            .put(
                bucket,
                key.as_bytes(),
                None,
                value.clone(),
                &Options::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        written.push((key, value));
    }
    written
}

fn expected(written: &[(String, Bytes)]) -> Vec<(String, Vec<Bytes>)> {
    written
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect()
}

/// Every position of `needle` in `haystack`.
fn positions(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect()
}

/// Sums a metric over nodes `which`.
async fn metric_sum(cluster: &Cluster, which: &[usize], name: &str) -> f64 {
    let mut sum = 0.0;
    for &i in which {
        sum += cluster.metric(i, name).await;
    }
    sum
}

/// Reads every key through node `i` only with r=one; returns the keys whose answer is not
/// exactly the expected value (an error counts as wrong too when `strict`; else only a value
/// other than the expected one does).
async fn wrong_reads_through(
    cluster: &Cluster,
    i: usize,
    written: &[(String, Bytes)],
    bucket: &[u8],
    strict: bool,
) -> Vec<String> {
    let client = cluster.pinned_client(&[i]);
    let mut wrong = Vec::new();
    for (key, value) in written {
        match client.get(bucket, key.as_bytes(), &one()).await {
            Ok(read) if read.values == [value.clone()] => {}
            Ok(read) if !strict && read.values.is_empty() => {}
            Ok(read) => wrong.push(format!(
                "{key}: read {:?}",
                read.values
                    .iter()
                    .map(|v| String::from_utf8_lossy(&v[..v.len().min(60)]).into_owned())
                    .collect::<Vec<_>>()
            )),
            Err(error) if strict => wrong.push(format!("{key}: {error}")),
            Err(_) => {}
        }
    }
    wrong
}

// ---------------------------------------------------------------------------------------------
// Every node killed at once under dw = 1

/// `durable_commits = false`: a dw = 0 write is committed without fsync and made durable by a
/// flush every 500 ms, so only dw protects a write from a SIGKILL of every replica.
const LAZY_FSYNC: &str = "\
partitions = 64
gossip_interval_ms = 100
hint_delivery_interval_ms = 200
anti_entropy_interval_ms = 300
request_timeout_ms = 2000
durable_commits = false
flush_interval_ms = 500
[bucket]
n = 3
r = \"2\"
w = \"2\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_every_node_under_dw1_writes_loses_no_acknowledged_write() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start_with(3, LAZY_FSYNC, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(WriteLog::default()));
    let durable = Options {
        dw: Some(QuorumValue::Count(1)),
        ..Options::default()
    };
    let writers = write_load(&cluster, &[0, 1, 2], "k", &durable, &stop, &log);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // All three at once: no replica outlives the others to hand anything back.
    for i in 0..3 {
        cluster.kill(i);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(log.acked.len() > 50, "too few writes: {}", log.acked.len());
    for i in 0..3 {
        cluster.spawn(i);
    }
    for i in 0..3 {
        cluster.wait_healthy(i).await;
    }
    cluster.wait_settled(&[0, 1, 2]).await;
    let wrong = mismatches(&cluster.client(&[0, 1, 2]), b"load", &expected(&log.acked)).await;
    eprintln!(
        "dw=1 with fsync only for dw: {} writes acknowledged before every node was SIGKILLed \
         ({} failed as the nodes died), {} lost",
        log.acked.len(),
        log.failed.len(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {} acknowledged dw=1 writes lost after SIGKILL of every node: {:#?}",
        wrong.len(),
        log.acked.len(),
        &wrong[..wrong.len().min(20)]
    );
}

// ---------------------------------------------------------------------------------------------
// A torn or garbled tail

/// How node n3's data file is damaged while it is down.
enum TailDamage {
    /// The last `bytes` of the file cut off.
    Truncated { bytes: u64 },
    /// The last `pages` 4 KiB pages, and the page holding the newest value, overwritten.
    Garbage { pages: usize, newest: String },
}

/// Bytes that look like nothing (a fixed xorshift sequence).
fn garbage(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn damage_tail(file: &Path, damage: &TailDamage) -> String {
    let mut bytes = std::fs::read(file).expect("data file");
    let length = bytes.len();
    match damage {
        TailDamage::Truncated { bytes: cut } => {
            bytes.truncate(length - *cut as usize);
            std::fs::write(file, &bytes).unwrap();
            format!("{length} bytes cut to {}", bytes.len())
        }
        TailDamage::Garbage { pages, newest } => {
            let page = 4096;
            // Every copy of the newest value (redb copies a leaf on write), found before the
            // tail is overwritten, which may hold one of them.
            let mut newest_pages = BTreeSet::new();
            for at in positions(&bytes, marker(newest).as_bytes()) {
                newest_pages.insert(at / page * page);
            }
            let tail = length - pages * page;
            bytes[tail..].copy_from_slice(&garbage(pages * page));
            for &start in &newest_pages {
                bytes[start..start + page].copy_from_slice(&garbage(page));
            }
            std::fs::write(file, &bytes).unwrap();
            format!(
                "last {pages} pages of {length} bytes and {} page(s) holding {newest} overwritten",
                newest_pages.len()
            )
        }
    }
}

/// Names of the files moved aside in `dir`.
fn quarantined_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("ringkv.redb.damaged-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes keys to a 3-node cluster, SIGKILLs n3, damages its file, restarts it. Whatever redb
/// does with the damage, n3 never serves a wrong value, ends up with every key again, and no
/// acknowledged write is lost. Returns how often n3's store was quarantined and rolled back.
async fn torn_tail(damage: impl FnOnce(&[(String, Bytes)]) -> TailDamage) -> (f64, f64) {
    let mut cluster = Cluster::start(3).await;
    let written = write_keys(&cluster.client(&[0, 1, 2]), b"t", "t", 300).await;
    let victim = 2;
    cluster.kill(victim);
    let damage = damage(&written);
    let what = damage_tail(&cluster.db_file(victim), &damage);
    let all_nodes = [0, 1, 2];
    // (n3's counters start again from 0 when it restarts.)
    let ae_before = metric_sum(&cluster, &[0, 1], "ringkv_anti_entropy_keys_repaired_total").await;
    cluster.spawn(victim);
    let restarted = Instant::now();
    cluster.wait_healthy(victim).await;
    let quarantined = cluster
        .metric(victim, "ringkv_stores_quarantined_total")
        .await;
    let rolled_back = cluster
        .metric(victim, "ringkv_stores_rolled_back_total")
        .await;
    let aside = quarantined_files(&cluster.nodes[victim].data_dir);
    assert_eq!(
        aside.len() as f64,
        quarantined,
        "files moved aside {aside:?}, metric {quarantined}"
    );

    // While n3 is refilled, it never answers a value other than the one written (absent is
    // allowed: with r=one it may answer from its own store, which lost the key).
    let wrong = wrong_reads_through(&cluster, victim, &written, b"t", false).await;
    assert!(wrong.is_empty(), "n3 served wrong values: {wrong:#?}");
    // A quarantined n3 rejoins empty and takes its partitions over from the others (hand-off);
    // one that rolled back a commit is repaired by anti-entropy.
    cluster.wait_settled(&all_nodes).await;
    let settled_after = restarted.elapsed();
    let ae_repairs = metric_sum(
        &cluster,
        &all_nodes,
        "ringkv_anti_entropy_keys_repaired_total",
    )
    .await
        - ae_before;
    // No acknowledged write lost, with every replica answering (read repair fills what
    // anti-entropy has not reached yet). Read repair is sent once a read is answered, so the
    // last reads' repairs may still be on their way when the check ends: it runs again until a
    // pass repairs nothing, which shows every replica, n3 included, holds every key.
    let mut read_repairs = 0.0;
    for pass in 1.. {
        let before = metric_sum(&cluster, &all_nodes, "ringkv_read_repairs_total").await;
        let lost = mismatches(&cluster.client(&all_nodes), b"t", &expected(&written)).await;
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:#?}");
        let repaired = metric_sum(&cluster, &all_nodes, "ringkv_read_repairs_total").await - before;
        read_repairs += repaired;
        if repaired == 0.0 {
            break;
        }
        assert!(pass < 10, "read repair still busy after {pass} passes");
    }
    let checksum_failures = cluster
        .metric(victim, "ringkv_checksum_failures_total")
        .await;

    // n3's own copy is whole again: with n1 and n2 gone, it answers every key alone.
    cluster.kill(0);
    cluster.kill(1);
    let wrong = wrong_reads_through(&cluster, victim, &written, b"t", true).await;
    eprintln!(
        "torn tail ({what}): quarantined {quarantined} ({aside:?}), newest commit rolled back \
         {rolled_back}; {} keys acknowledged, none lost; ring settled {settled_after:?} after \
         the restart, anti-entropy repaired {ae_repairs} keys meanwhile, then the r=all checks \
         read-repaired {read_repairs} replicas; n3 checksum failures {checksum_failures}; keys \
         n3 could not answer alone: {}",
        written.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "n3 alone after the repair: {wrong:#?}");
    (quarantined, rolled_back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_data_file_is_quarantined_and_refilled_from_the_replicas() {
    let _serial = SERIAL.lock().await;
    // redb 2.6 panics opening a file shorter than its header says; the node must neither die
    // nor serve from it.
    let (quarantined, _) = torn_tail(|_| TailDamage::Truncated { bytes: 64 * 1024 }).await;
    assert_eq!(quarantined, 1.0, "a truncated file was opened as if whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_tail_is_detected_and_refilled_from_the_replicas() {
    let _serial = SERIAL.lock().await;
    // redb's crash recovery (after SIGKILL) verifies its page checksums: a garbled page of the
    // newest commit is found, and redb goes back to the commit before (or, if an older commit
    // shares the page, refuses the file, which is then quarantined). The file's last pages alone
    // are free space, garbage there is harmless, so both are overwritten.
    let (quarantined, rolled_back) = torn_tail(|written| TailDamage::Garbage {
        pages: 16,
        newest: written.last().expect("keys").0.clone(),
    })
    .await;
    assert!(
        quarantined + rolled_back >= 1.0,
        "a garbled page went unnoticed by redb's recovery"
    );
}

// ---------------------------------------------------------------------------------------------
// Values flipped on disk

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_value_bytes_are_never_served_and_the_replica_is_repaired() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let victim = 2;
    let written = write_keys(&cluster.client(&[0, 1, 2]), b"f", "f", 60).await;
    // Every replica has every key before the damage (r=all reads repair any gap).
    let lost = mismatches(&cluster.client(&[0, 1, 2]), b"f", &expected(&written)).await;
    assert!(lost.is_empty(), "before the damage: {lost:#?}");
    // A clean stop: redb does not run its recovery (nor verify its page checksums) on the next
    // open, so only ringkv's record checksum stands between the flipped bytes and a client.
    cluster.stop(victim);
    let file = cluster.db_file(victim);
    let mut bytes = std::fs::read(&file).unwrap();
    let mut damaged = Vec::new();
    for (key, value) in written.iter().step_by(3) {
        let found = positions(&bytes, marker(key).as_bytes());
        for &at in &found {
            // Inside the value's payload, past the marker: a stored value, not its key.
            let start = at + marker(key).len() + 5;
            for byte in &mut bytes[start..start + 10] {
                *byte ^= 0x5a;
            }
        }
        if !found.is_empty() {
            damaged.push((key.clone(), value.clone()));
        }
    }
    assert!(
        damaged.len() >= 10,
        "only {} values found in n3's file",
        damaged.len()
    );
    std::fs::write(&file, &bytes).unwrap();
    cluster.spawn(victim);
    cluster.wait_healthy(victim).await;
    assert_eq!(
        cluster
            .metric(victim, "ringkv_stores_quarantined_total")
            .await,
        0.0,
        "redb noticed the damage itself: the record checksum was not what this tested"
    );

    // Through n3 as coordinator with r=one: the right value, never the damaged one.
    let started = Instant::now();
    let wrong = wrong_reads_through(&cluster, victim, &damaged, b"f", true).await;
    assert!(wrong.is_empty(), "through n3 with r=one: {wrong:#?}");
    let failures = cluster
        .metric(victim, "ringkv_checksum_failures_total")
        .await;
    assert!(
        failures >= damaged.len() as f64,
        "{failures} checksum failures counted for {} damaged values",
        damaged.len()
    );
    // Read repair rewrites n3's copies: with n1 and n2 gone, n3 answers them alone, and
    // correctly, without a new checksum failure.
    let deadline = Instant::now() + Duration::from_secs(20);
    let repaired_after = loop {
        let repairs = metric_sum(&cluster, &[0, 1, 2], "ringkv_read_repairs_total").await;
        if repairs >= damaged.len() as f64 || Instant::now() > deadline {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // A repair reads the damaged record once more before overwriting it (counted again): the
    // baseline is taken once they are done.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_alone = cluster
        .metric(victim, "ringkv_checksum_failures_total")
        .await;
    cluster.kill(0);
    cluster.kill(1);
    let wrong = wrong_reads_through(&cluster, victim, &damaged, b"f", true).await;
    let failures_after = cluster
        .metric(victim, "ringkv_checksum_failures_total")
        .await;
    eprintln!(
        "{} values flipped in n3's file; {failures} checksum failures on n3's first reads, none \
         served; read repairs counted after {repaired_after:?}; n3 alone then answered {} of \
         them wrong, with {} new checksum failures",
        damaged.len(),
        wrong.len(),
        failures_after - before_alone
    );
    assert!(
        wrong.is_empty(),
        "n3's repaired copies, read alone: {wrong:#?}"
    );
    assert_eq!(
        failures_after, before_alone,
        "n3 still holds damaged records"
    );
}

// ---------------------------------------------------------------------------------------------
// A full disk

/// A tmpfs mounted for the test, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process not reaped yet): detach it, it goes when the last file does.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Fills the file system of `dir` with a file, then gives `leave` bytes back. Returns the file.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0xEEu8; 256 * 1024];
    let mut size = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => size += n as u64,
            Err(_) => break,
        }
    }
    let _ = file.flush();
    file.set_len(size.saturating_sub(leave))
        .expect("filler shrunk");
    file.sync_all().expect("filler synced");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers() {
    if !is_root() {
        eprintln!("SKIPPED a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers: mounting a tmpfs needs root");
        return;
    }
    let _serial = SERIAL.lock().await;
    // Declared before the cluster, so dropped after it: the processes are killed first.
    let disk = Tmpfs::mount("16m");
    let victim = 2;
    let mut cluster = Cluster::start_with(3, CONFIG, |node| {
        if node.id == "n3" {
            node.data_dir = disk.path().join("n3");
        }
    })
    .await;
    let filler = fill(disk.path(), 3 << 20);
    let n3 = cluster.pinned_client(&[victim]);

    // Writes through n3 (which stores its replica first) until its disk is full.
    let mut acked = Vec::new();
    let mut refusal = None;
    for i in 0..400u32 {
        let key = format!("full{i}");
        let value = value_of(&key, 64 * 1024);
        match n3
            .put(
                b"d",
                key.as_bytes(),
                None,
                value.clone(),
                &Options::default(),
            )
            .await
        {
            Ok(_) => acked.push((key, value)),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("3 MB free, 400 writes of 64 KiB, and no write refused");
    assert!(
        matches!(&refusal, ClientError::StorageFull(message) if message.contains("full")),
        "a write to a full disk failed with {refusal:?}, not a clear storage-full error"
    );
    let raw = raw_http(
        cluster.nodes[victim].http,
        &request("PUT", "/kv/d/raw", &[], Some(b"v")),
    )
    .await;
    assert_eq!(
        (raw.status, raw.kind().as_str()),
        (507, "storage_full"),
        "{raw:?}"
    );
    let acked_before_full = acked.len();

    // Full: n3 still serves reads of what it stored, is healthy, and the cluster still takes
    // writes through the other nodes (W=2 without n3), also from a client that tried n3 first.
    let health = n3.health(&cluster.url(victim)).await.expect("health");
    assert_eq!(health.status, "ok");
    let lost = mismatches(&n3, b"d", &expected(&acked)).await;
    assert!(lost.is_empty(), "reads through the full n3: {lost:#?}");
    let n1 = cluster.pinned_client(&[0]);
    let routed = cluster.client(&[victim, 0, 1]);
    let mut elsewhere = 0;
    for i in 0..20u32 {
        let key = format!("while-full{i}");
        let value = value_of(&key, 1024);
        let client = if i % 2 == 0 { &n1 } else { &routed };
        client
            .put(
                b"d",
                key.as_bytes(),
                None,
                value.clone(),
                &Options::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{key} while n3 is full: {e}"));
        acked.push((key, value));
        elsewhere += 1;
    }
    let full_failures = {
        let answer = raw_http(cluster.nodes[victim].http, &get_request("/metrics")).await;
        String::from_utf8_lossy(&answer.body)
            .lines()
            .find(|l| l.starts_with("ringkv_storage_failures_total{reason=\"full\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(full_failures > 0.0, "no storage failure counted as full");

    // Space comes back: writes through n3 resume (after the full-disk backoff).
    std::fs::remove_file(&filler).expect("filler removed");
    let freed = Instant::now();
    let resumed = loop {
        let key = format!("after{}", freed.elapsed().as_millis());
        let value = value_of(&key, 64 * 1024);
        match n3
            .put(
                b"d",
                key.as_bytes(),
                None,
                value.clone(),
                &Options::default(),
            )
            .await
        {
            Ok(_) => {
                acked.push((key, value));
                break freed.elapsed();
            }
            Err(error) => {
                assert!(
                    freed.elapsed() < Duration::from_secs(20),
                    "writes through n3 still fail 20 s after space was freed: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    cluster.wait_settled(&[0, 1, 2]).await;
    let lost = mismatches(&cluster.client(&[0, 1, 2]), b"d", &expected(&acked)).await;
    eprintln!(
        "full disk: {acked_before_full} writes of 64 KiB through n3 before it was full, then \
         {refusal}; {elsewhere} writes through the other nodes meanwhile; {full_failures} \
         storage failures counted as full; writes through n3 resumed {resumed:?} after space was \
         freed; {} acknowledged, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:#?}");
    cluster.kill(0);
    cluster.kill(1);
    cluster.kill(victim);
}
