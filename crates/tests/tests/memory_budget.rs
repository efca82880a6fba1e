//! The memory budgets over real sockets: each way a peer can make the server hold bytes
//! (decoded JSON, held requests, requests in flight, results it streams back, stream parts,
//! partial messages) is charged, stays within the connection's and the process's budget, and
//! a bystander is answered throughout.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{connect, connect_with, start, within, WirePeer};
use gotalk::protocol::{Decoder, Frame, Id};
use gotalk::{Config, Error, Handlers, MemoryBudget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

fn config(process: &MemoryBudget, connection: usize) -> Config {
    Config::default().memory_budget(process.clone()).connection_budget(connection)
}

/// A bystander on a connection of its own is still answered.
async fn bystander_answered(addr: std::net::SocketAddr) {
    let sock = connect(addr).await;
    let echoed = within("bystander's echo", sock.buffer_request("echo", "still here")).await;
    assert_eq!(&echoed.expect("the bystander is answered")[..], b"still here");
}

/// `[],[],…`, a payload that decodes to many times its size.
fn empty_arrays(bytes: usize) -> Bytes {
    let mut json = b"[".to_vec();
    json.extend(b"[],".repeat(bytes / 3));
    json.pop();
    json.push(b']');
    Bytes::from(json)
}

#[tokio::test]
async fn json_that_decodes_past_the_budget_is_refused_before_decoding() {
    let process = MemoryBudget::new(256 * MIB);
    let mut handlers = common::handlers();
    // Keeps the decoded value while it waits, as an op that asks another peer would.
    handlers.handle("keep", |_sock, value: serde_json::Value| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<_, String>(value.as_array().map_or(0, Vec::len))
    });
    let server = start(handlers, config(&process, 64 * MIB)).await;
    let client = connect(server.addr).await;

    // 4 MiB of empty arrays would take hundreds of MB decoded: refused, never decoded.
    let huge = empty_arrays(4 * MIB);
    match within("huge", client.buffer_request("keep", huge)).await {
        Err(Error::Remote(text)) => {
            assert!(text.starts_with("parameters too large to decode"), "got {text:?}")
        }
        other => panic!("expected an ErrorResult, got {other:?}"),
    }
    // 300 KB of them fits a 64 MiB budget three times over, not thirty.
    let payload = empty_arrays(300_000);
    let calls = (0..30).map(|_| client.buffer_request("keep", payload.clone()));
    let outcomes = within("30 calls", futures_util::future::join_all(calls)).await;
    let answered = outcomes.iter().filter(|o| matches!(o, Ok(b) if &b[..] == b"100000")).count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Error::Remote(t)) if t.contains("too large to decode")))
        .count();
    assert_eq!(answered + refused, 30, "{outcomes:?}");
    // About 17.4 MiB each, charged while decoded and kept: three at a time fit in 64 MiB,
    // so some of thirty sent at once are refused.
    assert!(answered >= 3 && refused >= 1, "answered {answered}, refused {refused}");
    bystander_answered(server.addr).await;
    assert!(process.peak() <= 64 * MIB, "peak {} over the connection budget", process.peak());
    within("budget released", async {
        while process.used() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Requests of 1 MiB and more are paid for while they are read: at the budget, the
/// connection is not read from until its own requests finish, so held requests are bounded
/// in bytes and none is lost.
#[tokio::test]
async fn held_requests_are_bounded_in_bytes() {
    let process = MemoryBudget::new(256 * MIB);
    let server_config = config(&process, 8 * MIB).peer_understands_retry(false).request_limit(2);
    let server = start(common::handlers(), server_config).await;
    let client = connect(server.addr).await;

    // Both slots taken by slow calls; then 1 MiB requests are held, until the budget is spent.
    let slow = (0..2).map(|_| client.request::<_, u64>("sleep", &300));
    let payload = Bytes::from(vec![7u8; MIB]);
    let held = (0..20).map(|_| client.buffer_request("echo", payload.clone()));
    let (slow, held) = within("calls", async {
        tokio::join!(futures_util::future::join_all(slow), futures_util::future::join_all(held))
    })
    .await;
    assert!(slow.iter().all(Result::is_ok), "{slow:?}");
    let answered = held.iter().filter(|o| matches!(o, Ok(b) if b.len() == MIB)).count();
    assert_eq!(answered, 20, "{:?}", held.iter().find(|o| o.is_err()));
    assert!(process.peak() <= 8 * MIB, "20 MiB sent, peak {}", process.peak());
    bystander_answered(server.addr).await;
}

/// Sends twelve 10 KB requests to an op that holds them (long enough for all twelve to
/// arrive while the first six are held, however busy the machine), on a budget of 64 KiB:
/// six fit (with their 64 bytes of overhead each), and how the other six are answered.
async fn small_requests_past_the_budget(retry: bool) -> Vec<Frame> {
    let process = MemoryBudget::new(256 * MIB);
    let mut handlers = common::handlers();
    handlers.handle_buffer("hold", |_sock, payload: Bytes| async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok::<_, String>(Bytes::from(payload.len().to_string()))
    });
    let server_config = config(&process, 64 * 1024).peer_understands_retry(retry);
    let server = start(handlers, server_config).await;
    let mut peer = WirePeer::connect(server.addr).await;
    for n in 0..12u32 {
        let op = gotalk::protocol::Name::new("hold").unwrap();
        let payload = Bytes::from(vec![1u8; 10_000]);
        peer.send(&Frame::SingleRequest { id: Id::from_u32(n), op, payload }).await;
    }
    let mut frames = Vec::new();
    for _ in 0..12 {
        frames.push(peer.frame().await);
    }
    assert!(process.peak() <= 64 * 1024, "peak {}", process.peak());
    bystander_answered(server.addr).await;
    frames
}

#[tokio::test]
async fn a_request_past_the_budget_gets_a_retry_result() {
    let frames = small_requests_past_the_budget(true).await;
    let refused: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::RetryResult { payload, wait, .. } => Some((payload.clone(), *wait)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 6, "{frames:?}");
    for (text, wait) in refused {
        assert_eq!(&text[..], b"memory budget: the connection's memory budget is spent");
        assert!(wait >= 500, "a wait to retry after: {wait}");
    }
    let results = frames.iter().filter(|f| {
        matches!(f, Frame::SingleResult { payload, .. }
        if &payload[..] == b"10000")
    });
    assert_eq!(results.count(), 6);
}

#[tokio::test]
async fn a_request_past_the_budget_from_a_peer_without_retry_results_is_an_error() {
    let frames = small_requests_past_the_budget(false).await;
    let errors = frames.iter().filter(|f| {
        matches!(f, Frame::ErrorResult { payload, .. }
        if payload.starts_with(b"memory budget"))
    });
    assert_eq!(errors.count(), 6, "{frames:?}");
    assert!(!frames.iter().any(|f| matches!(f, Frame::RetryResult { .. })));
}

#[tokio::test]
async fn results_streamed_to_the_servers_own_calls_are_bounded() {
    let process = MemoryBudget::new(256 * MIB);
    let mut handlers = common::handlers();
    // Calls the peer back and collects what it streams.
    handlers.handle_buffer("ask", |sock, _payload: Bytes| async move {
        // Through `?`: the library's own error about the peer's stream keeps its text.
        Ok::<_, gotalk::HandlerError>(sock.buffer_request("spew", "").await?)
    });
    let server = start(handlers, config(&process, 4 * MIB)).await;
    let mut client_handlers = Handlers::new();
    // Streams 1 MiB parts and never ends.
    client_handlers.handle_stream("spew", |_sock, _input, mut output| async move {
        loop {
            output.send(vec![0u8; MIB]).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), Error>(())
    });
    let client = connect_with(server.addr, client_handlers, Config::default()).await;
    let asks = (0..4).map(|_| client.buffer_request("ask", ""));
    for outcome in within("asks", futures_util::future::join_all(asks)).await {
        match outcome {
            Err(Error::Remote(text)) => {
                assert!(text.contains("memory budget is spent"), "got {text:?}")
            }
            other => panic!("expected an ErrorResult, got {other:?}"),
        }
    }
    assert!(process.peak() <= 4 * MIB, "peak {}", process.peak());
    bystander_answered(server.addr).await;
}

#[tokio::test]
async fn stream_parts_nobody_reads_are_bounded() {
    let process = MemoryBudget::new(256 * MIB);
    let mut handlers = common::handlers();
    // Never reads its input.
    handlers.handle_stream("ignore", |_sock, _input, _output| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok::<(), String>(())
    });
    let server = start(handlers, config(&process, 8 * MIB)).await;
    let client = connect(server.addr).await;
    let streams = (0..8).map(|_| {
        let client = client.clone();
        async move {
            let (mut request, response) = client.stream_request("ignore", "first").await?;
            for _ in 0..4 {
                request.write(vec![3u8; MIB]).await?;
            }
            request.end().await?;
            response.collect().await
        }
    });
    let outcomes = within("streams", futures_util::future::join_all(streams)).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert!(process.peak() <= 8 * MIB, "32 MiB sent, peak {}", process.peak());
    bystander_answered(server.addr).await;
}

#[tokio::test]
async fn partial_messages_wait_for_room_in_the_process_budget() {
    let process = MemoryBudget::new(40 * MIB);
    let server = start(common::handlers(), config(&process, 64 * MIB)).await;
    // Four peers each send all but the last byte of a 15 MiB request. Two fit the 40 MiB
    // process budget; the others are not read from until room frees.
    let mut peers = Vec::new();
    for n in 0..4u32 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"01").await.unwrap();
        let mut version = [0u8; 2];
        stream.read_exact(&mut version).await.unwrap();
        let mut wire = BytesMut::new();
        let op = gotalk::protocol::Name::new("echo").unwrap();
        let payload = Bytes::from(vec![b'x'; 15 * MIB]);
        Frame::SingleRequest { id: Id::from_u32(n), op, payload }.encode(&mut wire);
        let wire = wire.freeze();
        let (read, mut write) = stream.into_split();
        let sent = tokio::spawn(async move {
            write.write_all(&wire[..wire.len() - 1]).await.unwrap();
            (write, wire[wire.len() - 1])
        });
        peers.push((read, sent));
    }
    let finished = |peers: &[(_, tokio::task::JoinHandle<_>)]| {
        peers.iter().filter(|(_, sent)| sent.is_finished()).count()
    };
    within("two peers read in full", async {
        while finished(&peers) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // And no third, however long it waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(finished(&peers), 2);
    let used = process.used();
    assert!((30 * MIB..=40 * MIB).contains(&used), "{used} bytes charged");
    bystander_answered(server.addr).await;
    // As each held message completes and is answered, a waiting peer is read: all four are
    // answered in the end, and the budget never went past its capacity.
    let answers = peers.into_iter().map(|(mut read, sent)| async move {
        let (mut write, last) = sent.await.unwrap();
        write.write_all(&[last]).await.unwrap();
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        loop {
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                return frame.payload().len();
            }
            buf.reserve(64 * 1024);
            assert!(read.read_buf(&mut buf).await.unwrap() > 0, "closed");
        }
    });
    let lens = within("four echoes", futures_util::future::join_all(answers)).await;
    assert_eq!(lens, vec![15 * MIB; 4]);
    assert!(process.peak() <= 40 * MIB, "peak {}", process.peak());
}

#[tokio::test]
async fn relay_deliveries_queued_for_a_recipient_are_charged_to_it() {
    let process = MemoryBudget::new(256 * MIB);
    let mut handlers = common::handlers();
    // Its mailbox would take 1 MiB; the recipient's 64 KiB budget binds first.
    handlers.relay(gotalk::relay::Relay::new());
    let server_config = config(&process, 64 * 1024).send_queue_bytes(16 * 1024);
    let server = start(handlers, server_config).await;

    // The recipient never reads; the sender pipelines 10 KB messages to it.
    let mut recipient = WirePeer::connect_ours(server.addr).await;
    let Frame::Notification { payload, .. } = recipient.frame().await else { panic!("no id") };
    let to: gotalk::protocol::relay::PeerId = serde_json::from_slice(&payload).unwrap();
    let mut sender = WirePeer::connect_ours(server.addr).await;
    let _sender_id = sender.frame().await;
    let body = serde_json::to_string(&"x".repeat(10_000)).unwrap();
    let envelope = gotalk::protocol::relay::encode_send(to, "t", &body).unwrap();
    let (mut delivered, mut full) = (0, 0);
    // Enough to fill the kernel's socket buffers on the way to the recipient too.
    for n in 0..2000u32 {
        let op = gotalk::protocol::Name::new("$relay").unwrap();
        let payload = Bytes::from(envelope.clone());
        sender.send(&Frame::SingleRequest { id: Id::from_u32(n), op, payload }).await;
        match sender.frame().await {
            Frame::SingleResult { .. } => delivered += 1,
            Frame::RetryResult { payload, .. } => {
                assert_eq!(&payload[..], b"recipient's queue is full");
                full += 1;
                if full == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(full, 3, "{delivered} delivered and never a full queue");
    let sock = server.connections.socks().into_iter().find(|s| s.budget_used() > 0);
    let held = sock.map_or(0, |s| s.budget_used());
    assert!(held <= 64 * 1024 && held > 32 * 1024, "the recipient holds {held}");
    assert!(process.peak() <= 2 * 64 * 1024, "peak {}", process.peak());
    drop(recipient);
    bystander_answered(server.addr).await;
}

#[tokio::test]
async fn new_connections_are_refused_while_the_process_budget_is_nearly_spent() {
    let process = MemoryBudget::new(MIB);
    let server =
        common::web::WebServer::start(common::handlers(), config(&process, MIB), |g| g).await;
    // A message declaring 900 KiB, its last byte held back: more than seven eighths of 1 MiB.
    let mut holder = WirePeer::connect(server.tcp).await;
    let mut wire = BytesMut::new();
    let op = gotalk::protocol::Name::new("echo").unwrap();
    let payload = Bytes::from(vec![b'h'; 900 * 1024]);
    Frame::SingleRequest { id: Id::from_u32(1), op, payload }.encode(&mut wire);
    holder.write(&wire[..wire.len() - 1]).await;
    within("the charge", async {
        while !process.nearly_spent() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // A new TCP peer gets the version, ProtocolError 0 and the close; a WebSocket gets 503.
    let mut refused = WirePeer::connect_raw(server.tcp).await;
    refused.expect_end_with(b"01f00000000").await;
    let stream = TcpStream::connect(server.http).await.unwrap();
    let host = server.http.to_string();
    let head = common::raw_ws::RawWs::upgrade(stream, "/gotalk/", &host, &[]).await.err();
    let head = head.expect("the upgrade is refused");
    assert_eq!(head.status, 503);
    assert!(head.text.contains("memory budget is nearly spent"), "{}", head.text);

    // Once the message is whole and answered, the budget frees and peers get in again.
    holder.write(&wire[wire.len() - 1..]).await;
    assert_eq!(holder.frame().await.payload().len(), 900 * 1024);
    within("budget freed", async {
        while process.nearly_spent() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let sock = connect(server.tcp).await;
    assert_eq!(&sock.buffer_request("echo", "in").await.unwrap()[..], b"in");
    server.connect(Handlers::new()).await;
}
