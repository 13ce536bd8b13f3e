//! Tests of the cluster, ring, health, bucket and UI documents (the helpers are the parent's).

use super::*;

#[tokio::test]
async fn ring_and_cluster_documents() {
    let fake = fake_node(canned(), test_status());
    let status = test_status();
    let answer = get(&fake, "/ring").await;
    assert_eq!(
        answer
            .headers
            .get(http::header::ACCESS_CONTROL_ALLOW_ORIGIN),
        Some(&HeaderValue::from_static("*"))
    );
    assert_eq!(answer.status, StatusCode::OK);
    let ring: api::RingDoc = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(ring, ring_doc(&status));
    assert_eq!(
        (ring.version, ring.partition_count, ring.target_n),
        (7, 8, 3)
    );
    assert_eq!(ring.strategy, "partitions");
    assert_eq!(ring.cluster, "test-cluster");
    assert_eq!(ring.partitions.len(), 8);
    for partition in &ring.partitions {
        let start: u128 = partition.start.parse().unwrap();
        assert_eq!(
            start,
            status.ring.partition_start(PartitionId(partition.id))
        );
        assert_eq!(partition.replicas.len(), 3);
        let expected: &[&str] = if partition.id == 1 { &["c"] } else { &[] };
        assert_eq!(partition.moving_to, expected);
    }
    assert_eq!(
        ring.partitions[0].replicas,
        status
            .ring
            .partition_preference_list(PartitionId(0), 3)
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
    );

    let answer = get(&fake, "/cluster").await;
    assert_eq!(answer.status, StatusCode::OK);
    let cluster: api::ClusterStatus = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(cluster.node, "a");
    assert_eq!(
        cluster.merkle_roots,
        BTreeMap::from([(3, "0000000000000abc".to_string())])
    );
    assert_eq!(cluster.claimant.as_deref(), Some("a"));
    assert_eq!(cluster.ring_version, Some(7));
    assert_eq!(
        (
            cluster.hints_pending,
            cluster.transfers_pending,
            cluster.in_flight
        ),
        (4, 1, 2)
    );
    let members: Vec<(&str, &str, bool)> = cluster
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.status.as_str(), m.alive))
        .collect();
    assert_eq!(
        members,
        [
            ("a", "up", true),
            ("b", "up", true),
            // Up in the view, but not heard from: down as this node sees it.
            ("c", "down", false),
            ("d", "removed", false)
        ]
    );
    let owned: u32 = cluster.members.iter().map(|m| m.partitions).sum();
    assert_eq!(owned, 8);
    assert_eq!(cluster.members[0].zone.as_deref(), Some("z1"));
    assert_eq!(cluster.members[0].http_addr, "a:8000");
    assert_eq!(cluster.buckets.len(), 1);
    assert_eq!(cluster.buckets[0].bucket, "lww-bucket");
    assert_eq!(cluster.buckets[0].conflict_mode, "lww");
}

/// `/readyz` of a node with `status`, after `prepare`: its code and its failed checks.
async fn readiness_of(
    status: NodeStatus,
    prepare: impl FnOnce(&FakeNode),
) -> (StatusCode, Vec<String>) {
    let fake = fake_node(canned(), status);
    prepare(&fake);
    let answer = get(&fake, "/readyz").await;
    let probe: api::Probe = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(probe.node, "a");
    assert_eq!(probe.status == "ok", answer.status == StatusCode::OK);
    (answer.status, probe.failed)
}

#[tokio::test]
async fn probes_say_live_and_ready_and_which_check_failed() {
    let fake = fake_node(canned(), test_status());
    let live = get(&fake, "/livez").await;
    assert_eq!(live.status, StatusCode::OK);
    let probe: api::Probe = serde_json::from_slice(&live.body).unwrap();
    assert_eq!((probe.status.as_str(), probe.node.as_str()), ("ok", "a"));
    assert_eq!(
        readiness_of(test_status(), |_| {}).await,
        (StatusCode::OK, vec![])
    );
    // A joining node without a ring, with its store closed.
    let (code, failed) = readiness_of(
        NodeStatus {
            ring_version: None,
            storage_open: false,
            ..test_status()
        },
        |_| {},
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed, ["no_ring", "storage"]);
    // After `cluster leave`.
    let mut leaving = test_status();
    let mut me = leaving.view.member(&NodeId::new("a")).unwrap().clone();
    me.status = MemberStatus::Leaving;
    leaving.view.set_member(me).unwrap();
    assert_eq!(
        readiness_of(leaving, |_| {}).await,
        (StatusCode::SERVICE_UNAVAILABLE, vec!["leaving".to_string()])
    );
    // Stopping: not ready, but still live.
    let stopping = fake_node(canned(), test_status());
    stopping.handle.mark_draining();
    assert_eq!(get(&stopping, "/livez").await.status, StatusCode::OK);
    assert_eq!(
        readiness_of(test_status(), |fake| fake.handle.mark_draining()).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            vec!["stopping".to_string()]
        )
    );
    let post = call(&fake, &config(), request(Method::POST, "/readyz", b"")).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn readiness_does_not_hang_on_a_busy_node_and_liveness_does_not_ask_it() {
    // A node task that takes requests and never answers them.
    let (sender, _held) = mpsc::channel(16);
    let fake = FakeNode {
        handle: NodeHandle {
            requests: sender,
            metrics: Arc::new(Metrics::new()),
            node_id: NodeId::new("a"),
            draining: Default::default(),
        },
        seen: Default::default(),
        commands: Default::default(),
        slow_arrived: Default::default(),
        release: Default::default(),
    };
    assert_eq!(get(&fake, "/livez").await.status, StatusCode::OK);
    let answer = get(&fake, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let probe: api::Probe = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(probe.failed, ["node_unresponsive"]);
}

#[tokio::test]
async fn health_is_503_without_a_ring() {
    let fake = fake_node(canned(), test_status());
    let answer = get(&fake, "/health").await;
    assert_eq!(answer.status, StatusCode::OK);
    let health: api::Health = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        health,
        api::Health {
            status: "ok".into(),
            node: "a".into(),
            alive_members: 2,
            members: 3,
        }
    );
    let joining = fake_node(
        canned(),
        NodeStatus {
            ring_version: None,
            ..test_status()
        },
    );
    let answer = get(&joining, "/health").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let health: api::Health = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(health.status, "no_ring");
    let ring = get(&joining, "/ring").await;
    assert_eq!(ring.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ring.error().kind, "no_ring");
    let cluster: api::ClusterStatus =
        serde_json::from_slice(&get(&joining, "/cluster").await.body).unwrap();
    assert!(cluster.members.iter().all(|m| m.partitions == 0));
}

#[tokio::test]
async fn cluster_commands() {
    let fake = fake_node(canned(), test_status());
    let post = |uri: &str, body: &str| request(Method::POST, uri, body.as_bytes());
    let join = call(
        &fake,
        &config(),
        post("/cluster/join", r#"{"seed":"b:7000"}"#),
    )
    .await;
    assert_eq!(join.status, StatusCode::ACCEPTED);
    let refused = call(
        &fake,
        &config(),
        post("/cluster/join", r#"{"seed":"unreachable:1"}"#),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.error().error.contains("cannot join"));
    let bad = call(&fake, &config(), post("/cluster/join", r#"{"seed":"#)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = call(&fake, &config(), post("/cluster/remove", r#"{"who":"c"}"#)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let remove = call(&fake, &config(), post("/cluster/remove", r#"{"node":"c"}"#)).await;
    assert_eq!(remove.status, StatusCode::ACCEPTED);
    let leave = call(&fake, &config(), post("/cluster/leave", "")).await;
    assert_eq!(leave.status, StatusCode::ACCEPTED);
    let huge = format!(r#"{{"seed":"{}"}}"#, "x".repeat(MAX_JSON_BODY_BYTES));
    let too_large = call(&fake, &config(), post("/cluster/join", &huge)).await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        fake.commands.lock().unwrap().clone(),
        vec![
            Command::Remove {
                node: NodeId::new("c")
            },
            Command::Leave
        ]
    );
}

#[tokio::test]
async fn bucket_props_get_and_put() {
    let fake = fake_node(canned(), test_status());
    let own: api::BucketPropsDoc =
        serde_json::from_slice(&get(&fake, "/buckets/lww-bucket/props").await.body).unwrap();
    assert_eq!(
        own,
        api::BucketPropsDoc {
            bucket: "lww-bucket".into(),
            n: 2,
            r: "quorum".into(),
            w: "quorum".into(),
            dw: "0".into(),
            conflict_mode: "lww".into(),
            siblings_warn: Some(25),
            max_siblings: Some(100),
            max_object_bytes: Some(17 * 1024 * 1024),
            default_ttl: None,
            n_per_zone: None,
        }
    );
    let default: api::BucketPropsDoc =
        serde_json::from_slice(&get(&fake, "/buckets/other%20one/props").await.body).unwrap();
    assert_eq!((default.bucket.as_str(), default.n), ("other one", 3));
    assert_eq!(default.conflict_mode, "siblings");

    let put = |body: &str| request(Method::PUT, "/buckets/b%2F1/props", body.as_bytes());
    let ok =
        r#"{"n":3,"r":"one","w":"all","dw":"1","conflict_mode":"siblings","default_ttl":"30m"}"#;
    assert_eq!(
        call(&fake, &config(), put(ok)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        fake.commands.lock().unwrap().clone(),
        vec![Command::SetBucket {
            bucket: b"b/1".to_vec(),
            props: BucketProps {
                n: 3,
                r: QuorumValue::One,
                w: QuorumValue::All,
                dw: QuorumValue::Count(1),
                conflict_mode: ConflictMode::Siblings,
                limits: Default::default(),
                default_ttl_ms: Some(30 * 60 * 1_000),
                n_per_zone: Default::default(),
            },
        }]
    );
    // Replicas per zone: n may be left out (it is their sum), and the zone quorums parse.
    fake.commands.lock().unwrap().clear();
    let zoned = r#"{"n_per_zone":{"dc1":2,"dc2":1},"r":"local_quorum","w":"each_quorum"}"#;
    assert_eq!(
        call(&fake, &config(), put(zoned)).await.status,
        StatusCode::NO_CONTENT
    );
    let commands = fake.commands.lock().unwrap().clone();
    let Some(Command::SetBucket { props, .. }) = commands.first() else {
        panic!("no command: {commands:?}");
    };
    assert_eq!(props.n, 3);
    assert_eq!(props.n_per_zone.get("dc1"), Some(&2));
    assert_eq!(
        (props.r, props.w),
        (QuorumValue::LocalQuorum, QuorumValue::EachQuorum)
    );
    let shown = crate::http::cluster::props_doc(b"z", props);
    assert_eq!(shown.n_per_zone.as_ref().map(|m| m.len()), Some(2));
    assert_eq!(shown.r, "local_quorum");
    for bad in [
        r#"{"n":3,"default_ttl":"0s"}"#,
        r#"{"n":3,"default_ttl":"soon"}"#,
        r#"{"n":3,"default_ttl":"99999d"}"#,
        r#"{"n":3,"r":"most","w":"all","dw":"1","conflict_mode":"siblings"}"#,
        r#"{"n":3,"r":"one","w":"all","dw":"1","conflict_mode":"newest"}"#,
        r#"{"n":9,"r":"one","w":"all","dw":"1","conflict_mode":"lww"}"#,
        // n has no default (the other fields do: a PUT of `{"n":1}` is enough).
        r#"{"r":"one"}"#,
        r#"{"n":3,"max_siblings":-1}"#,
        // A bucket no write could pass: refused by the node's check.
        r#"{"n":3,"max_siblings":0}"#,
        r#"{"n":3,"max_object_bytes":0}"#,
    ] {
        let answer = call(&fake, &config(), put(bad)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Before: a misspelt property was ignored, and the PUT answered 204 with it unset.
    let commands = fake.commands.lock().unwrap().len();
    let misspelt = call(&fake, &config(), put(r#"{"n":3,"nn":2,"max_sibling":5}"#)).await;
    assert_eq!(misspelt.status, StatusCode::BAD_REQUEST);
    let message = misspelt.error().error;
    assert!(
        message.contains("\"nn\"") && message.contains("\"max_sibling\""),
        "{message}"
    );
    assert!(
        message.contains("max_siblings"),
        "names what is known: {message}"
    );
    assert_eq!(fake.commands.lock().unwrap().len(), commands, "nothing set");
    // What GET answers can be sent back as it is (its `bucket` is ignored).
    let own = get(&fake, "/buckets/lww-bucket/props").await.body;
    assert_eq!(
        call(&fake, &config(), put(std::str::from_utf8(&own).unwrap()))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let core_message = call(
        &fake,
        &config(),
        put(r#"{"n":9,"r":"one","w":"all","dw":"1","conflict_mode":"lww"}"#),
    )
    .await;
    assert!(core_message.error().error.contains("out of range"));
    let post = call(
        &fake,
        &config(),
        request(Method::POST, "/buckets/b/props", b""),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn ui_files_are_served_without_path_traversal() {
    let fake = fake_node(canned(), test_status());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ui");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), "<html>ringkv</html>").unwrap();
    std::fs::write(root.join("assets/app.wasm"), b"\0asm").unwrap();
    std::fs::write(dir.path().join("secret"), "secret").unwrap();
    let config = HttpConfig {
        ui_dir: Some(root),
        ..config()
    };
    let get = |uri: &str| call(&fake, &config, request(Method::GET, uri, b""));
    for uri in ["/ui", "/ui/", "/ui/index.html"] {
        let answer = get(uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}");
        assert_eq!(&answer.body[..], b"<html>ringkv</html>");
        assert!(answer
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
    }
    let wasm = get("/ui/assets/app.wasm").await;
    assert_eq!(wasm.status, StatusCode::OK);
    assert_eq!(wasm.header("content-type"), Some("application/wasm"));
    assert_eq!(&wasm.body[..], b"\0asm");
    for uri in [
        "/ui/../secret",
        "/ui/%2e%2e/secret",
        "/ui/assets/..%2F..%2Fsecret",
        "/ui/missing.js",
        "/ui/assets",
    ] {
        let answer = get(uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

// ----- through a socket -----

pub(super) struct Server {
    pub(super) address: std::net::SocketAddr,
    pub(super) stop: oneshot::Sender<()>,
    pub(super) done: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub(super) async fn start(fake: &FakeNode, config: HttpConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, fake.handle.clone(), config, async move {
        let _ = stopped.await;
    }));
    Server {
        address,
        stop,
        done,
    }
}

async fn http1_client(
    address: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn get_request(uri: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(uri)
        .header("host", "ringkv")
        .body(Empty::new())
        .unwrap()
}

/// Waits (bounded) until the server no longer accepts connections.
async fn wait_until_closed(address: std::net::SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the listener is still open");
}

#[tokio::test]
async fn keep_alive_then_graceful_shutdown_finishes_the_request_in_flight() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let mut client = http1_client(server.address).await;
    // Two requests on one connection (the client cannot open another).
    for _ in 0..2 {
        let response = client.send_request(get_request("/kv/b/one")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"the value");
    }
    assert_eq!(fake.handle.metrics().http_connections.get(), 1);

    let in_flight = tokio::spawn(client.send_request(get_request("/kv/b/slow")));
    fake.slow_arrived.notified().await;
    server.stop.send(()).unwrap();
    wait_until_closed(server.address).await;
    fake.release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"the value");
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("serve did not return after its connections closed")
        .unwrap()
        .unwrap();
    assert_eq!(fake.handle.metrics().http_connections.get(), 0);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri(format!("http://{}/kv/b/many", server.address))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::MULTIPLE_CHOICES);
    assert_eq!(response.version(), http::Version::HTTP_2);
    drop(client);
    server.stop.send(()).unwrap();
    server.done.await.unwrap().unwrap();
}

/// hyper leaves the body out of an HTTP/1 answer to HEAD by itself, but not of an HTTP/2 one: on
/// both, a HEAD has the GET's length and no body, and the connection goes on serving.
#[tokio::test]
async fn head_has_no_body_on_the_wire_over_http1_and_http2() {
    let fake = fake_node(canned(), test_status());
    let server = start(&fake, config()).await;
    let head = |uri: &str| {
        Request::builder()
            .method(Method::HEAD)
            .uri(uri)
            .header("host", "ringkv")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let mut client = http1_client(server.address).await;
    for _ in 0..2 {
        let response = client.send_request(head("/kv/b/one")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-length"], "9");
        assert!(response.headers().contains_key(api::HEADER_CONTEXT));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
        // The next answer on the connection is read from where the HEAD's ended.
        let response = client.send_request(get_request("/kv/b/one")).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"the value");
    }

    let stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let (mut client, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = client
        .send_request(head(&format!("http://{}/kv/b/one", server.address)))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-length"], "9");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "{body:?}");
    drop(client);
    server.stop.send(()).unwrap();
    server.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let fake = fake_node(canned(), test_status());
    let server = start(
        &fake,
        HttpConfig {
            max_connections: 1,
            ..config()
        },
    )
    .await;
    let mut first = http1_client(server.address).await;
    let response = first.send_request(get_request("/health")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // The second connection is accepted by the kernel, then closed by the server.
    let mut second = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    second
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .ok();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buffer))
        .await
        .expect("the refused connection stayed open");
    assert!(read.is_err() || buffer.is_empty());
    assert_eq!(fake.handle.metrics().http_connections_refused.get(), 1);
    // The first connection still works.
    let response = first.send_request(get_request("/health")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop.send(()).unwrap();
    server.done.await.unwrap().unwrap();
}

#[tokio::test]
async fn slow_headers_close_the_connection() {
    let fake = fake_node(canned(), test_status());
    let server = start(
        &fake,
        HttpConfig {
            header_read_timeout: Duration::from_millis(100),
            ..config()
        },
    )
    .await;
    // A partial HTTP/1 head (hyper's timeout), a partial HTTP/2 preface and silence (ours).
    for partial in [
        &b"GET /health HTTP/1.1\r\nhost: x\r\n"[..],
        b"PRI * HT",
        b"",
    ] {
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        stream.write_all(partial).await.unwrap();
        let mut buffer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
        assert!(closed.is_ok(), "connection kept open after {partial:?}");
    }
    server.stop.send(()).unwrap();
    server.done.await.unwrap().unwrap();
    assert_eq!(fake.handle.metrics().http_connections.get(), 0);
}

/// An HTTP/1 client over TLS, trusting `ca`.
async fn https_client(
    address: std::net::SocketAddr,
    ca: &Path,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let mut tls = crate::tls::client_config(Some(ca)).unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            stream,
        )
        .await
        .unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn tls_failures(fake: &FakeNode, reason: &str) -> u64 {
    fake.handle
        .metrics()
        .http_tls_handshakes_failed
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: reason.to_string(),
        })
        .get()
}

#[tokio::test]
async fn https_is_served_and_plain_http_to_it_fails_cleanly() {
    let files = crate::tls::test_certs::generate();
    let fake = fake_node(canned(), test_status());
    let tls = crate::tls::http_server_config(&files.cert, &files.key).unwrap();
    let server = start(
        &fake,
        HttpConfig {
            tls: Some(tls),
            ..config()
        },
    )
    .await;
    let mut client = https_client(server.address, &files.ca).await;
    let response = client.send_request(get_request("/kv/b/one")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"the value");

    // Plain HTTP on the TLS port: closed at once (with a TLS alert), never answered.
    let mut plain = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "plain HTTP to the TLS port hung");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    assert_eq!(tls_failures(&fake, "error"), 1);

    // A client that does not trust the certificate gives up; the server goes on.
    let other = crate::tls::test_certs::generate();
    let stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    let untrusted = tokio_rustls::TlsConnector::from(Arc::new(
        crate::tls::client_config(Some(&other.ca)).unwrap(),
    ))
    .connect(
        rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
        stream,
    )
    .await;
    assert!(untrusted.is_err());

    let response = client.send_request(get_request("/health")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut second = https_client(server.address, &files.ca).await;
    let response = second.send_request(get_request("/health")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop((client, second));
    server.stop.send(()).unwrap();
    server.done.await.unwrap().unwrap();
    assert_eq!(fake.handle.metrics().http_connections.get(), 0);
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_by_the_header_timeout() {
    let files = crate::tls::test_certs::generate();
    let fake = fake_node(canned(), test_status());
    let server = start(
        &fake,
        HttpConfig {
            tls: Some(crate::tls::http_server_config(&files.cert, &files.key).unwrap()),
            header_read_timeout: Duration::from_millis(200),
            max_connections: 2,
            ..config()
        },
    )
    .await;
    // Silence, then a TLS record header announcing a ClientHello that never comes.
    for partial in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00]] {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .unwrap();
        stream.write_all(partial).await.unwrap();
        let mut buffer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
        assert!(closed.is_ok(), "connection kept open after {partial:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
    assert_eq!(tls_failures(&fake, "timeout"), 2);
    // The slots were given back: a real client is served.
    let mut client = https_client(server.address, &files.ca).await;
    let response = client.send_request(get_request("/health")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(client);
    server.stop.send(()).unwrap();
    server.done.await.unwrap().unwrap();
}

#[test]
fn serve_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (sender, _) = mpsc::channel(1);
    let node = NodeHandle {
        requests: sender,
        metrics: Arc::new(Metrics::new()),
        node_id: NodeId::new("a"),
        draining: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let future = serve(
        listener,
        node,
        HttpConfig::default(),
        std::future::pending(),
    );
    assert_send(&future);
}

#[tokio::test]
async fn a_node_backup_streams_a_whole_backup_file() {
    let fake = fake_node(canned(), test_status());
    let answer = get(&fake, "/admin/backup").await;
    assert_eq!(answer.status, StatusCode::OK);
    let mut reader = crate::backup::BackupReader::open(&answer.body[..]).expect("a backup");
    assert_eq!(reader.header().cluster, "test-cluster");
    assert_eq!(reader.header().nodes, vec!["a".to_string()]);
    assert_eq!(reader.header().mode, crate::backup::BackupMode::Node);
    let mut keys = Vec::new();
    while let Some(record) = reader.next_record().expect("whole records") {
        assert_eq!(record.record, super::snapshot_record(&record.key));
        keys.push(record.key);
    }
    assert_eq!(keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    let post = call(
        &fake,
        &config(),
        request(Method::POST, "/admin/backup", b""),
    )
    .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    let restore = call(
        &fake,
        &config(),
        request(Method::PUT, "/admin/restore/b/k?colour=blue", b"x"),
    )
    .await;
    assert_eq!(restore.status, StatusCode::BAD_REQUEST);
}
