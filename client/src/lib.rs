//! `ringkv-client`: how a program talks to a ringkv cluster.
//!
//! - [`api`]: the HTTP API's contract (header names, and the JSON documents of `/ring`,
//!   `/cluster`, `/health`, bucket properties and error answers). Always built; it needs only
//!   serde, so other hosts (the WebAssembly bindings) share the documents instead of copying them.
//! - [`Client`] (feature `http`, on by default): the async, partition-aware client over HTTP(S),
//!   with a retry policy that never silently doubles a write; see [`http`] for how it routes and
//!   retries. [`tls`] builds its TLS settings (and holds the PEM loader the server shares).
//!
//! A client user compiles tokio, hyper and rustls, not the server's storage engine or metrics.
//!
//! ```no_run
//! # async fn example() -> Result<(), ringkv_client::ClientError> {
//! use ringkv_client::{Client, ClientConfig, Options};
//!
//! let client = Client::new(ClientConfig {
//!     nodes: vec!["http://127.0.0.1:8087".into()],
//!     ..ClientConfig::default()
//! })?;
//! let read = client.get(b"carts", b"alice", &Options::default()).await?;
//! client
//!     .put(b"carts", b"alice", read.context.as_deref(), "milk".into(), &Options::default())
//!     .await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod api;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod tls;

#[cfg(feature = "http")]
pub use self::http::{
    encode_segment, member_url, multipart_boundary, normalize_node_url, parse_multipart,
    plan_targets, prefer_zone, retry_decision, BackupDownload, Client, ClientConfig, ClientError,
    Condition, FailureKind, GetResult, Idempotence, KeyPage, MgetResult, Options, PutResult,
    RetryDecision, RoutingTable, WatchResult, MAX_PATH_BYTES,
};
