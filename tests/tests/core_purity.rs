//! The core must stay sans-IO: no runtime, no clocks, no files, sockets, threads or global RNG.
//! `#![no_std]` already makes most of that a compile error; this test guards the rest (dependencies
//! that would bring them in, and a `std` escape hatch).

use std::path::Path;
use std::process::Command;

const FORBIDDEN_CRATES: &[&str] = &[
    "tokio",
    "hyper",
    "mio",
    "async-std",
    "smol",
    "getrandom",
    "socket2",
    "libc",
    "std-time",
];
const FORBIDDEN_TEXT: &[&str] = &[
    "std::time",
    "std::fs",
    "std::net",
    "std::thread",
    "SystemTime",
    "Instant::now",
    "thread_rng",
    "OsRng",
    "from_entropy",
    "getrandom",
];

#[test]
fn core_dependency_tree_has_no_runtime_or_os_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "ringkv-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        tree.contains("md-5"),
        "unexpected cargo tree output: {tree}"
    );
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(
            !FORBIDDEN_CRATES.contains(&name),
            "ringkv-core depends on {name}, which does I/O or reads the clock:\n{tree}"
        );
    }
}

#[test]
fn core_sources_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/src");
    let mut files = vec![src];
    let mut checked = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                files.push(entry.unwrap().path());
            }
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        checked += 1;
        for forbidden in FORBIDDEN_TEXT {
            assert!(
                !text.contains(forbidden),
                "{} mentions {forbidden}: the core takes time and randomness as inputs",
                path.display()
            );
        }
        // `std` may only be linked for unit tests.
        for (i, line) in text.lines().enumerate() {
            if line.trim() == "extern crate std;" {
                let previous = text.lines().nth(i.wrapping_sub(1)).unwrap_or("");
                assert_eq!(
                    previous.trim(),
                    "#[cfg(test)]",
                    "{}: std outside tests",
                    path.display()
                );
            }
        }
        if path.ends_with("lib.rs") {
            assert!(
                text.contains("#![no_std]"),
                "core/src/lib.rs must stay #![no_std]"
            );
        }
    }
    assert!(checked > 5);
}
