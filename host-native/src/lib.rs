//! `ringkv`: the native host of the ringkv protocol core.
//!
//! A server process per machine ([`server`]) owns one protocol [`Node`](ringkv_core::node::Node)
//! in one task ([`node_loop`]), keeps its records on disk ([`storage`]), talks to its peers over
//! TCP ([`transport`]) and to clients over HTTP ([`http`], contract in [`api`]), either of them
//! optionally over TLS ([`tls`]). The [`client`] library routes requests to a key's owners;
//! [`bench`] is the load generator. [`fuzzing`] holds the checks the fuzz targets and the decoder
//! regression tests share.
//!
//! The host holds no protocol logic: placement, versions, quorums, hints, trees and membership
//! are decided in `ringkv-core`.

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod node_loop;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;
