//! The WebSocket transport over a stream of messages, and our WebSocket client.
//!
//! [`WsReader`] and [`WsWriter`] adapt any stream and sink of WebSocket messages (through
//! [`WsMessage`]) to a sock's reader and writer. Our client uses them over tokio-tungstenite;
//! the gateway does not (it frames the upgraded connection itself, see
//! [`server()`](super::server())), so the tungstenite settings here are the client's.

use std::fmt::Display;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use gotalk_protocol::{encode_version, Frame};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig};

use crate::config::Config;
use crate::error::{CloseReason, Error};
use crate::handlers::Handlers;
use crate::sock::{ConnInfo, Sock, TransportKind};
use crate::transport::{FrameReader, FrameWriter, ReadEvent};

use super::pings::{PingBudget, MAX_PONGS};
use super::{
    close_code, close_text, max_message_size, CLOSE_INVALID_DATA, CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG,
};

/// Read buffer of a client connection. tungstenite allocates it up front and keeps it for the
/// life of the connection (its default, 128 KiB, would be most of an idle connection's
/// memory), and reads at most this much per system call. Measured with
/// `gotalk-bench --transport ws` when the gateway used it too: 1 KiB saves 3 KiB per idle
/// connection but costs 40% of the throughput of 64 KiB payloads; 8 KiB gains 8% on them for
/// 4 KiB more per connection; 32-byte messages don't notice.
///
/// tungstenite's buffers grow to fit the largest message a connection has carried and do not
/// shrink, so a client socket that once moved a payload of N bytes keeps up to about 2 × N.
/// The gateway's sockets do not (see [`server()`](super::server())).
pub(crate) const READ_BUFFER: usize = 4 * 1024;
/// How many bytes of queued messages make a client's tungstenite write without waiting for the
/// flush.
pub(crate) const WRITE_BUFFER: usize = 64 * 1024;

/// tungstenite settings for a client connection with `config`.
pub fn socket_config(config: &Config) -> WebSocketConfig {
    let max = max_message_size(config);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max_write_buffer(config))
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// The most tungstenite may hold unwritten: a full batch plus one message at the limit.
/// Without a cap, a peer that sends pings and never reads would grow the queue of pongs
/// forever; at the cap tungstenite keeps only the latest pong.
pub(crate) fn max_write_buffer(config: &Config) -> usize {
    WRITE_BUFFER + max_message_size(config) + 1024
}

/// What the transport needs from a WebSocket message type.
pub trait WsMessage: Send + Sized + 'static {
    /// A binary message.
    fn binary(data: Bytes) -> Self;
    /// A close message.
    fn close(code: u16, reason: String) -> Self;
    /// A ping carrying `data`, which the peer must echo in a pong.
    fn ping(data: Bytes) -> Self;
    /// What the message carries.
    fn into_event(self) -> WsEvent;
}

/// A received WebSocket message, as the transport sees it.
#[derive(Debug)]
pub enum WsEvent {
    /// Bytes of the gotalk stream, from a text or a binary message.
    Data(Bytes),
    /// The peer is closing, with the code and reason of its close frame, if it had one.
    Close(Option<(u16, String)>),
    /// A ping, which tungstenite answers with a pong.
    Ping,
    /// A pong, answering one of our pings (a liveness probe) or unsolicited.
    Pong(Bytes),
    /// Another control message.
    Control,
}

impl WsMessage for tungstenite::Message {
    fn binary(data: Bytes) -> Self {
        Self::Binary(data)
    }

    fn close(code: u16, reason: String) -> Self {
        Self::Close(Some(tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
    }

    fn ping(data: Bytes) -> Self {
        Self::Ping(data)
    }

    fn into_event(self) -> WsEvent {
        match self {
            Self::Binary(data) => WsEvent::Data(data),
            Self::Text(text) => WsEvent::Data(Bytes::from(text)),
            Self::Close(frame) => {
                WsEvent::Close(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
            }
            Self::Ping(_) => WsEvent::Ping,
            Self::Pong(data) => WsEvent::Pong(data),
            Self::Frame(_) => WsEvent::Control,
        }
    }
}

fn io_error(e: impl Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// An error from a WebSocket stream that may say the peer broke the WebSocket protocol.
pub trait WsError: Display {
    /// The close code and text for a protocol violation by the peer, if this is one.
    fn violation(&self) -> Option<(u16, &'static str)>;
}

impl WsError for tungstenite::Error {
    fn violation(&self) -> Option<(u16, &'static str)> {
        match self {
            Self::Utf8(_) => Some((CLOSE_INVALID_DATA, "invalid UTF-8 in a text message")),
            Self::Capacity(_) => Some((CLOSE_TOO_BIG, "message too big")),
            Self::Protocol(_) | Self::AttackAttempt => {
                Some((CLOSE_PROTOCOL_ERROR, "websocket protocol error"))
            }
            _ => None,
        }
    }
}

/// The close frame the reader wants sent, when the peer broke the WebSocket protocol; shared
/// by a reader and a writer made by [`pair`].
#[derive(Debug, Default, Clone)]
struct Violation(Arc<Mutex<Option<(u16, &'static str)>>>);

impl Violation {
    fn set(&self, violation: (u16, &'static str)) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(violation);
    }

    fn get(&self) -> Option<(u16, &'static str)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A reader and a writer for one socket, linked so that a protocol violation the reader
/// detects is answered with the right close code (1002, 1007 or 1009) by the writer.
pub fn pair<St, Si, M>(stream: St, sink: Si) -> (WsReader<St>, WsWriter<Si, M>) {
    let violation = Violation::default();
    let mut reader = WsReader::new(stream);
    reader.violation = violation.clone();
    let mut writer = WsWriter::new(sink);
    writer.violation = violation;
    (reader, writer)
}

/// The most bytes one read gathers from messages that have already arrived.
const MAX_GATHER: usize = 64 * 1024;

/// Reads the gotalk byte stream out of a stream of WebSocket messages.
#[derive(Debug)]
pub struct WsReader<S> {
    stream: S,
    /// The peer's close arrived after data that a read returned; the next read ends.
    closed: bool,
    violation: Violation,
    pings: PingBudget,
    /// Pongs received, for the liveness checks; only the latest few are kept.
    pongs: Vec<Bytes>,
    /// The code and reason of the peer's close frame, once it arrived.
    peer_close: Arc<Mutex<Option<(u16, String)>>>,
}

impl<S> WsReader<S> {
    /// Wraps a stream of WebSocket messages. See [`pair`] for one linked to its writer.
    pub fn new(stream: S) -> Self {
        WsReader {
            stream,
            closed: false,
            violation: Violation::default(),
            pings: PingBudget::new(),
            pongs: Vec::new(),
            peer_close: Arc::default(),
        }
    }
}

impl<S, M, E> FrameReader for WsReader<S>
where
    S: Stream<Item = Result<M, E>> + Unpin + Send + 'static,
    M: WsMessage,
    E: WsError,
{
    async fn read(&mut self, buf: &mut BytesMut, _hint: Option<usize>) -> io::Result<ReadEvent> {
        // Every message that has already arrived joins this read: with gotalk.js framing a
        // request is two messages (header, payload), and returning after each would run the
        // decoder and the read loop twice as often.
        let mut added = 0;
        loop {
            if self.closed {
                return Ok(if added > 0 { ReadEvent::Data(added) } else { ReadEvent::Eof });
            }
            let next = std::future::poll_fn(|cx| match self.stream.poll_next_unpin(cx) {
                Poll::Ready(item) => Poll::Ready(Some(item)),
                Poll::Pending if added > 0 => Poll::Ready(None),
                Poll::Pending => {
                    // Give our buffer back while waiting, so an idle connection holds none
                    // of its own (tungstenite keeps its read buffer; see READ_BUFFER).
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    Poll::Pending
                }
            })
            .await;
            match next {
                None => return Ok(ReadEvent::Data(added)),
                Some(None) => self.closed = true,
                Some(Some(Err(e))) => {
                    return Err(match e.violation() {
                        Some(violation) => {
                            self.violation.set(violation);
                            io::Error::new(io::ErrorKind::InvalidData, violation.1)
                        }
                        None => io_error(e),
                    });
                }
                Some(Some(Ok(message))) => match message.into_event() {
                    WsEvent::Data(data) => {
                        buf.extend_from_slice(&data);
                        added += data.len();
                        if added >= MAX_GATHER {
                            return Ok(ReadEvent::Data(added));
                        }
                    }
                    WsEvent::Close(frame) => {
                        self.closed = true;
                        *self.peer_close.lock().unwrap_or_else(|p| p.into_inner()) = frame;
                    }
                    WsEvent::Ping if !self.pings.spend() => {
                        let violation = (CLOSE_POLICY, "too many pings");
                        self.violation.set(violation);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, violation.1));
                    }
                    WsEvent::Pong(data) => {
                        if self.pongs.len() == MAX_PONGS {
                            self.pongs.remove(0);
                        }
                        self.pongs.push(data);
                        // A pong may be the only sign of life of an idle peer: report it now.
                        return Ok(ReadEvent::Data(added));
                    }
                    WsEvent::Ping | WsEvent::Control => {}
                },
            }
        }
    }

    fn take_pong(&mut self) -> Option<Bytes> {
        (!self.pongs.is_empty()).then(|| self.pongs.remove(0))
    }
}

/// Writes frames as WebSocket messages: `01`, each header and each non-empty payload in a
/// binary message of its own, flushed together.
#[derive(Debug)]
pub struct WsWriter<S, M> {
    sink: S,
    staging: BytesMut,
    pending: Vec<M>,
    violation: Violation,
}

impl<S, M> WsWriter<S, M> {
    /// Wraps a sink of WebSocket messages. See [`pair`] for one linked to its reader.
    pub fn new(sink: S) -> Self {
        WsWriter {
            sink,
            staging: BytesMut::new(),
            pending: Vec::new(),
            violation: Violation::default(),
        }
    }
}

impl<S, M> FrameWriter for WsWriter<S, M>
where
    S: Sink<M> + Unpin + Send + 'static,
    S::Error: Display,
    M: WsMessage,
{
    fn buffer_version(&mut self) {
        encode_version(&mut self.staging);
        self.pending.push(M::binary(self.staging.split().freeze()));
    }

    fn buffer_frame(&mut self, frame: &Frame) {
        // Headers are encoded one after another into one buffer and split off, so a batch of
        // small headers shares one allocation.
        frame.encode_header(&mut self.staging);
        self.pending.push(M::binary(self.staging.split().freeze()));
        let payload = frame.payload();
        if !payload.is_empty() {
            self.pending.push(M::binary(payload.clone()));
        }
    }

    fn buffer_ping(&mut self, payload: &[u8]) -> bool {
        self.pending.push(M::ping(Bytes::copy_from_slice(payload)));
        true
    }

    async fn flush(&mut self) -> io::Result<()> {
        for message in self.pending.drain(..) {
            self.sink.feed(message).await.map_err(io_error)?;
        }
        // Keep the vector's allocation for the next batch, unless a large batch grew it past
        // what an idle connection should hold.
        if self.pending.capacity() > 64 {
            self.pending = Vec::new();
        }
        self.sink.flush().await.map_err(io_error)?;
        if self.staging.capacity() > 64 * 1024 {
            self.staging = BytesMut::new();
        }
        Ok(())
    }

    async fn shutdown(&mut self, reason: &CloseReason) -> io::Result<()> {
        let (code, text) = match self.violation.get() {
            Some((code, text)) => (code, text.to_owned()),
            None => (close_code(reason), close_text(reason)),
        };
        // When the peer closed first, tungstenite has queued the reply itself and refuses a
        // second close; closing the sink still flushes that reply.
        let sent = self.sink.send(M::close(code, text)).await.map_err(io_error);
        let closed = self.sink.close().await.map_err(io_error);
        sent.and(closed)
    }
}

/// How to reach a WebSocket server.
#[derive(Clone, Default)]
pub struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
    headers: http::HeaderMap,
    origin: Origin,
}

/// The `Origin` a [`Connector`] sends.
#[derive(Clone, Debug, Default)]
enum Origin {
    /// The URL's own origin: `http://host:port` for `ws://host:port/…`.
    #[default]
    OfUrl,
    Given(http::HeaderValue),
    None,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers)
            .field("origin", &self.origin)
            .finish()
    }
}

impl Connector {
    /// A connector for `ws://` URLs; add [`tls`](Self::tls) for `wss://`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The TLS settings for `wss://` URLs.
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// A header to send with the upgrade request: a cookie, a bearer token. An `Origin`
    /// given here replaces the default one (see [`origin`](Self::origin)).
    ///
    /// # Panics
    /// If `name` or `value` is not a valid header name or value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = http::HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = http::HeaderValue::from_str(value).expect("valid header value");
        self.headers.append(name, value);
        self
    }

    /// The `Origin` to send, such as `https://app.example`. Default: the URL's own origin,
    /// `http://host:port` for `ws://host:port/…` and `https://…` for `wss://`, which a
    /// gotalk-rs gateway takes for its own and Go's gotalk requires (it refuses an upgrade
    /// without one with 403).
    ///
    /// # Panics
    /// If `origin` is not a valid header value.
    pub fn origin(mut self, origin: &str) -> Self {
        self.origin = Origin::Given(http::HeaderValue::from_str(origin).expect("valid origin"));
        self
    }

    /// Sends no `Origin`, as programs did before browsers: a gotalk-rs gateway allows it,
    /// Go's gotalk refuses it.
    pub fn no_origin(mut self) -> Self {
        self.origin = Origin::None;
        self
    }

    /// Connects to the gotalk endpoint at `url` (`ws://host:port/gotalk/` or `wss://…`),
    /// declaring that this client understands RetryResult.
    ///
    /// # Errors
    /// [`Error::Connect`] when the server cannot be reached or refuses the upgrade (the
    /// message carries the HTTP status), [`Error::Refused`] when the server turned this
    /// client away with a reason (its `on_connect` hook), [`Error::Closed`] when the gotalk
    /// handshake fails.
    pub async fn connect(
        &self,
        url: &str,
        handlers: Arc<Handlers>,
        config: Config,
    ) -> Result<Sock, Error> {
        let uri: http::Uri = gotalk_protocol::retry::with_query(url)
            .parse()
            .map_err(|e| Error::Connect(format!("{url}: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(Error::Connect(format!("{url}: not a ws:// or wss:// URL"))),
        };
        let host = uri.host().ok_or_else(|| Error::Connect(format!("{url}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let mut request =
            uri.clone().into_client_request().map_err(|e| Error::Connect(e.to_string()))?;
        for (name, value) in &self.headers {
            request.headers_mut().append(name, value.clone());
        }
        let origin = match &self.origin {
            _ if self.headers.contains_key(http::header::ORIGIN) => None,
            Origin::OfUrl => url_origin(&uri, secure),
            Origin::Given(value) => Some(value.clone()),
            Origin::None => None,
        };
        if let Some(origin) = origin {
            request.headers_mut().insert(http::header::ORIGIN, origin);
        }

        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (remote, local) = (stream.peer_addr().ok(), stream.local_addr().ok());
        let info = ConnInfo::new(TransportKind::WebSocket, remote, local);
        let timeout = config.liveness.handshake_timeout;
        let socket_config = socket_config(&config);
        let upgrade = async {
            if !secure {
                return upgrade(stream, request, socket_config).await.map(Socket::Plain);
            }
            let tls = self.tls.clone().ok_or_else(|| {
                Error::Connect(format!("{url}: wss:// needs a TLS configuration"))
            })?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| Error::Connect(format!("invalid server name {host:?}: {e}")))?;
            let stream = TlsConnector::from(tls)
                .connect(name, stream)
                .await
                .map_err(|e| Error::Connect(format!("tls handshake: {e}")))?;
            upgrade(stream, request, socket_config).await.map(Socket::Tls)
        };
        // The TLS and WebSocket handshakes share one deadline; the gotalk handshake that
        // follows has its own, and fails with `Error::Closed` as over TCP.
        let socket = tokio::time::timeout(timeout, upgrade)
            .await
            .map_err(|_| Error::Connect("websocket handshake timed out".into()))??;
        let config = Arc::new(config);
        match socket {
            Socket::Plain(socket) => start(socket, handlers, config, info).await,
            Socket::Tls(socket) => start(socket, handlers, config, info).await,
        }
    }
}

/// The origin of a `ws://` or `wss://` URL, as a page served from the same host and port
/// over http or https would send it.
fn url_origin(uri: &http::Uri, secure: bool) -> Option<http::HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, rest)| rest);
    let scheme = if secure { "https" } else { "http" };
    http::HeaderValue::from_str(&format!("{scheme}://{host_port}")).ok()
}

/// A client socket, plain or over TLS. One lives for a moment while connecting, so the
/// size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Socket {
    Plain(tokio_tungstenite::WebSocketStream<TcpStream>),
    Tls(tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Runs the gotalk handshake over an upgraded socket.
async fn start<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    handlers: Arc<Handlers>,
    config: Arc<Config>,
    info: ConnInfo,
) -> Result<Sock, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = socket.split();
    let (reader, writer) = pair(stream, sink);
    let peer_close = reader.peer_close.clone();
    match Sock::start(reader, writer, handlers, config, info).await {
        // A gateway that refuses the connection accepts the upgrade and closes it at once
        // with 4000 + the status and the reason, where a page can read them.
        Err(Error::Closed(reason)) => {
            let frame = peer_close.lock().unwrap_or_else(|p| p.into_inner()).take();
            Err(match frame {
                Some((code, reason)) if super::is_refusal(code) => Error::Refused { code, reason },
                _ => Error::Closed(reason),
            })
        }
        other => other,
    }
}

/// Upgrades `stream` with `request` to a WebSocket.
async fn upgrade<S>(
    stream: S,
    request: http::Request<()>,
    config: WebSocketConfig,
) -> Result<tokio_tungstenite::WebSocketStream<S>, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let upgrade = tokio_tungstenite::client_async_with_config(request, stream, Some(config));
    let (socket, _) = upgrade.await.map_err(|e| match e {
        tungstenite::Error::Http(response) => {
            Error::Connect(format!("{UPGRADE_REFUSED}{}", describe_refusal(&response)))
        }
        e => Error::Connect(format!("websocket handshake: {e}")),
    })?;
    Ok(socket)
}

/// What an [`Error::Connect`] message starts with when the server answered the upgrade
/// request with another HTTP response; the status follows (`upgrade refused: 404 Not Found`).
pub const UPGRADE_REFUSED: &str = "upgrade refused: ";

/// A response that refused the upgrade, in one line: its status, and its body when that is a
/// short line of plain text (a gateway's reason); a page is named by its type, since its markup
/// says nothing in an error message.
fn describe_refusal(response: &http::Response<Option<Vec<u8>>>) -> String {
    let status = response.status();
    let body = response.body().as_deref().unwrap_or_default();
    let text = std::str::from_utf8(body).map(str::trim).ok();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let plain = content_type.is_empty() || content_type.starts_with("text/plain");
    match text {
        _ if body.is_empty() => status.to_string(),
        Some(text) if plain && text.len() <= 200 && !text.contains(['\n', '\r']) => {
            format!("{status} {text}")
        }
        _ if content_type.is_empty() => format!("{status} (a body of {} bytes)", body.len()),
        _ => format!("{status} (a {content_type} body of {} bytes)", body.len()),
    }
}

/// Connects to the gotalk endpoint at a `ws://` URL. See [`Connector`] for `wss://` and
/// request headers.
///
/// # Errors
/// As [`Connector::connect`].
pub async fn connect(url: &str, handlers: Arc<Handlers>, config: Config) -> Result<Sock, Error> {
    Connector::new().connect(url, handlers, config).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_upgrade_is_one_line_without_the_page() {
        let response = |content_type: &str, body: &str| {
            let mut r = http::Response::new(Some(body.as_bytes().to_vec()));
            *r.status_mut() = http::StatusCode::OK;
            if !content_type.is_empty() {
                r.headers_mut().insert(http::header::CONTENT_TYPE, content_type.parse().unwrap());
            }
            r
        };
        let page = "<!doctype html>\n<html><title>chat</title></html>\n";
        assert_eq!(
            describe_refusal(&response("text/html; charset=utf-8", page)),
            format!("200 OK (a text/html; charset=utf-8 body of {} bytes)", page.len())
        );
        assert_eq!(
            describe_refusal(&response("text/plain", "origin not allowed\n")),
            "200 OK origin not allowed"
        );
        assert_eq!(describe_refusal(&response("", "")), "200 OK");
        assert_eq!(describe_refusal(&response("", "two\nlines")), "200 OK (a body of 9 bytes)");
    }

    #[test]
    fn the_default_origin_is_the_urls_own() {
        let origin = |url: &str, secure| {
            let uri: http::Uri = url.parse().unwrap();
            url_origin(&uri, secure).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(origin("ws://127.0.0.1:1234/gotalk/", false).unwrap(), "http://127.0.0.1:1234");
        assert_eq!(origin("wss://example.com/gotalk/?a=1", true).unwrap(), "https://example.com");
        assert_eq!(origin("ws://[::1]:8080/", false).unwrap(), "http://[::1]:8080");
        assert_eq!(origin("ws://user:pw@h:1/", false).unwrap(), "http://h:1");
    }
}
