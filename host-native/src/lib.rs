//! `ringkv`: the native host of the ringkv protocol core.
//!
//! A server process per machine ([`server`]) owns one protocol [`Node`](ringkv_core::node::Node)
//! in one task ([`node_loop`]), keeps its records on disk ([`storage`]), talks to its peers over
//! TCP ([`transport`]) and to clients over HTTP ([`http`], contract in [`ringkv_client::api`]),
//! either of them optionally over TLS ([`tls`]). The client library, which routes requests to a
//! key's owners, is the `ringkv-client` crate; the CLI ([`cli`]) and [`bench`](mod@bench), the load
//! generator, use it. [`fuzzing`] holds the checks the fuzz targets and the decoder
//! regression tests share.
//!
//! The host holds no protocol logic: placement, versions, quorums, hints, trees and membership
//! are decided in `ringkv-core`.

pub mod backup;
pub mod bench;
pub mod cli;
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod node_loop;
pub mod server;
pub mod storage;
pub mod systemd;
pub mod tls;
pub mod transport;
