use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ringkv_core::bucket::{BucketProps, QuorumValue, RequestOptions};
use ringkv_core::error::CommandError;
use ringkv_core::membership::{ClusterView, MemberInfo, MemberStatus};
use ringkv_core::request::{ClientRequest, QuorumKind, Reply};
use ringkv_core::ring::{Member, PartitionId, Ring, RingConfig, Strategy};
use ringkv_core::version::{ActorId, ConflictMode, Content, Context, Dot, Object, VersionVector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Notify};

use super::kv::pick_boundary;
use super::*;
use crate::metrics::{Metrics, Op, Outcome, QuorumLabels, RequestLabels};
use crate::node_loop::{NodeRequest, NodeStatus};

type Answer = Box<dyn Fn(&ClientRequest) -> Result<Reply, NodeError> + Send + Sync>;

/// A node task double: answers client requests with `answer`, records what it was asked,
/// and holds requests for the key `slow` until `release` is notified.
struct FakeNode {
    handle: NodeHandle,
    seen: Arc<Mutex<Vec<ClientRequest>>>,
    commands: Arc<Mutex<Vec<Command>>>,
    slow_arrived: Arc<Notify>,
    release: Arc<Notify>,
}

/// The object a fake node's snapshot holds under `key`: one value, the key itself.
pub(super) fn snapshot_record(key: &[u8]) -> Vec<u8> {
    use ringkv_core::version::{ActorId, ConflictMode, Content, Object, VersionVector};
    let mut object = Object::new();
    object.update(
        &VersionVector::new(),
        &ActorId::new("n1.1.0"),
        Content::Value(key.to_vec()),
        1,
        ConflictMode::Siblings,
    );
    object.encode()
}

fn fake_node(answer: Answer, status: NodeStatus) -> FakeNode {
    let (sender, mut requests) = mpsc::channel::<NodeRequest>(16);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let commands = Arc::new(Mutex::new(Vec::new()));
    let slow_arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let handle = NodeHandle {
        requests: sender,
        metrics: Arc::new(Metrics::new()),
        node_id: status.node.clone(),
        draining: Default::default(),
    };
    let fake = FakeNode {
        handle,
        seen: Arc::clone(&seen),
        commands: Arc::clone(&commands),
        slow_arrived: Arc::clone(&slow_arrived),
        release: Arc::clone(&release),
    };
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request {
                NodeRequest::Client { request, reply } => {
                    seen.lock().unwrap().push(request.clone());
                    let answer = answer(&request);
                    if request.target().1 == b"slow" {
                        let (arrived, release) = (Arc::clone(&slow_arrived), Arc::clone(&release));
                        tokio::spawn(async move {
                            arrived.notify_one();
                            release.notified().await;
                            let _ = reply.send(answer);
                        });
                    } else {
                        let _ = reply.send(answer);
                    }
                }
                NodeRequest::Command { command, reply } => {
                    let result = match &command {
                        Command::SetBucket { props, .. } if props.n == 0 || props.n > 3 => {
                            Err(NodeError::Command(CommandError::NOutOfRange {
                                n: props.n,
                                max: 3,
                            }))
                        }
                        // As the node checks them.
                        Command::SetBucket { props, .. } => props
                            .limits
                            .validate()
                            .map_err(|e| NodeError::Command(CommandError::Limits(e))),
                        _ => Ok(()),
                    };
                    commands.lock().unwrap().push(command);
                    let _ = reply.send(result);
                }
                NodeRequest::Join { seed, reply } => {
                    let result = if seed == "unreachable:1" {
                        Err(NodeError::Join("the seed cannot be reached".into()))
                    } else {
                        Ok(())
                    };
                    let _ = reply.send(result);
                }
                NodeRequest::Status { reply } => {
                    let _ = reply.send(status.clone());
                }
                NodeRequest::Snapshot { mut each, reply } => {
                    // Two records, fed from a blocking thread as the store's walk is.
                    tokio::task::spawn_blocking(move || {
                        let mut records = 0;
                        for key in [&b"k1"[..], b"k2"] {
                            let storage_key = ringkv_core::storage::StorageKey::data(
                                ringkv_core::ring::PartitionId(0),
                                b"b",
                                key,
                            );
                            records += 1;
                            if !each(storage_key, snapshot_record(key)) {
                                break;
                            }
                        }
                        let _ = reply.send(Ok(crate::storage::SnapshotStats {
                            records,
                            ..Default::default()
                        }));
                    });
                }
                NodeRequest::LocalRecord { key, reply, .. } => {
                    let record = match key.as_slice() {
                        b"held" => Ok(Some(b"record bytes".to_vec())),
                        b"unreadable" => Err(NodeError::Storage("disk on fire".into())),
                        _ => Ok(None),
                    };
                    let _ = reply.send(record);
                }
            }
        }
    });
    fake
}

fn test_status() -> NodeStatus {
    let mut view = ClusterView::new("test-cluster").unwrap();
    for (id, zone) in [("a", "z1"), ("b", "z2"), ("c", "z3")] {
        let mut info = MemberInfo::new(id, format!("{id}:7000"), format!("{id}:8000"), 1);
        info.status = MemberStatus::Up;
        info.zone = Some(zone.to_string());
        view.set_member(info).unwrap();
    }
    let mut gone = MemberInfo::new("d", "d:7000", "d:8000", 1);
    gone.status = MemberStatus::Removed;
    view.set_member(gone).unwrap();
    view.set_bucket(
        b"lww-bucket".to_vec(),
        BucketProps {
            n: 2,
            conflict_mode: ConflictMode::LastWriterWins,
            ..BucketProps::default()
        },
    )
    .unwrap();
    let ring = Ring::new(
        RingConfig {
            partitions: 8,
            strategy: Strategy::Partitions,
            target_n: 3,
            ..RingConfig::default()
        },
        vec![
            Member::new("a", 1).in_zone("z1"),
            Member::new("b", 1).in_zone("z2"),
            Member::new("c", 1).in_zone("z3"),
        ],
    )
    .unwrap();
    NodeStatus {
        node: NodeId::new("a"),
        view,
        ring,
        ring_version: Some(7),
        alive: BTreeSet::from([NodeId::new("a"), NodeId::new("b")]),
        hints_pending: 4,
        partitions_moving: vec![(PartitionId(1), vec![NodeId::new("c")])],
        in_flight: 2,
        default_bucket: BucketProps::default(),
        merkle_roots: BTreeMap::from([(PartitionId(3), 0xabc)]),
        storage_open: true,
    }
}

fn some_context() -> Context {
    let mut object = Object::new();
    object.update(
        &VersionVector::new(),
        &ActorId::new("a.1"),
        Content::Value(b"v".to_vec()),
        1,
        ConflictMode::Siblings,
    );
    // Bound, as every context a node answers with is (and as every decoded one is).
    object.context().bound_to(b"b", b"k")
}

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|name| NodeId::new(*name)).collect()
}

/// Answers by key: `one`, `many`, `deleted`, `absent`, `down`, `nobody`, `broken`, `refused`,
/// anything else a single value (puts and deletes are written, but to `full`, `down` and
/// `unsure`).
fn canned() -> Answer {
    Box::new(|request| {
        let key = request.target().1.to_vec();
        if matches!(
            request,
            ClientRequest::Put { .. } | ClientRequest::Delete { .. }
        ) {
            return Ok(match key.as_slice() {
                b"down" => Reply::Unavailable {
                    kind: QuorumKind::Write,
                    needed: 2,
                    answered: ids(&["a"]),
                },
                b"unsure" => Reply::OutcomeUnknown {
                    kind: QuorumKind::Write,
                    needed: 2,
                    answered: Vec::new(),
                },
                b"full" => Reply::StorageFull {
                    reason: "no space left on device".into(),
                },
                _ => Reply::Written {
                    context: some_context(),
                    dot: Dot {
                        actor: ActorId::new("a.1"),
                        counter: 1,
                    },
                    replicas: ids(&["a", "b", "d"]),
                    durable: ids(&["a"]),
                    fallbacks: ids(&["d"]),
                    read_your_writes: false,
                },
            });
        }
        let got = |values: Vec<Vec<u8>>, context: Context| Reply::Got {
            values,
            context,
            replicas: ids(&["a", "b"]),
            fallbacks: Vec::new(),
            read_your_writes: true,
            expires_at: None,
        };
        match key.as_slice() {
            b"many" => Ok(got(
                vec![
                    b"first".to_vec(),
                    b"\r\n--tricky\r\n\r\n".to_vec(),
                    Vec::new(),
                    vec![0, 255, 13, 10, 45, 45],
                ],
                some_context(),
            )),
            b"deleted" => Ok(got(Vec::new(), some_context())),
            b"absent" => Ok(got(Vec::new(), Context::empty())),
            b"down" => Ok(Reply::Unavailable {
                kind: QuorumKind::Read,
                needed: 2,
                answered: ids(&["a"]),
            }),
            b"nobody" => Ok(Reply::Unavailable {
                kind: QuorumKind::Read,
                needed: 2,
                answered: Vec::new(),
            }),
            b"broken" => Ok(Reply::Failed {
                reason: "disk on fire".into(),
            }),
            b"refused" => Err(NodeError::Rejected(RequestError::NoReplicas)),
            _ => Ok(got(vec![b"the value".to_vec()], some_context())),
        }
    })
}

fn config() -> HttpConfig {
    HttpConfig {
        max_value_bytes: 1000,
        max_key_bytes: 100,
        ..HttpConfig::default()
    }
}

fn request(method: Method, uri: &str, body: &[u8]) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::copy_from_slice(body)));
    *request.method_mut() = method;
    *request.uri_mut() = uri.parse().unwrap();
    request
}

struct Answered {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answered {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn error(&self) -> api::ErrorBody {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn call<B>(fake: &FakeNode, config: &HttpConfig, request: Request<B>) -> Answered
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let response = handle(&fake.handle, config, request).await;
    let (parts, body) = response.into_parts();
    Answered {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(fake: &FakeNode, uri: &str) -> Answered {
    call(fake, &config(), request(Method::GET, uri, b"")).await
}

/// A minimal RFC 2046 reader, independent of the writer.
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .find_map(|part| part.trim().strip_prefix("boundary="))
        .unwrap();
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    // The first delimiter has no CRLF before it.
    let mut rest = body
        .strip_prefix(format!("--{boundary}").as_bytes())
        .unwrap();
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").unwrap();
        let end = rest
            .windows(delimiter.len())
            .position(|window| window == delimiter.as_slice())
            .unwrap();
        let part = &rest[..end];
        let headers_end = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let headers = std::str::from_utf8(&part[..headers_end]).unwrap();
        assert_eq!(headers, "Content-Type: application/octet-stream");
        parts.push(part[headers_end + 4..].to_vec());
        rest = &rest[end + delimiter.len()..];
    }
}

#[tokio::test]
async fn get_one_value_is_200_with_the_value_and_headers() {
    let fake = fake_node(canned(), test_status());
    let answer = get(&fake, "/kv/b/one").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], b"the value");
    let context = Context::from_base64(answer.header(api::HEADER_CONTEXT).unwrap()).unwrap();
    assert_eq!(context, some_context());
    assert_eq!(answer.header(api::HEADER_REPLICAS), Some("a,b"));
    assert_eq!(answer.header(api::HEADER_FALLBACKS), Some(""));
    assert_eq!(answer.header(api::HEADER_READ_YOUR_WRITES), Some("true"));
    assert_eq!(answer.header(api::HEADER_NODE), Some("a"));
    assert_eq!(answer.header(api::HEADER_SIBLINGS), None);
}

#[tokio::test]
async fn siblings_are_a_300_multipart_that_parses_back() {
    let fake = fake_node(canned(), test_status());
    let answer = get(&fake, "/kv/b/many").await;
    assert_eq!(answer.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(answer.header(api::HEADER_SIBLINGS), Some("4"));
    let content_type = answer.header("content-type").unwrap();
    assert!(content_type.starts_with("multipart/mixed; boundary="));
    let parts = parse_multipart(content_type, &answer.body);
    let Ok(Reply::Got { values, .. }) = canned()(&ClientRequest::Get {
        bucket: b"b".to_vec(),
        key: b"many".to_vec(),
        options: RequestOptions::default(),
    }) else {
        panic!("canned answer changed");
    };
    assert_eq!(parts, values);
    assert!(answer.header(api::HEADER_CONTEXT).is_some());
}

#[test]
fn the_boundary_never_occurs_in_a_value() {
    let boundary = pick_boundary(&[b"x".to_vec()]);
    // A value made of the boundary itself forces a different one.
    let clash = vec![boundary.as_bytes().to_vec()];
    let other = pick_boundary(&clash);
    assert_ne!(other, boundary);
    assert!(!clash[0].windows(other.len()).any(|w| w == other.as_bytes()));
}

#[tokio::test]
async fn a_tombstone_is_404_with_its_context_and_an_absent_key_without() {
    let fake = fake_node(canned(), test_status());
    let deleted = get(&fake, "/kv/b/deleted").await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND);
    let context = Context::from_base64(deleted.header(api::HEADER_CONTEXT).unwrap()).unwrap();
    assert_eq!(context, some_context());
    let absent = get(&fake, "/kv/b/absent").await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert_eq!(absent.header(api::HEADER_CONTEXT), None);
}

#[tokio::test]
async fn replica_serves_the_local_record_or_404() {
    let fake = fake_node(canned(), test_status());
    let held = get(&fake, "/replica/b/held").await;
    assert_eq!(held.status, StatusCode::OK);
    assert_eq!(
        held.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(held.body.as_ref(), b"record bytes");
    assert_eq!(
        get(&fake, "/replica/b/other").await.status,
        StatusCode::NOT_FOUND
    );
    let failed = get(&fake, "/replica/b/unreadable").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        get(&fake, "/replica/b").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&fake, "/replica/b/k/x").await.status,
        StatusCode::BAD_REQUEST
    );
    let put = call(
        &fake,
        &config(),
        request(Method::PUT, "/replica/b/held", b"x"),
    )
    .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn put_is_204_with_write_headers_and_passes_value_context_and_options() {
    let fake = fake_node(canned(), test_status());
    let mut put = request(
        Method::PUT,
        "/kv/b/k?w=all&dw=1&n=3&r=one&timeout_ms=250",
        b"hello",
    );
    put.headers_mut().insert(
        api::HEADER_CONTEXT,
        HeaderValue::from_str(&some_context().to_base64()).unwrap(),
    );
    let answer = call(&fake, &config(), put).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert!(answer.body.is_empty());
    assert_eq!(answer.header(api::HEADER_REPLICAS), Some("a,b,d"));
    assert_eq!(answer.header(api::HEADER_FALLBACKS), Some("d"));
    assert_eq!(answer.header(api::HEADER_DURABLE), Some("a"));
    assert_eq!(answer.header(api::HEADER_READ_YOUR_WRITES), Some("false"));
    assert_eq!(answer.header(api::HEADER_NODE), Some("a"));
    assert_eq!(answer.header(api::HEADER_DOT), Some("a.1:1"));
    assert!(answer.header(api::HEADER_CONTEXT).is_some());
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![ClientRequest::Put {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            context: some_context(),
            value: b"hello".to_vec(),
            options: RequestOptions {
                n: Some(3),
                r: Some(QuorumValue::One),
                w: Some(QuorumValue::All),
                dw: Some(QuorumValue::Count(1)),
                timeout_ms: Some(250),
                ttl_ms: None,
                condition: None,
            },
        }]
    );
}

#[tokio::test]
async fn delete_is_204_and_carries_its_context() {
    let fake = fake_node(canned(), test_status());
    let mut delete = request(Method::DELETE, "/kv/b/k", b"");
    delete.headers_mut().insert(
        api::HEADER_CONTEXT,
        HeaderValue::from_str(&some_context().to_base64()).unwrap(),
    );
    let answer = call(&fake, &config(), delete).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let seen = fake.seen.lock().unwrap().clone();
    assert!(matches!(
        &seen[..],
        [ClientRequest::Delete { context, .. }] if *context == some_context()
    ));
}

#[tokio::test]
async fn unavailable_is_503_with_the_quorum_and_counted() {
    let fake = fake_node(canned(), test_status());
    let answer = call(&fake, &config(), request(Method::PUT, "/kv/b/down", b"x")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = answer.error();
    assert_eq!(error.kind, "unavailable");
    assert_eq!(error.quorum.as_deref(), Some("write"));
    assert_eq!(error.needed, Some(2));
    assert_eq!(error.answered, vec!["a".to_string()]);
    let read = get(&fake, "/kv/b/down").await;
    assert_eq!(read.error().quorum.as_deref(), Some("read"));
    let metrics = fake.handle.metrics();
    for (op, kind) in [(Op::Get, QuorumKind::Read), (Op::Put, QuorumKind::Write)] {
        let failures = metrics
            .quorum_failures
            .get_or_create(&QuorumLabels::new(op, kind, false));
        assert_eq!(failures.get(), 1, "{op:?}");
    }
}

#[tokio::test]
async fn unavailable_with_nobody_answering_says_0_answered_everywhere() {
    let fake = fake_node(canned(), test_status());
    let answer = get(&fake, "/kv/b/nobody").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(json["answered"], serde_json::json!([]), "{json}");
    assert_eq!(json["needed"], 2);
    assert_eq!(json["quorum"], "read");
    assert!(
        json["error"].as_str().unwrap().contains("0 answered"),
        "{json}"
    );
    assert_eq!(answer.header(api::HEADER_REPLICAS), Some(""));
    // The client's reading of it is unchanged.
    assert_eq!(answer.error().answered, Vec::<String>::new());
    let some = get(&fake, "/kv/b/down").await;
    assert_eq!(some.header(api::HEADER_REPLICAS), Some("a"));
    // A write whose outcome is unknown, nobody having acknowledged it, alike.
    let unsure = call(&fake, &config(), request(Method::PUT, "/kv/b/unsure", b"x")).await;
    assert_eq!(unsure.status, StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = serde_json::from_slice(&unsure.body).unwrap();
    assert_eq!(json["kind"], "outcome_unknown");
    assert_eq!(json["answered"], serde_json::json!([]), "{json}");
    assert_eq!(json["needed"], 2);
    assert_eq!(unsure.header(api::HEADER_REPLICAS), Some(""));
    // The reply's own text: one explanation of the outcome, in core.
    let reply = Reply::OutcomeUnknown {
        kind: QuorumKind::Write,
        needed: 2,
        answered: Vec::new(),
    };
    assert_eq!(json["error"], reply.to_string());
    assert!(reply.to_string().contains("read before retrying"));
}

#[tokio::test]
async fn failures_and_refusals_map_to_their_status() {
    let fake = fake_node(canned(), test_status());
    let failed = get(&fake, "/kv/b/broken").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.error().kind, "failed");
    assert_eq!(failed.error().error, "disk on fire");
    let full = call(&fake, &config(), request(Method::PUT, "/kv/b/full", b"x")).await;
    assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(full.error().kind, "storage_full");
    assert!(full.error().error.contains("disk"), "{:?}", full.error());
    let refused = get(&fake, "/kv/b/refused").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error().kind, "no_ring");
    let cases = [
        (RequestError::EmptyKey, StatusCode::BAD_REQUEST),
        (
            RequestError::ValueTooLarge { len: 9, max: 1 },
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            RequestError::Quorum(ringkv_core::bucket::QuorumError::ZeroN),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (error, status) in cases {
        assert_eq!(Problem::from(NodeError::Rejected(error)).status, status);
    }
    assert_eq!(
        Problem::from(NodeError::ShuttingDown).status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let abandoned = Problem::from(NodeError::Abandoned);
    assert_eq!(abandoned.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(abandoned.kind, "outcome_unknown");
}

#[tokio::test]
async fn bad_requests_are_400_and_never_reach_the_node() {
    let fake = fake_node(canned(), test_status());
    let long_key = format!("/kv/b/{}", "k".repeat(101));
    let cases = [
        ("/kv/b/k?r=two", "r"),
        ("/kv/b/k?w=", "w"),
        ("/kv/b/k?n=quorum", "n"),
        ("/kv/b/k?timeout_ms=soon", "timeout_ms"),
        ("/kv/b/k?timeout_ms=-5", "timeout_ms"),
        ("/kv/b/k?timeout_ms=0", "timeout_ms"),
        ("/kv/b/k?timeout_ms=1000000000000", "timeout_ms"),
        ("/kv/b/k?colour=red", "colour"),
        ("/kv/b/k?r=1&r=2", "repeated"),
        ("/kv/b/", "empty"),
        ("/kv//k", "empty"),
        ("/kv/b", "expected"),
        ("/kv/b/k/extra", "%2F"),
        (long_key.as_str(), "limit"),
    ];
    for (uri, mentions) in cases {
        let answer = get(&fake, uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        let error = answer.error();
        assert_eq!(error.kind, "bad_request");
        assert!(error.error.contains(mentions), "{uri}: {}", error.error);
    }
    for context in ["not base64!", "AAAA", &some_context().to_base64()[1..]] {
        let mut put = request(Method::PUT, "/kv/b/k", b"v");
        put.headers_mut()
            .insert(api::HEADER_CONTEXT, HeaderValue::from_str(context).unwrap());
        let answer = call(&fake, &config(), put).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{context}");
        assert!(answer.error().error.contains("context"));
    }
    assert!(fake.seen.lock().unwrap().is_empty());
    let rejected = fake
        .handle
        .metrics()
        .requests
        .get_or_create(&RequestLabels {
            op: Op::Get,
            outcome: Outcome::Rejected,
        });
    // `/kv/b` names a bucket, not a key: a refused bucket request, counted apart.
    assert_eq!(rejected.get(), 13);
    let bucket_rejected = fake
        .handle
        .metrics()
        .requests
        .get_or_create(&RequestLabels {
            op: Op::List,
            outcome: Outcome::Rejected,
        });
    assert_eq!(bucket_rejected.get(), 1);
}

#[tokio::test]
async fn headers_the_store_would_ignore_are_400_and_named() {
    let fake = fake_node(canned(), test_status());
    let cases = [
        (Method::DELETE, "if-match", "*", "If-Match"),
        (Method::GET, "if-none-match", "\"abc\"", "If-None-Match"),
        (Method::PUT, "if-none-match", "\"abc\"", "If-None-Match"),
        (
            Method::PUT,
            "if-unmodified-since",
            "Tue, 15 Nov 1994 08:12:31 GMT",
            "If-Unmodified-Since",
        ),
        (
            Method::GET,
            "if-modified-since",
            "Tue, 15 Nov 1994 08:12:31 GMT",
            "If-Modified-Since",
        ),
        (
            Method::PUT,
            "expires",
            "Thu, 01 Dec 2094 16:00:00 GMT",
            "Expires",
        ),
        (
            Method::PUT,
            "content-range",
            "bytes 0-1/10",
            "Content-Range",
        ),
    ];
    for (method, name, value, named) in cases {
        let mut sent = request(method.clone(), "/kv/b/k", b"v");
        sent.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static(value),
        );
        let answer = call(&fake, &config(), sent).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {name}");
        let error = answer.error();
        assert_eq!(error.kind, "bad_request");
        assert!(error.error.contains(named), "{name}: {}", error.error);
        assert!(
            error.error.contains("not supported"),
            "{name}: {}",
            error.error
        );
    }
    assert!(fake.seen.lock().unwrap().is_empty());
    // Content-Range means nothing to a read: it is only refused on a write.
    let mut read = request(Method::GET, "/kv/b/one", b"");
    read.headers_mut()
        .insert("content-range", HeaderValue::from_static("bytes 0-1/10"));
    assert_eq!(call(&fake, &config(), read).await.status, StatusCode::OK);
}

/// A body that records whether it was ever polled, and then yields `chunks` chunks of 100
/// bytes (or forever).
struct WatchedBody {
    polled: Arc<AtomicBool>,
    frames: Arc<AtomicUsize>,
    chunks: Option<usize>,
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.polled.store(true, Ordering::SeqCst);
        let sent = self.frames.fetch_add(1, Ordering::SeqCst);
        if self.chunks.is_some_and(|chunks| sent >= chunks) {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![7u8; 100])))))
    }
}

#[tokio::test]
async fn an_oversized_content_length_is_413_without_reading_the_body() {
    let fake = fake_node(canned(), test_status());
    let polled = Arc::new(AtomicBool::new(false));
    let body = WatchedBody {
        polled: Arc::clone(&polled),
        frames: Arc::new(AtomicUsize::new(0)),
        chunks: Some(20),
    };
    let mut put = Request::new(body);
    *put.method_mut() = Method::PUT;
    *put.uri_mut() = "/kv/b/k".parse().unwrap();
    put.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("2000"));
    let answer = call(&fake, &config(), put).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error().kind, "too_large");
    assert!(!polled.load(Ordering::SeqCst), "the body was read");
    assert!(fake.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_off_at_the_limit() {
    let fake = fake_node(canned(), test_status());
    let frames = Arc::new(AtomicUsize::new(0));
    let body = WatchedBody {
        polled: Arc::new(AtomicBool::new(false)),
        frames: Arc::clone(&frames),
        chunks: None,
    };
    let mut put = Request::new(body);
    *put.method_mut() = Method::PUT;
    *put.uri_mut() = "/kv/b/k".parse().unwrap();
    let answer = call(&fake, &config(), put).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    // 1000 bytes allowed, 100 per frame: reading stops on the frame that passes the limit.
    assert!(frames.load(Ordering::SeqCst) <= 11);
    // A body at the limit is accepted.
    let exact = WatchedBody {
        polled: Arc::new(AtomicBool::new(false)),
        frames: Arc::new(AtomicUsize::new(0)),
        chunks: Some(10),
    };
    let mut put = Request::new(exact);
    *put.method_mut() = Method::PUT;
    *put.uri_mut() = "/kv/b/k".parse().unwrap();
    assert_eq!(
        call(&fake, &config(), put).await.status,
        StatusCode::NO_CONTENT
    );
    let seen = fake.seen.lock().unwrap().clone();
    assert!(matches!(&seen[..], [ClientRequest::Put { value, .. }] if value.len() == 1000));
}

#[tokio::test]
async fn a_stalled_body_is_408() {
    let fake = fake_node(canned(), test_status());
    let stalled = StreamBody::new(futures_util::stream::pending::<
        Result<Frame<Bytes>, Infallible>,
    >());
    let mut put = Request::new(stalled);
    *put.method_mut() = Method::PUT;
    *put.uri_mut() = "/kv/b/k".parse().unwrap();
    let config = HttpConfig {
        body_read_timeout: Duration::from_millis(20),
        ..config()
    };
    let answer = call(&fake, &config, put).await;
    assert_eq!(answer.status, StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn head_answers_as_get_without_the_body() {
    let fake = fake_node(canned(), test_status());
    for uri in [
        "/kv/b/one",
        "/kv/b/many",
        "/kv/b/deleted",
        "/kv/b/absent",
        "/kv/b/down",
        "/kv/b/k?r=two",
    ] {
        let got = get(&fake, uri).await;
        let head = call(&fake, &config(), request(Method::HEAD, uri, b"")).await;
        assert_eq!(head.status, got.status, "{uri}");
        assert!(head.body.is_empty(), "{uri}");
        assert_eq!(
            head.header("content-length"),
            Some(got.body.len().to_string().as_str()),
            "{uri}"
        );
        for name in [
            "content-type",
            api::HEADER_CONTEXT,
            api::HEADER_SIBLINGS,
            api::HEADER_REPLICAS,
            api::HEADER_FALLBACKS,
            api::HEADER_READ_YOUR_WRITES,
            api::HEADER_NODE,
        ] {
            if name == "content-type" && got.header(name).is_some_and(|t| t.contains("boundary")) {
                // A fresh random boundary each time.
                assert!(head.header(name).unwrap().starts_with("multipart/mixed"));
                continue;
            }
            assert_eq!(head.header(name), got.header(name), "{uri}: {name}");
        }
    }
    let seen = fake.seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .all(|request| matches!(request, ClientRequest::Get { .. })));
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let fake = fake_node(canned(), test_status());
    let answer = call(&fake, &config(), request(Method::POST, "/kv/b/k", b"")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET, HEAD, PUT, DELETE"));
    assert_eq!(answer.error().kind, "method_not_allowed");
    let answer = call(&fake, &config(), request(Method::DELETE, "/ring", b"")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET"));
}

#[tokio::test]
async fn unknown_paths_are_404_json() {
    let fake = fake_node(canned(), test_status());
    for uri in ["/", "/nothing", "/kvx/b/k", "/buckets/b", "/ui/app.js"] {
        let answer = get(&fake, uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer.error().kind, "not_found");
    }
}

#[tokio::test]
async fn percent_encoded_binary_keys_reach_the_node_intact() {
    let fake = fake_node(canned(), test_status());
    let answer = get(&fake, "/kv/my%2Fbucket/%00%FF%2Fk%20%25+").await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].target(),
        (
            &b"my/bucket"[..],
            &[0u8, 255, b'/', b'k', b' ', b'%', b'+'][..]
        )
    );
}

#[tokio::test]
async fn malformed_percent_encoding_is_400_and_never_reaches_the_node() {
    let fake = fake_node(canned(), test_status());
    let cases = [
        ("/kv/b/%zz", "key"),
        ("/kv/b/%G1", "key"),
        ("/kv/b/%", "key"),
        ("/kv/b/%4", "key"),
        ("/kv/b/k%4", "key"),
        ("/kv/b/%%41", "key"),
        ("/kv/b/%4%41", "key"),
        ("/kv/%zz/k", "bucket"),
        ("/kv/b%/k", "bucket"),
        ("/replica/b/%zz", "key"),
        ("/buckets/%zz/props", "bucket"),
    ];
    for (uri, what) in cases {
        let answer = get(&fake, uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        let error = answer.error().error;
        assert!(
            error.starts_with(&format!("malformed percent-encoding in {what}")),
            "{uri}: {error}"
        );
    }
    let put = call(&fake, &config(), request(Method::PUT, "/kv/b/%zz", b"v")).await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST);
    assert!(fake.seen.lock().unwrap().is_empty());
    // The well-formed spelling of the same characters is a key of its own.
    assert_eq!(get(&fake, "/kv/b/%25zz").await.status, StatusCode::OK);
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[0].target(), (&b"b"[..], &b"%zz"[..]));
}

#[tokio::test]
async fn metrics_count_kv_requests() {
    let fake = fake_node(canned(), test_status());
    get(&fake, "/kv/b/one").await;
    get(&fake, "/kv/b/one").await;
    get(&fake, "/kv/b/down").await;
    call(&fake, &config(), request(Method::PUT, "/kv/b/k", b"v")).await;
    let answer = get(&fake, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = std::str::from_utf8(&answer.body).unwrap();
    let count = |needle: &str| {
        text.lines()
            .find(|line| line.starts_with("ringkv_requests_total{") && line.contains(needle))
            .and_then(|line| line.rsplit(' ').next())
            .map(|value| value.to_string())
    };
    assert_eq!(
        count(r#"op="get",outcome="ok""#).as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        count(r#"op="get",outcome="unavailable""#).as_deref(),
        Some("1")
    );
    assert_eq!(count(r#"op="put",outcome="ok""#).as_deref(), Some("1"));
    assert!(
        text.contains(r#"ringkv_request_duration_seconds_count{op="get"} 3"#),
        "{text}"
    );
}

mod conditions;
mod documents;
mod lingering;
