//! Heartbeats over real TCP, with real short intervals: sent at the configured interval with
//! the configured load and the current time, and surfaced to the receiving application.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{connect_with, start, within, WirePeer};
use gotalk::protocol::Frame;
use gotalk::{Config, Handlers, Heartbeat};
use tokio::sync::mpsc;

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

fn heartbeat_every(ms: u64, load: u16) -> Config {
    Config::default()
        .heartbeat_interval(Some(Duration::from_millis(ms)))
        .heartbeat_load(move || load)
}

#[tokio::test]
async fn client_sees_server_heartbeats_and_on_heartbeat_fires() {
    let server = start(common::handlers(), heartbeat_every(100, 7)).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<Heartbeat>();
    let mut handlers = Handlers::new();
    handlers.on_heartbeat(move |_sock, heartbeat| {
        let _ = tx.send(heartbeat);
    });
    let config = Config::default().heartbeat_interval(None);
    let client = connect_with(server.addr, handlers, config).await;
    assert_eq!(client.last_heartbeat(), None, "nothing before the first interval");

    // Several in a row, so they really repeat.
    for _ in 0..3 {
        let heartbeat = within("heartbeat", rx.recv()).await.unwrap();
        assert_eq!(heartbeat.load, 7);
        assert!(heartbeat.time.abs_diff(now()) <= 5, "time {} vs now {}", heartbeat.time, now());
    }
    let last = client.last_heartbeat().expect("last_heartbeat is set");
    assert_eq!(last.load, 7);
    // Heartbeats are never answered and do not disturb requests.
    assert_eq!(&client.buffer_request("echo", "x").await.unwrap()[..], b"x");
}

#[tokio::test]
async fn server_sees_client_heartbeats() {
    let (tx, mut rx) = mpsc::unbounded_channel::<Heartbeat>();
    let mut handlers = common::handlers();
    handlers.on_heartbeat(move |_sock, heartbeat| {
        let _ = tx.send(heartbeat);
    });
    let server = start(handlers, Config::default()).await;
    let client = connect_with(server.addr, Handlers::new(), heartbeat_every(100, 0x1234)).await;

    let heartbeat = within("heartbeat", rx.recv()).await.unwrap();
    assert_eq!(heartbeat.load, 0x1234);
    let server_side = server.only_connection().await;
    assert_eq!(server_side.last_heartbeat().map(|h| h.load), Some(0x1234));

    // One sent by hand arrives with its own load.
    client.send_heartbeat(0xffff).await.unwrap();
    loop {
        let heartbeat = within("manual heartbeat", rx.recv()).await.unwrap();
        if heartbeat.load == 0xffff {
            break;
        }
        assert_eq!(heartbeat.load, 0x1234);
    }
}

#[tokio::test]
async fn heartbeats_on_the_wire_are_thirteen_bytes_of_lowercase_hex() {
    let server = start(common::handlers(), heartbeat_every(100, 0xab)).await;
    let mut peer = WirePeer::connect(server.addr).await;
    let raw = peer.read_bytes(13).await;
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("h00ab"), "got {text:?}");
    assert_eq!(text, text.to_lowercase());
    let time = u32::from_str_radix(&text[5..], 16).unwrap();
    assert!(time.abs_diff(now()) <= 5);
    // And a heartbeat from the raw peer is accepted silently.
    peer.write(b"h000100000000").await;
    peer.send(&common::request(b"0001", "echo", b"after")).await;
    loop {
        match peer.frame().await {
            Frame::Heartbeat { load, .. } => assert_eq!(load, 0xab),
            other => {
                assert_eq!(
                    other,
                    Frame::SingleResult {
                        id: gotalk::protocol::Id(*b"0001"),
                        payload: "after".into()
                    }
                );
                break;
            }
        }
    }
}

#[tokio::test]
async fn no_heartbeats_when_turned_off() {
    let config =
        Config::default().heartbeat_interval(None).read_timeout(Some(Duration::from_millis(300)));
    let server = start(common::handlers(), config).await;
    // The raw peer hears nothing at all until the read timeout closes the connection.
    let mut peer = WirePeer::connect(server.addr).await;
    peer.expect_end_with(b"f00000003").await;
}

#[tokio::test]
async fn a_peer_that_never_stops_sending_still_gets_heartbeats() {
    // The server's read loop keeps liveness's time while it waits for bytes; a peer whose
    // bytes are always there keeps it from ever waiting, and must not starve the heartbeats.
    let server = start(common::handlers(), heartbeat_every(50, 0x42)).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"01").await.unwrap();
    let mut version = [0u8; 2];
    stream.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"01");
    let (mut rx, mut tx) = stream.into_split();
    // Heartbeats of its own, 13 bytes each, in 64 KiB writes, as fast as the server reads.
    let flood = tokio::spawn(async move {
        let chunk = b"h000100000000".repeat(65536 / 13);
        let end = tokio::time::Instant::now() + Duration::from_millis(1000);
        let mut sent = 0usize;
        while tokio::time::Instant::now() < end {
            tx.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        sent
    });
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 4096];
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1000) {
        let n = within("server bytes", rx.read(&mut buf)).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        bytes.extend_from_slice(&buf[..n]);
    }
    let sent = flood.await.unwrap();
    assert_eq!(bytes.len() % 13, 0, "only whole heartbeats: {:?}", String::from_utf8_lossy(&bytes));
    let heartbeats = bytes.len() / 13;
    assert!(bytes.chunks(13).all(|h| h.starts_with(b"h0042")));
    eprintln!("{heartbeats} heartbeats in 1 s while the peer sent {} MB", sent / 1_000_000);
    // Every 50 ms for a second: twenty, and at least a few on a loaded machine.
    assert!(heartbeats >= 5, "{heartbeats} heartbeats in 1 s of flooding");
}
