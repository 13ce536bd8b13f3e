//! A client told its zone sends each key's requests to the key's owner in that zone, against a
//! real cluster in one process (three servers in zones a, b and c); and to the other owners once
//! that server is gone.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringkv::server::{self, RunningServer, ServerConfig};
use ringkv_client::{Client, ClientConfig, Options};

const ZONES: [&str; 3] = ["a", "b", "c"];

fn config(dir: &std::path::Path, zone: &str, seeds: Vec<String>) -> ServerConfig {
    ServerConfig {
        node_id: Some(format!("n{zone}")),
        zone: Some(zone.to_owned()),
        data_dir: dir.join(zone),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        seeds,
        partitions: 16,
        gossip_interval_ms: 100,
        request_timeout_ms: 2_000,
        shutdown_delay_ms: 0,
        ..ServerConfig::default()
    }
}

fn client(url: String, zone: Option<&str>) -> Client {
    Client::new(ClientConfig {
        nodes: vec![url],
        zone: zone.map(str::to_owned),
        ..ClientConfig::default()
    })
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sends_each_key_to_its_owner_in_the_clients_zone() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<RunningServer> = Vec::new();
    let mut seeds = Vec::new();
    for zone in ZONES {
        let server = server::start(config(dir.path(), zone, seeds.clone()))
            .await
            .expect("server starts");
        if seeds.is_empty() {
            seeds.push(server.peer_address.to_string());
        }
        servers.push(server);
    }
    server::wait_until_settled(&servers, Duration::from_secs(60))
        .await
        .expect("the cluster settles");
    let url = |i: usize| format!("http://{}", servers[i].client_address);
    let none = Options::default();
    let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("key-{i}").into_bytes()).collect();

    // Configured: the zone-a node alone; the zone-b node is learnt from the ring, which every
    // member reports with its zone.
    let near = client(url(0), Some("b"));
    let ring = near.ring().await.unwrap();
    let zones: Vec<_> = ring.members.iter().map(|m| m.zone.as_deref()).collect();
    assert_eq!(zones.len(), 3);
    assert!(ZONES.iter().all(|zone| zones.contains(&Some(*zone))));
    let near = client(url(0), Some("b")); // a fresh one: its first request must be routed too
    for key in &keys {
        let put = near
            .put(b"z", key, None, Bytes::from_static(b"v"), &none)
            .await
            .unwrap();
        assert_eq!(put.node.as_deref(), Some("nb"));
        assert_eq!(put.endpoint, url(1));
        let read = near.get(b"z", key, &none).await.unwrap();
        assert_eq!(read.node.as_deref(), Some("nb"));
    }
    // The keys' first owners are not all nb: without a zone, those go elsewhere.
    let plain = client(url(0), None);
    plain.refresh_ring().await.unwrap();
    let mut coordinators = std::collections::BTreeSet::new();
    for key in &keys {
        coordinators.insert(plain.get(b"z", key, &none).await.unwrap().node.unwrap());
    }
    assert_eq!(coordinators.len(), 3, "{coordinators:?}");

    // The zone-b node stops: reads and writes go on through the other owners.
    servers.remove(1).shutdown().await;
    for key in &keys {
        let read = near.get(b"z", key, &none).await.unwrap();
        assert!(
            matches!(read.node.as_deref(), Some("na" | "nc")),
            "{read:?}"
        );
        let put = near
            .put(
                b"z",
                key,
                read.context.as_deref(),
                Bytes::from_static(b"w"),
                &none,
            )
            .await
            .unwrap();
        assert!(matches!(put.node.as_deref(), Some("na" | "nc")), "{put:?}");
    }
    for server in servers {
        server.shutdown().await;
    }
}
