//! Identities and time: the names of nodes, requests, storage operations and coordinations, and
//! the millisecond clock values every input carries.
//!
//! A leaf module: it imports nothing else of the crate, so every other module may use it without
//! creating an import cycle.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Milliseconds since an epoch the host picks. The core never reads a clock: every `now` is an input.
pub type Millis = u64;

/// Id of a client request, chosen by the host; unique among the requests in flight on one node.
pub type RequestId = u64;

/// Id a coordinator gives to one request it coordinates; replies carry it back.
pub type CoordinationId = u64;

/// Id of a storage operation, chosen by the node; the host answers with the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// The name of one physical node (a server process with its own store), such as `"n1"`.
///
/// Node ids are compared, ordered and hashed as strings; they are chosen by the operator (or the
/// simulator) and never derived from addresses, so a node keeps its identity when it moves.
///
/// The name is shared ([`Arc`](alloc::sync::Arc)): a node keeps the ids of all its peers in its
/// view, its ring, its failure detector and its messages, and copies of one id (all the nodes'
/// copies, in the simulator) share one allocation. Serialized as a plain string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(alloc::sync::Arc<str>);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(NodeId::from)
    }
}

impl NodeId {
    /// Wraps a name as a node id.
    pub fn new(name: impl Into<String>) -> Self {
        NodeId(alloc::sync::Arc::from(name.into()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeId {
    fn from(name: &str) -> Self {
        NodeId::new(name)
    }
}

impl From<String> for NodeId {
    fn from(name: String) -> Self {
        NodeId(alloc::sync::Arc::from(name))
    }
}
