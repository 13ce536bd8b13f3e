//! The session and cart API against real `ringkv server` processes (issue 15): expiry (per
//! write and per bucket) down to the disk, conditional writes, multi-get, key listing and
//! watches, each as a client meets it, and every bad input a 400 that leaves the node healthy.
//!
//! Needs the `ringkv` binary next to the test executable's folder.
mod common;

use common::cluster::*;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv_client::{ClientError, Condition, Options, WatchResult};

/// Three nodes, a short grace period (expired and deleted keys leave the disk within seconds)
/// and a small watch table.
const CONFIG: &str = "\
partitions = 64
gossip_interval_ms = 100
hint_delivery_interval_ms = 200
anti_entropy_interval_ms = 300
request_timeout_ms = 2000
tombstone_grace_ms = 1500
max_watches = 3
[bucket]
n = 3
r = \"2\"
w = \"2\"
";

/// A request that must be refused: method, target, headers and body.
type BadRequest = (
    &'static str,
    String,
    Vec<(&'static str, String)>,
    Option<&'static [u8]>,
);

fn ttl(ms: u64) -> Options {
    Options {
        ttl_ms: Some(ms),
        ..Options::default()
    }
}

fn condition(condition: Condition) -> Options {
    Options {
        condition: Some(condition),
        ..Options::default()
    }
}

/// Waits until no node holds a record of the key (it was reaped everywhere).
async fn wait_gone_from_disk(cluster: &Cluster, bucket: &[u8], key: &[u8]) {
    let client = cluster.client(&[0]);
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mut held = Vec::new();
        for i in 0..cluster.nodes.len() {
            if client
                .replica(&cluster.url(i), bucket, key)
                .await
                .expect("replica")
                .is_some()
            {
                held.push(i);
            }
        }
        if held.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} still on the disks of nodes {held:?}",
            String::from_utf8_lossy(key)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_and_conditions_on_a_real_cluster() {
    let cluster = Cluster::start_with(3, CONFIG, |_| {}).await;
    let client = cluster.client(&[0, 1, 2]);

    // A session with a time to live reads with its expiry, then as absent with a context, and
    // the next write with that context supersedes it.
    client
        .put(
            b"s",
            b"alice",
            None,
            Bytes::from_static(b"cart"),
            &ttl(1_500),
        )
        .await
        .expect("put with ttl");
    let read = client
        .get(b"s", b"alice", &Options::default())
        .await
        .unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"cart")]);
    assert!(read.expires_at.is_some(), "{read:?}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let expired = client
        .get(b"s", b"alice", &Options::default())
        .await
        .unwrap();
    assert!(
        expired.values.is_empty(),
        "served after expiry: {expired:?}"
    );
    let context = expired
        .context
        .clone()
        .expect("an expired key reads with a context");
    let renewed = client
        .put(
            b"s",
            b"alice",
            Some(&context),
            Bytes::from_static(b"new"),
            &ttl(60_000),
        )
        .await
        .unwrap();
    let read = client
        .get(b"s", b"alice", &Options::default())
        .await
        .unwrap();
    assert_eq!(
        read.values,
        vec![Bytes::from_static(b"new")],
        "one value: the expired one is gone"
    );

    // A bucket's default time to live applies to writes that give none; expired keys leave
    // every disk once the grace period is over.
    let mut props = client.bucket_props(b"short").await.unwrap();
    props.default_ttl = Some(String::from("1s"));
    client.set_bucket_props(b"short", &props).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .put(
            b"short",
            b"k",
            None,
            Bytes::from_static(b"v"),
            &Options::default(),
        )
        .await
        .unwrap();
    let read = client
        .get(b"short", b"k", &Options::default())
        .await
        .unwrap();
    assert!(
        read.expires_at.is_some(),
        "the bucket's default_ttl did not apply: {read:?}"
    );
    wait_gone_from_disk(&cluster, b"short", b"k").await;

    // If-None-Match: * creates once; If-Match writes only over the context it names.
    let created = client
        .put(
            b"s",
            b"bob",
            None,
            Bytes::from_static(b"1"),
            &condition(Condition::IfAbsent),
        )
        .await
        .expect("create");
    let again = client
        .put(
            b"s",
            b"bob",
            None,
            Bytes::from_static(b"2"),
            &condition(Condition::IfAbsent),
        )
        .await;
    match again {
        Err(ClientError::PreconditionFailed { context, .. }) => {
            assert_eq!(context, created.context, "412 carries the current context")
        }
        other => panic!("a second create: {other:?}"),
    }
    let stale = renewed.context.clone().expect("context");
    client
        .put(
            b"s",
            b"alice",
            Some(&stale),
            Bytes::from_static(b"x"),
            &Options::default(),
        )
        .await
        .unwrap();
    let refused = client
        .put(
            b"s",
            b"alice",
            None,
            Bytes::from_static(b"y"),
            &condition(Condition::IfMatch(stale)),
        )
        .await;
    assert!(
        matches!(refused, Err(ClientError::PreconditionFailed { .. })),
        "{refused:?}"
    );
    let read = client
        .get(b"s", b"alice", &Options::default())
        .await
        .unwrap();
    assert_eq!(
        read.values,
        vec![Bytes::from_static(b"x")],
        "a failed condition wrote nothing"
    );

    // Bad input: each a 400 naming the problem, and the node keeps serving.
    let other_context = created.context.clone().expect("context");
    let cases: Vec<BadRequest> = vec![
        ("PUT", "/kv/s/k?ttl=0".into(), vec![], Some(b"v")),
        ("PUT", "/kv/s/k?ttl=-5s".into(), vec![], Some(b"v")),
        ("PUT", "/kv/s/k?ttl=soon".into(), vec![], Some(b"v")),
        ("PUT", "/kv/s/k?ttl=20000d".into(), vec![], Some(b"v")),
        (
            "PUT",
            "/kv/s/k".into(),
            vec![("X-Ringkv-TTL", "0".into())],
            Some(b"v"),
        ),
        (
            "PUT",
            "/kv/s/k".into(),
            vec![
                ("If-None-Match", "*".into()),
                ("If-Match", other_context.clone()),
            ],
            Some(b"v"),
        ),
        (
            "PUT",
            "/kv/s/k".into(),
            vec![("If-Match", other_context.clone())],
            Some(b"v"),
        ),
        ("POST", "/kv/s?mget".into(), vec![], Some(b"{\"keys\": []}")),
        ("POST", "/kv/s?mget".into(), vec![], Some(b"not json")),
        ("GET", "/kv/s?list&cursor=garbage".into(), vec![], None),
        ("GET", "/kv/s?list&limit=0".into(), vec![], None),
        ("GET", "/kv/s/k?changed_since=".into(), vec![], None),
        (
            "GET",
            "/kv/s/k?changed_since=x&timeout_ms=1000".into(),
            vec![],
            None,
        ),
    ];
    for (method, target, headers, body) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = raw_http(
            cluster.nodes[1].http,
            &request(method, target, &headers, *body),
        )
        .await;
        assert_eq!(answer.status, 400, "{method} {target}: {answer:?}");
        assert_eq!(answer.kind(), "bad_request", "{method} {target}");
    }
    let thousand_and_one: Vec<String> = (0..1_001).map(|i| format!("\"k{i}\"")).collect();
    let body = format!("{{\"keys\": [{}]}}", thousand_and_one.join(","));
    let answer = raw_http(
        cluster.nodes[1].http,
        &request("POST", "/kv/s?mget", &[], Some(body.as_bytes())),
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    // A cursor of another bucket's listing.
    let page = client
        .list_keys(b"s", None, Some(1), &Options::default())
        .await
        .unwrap();
    let cursor = page.cursor.expect("more than one key in s");
    let answer = raw_http(
        cluster.nodes[1].http,
        &get_request(&format!("/kv/carts?list&cursor={cursor}")),
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(String::from_utf8_lossy(&answer.body).contains("another bucket"));
    assert_serves(&cluster, 1, "bad session input").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_get_listing_and_watch_on_a_real_cluster() {
    let cluster = Cluster::start_with(3, CONFIG, |_| {}).await;
    let client = cluster.client(&[0, 1, 2]);

    // 300 keys (one binary), every tenth deleted, every seventh expiring at once.
    let mut live = BTreeSet::new();
    let mut keys: Vec<Bytes> = (0..300)
        .map(|i| Bytes::from(format!("item-{i:03}")))
        .collect();
    keys.push(Bytes::from_static(b"\xff\x00binary"));
    for (i, key) in keys.iter().enumerate() {
        let options = if i % 7 == 3 {
            ttl(500)
        } else {
            Options::default()
        };
        let written = client
            .put(b"carts", key, None, Bytes::from(format!("v{i}")), &options)
            .await
            .unwrap();
        if i % 10 == 0 {
            client
                .delete(
                    b"carts",
                    key,
                    written.context.as_deref(),
                    &Options::default(),
                )
                .await
                .unwrap();
        } else if i % 7 != 3 {
            live.insert(key.clone());
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Multi-get: the same answer, key by key, as single gets.
    let mut asked: Vec<Bytes> = keys.iter().take(100).cloned().collect();
    asked.push(Bytes::from_static(b"never-written"));
    let many = client
        .mget(b"carts", &asked, &Options::default())
        .await
        .unwrap();
    assert!(many.unprocessed.is_empty());
    assert_eq!(many.keys.len(), asked.len());
    for (key, answer) in &many.keys {
        let answer = answer.as_ref().expect("a key's read");
        let single = client
            .get(b"carts", key, &Options::default())
            .await
            .unwrap();
        assert_eq!(answer.values, single.values, "{key:?}");
        assert_eq!(answer.found(), live.contains(key), "{key:?}");
    }

    // Listing: walked page by page from different nodes, exactly the live keys, once each.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        let node = cluster.client(&[page_number % 3]);
        let page = node
            .list_keys(b"carts", cursor.as_deref(), Some(45), &Options::default())
            .await
            .unwrap();
        assert!(page.keys.len() <= 45);
        listed.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let set: BTreeSet<Bytes> = listed.iter().cloned().collect();
    assert_eq!(set.len(), listed.len(), "a key listed twice");
    assert_eq!(set, live, "the listing is not the live keys");

    // Watch: answered by the next write, soon after its ack.
    let read = client
        .get(b"carts", b"item-001", &Options::default())
        .await
        .unwrap();
    let context = read.context.clone().expect("context");
    let watcher = {
        let client = cluster.client(&[2]);
        let context = context.clone();
        tokio::spawn(async move {
            let result = client
                .watch(
                    b"carts",
                    b"item-001",
                    Some(&context),
                    30_000,
                    &Options::default(),
                )
                .await;
            (result, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .put(
            b"carts",
            b"item-001",
            Some(&context),
            Bytes::from_static(b"changed"),
            &Options::default(),
        )
        .await
        .unwrap();
    let acked = Instant::now();
    let (result, answered) = watcher.await.expect("watcher");
    match result.expect("watch") {
        WatchResult::Changed(got) => assert_eq!(got.values, vec![Bytes::from_static(b"changed")]),
        other => panic!("{other:?}"),
    }
    eprintln!(
        "watch answered {:?} after the write's ack",
        answered.saturating_duration_since(acked)
    );

    // A watch of the latest context waits its time and says unchanged.
    let latest = client
        .get(b"carts", b"item-001", &Options::default())
        .await
        .unwrap();
    let unchanged = client
        .watch(
            b"carts",
            b"item-001",
            latest.context.as_deref(),
            700,
            &Options::default(),
        )
        .await
        .unwrap();
    assert!(
        matches!(unchanged, WatchResult::Unchanged { .. }),
        "{unchanged:?}"
    );

    // Past max_watches (3) a node answers 429; the ones it holds still work.
    let node0 = cluster.pinned_client(&[0]);
    let item2 = client
        .get(b"carts", b"item-002", &Options::default())
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let node0 = node0.clone();
        let context = item2.context.clone();
        held.push(tokio::spawn(async move {
            node0
                .watch(
                    b"carts",
                    b"item-002",
                    context.as_deref(),
                    3_000,
                    &Options::default(),
                )
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = node0
        .watch(b"carts", b"item-002", None, 3_000, &Options::default())
        .await;
    match refused {
        Err(ClientError::Server { status: 429, .. }) => {}
        other => panic!("a watch past max_watches: {other:?}"),
    }
    // Clients that go away free their slots (the node notices within a second or so), long
    // before the watches' own deadline.
    for watch in &held {
        watch.abort();
    }
    let deadline = Instant::now() + CONVERGE;
    loop {
        match node0
            .watch(
                b"carts",
                b"item-002",
                item2.context.as_deref(),
                300,
                &Options::default(),
            )
            .await
        {
            Ok(WatchResult::Unchanged { .. }) => break,
            Err(ClientError::Server { status: 429, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("a watch once its predecessors' clients left: {other:?}"),
        }
    }
    assert_serves(&cluster, 0, "watches").await;
}
