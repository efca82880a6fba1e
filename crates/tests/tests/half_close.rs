//! A peer that shuts down its sending side after its requests (a TCP FIN, as `nc -N` and
//! many one-shot clients do) still reads their answers: single and streaming results of the
//! requests that arrived before the FIN, then the connection closes. The wait is bounded by
//! the write timeout.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{request, stream_request, within, WirePeer};
use gotalk::protocol::{Frame, Id, ProtocolErrorCode};
use gotalk::{CloseReason, Config};
use tokio::time::Instant;

/// A streaming request's part (`p`); an empty one ends the request's input.
fn part(id: &[u8; 4], payload: &[u8]) -> Frame {
    Frame::StreamRequestPart { id: Id(*id), payload: Bytes::copy_from_slice(payload) }
}

/// Every frame until the server closes the connection.
async fn frames_until_end(peer: &mut WirePeer) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = peer.next_frame().await {
        frames.push(frame);
    }
    frames
}

/// The frames for request `id`, in order.
fn of(frames: &[Frame], id: &[u8; 4]) -> Vec<Frame> {
    frames.iter().filter(|f| f.id() == Some(Id(*id))).cloned().collect()
}

/// Sends `frames` in one write, then the FIN.
async fn send_then_fin(peer: &mut WirePeer, frames: &[Frame]) {
    let mut wire = BytesMut::new();
    for frame in frames {
        frame.encode(&mut wire);
    }
    peer.write(&wire).await;
    peer.shutdown_write().await;
}

#[tokio::test]
async fn requests_sent_before_the_fin_are_answered_then_the_connection_closes() {
    let server = common::start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // A slow request, and a streaming request whose input is whole, then the FIN.
    send_then_fin(
        &mut peer,
        &[
            request(b"0001", "sleep", b"200"),
            stream_request(b"0002", "stream-echo", b"one"),
            part(b"0002", b"two"),
            part(b"0002", b""),
        ],
    )
    .await;
    let frames = within("answers, then the end", frames_until_end(&mut peer)).await;
    assert_eq!(
        of(&frames, b"0001"),
        [Frame::SingleResult { id: Id(*b"0001"), payload: Bytes::from_static(b"200") }]
    );
    let stream_result = |payload: &'static [u8]| Frame::StreamResult {
        id: Id(*b"0002"),
        payload: Bytes::from_static(payload),
    };
    assert_eq!(
        of(&frames, b"0002"),
        [stream_result(b"one"), stream_result(b"two"), stream_result(b"")]
    );
    within("the server forgets it", async {
        while !server.connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_stream_request_left_open_at_the_fin_fails_instead_of_waiting() {
    let server = common::start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // Its input can never end now: the handler reads an error, which answers the request.
    send_then_fin(&mut peer, &[stream_request(b"0001", "stream-echo", b"one")]).await;
    let frames = within("answer, then the end", frames_until_end(&mut peer)).await;
    let frames = of(&frames, b"0001");
    assert_eq!(
        frames[0],
        Frame::StreamResult { id: Id(*b"0001"), payload: Bytes::from_static(b"one") }
    );
    match &frames[1..] {
        [Frame::ErrorResult { payload, .. }] => {
            let text = String::from_utf8_lossy(payload);
            assert!(text.contains("closed by peer"), "{text}");
        }
        other => panic!("expected one ErrorResult, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_handler_calling_back_a_peer_past_its_fin_fails_at_once() {
    let server = common::start(common::handlers(), Config::default()).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // `reverse-echo` asks the caller, which can no longer answer: the call fails (whether it
    // went out before the FIN arrived or not), and so the request, well before any timeout.
    send_then_fin(&mut peer, &[request(b"0001", "reverse-echo", b"x")]).await;
    let frames = within("answer, then the end", frames_until_end(&mut peer)).await;
    match of(&frames, b"0001").as_slice() {
        [Frame::ErrorResult { .. }] => {}
        other => panic!("expected one ErrorResult, got {other:?} in {frames:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn requests_still_running_a_write_timeout_after_the_fin_are_cut_with_protocol_error_3() {
    let (tx, mut closes) = tokio::sync::mpsc::unbounded_channel();
    let mut handlers = common::handlers();
    handlers.on_close(move |_sock, reason| {
        let _ = tx.send(reason.clone());
    });
    let limit = Duration::from_millis(300);
    let config = Config::default().write_timeout(limit);
    let server = common::start(handlers, config).await;
    let mut peer = WirePeer::connect(server.addr).await;
    let fin = Instant::now();
    send_then_fin(&mut peer, &[request(b"0001", "never", b"")]).await;
    let mut frames = within("the end", frames_until_end(&mut peer)).await;
    let waited = fin.elapsed();
    // Heartbeats go out while the answers are awaited.
    frames.retain(|f| !matches!(f, Frame::Heartbeat { .. }));
    let timeout = ProtocolErrorCode::Timeout.as_u32();
    assert_eq!(frames, [Frame::ProtocolError { code: timeout }]);
    assert!(waited >= limit, "cut after {waited:?}, before the write timeout");
    assert!(waited < limit * 4, "cut after {waited:?}");
    let reason = within("on_close", closes.recv()).await.unwrap();
    assert_eq!(reason, CloseReason::AnswerTimeout(limit));
    server.stop().await;
}
