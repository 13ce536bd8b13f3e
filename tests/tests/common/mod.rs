//! What the multi-process tests share: finding the `ringkv` binary and free loopback ports.

pub mod answers;
pub mod cluster;

use std::net::{SocketAddr, TcpListener};

pub use ringkv_tests::ringkv_binary;

/// A loopback address whose port was free a moment ago.
pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
