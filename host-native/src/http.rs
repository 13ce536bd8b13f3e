//! The client HTTP API (contract in [`ringkv_client::api`]) served over a [`NodeHandle`] with hyper 1.x.
//!
//! [`serve`] runs the accept loop: HTTP/1.1 (keep-alive) and HTTP/2 with prior knowledge on the
//! same port, optionally inside TLS ([`HttpConfig::tls`]), a connection limit, a header read
//! timeout against slow clients (which also bounds the TLS handshake), a lingering close of an
//! HTTP/1 connection answered before its request body was read (so that a client still sending
//! the body reads the answer rather than a reset), and a graceful shutdown that lets requests in
//! flight finish. [`handle`] is the router as a plain function, so
//! every route can be tested without a socket.
//!
//! The host holds no protocol logic: this module only translates HTTP into
//! [`ClientRequest`](ringkv_core::request::ClientRequest)s and [`Command`]s and the node's answers back into HTTP.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Body;
use ringkv_client::api;
use ringkv_core::error::RequestError;
use ringkv_core::id::NodeId;
use ringkv_core::io::Command;
use ringkv_core::request::{DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES};
use serde::Serialize;
use std::convert::Infallible;

use crate::node_loop::{NodeError, NodeHandle};

mod admin;
mod buckets;
mod cluster;
mod keys;
mod kv;
mod lingering;
mod listener;
#[cfg(test)]
mod target_properties;
#[cfg(test)]
mod tests;
mod ui;

use self::buckets::bucket_props;
pub use self::cluster::{cluster_status, ring_doc};
use self::cluster::{health, readiness_failures};
use self::kv::{decode_segment, kv, parse_bucket_key, read_json, KV_PREFIX};
pub use self::kv::{parse_kv_target, BadTarget, KvTarget};
pub use self::listener::serve;
use self::ui::serve_ui;

/// The body of every response [`handle`] builds: most are whole in memory ([`full_body`]); a
/// multi-get's is streamed as its keys are read.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// A response body of bytes already in memory.
pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed()
}

/// How long [`serve`] waits, once shut down, for the requests in flight before it drops the
/// connections that are still open.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `/readyz` waits for the node task's status before it answers 503
/// (`node_unresponsive`): a probe must not hang when the node is busy.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// How long an HTTP/1 connection whose answer was sent before its request body was read (a
    /// 413 from the `Content-Length`, an early 400) stays open to read and discard the rest of
    /// the body, so that a client still sending it gets to read the answer (a lingering close,
    /// as nginx does).
    pub lingering_time: Duration,
    /// The most body bytes discarded in such a lingering close.
    pub lingering_bytes: u64,
    /// Directory of the web UI's static files, served under `/ui`.
    pub ui_dir: Option<PathBuf>,
    /// Serve HTTPS with this TLS configuration (`None`: plain HTTP). The handshake must end
    /// within `header_read_timeout`, counted from the accept, like the first request.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for HttpConfig {
    /// 1024 connections, the core's default key and value limits, 10 s for headers, 30 s for a
    /// body, a lingering close of at most 5 s and 64 MiB, no UI.
    fn default() -> Self {
        HttpConfig {
            max_connections: 1024,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            lingering_time: Duration::from_secs(5),
            lingering_bytes: 64 * 1024 * 1024,
            ui_dir: None,
            tls: None,
        }
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
                | RequestError::Quorum(_)
                | RequestError::ContextOfAnotherKey
                | RequestError::DeleteWithoutContext
                | RequestError::Ttl(_)
                | RequestError::TtlNotOnPut
                | RequestError::ConditionOnRead
                | RequestError::DeleteIfAbsent
                | RequestError::ListLimit { .. }
                | RequestError::Cursor(_)
                | RequestError::WatchWait { .. }
                | RequestError::BadRecord { .. } => Problem::bad_request(message),
                // 429: this node holds as many watches as it may; another node may not.
                RequestError::TooManyWatches { .. } => {
                    Problem::new(StatusCode::TOO_MANY_REQUESTS, "too_many_watches", message)
                }
                RequestError::ValueTooLarge { .. } => Problem::too_large(message),
                // The cluster is smaller than the quorum: the answer names the fix.
                RequestError::TooFewMembers { .. } => {
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "too_few_members", message)
                }
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
        "/livez" => {
            only(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            // Answered here, without the node task: it says the process serves HTTP.
            Ok(json_response(StatusCode::OK, &probe(node, Vec::new())))
        }
        "/readyz" => {
            only(&method, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(readiness(node).await)
        }
        "/metrics" => {
            only(&method, &[Method::GET], "GET")?;
            let mut response = Response::new(full_body(node.metrics().render()));
            set_header(&mut response, "content-type", "text/plain; version=0.0.4");
            Ok(response)
        }
        "/admin/backup" => {
            only(&method, &[Method::GET], "GET")?;
            admin::backup(node).await
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
            if let Some(rest) = path.strip_prefix("/admin/restore/") {
                only(&method, &[Method::PUT], "PUT")?;
                return admin::restore(node, config, request, rest).await;
            }
            if let Some(rest) = path.strip_prefix("/replica/") {
                only(&method, &[Method::GET], "GET")?;
                let (bucket, key) = parse_bucket_key(rest, "/replica", config.max_key_bytes)?;
                return match node.local_record(bucket, key).await? {
                    None => Err(Problem::not_found("this node holds no replica of the key")),
                    Some(record) => {
                        let mut response = Response::new(full_body(record));
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
                let bucket = decode_segment(bucket, "bucket")?;
                return bucket_props(node, config, request, bucket).await;
            }
            Err(Problem::not_found(format!("no such resource: {path}")))
        }
    }
}

fn probe(node: &NodeHandle, failed: Vec<String>) -> api::Probe {
    api::Probe {
        status: if failed.is_empty() { "ok" } else { "not_ready" }.to_string(),
        node: node.node_id().as_str().to_string(),
        failed,
    }
}

/// `/readyz`: 200 when every check passes, else 503 naming the ones that failed.
async fn readiness(node: &NodeHandle) -> Response<ResponseBody> {
    let stopping = node.is_draining();
    let failed = if stopping {
        // No need to ask the node: it is not ready whatever it says.
        vec!["stopping".to_string()]
    } else {
        match tokio::time::timeout(READINESS_TIMEOUT, node.status()).await {
            Ok(Ok(status)) => readiness_failures(&status, node.is_draining()),
            Ok(Err(_)) => vec!["stopping".to_string()],
            Err(_) => vec!["node_unresponsive".to_string()],
        }
    };
    let code = if failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(code, &probe(node, failed))
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
    let mut response = Response::new(full_body(Bytes::new()));
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
    let mut response = Response::new(full_body(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
