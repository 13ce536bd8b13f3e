//! A real cluster in one process: servers on loopback sockets with disk storage, driven through
//! the client library and raw HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringkv::metrics::DirectionLabels;
use ringkv::server::{self, RunningServer, ServerConfig};
use ringkv_client::{Client, ClientConfig, ClientError, Options};
use ringkv_core::bucket::QuorumValue;

fn config(dir: &std::path::Path, name: &str, seeds: Vec<String>) -> ServerConfig {
    ServerConfig {
        node_id: Some(name.to_string()),
        data_dir: dir.join(name),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seeds,
        partitions: 64,
        gossip_interval_ms: 100,
        hint_delivery_interval_ms: 200,
        anti_entropy_interval_ms: 500,
        request_timeout_ms: 2_000,
        ..ServerConfig::default()
    }
}

async fn start_cluster(dir: &std::path::Path, nodes: usize) -> Vec<RunningServer> {
    let mut servers = Vec::new();
    let mut seeds = Vec::new();
    for i in 1..=nodes {
        let server = server::start(config(dir, &format!("n{i}"), seeds.clone()))
            .await
            .expect("server starts");
        if seeds.is_empty() {
            seeds.push(server.peer_address.to_string());
        }
        servers.push(server);
    }
    settle(&servers).await;
    servers
}

async fn settle(servers: &[RunningServer]) {
    server::wait_until_settled(servers, Duration::from_secs(60))
        .await
        .expect("the cluster settles");
}

fn client(servers: &[RunningServer]) -> Client {
    Client::new(ClientConfig {
        nodes: servers
            .iter()
            .map(|s| format!("http://{}", s.client_address))
            .collect(),
        ..ClientConfig::default()
    })
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_write_read_siblings_and_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let servers = start_cluster(dir.path(), 3).await;
    let client = client(&servers);
    let options = Options::default();

    let missing = client.get(b"carts", b"nobody", &options).await.unwrap();
    assert!(missing.values.is_empty());

    let written = client
        .put(
            b"carts",
            b"alice",
            None,
            Bytes::from_static(b"milk"),
            &options,
        )
        .await
        .unwrap();
    assert!(written.replicas.len() >= 2, "W=2 acks: {written:?}");
    let read = client.get(b"carts", b"alice", &options).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"milk")]);
    assert!(read.replicas.len() >= 2);

    // Two writes from the same context are concurrent: both kept as siblings.
    let context = read.context.clone();
    for value in [&b"milk,eggs"[..], &b"milk,bread"[..]] {
        client
            .put(
                b"carts",
                b"alice",
                context.as_deref(),
                Bytes::copy_from_slice(value),
                &options,
            )
            .await
            .unwrap();
    }
    let read = client.get(b"carts", b"alice", &options).await.unwrap();
    let mut values = read.values.clone();
    values.sort();
    assert_eq!(
        values,
        vec![
            Bytes::from_static(b"milk,bread"),
            Bytes::from_static(b"milk,eggs")
        ]
    );
    // A put with the read's context replaces both.
    client
        .put(
            b"carts",
            b"alice",
            read.context.as_deref(),
            Bytes::from_static(b"bread,eggs,milk"),
            &options,
        )
        .await
        .unwrap();
    let read = client.get(b"carts", b"alice", &options).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"bread,eggs,milk")]);

    // Delete with the context: absent afterwards, everywhere (r = all).
    client
        .delete(b"carts", b"alice", read.context.as_deref(), &options)
        .await
        .unwrap();
    let all = Options {
        r: Some(QuorumValue::All),
        ..Options::default()
    };
    let read = client.get(b"carts", b"alice", &all).await.unwrap();
    assert!(read.values.is_empty(), "{read:?}");

    // Binary bucket and key names survive the path encoding.
    let key = [0u8, 255, b'/', b'%', b' ', b'?'];
    client
        .put(
            b"bin/\xff",
            &key,
            None,
            Bytes::from_static(b"\x00\x01"),
            &options,
        )
        .await
        .unwrap();
    let read = client.get(b"bin/\xff", &key, &options).await.unwrap();
    assert_eq!(read.values, vec![Bytes::from_static(b"\x00\x01")]);

    // Invalid quorums are the client's error, not the cluster's.
    let bad = Options {
        w: Some(QuorumValue::Count(7)),
        ..Options::default()
    };
    let error = client
        .put(b"carts", b"bob", None, Bytes::from_static(b"x"), &bad)
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::BadRequest(_)), "{error:?}");

    let status = client.cluster_status(None).await.unwrap();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.status == "up" && m.alive));
    let ring = client.ring().await.unwrap();
    assert_eq!(ring.partitions.len(), 64);
    assert!(ring.partitions.iter().all(|p| p.replicas.len() == 3));

    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_covered_by_a_fallback_and_gets_its_hints_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster(dir.path(), 4).await;
    let client = client(&servers[..3]);
    let options = Options::default();

    // Stop n4: writes whose preference list holds it go to a fallback with a hint.
    let stopped = servers.pop().unwrap();
    let stopped_config = config(dir.path(), "n4", vec![servers[0].peer_address.to_string()]);
    let n4_client_address = stopped.client_address;
    let n4_peer_address = stopped.peer_address;
    stopped.shutdown().await;

    // Until the failure detectors notice, writes simply wait for the other owners.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    'noticed: loop {
        for server in &servers {
            let status = server.node.status().await.unwrap();
            if status.alive.iter().any(|id| id.as_str() == "n4") {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "n4 still alive to {} after 30 s",
                    status.node
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'noticed;
            }
        }
        break;
    }
    let mut keys = Vec::new();
    let mut used_fallback = false;
    for i in 0..40u32 {
        let key = format!("k{i}");
        let written = client
            .put(
                b"b",
                key.as_bytes(),
                None,
                Bytes::from(key.clone()),
                &options,
            )
            .await
            .unwrap();
        used_fallback |= !written.fallbacks.is_empty();
        keys.push(key);
    }
    assert!(used_fallback, "some of 40 keys must have n4 as a replica");

    // n4 comes back at the same addresses; its hints are handed back.
    let restarted = server::start(ServerConfig {
        listen: n4_client_address,
        peer_listen: n4_peer_address,
        ..stopped_config
    })
    .await
    .expect("n4 restarts");
    servers.push(restarted);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut hints = 0;
        for server in &servers {
            hints += server.node.status().await.unwrap().hints_pending;
        }
        if hints == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{hints} hints still pending after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = Options {
        r: Some(QuorumValue::All),
        ..Options::default()
    };
    for key in &keys {
        let read = client.get(b"b", key.as_bytes(), &all).await.unwrap();
        assert_eq!(read.values, vec![Bytes::from(key.clone())], "{key}");
    }
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_clean_restart_of_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let servers = start_cluster(dir.path(), 3).await;
    let addresses: Vec<(SocketAddr, SocketAddr)> = servers
        .iter()
        .map(|s| (s.client_address, s.peer_address))
        .collect();
    let client = client(&servers);
    // dw = 0: acknowledged before fsync; a clean shutdown still flushes it.
    for i in 0..20u32 {
        client
            .put(
                b"b",
                format!("k{i}").as_bytes(),
                None,
                Bytes::from(vec![i as u8; 1000]),
                &Options::default(),
            )
            .await
            .unwrap();
    }
    for server in servers {
        server.shutdown().await;
    }
    let mut restarted = Vec::new();
    for (i, (client_address, peer_address)) in addresses.into_iter().enumerate() {
        restarted.push(
            server::start(ServerConfig {
                listen: client_address,
                peer_listen: peer_address,
                ..config(dir.path(), &format!("n{}", i + 1), Vec::new())
            })
            .await
            .expect("restart"),
        );
    }
    settle(&restarted).await;
    let client = self::client(&restarted);
    let all = Options {
        r: Some(QuorumValue::All),
        ..Options::default()
    };
    for i in 0..20u32 {
        let read = client
            .get(b"b", format!("k{i}").as_bytes(), &all)
            .await
            .unwrap();
        assert_eq!(read.values, vec![Bytes::from(vec![i as u8; 1000])]);
    }
    for server in restarted {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_joins_over_http_and_a_member_leaves_without_losing_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_cluster(dir.path(), 2).await;
    // Two nodes, N=2 here: every key on both.
    let client = client(&servers);
    let options = Options {
        n: Some(2),
        ..Options::default()
    };
    for i in 0..30u32 {
        client
            .put(
                b"b",
                format!("k{i}").as_bytes(),
                None,
                Bytes::from(format!("v{i}")),
                &options,
            )
            .await
            .unwrap();
    }

    // n3 starts alone (its own one-node cluster), then is told to join over HTTP.
    let lone = server::start(config(dir.path(), "n3", Vec::new()))
        .await
        .unwrap();
    let lone_url = format!("http://{}", lone.client_address);
    client
        .join(&lone_url, &servers[0].peer_address.to_string())
        .await
        .expect("join accepted");
    servers.push(lone);
    settle(&servers).await;
    let status = client.cluster_status(Some(&lone_url)).await.unwrap();
    assert_eq!(status.members.len(), 3);
    assert!(
        status
            .members
            .iter()
            .any(|m| m.id == "n3" && m.partitions > 0),
        "{status:?}"
    );
    // The joiner pulled its partitions from the others, and the metrics say so.
    let moved = |server: &RunningServer, direction: &'static str| {
        let labels = DirectionLabels { direction };
        let metrics = server.node.metrics();
        (
            metrics.transfer_keys.get_or_create(&labels).get(),
            metrics.transfer_partitions.get_or_create(&labels).get(),
        )
    };
    let (keys_received, partitions_received) = moved(&servers[2], "received");
    assert!(keys_received >= 1 && partitions_received >= 1);
    let keys_sent: u64 = servers[..2].iter().map(|s| moved(s, "sent").0).sum();
    assert!(keys_sent >= keys_received, "{keys_sent} < {keys_received}");

    // n1 leaves: its partitions are transferred before it drops out of the ring.
    let n1_url = format!("http://{}", servers[0].client_address);
    client.leave(&n1_url).await.expect("leave accepted");
    let remaining = &servers[1..];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = remaining[0].node.status().await.unwrap();
        if status.ring.member(&"n1".into()).is_none() && status.partitions_moving.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "n1 still in the ring after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for server in remaining {
        let metrics = server.node.metrics();
        assert_eq!(metrics.transfer_partitions_pending.get(), 0);
    }
    let survivors = self::client(remaining);
    let all = Options {
        n: Some(2),
        r: Some(QuorumValue::All),
        ..Options::default()
    };
    for i in 0..30u32 {
        let read = survivors
            .get(b"b", format!("k{i}").as_bytes(), &all)
            .await
            .unwrap();
        assert_eq!(read.values, vec![Bytes::from(format!("v{i}"))], "k{i}");
    }
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_inspectable_and_their_merkle_roots_converge() {
    use ringkv_core::version::Object;
    let dir = tempfile::tempdir().unwrap();
    let servers = start_cluster(dir.path(), 3).await;
    let client = client(&servers);
    let options = Options {
        w: Some(QuorumValue::All),
        ..Options::default()
    };
    let mut dots = Vec::new();
    for i in 0..20 {
        let key = format!("k{i}");
        let written = client
            .put(
                b"b",
                key.as_bytes(),
                None,
                Bytes::from(key.clone()),
                &options,
            )
            .await
            .unwrap();
        dots.push((key, written.dot.expect("a write answers with its dot")));
    }
    // N = 3 on 3 nodes: every node holds every key, with the write's dot as its only sibling.
    for server in &servers {
        let url = format!("http://{}", server.client_address);
        for (key, dot) in &dots {
            let record = client
                .replica(&url, b"b", key.as_bytes())
                .await
                .unwrap()
                .expect("every node is a replica");
            let object = Object::decode(&record).expect("a whole record");
            let siblings: Vec<String> = object
                .siblings()
                .iter()
                .map(|s| s.dot.to_string())
                .collect();
            assert_eq!(siblings, vec![dot.clone()], "{key} on {url}");
        }
        assert_eq!(
            client.replica(&url, b"b", b"never-written").await.unwrap(),
            None
        );
    }
    // Every node builds a tree for each of its 64 partitions, and the roots agree.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut roots = Vec::new();
        for server in &servers {
            let url = format!("http://{}", server.client_address);
            roots.push(
                client
                    .cluster_status(Some(&url))
                    .await
                    .unwrap()
                    .merkle_roots,
            );
        }
        if roots[0].len() == 64 && roots.iter().all(|r| *r == roots[0]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "roots never agreed: {roots:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
