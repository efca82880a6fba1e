//! The TCP transport: a listener that serves a [`Handlers`] registry, and a client.
//!
//! Both take an optional TLS configuration (rustls). A listener takes an already bound
//! [`TcpListener`], so tests bind port 0, and a shutdown future, so callers decide what stops
//! it (ctrl-c, SIGTERM, a test's oneshot).

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;

use gotalk_protocol::{Frame, ProtocolErrorCode};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
pub use crate::connections::Connections;
use crate::error::{CloseReason, Error};
use crate::handlers::Handlers;
use crate::listen::ListenerLimits;
use crate::refusal::Refusal;
use crate::sock::{ConnInfo, Sock, TransportKind};
use crate::transport;

type ConnectHook = Arc<
    dyn Fn(ConnInfo) -> Pin<Box<dyn Future<Output = Result<ConnInfo, Refusal>> + Send>>
        + Send
        + Sync,
>;

/// Serves gotalk over TCP, optionally with TLS.
#[derive(Clone)]
pub struct Server {
    handlers: Arc<Handlers>,
    config: Arc<Config>,
    tls: Option<TlsAcceptor>,
    on_connect: Option<ConnectHook>,
    limits: ListenerLimits,
    connections: Connections,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `handlers`, with `config` for every connection.
    pub fn new(handlers: Arc<Handlers>, mut config: Config) -> Self {
        config.hello_first = false;
        Server {
            handlers,
            config: Arc::new(config),
            tls: None,
            on_connect: None,
            limits: ListenerLimits::default(),
            connections: Connections::default(),
        }
    }

    /// Serves TLS with this rustls configuration. Default: plain TCP.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    /// Checks each peer before its connection opens, after the TLS handshake (so a client
    /// certificate is in [`ConnInfo::peer_certificates`]): return the info to accept it,
    /// or a [`Refusal`] to turn it away. A refused peer is sent our version, then (if it is
    /// a client of ours) the `$refused` notification with the code and reason, then
    /// ProtocolError 0; our clients fail to connect with [`Error::Refused`], others see the
    /// abnormal ProtocolError. A hook that panics or takes longer than the config's
    /// handshake timeout costs the peer its connection, closed without a word.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # fn server(handlers: Arc<gotalk::Handlers>) -> gotalk::tcp::Server {
    /// gotalk::tcp::Server::new(handlers, gotalk::Config::default()).on_connect(|info| async move {
    ///     match info.remote_addr {
    ///         Some(addr) if addr.ip().is_loopback() => Ok(info),
    ///         _ => Err(gotalk::Refusal::forbidden("local peers only")),
    ///     }
    /// })
    /// # }
    /// ```
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(ConnInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ConnInfo, Refusal>> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |info| Box::pin(hook(info))));
        self
    }

    /// How many connections may be open, from one address and in all, and how long
    /// shutdown waits. Default [`ListenerLimits::default`]. A peer past the per-address limit
    /// or refused a reserved place gets the version, then ProtocolError `f00000000`
    /// (abnormal), then the connection closes; over TLS it is closed before the TLS
    /// handshake.
    pub fn limits(mut self, limits: ListenerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The open connections, to count them or reach every peer.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// Accepts connections until `shutdown` completes, then stops accepting and drains the
    /// open connections (see [`ListenerLimits::shutdown_timeout`]).
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried with a growing pause.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future) -> io::Result<()> {
        let places = self.limits.places();
        let per_addr = places.per_addr;
        let refuser = crate::listen::Refuser::new();
        // Cancelled when shutdown starts, for connections still in their handshake, which
        // the drain below cannot see yet.
        let stopping = CancellationToken::new();
        tokio::pin!(shutdown);
        crate::listen::accept_loop(&listener, places.total, shutdown, |stream, peer, permit| {
            // Nearly out of memory budget: the connections already open finish what they
            // hold before new ones add to it.
            let crowded = self.config.budget().nearly_spent();
            let admitted = if crowded { None } else { Some(per_addr.try_acquire(peer.ip())) };
            let addr_permit = match admitted {
                Some(Ok(addr_permit)) => addr_permit,
                refused => {
                    match refused {
                        None => tracing::warn!(%peer, "refused: the memory budget is nearly spent"),
                        Some(refused) => {
                            tracing::debug!(%peer, ?refused, "refused: too many connections")
                        }
                    }
                    let plain = self.tls.is_none();
                    let refuser = refuser.clone();
                    tokio::spawn(async move {
                        if plain {
                            refuser.refuse(stream, &refusal(), permit).await;
                        }
                    });
                    return;
                }
            };
            let server = self.clone();
            let stopping = stopping.clone();
            tokio::spawn(async move {
                let started = tokio::select! {
                    sock = server.start(stream) => sock,
                    _ = stopping.cancelled() => None,
                };
                if let Some(sock) = started {
                    sock.attach((permit, addr_permit));
                    server.connections.insert(&sock);
                    // Shutdown began during the handshake: the drain may have missed it.
                    if stopping.is_cancelled() {
                        sock.close_with(CloseReason::Shutdown, None);
                    }
                }
            });
        })
        .await;
        drop(listener);
        stopping.cancel();
        self.connections.drain(places.shutdown_timeout).await;
        Ok(())
    }

    async fn start(&self, stream: TcpStream) -> Option<Sock> {
        let (remote, local) = (stream.peer_addr().ok(), stream.local_addr().ok());
        let result = match &self.tls {
            None => {
                let info = ConnInfo::new(TransportKind::Tcp, remote, local);
                let (r, w) = transport::tcp(stream);
                self.open(r, w, info).await
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    self.config.liveness.handshake_timeout,
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let chain = tls.get_ref().1.peer_certificates();
                        let info = ConnInfo::new(TransportKind::Tls, remote, local)
                            .with_peer_certificates(chain);
                        let (r, w) = transport::io(tls);
                        self.open(r, w, info).await
                    }
                    Ok(Err(e)) => Err(Error::Connect(format!("tls handshake: {e}"))),
                    Err(_) => Err(Error::Connect("tls handshake timed out".into())),
                }
            }
        };
        match result {
            Ok(sock) => Some(sock),
            Err(e) => {
                tracing::debug!(peer = ?remote, error = %e, "connection refused at handshake");
                None
            }
        }
    }

    /// Runs the hook, then the handshake, or turns the peer away.
    async fn open<R: transport::FrameReader, W: transport::FrameWriter>(
        &self,
        reader: R,
        writer: W,
        info: ConnInfo,
    ) -> Result<Sock, Error> {
        let mut info = info;
        if let Some(hook) = &self.on_connect {
            let deadline = self.config.liveness.handshake_timeout;
            let checked = AssertUnwindSafe(hook(info)).catch_unwind();
            info = match tokio::time::timeout(deadline, checked).await {
                Ok(Ok(Ok(info))) => info,
                Ok(Ok(Err(refusal))) => {
                    tracing::debug!(code = refusal.code(), "peer refused by on_connect");
                    crate::refusal::refuse(reader, writer, &refusal, deadline).await;
                    return Err(refusal.into_error());
                }
                Ok(Err(_)) => {
                    tracing::error!("on_connect panicked");
                    return Err(Error::Connect("on_connect failed".into()));
                }
                Err(_) => {
                    tracing::warn!(?deadline, "on_connect timed out");
                    return Err(Error::Connect("on_connect timed out".into()));
                }
            };
        }
        Sock::start(reader, writer, self.handlers.clone(), self.config.clone(), info).await
    }
}

/// What a peer over its address's limit, or refused a reserved place, is told: our version
/// (so a gotalk client reads the next frame at all), then ProtocolError abnormal.
fn refusal() -> Vec<u8> {
    let mut refusal = Vec::with_capacity(12);
    gotalk_protocol::encode_version(&mut refusal);
    Frame::ProtocolError { code: ProtocolErrorCode::Abnormal.as_u32() }.encode(&mut refusal);
    refusal
}

/// Connects to a gotalk server over plain TCP.
///
/// # Errors
/// [`Error::Connect`] when the connection cannot be made, [`Error::Refused`] when the
/// server's `on_connect` hook turned this client away, [`Error::Closed`] when the handshake
/// fails.
pub async fn connect(
    addr: impl ToSocketAddrs,
    handlers: Arc<Handlers>,
    config: Config,
) -> Result<Sock, Error> {
    let stream = TcpStream::connect(addr).await.map_err(|e| Error::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let info = ConnInfo::new(TransportKind::Tcp, stream.peer_addr().ok(), stream.local_addr().ok());
    let (r, w) = transport::tcp(stream);
    Sock::start(r, w, handlers, Arc::new(config), info).await
}

/// Connects to a gotalk server over TLS, checking its certificate against `server_name`.
///
/// # Errors
/// As [`connect`], and [`Error::Connect`] for a TLS failure or an invalid server name.
pub async fn connect_tls(
    addr: impl ToSocketAddrs,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    handlers: Arc<Handlers>,
    config: Config,
) -> Result<Sock, Error> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| Error::Connect(format!("invalid server name {server_name:?}: {e}")))?;
    let stream = TcpStream::connect(addr).await.map_err(|e| Error::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let info = ConnInfo::new(TransportKind::Tls, stream.peer_addr().ok(), stream.local_addr().ok());
    let handshake = TlsConnector::from(tls).connect(name, stream);
    let tls_stream = tokio::time::timeout(config.liveness.handshake_timeout, handshake)
        .await
        .map_err(|_| Error::Connect("tls handshake timed out".into()))?
        .map_err(|e| Error::Connect(format!("tls handshake: {e}")))?;
    let (r, w) = transport::io(tls_stream);
    Sock::start(r, w, handlers, Arc::new(config), info).await
}
