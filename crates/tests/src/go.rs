//! Go programs built against the original gotalk 1.3.7 module, offline: the interop tests'
//! Go peer and the benchmark's Go echo server both go through here.
//!
//! The original is `$GOTALK_PEERS/gotalk-1.3.7`, or `../shared/peers/gotalk-1.3.7` beside the
//! repository. Its folder may be read-only, so programs are built inside a copy of it, made
//! once per build folder, with the module's vendored dependencies and no network.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The original gotalk module.
pub fn original() -> PathBuf {
    let peers = std::env::var_os("GOTALK_PEERS").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/peers")).to_path_buf()
    });
    peers.join("gotalk-1.3.7")
}

/// The `go` command's version line (what a built binary depends on besides its source), or
/// why there is none.
pub fn version() -> Result<String, String> {
    let out = Command::new("go")
        .arg("version")
        .output()
        .map_err(|_| "`go` is not installed (Debian: apt-get install golang-go)".to_owned())?;
    if !out.status.success() {
        return Err("`go version` failed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds the package that `place` writes into the folder it is given (inside `dir`'s copy of
/// the original module) to `binary`. The binary appears whole or not at all: it is built
/// under another name and renamed, so a concurrent run never starts half of one.
pub fn build(
    dir: &Path,
    package: &str,
    place: impl FnOnce(&Path) -> std::io::Result<()>,
    binary: &Path,
) -> Result<(), String> {
    let original = original();
    if !original.join("go.mod").is_file() {
        return Err(format!(
            "no original gotalk at {} (set GOTALK_PEERS to the folder that holds gotalk-1.3.7)",
            original.display()
        ));
    }
    let module = dir.join("gotalk");
    if !module.join("go.mod").is_file() {
        let _ = std::fs::remove_dir_all(&module);
        copy_tree(&original, &module)
            .map_err(|e| format!("copy the original gotalk module: {e}"))?;
    }
    let sources = module.join(package);
    let _ = std::fs::remove_dir_all(&sources);
    std::fs::create_dir_all(&sources).map_err(|e| format!("{}: {e}", sources.display()))?;
    place(&sources).map_err(|e| format!("place the sources of {package}: {e}"))?;
    let partial = dir.join(format!("{package}.{}.partial", std::process::id()));
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg(format!("./{package}"))
        .current_dir(&module)
        .env("GOFLAGS", "-mod=vendor")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOPATH", dir.join("go-path"))
        .output()
        .map_err(|e| format!("run go build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go build of {package} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&partial, binary).map_err(|e| format!("{}: {e}", binary.display()))
}

/// Copies a folder, giving the copies default (writable) permissions.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
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
