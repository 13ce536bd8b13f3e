//! The async client of the HTTP API ([`crate::api`]): partition-aware routing and a retry policy
//! that never silently doubles a write.
//!
//! ## Routing
//!
//! The client learns the ring from `GET /ring` ([`api::RingDoc`]) and sends each key request to the
//! first replica of the key's partition that the ring document reports alive and in the cluster
//! (`up`, `joining` or `leaving`), so that the coordinator is usually an owner and no forwarding hop
//! is needed. After those replicas come the configured nodes (in rotating order, to spread load),
//! then any other live member of the ring. Before the first ring arrives, or when routing is off
//! ([`ClientConfig::ring_refresh`] zero), requests go to the configured nodes in rotation.
//!
//! The ring is re-read in the background every [`ClientConfig::ring_refresh`] and soon after a
//! connection failure. A node that refused a connection is tried last for a few seconds.
//!
//! A member's `http_addr` is used as `{scheme}://{http_addr}`, with the scheme of the node the
//! ring document came from (a cluster serves HTTPS on every node or on none); a wildcard address
//! (`0.0.0.0`, `[::]`) is replaced by that node's host.
//!
//! ## HTTPS
//!
//! `https://` node URLs are reached over TLS (rustls); the server's certificate must name the
//! host of the URL and chain to [`ClientConfig::ca_file`] when one is given, else to the Mozilla
//! roots. A failed TLS handshake is a connection failure: nothing was sent.
//!
//! ## Retries
//!
//! Each attempt goes to one node and is bounded by [`ClientConfig::request_timeout`] (stretched to
//! the request's own `timeout_ms` plus a second, so the server can answer 503 before the client
//! gives up). What happens after a failed attempt depends on what the request is:
//!
//! - **Reads** (`GET` of a key, `/ring`, `/cluster`, bucket properties) and idempotent writes of
//!   cluster metadata (bucket properties, removing a member) are retried on the next node after any
//!   transport failure: connection refused, timeout, connection reset.
//! - **Key writes** (`PUT` and `DELETE`) are retried on the next node **only when the request was
//!   certainly not sent**: the connection could not be established (hyper's `is_connect()`). Once
//!   bytes may have left (timeout, reset, connection closed before the answer) the client returns
//!   [`ClientError::OutcomeUnknown`] and does not retry: a blind retry without the new context
//!   would turn one write into two siblings. The caller decides (typically: read, then write again
//!   with the context read).
//! - A `503` quorum failure is returned as [`ClientError::Unavailable`] and never retried
//!   automatically: a write that missed its quorum may still have been applied on some replicas.
//!   A read that meets a node without a ring or shutting down is tried on the next node.
//! - A `507` (the coordinator's disk is full) says that nothing was written, so a key write is
//!   tried on the next node (which coordinates it with its own disk); after the last,
//!   [`ClientError::StorageFull`].
//!
//! The HTTP pool itself only re-sends a request when the pooled connection was found closed before
//! any byte of the request was written, which is safe for writes too.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ringkv_core::config::QuorumValue;
use ringkv_core::ring::{key_position, partition_of, MAX_PARTITIONS};
use serde::de::DeserializeOwned;

use crate::api;

/// Bytes that stay literal in a path segment: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest answer body the client reads (several siblings of the largest values fit).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// At most this many nodes are tried for one request.
const MAX_ATTEMPTS: usize = 5;

/// How long a node that refused a connection is tried after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// The shortest gap between two ring refreshes triggered by connection failures.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(500);

/// Idle pooled connections are closed after this, before a server's idle timeout would close
/// them under a request: ringkv's server closes a keep-alive connection that sends no request
/// within its header-read timeout (10 s by default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Added to a request's `timeout_ms` so the server's own 503 arrives before the client gives up.
const SERVER_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// How to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Base URLs of nodes to start from, like `http://127.0.0.1:8087` or `https://db1:8087`
    /// (`http://` may be left out).
    pub nodes: Vec<String>,
    /// PEM file of the CA (or self-signed certificate) that `https://` nodes' certificates must
    /// chain to; `None`: the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for one attempt's answer.
    pub request_timeout: Duration,
    /// Longest wait for a TCP connection (keep it below `request_timeout`: a connect timeout is a
    /// failure before sending, which writes may retry elsewhere; a request timeout is not).
    pub connect_timeout: Duration,
    /// How often the ring is re-read for routing; zero turns partition-aware routing off.
    pub ring_refresh: Duration,
    /// Idle keep-alive connections kept per node.
    pub max_idle_per_host: usize,
    /// Largest value sent; a larger one is refused here with [`ClientError::TooLarge`]. (The
    /// server refuses it too, with 413, but it answers before reading the body and closes the
    /// connection, so the client would see a broken pipe and could not tell the write's outcome.)
    pub max_value_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            nodes: vec![String::from("http://127.0.0.1:8087")],
            ca_file: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            ring_refresh: Duration::from_secs(10),
            max_idle_per_host: 64,
            max_value_bytes: ringkv_core::config::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// Per-request overrides of the bucket's properties (`None` keeps the bucket's value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Read quorum.
    pub r: Option<QuorumValue>,
    /// Write quorum.
    pub w: Option<QuorumValue>,
    /// Durable-write quorum.
    pub dw: Option<QuorumValue>,
    /// Replication factor for this request.
    pub n: Option<u32>,
    /// The server's deadline for this request, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// What a `get` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetResult {
    /// The values: none when the key is absent or deleted, several when writes were concurrent
    /// (siblings; write back one value with [`GetResult::context`] to reconcile them).
    pub values: Vec<Bytes>,
    /// The causal context to pass to the next write (also given for a deleted key).
    pub context: Option<String>,
    /// The replicas that answered.
    pub replicas: Vec<String>,
    /// Fallback nodes that answered for unreachable owners.
    pub fallbacks: Vec<String>,
    /// The node that coordinated the request.
    pub node: Option<String>,
    /// `false` when `r + w <= n` for the request: the read may miss an acknowledged write.
    pub read_your_writes: bool,
    /// The base URL the request was sent to.
    pub endpoint: String,
}

impl GetResult {
    /// Whether the key holds at least one value.
    pub fn found(&self) -> bool {
        !self.values.is_empty()
    }
}

/// What a `put` or `delete` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResult {
    /// The context of the object written.
    pub context: Option<String>,
    /// The replicas that acknowledged.
    pub replicas: Vec<String>,
    /// Of those, the ones that had made the write durable.
    pub durable: Vec<String>,
    /// Fallback nodes that stood in for unreachable owners (they hold hints).
    pub fallbacks: Vec<String>,
    /// The node that coordinated the request.
    pub node: Option<String>,
    /// The dot the write was given (`actor:counter`): which sibling it is in every clock.
    pub dot: Option<String>,
    /// The base URL the request was sent to.
    pub endpoint: String,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server could not gather a quorum (503). A write may have been applied on some replicas.
    #[error("{}", describe_unavailable(.message, .quorum.as_deref(), *.needed, .answered))]
    Unavailable {
        /// The server's explanation.
        message: String,
        /// The quorum that failed: `read`, `write` or `durable`.
        quorum: Option<String>,
        /// Replicas needed.
        needed: Option<u32>,
        /// Replicas that answered in time.
        answered: Vec<String>,
    },
    /// The server refused the request as malformed (400), or the client could not form it.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The value, key or bucket is larger than the server accepts (413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A non-key resource does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The coordinating node's disk is full (507): nothing was written. Another node may take
    /// the write.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// Any other error answer.
    #[error("server answered {status} ({kind}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error class from [`api::ErrorBody::kind`] (empty when the body had none).
        kind: String,
        /// The server's explanation.
        message: String,
    },
    /// No node could be connected to: nothing was sent.
    #[error("could not connect: {0}")]
    Connect(String),
    /// A write was sent (or may have been) and no answer came: it may or may not be applied.
    #[error("outcome unknown, the write may or may not have been applied: {0}")]
    OutcomeUnknown(String),
    /// A read got no answer in time from any node tried.
    #[error("no answer in time: {0}")]
    Timeout(String),
    /// A read failed on every node tried with broken connections.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The answer could not be understood.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// A node address is not a usable `http://host:port` or `https://host:port` URL.
    #[error("invalid node address: {0}")]
    InvalidNode(String),
    /// The TLS settings (the CA file) are unusable.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// The configuration names no node.
    #[error("no nodes configured")]
    NoNodes,
}

/// The server's message, completed with the quorum figures it does not already state.
fn describe_unavailable(
    message: &str,
    quorum: Option<&str>,
    needed: Option<u32>,
    answered: &[String],
) -> String {
    let mut text = if message.is_empty() {
        String::from("quorum not met")
    } else {
        message.to_owned()
    };
    let mut details = Vec::new();
    if !message.contains("needed") {
        if let Some(quorum) = quorum {
            details.push(format!("{quorum} quorum"));
        }
        if let Some(needed) = needed {
            details.push(format!("needed {needed}, answered {}", answered.len()));
        }
    }
    if !answered.is_empty() {
        details.push(format!("answered by {}", answered.join(", ")));
    }
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    text
}

/// How a failed attempt failed, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be established: the request certainly was not sent.
    Connect,
    /// No answer within the attempt's deadline: the request may have been sent.
    Timeout,
    /// The connection broke (reset, closed before the answer): the request may have been sent.
    Broken,
}

/// Whether a request may safely be sent twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotence {
    /// Reads and idempotent metadata writes: any failed attempt may be retried elsewhere.
    Idempotent,
    /// Key writes: a second copy could create a sibling, so only unsent requests are retried.
    AtMostOnce,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the request to the next node.
    TryNextNode,
    /// Stop: the request may have been applied ([`ClientError::OutcomeUnknown`]).
    OutcomeUnknown,
}

/// The retry policy of the module doc, as a pure function.
pub fn retry_decision(idempotence: Idempotence, failure: FailureKind) -> RetryDecision {
    match (idempotence, failure) {
        (_, FailureKind::Connect) => RetryDecision::TryNextNode,
        (Idempotence::Idempotent, FailureKind::Timeout | FailureKind::Broken) => {
            RetryDecision::TryNextNode
        }
        (Idempotence::AtMostOnce, FailureKind::Timeout | FailureKind::Broken) => {
            RetryDecision::OutcomeUnknown
        }
    }
}

/// A failed attempt.
#[derive(Clone, Debug)]
struct Failure {
    kind: FailureKind,
    detail: String,
}

/// An answer, whatever its status.
#[derive(Clone, Debug)]
struct Answer {
    endpoint: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// A request ready to be sent to any node.
struct Prepared {
    method: Method,
    path_and_query: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    timeout: Duration,
}

type HttpClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A cluster client. Cloning is cheap: clones share the connection pool and the ring.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    nodes: Vec<String>,
    request_timeout: Duration,
    ring_refresh: Duration,
    max_value_bytes: usize,
    routing: RwLock<Option<Arc<RoutingTable>>>,
    refresh: Mutex<RefreshState>,
    suspects: Mutex<HashMap<String, Instant>>,
    rotation: AtomicUsize,
}

/// When the ring was last read, and whether a read is under way.
#[derive(Clone, Copy, Debug, Default)]
struct RefreshState {
    in_progress: bool,
    last_started: Option<Instant>,
    stale: bool,
}

impl RefreshState {
    /// Whether a background refresh should start now.
    fn due(&self, now: Instant, interval: Duration) -> bool {
        if self.in_progress || interval.is_zero() {
            return false;
        }
        match self.last_started {
            None => true,
            Some(last) => {
                let since = now.saturating_duration_since(last);
                since >= interval || (self.stale && since >= MIN_REFRESH_GAP)
            }
        }
    }
}

/// Clears `in_progress` when a background refresh ends, however it ends.
struct RefreshGuard(Client);

impl Drop for RefreshGuard {
    fn drop(&mut self) {
        lock(&self.0.inner.refresh).in_progress = false;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these locks leaves plain data behind; keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.inner.nodes)
            .field("request_timeout", &self.inner.request_timeout)
            .field("ring_refresh", &self.inner.ring_refresh)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the cluster `config.nodes` belong to. Connects lazily.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        if config.nodes.is_empty() {
            return Err(ClientError::NoNodes);
        }
        let mut nodes = Vec::with_capacity(config.nodes.len());
        for node in &config.nodes {
            let url = normalize_node_url(node)?;
            if !nodes.contains(&url) {
                nodes.push(url);
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        // The TLS layer above takes https:// URLs; this one must let them through.
        connector.enforce_http(false);
        let tls = crate::tls::client_config(config.ca_file.as_deref())
            .map_err(|error| ClientError::Tls(error.to_string()))?;
        // HTTP/1 only, as over plain TCP: the pool keeps one request per connection, which
        // spreads load the same way whatever the scheme.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                nodes,
                request_timeout: config.request_timeout,
                ring_refresh: config.ring_refresh,
                max_value_bytes: config.max_value_bytes,
                routing: RwLock::new(None),
                refresh: Mutex::new(RefreshState::default()),
                suspects: Mutex::new(HashMap::new()),
                rotation: AtomicUsize::new(0),
            }),
        })
    }

    /// The configured nodes, normalized to `http://host:port` or `https://host:port`.
    pub fn nodes(&self) -> &[String] {
        &self.inner.nodes
    }

    /// Reads `bucket`/`key`. An absent or deleted key is `Ok` with no values.
    pub async fn get(
        &self,
        bucket: &[u8],
        key: &[u8],
        options: &Options,
    ) -> Result<GetResult, ClientError> {
        let answer = self
            .kv_request(
                Method::GET,
                Idempotence::Idempotent,
                (bucket, key),
                Vec::new(),
                Bytes::new(),
                options,
            )
            .await?;
        decode_get(answer)
    }

    /// Writes `value` to `bucket`/`key`. Pass the context of the last read to replace what it
    /// saw; without one, the value becomes a sibling of whatever is stored.
    pub async fn put(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: Option<&str>,
        value: Bytes,
        options: &Options,
    ) -> Result<PutResult, ClientError> {
        if value.len() > self.inner.max_value_bytes {
            return Err(ClientError::TooLarge(format!(
                "value of {} bytes is over the limit of {}",
                value.len(),
                self.inner.max_value_bytes
            )));
        }
        let mut headers = context_header(context)?;
        headers.push((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ));
        let answer = self
            .kv_request(
                Method::PUT,
                Idempotence::AtMostOnce,
                (bucket, key),
                headers,
                value,
                options,
            )
            .await?;
        decode_write(answer)
    }

    /// Deletes `bucket`/`key` (writes a tombstone). The context of the last read makes the delete
    /// replace what it saw.
    pub async fn delete(
        &self,
        bucket: &[u8],
        key: &[u8],
        context: Option<&str>,
        options: &Options,
    ) -> Result<PutResult, ClientError> {
        let answer = self
            .kv_request(
                Method::DELETE,
                Idempotence::AtMostOnce,
                (bucket, key),
                context_header(context)?,
                Bytes::new(),
                options,
            )
            .await?;
        decode_write(answer)
    }

    /// One `/kv/{bucket}/{key}` request, sent to the key's owners first.
    async fn kv_request(
        &self,
        method: Method,
        idempotence: Idempotence,
        (bucket, key): (&[u8], &[u8]),
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        options: &Options,
    ) -> Result<Answer, ClientError> {
        let request = self.prepare(
            method,
            checked_kv_path(bucket, key, options)?,
            headers,
            body,
            options.timeout_ms,
        );
        self.execute(idempotence, self.key_targets(bucket, key), &request)
            .await
    }

    /// `GET /cluster` from `node` (a base URL), or from any node.
    pub async fn cluster_status(
        &self,
        node: Option<&str>,
    ) -> Result<api::ClusterStatus, ClientError> {
        let targets = match node {
            Some(node) => vec![normalize_node_url(node)?],
            None => self.any_targets(),
        };
        let answer = self.get_path(targets, "/cluster").await?;
        decode_json(&answer)
    }

    /// `GET /replica/{bucket}/{key}` from `node` (a base URL): that node's own stored record of
    /// the key (decode it with `ringkv_core::version::Object::decode`), `None` when it holds
    /// none. For checkers and debugging; applications read with [`Client::get`].
    pub async fn replica(
        &self,
        node: &str,
        bucket: &[u8],
        key: &[u8],
    ) -> Result<Option<Bytes>, ClientError> {
        let path = format!(
            "/replica/{}/{}",
            encode_segment(bucket),
            encode_segment(key)
        );
        let answer = self
            .get_path(vec![normalize_node_url(node)?], &path)
            .await?;
        match answer.status {
            StatusCode::OK => Ok(Some(answer.body)),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(error_from_status(status, &answer.body)),
        }
    }

    /// `GET /ring` from any node; also refreshes the routing table.
    pub async fn ring(&self) -> Result<api::RingDoc, ClientError> {
        let answer = self.get_path(self.any_targets(), "/ring").await?;
        let doc: api::RingDoc = decode_json(&answer)?;
        let table = RoutingTable::from_doc(&doc, &answer.endpoint)?;
        self.install(table);
        Ok(doc)
    }

    /// Re-reads the ring now (normally done in the background).
    pub async fn refresh_ring(&self) -> Result<(), ClientError> {
        self.ring().await.map(|_| ())
    }

    /// Asks `node` (a base URL; it must be alone in its cluster) to join the cluster of the node
    /// whose peer address is `seed`.
    pub async fn join(&self, node: &str, seed: &str) -> Result<(), ClientError> {
        let body = json_body(&api::JoinRequest {
            seed: seed.to_owned(),
        })?;
        self.post(
            Idempotence::AtMostOnce,
            vec![normalize_node_url(node)?],
            "/cluster/join",
            body,
        )
        .await
    }

    /// Asks `node` (a base URL) to leave the cluster, handing its partitions over first.
    pub async fn leave(&self, node: &str) -> Result<(), ClientError> {
        self.post(
            Idempotence::AtMostOnce,
            vec![normalize_node_url(node)?],
            "/cluster/leave",
            None,
        )
        .await
    }

    /// Marks the member `node_id` as gone for good (asked of any node; idempotent).
    pub async fn remove(&self, node_id: &str) -> Result<(), ClientError> {
        let body = json_body(&api::RemoveRequest {
            node: node_id.to_owned(),
        })?;
        self.post(
            Idempotence::Idempotent,
            self.any_targets(),
            "/cluster/remove",
            body,
        )
        .await
    }

    /// The properties of `bucket`.
    pub async fn bucket_props(&self, bucket: &[u8]) -> Result<api::BucketPropsDoc, ClientError> {
        let answer = self
            .get_path(self.any_targets(), &props_path(bucket))
            .await?;
        decode_json(&answer)
    }

    /// Sets the properties of `bucket` cluster-wide (idempotent, so retried like a read).
    pub async fn set_bucket_props(
        &self,
        bucket: &[u8],
        props: &api::BucketPropsDoc,
    ) -> Result<(), ClientError> {
        let headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        let body = serde_json::to_vec(props)
            .map_err(|error| ClientError::BadRequest(format!("cannot encode props: {error}")))?;
        let request = self.prepare(
            Method::PUT,
            props_path(bucket),
            headers,
            Bytes::from(body),
            None,
        );
        let answer = self
            .execute(Idempotence::Idempotent, self.any_targets(), &request)
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(error_from_status(answer.status, &answer.body))
        }
    }

    /// `GET /health` of `node` (a base URL). A node without a ring answers 503 with a health
    /// document, returned here as `Ok` with `status` `no_ring`.
    pub async fn health(&self, node: &str) -> Result<api::Health, ClientError> {
        let answer = self
            .get_path(vec![normalize_node_url(node)?], "/health")
            .await?;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(health) = serde_json::from_slice::<api::Health>(&answer.body) {
                return Ok(health);
            }
        }
        decode_json(&answer)
    }

    fn prepare(
        &self,
        method: Method,
        path_and_query: String,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
        timeout_ms: Option<u64>,
    ) -> Prepared {
        let timeout = match timeout_ms {
            Some(ms) => self
                .inner
                .request_timeout
                .max(Duration::from_millis(ms).saturating_add(SERVER_ANSWER_GRACE)),
            None => self.inner.request_timeout,
        };
        Prepared {
            method,
            path_and_query,
            headers,
            body,
            timeout,
        }
    }

    async fn get_path(&self, targets: Vec<String>, path: &str) -> Result<Answer, ClientError> {
        let request = self.prepare(Method::GET, path.to_owned(), Vec::new(), Bytes::new(), None);
        self.execute(Idempotence::Idempotent, targets, &request)
            .await
    }

    async fn post(
        &self,
        idempotence: Idempotence,
        targets: Vec<String>,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(), ClientError> {
        let headers = match body {
            Some(_) => vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            None => Vec::new(),
        };
        let request = self.prepare(
            Method::POST,
            path.to_owned(),
            headers,
            body.unwrap_or_default(),
            None,
        );
        let answer = self.execute(idempotence, targets, &request).await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(error_from_status(answer.status, &answer.body))
        }
    }

    /// Nodes to try for a key, best first.
    fn key_targets(&self, bucket: &[u8], key: &[u8]) -> Vec<String> {
        self.maybe_refresh_ring();
        let table = self.table();
        let routed: Vec<&str> = match &table {
            Some(table) => table.replicas_for(bucket, key).collect(),
            None => Vec::new(),
        };
        self.plan(&routed, table.as_deref())
    }

    /// Nodes to try for a request any node can answer.
    fn any_targets(&self) -> Vec<String> {
        let table = self.table();
        self.plan(&[], table.as_deref())
    }

    fn plan(&self, routed: &[&str], table: Option<&RoutingTable>) -> Vec<String> {
        let rotation = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
        let others: &[String] = table.map(|t| t.members.as_slice()).unwrap_or(&[]);
        let now = Instant::now();
        let suspects = lock(&self.inner.suspects);
        plan_targets(routed, &self.inner.nodes, rotation, others, |url| {
            suspects
                .get(url)
                .is_some_and(|since| now.saturating_duration_since(*since) < SUSPECT_FOR)
        })
    }

    fn table(&self) -> Option<Arc<RoutingTable>> {
        if self.inner.ring_refresh.is_zero() {
            return None;
        }
        self.inner
            .routing
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn install(&self, table: RoutingTable) {
        *self
            .inner
            .routing
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(table));
        // An explicit read counts as the latest refresh, so no background read follows at once.
        lock(&self.inner.refresh).last_started = Some(Instant::now());
    }

    /// Starts a background ring read when one is due.
    fn maybe_refresh_ring(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut state = lock(&self.inner.refresh);
            if !state.due(Instant::now(), self.inner.ring_refresh) {
                return;
            }
            state.in_progress = true;
            state.stale = false;
            state.last_started = Some(Instant::now());
        }
        let guard = RefreshGuard(self.clone());
        runtime.spawn(async move {
            if let Err(error) = guard.0.refresh_ring().await {
                tracing::debug!(%error, "ring refresh failed");
            }
            drop(guard);
        });
    }

    fn note_connect_failure(&self, endpoint: &str) {
        lock(&self.inner.suspects).insert(endpoint.to_owned(), Instant::now());
        lock(&self.inner.refresh).stale = true;
    }

    /// Sends `request` to the targets in order, following the retry policy.
    async fn execute(
        &self,
        idempotence: Idempotence,
        targets: Vec<String>,
        request: &Prepared,
    ) -> Result<Answer, ClientError> {
        if targets.is_empty() {
            return Err(ClientError::NoNodes);
        }
        let attempts = targets.len().min(MAX_ATTEMPTS);
        let mut failures: Vec<(String, Failure)> = Vec::new();
        for (index, endpoint) in targets.into_iter().take(attempts).enumerate() {
            match self.send_once(&endpoint, request).await {
                Ok(answer) => {
                    let last = index + 1 == attempts;
                    if !last && idempotence == Idempotence::Idempotent && node_cannot_serve(&answer)
                    {
                        failures.push((
                            endpoint,
                            Failure {
                                kind: FailureKind::Broken,
                                detail: String::from("the node cannot serve requests now"),
                            },
                        ));
                        continue;
                    }
                    // Nothing was written: safe to try the next node, writes included.
                    if !last && answer.status == StatusCode::INSUFFICIENT_STORAGE {
                        continue;
                    }
                    return Ok(answer);
                }
                Err(failure) => {
                    if failure.kind == FailureKind::Connect {
                        self.note_connect_failure(&endpoint);
                    }
                    match retry_decision(idempotence, failure.kind) {
                        RetryDecision::TryNextNode => failures.push((endpoint, failure)),
                        RetryDecision::OutcomeUnknown => {
                            return Err(ClientError::OutcomeUnknown(format!(
                                "{endpoint}: {}",
                                failure.detail
                            )));
                        }
                    }
                }
            }
        }
        Err(exhausted(&failures))
    }

    async fn send_once(&self, endpoint: &str, request: &Prepared) -> Result<Answer, Failure> {
        let uri: Uri = format!("{endpoint}{}", request.path_and_query)
            .parse()
            .map_err(|error| Failure {
                // Nothing was sent; the next node would fail the same way, but retrying is safe.
                kind: FailureKind::Connect,
                detail: format!("bad request URI: {error}"),
            })?;
        let mut builder = Request::builder().method(request.method.clone()).uri(uri);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        let http_request = builder
            .body(Full::new(request.body.clone()))
            .map_err(|error| Failure {
                kind: FailureKind::Connect,
                detail: format!("cannot build the request: {error}"),
            })?;
        let exchange = async {
            let response = self
                .inner
                .http
                .request(http_request)
                .await
                .map_err(|error| Failure {
                    kind: if error.is_connect() {
                        FailureKind::Connect
                    } else {
                        FailureKind::Broken
                    },
                    detail: error_chain(&error),
                })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| Failure {
                    kind: FailureKind::Broken,
                    detail: format!("reading the answer: {}", error_chain(error.as_ref())),
                })?
                .to_bytes();
            Ok(Answer {
                endpoint: endpoint.to_owned(),
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(request.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                kind: FailureKind::Timeout,
                detail: format!("no answer within {:?}", request.timeout),
            }),
        }
    }
}

/// A 503 from a node that could not coordinate at all (no ring yet, shutting down): another node
/// may serve the same read.
fn node_cannot_serve(answer: &Answer) -> bool {
    if answer.status != StatusCode::SERVICE_UNAVAILABLE {
        return false;
    }
    serde_json::from_slice::<api::ErrorBody>(&answer.body)
        .is_ok_and(|body| matches!(body.kind.as_str(), "no_ring" | "shutting_down"))
}

/// The error after every attempt failed and each allowed another.
fn exhausted(failures: &[(String, Failure)]) -> ClientError {
    let detail = failures
        .iter()
        .map(|(endpoint, failure)| format!("{endpoint}: {}", failure.detail))
        .collect::<Vec<_>>()
        .join("; ");
    let kinds = || failures.iter().map(|(_, failure)| failure.kind);
    if kinds().all(|kind| kind == FailureKind::Connect) {
        ClientError::Connect(detail)
    } else if kinds().any(|kind| kind == FailureKind::Timeout) {
        ClientError::Timeout(detail)
    } else {
        ClientError::Transport(detail)
    }
}

/// An error and its sources, `: `-separated (hyper's own message alone says little).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn context_header(context: Option<&str>) -> Result<Vec<(HeaderName, HeaderValue)>, ClientError> {
    match context {
        None => Ok(Vec::new()),
        Some(context) => {
            let value = HeaderValue::from_str(context.trim()).map_err(|_| {
                ClientError::BadRequest(String::from("the context is not a valid header value"))
            })?;
            Ok(vec![(HeaderName::from_static(api::HEADER_CONTEXT), value)])
        }
    }
}

fn json_body<T: serde::Serialize>(value: &T) -> Result<Option<Bytes>, ClientError> {
    serde_json::to_vec(value)
        .map(|body| Some(Bytes::from(body)))
        .map_err(|error| ClientError::BadRequest(format!("cannot encode the request: {error}")))
}

/// Normalizes a node address to `http://host:port` or `https://host:port` (no path, no trailing
/// slash; no scheme means `http://`).
pub fn normalize_node_url(node: &str) -> Result<String, ClientError> {
    let trimmed = node.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|error| ClientError::InvalidNode(format!("{node:?}: {error}")))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        _ => {
            return Err(ClientError::InvalidNode(format!(
                "{node:?}: only http:// and https:// are supported"
            )))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| ClientError::InvalidNode(format!("{node:?}: no host")))?;
    if authority.host().is_empty() {
        return Err(ClientError::InvalidNode(format!("{node:?}: no host")));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ClientError::InvalidNode(format!(
            "{node:?}: a node address has no path"
        )));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The base URL of a member, from its `client_address`, with the scheme of `source`, the node
/// that described the member (HTTPS is a cluster-wide setting). A wildcard IP (the server
/// listens on all interfaces) is replaced by the host of `source`.
pub fn member_url(client_address: &str, source: &str) -> Option<String> {
    let client_address = client_address.trim();
    if client_address.is_empty() {
        return None;
    }
    let source: Option<Uri> = source.parse().ok();
    let scheme = match source.as_ref().and_then(Uri::scheme_str) {
        Some("https") => "https",
        _ => "http",
    };
    if let Ok(address) = client_address.parse::<SocketAddr>() {
        if address.ip().is_unspecified() {
            let host = source.as_ref()?.host()?;
            return normalize_node_url(&format!("{scheme}://{host}:{}", address.port())).ok();
        }
    }
    if client_address.contains("://") {
        return normalize_node_url(client_address).ok();
    }
    normalize_node_url(&format!("{scheme}://{client_address}")).ok()
}

/// Percent-encodes one path segment (bucket or key, arbitrary bytes). Segments of dots only are
/// fully encoded so that no URL normalization can read them as `.` or `..`.
pub fn encode_segment(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|&b| b == b'.') {
        return "%2E".repeat(bytes.len());
    }
    percent_encode(bytes, SEGMENT).to_string()
}

/// Longest request target sent: HTTP servers (hyper among them) refuse longer ones.
pub const MAX_PATH_BYTES: usize = 65_000;

/// [`kv_path`], refused as [`ClientError::TooLarge`] when the percent-encoded bucket and key do
/// not fit in a request target (binary bytes take three characters each).
fn checked_kv_path(bucket: &[u8], key: &[u8], options: &Options) -> Result<String, ClientError> {
    let path = kv_path(bucket, key, options);
    if path.len() > MAX_PATH_BYTES {
        return Err(ClientError::TooLarge(format!(
            "bucket and key take {} bytes percent-encoded; a request target holds at most {MAX_PATH_BYTES}",
            path.len()
        )));
    }
    Ok(path)
}

fn kv_path(bucket: &[u8], key: &[u8], options: &Options) -> String {
    format!(
        "/kv/{}/{}{}",
        encode_segment(bucket),
        encode_segment(key),
        query_string(options)
    )
}

fn props_path(bucket: &[u8]) -> String {
    format!("/buckets/{}/props", encode_segment(bucket))
}

/// `?r=..&w=..` for the overrides set, or nothing.
fn query_string(options: &Options) -> String {
    let mut pairs: Vec<String> = Vec::new();
    let quorums = [("r", options.r), ("w", options.w), ("dw", options.dw)];
    for (name, value) in quorums {
        if let Some(value) = value {
            pairs.push(format!("{name}={value}"));
        }
    }
    if let Some(n) = options.n {
        pairs.push(format!("n={n}"));
    }
    if let Some(ms) = options.timeout_ms {
        pairs.push(format!("timeout_ms={ms}"));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// The ring reduced to what routing needs: per partition, the base URLs of its usable replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingTable {
    partition_count: u32,
    /// Base URLs of usable members (alive, in the cluster, with an address).
    members: Vec<String>,
    /// `replicas[offsets[p]..offsets[p + 1]]`: indexes into `members` for partition `p`, in
    /// preference order.
    offsets: Vec<u32>,
    replicas: Vec<u32>,
}

impl RoutingTable {
    /// Builds the table from a ring document fetched from `source` (a base URL).
    pub fn from_doc(doc: &api::RingDoc, source: &str) -> Result<RoutingTable, ClientError> {
        let count = doc.partition_count;
        if !count.is_power_of_two() || count > MAX_PARTITIONS {
            return Err(ClientError::Decode(format!(
                "ring: partition count {count} is not a power of two up to {MAX_PARTITIONS}"
            )));
        }
        if doc.partitions.len() != count as usize {
            return Err(ClientError::Decode(format!(
                "ring: {} partitions listed, {count} declared",
                doc.partitions.len()
            )));
        }
        let mut by_id: Vec<Option<&api::PartitionDoc>> = vec![None; count as usize];
        for partition in &doc.partitions {
            let slot = by_id.get_mut(partition.id as usize).ok_or_else(|| {
                ClientError::Decode(format!("ring: partition id {} out of range", partition.id))
            })?;
            if slot.replace(partition).is_some() {
                return Err(ClientError::Decode(format!(
                    "ring: partition {} listed twice",
                    partition.id
                )));
            }
        }
        let mut members = Vec::new();
        let mut index_of: HashMap<&str, u32> = HashMap::new();
        for member in &doc.members {
            let usable =
                member.alive && matches!(member.status.as_str(), "up" | "joining" | "leaving");
            if !usable {
                continue;
            }
            if let Some(url) = member_url(&member.http_addr, source) {
                let index = u32::try_from(members.len())
                    .map_err(|_| ClientError::Decode(String::from("ring: too many members")))?;
                index_of.insert(member.id.as_str(), index);
                members.push(url);
            }
        }
        let mut offsets = Vec::with_capacity(count as usize + 1);
        let mut replicas = Vec::new();
        offsets.push(0);
        for partition in by_id.into_iter().flatten() {
            replicas.extend(
                partition
                    .replicas
                    .iter()
                    .filter_map(|id| index_of.get(id.as_str()).copied()),
            );
            let end = u32::try_from(replicas.len())
                .map_err(|_| ClientError::Decode(String::from("ring: too many replicas")))?;
            offsets.push(end);
        }
        Ok(RoutingTable {
            partition_count: count,
            members,
            offsets,
            replicas,
        })
    }

    /// Base URLs of the usable replicas of `bucket`/`key`, owner first.
    pub fn replicas_for<'a>(
        &'a self,
        bucket: &[u8],
        key: &[u8],
    ) -> impl Iterator<Item = &'a str> + 'a {
        let partition = partition_of(key_position(bucket, key), self.partition_count).0 as usize;
        let start = self.offsets.get(partition).copied().unwrap_or(0) as usize;
        let end = self.offsets.get(partition + 1).copied().unwrap_or(0) as usize;
        self.replicas
            .get(start..end)
            .unwrap_or(&[])
            .iter()
            .filter_map(|&index| self.members.get(index as usize).map(String::as_str))
    }

    /// Base URLs of every usable member.
    pub fn members(&self) -> &[String] {
        &self.members
    }
}

/// The order in which to try nodes: the key's usable replicas, then the configured nodes starting
/// at `rotation`, then other usable members; no duplicates, and suspects moved to the end.
pub fn plan_targets(
    routed: &[&str],
    configured: &[String],
    rotation: usize,
    other_members: &[String],
    is_suspect: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut order: Vec<&str> = Vec::new();
    let mut candidates: Vec<&str> = routed.to_vec();
    if !configured.is_empty() {
        let start = rotation % configured.len();
        candidates.extend(configured[start..].iter().map(String::as_str));
        candidates.extend(configured[..start].iter().map(String::as_str));
    }
    candidates.extend(other_members.iter().map(String::as_str));
    for candidate in candidates {
        if !order.contains(&candidate) {
            order.push(candidate);
        }
    }
    let (healthy, suspects): (Vec<&str>, Vec<&str>) =
        order.into_iter().partition(|url| !is_suspect(url));
    healthy
        .into_iter()
        .chain(suspects)
        .map(str::to_owned)
        .collect()
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    header_text(headers, name)
        .map(|text| {
            text.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn decode_get(answer: Answer) -> Result<GetResult, ClientError> {
    let values = match answer.status {
        StatusCode::OK => vec![answer.body.clone()],
        StatusCode::MULTIPLE_CHOICES => {
            let content_type = header_text(&answer.headers, CONTENT_TYPE.as_str())
                .ok_or_else(|| ClientError::Decode(String::from("300 without a content type")))?;
            let boundary = multipart_boundary(content_type)?;
            let values = parse_multipart(&answer.body, &boundary)?;
            if values.is_empty() {
                return Err(ClientError::Decode(String::from("300 with no siblings")));
            }
            if let Some(declared) = header_text(&answer.headers, api::HEADER_SIBLINGS) {
                if declared.parse::<usize>().ok() != Some(values.len()) {
                    return Err(ClientError::Decode(format!(
                        "{} siblings declared, {} received",
                        declared,
                        values.len()
                    )));
                }
            }
            values
        }
        StatusCode::NOT_FOUND => Vec::new(),
        status => return Err(error_from_status(status, &answer.body)),
    };
    let headers = &answer.headers;
    Ok(GetResult {
        values,
        context: header_text(headers, api::HEADER_CONTEXT).map(str::to_owned),
        replicas: header_list(headers, api::HEADER_REPLICAS),
        fallbacks: header_list(headers, api::HEADER_FALLBACKS),
        node: header_text(headers, api::HEADER_NODE).map(str::to_owned),
        read_your_writes: header_text(headers, api::HEADER_READ_YOUR_WRITES)
            .is_none_or(|text| !text.eq_ignore_ascii_case("false")),
        endpoint: answer.endpoint,
    })
}

fn decode_write(answer: Answer) -> Result<PutResult, ClientError> {
    if !answer.status.is_success() {
        return Err(error_from_status(answer.status, &answer.body));
    }
    let headers = &answer.headers;
    Ok(PutResult {
        context: header_text(headers, api::HEADER_CONTEXT).map(str::to_owned),
        replicas: header_list(headers, api::HEADER_REPLICAS),
        durable: header_list(headers, api::HEADER_DURABLE),
        fallbacks: header_list(headers, api::HEADER_FALLBACKS),
        node: header_text(headers, api::HEADER_NODE).map(str::to_owned),
        dot: header_text(headers, api::HEADER_DOT).map(str::to_owned),
        endpoint: answer.endpoint,
    })
}

fn decode_json<T: DeserializeOwned>(answer: &Answer) -> Result<T, ClientError> {
    if !answer.status.is_success() {
        return Err(error_from_status(answer.status, &answer.body));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|error| ClientError::Decode(format!("{}: {error}", answer.endpoint)))
}

/// The error an error answer stands for.
fn error_from_status(status: StatusCode, body: &Bytes) -> ClientError {
    let parsed = serde_json::from_slice::<api::ErrorBody>(body).ok();
    let message = match &parsed {
        Some(error) => error.error.clone(),
        None => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            }
        }
    };
    let kind = parsed
        .as_ref()
        .map(|error| error.kind.clone())
        .unwrap_or_default();
    match status {
        StatusCode::BAD_REQUEST => ClientError::BadRequest(message),
        StatusCode::PAYLOAD_TOO_LARGE => ClientError::TooLarge(message),
        StatusCode::NOT_FOUND => ClientError::NotFound(message),
        StatusCode::INSUFFICIENT_STORAGE => ClientError::StorageFull(message),
        StatusCode::SERVICE_UNAVAILABLE if kind == "outcome_unknown" => {
            ClientError::OutcomeUnknown(message)
        }
        StatusCode::SERVICE_UNAVAILABLE
            if parsed
                .as_ref()
                .is_some_and(|error| error.kind == "unavailable" || error.needed.is_some()) =>
        {
            let error = parsed.unwrap_or_else(|| api::ErrorBody {
                error: String::new(),
                kind: String::new(),
                quorum: None,
                needed: None,
                answered: Vec::new(),
            });
            ClientError::Unavailable {
                message,
                quorum: error.quorum,
                needed: error.needed,
                answered: error.answered,
            }
        }
        status => ClientError::Server {
            status: status.as_u16(),
            kind,
            message,
        },
    }
}

/// The boundary parameter of a `multipart/mixed` content type.
pub fn multipart_boundary(content_type: &str) -> Result<String, ClientError> {
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("multipart/mixed") {
        return Err(ClientError::Decode(format!(
            "expected multipart/mixed, got {media_type:?}"
        )));
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let boundary = match value.strip_prefix('"') {
            Some(quoted) => quoted
                .strip_suffix('"')
                .ok_or_else(|| ClientError::Decode(String::from("unterminated quoted boundary")))?
                .replace("\\\"", "\"")
                .replace("\\\\", "\\"),
            None => value.to_owned(),
        };
        // RFC 2046: 1 to 70 characters.
        if boundary.is_empty() || boundary.len() > 70 {
            return Err(ClientError::Decode(format!(
                "bad multipart boundary {boundary:?}"
            )));
        }
        return Ok(boundary);
    }
    Err(ClientError::Decode(String::from(
        "multipart/mixed without a boundary",
    )))
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        let offset = haystack.get(at..)?.iter().position(|&b| b == first)?;
        at += offset;
        if haystack.get(at..at + needle.len())? == needle {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// The bodies of the parts of a `multipart/mixed` body (RFC 2046): part headers are skipped,
/// bodies are returned as they are (arbitrary bytes). The preamble and epilogue are ignored.
pub fn parse_multipart(body: &Bytes, boundary: &str) -> Result<Vec<Bytes>, ClientError> {
    let malformed = |what: &str| ClientError::Decode(format!("malformed multipart body: {what}"));
    let dash_boundary = format!("--{boundary}").into_bytes();
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut position = if body.starts_with(&dash_boundary) {
        dash_boundary.len()
    } else {
        find(body, &delimiter, 0).ok_or_else(|| malformed("no boundary"))? + delimiter.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = body.get(position..).unwrap_or(&[]);
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the end of the boundary line.
        let padding = rest
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        position += padding;
        if !body.get(position..).unwrap_or(&[]).starts_with(b"\r\n") {
            return Err(malformed("boundary line not terminated"));
        }
        position += 2;
        // Part headers end with an empty line (immediately, when there are none).
        if body.get(position..).unwrap_or(&[]).starts_with(b"\r\n") {
            position += 2;
        } else {
            position = find(body, b"\r\n\r\n", position)
                .ok_or_else(|| malformed("part headers not terminated"))?
                + 4;
        }
        let end =
            find(body, &delimiter, position).ok_or_else(|| malformed("part not terminated"))?;
        parts.push(body.slice(position..end));
        position = end + delimiter.len();
    }
}

#[cfg(test)]
pub(crate) mod test_server {
    //! A tiny HTTP server with canned answers, for tests of the client, the bench and the CLI.

    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::{HeaderMap, Method, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    /// A request the server received.
    #[derive(Clone, Debug)]
    pub(crate) struct Received {
        pub method: Method,
        pub uri: String,
        pub headers: HeaderMap,
        pub body: Bytes,
    }

    /// Requests received so far.
    pub(crate) type Log = Arc<Mutex<Vec<Received>>>;

    /// Serves `handler` on 127.0.0.1 (any port); returns the base URL and the request log.
    pub(crate) async fn spawn<F>(handler: F) -> (String, Log)
    where
        F: Fn(&Received) -> Response<Full<Bytes>> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let handler = Arc::new(handler);
        let server_log = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = server_log.clone();
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    let log = log.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let received = Received {
                            method: parts.method,
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        };
                        let response = handler(&received);
                        log.lock().unwrap().push(received);
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (format!("http://{address}"), log)
    }

    /// An answer with `status`, `headers` and `body`.
    pub(crate) fn answer(
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let mut builder = Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::{answer, spawn};
    use super::*;
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
}
