//! The client HTTP API (contract in [`ringkv_client::api`]) served over a [`NodeHandle`] with hyper 1.x.
//!
//! [`serve`] runs the accept loop: HTTP/1.1 (keep-alive) and HTTP/2 with prior knowledge on the
//! same port, optionally inside TLS ([`HttpConfig::tls`]), a connection limit, a header read
//! timeout against slow clients (which also bounds the TLS handshake), and a graceful shutdown
//! that lets requests in flight finish. [`handle`] is the router as a plain function, so
//! every route can be tested without a socket.
//!
//! The host holds no protocol logic: this module only translates HTTP into
//! [`ClientRequest`]s and [`Command`]s and the node's answers back into HTTP.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use percent_encoding::percent_decode_str;
use ringkv_core::config::{
    BucketProps, QuorumValue, RequestOptions, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES,
};
use ringkv_core::error::RequestError;
use ringkv_core::id::NodeId;
use ringkv_core::io::{ClientRequest, Command, QuorumKind, Reply};
use ringkv_core::membership::{MemberInfo, MemberStatus};
use ringkv_core::ring::{PartitionId, Strategy};
use ringkv_core::version::{ConflictMode, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::metrics::{Metrics, Op, OpLabels, Outcome, RequestLabels};
use crate::node_loop::{NodeError, NodeHandle, NodeStatus};
use ringkv_client::api;

/// The body of every response [`handle`] builds (answers are small or already in memory).
pub type ResponseBody = Full<Bytes>;

/// How long [`serve`] waits, once shut down, for the requests in flight before it drops the
/// connections that are still open.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `timeout_ms` a request may ask for.
pub const MAX_TIMEOUT_MS: u64 = 120_000;

/// Largest JSON request body (join, remove, bucket properties) accepted.
pub const MAX_JSON_BODY_BYTES: usize = 64 * 1024;

/// Limits and options of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Largest key accepted (a longer one is refused with 400 before it reaches the node).
    pub max_key_bytes: usize,
    /// Largest value accepted (a larger body is refused with 413 without being buffered).
    pub max_value_bytes: usize,
    /// Time a client has to send a request's headers (and, on a new connection, its first
    /// request); a slower connection is closed. Also closes idle keep-alive HTTP/1 connections.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request body; a slower one is answered 408.
    pub body_read_timeout: Duration,
    /// Directory of the web UI's static files, served under `/ui`.
    pub ui_dir: Option<PathBuf>,
    /// Serve HTTPS with this TLS configuration (`None`: plain HTTP). The handshake must end
    /// within `header_read_timeout`, counted from the accept, like the first request.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for HttpConfig {
    /// 1024 connections, the core's default key and value limits, 10 s for headers, 30 s for a
    /// body, no UI.
    fn default() -> Self {
        HttpConfig {
            max_connections: 1024,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            ui_dir: None,
            tls: None,
        }
    }
}

// ----- the server -----

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets requests in
/// flight finish (at most [`DRAIN_TIMEOUT`]) and returns.
///
/// Transient accept failures (a connection reset before it was accepted, running out of file
/// descriptors) are logged and the loop goes on; any other accept failure ends the server (after
/// the same drain) with that error.
pub async fn serve(
    listener: TcpListener,
    node: NodeHandle,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::clone(node.metrics());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Finds dead peers, which would otherwise hold a connection slot forever.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let tls = config.tls.clone().map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    let result = loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break Ok(()),
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => match classify_accept_error(&error) {
                AcceptFailure::Retry => continue,
                AcceptFailure::Backoff => {
                    tracing::warn!(%error, "accepting HTTP connections failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                AcceptFailure::Fatal => break Err(error),
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            tracing::debug!(%peer, "HTTP connection refused: at the connection limit");
            drop(stream);
            continue;
        };
        // Small answers should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let open = OpenConnection::new(Arc::clone(&metrics));
        let connection = Connection {
            node: node.clone(),
            config: Arc::clone(&config),
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            peer,
            // One deadline for the TLS handshake and the first request together, so a client
            // that stalls in the handshake gains nothing over one that stalls after it.
            deadline: tokio::time::Instant::now() + config.header_read_timeout,
        };
        let acceptor = tls.clone();
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            let _slot = slot;
            let _open = open;
            let Some(acceptor) = acceptor else {
                return connection.serve(stream).await;
            };
            match tokio::time::timeout_at(connection.deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => connection.serve(stream).await,
                Ok(Err(error)) => {
                    Metrics::count(&metrics.http_tls_handshakes_failed, "error");
                    tracing::debug!(%peer, %error, "HTTPS connection closed: TLS handshake failed");
                }
                Err(_) => {
                    Metrics::count(&metrics.http_tls_handshakes_failed, "timeout");
                    tracing::debug!(%peer, "HTTPS connection closed: no TLS handshake in time");
                }
            }
        });
    };

    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the drain timeout; closing them");
    }
    connections.shutdown().await;
    result
}

/// One accepted connection, ready to be served once its stream (TCP or TLS) is.
struct Connection {
    node: NodeHandle,
    config: Arc<HttpConfig>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
    /// When the first request must have arrived.
    deadline: tokio::time::Instant,
}

impl Connection {
    async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            node,
            config,
            builder,
            watcher,
            peer,
            deadline,
        } = self;
        let first_request = Arc::new(Notify::new());
        let service = {
            let first_request = Arc::clone(&first_request);
            service_fn(move |request| {
                first_request.notify_one();
                let node = node.clone();
                let config = Arc::clone(&config);
                async move { Ok::<_, Infallible>(handle(&node, &config, request).await) }
            })
        };
        let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::pin!(connection);
        // hyper's header timeout starts only once it knows the protocol (HTTP/1), and HTTP/2
        // has none: a client that never completes its first request is cut off here.
        let finished = tokio::select! {
            result = &mut connection => Some(result),
            () = first_request.notified() => None,
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!(%peer, "HTTP connection closed: no request in time");
                return;
            }
        };
        let result = match finished {
            Some(result) => result,
            None => connection.await,
        };
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "HTTP connection ended with an error");
        }
    }
}

enum AcceptFailure {
    /// The one connection failed; the listener is fine.
    Retry,
    /// The process is out of a resource; wait a little for connections to close.
    Backoff,
    /// The listener itself is broken.
    Fatal,
}

fn classify_accept_error(error: &std::io::Error) -> AcceptFailure {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionAborted
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionRefused
        | ErrorKind::Interrupted
        | ErrorKind::WouldBlock
        | ErrorKind::TimedOut => AcceptFailure::Retry,
        ErrorKind::OutOfMemory => AcceptFailure::Backoff,
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: resource exhaustion, not a broken listener.
        _ if matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12)) => AcceptFailure::Backoff,
        _ => AcceptFailure::Fatal,
    }
}

/// Keeps `http_connections` equal to the number of open connections.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> OpenConnection {
        metrics.http_connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.http_connections.dec();
    }
}

// ----- errors -----

/// An answer that is an error: its status, its [`api::ErrorBody`] and any extra headers.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Problem {
    status: StatusCode,
    kind: &'static str,
    message: String,
    allow: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            message: message.into(),
            allow: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn too_large(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    fn not_found(message: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn method_not_allowed(method: &Method, allow: &'static str) -> Problem {
        Problem {
            allow: Some(allow),
            ..Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("method {method} is not allowed here (allowed: {allow})"),
            )
        }
    }

    fn into_response(self) -> Response<ResponseBody> {
        let body = api::ErrorBody {
            error: self.message,
            kind: self.kind.to_string(),
            quorum: None,
            needed: None,
            answered: Vec::new(),
        };
        let mut response = json_response(self.status, &body);
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<NodeError> for Problem {
    fn from(error: NodeError) -> Problem {
        let message = error.to_string();
        match error {
            NodeError::Rejected(rejection) => match rejection {
                RequestError::EmptyKey
                | RequestError::KeyTooLarge { .. }
                | RequestError::BucketTooLarge { .. }
                | RequestError::Quorum(_) => Problem::bad_request(message),
                RequestError::ValueTooLarge { .. } => Problem::too_large(message),
                RequestError::NoReplicas => {
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no_ring", message)
                }
                // A host bug (request ids are the node task's), not the client's fault.
                RequestError::DuplicateRequestId(_) => {
                    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", message)
                }
                _ => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", message),
            },
            NodeError::Command(_) => Problem::bad_request(message),
            NodeError::Join(_) => Problem::new(StatusCode::CONFLICT, "bad_request", message),
            NodeError::ShuttingDown => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            NodeError::Abandoned => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown", message)
            }
            NodeError::Storage(_) => {
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", message)
            }
        }
    }
}

// ----- the router -----

/// Answers one request (the whole API). Never fails: every error is an answer with an
/// [`api::ErrorBody`]. Every answer carries the [`api::HEADER_NODE`] header.
pub async fn handle<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let path = request.uri().path().to_string();
    let mut response = if path.starts_with(KV_PREFIX) {
        kv(node, config, request).await
    } else {
        route(node, config, request, &path)
            .await
            .unwrap_or_else(Problem::into_response)
    };
    set_header(&mut response, api::HEADER_NODE, node.node_id().as_str());
    response
}

async fn route<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    path: &str,
) -> Result<Response<ResponseBody>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let method = request.method().clone();
    match path {
        "/cluster" => {
            only(&method, &[Method::GET], "GET")?;
            let status = node.status().await?;
            Ok(readable_anywhere(json_response(
                StatusCode::OK,
                &cluster_status(&status),
            )))
        }
        "/ring" => {
            only(&method, &[Method::GET], "GET")?;
            let status = node.status().await?;
            if status.ring_version.is_none() {
                return Err(no_ring());
            }
            Ok(readable_anywhere(json_response(
                StatusCode::OK,
                &ring_doc(&status),
            )))
        }
        "/cluster/join" => {
            only(&method, &[Method::POST], "POST")?;
            let join: api::JoinRequest = read_json(request, config).await?;
            node.join(join.seed).await?;
            Ok(empty_response(StatusCode::ACCEPTED))
        }
        "/cluster/leave" => {
            only(&method, &[Method::POST], "POST")?;
            node.command(Command::Leave).await?;
            Ok(empty_response(StatusCode::ACCEPTED))
        }
        "/cluster/remove" => {
            only(&method, &[Method::POST], "POST")?;
            let remove: api::RemoveRequest = read_json(request, config).await?;
            if remove.node.is_empty() {
                return Err(Problem::bad_request("the node to remove is empty"));
            }
            node.command(Command::Remove {
                node: NodeId::new(remove.node),
            })
            .await?;
            Ok(empty_response(StatusCode::ACCEPTED))
        }
        "/health" => {
            only(&method, &[Method::GET], "GET")?;
            let status = node.status().await?;
            let health = health(&status);
            let code = if status.ring_version.is_some() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(json_response(code, &health))
        }
        "/metrics" => {
            only(&method, &[Method::GET], "GET")?;
            let mut response = Response::new(Full::new(Bytes::from(node.metrics().render())));
            set_header(&mut response, "content-type", "text/plain; version=0.0.4");
            Ok(response)
        }
        "/ui" => {
            only(&method, &[Method::GET], "GET")?;
            serve_ui(config, "").await
        }
        _ => {
            if let Some(file) = path.strip_prefix("/ui/") {
                only(&method, &[Method::GET], "GET")?;
                return serve_ui(config, file).await;
            }
            if let Some(rest) = path.strip_prefix("/replica/") {
                only(&method, &[Method::GET], "GET")?;
                let (bucket, key) = parse_bucket_key(rest, "/replica", config.max_key_bytes)?;
                return match node.local_record(bucket, key).await? {
                    None => Err(Problem::not_found("this node holds no replica of the key")),
                    Some(record) => {
                        let mut response = Response::new(Full::new(Bytes::from(record)));
                        set_header(&mut response, "content-type", "application/octet-stream");
                        Ok(response)
                    }
                };
            }
            if let Some(bucket) = path
                .strip_prefix("/buckets/")
                .and_then(|rest| rest.strip_suffix("/props"))
                .filter(|bucket| !bucket.contains('/'))
            {
                let bucket = decode_segment(bucket);
                return bucket_props(node, config, request, bucket).await;
            }
            Err(Problem::not_found(format!("no such resource: {path}")))
        }
    }
}

fn only(method: &Method, allowed: &[Method], allow: &'static str) -> Result<(), Problem> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(Problem::method_not_allowed(method, allow))
    }
}

fn no_ring() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_ring",
        "this node has no ring yet",
    )
}

// ----- /kv -----

/// The path prefix of the key-value resources.
const KV_PREFIX: &str = "/kv/";

/// What a `/kv/{bucket}/{key}` request's target and context header ask, parsed and checked (the
/// method and the body are dealt with apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvTarget {
    /// The bucket, percent-decoded (never empty).
    pub bucket: Vec<u8>,
    /// The key, percent-decoded (never empty, at most the configured key limit).
    pub key: Vec<u8>,
    /// The query's quorum and timeout overrides.
    pub options: RequestOptions,
    /// The context header's context ([`Context::empty`] without one).
    pub context: Context,
}

/// Why a `/kv` request target was refused: it is answered `400 Bad Request` with this message,
/// and nothing reaches the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTarget(pub String);

impl From<BadTarget> for Problem {
    fn from(error: BadTarget) -> Problem {
        Problem::bad_request(error.0)
    }
}

async fn kv<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
) -> Response<ResponseBody>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let op = match *request.method() {
        Method::GET => Op::Get,
        Method::PUT => Op::Put,
        Method::DELETE => Op::Delete,
        ref other => {
            return Problem::method_not_allowed(other, "GET, PUT, DELETE").into_response();
        }
    };
    let started = Instant::now();
    let metrics = node.metrics();
    let (response, outcome) = match kv_op(node, config, request, op).await {
        Ok(answer) => answer,
        Err(problem) => (problem.into_response(), Outcome::Rejected),
    };
    metrics
        .requests
        .get_or_create(&RequestLabels { op, outcome })
        .inc();
    metrics
        .request_seconds
        .get_or_create(&OpLabels { op })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn kv_op<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    op: Op,
) -> Result<(Response<ResponseBody>, Outcome), Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let target = parse_kv_target(
        request.uri().path(),
        request.uri().query(),
        request.headers().get(api::HEADER_CONTEXT),
        config.max_key_bytes,
    )?;
    let client_request = match op {
        Op::Get => ClientRequest::Get {
            bucket: target.bucket,
            key: target.key,
            options: target.options,
        },
        Op::Delete => ClientRequest::Delete {
            bucket: target.bucket,
            key: target.key,
            context: target.context,
            options: target.options,
        },
        Op::Put => {
            let value = read_value(request, config).await?;
            ClientRequest::Put {
                bucket: target.bucket,
                key: target.key,
                context: target.context,
                value: value.to_vec(),
                options: target.options,
            }
        }
    };
    let reply = node.client(client_request).await?;
    if let Reply::Unavailable { kind, .. } = &reply {
        Metrics::count(&node.metrics().quorum_failures, quorum_name(*kind));
    }
    Ok(reply_response(reply))
}

/// Parses a `/kv/{bucket}/{key}` request: `path` is the request URI's path as sent (still
/// percent-encoded), `query` its query, `context` the [`api::HEADER_CONTEXT`] header. A pure
/// function of its arguments, kept apart from the router so that it can be tested and fuzzed
/// without a server (see [`crate::fuzzing::http_request`]); every refusal is a [`BadTarget`].
pub fn parse_kv_target(
    path: &str,
    query: Option<&str>,
    context: Option<&HeaderValue>,
    max_key_bytes: usize,
) -> Result<KvTarget, BadTarget> {
    let Some(rest) = path.strip_prefix(KV_PREFIX) else {
        return Err(BadTarget("expected /kv/{bucket}/{key}".to_string()));
    };
    let (bucket, key) = parse_bucket_key(rest, "/kv", max_key_bytes)?;
    let options = parse_options(query)?;
    let context = parse_context(context)?;
    Ok(KvTarget {
        bucket,
        key,
        options,
        context,
    })
}

/// Splits and decodes `{bucket}/{key}`, the rest of a path after `prefix`.
fn parse_bucket_key(
    rest: &str,
    prefix: &str,
    max_key_bytes: usize,
) -> Result<(Vec<u8>, Vec<u8>), BadTarget> {
    let Some((bucket, key)) = rest.split_once('/') else {
        return Err(BadTarget(format!(
            "expected {prefix}/{{bucket}}/{{key}} (percent-encode a '/' in a bucket or key)"
        )));
    };
    if key.contains('/') {
        return Err(BadTarget(format!(
            "expected {prefix}/{{bucket}}/{{key}}: the key has an unencoded '/' (send it as %2F)"
        )));
    }
    let bucket = decode_segment(bucket);
    let key = decode_segment(key);
    if bucket.is_empty() {
        return Err(BadTarget("the bucket name is empty".to_string()));
    }
    if key.is_empty() {
        return Err(BadTarget("the key is empty".to_string()));
    }
    if key.len() > max_key_bytes {
        return Err(BadTarget(format!(
            "the key is {} bytes, over the limit of {max_key_bytes}",
            key.len(),
        )));
    }
    Ok((bucket, key))
}

fn decode_segment(segment: &str) -> Vec<u8> {
    percent_decode_str(segment).collect()
}

/// Parses the query overrides `r`, `w`, `n`, `dw`, `timeout_ms`; anything else is refused so that
/// a misspelt override is not silently ignored.
fn parse_options(query: Option<&str>) -> Result<RequestOptions, BadTarget> {
    let mut options = RequestOptions::default();
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy().into_owned();
        let value = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| BadTarget(format!("query parameter {name} is not UTF-8")))?;
        let value = value.trim();
        let duplicate = || BadTarget(format!("query parameter {name} is repeated"));
        let quorum = |value: &str| {
            parse_quorum(value)
                .map_err(|error| BadTarget(format!("query parameter {name}: {error}")))
        };
        match name.as_str() {
            "r" if options.r.is_some() => return Err(duplicate()),
            "r" => options.r = Some(quorum(value)?),
            "w" if options.w.is_some() => return Err(duplicate()),
            "w" => options.w = Some(quorum(value)?),
            "dw" if options.dw.is_some() => return Err(duplicate()),
            "dw" => options.dw = Some(quorum(value)?),
            "n" if options.n.is_some() => return Err(duplicate()),
            "n" => {
                options.n = Some(value.parse::<u32>().map_err(|_| {
                    BadTarget(format!("query parameter n: {value:?} is not a count"))
                })?)
            }
            "timeout_ms" if options.timeout_ms.is_some() => return Err(duplicate()),
            "timeout_ms" => {
                let timeout = value.parse::<u64>().map_err(|_| {
                    BadTarget(format!(
                        "query parameter timeout_ms: {value:?} is not a number of milliseconds"
                    ))
                })?;
                // A request waits in the node (and holds its memory) until its deadline, so the
                // deadline is bounded.
                if timeout == 0 || timeout > MAX_TIMEOUT_MS {
                    return Err(BadTarget(format!(
                        "query parameter timeout_ms: {timeout} is outside 1..={MAX_TIMEOUT_MS}"
                    )));
                }
                options.timeout_ms = Some(timeout);
            }
            _ => {
                return Err(BadTarget(format!(
                    "unknown query parameter {name:?} (expected r, w, n, dw or timeout_ms)"
                )))
            }
        }
    }
    Ok(options)
}

/// `QuorumValue::from_str`, with a clear message for an empty value too.
fn parse_quorum(value: &str) -> Result<QuorumValue, String> {
    if value.is_empty() {
        return Err("empty value (expected one, quorum, all or a count)".to_string());
    }
    value
        .parse::<QuorumValue>()
        .map_err(|error| error.to_string())
}

/// The request's context: empty without the header (or with an empty one), 400 when malformed.
fn parse_context(header: Option<&HeaderValue>) -> Result<Context, BadTarget> {
    let Some(header) = header else {
        return Ok(Context::empty());
    };
    let text = header
        .to_str()
        .map_err(|_| BadTarget("the context header is not ASCII".to_string()))?
        .trim();
    if text.is_empty() {
        return Ok(Context::empty());
    }
    Context::from_base64(text)
        .map_err(|error| BadTarget(format!("invalid context header: {error}")))
}

/// Reads a PUT body: refused by `Content-Length` before any of it is read, and cut off as soon
/// as a body without one passes the limit.
async fn read_value<B>(request: Request<B>, config: &HttpConfig) -> Result<Bytes, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let limit = config.max_value_bytes;
    if let Some(length) = request.headers().get(CONTENT_LENGTH) {
        let length = length
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .ok_or_else(|| Problem::bad_request("invalid Content-Length"))?;
        if length > limit as u64 {
            return Err(value_too_large(limit));
        }
    }
    read_limited(request.into_body(), limit, config.body_read_timeout)
        .await
        .map_err(|problem| match problem {
            BodyProblem::TooLarge => value_too_large(limit),
            BodyProblem::Other(problem) => problem,
        })
}

fn value_too_large(limit: usize) -> Problem {
    Problem::too_large(format!("the value is over the limit of {limit} bytes"))
}

enum BodyProblem {
    TooLarge,
    Other(Problem),
}

async fn read_limited<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, BodyProblem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyProblem::Other(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            format!("the request body did not arrive within {timeout:?}"),
        ))),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyProblem::TooLarge)
        }
        Ok(Err(error)) => Err(BodyProblem::Other(Problem::bad_request(format!(
            "could not read the request body: {error}"
        )))),
        Ok(Ok(collected)) => {
            let mut data = collected.aggregate();
            Ok(data.copy_to_bytes(data.remaining()))
        }
    }
}

async fn read_json<T, B>(request: Request<B>, config: &HttpConfig) -> Result<T, Problem>
where
    T: DeserializeOwned,
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let body = read_limited(
        request.into_body(),
        MAX_JSON_BODY_BYTES,
        config.body_read_timeout,
    )
    .await
    .map_err(|problem| match problem {
        BodyProblem::TooLarge => Problem::too_large(format!(
            "the JSON body is over the limit of {MAX_JSON_BODY_BYTES} bytes"
        )),
        BodyProblem::Other(problem) => problem,
    })?;
    serde_json::from_slice(&body)
        .map_err(|error| Problem::bad_request(format!("invalid JSON body: {error}")))
}

fn quorum_name(kind: QuorumKind) -> &'static str {
    match kind {
        QuorumKind::Read => "read",
        QuorumKind::Write => "write",
        QuorumKind::Durable => "durable",
    }
}

fn join_ids(ids: &[NodeId]) -> String {
    ids.iter().map(NodeId::as_str).collect::<Vec<_>>().join(",")
}

/// The HTTP answer to a node's reply, with the outcome it counts as.
fn reply_response(reply: Reply) -> (Response<ResponseBody>, Outcome) {
    match reply {
        Reply::Got {
            mut values,
            context,
            replicas,
            fallbacks,
            read_your_writes,
        } => {
            let mut response = match values.len() {
                0 => {
                    let mut response = empty_response(StatusCode::NOT_FOUND);
                    // A tombstone's context lets the next put supersede the delete.
                    if !context.is_empty() {
                        set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
                    }
                    response
                }
                1 => {
                    let value = values.pop().unwrap_or_default();
                    let mut response = Response::new(Full::new(Bytes::from(value)));
                    set_header(&mut response, "content-type", "application/octet-stream");
                    set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
                    response
                }
                count => {
                    let boundary = pick_boundary(&values);
                    let body = multipart_body(&values, &boundary);
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = StatusCode::MULTIPLE_CHOICES;
                    set_header(
                        &mut response,
                        "content-type",
                        &format!("multipart/mixed; boundary={boundary}"),
                    );
                    set_header(&mut response, api::HEADER_SIBLINGS, &count.to_string());
                    set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
                    response
                }
            };
            set_header(&mut response, api::HEADER_REPLICAS, &join_ids(&replicas));
            set_header(&mut response, api::HEADER_FALLBACKS, &join_ids(&fallbacks));
            set_header(
                &mut response,
                api::HEADER_READ_YOUR_WRITES,
                if read_your_writes { "true" } else { "false" },
            );
            (response, Outcome::Ok)
        }
        Reply::Written {
            context,
            dot,
            replicas,
            durable,
            fallbacks,
            read_your_writes,
        } => {
            let mut response = empty_response(StatusCode::NO_CONTENT);
            set_header(&mut response, api::HEADER_CONTEXT, &context.to_base64());
            set_header(&mut response, api::HEADER_DOT, &dot.to_string());
            set_header(&mut response, api::HEADER_REPLICAS, &join_ids(&replicas));
            set_header(&mut response, api::HEADER_FALLBACKS, &join_ids(&fallbacks));
            set_header(&mut response, api::HEADER_DURABLE, &join_ids(&durable));
            set_header(
                &mut response,
                api::HEADER_READ_YOUR_WRITES,
                if read_your_writes { "true" } else { "false" },
            );
            (response, Outcome::Ok)
        }
        Reply::Unavailable {
            kind,
            needed,
            answered,
        } => {
            let body = api::ErrorBody {
                error: format!(
                    "{} quorum not reached: {needed} needed, {} answered in time",
                    quorum_name(kind),
                    answered.len()
                ),
                kind: "unavailable".to_string(),
                quorum: Some(quorum_name(kind).to_string()),
                needed: Some(needed),
                answered: answered.iter().map(|id| id.as_str().to_string()).collect(),
            };
            (
                json_response(StatusCode::SERVICE_UNAVAILABLE, &body),
                Outcome::Unavailable,
            )
        }
        Reply::Failed { reason } => (
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", reason).into_response(),
            Outcome::Failed,
        ),
        // 507 Insufficient Storage (RFC 4918): the coordinator's disk is full and nothing was
        // written; reads keep working, and the write may succeed through another node.
        Reply::StorageFull { reason } => (
            Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_full",
                format!("the disk of this node is full, nothing was written: {reason}"),
            )
            .into_response(),
            Outcome::Failed,
        ),
    }
}

/// A random multipart boundary that occurs in none of the values (so no value can end a part).
fn pick_boundary(values: &[Vec<u8>]) -> String {
    loop {
        let boundary = format!("ringkv-{:032x}", rand::random::<u128>());
        let needle = boundary.as_bytes();
        let clashes = values
            .iter()
            .any(|value| value.windows(needle.len()).any(|window| window == needle));
        if !clashes {
            return boundary;
        }
    }
}

/// RFC 2046 `multipart/mixed`: each part is `--boundary CRLF headers CRLF CRLF value`, the CRLF
/// before the next delimiter belonging to the delimiter; the body ends with `--boundary--`.
fn multipart_body(values: &[Vec<u8>], boundary: &str) -> Vec<u8> {
    let size = values
        .iter()
        .map(|value| value.len() + boundary.len() + 64)
        .sum::<usize>();
    let mut body = Vec::with_capacity(size + boundary.len() + 8);
    for value in values {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    body
}

// ----- /cluster, /ring, /health -----

fn status_name(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Joining => "joining",
        MemberStatus::Up => "up",
        MemberStatus::Leaving => "leaving",
        MemberStatus::Down => "down",
        MemberStatus::Removed => "removed",
    }
}

fn conflict_mode_name(mode: ConflictMode) -> &'static str {
    match mode {
        ConflictMode::Siblings => "siblings",
        ConflictMode::LastWriterWins => "lww",
    }
}

fn member_docs(status: &NodeStatus) -> Vec<api::MemberDoc> {
    // A joining node without a ring owns nothing, whatever placeholder ring it routes by.
    let owned = if status.ring_version.is_some() {
        status.ring.partition_counts()
    } else {
        Default::default()
    };
    status
        .view
        .members()
        .map(|member: &MemberInfo| {
            let alive = status.alive.contains(&member.id);
            // "As this node sees it": a member the failure detector does not hear from is down
            // here, whatever the view says (the view's Down is only an operator's mark).
            let seen = match member.status {
                MemberStatus::Up | MemberStatus::Joining if !alive => MemberStatus::Down,
                other => other,
            };
            (member, alive, seen)
        })
        .map(|(member, alive, seen)| api::MemberDoc {
            id: member.id.as_str().to_string(),
            status: status_name(seen).to_string(),
            alive,
            zone: member.zone.clone(),
            capacity: member.capacity,
            peer_addr: member.peer_address.clone(),
            http_addr: member.client_address.clone(),
            partitions: owned.get(&member.id).copied().unwrap_or(0),
        })
        .collect()
}

fn props_doc(bucket: &[u8], props: &BucketProps) -> api::BucketPropsDoc {
    api::BucketPropsDoc {
        bucket: String::from_utf8_lossy(bucket).into_owned(),
        n: props.n,
        r: props.r.to_string(),
        w: props.w.to_string(),
        dw: props.dw.to_string(),
        conflict_mode: conflict_mode_name(props.conflict_mode).to_string(),
    }
}

/// The `/cluster` document for a node's status.
pub fn cluster_status(status: &NodeStatus) -> api::ClusterStatus {
    api::ClusterStatus {
        cluster: status.view.cluster().to_string(),
        node: status.node.as_str().to_string(),
        claimant: status.view.claimant().map(|id| id.as_str().to_string()),
        ring_version: status.ring_version,
        members: member_docs(status),
        hints_pending: status.hints_pending,
        transfers_pending: u32::try_from(status.partitions_moving.len()).unwrap_or(u32::MAX),
        in_flight: status.in_flight,
        buckets: status
            .view
            .buckets()
            .map(|(bucket, _, props)| props_doc(bucket, props))
            .collect(),
        merkle_roots: status
            .merkle_roots
            .iter()
            .map(|(partition, root)| (partition.0, format!("{root:016x}")))
            .collect(),
    }
}

/// The `/ring` document for a node's status (version 0 when the node has no ring; [`handle`]
/// answers 503 then).
pub fn ring_doc(status: &NodeStatus) -> api::RingDoc {
    let ring = &status.ring;
    let target_n = ring.config().target_n;
    let moving: std::collections::HashMap<PartitionId, &Vec<NodeId>> = status
        .partitions_moving
        .iter()
        .map(|(partition, receivers)| (*partition, receivers))
        .collect();
    let to_strings =
        |ids: &[NodeId]| -> Vec<String> { ids.iter().map(|id| id.as_str().to_string()).collect() };
    let partitions = (0..ring.partition_count())
        .map(|index| {
            let partition = PartitionId(index);
            api::PartitionDoc {
                id: index,
                start: ring.partition_start(partition).to_string(),
                replicas: to_strings(&ring.partition_preference_list(partition, target_n)),
                moving_to: moving
                    .get(&partition)
                    .map(|receivers| to_strings(receivers))
                    .unwrap_or_default(),
            }
        })
        .collect();
    api::RingDoc {
        cluster: status.view.cluster().to_string(),
        node: status.node.as_str().to_string(),
        version: status.ring_version.unwrap_or(0),
        partition_count: ring.partition_count(),
        target_n: u32::try_from(target_n).unwrap_or(u32::MAX),
        strategy: match ring.config().strategy {
            Strategy::Partitions => "partitions",
            Strategy::Tokens { .. } => "tokens",
        }
        .to_string(),
        members: member_docs(status),
        partitions,
    }
}

fn health(status: &NodeStatus) -> api::Health {
    api::Health {
        status: if status.ring_version.is_some() {
            "ok"
        } else {
            "no_ring"
        }
        .to_string(),
        node: status.node.as_str().to_string(),
        alive_members: u32::try_from(status.alive.len()).unwrap_or(u32::MAX),
        members: u32::try_from(
            status
                .view
                .members()
                .filter(|member| member.status != MemberStatus::Removed)
                .count(),
        )
        .unwrap_or(u32::MAX),
    }
}

// ----- /buckets -----

async fn bucket_props<B>(
    node: &NodeHandle,
    config: &HttpConfig,
    request: Request<B>,
    bucket: Vec<u8>,
) -> Result<Response<ResponseBody>, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if bucket.is_empty() {
        return Err(Problem::bad_request("the bucket name is empty"));
    }
    match *request.method() {
        Method::GET => {
            let status = node.status().await?;
            let props = status
                .view
                .bucket(&bucket)
                .unwrap_or(&status.default_bucket);
            Ok(json_response(StatusCode::OK, &props_doc(&bucket, props)))
        }
        Method::PUT => {
            let doc: api::BucketPropsDoc = read_json(request, config).await?;
            let props = parse_props(&doc)?;
            node.command(Command::SetBucket { bucket, props }).await?;
            Ok(empty_response(StatusCode::NO_CONTENT))
        }
        ref other => Err(Problem::method_not_allowed(other, "GET, PUT")),
    }
}

fn parse_props(doc: &api::BucketPropsDoc) -> Result<BucketProps, Problem> {
    let quorum = |name: &str, value: &str| {
        parse_quorum(value.trim()).map_err(|error| Problem::bad_request(format!("{name}: {error}")))
    };
    let conflict_mode = match doc.conflict_mode.trim().to_ascii_lowercase().as_str() {
        "siblings" => ConflictMode::Siblings,
        "lww" | "last_writer_wins" => ConflictMode::LastWriterWins,
        other => {
            return Err(Problem::bad_request(format!(
                "conflict_mode {other:?} is neither siblings nor lww"
            )))
        }
    };
    Ok(BucketProps {
        n: doc.n,
        r: quorum("r", &doc.r)?,
        w: quorum("w", &doc.w)?,
        dw: quorum("dw", &doc.dw)?,
        conflict_mode,
    })
}

// ----- /ui -----

async fn serve_ui(config: &HttpConfig, file: &str) -> Result<Response<ResponseBody>, Problem> {
    let not_found = || Problem::not_found("no such UI file");
    let Some(root) = &config.ui_dir else {
        return Err(Problem::not_found("the web UI is not configured"));
    };
    let path = ui_path(root, file).ok_or_else(not_found)?;
    let is_file = tokio::fs::metadata(&path)
        .await
        .map(|metadata| metadata.is_file())
        .unwrap_or(false);
    if !is_file {
        return Err(not_found());
    }
    let contents = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let mut response = Response::new(Full::new(Bytes::from(contents)));
    set_header(&mut response, "content-type", content_type(&path));
    Ok(response)
}

/// The file under `root` a `/ui/...` path names, or `None` when it would leave `root` (a `..`,
/// an absolute or odd segment).
fn ui_path(root: &Path, file: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    let mut segments = 0;
    for raw in file.split('/') {
        if raw.is_empty() {
            continue;
        }
        let segment = percent_decode_str(raw).decode_utf8().ok()?;
        let unsafe_segment = segment == "."
            || segment == ".."
            || segment.contains(['/', '\\', '\0', ':'])
            || segment.starts_with('.');
        if unsafe_segment {
            return None;
        }
        path.push(segment.as_ref());
        segments += 1;
    }
    if segments == 0 || file.ends_with('/') {
        path.push("index.html");
    }
    Some(path)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("html") | Some("htm") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

// ----- response helpers -----

fn set_header(response: &mut Response<ResponseBody>, name: &'static str, value: &str) {
    // Node ids are operator-chosen; one with bytes a header cannot carry is left out rather
    // than failing the answer.
    match HeaderValue::from_str(value) {
        Ok(value) => {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
        Err(_) => tracing::debug!(header = name, "header value not representable; left out"),
    }
}

fn empty_response(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Lets a page served elsewhere (the visualizer's live mode opened from a file or another
/// server) read the cluster's shape. Only `GET /ring` and `GET /cluster` carry it: they are
/// read-only and hold no data.
fn readable_anywhere(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response.headers_mut().insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response<ResponseBody> {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(error) => {
            // The documents are plain structs; this cannot happen, but must not panic.
            tracing::error!(%error, "could not encode a JSON answer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"could not encode the answer","kind":"failed"}"#.to_vec(),
            )
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::pin::Pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::task::{Context as TaskContext, Poll};

    use http::HeaderMap;
    use http_body_util::{Empty, StreamBody};
    use hyper::body::Frame;
    use ringkv_core::error::CommandError;
    use ringkv_core::membership::ClusterView;
    use ringkv_core::ring::{Member, Ring, RingConfig};
    use ringkv_core::version::{ActorId, Content, Dot, Object, VersionVector};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::node_loop::NodeRequest;

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
                            let (arrived, release) =
                                (Arc::clone(&slow_arrived), Arc::clone(&release));
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
                RequestError::Quorum(ringkv_core::error::QuorumError::ZeroN),
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
        let closed =
            tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
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
}

#[cfg(test)]
mod target_properties {
    use http::{HeaderValue, StatusCode};
    use proptest::prelude::*;
    use ringkv_core::config::{QuorumValue, RequestOptions};
    use ringkv_core::version::{ActorId, ConflictMode, Content, Context, Object};

    use super::{parse_kv_target, KvTarget, Problem, MAX_TIMEOUT_MS};

    /// `bytes` percent-encoded the way any client might: each byte as `%XX` or `%xx`, or as
    /// itself where that is unambiguous, as `escape` chooses.
    fn encode(bytes: &[u8], escape: &[u8]) -> String {
        let mut out = String::new();
        for (index, &byte) in bytes.iter().enumerate() {
            let choice = escape.get(index).copied().unwrap_or(0) % 3;
            if byte.is_ascii_alphanumeric() && choice == 0 {
                out.push(char::from(byte));
            } else if choice == 1 {
                out.push_str(&format!("%{byte:02x}"));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    fn quorum() -> impl Strategy<Value = Option<QuorumValue>> {
        proptest::option::of(prop_oneof![
            Just(QuorumValue::One),
            Just(QuorumValue::Quorum),
            Just(QuorumValue::All),
            any::<u32>().prop_map(QuorumValue::Count),
        ])
    }

    fn options() -> impl Strategy<Value = RequestOptions> {
        (
            proptest::option::of(any::<u32>()),
            quorum(),
            quorum(),
            quorum(),
            proptest::option::of(1..=MAX_TIMEOUT_MS),
        )
            .prop_map(|(n, r, w, dw, timeout_ms)| RequestOptions {
                n,
                r,
                w,
                dw,
                timeout_ms,
            })
    }

    /// The context after writes by `writers` actors (empty for none).
    fn context(writers: u8) -> Context {
        let mut object = Object::new();
        for actor in 0..writers {
            let actor = ActorId::new(format!("n{actor}"));
            let value = Content::Value(vec![actor.as_str().len() as u8]);
            object.update(
                &Default::default(),
                &actor,
                value,
                1,
                ConflictMode::Siblings,
            );
        }
        object.context()
    }

    fn query(options: &RequestOptions) -> Option<String> {
        let mut pairs = Vec::new();
        for (name, value) in [("r", options.r), ("w", options.w), ("dw", options.dw)] {
            if let Some(value) = value {
                pairs.push(format!("{name}={value}"));
            }
        }
        if let Some(n) = options.n {
            pairs.push(format!("n={n}"));
        }
        if let Some(timeout) = options.timeout_ms {
            pairs.push(format!("timeout_ms={timeout}"));
        }
        (!pairs.is_empty()).then(|| pairs.join("&"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn percent_encoded_targets_parse_back_to_the_same_bytes(
            bucket in proptest::collection::vec(any::<u8>(), 1..40),
            key in proptest::collection::vec(any::<u8>(), 1..40),
            escape in proptest::collection::vec(any::<u8>(), 40),
            options in options(),
            writers in 0u8..4,
        ) {
            let context = context(writers);
            let path = format!("/kv/{}/{}", encode(&bucket, &escape), encode(&key, &escape));
            let header = (!context.is_empty())
                .then(|| HeaderValue::from_str(&context.to_base64()).unwrap());
            let parsed = parse_kv_target(&path, query(&options).as_deref(), header.as_ref(), 40);
            prop_assert_eq!(parsed, Ok(KvTarget { bucket, key, options, context }));
        }

        #[test]
        fn garbage_targets_never_panic_and_are_refused_with_400(
            path in "(/kv/)?[^?#]{0,40}",
            query in proptest::option::of(".{0,40}"),
            header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        ) {
            let header = header.and_then(|bytes| HeaderValue::from_bytes(&bytes).ok());
            match parse_kv_target(&path, query.as_deref(), header.as_ref(), 10) {
                Err(refusal) => {
                    let problem = Problem::from(refusal);
                    prop_assert_eq!(problem.status, StatusCode::BAD_REQUEST);
                    prop_assert!(!problem.message.is_empty());
                }
                Ok(target) => {
                    prop_assert!(!target.bucket.is_empty() && !target.key.is_empty());
                    prop_assert!(target.key.len() <= 10);
                }
            }
        }

        #[test]
        fn the_fuzz_check_holds_on_near_valid_targets(
            bucket in "[a-z%0-9/]{0,6}",
            key in "[a-z%0-9/]{0,6}",
            query in "[a-z_&=%0-9]{0,30}",
            header in "[A-Za-z0-9_ -]{0,12}",
        ) {
            let input = format!("/kv/{bucket}/{key}?{query}\n{header}");
            crate::fuzzing::http_request(input.as_bytes());
        }
    }
}
