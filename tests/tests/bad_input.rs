//! The rest of the bad-input sweep against a live `ringkv server` (issue 8, item 5): slowloris
//! clients and a connection flood past `max_connections`. (Oversized keys and values, malformed
//! contexts, invalid quorums, wrong methods, malformed HTTP and peer-port garbage are swept in
//! `multiprocess.rs`, test (f).) After each round the node is healthy and serves others, and its
//! open file descriptors come back to their baseline.
//!
//! Needs the `ringkv` binary next to the test executable's folder, and Linux's `/proc`.
mod common;

use common::cluster::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One node, a small connection limit and a short header timeout.
const CONFIG: &str = "\
partitions = 16
target_n = 1
gossip_interval_ms = 100
max_connections = 64
header_read_timeout_ms = 1000
[bucket]
n = 1
r = \"1\"
w = \"1\"
";
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// Waits (at most 10 s) until the node's descriptors are back within `slack` of `baseline`;
/// returns the last count.
async fn wait_fds_back(pid: u32, baseline: usize, slack: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = open_fds(pid);
        if now <= baseline + slack || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the server has closed `stream` (end of stream, reset), waiting at most `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (a 408, say) before the close.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A client that sends a request's headers one byte every `pace`, for at most `limit`. Returns
/// when the server closed the connection (measured from the connect), or `None` if it never did.
async fn slowloris(address: SocketAddr, pace: Duration, limit: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    let started = Instant::now();
    let headers = b"GET /health HTTP/1.1\r\nHost: ringkv\r\nX-Slow: ".iter();
    for &byte in headers.chain(std::iter::repeat(&b'a')) {
        if started.elapsed() > limit {
            return None;
        }
        if stream.write_all(&[byte]).await.is_err() {
            return Some(started.elapsed());
        }
        if closed_within(&mut stream, pace).await {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_at_the_header_timeout_and_others_are_served() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with(1, CONFIG, |_| {}).await;
    let http = cluster.nodes[0].http;
    let pid = cluster.pid(0);
    assert_serves(&cluster, 0, "start").await;
    let baseline = open_fds(pid);

    // Fewer than the connection limit, so that the others are not refused for want of a slot.
    let slow = 40;
    let clients: Vec<_> = (0..slow)
        .map(|_| {
            tokio::spawn(slowloris(
                http,
                Duration::from_millis(100),
                Duration::from_secs(15),
            ))
        })
        .collect();
    // Meanwhile a well-behaved client is served, quickly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let peak = open_fds(pid);
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    let until = Instant::now() + HEADER_TIMEOUT;
    while Instant::now() < until {
        let started = Instant::now();
        assert_serves(&cluster, 0, &format!("slowloris-{served}")).await;
        slowest = slowest.max(started.elapsed());
        served += 1;
    }
    let mut cut_after = Vec::new();
    for client in clients {
        cut_after.push(client.await.expect("slowloris task"));
    }
    let never_cut = cut_after.iter().filter(|c| c.is_none()).count();
    let latest = cut_after.iter().flatten().max().copied();
    let earliest = cut_after.iter().flatten().min().copied();
    let after = wait_fds_back(pid, baseline, 4).await;
    eprintln!(
        "{slow} slowloris clients (a header byte every 100 ms): cut after {earliest:?} to \
         {latest:?} (header timeout {HEADER_TIMEOUT:?}), {never_cut} never cut; meanwhile \
         {served} put+get rounds by another client, the slowest {slowest:?}; fds {baseline} at \
         rest, {peak} with the slow clients, {after} after"
    );
    assert_eq!(never_cut, 0, "slowloris connections still open after 15 s");
    assert!(
        latest.is_some_and(|l| l < HEADER_TIMEOUT + Duration::from_secs(2)),
        "slowloris connections cut only after {latest:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "another client waited {slowest:?}"
    );
    assert!(
        after <= baseline + 4,
        "fds: {baseline} before, {after} after"
    );
    assert_serves(&cluster, 0, "slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_past_the_limit_is_refused_cleanly_and_leaks_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with(1, CONFIG, |_| {}).await;
    let http = cluster.nodes[0].http;
    let pid = cluster.pid(0);
    assert_serves(&cluster, 0, "start").await;
    let baseline = open_fds(pid);
    let refused_before = cluster
        .metric(0, "ringkv_http_connections_refused_total")
        .await;

    // Three times the limit, all idle (the header timeout would close the first ones later).
    let flood = 3 * MAX_CONNECTIONS;
    let mut streams = Vec::new();
    for _ in 0..flood {
        match TcpStream::connect(http).await {
            Ok(stream) => streams.push(stream),
            Err(error) => panic!("connect {}: {error}", streams.len()),
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let peak = open_fds(pid);
    // Those past the limit are closed at once; the others stay open (until the header timeout).
    let mut closed = 0;
    for stream in &mut streams {
        if closed_within(stream, Duration::from_millis(20)).await {
            closed += 1;
        }
    }
    let refused = cluster
        .metric(0, "ringkv_http_connections_refused_total")
        .await
        - refused_before;
    // The flood goes; the node serves again and its descriptors come back.
    drop(streams);
    let gone = Instant::now();
    let serving_again = loop {
        let client = cluster.pinned_client(&[0]);
        if client.health(&cluster.url(0)).await.is_ok() {
            break gone.elapsed();
        }
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "not serving 10 s after the flood"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_serves(&cluster, 0, "flood").await;
    let after = wait_fds_back(pid, baseline, 4).await;
    eprintln!(
        "{flood} connections at once, limit {MAX_CONNECTIONS}: {closed} closed at once by the \
         node, {refused} counted as refused; serving again {serving_again:?} after they went; \
         fds {baseline} at rest, {peak} during the flood, {after} after"
    );
    assert!(
        closed >= flood - MAX_CONNECTIONS - 2,
        "only {closed} of {flood} connections closed past a limit of {MAX_CONNECTIONS}"
    );
    assert!(
        refused >= (flood - MAX_CONNECTIONS - 2) as f64,
        "{refused} connections counted as refused"
    );
    assert!(
        peak <= baseline + MAX_CONNECTIONS + 8,
        "{peak} fds during the flood, {baseline} at rest: the limit did not hold"
    );
    assert!(
        after <= baseline + 4,
        "fds: {baseline} before, {after} after"
    );
}
