//! The interop fixture (`gotalk-interop`) as a real process, driven by the Rust client: the
//! operations that call back, notify and close, and the limit flags other implementations
//! are tested with.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gotalk::protocol::ProtocolErrorCode;
use gotalk::{CloseReason, Config, Handlers, Sock};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// The fixture with `args`, and the address it printed; killed when dropped.
async fn fixture(args: &[&str]) -> (Child, String) {
    let (child, mut lines) = fixture_lines(args).await;
    let addr = lines.remove(0).strip_prefix("tcp ").expect("`tcp ADDR` line").to_owned();
    (child, addr)
}

/// The fixture with `--http` too, and its WebSocket URL.
async fn fixture_ws() -> (Child, String) {
    let (child, lines) = fixture_lines(&["--http", "127.0.0.1:0"]).await;
    let http = lines[1].strip_prefix("http ").expect("`http ADDR` line");
    (child, format!("ws://{http}/gotalk/"))
}

/// The fixture with `args`, and the lines it printed when it started listening.
async fn fixture_lines(args: &[&str]) -> (Child, Vec<String>) {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_gotalk-interop"));
    let mut child = Command::new(path)
        .args(["--tcp", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start gotalk-interop");
    let expected = if args.contains(&"--http") { 2 } else { 1 };
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    while printed.len() < expected {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("fixture prints its address")
            .expect("read address")
            .expect("an address line");
        printed.push(line.trim().to_owned());
    }
    (child, printed)
}

/// A client whose notifications arrive on the returned channel as (name, payload), and that
/// answers `client-echo` with `client:` before the payload.
async fn client(addr: &str, config: Config) -> (Sock, mpsc::UnboundedReceiver<(String, Bytes)>) {
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
    let sock = if addr.starts_with("ws://") {
        gotalk::ws::connect(addr, Arc::new(handlers), config).await
    } else {
        gotalk::tcp::connect(addr, Arc::new(handlers), config).await
    };
    (sock.expect("connect"), rx)
}

async fn next_note(rx: &mut mpsc::UnboundedReceiver<(String, Bytes)>) -> (String, Bytes) {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a notification").expect("open")
}

#[tokio::test]
async fn the_same_operations_over_websocket() {
    let (_child, url) = fixture_ws().await;
    let (sock, mut notes) = client(&url, Config::default()).await;
    let hello = next_note(&mut notes).await;
    let hello: serde_json::Value = serde_json::from_slice(&hello.1).unwrap();
    assert_eq!(hello, serde_json::json!({ "msg": "welcome", "transport": "websocket" }));
    assert_eq!(&sock.buffer_request("reverse-echo", "ws").await.unwrap()[..], b"client:ws");
    let (mut tx, rx) = sock.stream_request("stream-echo", "a").await.unwrap();
    tx.write("b").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(rx.collect().await.unwrap(), "ab");
    let sleep: u64 = sock.request("sleep", &10u64).await.unwrap();
    assert_eq!(sleep, 10);
}

#[tokio::test]
async fn hello_callbacks_and_notifications() {
    let (_child, addr) = fixture(&[]).await;
    let (sock, mut notes) = client(&addr, Config::default()).await;

    let hello = next_note(&mut notes).await;
    assert_eq!(hello.0, "hello");
    let hello: serde_json::Value = serde_json::from_slice(&hello.1).unwrap();
    assert_eq!(hello, serde_json::json!({ "msg": "welcome", "transport": "tcp" }));

    // The fixture calls our `client-echo` on the same connection and returns its answer.
    let answer = sock.buffer_request("reverse-echo", "ping").await.unwrap();
    assert_eq!(&answer[..], b"client:ping");

    // notify-me: the notification arrives, and the result after it is empty.
    assert!(sock.buffer_request("notify-me", "\"n1\"").await.unwrap().is_empty());
    assert_eq!(next_note(&mut notes).await, ("notified".to_owned(), Bytes::from("\"n1\"")));

    sock.buffer_notify("echo-note", "[1,2]").await.unwrap();
    assert_eq!(next_note(&mut notes).await, ("echo-note-reply".to_owned(), Bytes::from("[1,2]")));

    let greeting: serde_json::Value =
        sock.request("greet", &serde_json::json!({ "name": "Rust" })).await.unwrap();
    assert_eq!(greeting, serde_json::json!({ "greeting": "Hello Rust" }));
}

#[tokio::test]
async fn close_me_closes_with_the_requested_protocol_error() {
    let (_child, addr) = fixture(&[]).await;
    for (payload, code) in [
        ("0", ProtocolErrorCode::Abnormal),
        ("1", ProtocolErrorCode::Unsupported),
        ("2", ProtocolErrorCode::InvalidMessage),
        ("3", ProtocolErrorCode::Timeout),
    ] {
        let (sock, _notes) = client(&addr, Config::default()).await;
        assert!(sock.buffer_request("close-me", payload).await.unwrap().is_empty());
        let reason = tokio::time::timeout(WAIT, sock.closed()).await.expect("closed");
        assert_eq!(reason, CloseReason::PeerProtocolError(code), "close-me {payload}");
    }
    let (sock, _notes) = client(&addr, Config::default()).await;
    assert!(sock.buffer_request("close-me", "").await.unwrap().is_empty());
    let reason = tokio::time::timeout(WAIT, sock.closed()).await.expect("closed");
    assert_eq!(reason, CloseReason::PeerClosed, "a plain close without a payload");
}

#[tokio::test]
async fn request_limit_flags_give_retry_results_that_the_client_honours() {
    let (_child, addr) =
        fixture(&["--request-limit", "1", "--min-wait", "50", "--max-wait", "50"]).await;
    let (sock, _notes) = client(&addr, Config::default()).await;
    let slow = tokio::spawn({
        let sock = sock.clone();
        async move { sock.request::<_, u64>("sleep", &300).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The limit is taken by `sleep`: this one is answered `e` every 50 ms until it fits.
    let started = std::time::Instant::now();
    assert_eq!(sock.request::<_, u64>("sleep", &1).await.unwrap(), 1);
    assert!(started.elapsed() >= Duration::from_millis(50), "it waited for a retry");
    assert_eq!(slow.await.unwrap().unwrap(), 300);

    // Without retries the RetryResult itself comes back, with the fixture's wait.
    let config = Config::default().max_retries(0);
    let (strict, _notes) = client(&addr, config).await;
    let slow = tokio::spawn({
        let sock = strict.clone();
        async move { sock.request::<_, u64>("sleep", &200).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    match strict.request::<_, u64>("sleep", &1).await {
        Err(gotalk::Error::Retry { wait, message, .. }) => {
            assert_eq!(wait, Duration::from_millis(50));
            assert_eq!(message, "request rate limit");
        }
        other => panic!("expected a RetryResult, got {other:?}"),
    }
    slow.await.unwrap().unwrap();
}

#[tokio::test]
async fn streams_and_stream_limit_zero() {
    let (_child, addr) = fixture(&[]).await;
    let (sock, _notes) = client(&addr, Config::default()).await;
    let (mut request, response) = sock.stream_request("stream-echo", "a").await.unwrap();
    request.write("b").await.unwrap();
    request.end().await.unwrap();
    assert_eq!(&response.collect().await.unwrap()[..], b"ab");

    let (_request, mut response) = sock.stream_request("stream-fail", "x").await.unwrap();
    assert_eq!(response.next().await.unwrap().as_deref(), Some(&b"x"[..]));
    match response.next().await {
        Err(gotalk::Error::Remote(text)) => assert_eq!(text, "intentional stream failure"),
        other => panic!("expected the stream's error, got {other:?}"),
    }

    let (_child, addr) = fixture(&["--stream-limit", "0"]).await;
    let (sock, _notes) = client(&addr, Config::default()).await;
    let (_request, mut response) = sock.stream_request("stream-echo", "a").await.unwrap();
    match response.next().await {
        Err(gotalk::Error::Remote(text)) => assert_eq!(text, "stream requests are disabled"),
        other => panic!("expected streams to be refused, got {other:?}"),
    }
}
