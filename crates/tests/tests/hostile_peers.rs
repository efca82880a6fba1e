//! Hostile peers over real sockets, in virtual time (the server runs in-process, so the
//! paused clock covers its timeouts and each test takes milliseconds): peers that write one
//! byte a second (slowloris) to the TCP handshake, inside a frame, to the HTTP server and
//! inside a WebSocket message; and peers that stop reading, or read one byte a second, while
//! the server has plenty to send. Each is bounded by a limit with a default, and a client
//! beside it keeps being answered throughout.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::raw_ws::{self, RawWs, BINARY, CLOSE, CONTINUATION, PING, PONG};
use common::web::WebServer;
use gotalk::protocol::{Decoder, Frame, ProtocolErrorCode};
use gotalk::{CloseReason, Config, Handlers, Sock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// Awaits `fut`, failing the test if it takes longer than `limit` of virtual time: with the
/// clock paused this fires only when nothing else can happen first, so it guards against
/// hangs without slowing anything down.
///
/// With real sockets under the paused clock, a task woken by I/O may run only after the
/// clock has jumped to the next timer, so each guard is far longer than the step needs, and
/// measured times are checked to within a second (the tests' trickles tick every second).
async fn guard<F: std::future::Future>(what: &str, limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// The test operations plus `flood`: sends the caller 1 KiB notifications until a send
/// fails, counting those that went into the send queue.
fn flooding(sent: Arc<AtomicUsize>) -> Handlers {
    let mut handlers = common::handlers();
    handlers.handle_buffer("flood", move |sock: Sock, _| {
        let sent = sent.clone();
        async move {
            let note = Bytes::from(vec![b'x'; 1024]);
            while sock.buffer_notify("flood", note.clone()).await.is_ok() {
                sent.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, String>(Bytes::new())
        }
    });
    handlers
}

/// Reports every close the server sees: when, and why.
fn closes(handlers: &mut Handlers) -> mpsc::UnboundedReceiver<(Instant, CloseReason)> {
    let (tx, rx) = mpsc::unbounded_channel();
    handlers.on_close(move |_sock, reason| {
        let _ = tx.send((Instant::now(), reason.clone()));
    });
    rx
}

/// The next close the server sees, and how long after `since` it came.
async fn next_close(
    closed: &mut mpsc::UnboundedReceiver<(Instant, CloseReason)>,
    since: Instant,
) -> (Duration, CloseReason) {
    let (at, reason) = guard("on_close", 3600 * SECOND, closed.recv()).await.unwrap();
    (at - since, reason)
}

/// A well-behaved client beside the attack: an echo every 10 s over its own connection, each
/// of which must be answered. Stopping it returns how many were.
struct Bystander {
    stop: tokio_util::sync::CancellationToken,
    task: JoinHandle<usize>,
}

impl Bystander {
    fn start(client: Sock) -> Bystander {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut answered = 0;
            while !token.is_cancelled() {
                let echo =
                    guard("bystander's echo", 60 * SECOND, client.buffer_request("echo", "hi"));
                assert_eq!(&echo.await.expect("the bystander is answered")[..], b"hi");
                answered += 1;
                tokio::select! {
                    _ = tokio::time::sleep(10 * SECOND) => {}
                    _ = token.cancelled() => {}
                }
            }
            answered
        });
        Bystander { stop, task }
    }

    async fn tcp(addr: SocketAddr) -> Bystander {
        Bystander::start(common::connect(addr).await)
    }

    /// Stops it, checking it was answered at least `at_least` times.
    async fn stop(self, at_least: usize) {
        self.stop.cancel();
        let answered = self.task.await.expect("the bystander failed");
        assert!(answered >= at_least, "the bystander was answered {answered} times");
    }
}

/// A raw TCP gotalk peer that trickles bytes and keeps whatever the server sends.
struct Trickler {
    stream: TcpStream,
    got: BytesMut,
}

impl Trickler {
    async fn connect(addr: SocketAddr) -> Trickler {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Trickler { stream, got: BytesMut::new() }
    }

    /// Writes `bytes` one at a time, `every` apart (the first at once); stops early once the
    /// server has closed. Returns how many were written.
    async fn trickle(&mut self, bytes: &[u8], every: Duration) -> usize {
        for (i, byte) in bytes.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(every).await;
            }
            if !self.take_available() || self.stream.write_all(&[*byte]).await.is_err() {
                return i;
            }
            // A real moment for loopback to deliver the byte, so the server's socket is
            // readable before the paused clock can jump to the next timer.
            std::thread::sleep(Duration::from_millis(1));
        }
        bytes.len()
    }

    /// Moves what has arrived into `got` without waiting; false once the server has closed.
    fn take_available(&mut self) -> bool {
        loop {
            self.got.reserve(4096);
            match self.stream.try_read_buf(&mut self.got) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    /// Reads until the server closes, then decodes everything it sent after its version.
    async fn frames_until_closed(&mut self) -> Vec<Frame> {
        let read = async {
            loop {
                self.got.reserve(4096);
                match self.stream.read_buf(&mut self.got).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        guard("the server closes", Duration::from_secs(3600), read).await;
        self.decode()
    }

    /// Waits for more bytes from the server.
    async fn read_some(&mut self) {
        self.got.reserve(4096);
        let read = self.stream.read_buf(&mut self.got);
        assert!(guard("bytes from the server", 60 * SECOND, read).await.unwrap() > 0);
    }

    /// The frames received so far, after the server's version.
    fn decode(&mut self) -> Vec<Frame> {
        assert_eq!(&self.got[..2], b"01", "the server's version comes first");
        let mut rest = BytesMut::from(&self.got[2..]);
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut rest).expect("the server's frames decode") {
            frames.push(frame);
        }
        frames
    }
}

/// A request for `echo` with `payload_len` bytes of payload, encoded.
fn echo_request(id: &[u8; 4], payload_len: usize) -> Vec<u8> {
    let mut wire = BytesMut::new();
    common::request(id, "echo", &vec![b'x'; payload_len]).encode(&mut wire);
    wire.to_vec()
}

/// Asserts that `elapsed` is `secs` seconds, give or take the clock's jump to the next
/// timer (see [`guard`]).
fn assert_within_a_second(elapsed: Duration, secs: u64) {
    let expected = Duration::from_secs(secs);
    assert!(elapsed >= expected && elapsed <= expected + SECOND, "{elapsed:?}, not {expected:?}");
}

fn is_timeout_error(frame: &Frame) -> bool {
    *frame == Frame::protocol_error(ProtocolErrorCode::Timeout)
}

// ---- Slowloris over TCP ----

#[tokio::test(start_paused = true)]
async fn a_trickled_handshake_is_bounded_by_the_handshake_timeout() {
    let server = common::start(common::handlers(), Config::default()).await;
    let bystander = Bystander::tcp(server.addr).await;

    // At one byte a second the two bytes of a version take one second: well within 10 s.
    let mut quick = Trickler::connect(server.addr).await;
    assert_eq!(quick.trickle(b"01", SECOND).await, 2);
    // The slowest that passes: the second byte just inside the 10 s.
    let mut slowest = Trickler::connect(server.addr).await;
    assert_eq!(slowest.trickle(b"01", Duration::from_millis(9_990)).await, 2);
    // One that never finishes is cut at 10 s: our version, ProtocolError 3, the close.
    let mut stalled = Trickler::connect(server.addr).await;
    let started = Instant::now();
    assert_eq!(stalled.trickle(b"0", SECOND).await, 1);
    let frames = stalled.frames_until_closed().await;
    assert_within_a_second(started.elapsed(), 10);
    assert!(frames.len() == 1 && is_timeout_error(&frames[0]), "{frames:?}");

    // The two that finished are connected and served.
    for peer in [&mut quick, &mut slowest] {
        peer.stream.write_all(&echo_request(b"0001", 2)).await.unwrap();
        // Heartbeats and liveness probes may come first.
        while !peer.decode().iter().any(|f| matches!(f, Frame::SingleResult { .. })) {
            peer.read_some().await;
        }
    }
    bystander.stop(1).await;
}

#[tokio::test(start_paused = true)]
async fn a_frame_trickled_one_byte_a_second_is_cut_at_the_frame_timeout() {
    let mut handlers = common::handlers();
    let mut closed = closes(&mut handlers);
    let server = common::start(handlers, Config::default()).await;
    let bystander = Bystander::tcp(server.addr).await;

    // A header declaring a 16 MiB payload, then the payload, one byte a second: each byte
    // keeps the 90 s read timeout at bay, and the whole would take six months.
    let mut peer = Trickler::connect(server.addr).await;
    peer.stream.write_all(b"01").await.unwrap();
    let mut frame = b"r0001004echo01000000".to_vec();
    frame.resize(frame.len() + 16 * 1024 * 1024, b'x');
    let started = Instant::now();
    let written = peer.trickle(&frame, SECOND).await;

    // The 5-minute frame timeout ends it: ProtocolError 3, then the close.
    let frames = peer.frames_until_closed().await;
    assert!(frames.last().is_some_and(is_timeout_error), "{frames:?}");
    // Not cut early. The upper bound is the server's own close time, checked below: under
    // the paused clock the peer may notice the close a few virtual seconds late.
    assert!(written >= 299, "{written} bytes got through");
    let (after, reason) = next_close(&mut closed, started).await;
    assert_within_a_second(after, 300);
    assert_eq!(reason, CloseReason::FrameTimeout(Duration::from_secs(300)));
    assert!(reason.is_timeout());

    // The server reads what the peer may still send for 2 s more, so it reads the reason
    // rather than a reset; then only the bystander is left, answered all along.
    guard("the place frees", 3 * SECOND, async {
        while server.connections.len() != 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    bystander.stop(30).await;
}

/// Writes `bytes` in `pieces` equal pieces, `every` apart, in real time.
async fn write_spread(peer: &mut common::WirePeer, bytes: &[u8], pieces: usize, every: Duration) {
    for (i, piece) in bytes.chunks(bytes.len().div_ceil(pieces)).enumerate() {
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        if peer.try_write(piece).await.is_err() {
            return;
        }
    }
}

// In real time, with a short frame timeout: under the paused clock an edge this close would
// depend on when the runtime notices each byte.
#[tokio::test]
async fn a_message_whole_within_the_frame_timeout_passes_and_one_past_it_is_cut() {
    let config = Config::default().frame_timeout(Some(Duration::from_millis(600)));
    let mut handlers = common::handlers();
    let mut closed = closes(&mut handlers);
    let server = common::start(handlers, config).await;
    let bystander = common::connect(server.addr).await;

    // Ten pieces 50 ms apart: whole 450 ms after the first byte. Sixteen: 750 ms.
    let mut within_it = common::WirePeer::connect(server.addr).await;
    let mut past_it = common::WirePeer::connect(server.addr).await;
    let (short, long) = (echo_request(b"0001", 180), echo_request(b"0002", 180));
    let step = Duration::from_millis(50);
    tokio::join!(
        write_spread(&mut within_it, &short, 10, step),
        write_spread(&mut past_it, &long, 16, step),
    );
    let answer = common::within("the answer", within_it.frame()).await;
    assert!(matches!(answer, Frame::SingleResult { payload, .. } if payload.len() == 180));
    past_it.expect_end_with(b"f00000003").await;
    let (_, reason) = common::within("on_close", closed.recv()).await.unwrap();
    assert_eq!(reason, CloseReason::FrameTimeout(Duration::from_millis(600)));
    assert_eq!(&bystander.buffer_request("echo", "hi").await.unwrap()[..], b"hi");
    // The cut peer's place is held until it closes too (or 2 s pass).
    drop(past_it);
    common::within("the bystander and the peer within the limit are left", async {
        while server.connections.len() != 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn without_a_frame_timeout_a_trickle_holds_its_connection_past_the_read_timeout() {
    // Why the frame timeout exists: the read timeout counts from the last byte.
    let config = Config::default().frame_timeout(None);
    let server = common::start(common::handlers(), config).await;
    let mut peer = Trickler::connect(server.addr).await;
    peer.stream.write_all(b"01").await.unwrap();
    let mut frame = b"r0001004echo01000000".to_vec();
    frame.resize(20 + 1200, b'x');
    assert_eq!(peer.trickle(&frame, SECOND).await, frame.len(), "20 minutes, still open");
    assert!(peer.take_available());
    assert_eq!(server.connections.len(), 1);
}

// ---- Slowloris over HTTP and WebSocket ----

#[tokio::test(start_paused = true)]
async fn trickled_http_headers_and_idle_keep_alive_are_cut_at_the_header_timeout() {
    let server = WebServer::start(common::handlers(), Config::default(), |g| g).await;
    let bystander = Bystander::tcp(server.tcp).await;
    let request = b"GET /gotalk/nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n";

    // One byte a second: the 10 s header timeout cuts it before the headers end.
    let (mut from, mut to) = TcpStream::connect(server.http).await.unwrap().into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for byte in request {
            if to.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(SECOND).await;
        }
    });
    let mut answer = Vec::new();
    let _ = guard("the server closes", 60 * SECOND, from.read_to_end(&mut answer)).await;
    assert_within_a_second(started.elapsed(), 10);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    writer.abort();

    // Headers whole just within the timeout are answered; then the idle keep-alive
    // connection gets the same 10 s for its next request's headers.
    let mut keep_alive = TcpStream::connect(server.http).await.unwrap();
    keep_alive.write_all(&request[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(9_990)).await;
    keep_alive.write_all(&request[1..]).await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = guard("the answer", 60 * SECOND, keep_alive.read(&mut head)).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 "), "{}", String::from_utf8_lossy(&head[..n]));
    let answered = Instant::now();
    let mut rest = Vec::new();
    guard("idle close", 60 * SECOND, keep_alive.read_to_end(&mut rest)).await.unwrap();
    assert_within_a_second(answered.elapsed(), 10);
    bystander.stop(2).await;
    server.stop().await;
}

/// A raw WebSocket peer past the upgrade and the gotalk handshake.
async fn raw_ws(server: &WebServer) -> RawWs<TcpStream> {
    let stream = TcpStream::connect(server.http).await.unwrap();
    let mut ws = RawWs::upgrade(stream, "/gotalk/", "localhost", &[]).await.expect("upgrade");
    ws.gotalk_handshake().await;
    ws
}

/// Every frame the server sent until it closed the connection.
async fn ws_frames_until_closed(ws: &mut RawWs<TcpStream>) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        match ws.next_within(3600 * SECOND).await {
            raw_ws::Got::Frame { opcode, payload } => frames.push((opcode, payload)),
            raw_ws::Got::Timeout => panic!("the server never closed: {frames:?}"),
            _ => return frames,
        }
    }
}

/// What the end of a WebSocket connection looked like: the ProtocolError 3 message, then a
/// close frame.
fn ends_with_timeout_error(frames: &[(u8, Vec<u8>)]) -> bool {
    let n = frames.len();
    n >= 2 && frames[n - 2] == (BINARY, b"f00000003".to_vec()) && frames[n - 1].0 == CLOSE
}

#[tokio::test(start_paused = true)]
async fn a_websocket_frame_trickled_one_byte_a_second_fails_the_liveness_probes() {
    let mut handlers = common::handlers();
    let mut closed = closes(&mut handlers);
    let server = WebServer::start(handlers, Config::default(), |g| g).await;
    let bystander = Bystander::tcp(server.tcp).await;
    let mut ws = raw_ws(&server).await;

    // One WebSocket frame holding a whole request, one byte a second. No message completes,
    // so the server sees silence; its probes (pings) cannot be answered from inside a frame.
    let frame = raw_ws::encode(BINARY, true, &echo_request(b"0001", 1000), true);
    let started = Instant::now();
    let written = ws.trickle(&frame, SECOND).await;
    let frames = ws_frames_until_closed(&mut ws).await;
    assert!(ends_with_timeout_error(&frames), "{frames:?}");
    assert_eq!(frames.iter().filter(|(op, _)| *op == PING).count(), 2, "{frames:?}");
    // Not cut early. The upper bound is the server's own close time, checked below: under
    // the paused clock the peer may notice the close a few virtual seconds late.
    assert!(written >= 44, "{written} bytes got through");
    let (after, reason) = next_close(&mut closed, started).await;
    assert_within_a_second(after, 45);
    assert!(matches!(reason, CloseReason::PeerDead(_)), "{reason:?}");
    guard("the slot frees", 60 * SECOND, async {
        while !server.gateway.connections().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    bystander.stop(5).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn with_probes_off_a_trickled_websocket_frame_is_cut_at_the_read_timeout() {
    let mut config = Config::default();
    let no_probes =
        gotalk::LivenessConfig { interval: None, max_unacked: 0, ..config.liveness_config() };
    config = config.liveness(no_probes).expect("valid");
    let mut handlers = common::handlers();
    let mut closed = closes(&mut handlers);
    let server = WebServer::start(handlers, config, |g| g).await;
    let mut ws = raw_ws(&server).await;

    let frame = raw_ws::encode(BINARY, true, &echo_request(b"0001", 1000), true);
    let started = Instant::now();
    ws.trickle(&frame, SECOND).await;
    let frames = ws_frames_until_closed(&mut ws).await;
    assert!(ends_with_timeout_error(&frames), "{frames:?}");
    let (after, reason) = next_close(&mut closed, started).await;
    assert_within_a_second(after, 90);
    assert_eq!(reason, CloseReason::ReadTimeout(Duration::from_secs(90)));
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_trickled_as_websocket_messages_is_cut_at_the_frame_timeout() {
    // A header in one message and its payload in 1-byte messages, one a second: each
    // message is whole, which restarts the read timeout and answers the probes, but the
    // gotalk message they add up to is not whole within the frame timeout.
    let mut handlers = common::handlers();
    let mut closed = closes(&mut handlers);
    let server = WebServer::start(handlers, Config::default(), |g| g).await;
    let bystander = Bystander::tcp(server.tcp).await;
    let mut ws = raw_ws(&server).await;

    let request = echo_request(b"0001", 16 << 20);
    let started = Instant::now();
    let mut messages = 0;
    for byte in &request[..400] {
        let message = raw_ws::encode(BINARY, true, &[*byte], true);
        if !ws.deliver(&message).await {
            break;
        }
        messages += 1;
        tokio::time::sleep(SECOND).await;
    }
    // Not cut early. The upper bound is the server's own close time, checked below: under
    // the paused clock the peer may notice the close a few virtual seconds late.
    assert!(messages >= 299, "{messages} messages got through");
    let frames = ws_frames_until_closed(&mut ws).await;
    assert!(ends_with_timeout_error(&frames), "{frames:?}");
    // The clock starts when the server first reads the trickle. Through the gateway's
    // upgraded socket the paused clock can run ahead of its reads by a few virtual seconds
    // on a loaded machine, so only "not early" is exact here; the frame timeout's edge is
    // measured in real time by `a_message_whole_within_the_frame_timeout_passes_…`.
    let (after, reason) = next_close(&mut closed, started).await;
    assert!(after >= 300 * SECOND && after < 330 * SECOND, "closed after {after:?}");
    assert_eq!(reason, CloseReason::FrameTimeout(Duration::from_secs(300)));
    bystander.stop(30).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_message_trickled_in_fragments_between_pongs_is_cut_at_the_read_timeout() {
    // One gotalk request as one WebSocket message of 1-byte fragments, one a second, each
    // probe answered with a pong between fragments (which the protocol allows). The peer is
    // alive, so the probes pass; but no byte of the gotalk stream arrives until the message
    // is whole, and pongs do not restart the read timeout.
    let mut handlers = common::handlers();
    let mut closed = closes(&mut handlers);
    let server = WebServer::start(handlers, Config::default(), |g| g).await;
    let bystander = Bystander::tcp(server.tcp).await;
    let mut ws = raw_ws(&server).await;

    let request = echo_request(b"0001", 1000);
    let started = Instant::now();
    let (mut fragments, mut pongs) = (0, 0);
    'trickle: for (i, byte) in request.iter().enumerate() {
        let opcode = if i == 0 { BINARY } else { CONTINUATION };
        let fragment = raw_ws::encode(opcode, false, &[*byte], true);
        if !ws.deliver(&fragment).await {
            break;
        }
        fragments += 1;
        tokio::time::sleep(SECOND).await;
        if !ws.take_available() {
            break;
        }
        loop {
            match ws.next_within(Duration::ZERO).await {
                raw_ws::Got::Frame { opcode: PING, payload } => {
                    ws.frame(PONG, &payload).await;
                    pongs += 1;
                }
                raw_ws::Got::Frame { opcode: CLOSE, .. } => break 'trickle,
                // Heartbeats: the server's own sign of life.
                raw_ws::Got::Frame { .. } => {}
                _ => break,
            }
        }
    }
    assert!(pongs >= 4, "the probes were answered: {pongs} pongs");
    // Not cut early. The upper bound is the server's own close time, checked below: under
    // the paused clock the peer may notice the close a few virtual seconds late.
    assert!(fragments >= 88, "{fragments} fragments got through");
    let (after, reason) = next_close(&mut closed, started).await;
    assert_within_a_second(after, 90);
    assert_eq!(reason, CloseReason::ReadTimeout(Duration::from_secs(90)));
    bystander.stop(5).await;
    server.stop().await;
}

// ---- Slow consumers ----

/// The most the kernel lets a TCP socket's send buffer grow to (`tcp_wmem`'s maximum).
fn kernel_send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[tokio::test(start_paused = true)]
async fn a_websocket_peer_that_stops_reading_is_dropped_at_the_write_timeout() {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut handlers = flooding(sent.clone());
    let mut closed = closes(&mut handlers);
    let server = WebServer::start(handlers, Config::default(), |g| g).await;
    let url = server.url("");
    let bystander = Bystander::start(
        guard(
            "connect",
            60 * SECOND,
            gotalk::ws::connect(&url, Arc::new(Handlers::new()), Config::default()),
        )
        .await
        .unwrap(),
    );
    // A small receive buffer, so what the kernel holds for it is small beside the queue.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.http).await.unwrap();
    let mut ws = RawWs::upgrade(stream, "/gotalk/", "localhost", &[]).await.expect("upgrade");
    ws.gotalk_handshake().await;

    // Asks for a flood of notifications and never reads again.
    ws.frame(BINARY, b"r0001005flood00000000").await;
    let started = Instant::now();
    let (after, reason) = next_close(&mut closed, started).await;
    assert_eq!(reason, CloseReason::WriteTimeout(Duration::from_secs(30)));
    // The write timeout counts from when a flush stalls, once the buffers are full; with
    // real sockets under the paused clock that moment drifts by some virtual seconds.
    eprintln!("the peer that stopped reading was dropped after {after:?}");
    assert!(after >= 30 * SECOND && after < 60 * SECOND, "{after:?}");
    // Its slot is free: only the bystander is left, and it was answered all along.
    guard("the slot frees", 60 * SECOND, async {
        while server.gateway.connections().len() != 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let queued = sent.load(Ordering::SeqCst);
    eprintln!("the flood queued {queued} KiB before the peer was dropped");
    assert!(queued * 1024 <= 4 * 1024 * 1024 + kernel_send_buffer_max(), "{queued} KiB");
    bystander.stop(3).await;
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_reading_one_byte_a_second_holds_only_the_send_queue_and_is_dropped() {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut handlers = flooding(sent.clone());
    let mut closed = closes(&mut handlers);
    let server = common::start(handlers, Config::default()).await;
    let bystander = Bystander::tcp(server.addr).await;

    // A small receive buffer, so what the kernel holds for it is small beside the queue.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream.write_all(b"01r0001005flood00000000").await.unwrap();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut read = 0usize;
        let mut byte = [0u8; 1];
        while let Ok(1) = stream.read(&mut byte).await {
            read += 1;
            tokio::time::sleep(SECOND).await;
        }
        read
    });

    // The handler's sends wait once the 4 MiB send queue (and the kernel's buffers) are
    // full: the count stops growing, instead of the server buffering the flood.
    tokio::time::sleep(5 * SECOND).await;
    let early = sent.load(Ordering::SeqCst);
    tokio::time::sleep(20 * SECOND).await;
    let later = sent.load(Ordering::SeqCst);
    eprintln!("queued {early} KiB after 5 s, {later} KiB after 25 s");
    assert_eq!(early, later, "the handler's sends wait");
    // Past the send queue, only the kernel's socket buffers hold any of it.
    assert!(later * 1024 <= 4 * 1024 * 1024 + kernel_send_buffer_max(), "{later} KiB");

    // Draining a byte a second does not finish a flush within the write timeout.
    let (after, reason) = next_close(&mut closed, started).await;
    assert_eq!(reason, CloseReason::WriteTimeout(Duration::from_secs(30)));
    eprintln!("the slow reader was dropped {after:?} after it asked for the flood");
    // The kernel still holds what was written for it, as it does for any closed socket.
    reader.abort();
    guard("the slot frees", 60 * SECOND, async {
        while server.connections.len() != 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    bystander.stop(3).await;
}
