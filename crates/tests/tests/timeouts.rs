//! Read and handshake timeouts over real TCP, with short timeouts configured on the server.

mod common;

use std::time::Duration;

use common::{connect, connect_with, start, within, WirePeer};
use gotalk::protocol::{Frame, Id, ProtocolErrorCode};
use gotalk::{CloseReason, Config, Error, Handlers};
use tokio::sync::mpsc;

fn read_timeout(ms: u64) -> Config {
    Config::default().read_timeout(Some(Duration::from_millis(ms)))
}

#[tokio::test]
async fn idle_peer_gets_timeout_protocol_error_then_eof() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut handlers = common::handlers();
    handlers.on_close(move |_sock, reason| {
        let _ = tx.send(reason.clone());
    });
    let server = start(handlers, read_timeout(200)).await;
    let mut peer = WirePeer::connect(server.addr).await;

    peer.expect_end_with(b"f00000003").await;
    let reason = within("on_close", rx.recv()).await.unwrap();
    assert_eq!(reason, CloseReason::ReadTimeout(Duration::from_millis(200)));
}

#[tokio::test]
async fn read_timeout_counts_from_the_last_byte_not_the_last_message() {
    let server = start(common::handlers(), read_timeout(400)).await;
    let mut peer = WirePeer::connect(server.addr).await;

    // One message spread over 600 ms, with no gap as long as the timeout.
    for chunk in [&b"r000"[..], b"1004", b"echo", b"0000", b"0002", b"hi"] {
        peer.write(chunk).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: "hi".into() });
    // Then silence: the timeout fires.
    peer.expect_end_with(b"f00000003").await;
}

#[tokio::test]
async fn rust_client_without_heartbeats_is_timed_out_and_its_pending_request_says_why() {
    let server = start(common::handlers(), read_timeout(250)).await;
    let config = Config::default().heartbeat_interval(None);
    let client = connect_with(server.addr, Handlers::new(), config).await;

    // A request the server never answers is pending when the server gives up on the client.
    match within("pending request", client.buffer_request("never", "")).await {
        Err(Error::Closed(reason)) => {
            assert_eq!(reason, CloseReason::PeerProtocolError(ProtocolErrorCode::Timeout));
            let text = Error::Closed(reason).to_string();
            assert!(text.contains("timeout"), "the error should say why: {text}");
        }
        other => panic!("expected Error::Closed, got {other:?}"),
    }
    assert_eq!(
        within("closed", client.closed()).await,
        CloseReason::PeerProtocolError(ProtocolErrorCode::Timeout)
    );
}

#[tokio::test]
async fn rust_client_heartbeats_keep_it_connected_past_the_read_timeout() {
    let server = start(common::handlers(), read_timeout(300)).await;
    let config = Config::default().heartbeat_interval(Some(Duration::from_millis(50)));
    let client = connect_with(server.addr, Handlers::new(), config).await;

    // Two and a half read timeouts' worth of idleness, bridged only by heartbeats.
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert!(!client.is_closed(), "closed: {:?}", client.close_reason());
    assert_eq!(&client.buffer_request("echo", "alive").await.unwrap()[..], b"alive");
}

#[tokio::test]
async fn silent_peer_is_dropped_after_the_handshake_timeout() {
    let config = Config::default().handshake_timeout(Duration::from_millis(200)).read_timeout(None);
    let server = start(common::handlers(), config).await;

    // Never sends its version: gets ours, then a timeout error, then the close.
    let mut peer = WirePeer::connect_raw(server.addr).await;
    peer.expect_end_with(b"01f00000003").await;

    // Half a version is no better.
    let mut peer = WirePeer::connect_raw(server.addr).await;
    peer.write(b"0").await;
    peer.expect_end_with(b"01f00000003").await;

    assert!(server.connections.is_empty(), "a failed handshake leaves no connection behind");
    // The listener is fine.
    let client = connect(server.addr).await;
    assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test(start_paused = true)]
async fn the_handshake_timeout_fires_at_its_bound_counted_from_the_start_not_the_last_byte() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The default 10 s, on an in-memory pipe under a paused clock. Half a version just
    // before the deadline does not put it off: it bounds the whole handshake.
    for half_a_version in [false, true] {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let (r, w) = gotalk::transport::io(ours);
        let info = gotalk::ConnInfo::new(gotalk::TransportKind::Memory, None, None);
        let started = tokio::time::Instant::now();
        let handshake = tokio::spawn(gotalk::Sock::start(
            r,
            w,
            Arc::new(common::handlers()),
            Arc::new(Config::default()),
            info,
        ));
        // The version, and the hello a sock started on its own says first.
        let mut head = [0u8; 15];
        peer.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"01R$hi!00000000");

        tokio::time::sleep_until(started + Duration::from_secs(10) - Duration::from_millis(1))
            .await;
        if half_a_version {
            peer.write_all(b"0").await.unwrap();
        }
        tokio::task::yield_now().await;
        assert!(!handshake.is_finished(), "gave up before the handshake timeout");
        let outcome = handshake.await.unwrap();
        let waited = started.elapsed();
        assert!(
            matches!(
                outcome,
                Err(Error::Closed(CloseReason::HandshakeTimeout(t))) if t == Duration::from_secs(10)
            ),
            "{outcome:?}"
        );
        assert!(waited >= Duration::from_secs(10), "{waited:?}");
        assert!(waited <= Duration::from_secs(10) + Duration::from_millis(1), "{waited:?}");
        // The peer is told why, then the connection ends.
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&rest), "f00000003");
    }
}
