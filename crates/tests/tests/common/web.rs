//! A gateway test server: HTTP with the gateway mounted at `/gotalk`, and a TCP listener, on
//! one handler registry; and a raw WebSocket peer that frames messages the way a test says.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gotalk::tcp::Connections;
use gotalk::{Config, Handlers, Sock};
use gotalk_gateway::Gateway;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::within;

/// A gateway and a TCP listener sharing one registry, on ephemeral ports.
pub(crate) struct WebServer {
    /// The HTTP address; the gateway is at `/gotalk/`.
    pub(crate) http: SocketAddr,
    /// The TCP gotalk address.
    pub(crate) tcp: SocketAddr,
    /// The gateway, for its connections.
    pub(crate) gateway: Gateway,
    /// The TCP listener's connections.
    pub(crate) tcp_connections: Connections,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl WebServer {
    /// Starts both listeners for `handlers`; `gateway` may adjust the gateway.
    pub(crate) async fn start(
        handlers: Handlers,
        config: Config,
        gateway: impl FnOnce(Gateway) -> Gateway,
    ) -> WebServer {
        Self::start_with(handlers, config, gateway, |http| http).await
    }

    /// [`start`](Self::start), where `adjust_http` may also adjust the HTTP server.
    pub(crate) async fn start_with(
        handlers: Handlers,
        config: Config,
        gateway: impl FnOnce(Gateway) -> Gateway,
        adjust_http: impl FnOnce(gotalk_gateway::http::Server) -> gotalk_gateway::http::Server,
    ) -> WebServer {
        Self::start_at("127.0.0.1:0", handlers, config, gateway, adjust_http).await
    }

    /// [`start_with`](Self::start_with), both listeners bound to `bind` (`[::1]:0`, say).
    pub(crate) async fn start_at(
        bind: &str,
        handlers: Handlers,
        config: Config,
        gateway: impl FnOnce(Gateway) -> Gateway,
        adjust_http: impl FnOnce(gotalk_gateway::http::Server) -> gotalk_gateway::http::Server,
    ) -> WebServer {
        let handlers = Arc::new(handlers);
        let gateway = gateway(Gateway::new(handlers.clone(), config.clone()));
        let tcp_server = gotalk::tcp::Server::new(handlers, config);
        let tcp_connections = tcp_server.connections();
        let http_listener = TcpListener::bind(bind).await.unwrap();
        let tcp_listener = TcpListener::bind(bind).await.unwrap();
        let (http, tcp) = (http_listener.local_addr().unwrap(), tcp_listener.local_addr().unwrap());
        let app = axum::Router::new().nest_service("/gotalk", gateway.router());
        let http_server = adjust_http(gotalk_gateway::http::Server::new(app));
        let stop = CancellationToken::new();
        let handle = tokio::spawn({
            let (gateway, stop) = (gateway.clone(), stop.clone());
            async move {
                let tcp = Some((tcp_server, tcp_listener));
                gateway.run(http_server, http_listener, tcp, stop.cancelled_owned()).await.unwrap();
            }
        });
        WebServer { http, tcp, gateway, tcp_connections, stop, handle }
    }

    /// The gateway's WebSocket URL, with `query` if not empty.
    pub(crate) fn url(&self, query: &str) -> String {
        let mut url = format!("ws://{}/gotalk/", self.http);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// Connects our WebSocket client.
    pub(crate) async fn connect(&self, handlers: Handlers) -> Sock {
        within(
            "ws connect",
            gotalk::ws::connect(&self.url(""), Arc::new(handlers), Config::default()),
        )
        .await
        .expect("connect over websocket")
    }

    /// Starts a graceful shutdown.
    pub(crate) fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Stops both listeners and waits for the gateway's drain.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        within("server shutdown", self.handle).await.expect("server task panicked");
    }

    /// The gateway's only open connection, once registered.
    pub(crate) async fn only_ws_connection(&self) -> Sock {
        within("server-side websocket", async {
            loop {
                let socks = self.gateway.connections().socks();
                if socks.len() == 1 {
                    return socks.into_iter().next().unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// A WebSocket peer driven by hand: it sends exactly the messages a test gives it.
pub(crate) struct WsPeer {
    socket: WebSocketStream<TcpStream>,
}

/// Why an upgrade failed: the HTTP status and the body.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl WsPeer {
    /// Upgrades with extra request headers, without the gotalk handshake.
    pub(crate) async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<WsPeer, Refused> {
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let addr =
            format!("{}:{}", request.uri().host().unwrap(), request.uri().port_u16().unwrap());
        let stream = TcpStream::connect(addr).await.unwrap();
        match within("upgrade", tokio_tungstenite::client_async(request, stream)).await {
            Ok((socket, _)) => Ok(WsPeer { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            Err(e) => panic!("upgrade failed: {e}"),
        }
    }

    /// Upgrades and does the gotalk handshake the way gotalk.js does: `01` as a binary
    /// message, and the server's `01` in a message of its own.
    pub(crate) async fn connect(url: &str) -> WsPeer {
        let mut peer = Self::upgrade(url, &[]).await.expect("upgrade");
        peer.binary(b"01").await;
        assert_eq!(peer.message().await, Message::Binary(Bytes::from_static(b"01")));
        peer
    }

    /// Sends a binary message.
    pub(crate) async fn binary(&mut self, bytes: &[u8]) {
        self.socket.send(Message::Binary(Bytes::copy_from_slice(bytes))).await.unwrap();
    }

    /// Sends a text message.
    pub(crate) async fn text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.unwrap();
    }

    /// Sends a ping.
    pub(crate) async fn ping(&mut self, data: &[u8]) {
        self.socket.send(Message::Ping(Bytes::copy_from_slice(data))).await.unwrap();
    }

    /// The next message of any kind.
    pub(crate) async fn raw_message(&mut self) -> Message {
        match within("websocket message", self.socket.next()).await {
            Some(Ok(message)) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next data or close message.
    pub(crate) async fn message(&mut self) -> Message {
        loop {
            match within("websocket message", self.socket.next()).await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(message)) => return message,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// The next message, which must be binary and equal `expected`.
    pub(crate) async fn expect(&mut self, expected: &[u8]) {
        match self.message().await {
            Message::Binary(data) => assert_eq!(
                String::from_utf8_lossy(&data),
                String::from_utf8_lossy(expected),
                "one websocket message"
            ),
            other => {
                panic!("expected binary {:?}, got {other:?}", String::from_utf8_lossy(expected))
            }
        }
    }

    /// Waits for the server to end the connection: a close frame, an error or the end of
    /// the stream. Fails on a data message.
    pub(crate) async fn expect_end(&mut self) {
        loop {
            match within("end of the websocket", self.socket.next()).await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(other)) => panic!("expected the end, got {other:?}"),
            }
        }
    }

    /// The close frame the server sends.
    pub(crate) async fn expect_close(&mut self) -> Option<CloseFrame> {
        match self.message().await {
            Message::Close(frame) => frame,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}
