//! Serving an axum app (the gateway and anything beside it) over HTTP/1.1, optionally with
//! TLS, with WebSocket upgrades and a graceful shutdown.
//!
//! `axum::serve` does all but TLS; this server adds it, and the same connection limit,
//! accept back-off and slow-client timeouts as the TCP listener. It hands every request the
//! peer's address as axum's `ConnectInfo<SocketAddr>`, which the gateway passes on to
//! handlers.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use gotalk::listen::{ListenerLimits, Refused};

/// Where a connection came from: the peer, the address it came in on, whether over TLS, and
/// the certificate chain the TLS client presented.
type Accepted = (
    SocketAddr,
    Option<SocketAddr>,
    bool,
    Option<Arc<[rustls::pki_types::CertificateDer<'static>]>>,
);

/// The address a request came in on, in each request's extensions (as axum's
/// `ConnectInfo<SocketAddr>` holds the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The certificate chain a TLS client presented (verified by the server's configuration, see
/// `gotalk::tls::server_config_verifying_clients`), leaf first, in the extensions of each of
/// its requests. The gateway hands it to its sockets' `ConnInfo::peer_certificates`.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<[rustls::pki_types::CertificateDer<'static>]>);

/// Whether a request came over TLS, in each request's extensions. The gateway's same-origin
/// check uses it: a page from `http://host` is not the origin of `https://host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure(pub bool);

/// Serves an axum app over HTTP/1.1 (and HTTPS with [`tls`](Self::tls)).
#[derive(Clone)]
pub struct Server {
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: ListenerLimits,
    header_timeout: Duration,
    max_header_bytes: usize,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("header_timeout", &self.header_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `app`.
    pub fn new(app: Router) -> Self {
        Server {
            app,
            tls: None,
            limits: ListenerLimits::default(),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
        }
    }

    /// Serves HTTPS (and so `wss://`) with this rustls configuration. Default: plain HTTP.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        let mut config = (*config).clone();
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        self.tls = Some(TlsAcceptor::from(Arc::new(config)));
        self
    }

    /// How many HTTP connections may be open, from one address and in all, and how long
    /// shutdown waits for requests in flight. Default [`ListenerLimits::default`].
    /// Connections upgraded to WebSockets are not counted here (the gateway counts those,
    /// under its own limits). A plain HTTP client past its address's limit is answered 429
    /// with `Retry-After`, one refused a reserved place 503 with `Retry-After`, both closed
    /// without their request being read; over TLS the connection is closed before the TLS
    /// handshake. At the shutdown deadline, connections still open are dropped.
    pub fn limits(mut self, limits: ListenerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a client may take to send a request's headers, and the TLS handshake.
    /// Default 10 s; a client that trickles headers is disconnected then.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// The most bytes buffered for a request's line and headers. Default 32 KiB (browsers'
    /// cookies fit); a request whose headers do not fit gets 431. hyper checks the size
    /// between reads, so one read's worth more (a few KiB) can get through. A WebSocket keeps
    /// its upgrade request's headers for handlers to read, so this also bounds what each
    /// socket holds. At least 8 KiB.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes.max(8 * 1024);
        self
    }

    /// Accepts connections until `shutdown` completes, then stops accepting, lets requests in
    /// flight finish (up to the shutdown timeout), drops the connections still open, and
    /// returns. WebSockets already upgraded are not waited for: end them with
    /// [`Gateway::shutdown`](crate::Gateway::shutdown).
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried with a growing pause.
    pub async fn run(self, listener: TcpListener, shutdown: impl Future) -> io::Result<()> {
        let places = self.limits.places();
        let per_addr = places.per_addr;
        let refuser = gotalk::listen::Refuser::new();
        let stopping = CancellationToken::new();
        // Cancelled at the deadline: connections still open are dropped.
        let dropping = CancellationToken::new();
        let tasks = TaskTracker::new();
        tokio::pin!(shutdown);
        gotalk::listen::accept_loop(&listener, places.total, shutdown, |stream, peer, permit| {
            let addr_permit = match per_addr.try_acquire(peer.ip()) {
                Ok(addr_permit) => addr_permit,
                Err(refused) => {
                    tracing::debug!(%peer, ?refused, "http refused: too many connections");
                    let plain = self.tls.is_none();
                    let answer = match refused {
                        Refused::AddressFull => TOO_MANY,
                        Refused::Crowded => BUSY,
                    };
                    let (dropping, refuser) = (dropping.clone(), refuser.clone());
                    tasks.spawn(async move {
                        if plain {
                            tokio::select! {
                                () = refuser.refuse(stream, answer, permit) => {}
                                () = dropping.cancelled() => {}
                            }
                        }
                    });
                    return;
                }
            };
            let server = self.clone();
            let (stopping, dropping) = (stopping.clone(), dropping.clone());
            tasks.spawn(async move {
                let local = stream.local_addr().ok();
                let serve = async {
                    match &server.tls {
                        None => {
                            let from = (peer, local, false, None);
                            server.connection(stream, from, stopping).await
                        }
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            match tokio::time::timeout(server.header_timeout, handshake).await {
                                Ok(Ok(tls)) => {
                                    let chain = tls.get_ref().1.peer_certificates();
                                    let chain = chain.filter(|c| !c.is_empty()).map(Arc::from);
                                    let from = (peer, local, true, chain);
                                    server.connection(tls, from, stopping).await
                                }
                                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake"),
                                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                            }
                        }
                    }
                };
                tokio::select! {
                    () = serve => {}
                    () = dropping.cancelled() => {}
                }
                drop((permit, addr_permit));
            });
        })
        .await;
        drop(listener);
        stopping.cancel();
        tasks.close();
        if tokio::time::timeout(places.shutdown_timeout, tasks.wait()).await.is_err() {
            tracing::info!(open = tasks.len(), "dropping http connections open past the deadline");
            dropping.cancel();
            tasks.wait().await;
        }
        Ok(())
    }

    async fn connection<S>(
        &self,
        stream: S,
        (peer, local, secure, chain): Accepted,
        stopping: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(Secure(secure));
            if let Some(chain) = &chain {
                request.extensions_mut().insert(PeerCertificates(chain.clone()));
            }
            if let Some(local) = local {
                request.extensions_mut().insert(LocalAddr(local));
            }
            let mut app = app.clone();
            async move { Ok::<_, Infallible>(app.call(request).await.unwrap_or_else(|e| match e {})) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(self.max_header_bytes);
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            _ = stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "http connection");
        }
    }
}

/// What a plain HTTP client over its address's limit is told, before its request is read.
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 5\r\n\
    content-type: text/plain; charset=utf-8\r\ncontent-length: 38\r\n\
    connection: close\r\n\r\ntoo many connections from this address";

/// What a plain HTTP client refused a reserved place is told, before its request is read.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\n\
    content-type: text/plain; charset=utf-8\r\ncontent-length: 20\r\n\
    connection: close\r\n\r\ntoo many connections";

/// Serves `app` on `listener` until `shutdown` completes: [`Server`] with its defaults, and
/// TLS when `tls` is given.
///
/// # Errors
/// As [`Server::run`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future,
) -> io::Result<()> {
    let mut server = Server::new(app);
    if let Some(tls) = tls {
        server = server.tls(tls);
    }
    server.run(listener, shutdown).await
}
