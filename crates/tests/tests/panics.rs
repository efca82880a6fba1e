//! Handlers and hooks that panic before returning their future, or synchronously: each costs
//! one ErrorResult (or one notification) and the connection keeps working.

mod common;

use std::future::Ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{connect, connect_with, start, within, WirePeer};
use gotalk::protocol::{Frame, Id};
use gotalk::{Config, Handlers};

/// The test operations plus `spanic`, whose closure panics before it returns a future.
fn with_sync_panic() -> Handlers {
    let mut handlers = common::handlers();
    handlers.handle_buffer("spanic", |_sock, _payload| -> Ready<Result<Bytes, String>> {
        panic!("panics before returning its future")
    });
    handlers
}

#[tokio::test]
async fn handler_panicking_before_its_future_gets_an_error_result() {
    let server = start(with_sync_panic(), Config::default()).await;
    let client = connect(server.addr).await;
    for _ in 0..3 {
        let err = within("answer", client.buffer_request("spanic", "")).await.unwrap_err();
        assert_is_internal(&err);
    }
    let echoed = within("echo", client.buffer_request("echo", "still here")).await.unwrap();
    assert_eq!(&echoed[..], b"still here");
}

#[tokio::test]
async fn held_request_panicking_before_its_future_costs_no_other_answer() {
    let config = Config::default().request_limit(1).peer_understands_retry(false);
    let server = start(with_sync_panic(), config).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // 0001 runs; 0002 (the panicking one) and 0003 wait for its slot.
    peer.send(&common::request(b"0001", "sleep", b"100")).await;
    peer.send(&common::request(b"0002", "spanic", b"")).await;
    peer.send(&common::request(b"0003", "echo", b"after")).await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: "100".into() });
    match peer.frame().await {
        Frame::ErrorResult { id: Id(id), payload } => {
            assert_eq!(&id, b"0002");
            assert!(payload.starts_with(b"[internal] internal error (ref "), "{payload:?}");
        }
        other => panic!("expected the ErrorResult of 0002, got {other:?}"),
    }
    assert_eq!(
        peer.frame().await,
        Frame::SingleResult { id: Id(*b"0003"), payload: "after".into() }
    );
}

#[tokio::test]
async fn notification_handler_panicking_before_its_future_stops_nothing_after_it() {
    let seen = Arc::new(AtomicUsize::new(0));
    let mut handlers = Handlers::new();
    handlers.handle_buffer_notification("boom", |_sock, _payload| -> Ready<()> {
        panic!("panics before returning its future")
    });
    {
        let seen = seen.clone();
        handlers.handle_buffer_notification("count", move |_sock, _payload| {
            seen.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        });
    }
    let server = start(handlers, Config::default()).await;
    let client = connect(server.addr).await;
    client.buffer_notify("boom", "").await.unwrap();
    client.buffer_notify("count", "").await.unwrap();
    client.buffer_notify("boom", "").await.unwrap();
    client.buffer_notify("count", "").await.unwrap();
    within("both later notifications handled", async {
        while seen.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn panicking_connection_hooks_leave_the_connection_working() {
    let mut handlers = common::handlers();
    handlers
        .on_connect(|_sock| -> Ready<()> { panic!("on_connect panics") })
        .on_heartbeat(|_sock, _heartbeat| panic!("on_heartbeat panics"))
        .on_close(|_sock, _reason| panic!("on_close panics"));
    let server = start(handlers, Config::default()).await;
    let config = Config::default().heartbeat_interval(Some(Duration::from_millis(20)));
    let client = connect_with(server.addr, Handlers::new(), config).await;
    // Several heartbeats reach the panicking hook while requests go on.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let echoed = within("echo", client.buffer_request("echo", "ok")).await.unwrap();
        assert_eq!(&echoed[..], b"ok");
    }
    // The server side's on_close panics as it closes; closing still completes.
    let server_side = server.only_connection().await;
    server_side.close();
    within("server side closed", server_side.closed()).await;
    within("client sees the close", client.closed()).await;
}

/// A panic reaches the peer as an internal error with a reference, never its message (which
/// may say anything about the server).
fn assert_is_internal(err: &gotalk::Error) {
    let remote = err.remote().unwrap_or_else(|| panic!("an ErrorResult, not {err:?}"));
    assert_eq!(remote.code(), Some("internal"), "{err:?}");
    assert!(remote.message().starts_with("internal error (ref "), "{err:?}");
    assert!(!remote.message().contains("panic"), "{err:?}");
}
