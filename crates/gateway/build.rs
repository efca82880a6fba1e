//! Embeds the browser client bundle (`client/`) into the crate.
//!
//! Writes `$OUT_DIR/embedded.rs`: one `static` slice of `(path, bytes)` pairs, where `path` is
//! `gotalk/` and the file's path in `client/` with forward slashes and `bytes` is an
//! `include_bytes!` of the file, so the compiler (not this script) reads the contents and the
//! binary serves them from memory.
//! `src/assets.rs` includes the generated file.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, io};

// The encoders the crate itself uses, so the bundle is compressed as any other file would be.
#[path = "src/compress.rs"]
mod compress;

/// Files of the client folder that are not served.
const NOT_SERVED: [&str; 2] = ["package.json", "README.md"];

fn main() -> io::Result<()> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // The browser bundle, in this package so that a packaged crate carries it. It is built by
    // the repository's scripts/build-client.sh and committed; a build without it would serve
    // pages no client, so it fails instead.
    let client = manifest_dir.join("client");
    // Cargo scans a directory named here recursively, so adding, removing or editing any file
    // under it reruns this script. Naming any path turns off cargo's default of rerunning on
    // every change in the package, so build.rs itself is listed too.
    println!("cargo:rerun-if-changed=client");
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    if client.is_dir() {
        walk(&client.canonicalize()?, "gotalk/", &mut files)?;
    }
    for needed in ["gotalk/gotalk.js", "gotalk/gotalk_bg.wasm"] {
        if !files.iter().any(|(relative, _)| relative == needed) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} has no {needed}: run scripts/build-client.sh", client.display()),
            ));
        }
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let mut out = String::from(
        "/// Every file of the client bundle, sorted by path.\n\
         static EMBEDDED: &[Embedded] = &[\n",
    );
    for (index, (relative, absolute)) in files.iter().enumerate() {
        let body = fs::read(absolute)?;
        // Compressed here, once per build, so a server starts without spending a second of
        // brotli per megabyte; the bundle is text and wasm, both worth it.
        let compressed = |suffix: &str, bytes: Vec<u8>| -> io::Result<String> {
            if bytes.len() >= body.len() {
                return Ok("None".to_owned());
            }
            let path = out_dir.join(format!("bundle-{index}.{suffix}"));
            fs::write(&path, bytes)?;
            Ok(format!("Some(include_bytes!({:?}))", path.to_str().expect("OUT_DIR is UTF-8")))
        };
        let gzip = compressed("gz", compress::gzip(&body)?)?;
        let br = compressed("br", compress::brotli(&body, 11)?)?;
        // `{:?}` of a str is a valid Rust string literal with every special character escaped.
        writeln!(
            out,
            "    Embedded {{ path: {relative:?}, body: include_bytes!({absolute:?}), \
             gzip: {gzip}, br: {br} }},"
        )
        .expect("String write");
    }
    out.push_str("];\n");
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
        // Hidden files are editor swap files, .DS_Store, .gitignore and the like, never content;
        // the npm package's manifest and readme describe the folder, they are not the client.
        if name.starts_with('.') || (prefix == "gotalk/" && NOT_SERVED.contains(&name.as_str())) {
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
