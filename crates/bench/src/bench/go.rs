//! The Go gotalk echo server the comparison loads: `go/benchecho`, built by this program with
//! Debian's `golang-go`, offline, inside a copy of the original gotalk module, and kept until
//! its source or the Go toolchain changes.
//!
//! The original gotalk is `$GOTALK_PEERS/gotalk-1.3.7`, or `../shared/peers/gotalk-1.3.7`
//! beside the repository (where the interop tests find it too). The build goes to
//! `$GOTALK_BENCH_GO_DIR`, or `gotalk-bench-go/` beside this program.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};

/// The server's source, compiled into this program so the binary it builds always matches it.
const SOURCE: &str = include_str!("../../go/benchecho/main.go");

/// The original gotalk module.
fn original() -> PathBuf {
    let peers = std::env::var_os("GOTALK_PEERS").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/peers")).to_path_buf()
    });
    peers.join("gotalk-1.3.7")
}

fn build_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GOTALK_BENCH_GO_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot find this program")?;
    Ok(exe.parent().context("this program has no folder")?.join("gotalk-bench-go"))
}

/// The `go` command's version line, which is part of what a built binary depends on.
fn go_version() -> anyhow::Result<String> {
    let out = std::process::Command::new("go")
        .arg("version")
        .output()
        .context("`go` is not installed (Debian: apt-get install golang-go)")?;
    ensure!(out.status.success(), "`go version` failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The path of the built Go echo server, building it first when it is missing or stale.
pub(super) fn echo_server() -> anyhow::Result<PathBuf> {
    let dir = build_dir()?;
    let binary = dir.join("benchecho");
    let stamp = dir.join("benchecho.stamp");
    let want = format!("{}\n{SOURCE}", go_version()?);
    if binary.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        return Ok(binary);
    }
    let original = original();
    ensure!(
        original.join("go.mod").is_file(),
        "no original gotalk at {} (set GOTALK_PEERS to the folder that holds gotalk-1.3.7)",
        original.display()
    );
    // The original folder may be read-only: build in a copy, made once.
    let module = dir.join("gotalk");
    if !module.join("go.mod").is_file() {
        let _ = std::fs::remove_dir_all(&module);
        copy_tree(&original, &module).context("copy the original gotalk module")?;
    }
    let package = module.join("benchecho");
    std::fs::create_dir_all(&package)?;
    std::fs::write(package.join("main.go"), SOURCE)?;
    // Built under another name and renamed, so a concurrent run never starts half a binary.
    let partial = dir.join(format!("benchecho.{}.partial", std::process::id()));
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg("./benchecho")
        .current_dir(&module)
        .env("GOFLAGS", "-mod=vendor")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .output()
        .context("run go build")?;
    if !out.status.success() {
        bail!("go build of the Go echo server failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::rename(&partial, &binary)?;
    std::fs::write(&stamp, want)?;
    Ok(binary)
}

/// Copies a folder, giving the copies default (writable) permissions.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::write(&target, std::fs::read(entry.path())?)?;
        }
    }
    Ok(())
}
