//! A network that cuts connections in the middle of a message: a real proxy between a real
//! client (TCP, and WebSocket through the gateway) and a real server forwards normally, then
//! closes both directions at a chosen byte: in a frame header or in a payload, client to
//! server or server to client. Every request outstanding on the client fails (none hangs),
//! the server frees the connection and cancels its handlers, and a new connection works.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::proxy::{Proxy, Way};
use common::web::WebServer;
use common::within;
use gotalk::{Config, Error, Handlers, Sock};

/// The payload of the request whose bytes the cut falls in.
const PAYLOAD: usize = 1000;

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    WebSocket,
}

/// Where in the echo request (client to server) or its result (server to client) the cut
/// falls.
#[derive(Debug, Clone, Copy)]
enum At {
    Header,
    Payload,
}

/// Counts the `hold` handlers running: each holds a guard that counts down when the handler
/// is dropped (cancelled with its connection).
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The test operations plus `hold`, which never answers.
fn handlers(running: Arc<AtomicUsize>) -> Handlers {
    let mut handlers = common::handlers();
    handlers.handle_buffer("hold", move |_sock, _| {
        running.fetch_add(1, Ordering::SeqCst);
        let guard = Running(running.clone());
        async move {
            std::future::pending::<()>().await;
            drop(guard);
            Ok::<_, String>(Bytes::new())
        }
    });
    handlers
}

/// No heartbeats either way, so the only bytes on the wire after the handshake are the
/// test's (liveness probes wait for 15 s of silence, longer than a test lasts).
fn quiet() -> Config {
    Config::default().heartbeat_interval(None)
}

async fn connect(transport: Transport, addr: std::net::SocketAddr) -> Sock {
    let connecting = async {
        match transport {
            Transport::Tcp => gotalk::tcp::connect(addr, Arc::new(Handlers::new()), quiet()).await,
            Transport::WebSocket => {
                let url = format!("ws://{addr}/gotalk/");
                gotalk::ws::Connector::new().connect(&url, Arc::new(Handlers::new()), quiet()).await
            }
        }
    };
    within("connect through the proxy", connecting).await.expect("connect")
}

/// Bytes from the start of a message to the byte the cut is placed after.
///
/// Over TCP the echo request's header is 20 bytes (`r`, id, `004echo`, length) and its
/// result's 13 (`R`, id, length). Over WebSocket each header and each payload is a message of
/// its own: a client's frame header is 2 bytes plus a 4-byte mask key (4 more for a
/// 16-bit length), a server's 2 (4).
fn offset(transport: Transport, way: Way, at: At) -> u64 {
    let header = match way {
        Way::Up => 20,
        Way::Down => 13,
    };
    let (header_frame, payload_frame) = match (transport, way) {
        (Transport::Tcp, _) => (0, 0),
        (Transport::WebSocket, Way::Up) => (6, 8),
        (Transport::WebSocket, Way::Down) => (2, 4),
    };
    match at {
        At::Header => header_frame + header / 2,
        At::Payload => header_frame + header + payload_frame + PAYLOAD as u64 / 2,
    }
}

async fn cut(transport: Transport, way: Way, at: At) {
    let running = Arc::new(AtomicUsize::new(0));
    let server = WebServer::start(handlers(running.clone()), quiet(), |g| g).await;
    let (target, connections) = match transport {
        Transport::Tcp => (server.tcp, server.tcp_connections.clone()),
        Transport::WebSocket => (server.http, server.gateway.connections()),
    };
    let proxy = Proxy::start(target).await;
    let client = connect(transport, proxy.addr).await;

    // Requests the server is working on when the cut comes, and a stream open both ways.
    let held: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.buffer_request("hold", "").await })
        })
        .collect();
    let (mut parts, mut results) =
        within("stream request", client.stream_request("stream-echo", "one")).await.unwrap();
    assert_eq!(
        within("first part back", results.next()).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    within("handlers running", async {
        while running.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert_eq!(connections.len(), 1);

    // The cut falls in the next message that way: the echo request or its result.
    let place = offset(transport, way, at);
    proxy.cut_after(way, place);
    let before = proxy.forwarded(way);
    let echo = client.buffer_request("echo", vec![b'x'; PAYLOAD]);
    match within("the echo through the cut", echo).await {
        Err(Error::Closed(reason)) => {
            eprintln!("{transport:?} {way:?} {at:?}: echo failed: {reason}")
        }
        other => panic!("expected the echo to fail, got {other:?}"),
    }
    within("the cut", proxy.cut()).await;
    assert_eq!(proxy.forwarded(way) - before, place, "the cut falls where it was placed");

    // Everything outstanding on the client has failed, none hangs.
    for request in held {
        let result = within("a held request", request).await.unwrap();
        assert!(matches!(result, Err(Error::Closed(_))), "{result:?}");
    }
    assert!(matches!(within("the stream's result", results.next()).await, Err(Error::Closed(_))));
    assert!(matches!(within("the stream's part", parts.write("two")).await, Err(Error::Closed(_))));
    assert!(client.is_closed());

    // The server has let go of the connection and cancelled its handlers.
    within("the server frees the connection", async {
        while !connections.is_empty() || running.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;

    // A new connection, through a fresh proxy, works.
    let fresh = Proxy::start(target).await;
    let client = connect(transport, fresh.addr).await;
    let answer = within("echo on a new connection", client.buffer_request("echo", "again")).await;
    assert_eq!(&answer.unwrap()[..], b"again");
    server.stop().await;
}

#[tokio::test]
async fn tcp_cut_in_a_request_header() {
    cut(Transport::Tcp, Way::Up, At::Header).await;
}

#[tokio::test]
async fn tcp_cut_in_a_request_payload() {
    cut(Transport::Tcp, Way::Up, At::Payload).await;
}

#[tokio::test]
async fn tcp_cut_in_a_result_header() {
    cut(Transport::Tcp, Way::Down, At::Header).await;
}

#[tokio::test]
async fn tcp_cut_in_a_result_payload() {
    cut(Transport::Tcp, Way::Down, At::Payload).await;
}

#[tokio::test]
async fn websocket_cut_in_a_request_header() {
    cut(Transport::WebSocket, Way::Up, At::Header).await;
}

#[tokio::test]
async fn websocket_cut_in_a_request_payload() {
    cut(Transport::WebSocket, Way::Up, At::Payload).await;
}

#[tokio::test]
async fn websocket_cut_in_a_result_header() {
    cut(Transport::WebSocket, Way::Down, At::Header).await;
}

#[tokio::test]
async fn websocket_cut_in_a_result_payload() {
    cut(Transport::WebSocket, Way::Down, At::Payload).await;
}
