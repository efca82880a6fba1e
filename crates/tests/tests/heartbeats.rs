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
