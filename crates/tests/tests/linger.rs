//! A peer cut for a protocol error or a limit while it is still sending reads why: the server
//! sends the ProtocolError, shuts down its sending side and reads and discards what the peer
//! still sends, for up to 2 s or 32 MiB, before it drops the socket. Dropping it with unread
//! bytes would send a TCP reset, and a peer still writing would never read the reason.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{start, within};
use gotalk::listen::ListenerLimits;
use gotalk::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The version, then a request declaring a 17 MiB payload, one MiB past the default limit.
const OVERSIZED: &[u8] = b"01r0001004echo01100000";

/// The server's version, then ProtocolError 2 (invalid message: the payload limit).
const TOLD: &str = "01f00000002";

/// How long and how much the server discards before it drops the socket.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 32 << 20;

/// Writes `chunk` until a write fails or `total` bytes went out; returns how many did.
async fn send(stream: &mut (impl AsyncWriteExt + Unpin), chunk: &[u8], total: usize) -> usize {
    let mut sent = 0;
    while sent < total {
        if stream.write_all(chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    sent
}

#[tokio::test]
async fn a_peer_writing_its_whole_oversized_payload_before_reading_reads_protocol_error_2() {
    let server = start(common::handlers(), Config::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(OVERSIZED).await.unwrap();
    // As most clients do: the whole message first, then the answer.
    let sent = within("the payload", send(&mut stream, &[b'x'; 64 * 1024], 17 << 20)).await;
    let mut answer = Vec::new();
    let read = within("the answer", stream.read_to_end(&mut answer)).await;
    assert_eq!(String::from_utf8_lossy(&answer), TOLD, "read {read:?} after sending {sent} bytes");
    assert_eq!(sent, 17 << 20, "every byte was taken");
    server.stop().await;
}

#[tokio::test]
async fn our_client_sending_an_oversized_payload_learns_it_broke_the_servers_limit() {
    let server = start(common::handlers(), Config::default()).await;
    // The client allows more than the server does.
    let config = Config::default().max_payload(32 << 20);
    let client = common::connect_with(server.addr, gotalk::Handlers::new(), config).await;
    let error = within("the answer", client.buffer_request("echo", vec![b'x'; 17 << 20]))
        .await
        .expect_err("over the server's limit");
    let invalid = gotalk::protocol::ProtocolErrorCode::InvalidMessage;
    assert!(
        matches!(error, gotalk::Error::Closed(gotalk::CloseReason::PeerProtocolError(code)) if code == invalid),
        "got {error:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_keeps_sending_is_dropped_once_the_server_has_discarded_for_two_seconds() {
    let server = start(common::handlers(), Config::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(OVERSIZED).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut answer = Vec::new();
    within("the answer", reader.read_to_end(&mut answer)).await.unwrap();
    let told = Instant::now();
    assert_eq!(String::from_utf8_lossy(&answer), TOLD);
    // A trickle far below the byte bound: the time bound cuts it.
    let cut = within("the drop", async {
        while writer.write_all(&[b'x'; 1024]).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        told.elapsed()
    })
    .await;
    eprintln!("dropped {cut:?} after the reason");
    assert!(cut >= LINGER - Duration::from_millis(100), "dropped after {cut:?}");
    assert!(cut < LINGER + Duration::from_secs(1), "dropped after {cut:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_keeps_sending_fast_is_dropped_past_32_mib() {
    let server = start(common::handlers(), Config::default()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(OVERSIZED).await.unwrap();
    let started = Instant::now();
    let sent = within("the drop", send(&mut stream, &[b'x'; 256 * 1024], 1 << 30)).await;
    let took = started.elapsed();
    eprintln!("dropped after {} MiB, {took:?}", sent >> 20);
    // What the server discarded, plus what the kernels' socket buffers held at the drop.
    assert!(sent >= LINGER_BYTES, "dropped after {sent} bytes");
    assert!(sent < LINGER_BYTES + (32 << 20), "dropped after {sent} bytes");
    assert!(took < LINGER, "the byte bound comes first here: {took:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_peer_over_its_address_limit_that_writes_before_reading_reads_the_refusal() {
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(common::handlers()), Config::default())
            .limits(ListenerLimits::default().max_connections_per_addr(1)),
    )
    .await;
    let _first = common::connect(server.addr).await;
    // A client that sends its version and a first request (16 MiB, the payload limit) at
    // once, as ours does, and only then reads.
    let mut refused = TcpStream::connect(server.addr).await.unwrap();
    let mut hello = b"01r0001004echo01000000".to_vec();
    hello.resize(hello.len() + (16 << 20), b'x');
    let wrote = within("the hello", refused.write_all(&hello)).await;
    let mut answer = Vec::new();
    let read = within("the refusal", refused.read_to_end(&mut answer)).await;
    assert_eq!(String::from_utf8_lossy(&answer), "01f00000000", "then {read:?}");
    assert!(wrote.is_ok(), "the hello was cut: {wrote:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_listener_reads_from_at_most_256_refused_peers_at_once() {
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(common::handlers()), Config::default())
            .limits(ListenerLimits::default().max_connections_per_addr(1)),
    )
    .await;
    let _first = common::connect(server.addr).await;
    // Refused peers that read their refusal and then hold their side open.
    let started = Instant::now();
    let mut refused = Vec::new();
    for _ in 0..256 + 4 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let mut answer = Vec::new();
        within("the refusal", stream.read_to_end(&mut answer)).await.unwrap();
        assert_eq!(answer, b"01f00000000");
        refused.push(stream);
    }
    // What the server still reads is taken; a socket it has dropped answers with a reset,
    // which fails the write after.
    for stream in &mut refused {
        let _ = stream.write_all(b"x").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut cut = 0;
    for stream in &mut refused {
        if stream.write_all(b"x").await.is_err() {
            cut += 1;
        }
    }
    let took = started.elapsed();
    eprintln!("260 refusals and two writes each in {took:?}");
    assert!(took < LINGER, "the first refusals stopped lingering: {took:?}");
    assert_eq!(cut, 4, "past 256 lingering, refused peers are dropped at once");
    server.stop().await;
}
