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
//! A client given its own [`ClientConfig::zone`] (the datacenter or rack it runs in, as the
//! nodes' `zone` setting names them) tries a key's replicas in that zone first, in preference
//! order, then its other replicas, then the fallbacks above ([`RoutingTable::replicas_for_zone`]):
//! the request is coordinated without a cross-zone hop whenever an owner of the key is near.
//! Such a client reads the ring before its first key request (once; if that read fails, the
//! request goes on as without a ring), so that one is routed by zone too.
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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::api;

mod backup;
mod error;
mod keys;
mod multipart;
mod request;
mod response;
mod retry;
mod routing;
#[cfg(any(test, feature = "test-server"))]
#[doc(hidden)]
pub mod test_server;
#[cfg(test)]
mod tests;

pub use self::backup::BackupDownload;
pub use self::error::ClientError;
use self::error::{error_chain, error_from_status};
pub use self::keys::{KeyPage, MgetResult, WatchResult};
pub use self::multipart::{multipart_boundary, parse_multipart};
use self::request::{checked_kv_path, condition_headers, context_header, json_body, props_path};
pub use self::request::{encode_segment, Condition, Options, MAX_PATH_BYTES};
use self::response::{decode_get, decode_json, decode_write, Answer};
pub use self::response::{GetResult, PutResult};
use self::retry::{exhausted, node_cannot_serve, Failure};
pub use self::retry::{retry_decision, FailureKind, Idempotence, RetryDecision};
pub use self::routing::{member_url, normalize_node_url, plan_targets, prefer_zone, RoutingTable};

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
    /// The zone (datacenter, rack) the client runs in, as the nodes' `zone` setting names it: a
    /// key's replicas in this zone are tried before its other replicas. `None` (or empty): no
    /// preference, replicas in preference order.
    pub zone: Option<String>,
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
            zone: None,
            max_idle_per_host: 64,
            max_value_bytes: ringkv_core::request::DEFAULT_MAX_VALUE_BYTES,
        }
    }
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
    zone: Option<String>,
    /// Whether the ring read before the first key request (of a client with a zone) has begun.
    first_ring_started: AtomicBool,
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
            .field("zone", &self.inner.zone)
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
                zone: config.zone.filter(|zone| !zone.is_empty()),
                first_ring_started: AtomicBool::new(false),
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

    /// The zone whose replicas are tried first ([`ClientConfig::zone`]).
    pub fn zone(&self) -> Option<&str> {
        self.inner.zone.as_deref()
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
        headers.extend(condition_headers(options.condition.as_ref())?);
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

    /// Deletes what a read of `bucket`/`key` returns now: reads it (with `options`' r) and
    /// deletes with that read's context, as Riak's clients do. `Ok(None)` when there was nothing
    /// to delete (the key is absent or already deleted): nothing was written. Siblings written
    /// after the read, concurrently, survive the delete (as with [`Client::delete`]).
    pub async fn delete_current(
        &self,
        bucket: &[u8],
        key: &[u8],
        options: &Options,
    ) -> Result<Option<PutResult>, ClientError> {
        let read = self.get(bucket, key, options).await?;
        match read.context {
            Some(context) if read.found() => self
                .delete(bucket, key, Some(&context), options)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Deletes `bucket`/`key` (writes a tombstone) superseding what `context`, from the last read
    /// of the key, has seen. Without a context the server refuses it (400: it would delete
    /// nothing); [`Client::delete_current`] reads first.
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
                [
                    context_header(context)?,
                    condition_headers(options.condition.as_ref())?,
                ]
                .concat(),
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
        let targets = self.key_targets(bucket, key).await;
        self.execute(idempotence, targets, &request).await
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

    /// Asks a node's `/livez` (or `/readyz` when `ready`): its [`api::Probe`], whether it
    /// answered 200 (`status` is `ok`) or 503 (`not_ready`, naming the failed checks).
    pub async fn probe(&self, node: &str, ready: bool) -> Result<api::Probe, ClientError> {
        let path = if ready { "/readyz" } else { "/livez" };
        let answer = self.get_path(vec![normalize_node_url(node)?], path).await?;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(probe) = serde_json::from_slice::<api::Probe>(&answer.body) {
                return Ok(probe);
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
    async fn key_targets(&self, bucket: &[u8], key: &[u8]) -> Vec<String> {
        self.read_first_ring().await;
        self.maybe_refresh_ring();
        let table = self.table();
        let routed: Vec<&str> = match &table {
            Some(table) => table.replicas_for_zone(bucket, key, self.zone()),
            None => Vec::new(),
        };
        self.plan(&routed, table.as_deref())
    }

    /// A client with a zone reads the ring before its first key request, so that this request
    /// already goes to a replica in the zone (without a zone, the first requests go to the
    /// configured nodes while the ring is read in the background). Only the first request
    /// waits, and only once: after a failed read, routing goes on as without a ring.
    async fn read_first_ring(&self) {
        if self.inner.zone.is_none()
            || self.inner.ring_refresh.is_zero()
            || self.inner.first_ring_started.load(Ordering::Acquire)
            || self.table().is_some()
            || self.inner.first_ring_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if let Err(error) = self.refresh_ring().await {
            tracing::debug!(%error, "cannot read the ring before the first request");
        }
    }

    /// Nodes to try for a request any node can answer.
    fn any_targets(&self) -> Vec<String> {
        let table = self.table();
        self.plan(&[], table.as_deref())
    }

    fn plan(&self, routed: &[&str], table: Option<&RoutingTable>) -> Vec<String> {
        let rotation = self.inner.rotation.fetch_add(1, Ordering::Relaxed);
        let others: &[String] = table.map(|t| t.members()).unwrap_or(&[]);
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
