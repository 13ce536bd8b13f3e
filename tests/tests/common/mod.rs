//! What the multi-process tests share: finding the `ringkv` binary and free loopback ports.

pub mod cluster;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

/// The `ringkv` binary next to the test executable's folder (`scripts/test` builds it first).
pub fn ringkv_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/ringkv
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("ringkv"))
        .expect("target folder");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p ringkv` first (scripts/test does)",
        binary.display()
    );
    binary
}

/// A loopback address whose port was free a moment ago.
pub fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
