//! Replays every committed fuzz input through the same check its fuzz target runs: the
//! corpus in `fuzz/corpus/<target>/` and the inputs that once crashed a target, kept in
//! `fuzz/regressions/<target>/`. Runs on stable, in every `cargo test`.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use gotalk_fuzz_harness::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join(target);
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs `check` on each file, and fails naming every file whose check panicked.
fn replay(kind: &str, target: &str, check: fn(&[u8])) -> usize {
    let files = inputs(kind, target);
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("read a fuzz input");
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: these inputs fail its check: {failed:#?}");
    files.len()
}

#[test]
fn every_corpus_input_passes_its_target_check() {
    for (target, check) in TARGETS {
        let n = replay("corpus", target, check);
        // An empty corpus would make this test pass without checking anything.
        assert!(n > 0, "fuzz/corpus/{target}/ has no inputs");
    }
}

#[test]
fn every_crash_found_by_fuzzing_stays_fixed() {
    for (target, check) in TARGETS {
        replay("regressions", target, check);
    }
}
