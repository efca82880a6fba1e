//! Per-connection limits, each at its edge, over real TCP (and an in-memory pipe where a peer
//! must stop reading under a paused clock): the request limit answered with a RetryResult (seen
//! on the wire) and retried automatically by the Rust client, the retries themselves, the
//! stream limit, held requests for peers that cannot take a RetryResult, the payload and name
//! limits, the send, notification and stream queues, connections, and the write stall.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{connect, connect_with, start, within, WirePeer};
use gotalk::listen::ListenerLimits;
use gotalk::protocol::{Frame, Id};
use gotalk::{Config, Error, Handlers};
use tokio::sync::Notify;

fn config(request_limit: u32, min_ms: u64, max_ms: u64) -> Config {
    Config::default()
        .request_limit(request_limit)
        .retry_wait(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
}

/// Sends one slow request and then `extra` quick ones from a raw peer, and returns the
/// RetryResults it gets back (after checking the slow request is still answered).
async fn retries_on_the_wire(server_config: Config, extra: u8) -> Vec<(Id, u32, Bytes)> {
    let server = start(common::handlers(), server_config).await;
    let mut peer = WirePeer::connect(server.addr).await;
    peer.send(&common::request(b"slow", "sleep", b"300")).await;
    for i in 0..extra {
        peer.send(&common::request(&[b'q', 0, 0, i], "sleep", b"1")).await;
    }
    let mut retries = Vec::new();
    loop {
        match peer.frame().await {
            Frame::RetryResult { id, wait, payload } => retries.push((id, wait, payload)),
            Frame::SingleResult { id, payload } => {
                assert_eq!((id, &payload[..]), (Id(*b"slow"), &b"300"[..]));
                break;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(retries.len(), usize::from(extra), "every request past the limit is answered");
    // The slot is free again: the next request runs.
    peer.send(&common::request(b"next", "sleep", b"1")).await;
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"next"), payload: "1".into() });
    retries
}

#[tokio::test]
async fn request_limit_sends_retry_result_with_wait_in_range() {
    let retries = retries_on_the_wire(config(1, 200, 260), 20).await;
    for (i, (id, wait, payload)) in retries.iter().enumerate() {
        assert_eq!(*id, Id([b'q', 0, 0, i as u8]), "answers keep the order and ids");
        assert!((200..260).contains(wait), "wait {wait} outside [200, 260)");
        assert_eq!(&payload[..], b"request rate limit");
    }
}

#[tokio::test]
async fn equal_min_and_max_retry_wait_is_exactly_that_wait() {
    let retries = retries_on_the_wire(config(1, 250, 250), 5).await;
    for (_, wait, payload) in retries {
        assert_eq!(wait, 250);
        assert_eq!(&payload[..], b"request rate limit");
    }
}

#[tokio::test]
async fn zero_retry_wait_works() {
    let retries = retries_on_the_wire(config(1, 0, 0), 3).await;
    assert!(retries.iter().all(|(_, wait, _)| *wait == 0));
}

#[tokio::test]
async fn request_limit_runs_exactly_n_at_once_and_refuses_the_next() {
    let server = start(common::handlers(), config(3, 100, 200)).await;
    let mut peer = WirePeer::connect(server.addr).await;
    // Three slow requests fill the limit of 3; the fourth is one past it.
    for id in [b"0001", b"0002", b"0003"] {
        peer.send(&common::request(id, "sleep", b"300")).await;
    }
    peer.send(&common::request(b"0004", "sleep", b"1")).await;
    match peer.frame().await {
        Frame::RetryResult { id, payload, .. } => {
            assert_eq!((id, &payload[..]), (Id(*b"0004"), &b"request rate limit"[..]))
        }
        other => panic!("expected a RetryResult for the fourth, got {other:?}"),
    }
    // All three at the limit ran, and none of them was refused.
    let mut answered = Vec::new();
    for _ in 0..3 {
        match peer.frame().await {
            Frame::SingleResult { id, payload } if &payload[..] == b"300" => answered.push(id),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    answered.sort_by_key(|id| id.0);
    assert_eq!(answered, [Id(*b"0001"), Id(*b"0002"), Id(*b"0003")]);
}

/// Handlers with a `slow` op that signals when it starts and records when it finishes, and
/// a `quick` op that reports whether `slow` had already finished when it ran.
fn slow_and_quick() -> (Handlers, Arc<Notify>) {
    let started = Arc::new(Notify::new());
    let slow_finished = Arc::new(AtomicBool::new(false));
    let mut handlers = Handlers::new();
    {
        let started = started.clone();
        let slow_finished = slow_finished.clone();
        handlers.handle("slow", move |_sock, ms: u64| {
            let started = started.clone();
            let slow_finished = slow_finished.clone();
            async move {
                started.notify_one();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                slow_finished.store(true, Ordering::SeqCst);
                Ok::<_, String>(ms)
            }
        });
    }
    handlers.handle("quick", move |_sock, ()| {
        let slow_finished = slow_finished.clone();
        async move { Ok::<_, String>(slow_finished.load(Ordering::SeqCst)) }
    });
    (handlers, started)
}

#[tokio::test]
async fn client_retries_automatically_and_succeeds() {
    let (handlers, started) = slow_and_quick();
    let server = start(handlers, config(1, 50, 80)).await;
    // Enough retries that a slow machine can't run out of them while `slow` runs.
    let client_config = Config::default().max_retries(50);
    let client = connect_with(server.addr, Handlers::new(), client_config).await;

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("slow", &150).await }
    });
    within("slow starts", started.notified()).await;
    // The only slot is taken, so this one is refused with a RetryResult, waits, and is sent
    // again until the slot frees; the handler only ever runs once the slow one is done.
    let ran_after_slow: bool =
        within("retried request", client.request("quick", &())).await.unwrap();
    assert!(ran_after_slow, "the quick request must have waited for the slot");
    assert_eq!(slow.await.unwrap().unwrap(), 150);
}

#[tokio::test]
async fn max_retries_zero_reports_the_retry_result() {
    let (handlers, started) = slow_and_quick();
    let server = start(handlers, config(1, 300, 400)).await;
    let client_config = Config::default().max_retries(0);
    let client = connect_with(server.addr, Handlers::new(), client_config).await;

    let slow = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("slow", &200).await }
    });
    within("slow starts", started.notified()).await;
    match client.request::<_, bool>("quick", &()).await {
        Err(Error::Retry { wait, message, attempts }) => {
            assert!(wait >= Duration::from_millis(300) && wait < Duration::from_millis(400));
            assert_eq!(message, "request rate limit");
            assert_eq!(attempts, 1);
        }
        other => panic!("expected Error::Retry, got {other:?}"),
    }
    assert_eq!(slow.await.unwrap().unwrap(), 200);
}

#[tokio::test]
async fn retries_run_out() {
    let (handlers, started) = slow_and_quick();
    let server = start(handlers, config(1, 10, 20)).await;
    let client_config = Config::default().max_retries(2);
    let client = connect_with(server.addr, Handlers::new(), client_config).await;

    let _slow = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("slow", &3000).await }
    });
    within("slow starts", started.notified()).await;
    match within("retries", client.request::<_, bool>("quick", &())).await {
        Err(Error::Retry { attempts, .. }) => assert_eq!(attempts, 3, "one send and two retries"),
        other => panic!("expected Error::Retry, got {other:?}"),
    }
}

#[tokio::test]
async fn stream_limit_refuses_extra_streams_with_a_retry_result() {
    let server_config = config(10, 100, 200).stream_limit(2);
    let server = start(common::handlers(), server_config).await;
    let client = connect(server.addr).await;

    // Two streams open at once: the limit, reached.
    let (mut first_tx, mut first_rx) = client.stream_request("stream-echo", "a").await.unwrap();
    assert_eq!(first_rx.next().await.unwrap(), Some(Bytes::from("a")));
    let (_second_tx, mut second_rx) = client.stream_request("stream-echo", "b").await.unwrap();
    assert_eq!(second_rx.next().await.unwrap(), Some(Bytes::from("b")));

    // The third is one past it.
    let (_third_tx, third_rx) = client.stream_request("stream-echo", "x").await.unwrap();
    match within("third stream", third_rx.collect()).await {
        Err(Error::Retry { message, wait, .. }) => {
            assert_eq!(message, "stream rate limit");
            assert!(wait >= Duration::from_millis(100) && wait < Duration::from_millis(200));
        }
        other => panic!("expected Error::Retry, got {other:?}"),
    }
    // Single requests are not streams and still run beside the open stream.
    assert_eq!(&client.buffer_request("echo", "single").await.unwrap()[..], b"single");

    // Once the first stream ends, a new one fits.
    first_tx.end().await.unwrap();
    assert_eq!(first_rx.next().await.unwrap(), None);
    let (mut tx, rx) = client.stream_request("stream-echo", "c").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(&within("a stream in the freed slot", rx.collect()).await.unwrap()[..], b"c");
}

#[tokio::test]
async fn stream_limit_zero_disables_streams() {
    let server_config = Config::default().stream_limit(0);
    let server = start(common::handlers(), server_config).await;
    let client = connect(server.addr).await;
    let (_tx, rx) = client.stream_request("stream-echo", "a").await.unwrap();
    // An ErrorResult, not a RetryResult: retrying could never succeed.
    match within("refused stream", rx.collect()).await {
        Err(Error::Remote(text)) => assert_eq!(text, "stream requests are disabled"),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    assert_eq!(&client.buffer_request("echo", "x").await.unwrap()[..], b"x");
}

/// A server for peers that cannot take a RetryResult, with a `busy` op that tracks how many
/// run at once.
fn holding_server(request_limit: u32, held: usize) -> (Handlers, Config, Arc<AtomicUsize>) {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut handlers = common::handlers();
    {
        let peak = peak.clone();
        handlers.handle("busy", move |_sock, n: u32| {
            let running = running.clone();
            let peak = peak.clone();
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>(n)
            }
        });
    }
    let config = Config::default()
        .request_limit(request_limit)
        .peer_understands_retry(false)
        .held_requests(held);
    (handlers, config, peak)
}

#[tokio::test]
async fn peer_without_retry_support_has_requests_held_and_all_answered() {
    let (handlers, config, peak) = holding_server(2, 64);
    let server = start(handlers, config).await;
    let client = connect(server.addr).await;

    let calls = (0..40u32).map(|n| {
        let client = client.clone();
        async move { client.request::<_, u32>("busy", &n).await }
    });
    let results = within("40 held requests", futures_util::future::join_all(calls)).await;
    for (n, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), n as u32, "request {n} dropped or mixed up");
    }
    assert!(peak.load(Ordering::SeqCst) <= 2, "the limit held: {}", peak.load(Ordering::SeqCst));
}

#[tokio::test]
async fn held_requests_never_get_a_retry_result_and_overflow_gets_an_error() {
    let (handlers, config, _peak) = holding_server(1, 2);
    let server = start(handlers, config).await;
    let mut peer = WirePeer::connect(server.addr).await;

    // One runs, two are held, the fourth is past the bound.
    peer.send(&common::request(b"0001", "sleep", b"150")).await;
    peer.send(&common::request(b"0002", "sleep", b"1")).await;
    peer.send(&common::request(b"0003", "sleep", b"2")).await;
    peer.send(&common::request(b"0004", "sleep", b"3")).await;

    assert_eq!(
        peer.frame().await,
        Frame::ErrorResult { id: Id(*b"0004"), payload: "request rate limit".into() }
    );
    // The held ones run in order once the slot frees, and none is a RetryResult.
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0001"), payload: "150".into() });
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0002"), payload: "1".into() });
    assert_eq!(peer.frame().await, Frame::SingleResult { id: Id(*b"0003"), payload: "2".into() });
}

#[tokio::test]
async fn payload_over_the_configured_limit_is_a_protocol_error() {
    let config = Config::default().max_payload(1024);
    let server = start(common::handlers(), config).await;

    // At the limit is fine.
    let mut peer = WirePeer::connect(server.addr).await;
    let mut frame = b"r0001004echo00000400".to_vec();
    frame.extend_from_slice(&[b'x'; 1024]);
    peer.write(&frame).await;
    match peer.frame().await {
        Frame::SingleResult { payload, .. } => assert_eq!(payload.len(), 1024),
        other => panic!("unexpected frame {other:?}"),
    }
    // One byte over is refused from the header alone, before the payload is sent.
    peer.write(b"r0002004echo00000401").await;
    peer.expect_end_with(b"f00000002").await;

    // A notification too.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"n004note00000401").await;
    peer.expect_end_with(b"f00000002").await;

    // Other connections are unaffected.
    let client = connect(server.addr).await;
    assert_eq!(&client.buffer_request("echo", vec![7u8; 1024]).await.unwrap()[..], &[7u8; 1024]);
}

#[tokio::test]
async fn handler_result_over_the_payload_limit_becomes_an_error_result() {
    let mut handlers = common::handlers();
    handlers.handle_buffer("big", |_sock, _| async move {
        Ok::<_, String>(Bytes::from(vec![b'x'; 2000]))
    });
    let config = Config::default().max_payload(1024);
    let server = start(handlers, config.clone()).await;
    let client = connect_with(server.addr, Handlers::new(), config).await;

    // Sending 2000 bytes would break the limit both sides agreed on, and the client would
    // have to drop the connection; the caller gets an error instead.
    match within("big result", client.buffer_request("big", "")).await {
        Err(Error::Remote(text)) => assert!(text.contains("exceeds"), "got {text:?}"),
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    assert!(!client.is_closed(), "closed: {:?}", client.close_reason());
    assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn error_text_over_the_payload_limit_is_cut_to_fit() {
    let mut handlers = common::handlers();
    handlers.handle("long-error", |_sock, ()| async move {
        Err::<(), _>(gotalk::HandlerError::text("é".repeat(100)))
    });
    let config = Config::default().max_payload(64);
    let server = start(handlers, config.clone()).await;
    let client = connect_with(server.addr, Handlers::new(), config).await;

    // A handler's long error, serde's description of bad parameters and the name of an
    // unknown op can all be longer than a small limit.
    match within("long error", client.request::<_, ()>("long-error", &())).await {
        Err(Error::Remote(text)) => {
            assert!(text.len() <= 64 && text.starts_with("éé"), "got {text:?}")
        }
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    match within("bad params", client.buffer_request("greet", "[1, 2, 3]")).await {
        Err(Error::Remote(text)) => {
            assert!(text.len() <= 64 && text.starts_with("invalid parameters"), "got {text:?}")
        }
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    let op = "o".repeat(100);
    match within("unknown op", client.buffer_request(&op, "")).await {
        Err(Error::Remote(text)) => {
            assert!(text.len() <= 64 && text.starts_with("unknown operation"), "got {text:?}")
        }
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    assert!(!client.is_closed(), "closed: {:?}", client.close_reason());
}

#[tokio::test]
async fn name_over_the_configured_limit_is_a_protocol_error() {
    let config = Config::default().max_name_len(8);
    let server = start(common::handlers(), config).await;
    let mut peer = WirePeer::connect(server.addr).await;
    peer.write(b"r0001008echo-xyz00000000").await;
    assert!(matches!(peer.frame().await, Frame::ErrorResult { .. }), "8 bytes is allowed");
    peer.write(b"r0002009echo-xyzw00000000").await;
    peer.expect_end_with(b"f00000002").await;
}

#[tokio::test]
async fn incoming_stream_buffer_holds_exactly_its_bytes_and_overflows_one_past() {
    // A handler that reads nothing until the test lets it, then answers with the bytes it got.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut handlers = common::handlers();
    {
        let gate = gate.clone();
        handlers.handle_stream(
            "late-reader",
            move |_sock, mut input: gotalk::StreamInput, mut output: gotalk::StreamOutput| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await?.forget();
                    let mut total = 0;
                    // The overflow's text is the peer's to read.
                    while let Some(part) = input.next().await? {
                        total += part.len();
                    }
                    output.send(total.to_string()).await?;
                    Ok::<_, gotalk::HandlerError>(())
                }
            },
        );
    }
    let config = Config::default().stream_buffer_bytes(1024);
    let server = start(handlers, config).await;
    let client = connect(server.addr).await;

    // Each buffered part costs its bytes plus 64: two of 448 are exactly 1024. (The first
    // part travels in the request itself and is not buffered.)
    for (second, fits) in [(448, true), (449, false)] {
        let (mut tx, rx) = client.stream_request("late-reader", "s").await.unwrap();
        tx.write(vec![b'x'; 448]).await.unwrap();
        tx.write(vec![b'x'; second]).await.unwrap();
        tx.end().await.unwrap();
        // Answered after both parts were read off the connection: they are buffered (or not).
        assert_eq!(&client.buffer_request("echo", "sync").await.unwrap()[..], b"sync");
        gate.add_permits(1);
        let result = within("the stream's result", rx.collect()).await;
        if fits {
            assert_eq!(&result.unwrap()[..], b"897");
        } else {
            match result {
                Err(Error::Remote(text)) => assert!(text.contains("overflowed"), "got {text:?}"),
                other => panic!("expected an ErrorResult, got {other:?}"),
            }
        }
    }
    assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn outgoing_stream_result_overflowing_the_readers_buffer_fails_that_stream_only() {
    let mut handlers = common::handlers();
    handlers.handle_stream(
        "flood",
        |_sock, _input: gotalk::StreamInput, mut output: gotalk::StreamOutput| async move {
            for _ in 0..4 {
                output.send(vec![b'y'; 600]).await?;
            }
            Ok::<_, Error>(())
        },
    );
    let server = start(handlers, Config::default()).await;
    let config = Config::default().stream_buffer_bytes(1024);
    let client = connect_with(server.addr, Handlers::new(), config).await;

    let (mut tx, mut rx) = client.stream_request("flood", "go").await.unwrap();
    tx.end().await.unwrap();
    // Don't read until everything has arrived, then find the overflow.
    assert_eq!(&client.buffer_request("sleep", "100").await.unwrap()[..], b"100");
    let mut parts = 0;
    let error = loop {
        match rx.next().await {
            Ok(Some(part)) => {
                assert_eq!(part.len(), 600);
                parts += 1;
            }
            Ok(None) => panic!("the stream should have overflowed"),
            Err(e) => break e,
        }
    };
    assert!(matches!(error, Error::StreamOverflow(1024)), "got {error:?}");
    assert!(parts >= 1);
    assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn max_connections_makes_new_peers_wait_until_one_closes() {
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(common::handlers()), Config::default())
            .limits(ListenerLimits::default().max_connections(1)),
    )
    .await;
    let first = connect(server.addr).await;

    let second = tokio::spawn(gotalk::tcp::connect(
        server.addr,
        Arc::new(Handlers::new()),
        Config::default(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second handshake should wait for a free slot");

    first.close();
    let second = within("second connection", second).await.unwrap().unwrap();
    assert_eq!(&second.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_slots_are_returned_however_connections_end() {
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(common::handlers()), Config::default())
            .limits(ListenerLimits::default().max_connections(4)),
    )
    .await;
    // Many short connections that end every which way, in waves of 32 at a time (more
    // simultaneous connects than that overflow the kernel's SYN queue and cost a 1 s retry).
    let addr = server.addr;
    for wave in 0..4u32 {
        let churn: Vec<_> = (0..32u32)
            .map(|i| {
                tokio::spawn(async move {
                    let mut peer = WirePeer::connect_raw(addr).await;
                    match (wave + i) % 4 {
                        // Invalid message after the handshake.
                        0 => {
                            peer.write(b"01x").await;
                            let _ = peer.read_to_end().await;
                        }
                        // Wrong version.
                        1 => {
                            peer.write(b"02").await;
                            let _ = peer.read_to_end().await;
                        }
                        // Handshake, then gone at once.
                        2 => peer.write(b"01").await,
                        // One request, then gone.
                        _ => {
                            peer.write(b"01r0001004echo00000001z").await;
                            assert_eq!(peer.read_bytes(2).await, b"01");
                            assert!(matches!(peer.frame().await, Frame::SingleResult { .. }));
                        }
                    }
                })
            })
            .collect();
        for task in churn {
            within("churn", task).await.unwrap();
        }
    }
    within("all connections gone", async {
        while !server.connections.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // All four slots are free again.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(server.addr).await);
    }
    for client in &clients {
        assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
    }
}

#[tokio::test]
async fn peer_that_never_reads_is_dropped_after_the_write_timeout() {
    use tokio::io::AsyncWriteExt;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handlers = common::handlers();
    handlers.on_close(move |_sock, reason| {
        let _ = tx.send(reason.clone());
    });
    let config =
        Config::default().write_timeout(Duration::from_millis(300)).send_queue_bytes(64 * 1024);
    let server = start(handlers, config).await;

    // Writes echo requests as fast as it can and never reads a byte of the results. Once
    // the kernel's buffers are full the server can neither write nor (with its send queue
    // full) keep reading, and gives up after the write timeout instead of buffering more.
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut frame = b"r0001004echo00010000".to_vec();
        frame.extend_from_slice(&[b'x'; 0x10000]);
        stream.write_all(b"01").await?;
        for i in 0u32.. {
            frame[1..5].copy_from_slice(&i.to_le_bytes());
            stream.write_all(&frame).await?;
        }
        Ok::<_, std::io::Error>(stream)
    });
    let reason = within("write timeout", rx.recv()).await.unwrap();
    assert_eq!(reason, gotalk::CloseReason::WriteTimeout(Duration::from_millis(300)));
    writer.abort();
    // Others are still served.
    let client = connect(server.addr).await;
    assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

/// A server that speaks gotalk by hand: it answers each request with a RetryResult (wait 0)
/// `refusals` times, then with its payload. Returns where it listens.
async fn refusing_server(refusals: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.write_all(b"01").await.unwrap();
        let mut version = [0u8; 2];
        stream.read_exact(&mut version).await.unwrap();
        assert_eq!(&version, b"01");
        let mut buf = bytes::BytesMut::new();
        let mut decoder = gotalk::protocol::Decoder::new();
        let mut refused = 0;
        loop {
            let Some(frame) = decoder.decode(&mut buf).unwrap() else {
                if stream.read_buf(&mut buf).await.unwrap() == 0 {
                    return;
                }
                continue;
            };
            let Frame::SingleRequest { id, payload, .. } = frame else { continue };
            let answer = if refused < refusals {
                refused += 1;
                Frame::RetryResult { id, wait: 0, payload: "busy".into() }
            } else {
                Frame::SingleResult { id, payload }
            };
            let mut wire = bytes::BytesMut::new();
            answer.encode(&mut wire);
            stream.write_all(&wire).await.unwrap();
        }
    });
    addr
}

#[tokio::test]
async fn max_retries_sends_again_exactly_that_many_times() {
    let client_config = Config::default().max_retries(3).heartbeat_interval(None);

    // Refused three times: the third retry is the last allowed, and it is answered.
    let addr = refusing_server(3).await;
    let client = connect_with(addr, Handlers::new(), client_config.clone()).await;
    assert_eq!(
        &within("three retries", client.buffer_request("x", "ok")).await.unwrap()[..],
        b"ok"
    );

    // Refused four times: one past, the caller gets the RetryResult.
    let addr = refusing_server(4).await;
    let client = connect_with(addr, Handlers::new(), client_config).await;
    match within("four refusals", client.buffer_request("x", "ok")).await {
        Err(Error::Retry { attempts, message, .. }) => {
            assert_eq!((attempts, message.as_str()), (4, "busy"), "one send and three retries")
        }
        other => panic!("expected Error::Retry, got {other:?}"),
    }
}

/// A sock for `handlers` on one end of an in-memory pipe that holds `capacity` bytes; the
/// test drives the other end by hand. The handshake is done.
async fn sock_on_pipe(
    handlers: Handlers,
    config: Config,
    capacity: usize,
) -> (gotalk::Sock, tokio::io::DuplexStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (ours, mut theirs) = tokio::io::duplex(capacity);
    theirs.write_all(b"01").await.unwrap();
    let (r, w) = gotalk::transport::io(ours);
    let info = gotalk::ConnInfo::new(gotalk::TransportKind::Memory, None, None);
    let sock = gotalk::Sock::start(r, w, Arc::new(handlers), Arc::new(config), info)
        .await
        .expect("handshake");
    // The version, and the hello a sock started on its own says first.
    let mut head = [0u8; 15];
    theirs.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"01R$hi!00000000");
    (sock, theirs)
}

/// A config without heartbeats or probes, so only what a test sends crosses the pipe.
fn quiet() -> Config {
    let mut config = Config::default().heartbeat_interval(None);
    let off = gotalk::LivenessConfig { interval: None, max_unacked: 0, ..config.liveness_config() };
    config = config.liveness(off).expect("valid");
    config
}

#[tokio::test(start_paused = true)]
async fn senders_wait_exactly_when_the_send_queue_is_full() {
    use tokio::io::AsyncReadExt;

    // Every queued message costs its payload plus 64 bytes: two of 448 fill 1024 exactly.
    let config = quiet().send_queue_bytes(1024);
    let (sock, mut peer) = sock_on_pipe(Handlers::new(), config, 64).await;
    sock.buffer_notify("a", vec![b'a'; 448]).await.unwrap();
    // One byte more than fits waits (and gives up here, taking nothing).
    let over =
        tokio::time::timeout(Duration::from_secs(1), sock.buffer_notify("b", vec![b'b'; 449]));
    assert!(over.await.is_err(), "1025 bytes queued: the sender should wait");
    // Exactly the bound does not.
    let at = tokio::time::timeout(Duration::from_secs(1), sock.buffer_notify("b", vec![b'b'; 448]));
    at.await.expect("1024 bytes queued: the sender should not wait").unwrap();
    let next = tokio::spawn({
        let sock = sock.clone();
        async move { sock.buffer_notify("c", "").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!next.is_finished(), "a full queue takes not even an empty message");

    // The peer reads: the queue drains and the waiting sender goes through, in order.
    let mut wire = Vec::new();
    let expected = 2 * "n001a000001c0".len() + 2 * 448 + "n001c00000000".len();
    while wire.len() < expected {
        let mut chunk = [0u8; 4096];
        let n = peer.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed");
        wire.extend_from_slice(&chunk[..n]);
    }
    next.await.unwrap().unwrap();
    assert!(wire.starts_with(b"n001a000001c0aaaa"));
    assert!(wire.ends_with(b"bbbbn001c00000000"));
    assert!(!sock.is_closed());
}

#[tokio::test(start_paused = true)]
async fn the_read_loop_waits_exactly_when_the_notification_queue_is_full() {
    use tokio::io::AsyncWriteExt;

    // A handler that holds each notification until the test lets it go.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut handlers = common::handlers();
    {
        let gate = gate.clone();
        handlers.handle_buffer_notification("hold", move |_sock, _payload| {
            let gate = gate.clone();
            async move { gate.acquire().await.unwrap().forget() }
        });
    }
    let config = quiet().notification_queue_bytes(1024);

    // Two notifications, each costing its payload plus 64 bytes, then a request.
    for (second, fits) in [(448, true), (449, false)] {
        let (_sock, mut peer) = sock_on_pipe(handlers.clone(), config.clone(), 64 * 1024).await;
        let mut wire = bytes::BytesMut::new();
        common::notification("hold", &[b'x'; 448]).encode(&mut wire);
        common::notification("hold", &vec![b'x'; second]).encode(&mut wire);
        common::request(b"0001", "echo", b"read").encode(&mut wire);
        peer.write_all(&wire).await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let answered =
            tokio::time::timeout(Duration::from_secs(1), pipe_frame(&mut peer, &mut buf));
        match answered.await {
            Ok(frame) => {
                assert!(fits, "{} bytes queued: the read loop should wait", 512 + second + 64);
                assert_eq!(frame, Frame::SingleResult { id: Id(*b"0001"), payload: "read".into() });
            }
            Err(_) => {
                assert!(!fits, "{} bytes queued: the read loop should go on", 512 + second + 64);
                // Once the first handler is done, its bytes free and reading resumes.
                gate.add_permits(1);
                let frame = within("the request behind", pipe_frame(&mut peer, &mut buf)).await;
                assert_eq!(frame, Frame::SingleResult { id: Id(*b"0001"), payload: "read".into() });
            }
        }
        gate.add_permits(2);
    }
}

/// The next frame from the far end of a pipe.
async fn pipe_frame(peer: &mut tokio::io::DuplexStream, buf: &mut bytes::BytesMut) -> Frame {
    use tokio::io::AsyncReadExt;

    let mut decoder = gotalk::protocol::Decoder::new();
    loop {
        if let Some(frame) = decoder.decode(buf).expect("valid frame") {
            return frame;
        }
        assert!(peer.read_buf(buf).await.unwrap() > 0, "closed");
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_stalled_for_the_write_timeout_closes_the_connection_and_not_before() {
    use tokio::io::AsyncReadExt;

    let closed_at = Arc::new(std::sync::Mutex::new(None));
    let mut handlers = Handlers::new();
    {
        let closed_at = closed_at.clone();
        handlers.on_close(move |_sock, reason| {
            *closed_at.lock().unwrap() = Some((tokio::time::Instant::now(), reason.clone()));
        });
    }
    // The default 30 s. The pipe takes 64 bytes and the peer reads none of them.
    let (sock, mut peer) = sock_on_pipe(handlers, quiet(), 64).await;
    let started = tokio::time::Instant::now();
    sock.buffer_notify("big", vec![b'x'; 4096]).await.unwrap();

    tokio::time::sleep_until(started + Duration::from_secs(30) - Duration::from_millis(1)).await;
    assert!(!sock.is_closed(), "closed before the write timeout: {:?}", sock.close_reason());
    // Not `within`: after the close, the last flush may take its own 5 s of virtual time.
    let reason = tokio::time::timeout(Duration::from_secs(60), sock.closed()).await.unwrap();
    assert_eq!(reason, gotalk::CloseReason::WriteTimeout(Duration::from_secs(30)));
    let (at, _) = closed_at.lock().unwrap().clone().expect("on_close ran");
    let waited = at - started;
    assert!(waited >= Duration::from_secs(30), "{waited:?}");
    assert!(waited <= Duration::from_secs(30) + Duration::from_millis(1), "{waited:?}");
    // The peer sees the connection end (after what had been written).
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), peer.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.len() < "n003big00001000".len() + 4096, "the stalled message was not finished");
}
