//! The binding layer's error: thrown to JavaScript as an `Error` with this message.

use ringkv_core::ring::RingError;
use ringkv_core::sim::SimConfigError;

/// Why a call was refused. JavaScript sees `new Error(error.to_string())`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bad argument: a quorum, a configuration, a size, a malformed object.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A node name the simulator does not know.
    #[error("unknown node {node:?}: the nodes are {known}")]
    UnknownNode {
        /// The name given.
        node: String,
        /// The simulator's nodes, comma-separated.
        known: String,
    },
    /// A membership or configuration no ring can be built from.
    #[error("invalid ring: {0}")]
    Ring(#[from] RingError),
    /// Simulator options the core refuses.
    #[error("invalid options: {0}")]
    Config(#[from] SimConfigError),
    /// A context that is not one ringkv issued.
    #[error("invalid context: {0}")]
    Context(String),
    /// A value that could not cross the boundary (should not happen: a bug in the layer).
    #[error("conversion failed: {0}")]
    Conversion(String),
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }
}
