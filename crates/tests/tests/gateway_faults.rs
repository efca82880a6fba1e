//! The gateway against peers that misbehave or arrive at a bad moment, driven by a raw
//! WebSocket client that writes every frame by hand: protocol violations and their close
//! codes, ping floods, closes mid-handshake, shutdown mid-handshake, hooks that hang, the
//! scheme in the same-origin rule, oversized headers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw_ws::{Got, RawWs, BINARY, CLOSE, PING, TEXT};
use common::web::WebServer;
use common::{handlers, tls_configs, within};
use gotalk::listen::ListenerLimits;
use gotalk::{CloseReason, Config, Error, Handlers};
use gotalk_gateway::Refusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(server: &WebServer, path: &str, headers: &[(&str, &str)]) -> RawWs<TcpStream> {
    let stream = TcpStream::connect(server.http).await.unwrap();
    RawWs::upgrade(stream, path, &server.http.to_string(), headers).await.expect("upgrade")
}

/// The close frame's code and text.
fn close_of(got: &Got) -> (Option<u16>, String) {
    match got {
        Got::Frame { opcode: CLOSE, payload } if payload.len() >= 2 => (
            Some(u16::from_be_bytes([payload[0], payload[1]])),
            String::from_utf8_lossy(&payload[2..]).into_owned(),
        ),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn protocol_violations_are_closed_with_their_rfc_6455_codes() {
    let config = Config::default().max_payload(1000);
    let server = WebServer::start(handlers(), config, |g| g).await;

    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.frame(TEXT, &[0xff, 0xfe, b'x']).await;
    assert_eq!(close_of(&ws.next().await), (Some(1007), "invalid UTF-8 in a text message".into()));

    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.frame(BINARY, &vec![b'n'; 1000 + 8192 + 1]).await;
    assert_eq!(close_of(&ws.next().await), (Some(1009), "message too big".into()));

    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.frame_with(BINARY, true, b"r0001004echo00000002ok", false).await;
    assert_eq!(close_of(&ws.next().await), (Some(1002), "websocket protocol error".into()));
    server.stop().await;
}

/// How the socket was closed, past the pongs it sent first.
async fn close_after_pongs(ws: &mut RawWs<TcpStream>) -> (Option<u16>, String) {
    loop {
        match ws.next().await {
            Got::Frame { opcode: 0xA, .. } => {}
            other => return close_of(&other),
        }
    }
}

#[tokio::test]
async fn pings_are_answered_within_a_budget_and_a_flood_is_closed() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.frame(PING, b"hi").await;
    assert_eq!(ws.next().await, Got::Frame { opcode: 0xA, payload: b"hi".to_vec() });

    // A flood past the burst of 64, without reading the pongs: closed with 1008 rather than
    // a queue of pongs growing in the server. (One write, small enough for the server to
    // take in one read, so its close is not lost to a reset.)
    ws.frames(PING, b"flood", 100).await;
    let close = close_after_pongs(&mut ws).await;
    assert_eq!(close, (Some(1008), "too many pings".into()));
    server.stop().await;
}

#[tokio::test]
async fn the_ping_burst_is_64_and_the_65th_closes_with_1008() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;

    // A burst of exactly 64, in one write: all taken, and the socket still serves.
    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.frames(PING, b"p", 64).await;
    ws.frame(BINARY, b"r0001004echo00000002ok").await;
    assert_eq!(ws.data().await, b"R000100000002");
    assert_eq!(ws.data().await, b"ok");

    // One more in the same burst (a token takes 125 ms to come back): closed.
    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.frames(PING, b"p", 65).await;
    let close = close_after_pongs(&mut ws).await;
    assert_eq!(close, (Some(1008), "too many pings".into()));
    server.stop().await;
}

#[tokio::test]
async fn a_peer_closing_after_its_close_frame_is_answered_and_frees_its_slot() {
    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.limits(ListenerLimits::default().max_connections(1))
    })
    .await;
    let mut ws = raw(&server, "/gotalk/", &[]).await;
    ws.gotalk_handshake().await;
    ws.close(4000).await;
    for _ in 0..10 {
        ws.frame(BINARY, b"r0001004echo00000002ok").await;
    }
    assert_eq!(close_of(&ws.next().await).0, Some(4000), "the peer's code is echoed");
    within("registry empties", async {
        while !server.gateway.connections().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    raw(&server, "/gotalk/", &[]).await.gotalk_handshake().await;
    server.stop().await;
}

#[tokio::test]
async fn a_close_or_silence_during_the_gotalk_handshake_is_answered() {
    let config = Config::default().handshake_timeout(Duration::from_millis(300));
    let server = WebServer::start(handlers(), config, |g| {
        g.limits(ListenerLimits::default().max_connections(1))
    })
    .await;

    let mut ws = raw(&server, "/gotalk/", &[]).await;
    assert_eq!(ws.data().await, b"01");
    ws.close(1000).await;
    assert_eq!(close_of(&ws.next().await).0, Some(1000), "the close is answered");

    let mut silent = within("the slot frees", async {
        loop {
            let stream = TcpStream::connect(server.http).await.unwrap();
            let host = server.http.to_string();
            if let Ok(ws) = RawWs::upgrade(stream, "/gotalk/", &host, &[]).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(silent.data().await, b"01");
    assert_eq!(silent.data().await, b"f00000003", "ProtocolError 3 after the timeout");
    assert_eq!(close_of(&silent.next().await).0, Some(1000));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_still_in_the_handshake_with_1001() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut ws = raw(&server, "/gotalk/", &[]).await;
    assert_eq!(ws.data().await, b"01");
    server.begin_stop();
    assert_eq!(close_of(&ws.next().await), (Some(1001), "server shutting down".into()));
    server.stop().await;
}

/// A hook that never finishes unless the query says otherwise.
fn hanging_hook(g: gotalk_gateway::Gateway) -> gotalk_gateway::Gateway {
    g.on_connect(|request: gotalk::UpgradeRequest| async move {
        if request.uri.query() == Some("hang") {
            std::future::pending::<()>().await;
        }
        Ok::<_, Refusal>(request)
    })
}

#[tokio::test]
async fn a_hanging_on_connect_hook_gets_503_at_the_deadline_and_holds_no_socket_slot() {
    let config = Config::default().handshake_timeout(Duration::from_millis(300));
    let server = WebServer::start(handlers(), config, |g| {
        hanging_hook(g.limits(ListenerLimits::default().max_connections(1)))
    })
    .await;
    let hung = tokio::spawn({
        let (addr, host) = (server.http, server.http.to_string());
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let started = tokio::time::Instant::now();
            let refused = RawWs::upgrade(stream, "/gotalk/?hang", &host, &[]).await.err().unwrap();
            (refused, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The one socket slot is free while the hook hangs.
    raw(&server, "/gotalk/", &[]).await.gotalk_handshake().await;
    let (refused, waited) = within("the hung upgrade", hung).await.unwrap();
    assert_eq!(refused.status, 503);
    assert!(refused.text.ends_with("on_connect timed out"), "{}", refused.text);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    server.stop().await;
}

#[tokio::test]
async fn run_drops_http_connections_still_open_at_its_deadline() {
    let server = WebServer::start_with(handlers(), Config::default(), hanging_hook, |http| {
        http.limits(ListenerLimits::default().shutdown_timeout(Duration::from_millis(200)))
    })
    .await;
    let mut hung = TcpStream::connect(server.http).await.unwrap();
    let request = common::raw_ws::upgrade_request("/gotalk/?hang", &server.http.to_string(), &[]);
    hung.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::time::Instant::now();
    server.stop().await;
    let waited = stopping.elapsed();
    assert!(waited >= Duration::from_millis(200), "dropped before the deadline: {waited:?}");
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(2), hung.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "still open after run returned: {read:?}");
}

#[tokio::test]
async fn same_origin_includes_the_scheme_when_the_server_knows_it() {
    // Plain HTTP: the https page of the same host is another origin.
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let host = server.http.to_string();
    let https = format!("https://{host}");
    let refused = RawWs::upgrade(
        TcpStream::connect(server.http).await.unwrap(),
        "/gotalk/",
        &host,
        &[("Origin", &https)],
    )
    .await
    .err()
    .expect("an https page is refused by a plain gateway");
    assert_eq!(refused.status, 403);
    raw(&server, "/gotalk/", &[("Origin", &format!("http://{host}"))]).await;
    server.stop().await;

    // TLS: the http page of the same host is refused, the https page allowed.
    let (server_tls, client_tls) = tls_configs();
    let server =
        WebServer::start_with(handlers(), Config::default(), |g| g, |http| http.tls(server_tls))
            .await;
    let host = format!("localhost:{}", server.http.port());
    let connector = tokio_rustls::TlsConnector::from(client_tls);
    let tls = || async {
        let tcp = TcpStream::connect(server.http).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    };
    let http_origin = format!("http://{host}");
    let refused = RawWs::upgrade(tls().await, "/gotalk/", &host, &[("Origin", &http_origin)])
        .await
        .err()
        .expect("an http page is refused by a TLS gateway");
    assert_eq!(refused.status, 403);
    let https_origin = format!("https://{host}");
    let mut ws = RawWs::upgrade(tls().await, "/gotalk/", &host, &[("Origin", &https_origin)])
        .await
        .expect("the gateway's own origin");
    ws.gotalk_handshake().await;
    server.stop().await;

    // Behind a proxy that terminates TLS, the gateway is told.
    let server = WebServer::start(handlers(), Config::default(), |g| g.served_over_tls(true)).await;
    let host = server.http.to_string();
    raw(&server, "/gotalk/", &[("Origin", &format!("https://{host}"))]).await;
    server.stop().await;
}

#[tokio::test]
async fn handlers_see_the_uri_as_requested_and_headers_are_bounded() {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let server = WebServer::start(handlers(), Config::default(), {
        let seen = seen.clone();
        move |g| {
            g.on_connect(move |request: gotalk::UpgradeRequest| {
                *seen.lock().unwrap() = Some(request.uri.to_string());
                async move { Ok::<_, Refusal>(request) }
            })
        }
    })
    .await;
    let _ws = raw(&server, "/gotalk/room/7?x=1", &[]).await;
    assert_eq!(seen.lock().unwrap().as_deref(), Some("/gotalk/room/7?x=1"));

    // Headers under the 32 KiB limit are accepted; well past it (hyper checks between reads),
    // 431 before any handler runs.
    let cookie = "c".repeat(30 * 1024);
    raw(&server, "/gotalk/", &[("Cookie", &cookie)]).await.gotalk_handshake().await;
    let cookie = "c".repeat(64 * 1024);
    let stream = TcpStream::connect(server.http).await.unwrap();
    let host = server.http.to_string();
    let refused =
        RawWs::upgrade(stream, "/gotalk/", &host, &[("Cookie", &cookie)]).await.err().unwrap();
    assert_eq!(refused.status, 431);
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_of_exactly_32_kib_is_served_and_one_unfinished_by_then_gets_431() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let host = server.http.to_string();
    let limit = 32 * 1024;
    // A cookie that makes the whole head, up to its blank line, `len` bytes long.
    let cookie_for = |len: usize| {
        let bare = common::raw_ws::upgrade_request("/gotalk/", &host, &[("Cookie", "")]).len();
        "c".repeat(len - bare)
    };

    let cookie = cookie_for(limit);
    let head = common::raw_ws::upgrade_request("/gotalk/", &host, &[("Cookie", &cookie)]);
    assert_eq!(head.len(), limit);
    let stream = TcpStream::connect(server.http).await.unwrap();
    let mut ws = RawWs::upgrade(stream, "/gotalk/", &host, &[("Cookie", &cookie)]).await.unwrap();
    ws.gotalk_handshake().await;

    // One byte longer, sent up to the limit: the head has not ended within 32 KiB, so it
    // is refused without waiting for the rest (hyper checks the size between reads).
    let cookie = cookie_for(limit + 1);
    let head = common::raw_ws::upgrade_request("/gotalk/", &host, &[("Cookie", &cookie)]);
    let mut stream = TcpStream::connect(server.http).await.unwrap();
    stream.write_all(&head.as_bytes()[..limit]).await.unwrap();
    let mut response = Vec::new();
    within("the refusal", async {
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&response));
            response.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_upgrades_but_never_answers_01_fails_the_gotalk_handshake() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let _ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        std::future::pending::<()>().await;
    });
    let config = Config::default().handshake_timeout(Duration::from_millis(300));
    let url = format!("ws://{addr}/gotalk/");
    let err = gotalk::ws::connect(&url, Arc::new(Handlers::new()), config).await.unwrap_err();
    assert!(matches!(err, Error::Closed(CloseReason::HandshakeTimeout(_))), "{err:?}");
}
