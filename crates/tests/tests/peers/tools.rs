//! The real peers' toolchains and processes: the Go peer built from the original gotalk
//! module, gotalk.js run by Node, and the lines a child process prints.
//!
//! A missing `go`, `node` or `ws` package skips a test with a loud message on a developer's
//! machine and fails it in CI (`CI` set), where `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The repository's root.
pub(crate) fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The original gotalk (Go package and gotalk.js), unmodified: `$GOTALK_PEERS`, or
/// `../shared/peers/gotalk-1.3.7` beside the repository.
pub(crate) fn gotalk_original() -> PathBuf {
    gotalk_tests::go::original()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Reports a missing tool: the test is skipped, or fails in CI.
fn missing(what: &str) {
    assert!(!in_ci(), "{what}: the real-peer tests must run in CI");
    eprintln!();
    eprintln!("*** SKIPPED: {what}; the real-peer tests did not run ***");
    eprintln!();
}

/// The Go peer (`peers/go/gopeer`), built once per test run inside a copy of the original
/// module (the original folder may be read-only) with its vendored dependency, offline.
/// `None` when Go is not installed (outside CI).
pub(crate) fn gopeer() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_gopeer) {
        Ok(path) => Some(path.clone()),
        Err(why) => {
            missing(why);
            None
        }
    }
}

fn build_gopeer() -> Result<PathBuf, String> {
    gotalk_tests::go::version()?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("peers");
    let binary = dir.join("gopeer");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/go/gopeer");
    let built = gotalk_tests::go::build(
        &dir,
        "gopeer",
        |to| gotalk_tests::go::copy_tree(&sources, to),
        &binary,
    );
    if let Err(why) = built {
        panic!("{why}");
    }
    Ok(binary)
}

/// Node with the `ws` package from `e2e/node_modules` (installed by `npm ci` in `e2e/`), for
/// gotalk.js. `None` when either is missing (outside CI).
pub(crate) fn node() -> Option<Command> {
    let modules = repo().join("e2e/node_modules");
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|out| out.status.success()) {
        missing("`node` is not installed");
        return None;
    }
    if !modules.join("ws/package.json").is_file() {
        missing("the `ws` package is not installed (run `npm ci` in e2e/)");
        return None;
    }
    let mut command = Command::new("node");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node/gotalkjs.js"))
        .env("NODE_PATH", modules);
    Some(command)
}

/// The path of gotalk.js 1.2.1, unmodified.
pub(crate) fn gotalk_js() -> PathBuf {
    gotalk_original().join("js/gotalk.js")
}

/// A child process whose output is read line by line: stdout lines are handed out in order,
/// and stdout and stderr both go to a transcript printed when a test fails.
pub(crate) struct Process {
    pub(crate) child: Child,
    name: String,
    lines: mpsc::UnboundedReceiver<String>,
    transcript: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `command`, killed when the `Process` is dropped.
    pub(crate) fn start(name: &str, mut command: Command) -> Process {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        read_lines(child.stdout.take().unwrap(), transcript.clone(), "", Some(tx));
        read_lines(child.stderr.take().unwrap(), transcript.clone(), "stderr: ", None);
        Process { child, name: name.to_owned(), lines, transcript }
    }

    /// Everything it printed so far.
    pub(crate) fn transcript(&self) -> String {
        let lines = self.transcript.lock().unwrap();
        format!("--- {} ---\n{}\n---", self.name, lines.join("\n"))
    }

    /// The next stdout line that satisfies `wanted`, skipping others; fails the test after
    /// `wait` or when the output ends.
    pub(crate) async fn line(&mut self, wanted: impl Fn(&str) -> bool, wait: Duration) -> String {
        let found = tokio::time::timeout(wait, async {
            while let Some(line) = self.lines.recv().await {
                if wanted(&line) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{}: its output ended\n{}", self.name, self.transcript()),
            Err(_) => panic!("{}: no such line within {wait:?}\n{}", self.name, self.transcript()),
        }
    }

    /// What follows `prefix` on the next line that starts with it.
    pub(crate) async fn value(&mut self, prefix: &str, wait: Duration) -> String {
        let line = self.line(|l| l.starts_with(prefix), wait).await;
        line[prefix.len()..].trim().to_owned()
    }

    /// Waits for the process to exit within `wait`, and returns its status and every stdout
    /// line it printed that was not taken yet.
    pub(crate) async fn finish(&mut self, wait: Duration) -> (ExitStatus, Vec<String>) {
        let status = match tokio::time::timeout(wait, self.child.wait()).await {
            Ok(status) => status.expect("wait for the process"),
            Err(_) => panic!("{}: still running after {wait:?}\n{}", self.name, self.transcript()),
        };
        let mut rest = Vec::new();
        // The readers finish once the pipes close.
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.lines.recv()).await
        {
            rest.push(line);
        }
        (status, rest)
    }

    /// Sends `signal` (as `kill -SIGNAL` does) to the process.
    pub(crate) async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the process is running").to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().await;
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }
}

fn read_lines(
    from: impl AsyncRead + Unpin + Send + 'static,
    transcript: Arc<Mutex<Vec<String>>>,
    prefix: &'static str,
    tx: Option<mpsc::UnboundedSender<String>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            transcript.lock().unwrap().push(format!("{prefix}{line}"));
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

/// Names that start with `$`: reserved messages that reached another implementation's
/// handlers.
pub(crate) fn reserved(names: &[String]) -> Vec<&String> {
    names.iter().filter(|n| n.starts_with('$')).collect()
}
