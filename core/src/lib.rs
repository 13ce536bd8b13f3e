//! # ringkv-core
//!
//! The protocol of ringkv, a Dynamo-style key-value store, as pure state machines: placement on a
//! consistent-hash ring ([`ring`]), dotted version vectors and siblings ([`version`]), quorum
//! coordination ([`node`], [`coordinator`]), anti-entropy Merkle trees ([`merkle`]), storage as
//! effects ([`storage`], [`store`]), the peer wire format ([`wire`]), and a deterministic cluster
//! simulator ([`sim`]) with a history checker ([`checker`]).
//!
//! The vocabulary every part shares sits at the bottom of the module graph, which has no cycle
//! (`tests/tests/core_modules.rs` checks it): ids and time ([`id`]), bucket properties and
//! quorums ([`bucket`]), requests and replies with the one request check ([`request`]), and the
//! node's inputs and outputs ([`io`]).
//!
//! This crate never reads a clock, opens a file or a socket, spawns a thread, or draws global
//! randomness. Time is a number of milliseconds passed in with every input; randomness is a seeded
//! RNG. That is what lets one simulator run a whole cluster faster than real time, replay any run
//! from its seed, and run unchanged in Python and in the browser. It is `#![no_std]` (with
//! `alloc`), which makes the rule a compile error rather than a convention.
//!
//! ## A host's loop
//! A host feeds inputs, drains outputs and sleeps until the next deadline. With the in-memory
//! store answering storage effects inline:
//! ```
//! use ringkv_core::{io::{ClientRequest, Output, Reply}, ring::Member, store::{drive, MemStore}};
//! use ringkv_core::{config::{NodeConfig, RequestOptions, QuorumValue}, node::Node};
//!
//! let mut config = NodeConfig::new("n1");
//! config.default_bucket.n = 1;
//! config.default_bucket.r = QuorumValue::One;
//! config.default_bucket.w = QuorumValue::One;
//! let mut node = Node::new(config, vec![Member::new("n1", 1)], 0).unwrap();
//! let mut store = MemStore::new();
//! let put = ClientRequest::Put { bucket: b"b".to_vec(), key: b"k".to_vec(),
//!     context: Default::default(), value: b"v".to_vec(), options: RequestOptions::default() };
//! node.handle_client(0, 1, put).unwrap();
//! for output in drive(&mut node, &mut store, 0) {
//!     match output {
//!         Output::Reply { request_id, reply } => assert!(matches!(reply, Reply::Written { .. })),
//!         Output::Send { .. } => { /* write to the peer's connection */ }
//!         Output::Event(_) | Output::Storage { .. } => {}
//!     }
//! }
//! // A real host also sleeps until `node.poll_timeout()` and then calls `node.handle_timeout(now)`.
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod bucket;
pub mod checker;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod id;
pub mod io;
pub mod membership;
pub mod merkle;
pub mod node;
pub mod request;
pub mod ring;
pub mod sim;
pub mod storage;
pub mod store;
pub mod version;
pub mod wire;

pub use id::NodeId;
