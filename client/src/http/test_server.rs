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
pub struct Received {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Requests received so far.
pub type Log = Arc<Mutex<Vec<Received>>>;

/// Serves `handler` on 127.0.0.1 (any port); returns the base URL and the request log.
pub async fn spawn<F>(handler: F) -> (String, Log)
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
pub fn answer(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap()
}
