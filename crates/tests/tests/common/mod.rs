//! Helpers shared by the integration tests: a real server on `127.0.0.1:0`, a Rust client for
//! it, the fixture operations, and a raw-TCP "wire peer" that speaks gotalk by hand so a
//! test can send exact (or malicious) bytes and read exactly what the server answers.

// Every test binary compiles this module and each uses a different subset of it.
#![allow(dead_code)]

pub(crate) mod never_reads;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod raw_ws;
pub(crate) mod web;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gotalk::protocol::{Decoder, Frame, Id, Name};
use gotalk::tcp::{Connections, Server};
use gotalk::{Config, Handlers, Sock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The most any single step of a test may take before the test fails instead of hanging.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub(crate) async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {WAIT:?}"),
    }
}

/// An HTTP response's head, read a byte at a time so that nothing after it (a body, the first
/// WebSocket frames) is taken from `stream`; shorter if the server closes first.
pub(crate) async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if within("a response head", stream.read(&mut byte)).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    head
}

/// A server running on an ephemeral port.
pub(crate) struct TestServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Sending (or dropping) this stops the server: it stops accepting and drains.
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    /// The server task; it returns once the drain is over.
    pub(crate) handle: JoinHandle<io::Result<()>>,
    /// The server's open connections.
    pub(crate) connections: Connections,
}

impl TestServer {
    /// Signals shutdown and waits for the server task to finish.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within("server shutdown", &mut self.handle)
            .await
            .expect("server task panicked")
            .expect("server returned an error");
    }

    /// The server-side sock of the only open connection, once it is registered.
    pub(crate) async fn only_connection(&self) -> Sock {
        within("server-side connection", async {
            loop {
                let socks = self.connections.socks();
                if socks.len() == 1 {
                    return socks.into_iter().next().unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}

/// Starts a plain TCP server for `handlers` with `config` on `127.0.0.1:0`.
pub(crate) async fn start(handlers: Handlers, config: Config) -> TestServer {
    serve(Server::new(Arc::new(handlers), config)).await
}

/// Runs an already configured server (TLS, shutdown timeout…) on `127.0.0.1:0`.
pub(crate) async fn serve(server: Server) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let connections = server.connections();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(listener, rx));
    TestServer { addr, shutdown: Some(tx), handle, connections }
}

/// Connects a Rust client with its own handlers and config.
pub(crate) async fn connect_with(addr: SocketAddr, handlers: Handlers, config: Config) -> Sock {
    within("connect", gotalk::tcp::connect(addr, Arc::new(handlers), config))
        .await
        .expect("connect to the test server")
}

/// Connects a Rust client with no handlers and the default config.
pub(crate) async fn connect(addr: SocketAddr) -> Sock {
    connect_with(addr, Handlers::new(), Config::default()).await
}

/// The fixture operations, which most tests serve (see [`gotalk_tests::fixtures`]).
pub(crate) fn handlers() -> Handlers {
    gotalk_tests::fixtures::handlers()
}

/// A `r` frame.
pub(crate) fn request(id: &[u8; 4], op: &str, payload: &[u8]) -> Frame {
    Frame::SingleRequest {
        id: Id(*id),
        op: Name::new(op).expect("short name"),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A `s` frame.
pub(crate) fn stream_request(id: &[u8; 4], op: &str, payload: &[u8]) -> Frame {
    Frame::StreamRequest {
        id: Id(*id),
        op: Name::new(op).expect("short name"),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A `n` frame.
pub(crate) fn notification(name: &str, payload: &[u8]) -> Frame {
    Frame::Notification {
        name: Name::new(name).expect("short name"),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A TCP connection to `addr` from the local address `source`.
pub(crate) async fn connect_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
) -> io::Result<TcpStream> {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// The hello our clients say after their version, and our servers in reply
/// (`gotalk::protocol::reserved`).
pub(crate) const HELLO: &[u8] = b"R$hi!00000000";

/// A hand-driven gotalk peer over a plain [`TcpStream`]: it writes whatever bytes a test
/// gives it and decodes what comes back with the real [`Decoder`].
pub(crate) struct WirePeer {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl WirePeer {
    /// Connects without sending anything.
    pub(crate) async fn connect_raw(addr: SocketAddr) -> Self {
        let stream = within("tcp connect", TcpStream::connect(addr)).await.expect("tcp connect");
        WirePeer { stream, buf: BytesMut::new(), decoder: Decoder::new() }
    }

    /// Connects from `source` (any 127.x.y.z address on Linux), without sending anything:
    /// for limits per remote address.
    pub(crate) async fn connect_raw_from(addr: SocketAddr, source: std::net::IpAddr) -> Self {
        let stream = within("tcp connect", connect_from(addr, source)).await.expect("tcp connect");
        WirePeer { stream, buf: BytesMut::new(), decoder: Decoder::new() }
    }

    /// Connects and does the version handshake by hand: sends `01` and expects `01`.
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let mut peer = Self::connect_raw(addr).await;
        peer.write(b"01").await;
        assert_eq!(peer.read_bytes(2).await, b"01", "the server's protocol version");
        peer
    }

    /// Connects as a client of ours: sends `01` and the hello, expects `01` and the server's
    /// hello in reply. The server then sends it the reserved messages (`$id`, `$ping`,
    /// `$done`) that another implementation's client never gets.
    pub(crate) async fn connect_ours(addr: SocketAddr) -> Self {
        let mut peer = Self::connect_raw(addr).await;
        peer.write(b"01").await;
        peer.write(HELLO).await;
        assert_eq!(peer.read_bytes(2).await, b"01", "the server's protocol version");
        assert_eq!(peer.read_bytes(HELLO.len()).await, HELLO, "the server's hello");
        peer
    }

    /// Writes raw bytes.
    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the server");
    }

    /// Writes raw bytes to a server that may already have closed the connection.
    pub(crate) async fn try_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Shuts down the sending side (a TCP FIN), as `nc -N` does after its input: the peer
    /// reads the end while this side can still read.
    pub(crate) async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shut down the sending side");
    }

    /// Encodes and writes one frame.
    pub(crate) async fn send(&mut self, frame: &Frame) {
        let mut wire = BytesMut::new();
        frame.encode(&mut wire);
        self.write(&wire).await;
    }

    /// Reads more bytes into the buffer; false at end of stream (a reset counts as one).
    async fn fill(&mut self) -> bool {
        self.buf.reserve(4096);
        match within("read from the server", self.stream.read_buf(&mut self.buf)).await {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read from the server: {e}"),
        }
    }

    /// Reads exactly `n` raw bytes.
    pub(crate) async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            if !self.fill().await {
                panic!(
                    "connection ended after {:?}, wanted {n} bytes",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
        self.buf.split_to(n).to_vec()
    }

    /// Reads every remaining byte until the server closes the connection.
    pub(crate) async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await {}
        self.buf.split().to_vec()
    }

    /// The next frame, or `None` when the connection ends cleanly between frames.
    pub(crate) async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("the server sent bytes that do not decode: {e}"),
            }
            if !self.fill().await {
                assert!(
                    !self.decoder.is_mid_message(&self.buf),
                    "the connection ended in the middle of a message"
                );
                return None;
            }
        }
    }

    /// The next frame, which must be there.
    pub(crate) async fn frame(&mut self) -> Frame {
        self.next_frame().await.expect("a frame, not the end of the connection")
    }

    /// Asserts that the rest of what the server sends is exactly `bytes`, then end of stream.
    pub(crate) async fn expect_end_with(&mut self, bytes: &[u8]) {
        let rest = self.read_to_end().await;
        assert_eq!(
            String::from_utf8_lossy(&rest),
            String::from_utf8_lossy(bytes),
            "what the server sent before closing"
        );
    }
}

/// A server and a client TLS configuration for `localhost`, with a fresh self-signed
/// certificate the client trusts.
pub(crate) fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate a self-signed certificate");
    let cert: rustls::pki_types::CertificateDer<'static> = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.key_pair.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server TLS config");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("trust the test certificate");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}
