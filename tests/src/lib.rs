//! Cross-crate and cluster tests live in `tests/tests/`; this library holds what they share
//! beyond one file: the network-namespace cluster harness and the Jepsen-style campaign.

pub mod jepsen;
pub mod netns;
