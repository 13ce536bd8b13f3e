//! Cross-crate and cluster tests live in `tests/tests/`; this library holds what they share
//! beyond one file: the network-namespace cluster harness and the Jepsen-style campaign.

pub mod jepsen;
pub mod netns;

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
