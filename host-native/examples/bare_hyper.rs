//! The HTTP ceiling baseline of `bench/compare.sh`: a minimal hyper 1.x server with no storage
//! and no protocol, answering GET with a fixed 100-byte body and anything else with 204, so the
//! same `ringkv bench` load can run against it and against a ringkv cluster.
//!
//! `cargo run --release -p ringkv --example bare_hyper -- 127.0.0.1:18000`

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.method() == Method::GET {
        *response.body_mut() = Full::new(Bytes::from_static(&[b'x'; 100]));
    } else {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18000".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
