//! The gateway's and the HTTP server's limits, each at its edge: WebSockets open at once,
//! the WebSocket message size, the shutdown deadline, the time to send request headers and
//! HTTP connections open at once.

mod common;

use std::time::Duration;

use common::web::{WebServer, WsPeer};
use common::{handlers, within};
use gotalk::listen::ListenerLimits;
use gotalk::{CloseReason, Config, Error, Handlers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn upgrades_past_max_connections_get_503_until_one_closes() {
    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.limits(ListenerLimits::default().max_connections(2))
    })
    .await;
    let first = server.connect(Handlers::new()).await;
    let _second = server.connect(Handlers::new()).await;
    let refused = WsPeer::upgrade(&server.url(""), &[]).await.err().expect("the third is refused");
    assert_eq!((refused.status, refused.body.as_str()), (503, "too many connections"));
    // And it says when to come back.
    let stream = TcpStream::connect(server.http).await.unwrap();
    let head = common::raw_ws::RawWs::upgrade(stream, "/gotalk/", &server.http.to_string(), &[])
        .await
        .err()
        .expect("the third is refused");
    assert_eq!(head.status, 503);
    assert!(head.text.to_ascii_lowercase().contains("\r\nretry-after: 5\r\n"), "{}", head.text);
    // And the server closes the connection after it, so the refused client holds no place.
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    let request = common::raw_ws::upgrade_request("/gotalk/", &server.http.to_string(), &[]);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("the close after a refusal", stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503 "), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");

    first.close();
    first.closed().await;
    within("a slot frees", async {
        while WsPeer::upgrade(&server.url(""), &[]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.stop().await;
}

/// `count` notifications for nobody, `size` bytes each on the wire.
fn notifications(count: usize, size: usize) -> Vec<u8> {
    let payload = size - "n004none00000000".len();
    let one = format!("n004none{payload:08x}{}", "x".repeat(payload));
    one.repeat(count).into_bytes()
}

#[tokio::test]
async fn a_websocket_message_may_hold_one_payload_at_the_limit_and_no_more() {
    let config = Config::default().max_payload(1000);
    let limit = gotalk::ws::max_message_size(&config);
    assert_eq!(limit, 1000 + 8192);
    let server = WebServer::start(handlers(), config, |g| g).await;

    // Exactly the limit, as 12 frames of 766 bytes: accepted, and the connection still works.
    let mut peer = WsPeer::connect(&server.url("")).await;
    let message = notifications(12, 766);
    assert_eq!(message.len(), limit);
    peer.binary(&message).await;
    peer.binary(b"r0001004echo00000002ok").await;
    peer.expect(b"R000100000002").await;
    peer.expect(b"ok").await;

    // One byte more: the connection is closed.
    let mut message = notifications(12, 766);
    message.push(b'n');
    peer.binary(&message).await;
    peer.expect_end().await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_what_outlasts_its_deadline() {
    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.limits(ListenerLimits::default().shutdown_timeout(Duration::from_millis(200)))
    })
    .await;
    let client = server.connect(Handlers::new()).await;
    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.buffer_request("never", "").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() >= Duration::from_millis(200), "the deadline was not waited for");
    let result = within("pending request", pending).await.unwrap();
    assert!(
        matches!(result, Err(Error::Closed(CloseReason::PeerClosed))),
        "the request fails with the close: {result:?}"
    );
}

/// Sends `head` and returns everything the server sends back until it closes.
async fn exchange(stream: &mut TcpStream, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("the server closes", stream.read_to_end(&mut response)).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_client_slower_than_the_header_timeout_is_disconnected() {
    let server = WebServer::start_with(
        handlers(),
        Config::default(),
        |g| g,
        |http| http.header_timeout(Duration::from_millis(300)),
    )
    .await;
    // Headers sent in time are served.
    let mut quick = TcpStream::connect(server.http).await.unwrap();
    let head = "GET /gotalk/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let response = exchange(&mut quick, head).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");

    // Half a request line, then silence: the server gives up.
    let mut slow = TcpStream::connect(server.http).await.unwrap();
    let started = tokio::time::Instant::now();
    let response = exchange(&mut slow, "GET /gotalk/ HTT").await;
    assert!(started.elapsed() >= Duration::from_millis(300), "closed before the timeout");
    assert_eq!(response, "", "closed without an answer");
    server.stop().await;
}

#[tokio::test]
async fn http_connections_past_the_limit_wait_for_a_free_one() {
    let server = WebServer::start_with(
        handlers(),
        Config::default(),
        |g| g,
        |http| http.limits(ListenerLimits::default().max_connections(1)),
    )
    .await;
    let head = "GET /gotalk/ HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut first = TcpStream::connect(server.http).await.unwrap();
    first.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0; 1024];
    let n = within("first response", first.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 400"));

    // The first connection is kept alive, so the second is not served yet.
    let mut second = TcpStream::connect(server.http).await.unwrap();
    second.write_all(head.as_bytes()).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "served past the limit");

    drop(first);
    let n = within("second response", second.read(&mut buf)).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 400"));
    server.stop().await;
}
