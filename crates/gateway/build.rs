//! Embeds the repository's `static/` folder into the crate.
//!
//! Writes `$OUT_DIR/embedded.rs`: one `static` slice of `(path, bytes)` pairs, where `path` is
//! relative to `static/` with forward slashes and `bytes` is an `include_bytes!` of the file, so
//! the compiler (not this script) reads the contents and the binary serves them from memory.
//! `src/assets.rs` includes the generated file.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, io};

fn main() -> io::Result<()> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // The browser bundle is served under gotalk/, the demo page at the root.
    let sources = [
        (manifest_dir.join("client"), "gotalk/"),
        (manifest_dir.join("../../examples/demo/page"), ""),
    ];
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    for (dir, prefix) in &sources {
        // Cargo scans a directory named here recursively, so adding, removing or editing any
        // file under it reruns this script.
        println!("cargo:rerun-if-changed={}", dir.display());
        if dir.is_dir() {
            let root = dir.canonicalize()?;
            walk(&root, prefix, &mut files)?;
        }
    }
    files.sort();

    let mut out = String::from(
        "/// Every file under `static/`, as (path relative to `static/`, contents), sorted by \
         path.\n\
         static EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for (relative, absolute) in &files {
        // `{:?}` of a str is a valid Rust string literal with every special character escaped.
        writeln!(out, "    ({relative:?}, include_bytes!({absolute:?})),").expect("String write");
    }
    out.push_str("];\n");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    fs::write(out_dir.join("embedded.rs"), out)
}

/// Appends every file under `dir` to `files` as (relative path, absolute path), in sorted
/// order so the generated file is the same on every machine.
fn walk(dir: &Path, prefix: &str, files: &mut Vec<(String, String)>) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            println!("cargo:warning=static/: skipping {}: name is not UTF-8", path.display());
            continue;
        };
        // Hidden files are editor swap files, .DS_Store, .gitignore and the like, never content.
        if name.starts_with('.') {
            continue;
        }
        // Assets only serves paths that a request path could name exactly; a backslash would be
        // a separator on Windows.
        if name.contains('\\') || name.chars().any(char::is_control) {
            println!("cargo:warning=static/: skipping {}: unusable name", path.display());
            continue;
        }
        let relative = format!("{prefix}{name}");
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(&path, &format!("{relative}/"), files)?;
        } else if file_type.is_file() || (file_type.is_symlink() && path.is_file()) {
            // Symlinks to files are followed; symlinks to folders are not, so a link cycle cannot
            // make the walk endless.
            let Some(absolute) = path.to_str() else {
                println!("cargo:warning=static/: skipping {}: path is not UTF-8", path.display());
                continue;
            };
            files.push((relative, absolute.to_owned()));
        }
    }
    Ok(())
}
