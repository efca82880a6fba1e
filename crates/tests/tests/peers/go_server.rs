//! Our clients with the Go package as their server: the `gotalk call`, `notify` and `listen`
//! commands, and the library, over TCP and WebSocket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gotalk::protocol::liveness::LivenessConfig;
use gotalk::{CloseReason, Config, Error, Handlers, Sock};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::tools::{reserved, Process};
use crate::Server;

const WAIT: Duration = Duration::from_secs(20);

/// Runs `gotalk ARGS…` to its end: its exit code, stdout and stderr.
async fn gotalk(args: &[&str]) -> (i32, String, String) {
    let run = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e")).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(WAIT, run).await.expect("gotalk finishes").expect("run gotalk");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// Every name the Go server's handlers were given so far (its `seen KIND NAME` lines): it is
/// called `last` by a new connection, and what it saw before is read up to that.
async fn seen(server: &mut Server) -> Vec<String> {
    let (code, _, err) = gotalk(&["call", &format!("tcp://{}", server.tcp), "last"]).await;
    assert_eq!(code, 4, "{err}");
    let mut names = Vec::new();
    loop {
        let line = server.process.line(|l| l.starts_with("seen "), WAIT).await;
        let name = line.rsplit(' ').next().unwrap().to_owned();
        if name == "last" {
            return names;
        }
        names.push(name);
    }
}

#[tokio::test]
async fn the_commands_against_the_go_server() {
    let Some(mut server) = Server::go(&[]).await else { return };
    let tcp = format!("tcp://{}", server.tcp);
    let ws = server.ws();
    for url in [&tcp, &ws] {
        let (code, out, err) = gotalk(&["call", url, "greet", r#"{"name":"cli"}"#]).await;
        assert_eq!((code, out.as_str()), (0, r#"{"greeting":"Hello cli"}"#), "{url}: {err}");
        let (code, _, err) = gotalk(&["call", url, "fail"]).await;
        assert_eq!(code, 4, "{url}: {err}");
        assert!(err.ends_with("error from server: intentional failure"), "{url}: {err}");
        let (code, _, err) = gotalk(&["notify", url, "note", r#"{"from":"cli"}"#]).await;
        assert_eq!(code, 0, "{url}: {err}");

        // listen prints what the Go server broadcasts.
        let mut command = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"));
        command.args(["listen", url]);
        let mut listen = Process::start("gotalk listen", command);
        // The listener is connected once the Go server has two connections to reach.
        loop {
            let (code, out, err) = gotalk(&["call", url, "broadcast", r#""hi""#]).await;
            assert_eq!(code, 0, "{url}: {err}");
            if out == "2" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        listen.line(|l| l == r#"broadcast "hi""#, WAIT).await;
    }
    // Everything the commands sent, and nothing reserved: no `$done` after a notification.
    let names = seen(&mut server).await;
    assert_eq!(reserved(&names), Vec::<&String>::new(), "{names:?}");
    assert!(names.contains(&"note".to_owned()), "{names:?}");
}

/// The Origin policies side by side, with `gotalk call`: Go requires an Origin and accepts
/// any; our gateway accepts none and its own, and refuses others (unless allowed). The
/// command sends its URL's own origin unless told otherwise, which both accept.
#[tokio::test]
async fn origin_policies_of_the_go_server_and_ours() {
    let Some(go) = Server::go(&[]).await else { return };
    let ours = Server::fixture(&[]).await;
    for (server, elsewhere, none) in [(&go, 0, 3), (&ours, 3, 0)] {
        let ws = server.ws();
        let (code, out, err) = gotalk(&["call", &ws, "echo", "1"]).await;
        assert_eq!((code, out.as_str()), (0, "1"), "{ws}, the url's origin: {err}");
        let (code, _, err) =
            gotalk(&["call", "--origin", "https://elsewhere.example", &ws, "echo", "1"]).await;
        assert_eq!(code, elsewhere, "{ws}, another origin: {err}");
        let (code, _, err) = gotalk(&["call", "--no-origin", &ws, "echo", "1"]).await;
        assert_eq!(code, none, "{ws}, no origin: {err}");
        if code == 3 {
            assert!(err.contains("403 Forbidden"), "{err}");
        }
    }
}

/// A client whose notifications arrive on the returned channel, and that answers the Go
/// server's `client-echo`.
async fn client(url: &str, config: Config) -> (Sock, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut handlers = Handlers::new();
    handlers
        .fallback_notification(move |_sock, name, payload| {
            let _ = tx.send((name, payload));
            async {}
        })
        .handle_buffer("client-echo", |_sock, payload: Bytes| async move {
            Ok::<_, String>(Bytes::from([&b"client:"[..], &payload].concat()))
        });
    let handlers = Arc::new(handlers);
    let sock = match url.strip_prefix("tcp://") {
        Some(addr) => gotalk::tcp::connect(addr, handlers, config).await,
        None => gotalk::ws::connect(url, handlers, config).await,
    };
    (sock.unwrap_or_else(|e| panic!("connect to {url}: {e}")), rx)
}

async fn note(rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>) -> (String, Bytes) {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a notification").expect("open")
}

#[tokio::test]
async fn the_library_against_the_go_server() {
    let Some(mut server) = Server::go(&[]).await else { return };
    for url in [format!("tcp://{}", server.tcp), server.ws()] {
        let (sock, mut notes) = client(&url, Config::default()).await;
        assert_eq!(
            &sock.buffer_request("echo", "bytes \0\u{ff}").await.unwrap()[..],
            "bytes \0\u{ff}".as_bytes()
        );
        let greeting: serde_json::Value =
            sock.request("greet", &serde_json::json!({ "name": "Rust" })).await.unwrap();
        assert_eq!(greeting, serde_json::json!({ "greeting": "Hello Rust" }), "{url}");
        match sock.buffer_request("fail", "").await {
            Err(Error::Remote(text)) => assert_eq!(text, "intentional failure"),
            other => panic!("{url}: {other:?}"),
        }
        match sock.buffer_request("no-such-op", "").await {
            Err(Error::Remote(text)) => assert_eq!(text, r#"unknown operation "no-such-op""#),
            other => panic!("{url}: {other:?}"),
        }
        assert!(sock.buffer_request("notify-me", "\"n1\"").await.unwrap().is_empty());
        assert_eq!(note(&mut notes).await, ("notified".to_owned(), Bytes::from("\"n1\"")));
        sock.buffer_notify("echo-note", "[1,2]").await.unwrap();
        assert_eq!(note(&mut notes).await, ("echo-note-reply".to_owned(), Bytes::from("[1,2]")));
        // The Go server calls our client back on the same connection.
        assert_eq!(&sock.buffer_request("reverse-echo", "rs").await.unwrap()[..], b"client:rs");
        let (mut tx, rx) = sock.stream_request("stream-echo", "a").await.unwrap();
        tx.write("bc").await.unwrap();
        tx.end().await.unwrap();
        assert_eq!(rx.collect().await.unwrap(), "abc", "{url}");
        // Ending sends no `$done` to a server that did not say hello.
        assert!(!sock.peer_understands_reserved(), "{url}");
        tokio::time::timeout(WAIT, sock.end()).await.expect("ended");
    }
    let names = seen(&mut server).await;
    assert_eq!(reserved(&names), Vec::<&String>::new(), "{names:?}");
}

/// Liveness that probes after `interval` of silence and gives up after `misses` more.
fn probing(interval: Duration, misses: u32) -> Config {
    Config::default()
        .liveness(LivenessConfig {
            interval: Some(interval),
            max_unacked: misses,
            ..LivenessConfig::gateway_default()
        })
        .expect("valid liveness settings")
}

/// Idle clients of Go servers, on shortened clocks (the defaults would take minutes: a read
/// timeout of 90 s, probes after 15 s of silence), all at once:
/// - over WebSocket a Go server sends nothing while idle (no heartbeats by default), and the
///   pongs answering our probes keep the client connected past its read timeout;
/// - over TCP nothing can ask a Go server whether it is alive without reaching its handlers,
///   so our probes are withheld: heartbeats from the server keep the client connected, and
///   without them it gives up at the liveness bound, as Go's own client gives up after its
///   30 s read timeout.
#[tokio::test]
async fn idle_clients_of_go_servers() {
    let Some(mut silent) = Server::go(&[]).await else { return };
    let Some(mut beating) = Server::go(&["-heartbeat", "2s"]).await else { return };
    let idle = Duration::from_secs(7);

    // WebSocket, silent server: a read timeout of 3 s, probes after 1 s of silence.
    let config = probing(Duration::from_secs(1), 2).read_timeout(Some(Duration::from_secs(3)));
    let (ws, _) = client(&silent.ws(), config).await;
    // TCP, a server heartbeating every 2 s: probes after 1 s, dead after 4 s of silence.
    let (tcp_beating, _) =
        client(&format!("tcp://{}", beating.tcp), probing(Duration::from_secs(1), 3)).await;
    // TCP, silent server: dead after 3 s of silence.
    let started = tokio::time::Instant::now();
    let (tcp_silent, _) =
        client(&format!("tcp://{}", silent.tcp), probing(Duration::from_secs(1), 2)).await;

    let reason = tokio::time::timeout(WAIT, tcp_silent.closed()).await.expect("given up");
    assert!(matches!(reason, CloseReason::PeerDead(_)), "{reason:?}");
    let after = started.elapsed();
    assert!(after >= Duration::from_secs(3) && after < Duration::from_secs(5), "{after:?}");

    tokio::time::sleep(idle.saturating_sub(started.elapsed())).await;
    for (sock, what) in [(&ws, "websocket, silent server"), (&tcp_beating, "tcp, heartbeats")] {
        assert!(!sock.is_closed(), "{what}: closed: {:?}", sock.close_reason());
        assert_eq!(&sock.buffer_request("echo", "awake").await.unwrap()[..], b"awake", "{what}");
    }
    assert!(ws.probe_rtt().is_some(), "the probes were answered");
    let names = [seen(&mut silent).await, seen(&mut beating).await].concat();
    assert_eq!(reserved(&names), Vec::<&String>::new(), "{names:?}");
}
