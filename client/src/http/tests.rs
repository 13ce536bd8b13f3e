use super::error::describe_unavailable;
use super::request::kv_path;
use super::test_server::{answer, spawn};
use super::*;
use ringkv_core::bucket::QuorumValue;
use ringkv_core::ring::{key_position, partition_of};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

fn encode_multipart(boundary: &str, values: &[&[u8]]) -> Vec<u8> {
    let mut body = b"preamble to ignore\r\n".to_vec();
    for value in values {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\nepilogue").as_bytes());
    body
}

#[test]
fn multipart_round_trip_with_binary_values() {
    let values: Vec<&[u8]> = vec![
        b"plain",
        b"",
        b"\r\n--not-the-boundary\r\n\r\n--",
        &[0, 255, 13, 10, 45, 45, 13, 10, 13],
        b"--sep-lookalike--",
    ];
    let body = Bytes::from(encode_multipart("sep-1234", &values));
    let parsed = parse_multipart(&body, "sep-1234").unwrap();
    assert_eq!(
        parsed,
        values
            .iter()
            .map(|v| Bytes::copy_from_slice(v))
            .collect::<Vec<_>>()
    );
}

#[test]
fn multipart_without_preamble_or_part_headers_and_with_padding() {
    let body =
        Bytes::from_static(b"--b  \r\n\r\none\r\n--b\r\nX-A: 1\r\nX-B: 2\r\n\r\ntwo\r\n--b--");
    let parsed = parse_multipart(&body, "b").unwrap();
    assert_eq!(
        parsed,
        vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
}

#[test]
fn malformed_multipart_is_a_decode_error() {
    let cases: &[&[u8]] = &[
        b"",
        b"no boundary at all",
        b"--b\r\nContent-Type: x\r\n\r\nvalue without end",
        b"--b\r\nheaders never end\r\n",
        b"--bX\r\n\r\nvalue\r\n--b--",
        b"--b",
    ];
    for case in cases {
        let result = parse_multipart(&Bytes::copy_from_slice(case), "b");
        assert!(
            matches!(result, Err(ClientError::Decode(_))),
            "{case:?} gave {result:?}"
        );
    }
}

#[test]
fn boundary_from_content_type() {
    assert_eq!(
        multipart_boundary("multipart/mixed; boundary=abc").unwrap(),
        "abc"
    );
    assert_eq!(
        multipart_boundary("Multipart/Mixed; charset=x; BOUNDARY=\"a b:c\"").unwrap(),
        "a b:c"
    );
    assert!(multipart_boundary("application/json").is_err());
    assert!(multipart_boundary("multipart/mixed").is_err());
    assert!(multipart_boundary("multipart/mixed; boundary=\"open").is_err());
    assert!(multipart_boundary("multipart/mixed; boundary=").is_err());
}

#[test]
fn binary_keys_are_percent_encoded() {
    assert_eq!(encode_segment(b"alice"), "alice");
    assert_eq!(encode_segment(b"a b/c?d%e"), "a%20b%2Fc%3Fd%25e");
    assert_eq!(
        encode_segment(&[0, 255, b'-', b'.', b'_', b'~']),
        "%00%FF-._~"
    );
    assert_eq!(encode_segment(b".."), "%2E%2E");
    assert_eq!(encode_segment(b"."), "%2E");
    assert_eq!(encode_segment(b"a.b"), "a.b");
    assert_eq!(encode_segment("é".as_bytes()), "%C3%A9");
    let options = Options {
        r: Some(QuorumValue::One),
        dw: Some(QuorumValue::Count(2)),
        timeout_ms: Some(250),
        ..Options::default()
    };
    assert_eq!(
        kv_path(b"b", b"k/1", &options),
        "/kv/b/k%2F1?r=one&dw=2&timeout_ms=250"
    );
    assert_eq!(kv_path(b"", b"", &Options::default()), "/kv//");
    // Every byte value decodes back.
    let all: Vec<u8> = (0..=255).collect();
    let encoded = encode_segment(&all);
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(&encoded).collect();
    assert_eq!(decoded, all);
    assert!(format!("/kv/{encoded}/{encoded}")
        .parse::<http::uri::PathAndQuery>()
        .is_ok());
}

#[test]
fn an_unusable_ca_file_is_a_tls_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "not PEM").unwrap();
    for ca_file in [garbage, dir.path().join("absent.pem")] {
        let result = Client::new(ClientConfig {
            nodes: vec!["https://127.0.0.1:1".into()],
            ca_file: Some(ca_file),
            ..ClientConfig::default()
        });
        assert!(matches!(result, Err(ClientError::Tls(_))), "{result:?}");
    }
}

#[test]
fn node_urls_are_normalized() {
    assert_eq!(
        normalize_node_url("127.0.0.1:8087").unwrap(),
        "http://127.0.0.1:8087"
    );
    assert_eq!(normalize_node_url(" http://h:1/ ").unwrap(), "http://h:1");
    assert_eq!(normalize_node_url("https://h:1/").unwrap(), "https://h:1");
    assert!(normalize_node_url("ftp://h:1").is_err());
    assert!(normalize_node_url("http://h:1/path").is_err());
    // Members of an HTTPS cluster are reached over HTTPS.
    assert_eq!(
        member_url("10.0.0.5:8087", "https://10.0.0.1:8087").unwrap(),
        "https://10.0.0.5:8087"
    );
    assert_eq!(
        member_url("0.0.0.0:9000", "https://db1:8087").unwrap(),
        "https://db1:9000"
    );
    assert!(normalize_node_url("").is_err());
    assert_eq!(
        member_url("0.0.0.0:9000", "http://10.1.2.3:8087").unwrap(),
        "http://10.1.2.3:9000"
    );
    assert_eq!(
        member_url("[::]:9000", "http://[::1]:8087").unwrap(),
        "http://[::1]:9000"
    );
    assert_eq!(
        member_url("10.0.0.5:8087", "http://x:1").unwrap(),
        "http://10.0.0.5:8087"
    );
    assert_eq!(member_url("", "http://x:1"), None);
}

fn member(id: &str, status: &str, alive: bool, port: u16) -> api::MemberDoc {
    api::MemberDoc {
        id: id.to_owned(),
        status: status.to_owned(),
        alive,
        zone: None,
        capacity: 1,
        peer_addr: format!("127.0.0.1:{}", port + 1000),
        http_addr: format!("127.0.0.1:{port}"),
        partitions: 0,
        handoff_partitions: Some(0),
        drained: false,
    }
}

/// A 4-partition ring whose partition `p` has the replicas `lists[p]`.
fn ring_doc(members: Vec<api::MemberDoc>, lists: [&[&str]; 4]) -> api::RingDoc {
    api::RingDoc {
        cluster: "test".into(),
        node: "a".into(),
        version: 1,
        partition_count: 4,
        target_n: 3,
        strategy: "partitions".into(),
        members,
        partitions: lists
            .iter()
            .enumerate()
            .rev() // order in the document must not matter
            .map(|(id, replicas)| api::PartitionDoc {
                id: id as u32,
                start: "0".into(),
                replicas: replicas.iter().map(|r| r.to_string()).collect(),
                moving_to: Vec::new(),
            })
            .collect(),
    }
}

/// A key in each partition of a 4-partition ring.
fn key_in_partition(partition: u32) -> Vec<u8> {
    (0u32..)
        .map(|i| format!("key-{i}").into_bytes())
        .find(|key| partition_of(key_position(b"b", key), 4).0 == partition)
        .unwrap()
}

#[test]
fn routing_prefers_the_owner_and_skips_dead_members() {
    let members = vec![
        member("a", "up", true, 1),
        member("b", "up", false, 2),
        member("c", "leaving", true, 3),
        member("d", "down", true, 4),
        member("e", "removed", false, 5),
    ];
    let doc = ring_doc(
        members,
        [
            &["a", "b", "c"],
            &["b", "c", "a"],
            &["d", "a", "c"],
            &["x", "b", "d"],
        ],
    );
    let table = RoutingTable::from_doc(&doc, "http://127.0.0.1:1").unwrap();
    let route = |p| -> Vec<String> {
        table
            .replicas_for(b"b", &key_in_partition(p))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(route(0), ["http://127.0.0.1:1", "http://127.0.0.1:3"]);
    assert_eq!(route(1), ["http://127.0.0.1:3", "http://127.0.0.1:1"]);
    assert_eq!(route(2), ["http://127.0.0.1:1", "http://127.0.0.1:3"]);
    assert!(route(3).is_empty());
    assert_eq!(
        table.members(),
        ["http://127.0.0.1:1", "http://127.0.0.1:3"]
    );

    // No usable replica: the configured nodes, then other members.
    let configured = vec!["http://n1:1".to_owned(), "http://n2:1".to_owned()];
    let routed: Vec<&str> = table.replicas_for(b"b", &key_in_partition(3)).collect();
    assert_eq!(
        plan_targets(&routed, &configured, 1, table.members(), |_| false),
        [
            "http://n2:1",
            "http://n1:1",
            "http://127.0.0.1:1",
            "http://127.0.0.1:3"
        ]
    );
    // Replicas first, no duplicates, suspects last.
    let routed: Vec<&str> = table.replicas_for(b"b", &key_in_partition(0)).collect();
    assert_eq!(
        plan_targets(&routed, &configured, 0, table.members(), |url| url
            == "http://127.0.0.1:1"),
        [
            "http://127.0.0.1:3",
            "http://n1:1",
            "http://n2:1",
            "http://127.0.0.1:1"
        ]
    );
}

fn zoned(id: &str, zone: Option<&str>, port: u16) -> api::MemberDoc {
    api::MemberDoc {
        zone: zone.map(str::to_owned),
        ..member(id, "up", true, port)
    }
}

#[test]
fn prefer_zone_keeps_preference_order_within_each_group() {
    let replicas = [
        ("http://a1", Some("a")),
        ("http://b1", Some("b")),
        ("http://none", None),
        ("http://b2", Some("b")),
        ("http://a2", Some("a")),
    ];
    assert_eq!(
        prefer_zone(replicas, Some("b")),
        [
            "http://b1",
            "http://b2",
            "http://a1",
            "http://none",
            "http://a2"
        ]
    );
    assert_eq!(
        prefer_zone(replicas, Some("a")),
        [
            "http://a1",
            "http://a2",
            "http://b1",
            "http://none",
            "http://b2"
        ]
    );
    // No zone, or a zone no replica is in: preference order. A member without a zone is not
    // in the client's zone, whatever it is.
    let unchanged = [
        "http://a1",
        "http://b1",
        "http://none",
        "http://b2",
        "http://a2",
    ];
    assert_eq!(prefer_zone(replicas, None), unchanged);
    assert_eq!(prefer_zone(replicas, Some("c")), unchanged);
    assert!(prefer_zone([], Some("a")).is_empty());
}

#[test]
fn routing_by_zone_tries_the_owners_in_the_zone_first() {
    let members = vec![
        zoned("a", Some("za"), 1),
        zoned("b", Some("zb"), 2),
        zoned("c", Some("zc"), 3),
        zoned("d", Some("zb"), 4),
        zoned("e", None, 5),
        // In zone zb, but its failure detector does not hear from it: never routed to.
        api::MemberDoc {
            alive: false,
            ..zoned("f", Some("zb"), 6)
        },
    ];
    let doc = ring_doc(
        members,
        [
            &["a", "b", "c"],
            &["c", "a", "d"],
            &["b", "c", "d"],
            &["e", "f", "a"],
        ],
    );
    let table = RoutingTable::from_doc(&doc, "http://127.0.0.1:1").unwrap();
    let route = |p, zone| table.replicas_for_zone(b"b", &key_in_partition(p), zone);
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    assert_eq!(route(0, Some("zb")), [url(2), url(1), url(3)]);
    assert_eq!(route(1, Some("zb")), [url(4), url(3), url(1)]);
    assert_eq!(route(2, Some("zb")), [url(2), url(4), url(3)]);
    assert_eq!(route(3, Some("zb")), [url(5), url(1)]);
    assert_eq!(route(3, Some("za")), [url(1), url(5)]);
    assert_eq!(route(1, Some("zc")), [url(3), url(1), url(4)]);
    // Without a zone: the preference order of `replicas_for`.
    for p in 0..4 {
        let plain: Vec<&str> = table.replicas_for(b"b", &key_in_partition(p)).collect();
        assert_eq!(route(p, None), plain);
        assert_eq!(route(p, Some("nowhere")), plain);
    }
    // The zone's owners come before the configured nodes and the other members, as replicas do.
    let configured = vec!["http://n1:1".to_owned()];
    let routed = route(0, Some("zc"));
    assert_eq!(
        plan_targets(&routed, &configured, 0, table.members(), |_| false),
        [url(3), url(1), url(2), "http://n1:1".into(), url(4), url(5)]
    );
}

#[tokio::test]
async fn a_client_with_a_zone_routes_its_first_request_to_the_owner_in_its_zone() {
    let (near, near_log) = spawn(|_| answer(404, &[], b"")).await;
    let (far, far_log) = spawn(|_| answer(404, &[], b"")).await;
    let address = |url: &str| url.trim_start_matches("http://").to_owned();
    let mut members = vec![zoned("far", Some("a"), 1), zoned("near", Some("b"), 2)];
    members[0].http_addr = address(&far);
    members[1].http_addr = address(&near);
    let lists: [&[&str]; 4] = [&["far", "near"]; 4];
    let ring = serde_json::to_vec(&ring_doc(members, lists)).unwrap();
    // The configured node only serves the ring: it is in neither zone and owns nothing.
    let (seed, seed_log) = spawn(move |request| match request.uri.as_str() {
        "/ring" => answer(200, &[("content-type", "application/json")], &ring),
        _ => answer(418, &[], b""),
    })
    .await;
    let zoned_client = |zone: Option<&str>| {
        Client::new(ClientConfig {
            nodes: vec![seed.clone()],
            zone: zone.map(str::to_owned),
            ..ClientConfig::default()
        })
        .unwrap()
    };
    let count = |log: &test_server::Log| log.lock().unwrap().len();

    let client = zoned_client(Some("b"));
    assert_eq!(client.zone(), Some("b"));
    for i in 0..5 {
        let read = client
            .get(b"b", format!("k{i}").as_bytes(), &Options::default())
            .await
            .unwrap();
        assert_eq!(read.endpoint, near);
    }
    assert_eq!((count(&near_log), count(&far_log)), (5, 0));
    assert_eq!(count(&seed_log), 1, "one ring read");

    // Without a zone (or with an empty one) the first request does not wait for the ring.
    for zone in [None, Some("")] {
        let client = zoned_client(zone);
        assert_eq!(client.zone(), None);
        let read = client.get(b"b", b"k", &Options::default()).await;
        assert!(read.is_err(), "the seed answers 418 to keys");
    }
}

#[test]
fn inconsistent_ring_documents_are_refused() {
    let members = vec![member("a", "up", true, 1)];
    let mut doc = ring_doc(members, [&["a"], &["a"], &["a"], &["a"]]);
    doc.partition_count = 3;
    assert!(RoutingTable::from_doc(&doc, "http://h:1").is_err());
    doc.partition_count = 8;
    assert!(RoutingTable::from_doc(&doc, "http://h:1").is_err());
    doc.partition_count = 4;
    doc.partitions[0].id = 2;
    doc.partitions[1].id = 2;
    assert!(RoutingTable::from_doc(&doc, "http://h:1").is_err());
    doc.partitions[1].id = 9;
    assert!(RoutingTable::from_doc(&doc, "http://h:1").is_err());
}

#[test]
fn retry_policy() {
    use FailureKind::*;
    use Idempotence::*;
    assert_eq!(
        retry_decision(AtMostOnce, Connect),
        RetryDecision::TryNextNode
    );
    assert_eq!(
        retry_decision(AtMostOnce, Timeout),
        RetryDecision::OutcomeUnknown
    );
    assert_eq!(
        retry_decision(AtMostOnce, Broken),
        RetryDecision::OutcomeUnknown
    );
    assert_eq!(
        retry_decision(Idempotent, Connect),
        RetryDecision::TryNextNode
    );
    assert_eq!(
        retry_decision(Idempotent, Timeout),
        RetryDecision::TryNextNode
    );
    assert_eq!(
        retry_decision(Idempotent, Broken),
        RetryDecision::TryNextNode
    );
}

#[test]
fn refresh_timing() {
    let now = Instant::now();
    let interval = Duration::from_secs(10);
    assert!(RefreshState::default().due(now, interval));
    assert!(!RefreshState::default().due(now, Duration::ZERO));
    let recent = RefreshState {
        in_progress: false,
        last_started: Some(now),
        stale: false,
    };
    assert!(!recent.due(now + Duration::from_secs(1), interval));
    assert!(recent.due(now + interval, interval));
    let stale = RefreshState {
        stale: true,
        ..recent
    };
    assert!(!stale.due(now + Duration::from_millis(10), interval));
    assert!(stale.due(now + Duration::from_secs(1), interval));
    let busy = RefreshState {
        in_progress: true,
        ..stale
    };
    assert!(!busy.due(now + interval, interval));
}

#[test]
fn a_request_abandoned_at_shutdown_has_an_unknown_outcome() {
    let body = Bytes::from(
        serde_json::to_vec(&api::ErrorBody {
            error: "shut down".into(),
            kind: "outcome_unknown".into(),
            quorum: None,
            needed: None,
            answered: Vec::new(),
        })
        .unwrap(),
    );
    let error = error_from_status(StatusCode::SERVICE_UNAVAILABLE, &body);
    assert!(matches!(error, ClientError::OutcomeUnknown(_)), "{error:?}");
}

#[tokio::test]
async fn values_and_keys_over_the_limits_are_refused_before_sending() {
    // Nothing listens here: a refusal that reached the network would be a connect error.
    let client = client(vec!["http://127.0.0.1:9".into()]);
    let error = client
        .put(
            b"b",
            b"k",
            None,
            Bytes::from(vec![0; 1025]),
            &Options::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::TooLarge(_)), "{error:?}");
    let key = vec![0xffu8; MAX_PATH_BYTES / 3 + 1];
    let error = client
        .get(b"b", &key, &Options::default())
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::TooLarge(_)), "{error:?}");
}

fn client(nodes: Vec<String>) -> Client {
    Client::new(ClientConfig {
        nodes,
        request_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(200),
        ring_refresh: Duration::ZERO,
        max_idle_per_host: 4,
        max_value_bytes: 1024,
        ca_file: None,
        zone: None,
    })
    .unwrap()
}

/// A port nothing listens on.
async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

#[tokio::test]
async fn decodes_canned_answers() {
    let multipart = encode_multipart("xyz", &[b"v1\r\n--", b"v2"]);
    let (url, log) = spawn(move |request| match request.uri.as_str() {
        "/kv/b/one" => answer(
            200,
            &[
                ("x-ringkv-context", "Y3R4"),
                ("x-ringkv-replicas", "n1, n2"),
                ("x-ringkv-node", "n1"),
                ("x-ringkv-read-your-writes", "false"),
            ],
            b"\x00value\r\n",
        ),
        "/kv/b/two?r=all" => answer(
            300,
            &[
                ("content-type", "multipart/mixed; boundary=xyz"),
                ("x-ringkv-siblings", "2"),
                ("x-ringkv-context", "c2"),
                ("x-ringkv-fallbacks", "n4"),
            ],
            &multipart,
        ),
        "/kv/b/gone" => answer(404, &[("x-ringkv-context", "tomb")], b""),
        "/kv/b/quorum" => answer(
            503,
            &[("content-type", "application/json")],
            br#"{"error":"write quorum not met","kind":"unavailable","quorum":"write","needed":2,"answered":["n1"]}"#,
        ),
        "/kv/b/big" => answer(413, &[], br#"{"error":"value too large","kind":"too_large"}"#),
        "/kv/b/bad" => answer(400, &[], b"not json"),
        "/kv/b/w?w=all&dw=one" => answer(
            204,
            &[
                ("x-ringkv-context", "new"),
                ("x-ringkv-replicas", "n1,n2,n3"),
                ("x-ringkv-durable", "n1"),
                ("x-ringkv-fallbacks", ""),
            ],
            b"",
        ),
        "/cluster" => answer(500, &[], br#"{"error":"boom","kind":"failed"}"#),
        _ => answer(418, &[], b""),
    })
    .await;
    let client = client(vec![url.clone()]);
    let none = Options::default();

    let one = client.get(b"b", b"one", &none).await.unwrap();
    assert_eq!(one.values, [Bytes::from_static(b"\x00value\r\n")]);
    assert_eq!(one.context.as_deref(), Some("Y3R4"));
    assert_eq!(one.replicas, ["n1", "n2"]);
    assert_eq!(one.node.as_deref(), Some("n1"));
    assert!(!one.read_your_writes);
    assert_eq!(one.endpoint, url);

    let all = Options {
        r: Some(QuorumValue::All),
        ..Options::default()
    };
    let two = client.get(b"b", b"two", &all).await.unwrap();
    assert_eq!(
        two.values,
        [Bytes::from_static(b"v1\r\n--"), Bytes::from_static(b"v2")]
    );
    assert_eq!(two.fallbacks, ["n4"]);
    assert!(two.read_your_writes);

    let gone = client.get(b"b", b"gone", &none).await.unwrap();
    assert!(!gone.found());
    assert_eq!(gone.context.as_deref(), Some("tomb"));

    let quorum = client
        .put(b"b", b"quorum", None, Bytes::from_static(b"v"), &none)
        .await
        .unwrap_err();
    assert_eq!(
        quorum,
        ClientError::Unavailable {
            message: "write quorum not met".into(),
            quorum: Some("write".into()),
            needed: Some(2),
            answered: vec!["n1".into()],
        }
    );
    assert_eq!(
        quorum.to_string(),
        "write quorum not met (write quorum, needed 2, answered 1, answered by n1)"
    );
    let server_style = describe_unavailable(
        "write quorum not reached: 2 needed, 1 answered in time",
        Some("write"),
        Some(2),
        &["n1".to_owned()],
    );
    assert_eq!(
        server_style,
        "write quorum not reached: 2 needed, 1 answered in time (answered by n1)"
    );

    let big = client
        .put(b"b", b"big", None, Bytes::from_static(b"v"), &none)
        .await;
    assert_eq!(
        big.unwrap_err(),
        ClientError::TooLarge("value too large".into())
    );
    let bad = client.delete(b"b", b"bad", None, &none).await;
    assert_eq!(bad.unwrap_err(), ClientError::BadRequest("not json".into()));

    let options = Options {
        w: Some(QuorumValue::All),
        dw: Some(QuorumValue::One),
        ..Options::default()
    };
    let written = client
        .put(
            b"b",
            b"w",
            Some("ctx"),
            Bytes::from_static(b"payload"),
            &options,
        )
        .await
        .unwrap();
    assert_eq!(written.context.as_deref(), Some("new"));
    assert_eq!(written.replicas, ["n1", "n2", "n3"]);
    assert_eq!(written.durable, ["n1"]);
    assert!(written.fallbacks.is_empty());

    let status = client.cluster_status(None).await.unwrap_err();
    assert!(
        matches!(status, ClientError::Server { status: 500, ref kind, .. } if kind == "failed")
    );

    let log = log.lock().unwrap();
    let put = log
        .iter()
        .find(|r| r.uri == "/kv/b/w?w=all&dw=one")
        .unwrap();
    assert_eq!(put.method, Method::PUT);
    assert_eq!(put.body, Bytes::from_static(b"payload"));
    assert_eq!(put.headers.get("x-ringkv-context").unwrap(), "ctx");
}

#[tokio::test]
async fn malformed_sibling_answers_are_decode_errors() {
    let (url, _) = spawn(|request| match request.uri.as_str() {
        "/kv/b/count" => answer(
            300,
            &[
                ("content-type", "multipart/mixed; boundary=q"),
                ("x-ringkv-siblings", "3"),
            ],
            b"--q\r\n\r\na\r\n--q\r\n\r\nb\r\n--q--",
        ),
        "/kv/b/type" => answer(300, &[("content-type", "text/plain")], b"x"),
        _ => answer(
            300,
            &[("content-type", "multipart/mixed; boundary=q")],
            b"--q\r\n\r\nx",
        ),
    })
    .await;
    let client = client(vec![url]);
    for key in [&b"count"[..], b"type", b"cut"] {
        let result = client.get(b"b", key, &Options::default()).await;
        assert!(matches!(result, Err(ClientError::Decode(_))), "{result:?}");
    }
}

#[tokio::test]
async fn binary_key_reaches_the_server_encoded() {
    let (url, log) = spawn(|_| answer(404, &[], b"")).await;
    let client = client(vec![url]);
    let key = [0u8, b'/', b' ', 0xff];
    client
        .get(&[b'x', 0x80], &key, &Options::default())
        .await
        .unwrap();
    assert_eq!(log.lock().unwrap()[0].uri, "/kv/x%80/%00%2F%20%FF");
}

#[tokio::test]
async fn writes_retry_only_when_nothing_was_sent() {
    let dead = dead_address().await;
    let (live, log) = spawn(|_| answer(204, &[("x-ringkv-context", "c")], b"")).await;
    let client = client(vec![dead.clone(), live.clone()]);
    // The rotation starts at the dead node first: connection refused, so the put is sent to
    // the live node; then the other order.
    for _ in 0..2 {
        let result = client
            .put(
                b"b",
                b"k",
                None,
                Bytes::from_static(b"v"),
                &Options::default(),
            )
            .await
            .unwrap();
        assert_eq!(result.endpoint, live);
    }
    assert_eq!(log.lock().unwrap().len(), 2);

    let only_dead = self::client(vec![dead]);
    let refused = only_dead
        .put(
            b"b",
            b"k",
            None,
            Bytes::from_static(b"v"),
            &Options::default(),
        )
        .await;
    assert!(
        matches!(refused, Err(ClientError::Connect(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_write_refused_for_a_full_disk_goes_to_the_next_node() {
    let full_body = br#"{"error":"the disk of this node is full","kind":"storage_full"}"#;
    let (full, full_log) = spawn(move |_| answer(507, &[], full_body)).await;
    let (live, log) = spawn(|_| answer(204, &[("x-ringkv-context", "c")], b"")).await;
    let client = client(vec![full.clone(), live.clone()]);
    for _ in 0..2 {
        let written = client
            .put(
                b"b",
                b"k",
                None,
                Bytes::from_static(b"v"),
                &Options::default(),
            )
            .await
            .unwrap();
        assert_eq!(written.endpoint, live);
    }
    assert_eq!(log.lock().unwrap().len(), 2);
    assert!(!full_log.lock().unwrap().is_empty());
    let only_full = self::client(vec![full]);
    let refused = only_full
        .put(
            b"b",
            b"k",
            None,
            Bytes::from_static(b"v"),
            &Options::default(),
        )
        .await;
    assert!(
        matches!(&refused, Err(ClientError::StorageFull(message)) if message.contains("full")),
        "{refused:?}"
    );
}

/// A server that accepts and reads requests but never answers (`reset`: closes instead).
async fn silent_server(reset: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            if !reset {
                held.push(stream);
            }
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn writes_without_an_answer_are_outcome_unknown_and_not_retried() {
    for reset in [false, true] {
        let silent = silent_server(reset).await;
        let (live, log) = spawn(|_| answer(200, &[("x-ringkv-context", "c")], b"v")).await;
        let client = client(vec![silent.clone(), live.clone()]);
        // The rotation alternates the first node: two puts and two deletes start at the
        // silent node and must not be re-sent to the live one.
        let mut unknown = 0;
        for _ in 0..2 {
            let put = client
                .put(
                    b"b",
                    b"k",
                    None,
                    Bytes::from_static(b"v"),
                    &Options::default(),
                )
                .await;
            let delete = client.delete(b"b", b"k", None, &Options::default()).await;
            for result in [put, delete] {
                match result {
                    Ok(done) => assert_eq!(done.endpoint, live),
                    Err(ClientError::OutcomeUnknown(detail)) => {
                        assert!(detail.contains(&silent), "{detail}");
                        unknown += 1;
                    }
                    Err(other) => panic!("reset={reset}: unexpected {other:?}"),
                }
            }
        }
        assert_eq!(unknown, 2, "reset={reset}");
        assert_eq!(log.lock().unwrap().len(), 2, "reset={reset}");
        // Reads are retried on the live node.
        for _ in 0..2 {
            let read = client.get(b"b", b"k", &Options::default()).await.unwrap();
            assert_eq!(read.endpoint, live);
        }
    }
}

#[tokio::test]
async fn routes_to_the_owner_after_reading_the_ring() {
    let (owner, owner_log) = spawn(|_| answer(404, &[], b"")).await;
    let owner_address = owner.trim_start_matches("http://").to_owned();
    let (entry, entry_log) = spawn(move |request| {
        if request.uri == "/ring" {
            let mut owner_member = member("owner", "up", true, 1);
            owner_member.http_addr = owner_address.clone();
            let doc = ring_doc(
                vec![owner_member, member("entry", "up", true, 2)],
                [&["owner"], &["owner"], &["owner"], &["owner"]],
            );
            answer(200, &[], &serde_json::to_vec(&doc).unwrap())
        } else {
            answer(404, &[], b"")
        }
    })
    .await;
    let client = Client::new(ClientConfig {
        nodes: vec![entry.clone()],
        ring_refresh: Duration::from_secs(3600),
        ..ClientConfig::default()
    })
    .unwrap();
    // No ring yet: the first read goes to the configured node and starts a ring read in
    // the background.
    let first = client.get(b"b", b"k", &Options::default()).await.unwrap();
    assert_eq!(first.endpoint, entry);
    for _ in 0..500 {
        if client.table().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let read = client.get(b"b", b"k", &Options::default()).await.unwrap();
    assert_eq!(read.endpoint, owner);
    assert_eq!(owner_log.lock().unwrap().len(), 1);
    let mut entry_uris: Vec<String> = entry_log
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    // The background ring read and the first request race: compare as sets.
    entry_uris.sort();
    assert_eq!(entry_uris, ["/kv/b/k", "/ring"]);

    // An explicit refresh works too, and routing can be turned off.
    client.refresh_ring().await.unwrap();
    let unrouted = Client::new(ClientConfig {
        nodes: vec![entry.clone()],
        ring_refresh: Duration::ZERO,
        ..ClientConfig::default()
    })
    .unwrap();
    unrouted.refresh_ring().await.unwrap();
    let read = unrouted.get(b"b", b"k", &Options::default()).await.unwrap();
    assert_eq!(read.endpoint, entry);
}

#[tokio::test]
async fn health_of_a_node_without_ring_is_a_document() {
    let (url, _) = spawn(|_| {
        answer(
            503,
            &[],
            br#"{"status":"no_ring","node":"n9","alive_members":1,"members":1}"#,
        )
    })
    .await;
    let health = client(vec![url.clone()]).health(&url).await.unwrap();
    assert_eq!(health.status, "no_ring");
    assert_eq!(health.node, "n9");
}
