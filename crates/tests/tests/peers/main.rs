//! The real-peer tier: gotalk-rs against the original Go gotalk 1.3.7 and gotalk.js 1.2.1,
//! unmodified, over TCP and WebSocket.
//!
//! - `go_client`: the Go package as a client (`go/gopeer`, a checklist) against our interop
//!   fixture and the real `gotalk serve`.
//! - `go_server`: the Go package as a server against our clients, the `gotalk call`, `notify`
//!   and `listen` commands and the library.
//! - `gotalk_js`: gotalk.js in Node (with the `ws` package as its WebSocket) against our
//!   fixture, and its keepalive across a SIGKILL of `gotalk serve`.
//! - `idle`: one idle period past the Go client's 30 s read timeout, for every peer at once.
//!
//! The Go peer is built by the first test that needs it (`tools::gopeer`). The known faults
//! of the originals (`../shared/PROTOCOL-NOTES.md`) are expected, never fixed. The fixture
//! is this package's `gotalk-interop`, which cargo builds for this test.

#[path = "../common/mod.rs"]
mod common;
mod go_client;
mod go_server;
mod gotalk_js;
mod idle;
mod tools;

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;
use tools::Process;

/// How long a peer may take to start and print where it listens.
const START: Duration = Duration::from_secs(30);

/// A server process and where it listens.
struct Server {
    process: Process,
    /// `127.0.0.1:port` of gotalk over TCP.
    tcp: String,
    /// `127.0.0.1:port` of HTTP, with gotalk over WebSocket at `/gotalk/`.
    http: String,
}

impl Server {
    /// `ws://…/gotalk/`.
    fn ws(&self) -> String {
        format!("ws://{}/gotalk/", self.http)
    }

    /// The origin a page served by this server has.
    fn origin(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Our interop fixture (`gotalk-interop`) over TCP and WebSocket.
    async fn fixture(args: &[&str]) -> Server {
        let path = PathBuf::from(env!("CARGO_BIN_EXE_gotalk-interop"));
        let mut command = Command::new(path);
        command.args(["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"]).args(args);
        Self::start("gotalk-interop", command).await
    }

    /// The Go server (`gopeer serve`), or `None` when Go is missing (outside CI).
    async fn go(args: &[&str]) -> Option<Server> {
        let mut command = Command::new(tools::gopeer()?);
        command.args(["serve", "-tcp", "127.0.0.1:0", "-http", "127.0.0.1:0"]).args(args);
        Some(Self::start("gopeer serve", command).await)
    }

    async fn start(name: &str, command: Command) -> Server {
        let mut process = Process::start(name, command);
        let tcp = process.value("tcp ", START).await;
        let http = process.value("http ", START).await;
        Server { process, tcp, http }
    }

    /// The real `gotalk serve` with `args`, on the given ports (0: the system picks).
    async fn gotalk_serve(http_port: u16, tcp_port: u16, args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"));
        command
            .arg("serve")
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--tcp", &format!("127.0.0.1:{tcp_port}")])
            .args(args);
        let mut process = Process::start("gotalk serve", command);
        let ws = process.value("gotalk websocket:", START).await;
        let tcp = process.value("gotalk tcp:", START).await;
        let http = ws.trim_start_matches("ws://").trim_end_matches("/gotalk/").to_owned();
        let tcp = tcp.trim_start_matches("tcp://").to_owned();
        Server { process, tcp, http }
    }
}

/// The port of `host:port`.
fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("host:port")
}
