//! The WebSocket gateway against real WebSocket clients on 127.0.0.1:0: requests and streams
//! both ways, TCP and WebSocket peers reaching each other through one registry, the framing
//! gotalk.js needs, origins, the `on_connect` hook, held requests and graceful shutdown.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::web::{WebServer, WsPeer};
use common::{handlers, within};
use gotalk::{Config, Error, Handlers, Sock, StreamInput, StreamOutput, TransportKind};
use gotalk_gateway::Refusal;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Handlers for the client side: `client-echo`, and `client-stream` which upper-cases parts.
fn client_handlers() -> Handlers {
    let mut h = Handlers::new();
    h.handle_buffer("client-echo", |_sock, payload: Bytes| async move { Ok::<_, String>(payload) });
    h.handle_stream(
        "client-stream",
        |_sock, mut input: StreamInput, mut output: StreamOutput| async move {
            while let Some(part) = input.next().await? {
                output.send(Bytes::from(part.to_ascii_uppercase())).await?;
            }
            Ok::<_, Error>(())
        },
    );
    h
}

#[tokio::test]
async fn every_request_and_stream_type_works_both_ways() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let mut mine = client_handlers();
    mine.handle_buffer_notification("notified", move |_sock, payload: Bytes| {
        let _ = notes_tx.send(payload);
        async {}
    });
    let client = server.connect(mine).await;
    assert_eq!(client.info().transport, TransportKind::WebSocket);

    // Client to server: buffer, JSON, errors, empty results, notifications and streams.
    assert_eq!(client.buffer_request("echo", "héllo 👋").await.unwrap(), "héllo 👋");
    let greeting: serde_json::Value =
        client.request("greet", &serde_json::json!({"name": "web"})).await.unwrap();
    assert_eq!(greeting, serde_json::json!({"greeting": "Hello web"}));
    let failed = client.buffer_request("fail", "null").await.unwrap_err();
    assert!(matches!(failed, Error::Remote(ref m) if m == "intentional failure"), "{failed:?}");
    assert_eq!(client.buffer_request("empty", "").await.unwrap(), "");
    let big = Bytes::from(vec![b'x'; 200_000]);
    assert_eq!(client.buffer_request("echo", big.clone()).await.unwrap(), big);
    client.buffer_request("notify-me", "ping").await.unwrap();
    assert_eq!(within("notification", notes.recv()).await.unwrap(), "ping");
    let (mut tx, mut rx) = client.stream_request("stream-echo", "a").await.unwrap();
    tx.write("b").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "a");
    assert_eq!(rx.next().await.unwrap().unwrap(), "b");
    assert_eq!(rx.next().await.unwrap(), None);

    // Server to client: a request that the server makes while answering one, and a stream
    // request that the server-side sock opens on the browser's handlers.
    assert_eq!(client.buffer_request("reverse-echo", "back").await.unwrap(), "back");
    let browser = server.only_ws_connection().await;
    assert_eq!(browser.buffer_request("client-echo", "direct").await.unwrap(), "direct");
    let (mut tx, rx) = browser.stream_request("client-stream", "one").await.unwrap();
    tx.write("two").await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(within("client stream", rx.collect()).await.unwrap(), "ONETWO");
    let missing = browser.buffer_request("no-such-op", "").await.unwrap_err();
    assert!(matches!(missing, Error::Remote(ref m) if m.contains("no-such-op")), "{missing:?}");

    client.close();
    server.stop().await;
}

#[tokio::test]
async fn tcp_and_websocket_peers_reach_each_other_through_one_registry() {
    // `ask-other` forwards the caller's payload to the `whoami` handler of every other
    // connection, whichever transport it came in on.
    let peers: Arc<Mutex<Vec<Sock>>> = Arc::default();
    let mut h = handlers();
    h.on_connect({
        let peers = peers.clone();
        move |sock: Sock| {
            peers.lock().unwrap().push(sock);
            async {}
        }
    });
    h.handle_buffer("ask-other", {
        let peers = peers.clone();
        move |sock: Sock, payload: Bytes| {
            let others: Vec<Sock> = peers
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.info().id != sock.info().id && !s.is_closed())
                .cloned()
                .collect();
            async move {
                let mut answers = Vec::new();
                for other in others {
                    answers.push(other.buffer_request("whoami", payload.clone()).await?);
                }
                Ok::<_, Error>(Bytes::from(answers.concat()))
            }
        }
    });
    let server = WebServer::start(h, Config::default(), |g| g).await;
    let named = |name: &'static str| {
        let mut h = Handlers::new();
        h.handle_buffer("whoami", move |_sock, q: Bytes| async move {
            Ok::<_, String>(Bytes::from(format!("{name} got {}", String::from_utf8_lossy(&q))))
        });
        h
    };
    let browser = server.connect(named("browser")).await;
    let program = within(
        "tcp connect",
        gotalk::tcp::connect(server.tcp, Arc::new(named("program")), Config::default()),
    )
    .await
    .unwrap();
    within("both registered", async {
        while peers.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    assert_eq!(program.buffer_request("ask-other", "x").await.unwrap(), "browser got x");
    assert_eq!(browser.buffer_request("ask-other", "y").await.unwrap(), "program got y");
    assert_eq!(server.gateway.connections().len(), 1);
    assert_eq!(server.tcp_connections.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn writes_follow_the_gotalk_js_framing_and_reads_take_text_and_binary() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut peer = WsPeer::connect(&server.url("")).await;

    // gotalk.js: the header as a binary message, the JSON payload as text.
    peer.binary(b"r0001005greet00000014").await;
    peer.text(r#"{"name":"gotalk.js"}"#).await;
    peer.expect(b"R00010000001e").await;
    peer.expect(br#"{"greeting":"Hello gotalk.js"}"#).await;

    // An empty result is a header alone: no zero-length payload message follows it.
    peer.binary(b"r0002005empty00000000").await;
    peer.expect(b"R000200000000").await;
    peer.binary(b"r0003004echo00000002").await;
    peer.text("ok").await;
    peer.expect(b"R000300000002").await;
    peer.expect(b"ok").await;

    // A notification from the server: header and payload, one message each.
    peer.binary(b"r0004009notify-me00000003").await;
    peer.text("hey").await;
    peer.expect(b"n008notified00000003").await;
    peer.expect(b"hey").await;
    peer.expect(b"R000400000000").await;
    server.stop().await;
}

#[tokio::test]
async fn coalesced_and_split_messages_are_one_byte_stream() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut peer = WsPeer::connect(&server.url("")).await;

    // Two whole requests in one message.
    peer.binary(b"r0001004echo00000001ar0002004echo00000001b").await;
    peer.expect(b"R000100000001").await;
    peer.expect(b"a").await;
    peer.expect(b"R000200000001").await;
    peer.expect(b"b").await;

    // One request across three messages, split inside the header and inside the payload,
    // mixing binary and text.
    peer.binary(b"r00030").await;
    peer.text("04echo0000000").await;
    peer.binary(b"5hel").await;
    peer.text("lo").await;
    peer.expect(b"R000300000005").await;
    peer.expect(b"hello").await;
    server.stop().await;
}

#[tokio::test]
async fn origins_are_checked() {
    let server =
        WebServer::start(handlers(), Config::default(), |g| g.allow_origin("https://app.example"))
            .await;
    let url = server.url("");
    let same = format!("http://{}", server.http);
    for allowed in [None, Some(same.as_str()), Some("https://app.example")] {
        let headers: Vec<(&str, &str)> = allowed.map(|o| ("origin", o)).into_iter().collect();
        let result = WsPeer::upgrade(&url, &headers).await;
        assert!(result.is_ok(), "origin {allowed:?} refused: {:?}", result.err());
    }
    for refused in ["https://evil.example", "null", "http://localhost:1", "nonsense"] {
        let err = match WsPeer::upgrade(&url, &[("origin", refused)]).await {
            Ok(_) => panic!("origin {refused} was allowed"),
            Err(e) => e,
        };
        assert_eq!(err.status, 403, "origin {refused}");
        assert!(err.body.contains("origin"), "{}", err.body);
    }
    server.stop().await;
}

#[tokio::test]
async fn on_connect_can_refuse_an_upgrade_and_tell_handlers_who_connected() {
    #[derive(Clone)]
    struct User(String);
    let mut h = handlers();
    h.handle_buffer("whoami", |sock: Sock, _| async move {
        let request = sock.info().request.clone().expect("a websocket has its request");
        let user = request.extensions.get::<User>().expect("set by on_connect").0.clone();
        let agent = request.headers.get("x-client").map(|v| v.to_str().unwrap().to_owned());
        let info = sock.info();
        assert!(info.remote_addr.is_some_and(|a| a.ip().is_loopback()), "{info:?}");
        assert!(info.local_addr.is_some_and(|a| a.ip().is_loopback()), "{info:?}");
        Ok::<_, String>(Bytes::from(format!("{user} via {}", agent.unwrap_or_default())))
    });
    let server = WebServer::start(h, Config::default(), |g| {
        g.on_connect(|mut request: gotalk::UpgradeRequest| async move {
            let token = request.headers.get("authorization").and_then(|v| v.to_str().ok());
            match token {
                Some("Bearer open-sesame") => {
                    request.extensions.insert(User("ali".into()));
                    Ok(request)
                }
                Some(_) => Err(Refusal::forbidden("bad token")),
                None => Err(Refusal::unauthorized("no token")),
            }
        })
    })
    .await;
    let url = server.url("");
    // Refused in a way a browser can read: the upgrade is accepted and the socket closed at
    // once with 4000 + the status and the reason.
    for (headers, code, reason) in
        [(&[][..], 4401, "no token"), (&[("authorization", "Bearer nope")][..], 4403, "bad token")]
    {
        let mut refused = WsPeer::upgrade(&url, headers).await.expect("upgraded, then closed");
        let close = CloseFrame { code: code.into(), reason: reason.into() };
        assert_eq!(refused.raw_message().await, Message::Close(Some(close)));
    }
    let err =
        gotalk::ws::connect(&url, Arc::new(Handlers::new()), Config::default()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Refused { code: 4401, reason } if reason == "no token"),
        "{err:?}"
    );
    assert_eq!(server.gateway.connections().len(), 0);

    let client = gotalk::ws::Connector::new()
        .header("authorization", "Bearer open-sesame")
        .header("x-client", "test-suite")
        .connect(&url, Arc::new(Handlers::new()), Config::default())
        .await
        .unwrap();
    assert_eq!(client.buffer_request("whoami", "").await.unwrap(), "ali via test-suite");
    assert_eq!(server.gateway.connections().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_on_connect_hook_costs_one_upgrade_a_500() {
    let server = WebServer::start(handlers(), Config::default(), |g| {
        g.on_connect(|request: gotalk::UpgradeRequest| async move {
            if request.uri.query() == Some("boom") {
                panic!("hook failure");
            }
            Ok(request)
        })
    })
    .await;
    let refused = WsPeer::upgrade(&server.url("boom"), &[]).await.err().expect("refused");
    assert_eq!((refused.status, refused.body.as_str()), (500, "on_connect failed"));
    let client = server.connect(Handlers::new()).await;
    assert_eq!(client.buffer_request("echo", "still up").await.unwrap(), "still up");
    server.stop().await;
}

#[tokio::test]
async fn pings_are_answered() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let mut peer = WsPeer::connect(&server.url("")).await;
    peer.ping(b"are you there").await;
    assert_eq!(peer.raw_message().await, Message::Pong(Bytes::from_static(b"are you there")));
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_cannot_take_retry_results_has_requests_held_not_dropped() {
    let config = Config::default()
        .request_limit(2)
        .retry_wait(Duration::from_millis(10), Duration::from_millis(40));
    let server = WebServer::start(handlers(), config, |g| g).await;

    // Like gotalk.js: no declaration in the URL, so the overflow waits for a free slot.
    let mut peer = WsPeer::connect(&server.url("")).await;
    let mut burst = Vec::new();
    for i in 0..8u32 {
        burst.extend_from_slice(format!("r{i:04}005sleep00000002").as_bytes());
        burst.extend_from_slice(b"30");
    }
    peer.binary(&burst).await;
    let mut answered = Vec::new();
    while answered.len() < 8 {
        let header = match peer.message().await {
            Message::Binary(h) => h,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(header[0], b'R', "a result, not {:?}", String::from_utf8_lossy(&header));
        peer.expect(b"30").await;
        answered.push(String::from_utf8_lossy(&header[1..5]).into_owned());
    }
    answered.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("{i:04}")).collect();
    assert_eq!(answered, expected);

    // A client that declares it understands RetryResult gets one for the same burst. It
    // reads a byte stream too, so each frame comes as one message, payload included.
    let mut declared = WsPeer::connect(&server.url(gotalk::ws::RETRY_QUERY)).await;
    declared.binary(&burst).await;
    let mut retries = 0;
    let mut results = 0;
    while retries + results < 8 {
        match declared.message().await {
            Message::Binary(h) if h[0] == b'e' => {
                assert!(h.ends_with(b"request rate limit"), "{:?}", String::from_utf8_lossy(&h));
                retries += 1;
            }
            Message::Binary(h) if h[0] == b'R' => {
                assert_eq!(&h[5..], b"0000000230", "the result and its payload");
                results += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((results, retries), (2, 6));

    // Our own client declares it and retries by itself: every request succeeds.
    let client = server.connect(Handlers::new()).await;
    let calls = (0..8).map(|_| client.request::<_, u64>("sleep", &20u64));
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.unwrap(), 20);
    }
    server.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight_then_closes_with_going_away() {
    let server = WebServer::start(handlers(), Config::default(), |g| g).await;
    let client = server.connect(Handlers::new()).await;
    // A watcher that declares itself one of ours, as the browser client does, and one that
    // does not, as gotalk.js.
    let mut watcher = WsPeer::connect(&server.url("gotalk-retry=1")).await;
    let mut original = WsPeer::connect(&server.url("")).await;
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.request::<_, u64>("sleep", &300u64).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.begin_stop();

    assert_eq!(within("request in flight", in_flight).await.unwrap().unwrap(), 300);
    // The drain is announced first to a client of ours: the reserved notification `$done`,
    // then the close.
    match within("$done", watcher.message()).await {
        Message::Binary(header) => {
            assert_eq!(&header[..], b"n005$done00000000");
        }
        other => panic!("expected $done, got {other:?}"),
    }
    let close = within("close frame", watcher.expect_close()).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    // gotalk.js would hand `$done` to its catch-all handler: it only sees the close.
    let close = within("close frame", original.expect_close()).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(client.closed().await, gotalk::CloseReason::PeerClosed);
    let http = server.http;
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "still accepting");
}
