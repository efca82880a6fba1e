//! The Go gotalk echo server the comparison loads: `go/benchecho`, built by this program with
//! Debian's `golang-go`, offline, inside a copy of the original gotalk module, and kept until
//! its source or the Go toolchain changes.
//!
//! The original gotalk is `$GOTALK_PEERS/gotalk-1.3.7`, or `../shared/peers/gotalk-1.3.7`
//! beside the repository (where the interop tests find it too). The build goes to
//! `$GOTALK_BENCH_GO_DIR`, or `gotalk-bench-go/` beside this program.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

/// The server's source, compiled into this program so the binary it builds always matches it.
const SOURCE: &str = include_str!("../../go/benchecho/main.go");

fn build_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GOTALK_BENCH_GO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find this program")?;
    Ok(exe.parent().context("this program has no folder")?.join("gotalk-bench-go"))
}

/// The path of the built Go echo server, building it first when it is missing or stale.
pub(super) fn echo_server() -> anyhow::Result<PathBuf> {
    let dir = build_dir()?;
    let binary = dir.join("benchecho");
    let stamp = dir.join("benchecho.stamp");
    let want = format!("{}\n{SOURCE}", gotalk_tests::go::version().map_err(|why| anyhow!(why))?);
    if binary.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        return Ok(binary);
    }
    let built = gotalk_tests::go::build(
        &dir,
        "benchecho",
        |to| std::fs::write(to.join("main.go"), SOURCE),
        &binary,
    );
    built.map_err(|why| anyhow!(why))?;
    std::fs::write(&stamp, want)?;
    Ok(binary)
}
