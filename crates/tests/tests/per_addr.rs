//! Connections per remote address, at the edge, on every listener: the TCP server, the
//! gateway's WebSockets and the HTTP server. Two addresses on the loopback (127.0.0.1 and
//! 127.0.0.2) show that one address at its limit does not hold back another.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::web::{WebServer, WsPeer};
use common::{handlers, within, WirePeer};
use gotalk::listen::ListenerLimits;
use gotalk::{Config, Error, Handlers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOME: [u8; 4] = [127, 0, 0, 1];
const OTHER: [u8; 4] = [127, 0, 0, 2];

fn ip(octets: [u8; 4]) -> IpAddr {
    IpAddr::from(octets)
}

/// Retries `attempt` until it succeeds: a slot is returned when the server notices a close,
/// a moment after the client's.
async fn eventually<F, Fut, T>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(done) = attempt().await {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// What a TCP peer over its address's limit reads: our version, ProtocolError 0, the end.
const TCP_REFUSAL: &[u8] = b"01f00000000";

/// A hand-made peer from `source` that got a request answered, or `None` if it was refused
/// (the refusal starts with the version too, so only an answer tells them apart).
async fn served_from(addr: std::net::SocketAddr, source: [u8; 4]) -> Option<WirePeer> {
    let mut peer = WirePeer::connect_raw_from(addr, ip(source)).await;
    let mut hello = b"01".to_vec();
    common::request(b"0001", "echo", b"hi").encode(&mut hello);
    peer.try_write(&hello).await.ok()?;
    assert_eq!(peer.read_bytes(2).await, b"01");
    match peer.next_frame().await? {
        gotalk::protocol::Frame::SingleResult { .. } => Some(peer),
        _ => None,
    }
}

#[tokio::test]
async fn tcp_peers_past_their_address_limit_get_protocol_error_0_and_others_get_in() {
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(handlers()), Config::default())
            .limits(ListenerLimits::default().max_connections_per_addr(2)),
    )
    .await;
    // At the limit: two from one address are served.
    let first = common::connect(server.addr).await;
    let second = common::connect(server.addr).await;
    assert_eq!(&second.buffer_request("echo", "two").await.unwrap()[..], b"two");

    // One past: the third is told, then closed.
    let mut third = WirePeer::connect_raw_from(server.addr, ip(HOME)).await;
    third.expect_end_with(TCP_REFUSAL).await;

    // Our client reports it as the server's protocol error.
    let refused = gotalk::tcp::connect(server.addr, Arc::new(Handlers::new()), Config::default());
    let error = match within("refused connect", refused).await {
        Err(e) => e,
        Ok(sock) => sock.buffer_request("echo", "x").await.expect_err("refused"),
    };
    assert!(matches!(error, Error::Closed(_)), "got {error:?}");
    assert!(error.to_string().contains("abnormal"), "got {error}");

    // Another address is counted apart.
    let other = served_from(server.addr, OTHER).await.expect("another address is served");

    // A close returns the address's slot.
    first.close();
    let again = eventually("a slot frees", || served_from(server.addr, HOME)).await;
    drop((again, other, second));
    server.stop().await;
}

#[tokio::test]
async fn tls_peers_past_their_address_limit_are_closed_before_the_tls_handshake() {
    let (server_tls, client_tls) = common::tls_configs();
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(handlers()), Config::default())
            .tls(server_tls)
            .limits(ListenerLimits::default().max_connections_per_addr(1)),
    )
    .await;
    let connect = || {
        gotalk::tcp::connect_tls(
            server.addr,
            "localhost",
            client_tls.clone(),
            Arc::new(Handlers::new()),
            Config::default(),
        )
    };
    let first = within("first", connect()).await.expect("the first is served");
    assert_eq!(&first.buffer_request("echo", "one").await.unwrap()[..], b"one");
    // The server writes nothing: the refused peer's TLS handshake meets the end.
    let mut second = WirePeer::connect_raw_from(server.addr, ip(HOME)).await;
    assert_eq!(second.read_to_end().await, b"");
    let error = within("second", connect()).await.expect_err("the second is refused");
    assert!(error.to_string().contains("tls handshake"), "got {error}");

    first.close();
    eventually("a slot frees", || async { connect().await.ok() }).await;
    server.stop().await;
}

#[tokio::test]
async fn websockets_past_their_address_limit_get_429_and_others_get_in() {
    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.limits(ListenerLimits::default().max_connections_per_addr(2))
    })
    .await;
    let first = server.connect(Handlers::new()).await;
    let second = server.connect(Handlers::new()).await;
    assert_eq!(&second.buffer_request("echo", "two").await.unwrap()[..], b"two");

    let refused = WsPeer::upgrade(&server.url(""), &[]).await.err().expect("the third is refused");
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (429, "too many connections from this address")
    );

    // From another address, the upgrade and the gotalk handshake go through.
    let stream = common::connect_from(server.http, ip(OTHER)).await.unwrap();
    let (mut other, _) = tokio_tungstenite::client_async(server.url(""), stream).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    other.send(Message::binary(&b"01"[..])).await.unwrap();
    let reply = within("handshake", other.next()).await.unwrap().unwrap();
    assert_eq!(reply, Message::binary(&b"01"[..]));

    first.close();
    eventually("a slot frees", || async { WsPeer::upgrade(&server.url(""), &[]).await.ok() }).await;
    drop(second);
    server.stop().await;
}

#[tokio::test]
async fn http_clients_past_their_address_limit_get_429_unread_and_others_are_served() {
    let server = WebServer::start_with(
        handlers(),
        Config::default(),
        |g| g,
        |h| h.limits(ListenerLimits::default().max_connections_per_addr(2)),
    )
    .await;
    let get = b"GET /gotalk/gotalk.js HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    // Two idle connections from one address hold its two places.
    let held = [
        common::connect_from(server.http, ip(HOME)).await.unwrap(),
        common::connect_from(server.http, ip(HOME)).await.unwrap(),
    ];
    // The third is answered at once, without the server reading its request.
    let mut third = common::connect_from(server.http, ip(HOME)).await.unwrap();
    let mut answer = String::new();
    within("429", third.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 429 "), "got {answer:?}");
    assert!(answer.contains("retry-after: 5"), "got {answer:?}");
    assert!(answer.ends_with("too many connections from this address"), "got {answer:?}");

    // Another address is served.
    let mut other = common::connect_from(server.http, ip(OTHER)).await.unwrap();
    other.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    within("200", other.read_to_end(&mut answer)).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "got {:?}", String::from_utf8_lossy(&answer));

    // Closing one of the held connections lets the address in again.
    drop(held);
    let served = eventually("a place frees", || async {
        let mut again = common::connect_from(server.http, ip(HOME)).await.ok()?;
        again.write_all(get).await.ok()?;
        let mut answer = Vec::new();
        again.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 200 ").then_some(())
    })
    .await;
    assert_eq!(served, ());
    server.stop().await;
}

// ---- Fair admission: the last places of a listener go to addresses holding few ----

const THIRD: [u8; 4] = [127, 0, 0, 3];
const FOURTH: [u8; 4] = [127, 0, 0, 4];

/// Opens served connections from `source` until one is refused or `n` are open.
async fn fill_from(addr: std::net::SocketAddr, source: [u8; 4], n: usize) -> Vec<WirePeer> {
    let mut open = Vec::new();
    while open.len() < n {
        match served_from(addr, source).await {
            Some(peer) => open.push(peer),
            None => break,
        }
    }
    open
}

#[tokio::test]
async fn two_addresses_filling_the_tcp_listener_leave_its_reserve_to_others() {
    // 20 places, 10 per address: two addresses could hold all of them. The default reserve
    // is a tenth of the places (2), shared by addresses holding fewer than a tenth of it
    // (at least 1): here, by addresses holding none.
    let server = common::serve(
        gotalk::tcp::Server::new(Arc::new(handlers()), Config::default())
            .limits(ListenerLimits::default().max_connections(20).max_connections_per_addr(10)),
    )
    .await;
    let home = fill_from(server.addr, HOME, 10).await;
    assert_eq!(home.len(), 10, "below the reserve, an address gets its own limit");
    // The second gets the places up to the reserve (18 open), then is refused as the per-address
    // limit refuses: version, ProtocolError 0, close.
    let other = fill_from(server.addr, OTHER, 10).await;
    assert_eq!(other.len(), 8, "the reserve is not for an address holding many");
    let mut refused = WirePeer::connect_raw_from(server.addr, ip(OTHER)).await;
    refused.expect_end_with(TCP_REFUSAL).await;

    // A bystander holding none gets in and is answered; holding one, its next is refused.
    let third = served_from(server.addr, THIRD).await.expect("a place from the reserve");
    assert!(served_from(server.addr, THIRD).await.is_none(), "one reserved place each");
    let fourth = served_from(server.addr, FOURTH).await.expect("the last place");
    assert_eq!(server.connections.len(), 20);

    // A place that frees below the reserve is anyone's again.
    drop(home);
    let again = eventually("places free", || served_from(server.addr, OTHER)).await;
    drop((again, other, third, fourth));
    server.stop().await;
}

#[tokio::test]
async fn the_tcp_reserve_is_set_by_its_setter_and_zero_turns_it_off() {
    let listener = |reserve| {
        gotalk::tcp::Server::new(Arc::new(handlers()), Config::default()).limits(
            ListenerLimits::default()
                .max_connections(20)
                .max_connections_per_addr(20)
                .connection_reserve(reserve),
        )
    };
    // 5 kept: one address gets 15, the 16th is refused; another gets one place.
    let server = common::serve(listener(5)).await;
    let home = fill_from(server.addr, HOME, 20).await;
    assert_eq!(home.len(), 15);
    let other = fill_from(server.addr, OTHER, 20).await;
    assert_eq!(other.len(), 1);
    drop((home, other));
    server.stop().await;

    // None kept: one address may take every place.
    let server = common::serve(listener(0)).await;
    let home = fill_from(server.addr, HOME, 20).await;
    assert_eq!(home.len(), 20);
    drop(home);
    server.stop().await;
}

/// A WebSocket from `source` with the gotalk handshake done, or the refusal's status and
/// `Retry-After`.
async fn websocket_from(
    server: &WebServer,
    source: [u8; 4],
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, (u16, Option<String>, String)>
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{self, Message};
    let stream = common::connect_from(server.http, ip(source)).await.unwrap();
    match within("upgrade", tokio_tungstenite::client_async(server.url(""), stream)).await {
        Ok((mut socket, _)) => {
            socket.send(Message::binary(&b"01"[..])).await.unwrap();
            let reply = within("handshake", socket.next()).await.unwrap().unwrap();
            assert_eq!(reply, Message::binary(&b"01"[..]));
            Ok(socket)
        }
        Err(tungstenite::Error::Http(response)) => {
            let retry = response.headers().get("retry-after");
            let retry = retry.map(|v| v.to_str().unwrap().to_owned());
            let body = response.body().as_deref().unwrap_or_default();
            Err((response.status().as_u16(), retry, String::from_utf8_lossy(body).into_owned()))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn two_addresses_filling_the_gateway_leave_its_reserve_to_others() {
    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.limits(ListenerLimits::default().max_connections(20).max_connections_per_addr(10))
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(websocket_from(&server, HOME).await.expect("below the reserve"));
    }
    for _ in 0..8 {
        open.push(websocket_from(&server, OTHER).await.expect("up to the reserve"));
    }
    let refused = websocket_from(&server, OTHER).await.expect_err("into the reserve");
    assert_eq!(refused, (503, Some("5".to_owned()), "too many connections".to_owned()));

    let third = websocket_from(&server, THIRD).await.expect("a place from the reserve");
    assert_eq!(websocket_from(&server, THIRD).await.err().map(|r| r.0), Some(503));
    let fourth = websocket_from(&server, FOURTH).await.expect("the last place");
    // Each is registered as its handshake ends, a moment after the client's.
    let gateway = server.gateway.clone();
    eventually("20 open", || {
        let open = gateway.connections().len();
        async move { (open == 20).then_some(()) }
    })
    .await;
    drop((open, third, fourth));
    server.stop().await;
}

#[tokio::test]
async fn two_addresses_filling_the_http_server_leave_its_reserve_to_others() {
    let server = WebServer::start_with(
        handlers(),
        Config::default(),
        |g| g,
        |h| h.limits(ListenerLimits::default().max_connections(20).max_connections_per_addr(10)),
    )
    .await;
    // Idle connections hold their places; each is accepted in turn, so each is counted
    // before the next.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(common::connect_from(server.http, ip(HOME)).await.unwrap());
    }
    for _ in 0..8 {
        held.push(common::connect_from(server.http, ip(OTHER)).await.unwrap());
    }
    // Into the reserve from an address holding many: 503, before its request is read.
    let mut refused = common::connect_from(server.http, ip(OTHER)).await.unwrap();
    let mut answer = String::new();
    within("503", refused.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "got {answer:?}");
    assert!(answer.contains("retry-after: 5"), "got {answer:?}");

    // An address holding none is served.
    let get = b"GET /gotalk/gotalk.js HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let mut third = common::connect_from(server.http, ip(THIRD)).await.unwrap();
    third.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    within("200", third.read_to_end(&mut answer)).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200 "), "got {:?}", String::from_utf8_lossy(&answer));
    drop(held);
    server.stop().await;
}
