use super::connection::Backoff;
use super::handshake::{proof_mac, Role};
use super::*;
use crate::metrics::ReasonLabels;
use bytes::BytesMut;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::path::Path;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use wire::ReadResult;

const WAIT: Duration = Duration::from_secs(10);

fn config(node: &str, cluster: &str) -> TransportConfig {
    TransportConfig {
        node_id: NodeId::new(node),
        cluster: cluster.to_string(),
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..TransportConfig::default()
    }
}

struct Node {
    transport: Transport,
    inbound: mpsc::Receiver<(NodeId, Message)>,
    metrics: Arc<Metrics>,
}

async fn start_on(config: TransportConfig, address: &str) -> Node {
    let listener = TcpListener::bind(address).await.unwrap();
    let (inbound_tx, inbound) = mpsc::channel(1024);
    let metrics = Arc::new(Metrics::new());
    let transport = Transport::start(config, listener, inbound_tx, metrics.clone());
    Node {
        transport,
        inbound,
        metrics,
    }
}

async fn start(node: &str, cluster: &str) -> Node {
    start_on(config(node, cluster), "127.0.0.1:0").await
}

fn numbered(id: u64) -> Message {
    Message::ReadReply {
        id,
        result: ReadResult::NotFound,
    }
}

fn count(family: &Family<ReasonLabels, Counter>, reason: &str) -> u64 {
    family
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .get()
}

fn rejected(node: &Node, reason: &str) -> u64 {
    count(&node.metrics.peer_frames_rejected, reason)
}

async fn eventually(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition not met in time");
}

async fn receive(node: &mut Node) -> (NodeId, Message) {
    tokio::time::timeout(WAIT, node.inbound.recv())
        .await
        .expect("no message in time")
        .expect("inbound channel closed")
}

fn introduce(a: &Node, b: &Node, a_id: &str, b_id: &str) {
    a.transport
        .set_addresses([(NodeId::new(b_id), b.transport.local_addr().to_string())]);
    b.transport
        .set_addresses([(NodeId::new(a_id), a.transport.local_addr().to_string())]);
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Reads one frame off a raw stream.
async fn read_raw_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
    stream.read_exact(&mut body).await.unwrap();
    body
}

fn raw_hello(id: &str, cluster: &str, uses_secret: bool, nonce: u8) -> Vec<u8> {
    Hello {
        cluster: cluster.to_string(),
        node_id: NodeId::new(id),
        address: String::new(),
        uses_secret,
        nonce: [nonce; NONCE_BYTES],
    }
    .encode()
    .unwrap()
}

/// A raw connection that has done a proper handshake as node `id` of `cluster`.
async fn raw_peer(target: &Node, id: &str, cluster: &str) -> TcpStream {
    let mut stream = TcpStream::connect(target.transport.local_addr())
        .await
        .unwrap();
    let hello = read_raw_frame(&mut stream).await;
    assert_eq!(Hello::decode(&hello).unwrap().cluster, "c");
    stream
        .write_all(&frame(&raw_hello(id, cluster, false, 0)))
        .await
        .unwrap();
    stream
}

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::new(format!("{text:0<16}")).unwrap()
}

fn with_secret(node: &str, cluster: &str, text: &str) -> TransportConfig {
    TransportConfig {
        secret: Some(secret(text)),
        ..config(node, cluster)
    }
}

/// Reads until the transport closes the connection (EOF or reset).
async fn closed_by_remote(stream: &mut TcpStream) {
    let mut buffer = [0u8; 64];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("connection not closed in time");
}

#[test]
fn hello_round_trips_and_rejects_malformed() {
    let hello = Hello {
        cluster: "prod".into(),
        node_id: NodeId::new("n1"),
        address: "10.0.0.1:7087".into(),
        uses_secret: true,
        nonce: [7; NONCE_BYTES],
    };
    let encoded = hello.encode().unwrap();
    assert_eq!(&encoded[..4], b"RKV\0");
    assert_eq!(encoded[4], 2);
    assert_eq!(Hello::decode(&encoded).unwrap(), hello);
    // Version 1 hellos (no flags, no nonce) are refused, not misread.
    let mut version_1 = encoded[..encoded.len() - 1 - NONCE_BYTES].to_vec();
    version_1[4] = 1;
    assert!(Hello::decode(&version_1).is_err());
    let mut unknown_flag = encoded.clone();
    let flags_at = encoded.len() - 1 - NONCE_BYTES;
    unknown_flag[flags_at] |= 0b10;
    assert!(matches!(
        Hello::decode(&unknown_flag),
        Err(TransportError::BadHandshake("unknown flags in hello"))
    ));
    for cut in 0..encoded.len() {
        assert!(
            Hello::decode(&encoded[..cut]).is_err(),
            "prefix {cut} accepted"
        );
    }
    let mut trailing = encoded.clone();
    trailing.push(0);
    assert!(Hello::decode(&trailing).is_err());
    let mut wrong_version = encoded.clone();
    wrong_version[4] = PROTOCOL_VERSION + 1;
    assert!(Hello::decode(&wrong_version).is_err());
    let too_long = Hello {
        cluster: "x".repeat(MAX_HELLO_NAME_BYTES + 1),
        ..hello.clone()
    };
    assert!(matches!(
        too_long.encode(),
        Err(TransportError::NameTooLong { .. })
    ));
    // The largest hello fits the hello frame limit exactly.
    let longest = Hello {
        cluster: "x".repeat(MAX_HELLO_NAME_BYTES),
        node_id: NodeId::new("y".repeat(MAX_HELLO_NAME_BYTES)),
        address: "z".repeat(MAX_HELLO_NAME_BYTES),
        ..hello
    };
    assert_eq!(longest.encode().unwrap().len(), MAX_HELLO_BYTES);
}

#[test]
fn proofs_depend_on_the_secret_the_role_and_both_hellos() {
    let proof = |secret: &ClusterSecret, role, acceptor: &[u8], dialer: &[u8]| {
        proof_mac(secret, role, acceptor, dialer)
            .unwrap()
            .finalize()
            .into_bytes()
    };
    let (a, b) = (raw_hello("a", "c", true, 1), raw_hello("b", "c", true, 2));
    let s = secret("s");
    let reference = proof(&s, Role::Dialer, &a, &b);
    assert_eq!(reference.len(), PROOF_BYTES);
    assert_eq!(reference, proof(&s, Role::Dialer, &a, &b));
    assert_ne!(reference, proof(&secret("t"), Role::Dialer, &a, &b));
    assert_ne!(reference, proof(&s, Role::Acceptor, &a, &b));
    assert_ne!(reference, proof(&s, Role::Dialer, &b, &a));
    assert_ne!(
        reference,
        proof(&s, Role::Dialer, &raw_hello("a", "c", true, 3), &b)
    );
    assert!(ClusterSecret::new("short").is_err());
    assert_eq!(format!("{s:?}"), "ClusterSecret(..)");
}

#[test]
fn frame_codec_refuses_an_oversized_length_before_reading_the_body() {
    let mut codec = FrameCodec { limit: 16 };
    let mut buffer = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    assert!(matches!(
        codec.decode(&mut buffer),
        Err(TransportError::FrameTooLarge { length, limit: 16 }) if length == u32::MAX as usize
    ));
    // Nothing was reserved for the announced body.
    assert!(buffer.capacity() < 1024);
    let mut partial = BytesMut::from(&frame(b"abcdef")[..7]);
    assert!(codec.decode(&mut partial).unwrap().is_none());
    assert!(matches!(
        codec.decode_eof(&mut partial),
        Err(TransportError::Truncated)
    ));
}

#[test]
fn backoff_stays_within_bounds_and_grows() {
    let min = Duration::from_millis(10);
    let max = Duration::from_millis(80);
    let mut backoff = Backoff::new(min, max);
    let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
    assert!(delays.iter().all(|d| *d >= min && *d <= max));
    assert!(delays[6..].iter().all(|d| *d >= max / 2));
    backoff.reset();
    assert_eq!(backoff.next_delay(), min);
}

#[tokio::test]
async fn messages_flow_both_ways_in_order() {
    let mut a = start("a", "c").await;
    let mut b = start("b", "c").await;
    introduce(&a, &b, "a", "b");
    for i in 0..200 {
        a.transport.send(&NodeId::new("b"), numbered(i));
        b.transport.send(&NodeId::new("a"), numbered(1000 + i));
    }
    for i in 0..200 {
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(i)));
        assert_eq!(
            receive(&mut a).await,
            (NodeId::new("b"), numbered(1000 + i))
        );
    }
    assert_eq!(a.metrics.peer_messages_received.get(), 200);
    eventually(|| a.metrics.peer_messages_sent.get() == 200).await;
    // One outbound and one inbound connection on each side.
    assert_eq!(a.metrics.peer_connections.get(), 2);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
    eventually(|| a.metrics.peer_connections.get() == 0).await;
}

#[tokio::test]
async fn an_inbound_peer_is_answered_at_the_address_its_hello_gives() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut a_config = config("a", "c");
    a_config.advertised_address = listener.local_addr().unwrap().to_string();
    let (inbound_tx, inbound) = mpsc::channel(1024);
    let metrics = Arc::new(Metrics::new());
    let mut a = Node {
        transport: Transport::start(a_config, listener, inbound_tx, metrics.clone()),
        inbound,
        metrics,
    };
    let mut b = start("b", "c").await;
    a.transport
        .set_addresses([(NodeId::new("b"), b.transport.local_addr().to_string())]);
    a.transport.send(&NodeId::new("b"), numbered(1));
    assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(1)));
    // b never had a's address; it learned it from a's hello.
    b.transport.send(&NodeId::new("a"), numbered(2));
    assert_eq!(receive(&mut a).await, (NodeId::new("b"), numbered(2)));
    assert_eq!(count(&b.metrics.peer_messages_dropped, "no_address"), 0);
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected() {
    let a = start("a", "c").await;
    let mut b = start("b", "c").await;
    let b_address = b.transport.local_addr().to_string();
    a.transport
        .set_addresses([(NodeId::new("b"), b_address.clone())]);
    a.transport.send(&NodeId::new("b"), Message::Ping);
    assert_eq!(receive(&mut b).await.1, Message::Ping);
    b.transport.shutdown().await;
    drop(b);

    let mut b = start_on(config("b", "c"), &b_address).await;
    // Messages written while the old connection dies may be lost: keep sending until one
    // arrives over the new connection.
    let arrived = tokio::time::timeout(WAIT, async {
        loop {
            a.transport.send(&NodeId::new("b"), Message::Pong);
            if let Ok(Some(received)) =
                tokio::time::timeout(Duration::from_millis(50), b.inbound.recv()).await
            {
                return received;
            }
        }
    })
    .await
    .expect("no message after the restart");
    assert_eq!(arrived, (NodeId::new("a"), Message::Pong));
}

#[tokio::test]
async fn garbage_is_rejected_and_the_transport_keeps_serving() {
    let mut b = start("b", "c").await;

    // Garbage instead of a hello.
    let mut raw = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    raw.write_all(&frame(b"definitely not a hello"))
        .await
        .unwrap();
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&b, "bad_handshake") == 1).await;

    // A proper handshake, then a frame that is not a message.
    let mut raw = raw_peer(&b, "x", "c").await;
    raw.write_all(&frame(&[wire::WIRE_VERSION, 0xff, 0xff, 0xff]))
        .await
        .unwrap();
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&b, "garbage") == 1).await;
    assert_eq!(b.metrics.peer_messages_received.get(), 0);

    // A proper peer is still served.
    let a = start("a", "c").await;
    introduce(&a, &b, "a", "b");
    a.transport.send(&NodeId::new("b"), Message::Ping);
    assert_eq!(receive(&mut b).await, (NodeId::new("a"), Message::Ping));
}

#[tokio::test]
async fn an_oversized_length_prefix_is_rejected_without_reading_it() {
    let b = start("b", "c").await;
    let mut raw = raw_peer(&b, "x", "c").await;
    // Announces 4 GiB and sends none of it: only a check of the prefix closes this.
    raw.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&b, "too_large") == 1).await;

    // An oversized hello is refused the same way.
    let mut raw = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    raw.write_all(&((MAX_HELLO_BYTES + 1) as u32).to_be_bytes())
        .await
        .unwrap();
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&b, "too_large") == 2).await;

    // A message frame over a configured limit, too, after one under it was delivered.
    let mut small = start_on(
        TransportConfig {
            max_frame_bytes: 8,
            ..config("s", "c")
        },
        "127.0.0.1:0",
    )
    .await;
    let mut raw = raw_peer(&small, "x", "c").await;
    raw.write_all(&frame(&numbered(1).encode())).await.unwrap();
    raw.write_all(&frame(&[0u8; 9])).await.unwrap();
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&small, "too_large") == 1).await;
    assert_eq!(receive(&mut small).await, (NodeId::new("x"), numbered(1)));
    assert_eq!(b.metrics.peer_messages_received.get(), 0);
}

#[tokio::test]
async fn a_peer_of_another_cluster_is_refused() {
    let mut a = start("a", "c").await;
    let other = start("o", "other").await;
    other
        .transport
        .set_addresses([(NodeId::new("a"), a.transport.local_addr().to_string())]);
    other.transport.send(&NodeId::new("a"), Message::Ping);
    eventually(|| rejected(&a, "wrong_cluster") >= 1).await;
    eventually(|| rejected(&other, "wrong_cluster") >= 1).await;
    assert!(a.inbound.try_recv().is_err());
    assert!(matches!(
        other
            .transport
            .identify(&a.transport.local_addr().to_string())
            .await,
        Err(TransportError::WrongCluster { .. })
    ));
}

#[tokio::test]
async fn peers_sharing_the_secret_talk_and_others_are_refused() {
    let mut a = start_on(with_secret("a", "c", "right"), "127.0.0.1:0").await;
    let mut b = start_on(with_secret("b", "c", "right"), "127.0.0.1:0").await;
    introduce(&a, &b, "a", "b");
    a.transport.send(&NodeId::new("b"), numbered(1));
    assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(1)));
    b.transport.send(&NodeId::new("a"), numbered(2));
    assert_eq!(receive(&mut a).await, (NodeId::new("b"), numbered(2)));

    // A wrong secret: its proof fails at b, which never answers with its own.
    let wrong = start_on(with_secret("w", "c", "wrong"), "127.0.0.1:0").await;
    // No secret at all: each side sees the other's hello does not match its own.
    let none = start("n", "c").await;
    for stranger in [&wrong, &none] {
        stranger
            .transport
            .set_addresses([(NodeId::new("b"), b.transport.local_addr().to_string())]);
        stranger.transport.send(&NodeId::new("b"), numbered(66));
    }
    eventually(|| rejected(&b, "bad_secret") >= 2).await;
    eventually(|| rejected(&none, "bad_secret") >= 1).await;
    assert!(matches!(
        none.transport
            .identify(&b.transport.local_addr().to_string())
            .await,
        Err(TransportError::Unauthenticated(_))
    ));
    assert!(wrong
        .transport
        .identify(&b.transport.local_addr().to_string())
        .await
        .is_err());

    // b goes on serving a, and nothing of the strangers' reached it.
    a.transport.send(&NodeId::new("b"), numbered(3));
    assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(3)));
    assert_eq!(b.metrics.peer_messages_received.get(), 2);
    assert!(b.inbound.try_recv().is_err());
}

#[tokio::test]
async fn a_recorded_proof_does_not_open_a_second_connection() {
    let s = secret("right");
    let mut b = start_on(with_secret("b", "c", "right"), "127.0.0.1:0").await;
    let ours = raw_hello("x", "c", true, 9);

    // A raw dialer that knows the secret gets in and is heard.
    let mut first = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    let theirs = read_raw_frame(&mut first).await;
    first.write_all(&frame(&ours)).await.unwrap();
    let recorded = proof_mac(&s, Role::Dialer, &theirs, &ours)
        .unwrap()
        .finalize()
        .into_bytes();
    first.write_all(&frame(&recorded)).await.unwrap();
    let answer = read_raw_frame(&mut first).await;
    proof_mac(&s, Role::Acceptor, &theirs, &ours)
        .unwrap()
        .verify_slice(&answer)
        .expect("the acceptor's proof does not check");
    first
        .write_all(&frame(&numbered(1).encode()))
        .await
        .unwrap();
    assert_eq!(receive(&mut b).await, (NodeId::new("x"), numbered(1)));

    // The same proof replayed on a new connection: b's nonce is new, so it fails.
    let mut replay = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    let fresh = read_raw_frame(&mut replay).await;
    assert_ne!(fresh, theirs);
    replay.write_all(&frame(&ours)).await.unwrap();
    replay.write_all(&frame(&recorded)).await.unwrap();
    replay.write_all(&frame(&numbered(2).encode())).await.ok();
    closed_by_remote(&mut replay).await;
    eventually(|| rejected(&b, "bad_secret") == 1).await;

    // A stranger claiming a secret and sending a message where the proof goes: refused
    // without the message being decoded.
    let mut stranger = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    read_raw_frame(&mut stranger).await;
    stranger.write_all(&frame(&ours)).await.unwrap();
    stranger.write_all(&frame(&numbered(3).encode())).await.ok();
    closed_by_remote(&mut stranger).await;
    eventually(|| rejected(&b, "bad_secret") == 2).await;
    assert_eq!(b.metrics.peer_messages_received.get(), 1);
    assert!(b.inbound.try_recv().is_err());
}

fn with_tls(node: &str, files: &crate::tls::test_certs::Files, ca: &Path) -> TransportConfig {
    TransportConfig {
        tls: Some(PeerTls::from_files(&files.cert, &files.key, ca).unwrap()),
        handshake_timeout: Duration::from_millis(500),
        ..with_secret(node, "c", "right")
    }
}

#[tokio::test]
async fn peers_over_mutual_tls_talk_and_untrusted_ones_are_refused() {
    let cluster = crate::tls::test_certs::generate();
    let mut a = start_on(with_tls("a", &cluster, &cluster.ca), "127.0.0.1:0").await;
    let mut b = start_on(with_tls("b", &cluster, &cluster.ca), "127.0.0.1:0").await;
    introduce(&a, &b, "a", "b");
    for i in 0..50 {
        a.transport.send(&NodeId::new("b"), numbered(i));
    }
    for i in 0..50 {
        assert_eq!(receive(&mut b).await, (NodeId::new("a"), numbered(i)));
    }
    b.transport.send(&NodeId::new("a"), Message::Ping);
    assert_eq!(receive(&mut a).await, (NodeId::new("b"), Message::Ping));
    let b_address = b.transport.local_addr().to_string();

    // A node of another CA does not trust b's certificate (and b would not trust its own).
    let other = crate::tls::test_certs::generate();
    let foreign = start_on(with_tls("f", &other, &other.ca), "127.0.0.1:0").await;
    assert!(matches!(
        foreign.transport.identify(&b_address).await,
        Err(TransportError::Tls(_))
    ));
    assert_eq!(rejected(&foreign, "tls"), 0, "identify counts nothing");
    // One that trusts b's CA but presents a certificate of another CA: b refuses it.
    let impostor = start_on(with_tls("i", &other, &cluster.ca), "127.0.0.1:0").await;
    impostor
        .transport
        .set_addresses([(NodeId::new("b"), b_address.clone())]);
    impostor.transport.send(&NodeId::new("b"), numbered(66));
    eventually(|| rejected(&b, "tls") >= 2).await;

    // A plain-TCP peer waits for a hello that never comes, and b for a ClientHello: b's
    // handshake timeout (500 ms) cuts it. The plain peer waits longer, so that its own
    // timeout cannot close the connection first (which b would count as a TLS failure).
    let plain = start_on(
        TransportConfig {
            handshake_timeout: Duration::from_secs(5),
            ..with_secret("p", "c", "right")
        },
        "127.0.0.1:0",
    )
    .await;
    assert!(plain.transport.identify(&b_address).await.is_err());
    eventually(|| rejected(&b, "timeout") >= 1).await;
    // A silent connection is cut too.
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    closed_by_remote(&mut silent).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    eventually(|| rejected(&b, "timeout") >= 2).await;

    // b still serves a; nothing else reached it.
    a.transport.send(&NodeId::new("b"), Message::Pong);
    assert_eq!(receive(&mut b).await, (NodeId::new("a"), Message::Pong));
    assert_eq!(b.metrics.peer_messages_received.get(), 51);
}

#[tokio::test]
async fn connections_beyond_the_pending_handshake_cap_are_closed_at_once() {
    let b = start_on(
        TransportConfig {
            max_pending_handshakes: 2,
            handshake_timeout: Duration::from_secs(30),
            ..config("b", "c")
        },
        "127.0.0.1:0",
    )
    .await;
    // Two silent connections hold both handshake slots.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(b.transport.local_addr()).await.unwrap());
    }
    // The third is closed at once, long before the handshake timeout.
    let mut third = TcpStream::connect(b.transport.local_addr()).await.unwrap();
    closed_by_remote(&mut third).await;
    eventually(|| rejected(&b, "too_many_handshakes") == 1).await;
    // A real peer still gets through once a slot is free again.
    drop(silent);
    let a = start("a", "c").await;
    let b_address = b.transport.local_addr().to_string();
    tokio::time::timeout(WAIT, async {
        loop {
            if a.transport.identify(&b_address).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a peer could not connect after the slots were freed");
}

#[tokio::test]
async fn a_hello_claiming_our_own_id_is_refused() {
    let b = start("b", "c").await;
    let mut raw = raw_peer(&b, "b", "c").await;
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&b, "self") == 1).await;
}

#[tokio::test]
async fn identify_returns_the_remote_id() {
    let a = start("a", "c").await;
    let b = start("b", "c").await;
    let b_address = b.transport.local_addr().to_string();
    assert_eq!(
        a.transport.identify(&b_address).await.unwrap(),
        NodeId::new("b")
    );
    // Identifying oneself (a seed list naming this node) works and is no rejection.
    let a_address = a.transport.local_addr().to_string();
    assert_eq!(
        a.transport.identify(&a_address).await.unwrap(),
        NodeId::new("a")
    );
    // A bad hello after it, to know the self connection's end has been handled (one task
    // runs at a time here, and that connection was closed first).
    let mut raw = TcpStream::connect(a.transport.local_addr()).await.unwrap();
    raw.write_all(&frame(b"not a hello")).await.unwrap();
    closed_by_remote(&mut raw).await;
    eventually(|| rejected(&a, "bad_handshake") == 1).await;
    assert_eq!(rejected(&a, "self"), 0);
}

#[tokio::test]
async fn with_a_secret_an_unproven_hello_claiming_our_id_is_not_taken_for_ourselves() {
    let a = start_on(with_secret("a", "c", "s"), "127.0.0.1:0").await;
    // Our own address, with the secret: identified as ourselves after the proofs.
    let a_address = a.transport.local_addr().to_string();
    assert_eq!(
        a.transport.identify(&a_address).await.unwrap(),
        NodeId::new("a")
    );
    // A listener without the secret that claims to be "a" (and to use a secret).
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_address = fake.local_addr().unwrap().to_string();
    let impostor = tokio::spawn(async move {
        let (mut stream, _) = fake.accept().await.unwrap();
        stream
            .write_all(&frame(&raw_hello("a", "c", true, 0)))
            .await
            .unwrap();
        // Reads whatever the dialer sends, proves nothing, then hangs up.
        let mut buffer = [0u8; 1024];
        while let Ok(Ok(read)) = tokio::time::timeout(WAIT, stream.read(&mut buffer)).await {
            if read == 0 {
                break;
            }
            let _ = stream.write_all(&frame(&[0u8; 32])).await;
        }
    });
    let answer = a.transport.identify(&fake_address).await;
    assert!(
        answer.is_err(),
        "an unproven self answer was accepted: {answer:?}"
    );
    impostor.abort();
    assert_eq!(rejected(&a, "self"), 0);
}

#[tokio::test]
async fn sending_to_an_unknown_peer_counts_no_address() {
    let a = start("a", "c").await;
    a.transport.send(&NodeId::new("nobody"), Message::Ping);
    assert_eq!(count(&a.metrics.peer_messages_dropped, "no_address"), 1);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let a = start_on(
        TransportConfig {
            queue_capacity: 2,
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30),
            ..config("a", "c")
        },
        "127.0.0.1:0",
    )
    .await;
    // An address nobody listens on.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_address = gone.local_addr().unwrap().to_string();
    drop(gone);
    a.transport
        .set_addresses([(NodeId::new("b"), gone_address)]);
    for i in 0..20 {
        a.transport.send(&NodeId::new("b"), numbered(i));
    }
    // At most the queue plus the one message the writer holds got through.
    assert!(count(&a.metrics.peer_messages_dropped, "queue_full") >= 17);
    assert_eq!(a.metrics.peer_messages_sent.get(), 0);
    tokio::time::timeout(WAIT, a.transport.shutdown())
        .await
        .expect("shutdown hung");
}

#[tokio::test]
async fn shutdown_flushes_queued_messages() {
    let a = start("a", "c").await;
    let mut b = start("b", "c").await;
    introduce(&a, &b, "a", "b");
    a.transport.send(&NodeId::new("b"), Message::Ping);
    assert_eq!(receive(&mut b).await.1, Message::Ping);
    for i in 0..50 {
        a.transport.send(&NodeId::new("b"), numbered(i));
    }
    a.transport.shutdown().await;
    for i in 0..50 {
        assert_eq!(receive(&mut b).await.1, numbered(i));
    }
    a.transport.send(&NodeId::new("b"), Message::Ping);
    assert_eq!(count(&a.metrics.peer_messages_dropped, "shut_down"), 1);
}

#[test]
fn a_forward_past_its_deadline_is_stale_and_nothing_else_ever_is() {
    use ringkv_core::bucket::RequestOptions;
    use ringkv_core::request::ClientRequest;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The request's own timeout is long: the deadline the forwarder set is what counts.
    let forward = |deadline| Message::Forward {
        id: 1,
        request: ClientRequest::Get {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions {
                timeout_ms: Some(60_000),
                ..Default::default()
            },
        },
        deadline,
    };
    let given_up = super::connection::Queued::new(forward(now + 2));
    let patient = super::connection::Queued::new(forward(now + 60_000));
    let ping = super::connection::Queued::new(Message::Ping);
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(given_up.is_stale());
    assert!(!patient.is_stale());
    assert!(!ping.is_stale());
}
