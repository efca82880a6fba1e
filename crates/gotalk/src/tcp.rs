//! The TCP transport: a listener that serves a [`Handlers`] registry, and a client.
//!
//! Both take an optional TLS configuration (rustls). A listener takes an already bound
//! [`TcpListener`], so tests bind port 0, and a shutdown future, so callers decide what stops
//! it (ctrl-c, SIGTERM, a test's oneshot).

use std::future::Future;
use std::io;
use std::sync::Arc;

use gotalk_protocol::{Frame, ProtocolErrorCode};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
pub use crate::connections::Connections;
use crate::error::{CloseReason, Error};
use crate::handlers::Handlers;
use crate::listen::ListenerLimits;
use crate::sock::{ConnInfo, Sock, TransportKind};
use crate::transport;

/// Serves gotalk over TCP, optionally with TLS.
#[derive(Clone)]
pub struct Server {
    handlers: Arc<Handlers>,
    config: Arc<Config>,
    tls: Option<TlsAcceptor>,
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
            limits: ListenerLimits::default(),
            connections: Connections::default(),
        }
    }

    /// Serves TLS with this rustls configuration. Default: plain TCP.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
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
                Sock::start(r, w, self.handlers.clone(), self.config.clone(), info).await
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(
                    self.config.liveness.handshake_timeout,
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let info = ConnInfo::new(TransportKind::Tls, remote, local);
                        let (r, w) = transport::io(tls);
                        Sock::start(r, w, self.handlers.clone(), self.config.clone(), info).await
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
/// [`Error::Connect`] when the connection cannot be made, [`Error::Closed`] when the
/// handshake fails.
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
