//! Identities of the physical nodes of a cluster.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

/// The name of one physical node (a server process with its own store), such as `"n1"`.
///
/// Node ids are compared, ordered and hashed as strings; they are chosen by the operator (or the
/// simulator) and never derived from addresses, so a node keeps its identity when it moves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Wraps a name as a node id.
    pub fn new(name: impl Into<String>) -> Self {
        NodeId(name.into())
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
        NodeId(name)
    }
}
