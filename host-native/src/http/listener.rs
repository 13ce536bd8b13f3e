//! The server: accepting connections (plain or TLS), serving each with hyper, and draining them
//! at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::lingering::{Lingering, RequestBody};
use super::*;
use crate::metrics::Metrics;
use crate::node_loop::NodeHandle;

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
            service_fn(move |request: Request<Incoming>| {
                first_request.notify_one();
                let node = node.clone();
                let config = Arc::clone(&config);
                async move {
                    let lingering = Lingering::of(&request, peer);
                    let (parts, body) = request.into_parts();
                    // The router reads the body through a reference, so that what it left
                    // unread is still here to discard once it has answered.
                    let mut body = RequestBody::new(body);
                    let request = Request::from_parts(parts, &mut body);
                    let mut response = handle(&node, &config, request).await;
                    lingering.close_after(body, &mut response, &config);
                    Ok::<_, Infallible>(response)
                }
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
