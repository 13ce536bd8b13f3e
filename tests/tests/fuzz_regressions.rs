//! Replays the fuzz corpora with stable Rust: every file under `fuzz/corpus/<target>/` (the
//! seeds) and `fuzz/regressions/<target>/` (inputs that once made a target fail, copied there by
//! `scripts/fuzz`) goes through the same check as the fuzz target, `ringkv::fuzzing::<target>`.
//! So a decoder bug that fuzzing found once stays fixed, even where nobody runs the fuzzer.

use std::fs;
use std::path::{Path, PathBuf};

use ringkv::fuzzing::{seeds, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted (none when it does not exist: a target may have no crasher yet).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_input_passes_its_check() {
    let mut replayed = 0;
    for (target, check) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(kind).join(target)) {
                let data = fs::read(&path).expect("a readable input");
                // A failing check panics; say which file it was.
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{} fails its check", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= seeds().len(), "only {replayed} inputs found");
}

#[test]
fn the_directories_name_known_targets() {
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(kind)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("a readable directory entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(target, _)| *target == name),
                "fuzz/{kind}/{name} is not a fuzz target"
            );
        }
    }
}

/// The committed seeds are those `ringkv::fuzzing::seeds` makes, so a format change that makes
/// them stale is noticed. `RINGKV_WRITE_FUZZ_SEEDS=1 cargo test -p ringkv-tests --test
/// fuzz_regressions` writes them.
#[test]
fn the_seed_corpus_is_up_to_date() {
    let write = std::env::var("RINGKV_WRITE_FUZZ_SEEDS").is_ok_and(|value| value == "1");
    for (target, name, bytes) in seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(name);
        if write {
            fs::create_dir_all(path.parent().expect("a corpus directory"))
                .expect("the corpus directory can be made");
            fs::write(&path, &bytes).expect("the seed can be written");
        }
        let committed = fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is stale or missing: rerun with RINGKV_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}
