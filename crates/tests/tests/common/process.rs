//! The real `gotalk serve` binary as a child process, for tests of the command itself and
//! of what happens to its clients when the process dies.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::within;

/// A running `gotalk serve` and the addresses its banner printed.
pub(crate) struct ServeProcess {
    /// Killed when dropped.
    pub(crate) child: Child,
    /// `http://host:port/`, the demo page.
    pub(crate) http: String,
    /// `ws://host:port/gotalk/`.
    pub(crate) ws: String,
    /// `tcp://host:port`.
    pub(crate) tcp: String,
}

impl ServeProcess {
    /// Starts `gotalk serve` with `args` and reads its banner.
    pub(crate) async fn start(args: &[&str]) -> ServeProcess {
        Self::start_with(&["serve"], args, Stdio::null()).await
    }

    /// Starts `gotalk` with `command` (`serve` and any flags before the serve flags) and
    /// `args`, its stderr going to `stderr`, and reads its banner.
    pub(crate) async fn start_with(command: &[&str], args: &[&str], stderr: Stdio) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"))
            .args(command)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start gotalk serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async |prefix: &str| {
            let line =
                within("serve prints its addresses", lines.next_line()).await.unwrap().unwrap();
            line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line:?}")).trim().to_owned()
        };
        let http = next("gotalk demo:").await;
        let ws = next("gotalk websocket:").await;
        let tcp = next("gotalk tcp:").await;
        // Keep reading, so the server's later output has somewhere to go.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServeProcess { child, http, ws, tcp }
    }

    /// The HTTP listener's port.
    pub(crate) fn http_port(&self) -> u16 {
        port(&self.http)
    }

    /// The TCP listener's port.
    pub(crate) fn tcp_port(&self) -> u16 {
        port(&self.tcp)
    }
}

fn port(url: &str) -> u16 {
    let port = url.trim_end_matches('/').rsplit(':').next().unwrap();
    port.parse().unwrap_or_else(|_| panic!("no port in {url:?}"))
}
