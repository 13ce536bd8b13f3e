//! Security of a real cluster in one process: HTTPS for clients, mutual TLS and a cluster secret
//! between peers. Members replicate; strangers (with the cluster's certificates but not its
//! secret, or with neither) are refused, counted, and cannot store anything; a plain-HTTP client
//! on the HTTPS port fails fast. One multi-process check: the binary refuses a half-configured
//! TLS setting with a clear message.
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringkv::metrics::{Metrics, ReasonLabels};
use ringkv::server::{self, RunningServer, SecretString, ServerConfig, ServerError};
use ringkv::tls::PeerTls;
use ringkv::transport::{ClusterSecret, Transport, TransportConfig};
use ringkv_client::{Client, ClientConfig, Options};
use ringkv_core::bucket::{QuorumValue, RequestOptions};
use ringkv_core::id::NodeId;
use ringkv_core::request::ClientRequest;
use ringkv_core::version::Context;
use ringkv_core::wire::Message;

const SECRET: &str = "the right cluster secret";
const WAIT: Duration = Duration::from_secs(20);

/// A throwaway CA and one certificate it signed for 127.0.0.1 and localhost, which every node
/// uses (for HTTPS and for peers: the names are the same).
struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Certs {
        ca: write("ca.pem", ca.pem()),
        cert: write("node.pem", cert.pem()),
        key: write("node.key", key.serialize_pem()),
        _dir: dir,
    }
}

fn config(
    dir: &Path,
    certs: &Certs,
    name: &str,
    seeds: Vec<String>,
    secret: Option<&str>,
) -> ServerConfig {
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
        tls_cert: Some(certs.cert.clone()),
        tls_key: Some(certs.key.clone()),
        peer_tls_cert: Some(certs.cert.clone()),
        peer_tls_key: Some(certs.key.clone()),
        peer_tls_ca: Some(certs.ca.clone()),
        cluster_secret: secret.map(|s| SecretString(s.to_string())),
        ..ServerConfig::default()
    }
}

fn https_client(servers: &[&RunningServer], ca: &Path) -> Client {
    Client::new(ClientConfig {
        nodes: servers
            .iter()
            .map(|s| format!("https://{}", s.client_address))
            .collect(),
        ca_file: Some(ca.to_path_buf()),
        request_timeout: Duration::from_secs(5),
        ring_refresh: Duration::ZERO,
        ..ClientConfig::default()
    })
    .expect("client")
}

fn all() -> Options {
    Options {
        r: Some(QuorumValue::All),
        w: Some(QuorumValue::All),
        ..Options::default()
    }
}

fn refused(metrics: &Metrics, reason: &str) -> u64 {
    metrics
        .peer_frames_rejected
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .get()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bare peer transport (no node behind it) calling itself `name`, which can send any message
/// it likes to `target`.
fn rogue(name: &str, certs: &Certs, secret: Option<&str>, target: &RunningServer) -> Transport {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (inbound, _) = tokio::sync::mpsc::channel(16);
    let transport = Transport::start(
        TransportConfig {
            node_id: NodeId::new(name),
            cluster: ServerConfig::default().cluster,
            tls: Some(PeerTls::from_files(&certs.cert, &certs.key, &certs.ca).unwrap()),
            secret: secret.map(|s| ClusterSecret::new(s).unwrap()),
            ..TransportConfig::default()
        },
        listener,
        inbound,
        Arc::new(Metrics::new()),
    );
    transport.set_addresses([(
        NodeId::new(target.node.node_id().as_str()),
        target.peer_address.to_string(),
    )]);
    transport
}

/// What a client asks a node to coordinate when it forwards a write: anything that gets this
/// far can store data.
fn forwarded_put(id: u64, key: &[u8]) -> Message {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Message::Forward {
        id,
        request: ClientRequest::Put {
            bucket: b"b".to_vec(),
            key: key.to_vec(),
            context: Context::default(),
            value: b"planted".to_vec(),
            options: RequestOptions::default(),
        },
        deadline: now + 60_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_replicate_over_tls_and_strangers_are_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs();
    let mut servers = Vec::new();
    let mut seeds = Vec::new();
    for i in 1..=3 {
        let server = server::start(config(
            dir.path(),
            &certs,
            &format!("n{i}"),
            seeds.clone(),
            Some(SECRET),
        ))
        .await
        .expect("server starts");
        if seeds.is_empty() {
            seeds.push(server.peer_address.to_string());
        }
        servers.push(server);
    }
    server::wait_until_settled(&servers, Duration::from_secs(60))
        .await
        .expect("the cluster settles over TLS");
    let first = &servers[0];
    let metrics = first.node.metrics().clone();

    // (a) A write reaches all three replicas over the TLS links, and each node reads it.
    let client = https_client(&servers.iter().collect::<Vec<_>>(), &certs.ca);
    let written = client
        .put(b"b", b"k", None, Bytes::from_static(b"v"), &all())
        .await
        .expect("put over HTTPS");
    assert_eq!(written.replicas.len(), 3, "{written:?}");
    for server in &servers {
        let read = https_client(&[server], &certs.ca)
            .get(b"b", b"k", &all())
            .await
            .expect("get over HTTPS");
        assert_eq!(read.values, [Bytes::from_static(b"v")]);
    }

    // (b) Nodes with the cluster's certificates but a wrong secret, or none, cannot join.
    let baseline = refused(&metrics, "bad_secret");
    for (name, secret) in [
        ("wrong", Some("a wrong secret, long enough")),
        ("none", None),
    ] {
        let outcome = server::start(config(dir.path(), &certs, name, seeds.clone(), secret)).await;
        assert!(
            matches!(outcome, Err(ServerError::Seeds(_))),
            "{name}: {:?}",
            outcome.err()
        );
    }
    assert!(refused(&metrics, "bad_secret") >= baseline + 2);

    // ... nor store anything by talking the peer protocol directly, even claiming a member's id
    // (a node only acts on messages of members). A control with the secret shows the same
    // message would have been acted on: the secret is what stands in the way.
    let stranger = rogue("n2", &certs, Some("a wrong secret, long enough"), first);
    let refused_before = refused(&metrics, "bad_secret");
    stranger.send(&NodeId::new("n1"), forwarded_put(1, b"planted-by-stranger"));
    eventually("the stranger refused", || {
        refused(&metrics, "bad_secret") > refused_before
    })
    .await;
    let insider = rogue("n2", &certs, Some(SECRET), first);
    insider.send(&NodeId::new("n1"), forwarded_put(1, b"planted-by-insider"));
    let deadline = Instant::now() + WAIT;
    loop {
        let read = client.get(b"b", b"planted-by-insider", &all()).await;
        if read.is_ok_and(|r| r.found()) {
            break;
        }
        assert!(Instant::now() < deadline, "the control write never landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = client
        .get(b"b", b"planted-by-stranger", &all())
        .await
        .unwrap();
    assert!(!read.found(), "a stranger stored {read:?}");
    let status = first.node.status().await.unwrap();
    assert!(
        status
            .ring
            .members()
            .iter()
            .all(|member| ["n1", "n2", "n3"].contains(&member.id.as_str())),
        "a stranger is in the ring"
    );

    // (c) Plain HTTP on the HTTPS port fails at once; HTTPS clients go on being served.
    let plain = Client::new(ClientConfig {
        nodes: vec![format!("http://{}", first.client_address)],
        request_timeout: Duration::from_secs(5),
        ring_refresh: Duration::ZERO,
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let outcome = plain.get(b"b", b"k", &Options::default()).await;
    assert!(outcome.is_err(), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "plain HTTP hung"
    );
    let read = https_client(&[first], &certs.ca)
        .get(b"b", b"k", &all())
        .await
        .unwrap();
    assert_eq!(read.values, [Bytes::from_static(b"v")]);
    let written = client
        .put(
            b"b",
            b"after",
            None,
            Bytes::from_static(b"still here"),
            &all(),
        )
        .await
        .unwrap();
    assert_eq!(written.replicas.len(), 3);

    stranger.shutdown().await;
    insider.shutdown().await;
    for server in servers {
        server.shutdown().await;
    }
}

/// (e) The binary stops at start-up, with a message naming the problem, on a half-configured
/// TLS setting or a certificate file that is not PEM.
#[test]
fn the_server_refuses_bad_tls_settings_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "no certificate here").unwrap();
    let certs = certs();
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str)> = vec![
        (
            vec!["--tls-cert".as_ref(), certs.cert.as_os_str()],
            "tls_cert is set without tls_key",
        ),
        (
            vec![
                "--tls-cert".as_ref(),
                garbage.as_os_str(),
                "--tls-key".as_ref(),
                certs.key.as_os_str(),
            ],
            "no PEM certificate",
        ),
        (
            vec![
                "--peer-tls-cert".as_ref(),
                certs.cert.as_os_str(),
                "--peer-tls-key".as_ref(),
                certs.key.as_os_str(),
            ],
            "missing peer_tls_ca",
        ),
    ];
    for (flags, expected) in cases {
        let output = std::process::Command::new(common::ringkv_binary())
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg(common::free_address().to_string())
            .arg("--peer-listen")
            .arg(common::free_address().to_string())
            .args(&flags)
            .env("RINGKV_LOG", "error")
            .output()
            .expect("ringkv runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flags:?} started");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
    assert!(!dir.path().join("data").exists());
}
