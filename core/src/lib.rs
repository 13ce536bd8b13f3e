//! # ringkv-core
//!
//! The protocol of ringkv, a Dynamo-style key-value store, as pure state machines: placement on a
//! consistent-hash ring ([`ring`]), dotted version vectors and siblings ([`version`]), quorum
//! coordination ([`node`], [`coordinator`]), anti-entropy Merkle trees ([`merkle`]), the cluster
//! view and failure detector ([`membership`]), storage as effects ([`storage`], [`store`]), the
//! peer wire format ([`wire`]), and a deterministic cluster simulator ([`sim`]) with a history
//! checker ([`checker`]).
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
//! ## The node and its host
//! One [`Node`](node::Node) per server. Everything that happens to it is an input (`handle_*`);
//! everything it wants done is an output ([`Output`](io::Output), drained with `poll_output`):
//! send a [`Message`](wire::Message) to a peer, perform a [`StorageOp`](storage::StorageOp) and answer
//! it with its op id, reply to a client, or report an [`Event`](io::Event). `poll_timeout` says
//! when to call `handle_timeout` next. A host is a loop; a whole one, with an in-memory store
//! answering storage at once and the peer transport left out:
//! ```
//! use ringkv_core::{bucket::{QuorumValue, RequestOptions}, config::NodeConfig, node::Node};
//! use ringkv_core::{io::Output, request::{ClientRequest, Reply}, ring::Member};
//! use ringkv_core::store::MemStore;
//!
//! let mut config = NodeConfig::new("n1");
//! config.default_bucket.n = 1;
//! config.default_bucket.r = QuorumValue::One;
//! config.default_bucket.w = QuorumValue::One;
//! let mut node = Node::new(config, vec![Member::new("n1", 1)], 0).unwrap();
//! let mut store = MemStore::new();
//! let mut now = 0; // milliseconds, from any clock the host likes; it must not go backwards
//!
//! // Input: a client's put (the host picks request ids; the reply carries it back).
//! let put = ClientRequest::Put { bucket: b"cart".to_vec(), key: b"alice".to_vec(),
//!     context: Default::default(), value: b"milk".to_vec(), options: RequestOptions::default() };
//! node.handle_client(now, 1, put).unwrap();
//! let mut answered = false;
//! while !answered {
//!     // Drain every output and perform it.
//!     while let Some(output) = node.poll_output() {
//!         match output {
//!             // Write to the peer's connection; what arrives is `node.handle_message(now, from, m)`.
//!             Output::Send { to, message } => { let _ = (to, message); }
//!             // Perform it (a real host batches writes into one group commit), then answer it.
//!             Output::Storage { op_id, op } => {
//!                 let result = store.apply(&op);
//!                 node.handle_storage(now, op_id, result);
//!             }
//!             Output::Reply { request_id, reply } => {
//!                 assert_eq!(request_id, 1);
//!                 assert!(matches!(reply, Reply::Written { .. }));
//!                 answered = true;
//!             }
//!             // Logs and metrics.
//!             Output::Event(_) => {}
//!         }
//!     }
//!     // Sleep until the next deadline (or the next input), then tell the node the time.
//!     if let Some(deadline) = node.poll_timeout() {
//!         now = now.max(deadline);
//!         node.handle_timeout(now);
//!     }
//! }
//! ```
//! The two real drivers are the native host's node task (`host-native/src/node_loop.rs`: tokio,
//! redb with group commit, TCP peers) and the simulator ([`sim::Sim`]: many nodes, a virtual clock
//! that jumps to the next deadline, a network that drops, delays and partitions, and stores that
//! crash); [`store::drive`] is the small inline driver used by tests and the bindings.
//!
//! ## The life of a put
//! 1. A client sends `put(bucket, key, context, value)` to any node. The node checks it (sizes,
//!    quorums) and finds the key's preference list: the MD5 position of bucket and key falls in
//!    one of Q partitions, and the first N distinct nodes clockwise own it
//!    ([`ring::Ring::preference_list`]). A node that is not an owner forwards the request to the
//!    first reachable owner.
//! 2. The coordinator (an owner) reads its own replica, applies the write against the client's
//!    context (it removes exactly the siblings the context has seen and adds the new value with a
//!    fresh dot of this node's actor: [`version::Object::update`]), and stores it. Writes of one
//!    key are queued so that two never interleave.
//! 3. It sends the stored object to the other N-1 targets. An owner that the failure detector
//!    finds down, or that let a request time out, is replaced by the next reachable node of the
//!    extended preference list, which keeps the write as a *hint* for that owner (sloppy quorum).
//! 4. Each replica merges the object into its own ([`version::Object::merge`]) and acknowledges;
//!    with `dw`, after an fsync. Once W have acknowledged (DW durably) the client is answered with
//!    the new context; the others still get the write. Too few acknowledgements by the deadline
//!    is a [`Reply::Unavailable`](request::Reply::Unavailable) saying how many answered: an outcome,
//!    not an error.
//!
//! ## The life of a get
//! The coordinator asks R of the N targets (its own replica first, then owners in its zone), merges
//! the replies as they come, and answers at R: one value, or siblings, and a context covering all
//! of them. The other targets are asked when one of those fails, when they all answered without
//! saying anything about the key, or once they are slower than the 99th percentile of recent
//! replica reads (a speculative retry); a sampled share of gets
//! ([`config::NodeConfig::read_all_percent`]) asks all N. It waits while an owner is still being
//! asked unless some reply holds the key, so fallbacks' "not found" alone do not make a quorum.
//! Replicas that answered stale, missing or damaged get the merged object back (read repair).
//!
//! ## In the background
//! - **Membership** ([`membership`]): each node keeps a cluster view, a CRDT of members (status,
//!   capacity, zone, addresses), bucket properties and the ring. Every gossip round it exchanges
//!   the view's digest with one live peer (seeds keep the graph connected); every message is a
//!   heartbeat for the phi-accrual failure detector. Joins, leaves and removals are changes of
//!   the view; the *claimant* (the lowest-id up member) turns them into a next ring.
//! - **Transfers**: every node that gains a partition under the next ring pulls it from the
//!   current replicas in resumable chunks and records in the view when it has it; writes made
//!   meanwhile are copied to it. The claimant switches to the next ring once all are recorded.
//! - **Hint delivery**: a node scans its hints and sends each to its owner once that owner is
//!   reachable again; the hint is deleted when the owner has it synced. The same path hands
//!   records of partitions the node no longer holds (*orphans*) to their replicas.
//! - **Anti-entropy** ([`merkle`]): a Merkle tree per partition replica, updated on every write
//!   and rebuilt from the store in pages; each round one partition's tree is compared with one
//!   other replica's, and the keys that differ are repaired by a two-replica read.
//! - **Reaping**: a tombstone leaves the disk once its grace period is over and the key's first
//!   replica has read the same tombstone from every replica, under a ring that is not moving.
//!
//! The node's code follows these subsystems, one file each under `node/`.
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
pub mod listing;
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
