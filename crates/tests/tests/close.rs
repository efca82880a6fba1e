//! How connections end over real TCP: a peer vanishing mid-message, pending requests failing
//! with the reason, closing from a handler, graceful `end()` and a server shutdown that
//! drains requests in flight.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{connect, serve, start, within, WirePeer};
use gotalk::listen::ListenerLimits;
use gotalk::protocol::ProtocolErrorCode;
use gotalk::tcp::Server;
use gotalk::{CloseReason, Config, Error, Sock};
use tokio::sync::{mpsc, Notify};

/// The test operations plus `slow`, which signals the returned `Notify` when it starts and
/// answers its parameter after sleeping that many milliseconds.
fn with_slow_op() -> (gotalk::Handlers, Arc<Notify>) {
    let started = Arc::new(Notify::new());
    let mut handlers = common::handlers();
    let signal = started.clone();
    handlers.handle("slow", move |_sock, ms: u64| {
        let signal = signal.clone();
        async move {
            signal.notify_one();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        }
    });
    (handlers, started)
}

#[tokio::test]
async fn peer_disconnecting_mid_payload_affects_no_one_else() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handlers = common::handlers();
    handlers.on_close(move |_sock, reason| {
        let _ = tx.send(reason.clone());
    });
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &200).await }
    });

    // Declares 100 bytes, sends 10, and goes away.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"r0001004echo000000640123456789").await;
    drop(peer);
    assert_eq!(within("on_close", rx.recv()).await.unwrap(), CloseReason::PeerClosedMidMessage);

    // Mid-header is the same.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"r00").await;
    drop(peer);
    assert_eq!(within("on_close", rx.recv()).await.unwrap(), CloseReason::PeerClosedMidMessage);

    // Between messages is a clean close.
    let peer = WirePeer::connect(server.addr).await;
    drop(peer);
    assert_eq!(within("on_close", rx.recv()).await.unwrap(), CloseReason::PeerClosed);

    assert_eq!(within("other connection", in_flight).await.unwrap().unwrap(), 200);
    assert_eq!(&client.buffer_request("echo", "still").await.unwrap()[..], b"still");
    let fresh = connect(server.addr).await;
    assert_eq!(&fresh.buffer_request("echo", "new").await.unwrap()[..], b"new");
}

#[tokio::test]
async fn pending_request_fails_with_the_reason_when_the_server_goes_away() {
    let started = Arc::new(Notify::new());
    let mut handlers = common::handlers();
    {
        let started = started.clone();
        handlers.handle_buffer("hang", move |_sock, _| {
            let started = started.clone();
            async move {
                started.notify_one();
                std::future::pending::<()>().await;
                Ok::<_, String>(Bytes::new())
            }
        });
    }
    let server = serve(
        Server::new(Arc::new(handlers), Config::default())
            .limits(ListenerLimits::default().shutdown_timeout(Duration::from_millis(100))),
    )
    .await;
    let client = connect(server.addr).await;

    let pending = tokio::spawn({
        let client = client.clone();
        async move { client.buffer_request("hang", "").await }
    });
    // Once the server runs the request, shut it down: the drain gives up on the
    // never-answering handler after 100 ms and closes the connection.
    within("hang starts", started.notified()).await;
    let server_side = server.only_connection().await;
    let stopping = tokio::time::Instant::now();
    server.stop().await;
    let waited = stopping.elapsed();
    assert!(waited >= Duration::from_millis(100), "closed before the deadline: {waited:?}");
    assert!(server_side.is_closed());
    assert_eq!(server_side.close_reason(), Some(CloseReason::Shutdown));

    match within("pending request", pending).await.unwrap() {
        Err(Error::Closed(reason)) => {
            assert_eq!(reason, CloseReason::PeerClosed);
            let text = Error::Closed(reason).to_string();
            assert_eq!(text, "socket is closed: connection closed by peer");
        }
        other => panic!("expected Error::Closed, got {other:?}"),
    }
    // New requests fail at once with the same reason.
    match client.buffer_request("echo", "late").await {
        Err(Error::Closed(CloseReason::PeerClosed)) => {}
        other => panic!("expected Error::Closed, got {other:?}"),
    }
    assert!(matches!(client.buffer_notify("n", "late").await, Err(Error::Closed(_))));
}

#[tokio::test]
async fn pending_requests_fail_when_this_side_closes() {
    let server = start(common::handlers(), Config::default()).await;
    let client = connect(server.addr).await;

    let pending: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.buffer_request("never", "").await })
        })
        .collect();
    let (_tx, stream_rx) = client.stream_request("stream-echo", "").await.unwrap();
    assert_eq!(&client.buffer_request("echo", "sync").await.unwrap()[..], b"sync");

    client.close();
    for p in pending {
        match within("pending request", p).await.unwrap() {
            Err(Error::Closed(CloseReason::Local)) => {}
            other => panic!("expected Error::Closed(Local), got {other:?}"),
        }
    }
    match within("pending stream", stream_rx.collect()).await {
        Err(Error::Closed(CloseReason::Local)) => {}
        other => panic!("expected Error::Closed(Local), got {other:?}"),
    }
    assert_eq!(within("closed", client.closed()).await, CloseReason::Local);
    // The server sees the client go.
    within("server drops the connection", async {
        while !server.connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn handler_closing_with_a_protocol_error_fails_the_callers_request_with_it() {
    let mut handlers = common::handlers();
    handlers.handle_buffer("abort", |sock: Sock, _| async move {
        sock.close_with_error(ProtocolErrorCode::Abnormal);
        std::future::pending::<()>().await;
        Ok::<_, String>(Bytes::new())
    });
    let server = start(handlers, Config::default()).await;

    let client = connect(server.addr).await;
    match within("aborted request", client.buffer_request("abort", "")).await {
        Err(Error::Closed(reason)) => {
            assert_eq!(reason, CloseReason::PeerProtocolError(ProtocolErrorCode::Abnormal));
            assert_eq!(
                Error::Closed(reason).to_string(),
                "socket is closed: peer reported protocol error: abnormal condition"
            );
        }
        other => panic!("expected Error::Closed, got {other:?}"),
    }

    // Answered first, closed afterwards.
    let client = connect(server.addr).await;
    assert!(client.buffer_request("close-me", "").await.unwrap().is_empty());
    assert_eq!(within("closed", client.closed()).await, CloseReason::PeerClosed);
}

#[tokio::test]
async fn graceful_end_waits_for_requests_in_flight_and_refuses_new_ones() {
    let (handlers, started) = with_slow_op();
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;

    let answered = Arc::new(AtomicBool::new(false));
    let in_flight = tokio::spawn({
        let client = client.clone();
        let answered = answered.clone();
        async move {
            let r = client.request::<_, u64>("slow", &200).await;
            answered.store(true, Ordering::SeqCst);
            r
        }
    });
    within("slow starts", started.notified()).await;

    let end = client.end();
    tokio::pin!(end);
    // Poll `end` once so it starts ending, then try a new request.
    tokio::select! {
        biased;
        _ = &mut end => panic!("end returned with a request in flight"),
        _ = std::future::ready(()) => {}
    }
    assert!(matches!(client.buffer_request("echo", "new").await, Err(Error::Ending)));
    assert!(matches!(client.stream_request("stream-echo", "new").await, Err(Error::Ending)));

    within("end", &mut end).await;
    assert!(answered.load(Ordering::SeqCst), "end returned before the request was answered");
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    assert_eq!(client.close_reason(), Some(CloseReason::Ended));
}

#[tokio::test]
async fn graceful_end_on_the_server_side_waits_for_its_handlers() {
    let (handlers, started) = with_slow_op();
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("slow", &150).await }
    });
    within("slow starts", started.notified()).await;

    let server_side = server.only_connection().await;
    within("server-side end", server_side.end()).await;
    assert_eq!(within("answer", in_flight).await.unwrap().unwrap(), 150);
    assert_eq!(within("closed", client.closed()).await, CloseReason::PeerClosed);
}

#[tokio::test]
async fn server_shutdown_drains_requests_in_flight() {
    let (handlers, started) = with_slow_op();
    let server = start(handlers, Config::default()).await;
    let addr = server.addr;
    let client = connect(addr).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("slow", &200).await }
    });
    within("slow starts", started.notified()).await;

    server.stop().await;
    assert_eq!(within("answer", in_flight).await.unwrap().unwrap(), 200);
    assert_eq!(within("closed", client.closed()).await, CloseReason::PeerClosed);
    // The listener is gone.
    assert!(gotalk::tcp::connect(addr, Default::default(), Config::default()).await.is_err());
}

#[tokio::test]
async fn shutdown_also_ends_connections_still_in_their_handshake() {
    let server = start(common::handlers(), Config::default()).await;
    // Accepted, but the handshake is not done when the shutdown starts.
    let mut peer = WirePeer::connect_raw(server.addr).await;
    assert_eq!(peer.read_bytes(2).await, b"01", "the server has accepted and is in the handshake");
    let connections = server.connections.clone();
    server.stop().await;

    // Finishing the handshake after the server stopped must not get a connection served.
    // (The writes may fail: the server may have dropped the connection already.)
    let _ = peer.try_write(b"01").await;
    let _ = peer.try_write(b"r0001004echo00000002hi").await;
    let rest = peer.read_to_end().await;
    assert!(
        !rest.starts_with(b"R0001"),
        "a request was served after the server shut down: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(connections.is_empty());
}

/// How long a stalled peer gets to stall the server's writes before the shutdown starts.
const STALL: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_timeout_bounds_the_tcp_servers_run_with_a_peer_that_never_reads() {
    let deadline = Duration::from_millis(300);
    let server = serve(
        Server::new(Arc::new(common::handlers()), Config::default())
            .limits(ListenerLimits::default().shutdown_timeout(deadline)),
    )
    .await;
    let stalled = common::never_reads::tcp(server.addr);
    tokio::time::sleep(STALL).await;
    assert_eq!(server.connections.len(), 1);
    // The write timeout (30 s) is not waited for: past the deadline the stalled write is
    // given up.
    let started = tokio::time::Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "run returned after {took:?}"
    );
    stalled.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_timeout_bounds_the_gateways_run_with_a_websocket_that_never_reads() {
    let deadline = Duration::from_millis(300);
    let server = common::web::WebServer::start_with(
        common::handlers(),
        Config::default(),
        |g| g.limits(ListenerLimits::default().shutdown_timeout(deadline)),
        |h| h.limits(ListenerLimits::default().shutdown_timeout(deadline)),
    )
    .await;
    let stalled = common::never_reads::websocket(server.http);
    tokio::time::sleep(STALL).await;
    assert_eq!(server.gateway.connections().len(), 1);
    let started = tokio::time::Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "run returned after {took:?}"
    );
    stalled.abort();
}
