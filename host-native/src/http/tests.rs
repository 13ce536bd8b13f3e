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
use crate::metrics::{Metrics, Op, Outcome, RequestLabels};
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
    object.context()
}

fn ids(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|name| NodeId::new(*name)).collect()
}

/// Answers by key: `one`, `many`, `deleted`, `absent`, `down`, `broken`, `refused`,
/// anything else a single value (puts and deletes are written, but to `full`).
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
    for reason in ["read", "write"] {
        let failures = metrics
            .quorum_failures
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason.to_string(),
            });
        assert_eq!(failures.get(), 1, "{reason}");
    }
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
    assert_eq!(rejected.get(), 14);
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
async fn other_methods_are_405_with_allow() {
    let fake = fake_node(canned(), test_status());
    let answer = call(&fake, &config(), request(Method::POST, "/kv/b/k", b"")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.header("allow"), Some("GET, PUT, DELETE"));
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
        count(r#"op="Get",outcome="Ok""#).as_deref(),
        Some("2"),
        "{text}"
    );
    assert_eq!(
        count(r#"op="Get",outcome="Unavailable""#).as_deref(),
        Some("1")
    );
    assert_eq!(count(r#"op="Put",outcome="Ok""#).as_deref(), Some("1"));
    assert!(
        text.contains(r#"ringkv_request_duration_seconds_count{op="Get"} 3"#),
        "{text}"
    );
}

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
        }
    );
    let default: api::BucketPropsDoc =
        serde_json::from_slice(&get(&fake, "/buckets/other%20one/props").await.body).unwrap();
    assert_eq!((default.bucket.as_str(), default.n), ("other one", 3));
    assert_eq!(default.conflict_mode, "siblings");

    let put = |body: &str| request(Method::PUT, "/buckets/b%2F1/props", body.as_bytes());
    let ok = r#"{"n":3,"r":"one","w":"all","dw":"1","conflict_mode":"siblings"}"#;
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
            },
        }]
    );
    for bad in [
        r#"{"n":3,"r":"most","w":"all","dw":"1","conflict_mode":"siblings"}"#,
        r#"{"n":3,"r":"one","w":"all","dw":"1","conflict_mode":"newest"}"#,
        r#"{"n":9,"r":"one","w":"all","dw":"1","conflict_mode":"lww"}"#,
        r#"{"n":3}"#,
    ] {
        let answer = call(&fake, &config(), put(bad)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
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

struct Server {
    address: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(fake: &FakeNode, config: HttpConfig) -> Server {
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
