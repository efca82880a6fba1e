//! TLS over real TCP with a self-signed certificate made by the test: requests, streams and
//! notifications both ways, and a client that expects another server name.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{serve, tls_configs, within};
use gotalk::tcp::{connect_tls, Server};
use gotalk::{Config, Error, Handlers, TransportKind};
use tokio::sync::mpsc;

#[tokio::test]
async fn requests_both_ways_over_tls() {
    let (server_tls, client_tls) = tls_configs();
    let server =
        serve(Server::new(Arc::new(common::handlers()), Config::default()).tls(server_tls)).await;

    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let mut client_handlers = Handlers::new();
    client_handlers.handle_buffer("client-echo", |_sock, payload: Bytes| async move {
        Ok::<_, String>(payload)
    });
    client_handlers.handle_buffer_notification("notified", move |_sock, payload: Bytes| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(payload);
        }
    });
    let client = within(
        "tls connect",
        connect_tls(
            server.addr,
            "localhost",
            client_tls,
            Arc::new(client_handlers),
            Config::default(),
        ),
    )
    .await
    .expect("TLS connection");
    assert_eq!(client.info().transport, TransportKind::Tls);

    // Client to server.
    let greeting: serde_json::Value =
        client.request("greet", &serde_json::json!({"name": "TLS"})).await.unwrap();
    assert_eq!(greeting["greeting"], "Hello TLS");
    let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    assert_eq!(&client.buffer_request("echo", big.clone()).await.unwrap()[..], &big[..]);

    // Server to client, through a handler and directly.
    assert_eq!(&client.buffer_request("reverse-echo", "back").await.unwrap()[..], b"back");
    let server_side = server.only_connection().await;
    assert_eq!(server_side.info().transport, TransportKind::Tls);
    assert_eq!(&server_side.buffer_request("client-echo", "direct").await.unwrap()[..], b"direct");

    // A stream and a notification.
    let (mut stx, srx) = client.stream_request("stream-echo", "s1").await.unwrap();
    stx.write("s2").await.unwrap();
    stx.end().await.unwrap();
    assert_eq!(&srx.collect().await.unwrap()[..], b"s1s2");
    client.buffer_request("notify-me", "note").await.unwrap();
    assert_eq!(within("notification", rx.recv()).await.unwrap(), Bytes::from("note"));

    within("end", client.end()).await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_server_name_fails_to_connect() {
    let (server_tls, client_tls) = tls_configs();
    let server =
        serve(Server::new(Arc::new(common::handlers()), Config::default()).tls(server_tls)).await;

    let result = within(
        "tls connect",
        connect_tls(
            server.addr,
            "not-localhost.example",
            client_tls.clone(),
            Arc::new(Handlers::new()),
            Config::default(),
        ),
    )
    .await;
    match result {
        Err(Error::Connect(message)) => assert!(message.contains("tls"), "got {message:?}"),
        other => panic!("expected Error::Connect, got {other:?}"),
    }

    // An invalid name is refused before connecting.
    let result = connect_tls(
        server.addr,
        "not a name!",
        client_tls.clone(),
        Arc::new(Handlers::new()),
        Config::default(),
    )
    .await;
    assert!(matches!(result, Err(Error::Connect(_))), "got {result:?}");

    // The server still serves a client that gets the name right.
    let client = connect_tls(
        server.addr,
        "localhost",
        client_tls,
        Arc::new(Handlers::new()),
        Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(&client.buffer_request("echo", "ok").await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn plain_tcp_client_cannot_talk_to_a_tls_server() {
    let (server_tls, _) = tls_configs();
    let config = Config::default().handshake_timeout(std::time::Duration::from_millis(500));
    let server = serve(Server::new(Arc::new(common::handlers()), config).tls(server_tls)).await;

    // `01` is not a TLS ClientHello: the server drops the connection instead of answering.
    let mut peer = common::WirePeer::connect_raw(server.addr).await;
    peer.write(b"01").await;
    let rest = peer.read_to_end().await;
    assert!(!rest.starts_with(b"01"), "a TLS server must not speak plain gotalk: {rest:?}");
}

#[tokio::test]
async fn websocket_over_tls_through_the_gateway() {
    let (server_tls, client_tls) = tls_configs();
    let server = common::web::WebServer::start_with(
        common::handlers(),
        Config::default(),
        |g| g,
        |http| http.tls(server_tls),
    )
    .await;
    let url = format!("wss://localhost:{}/gotalk/", server.http.port());
    let client = within(
        "wss connect",
        gotalk::ws::Connector::new().tls(client_tls).connect(
            &url,
            Arc::new(Handlers::new()),
            Config::default(),
        ),
    )
    .await
    .expect("wss connect");
    assert_eq!(client.info().transport, TransportKind::WebSocket);
    assert_eq!(client.buffer_request("echo", "secure").await.unwrap(), "secure");

    // Without TLS settings a wss:// URL fails with an error that says so.
    let err =
        gotalk::ws::connect(&url, Arc::new(Handlers::new()), Config::default()).await.unwrap_err();
    assert!(matches!(err, Error::Connect(ref m) if m.contains("TLS")), "{err}");
    server.stop().await;
}
