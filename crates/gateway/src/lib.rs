//! The WebSocket gateway: gotalk for browsers, as an axum router any app can mount.
//!
//! Mounted at a path (conventionally `/gotalk`), the router serves the browser client bundle
//! (`gotalk.js` and the files next to it) and turns a request for any other path under the
//! mount into a WebSocket, which becomes a [`Sock`] on the same [`Handlers`] the TCP listener
//! uses. gotalk.js connects to the folder its script came from, so `/gotalk/gotalk.js` talks
//! to `ws://host/gotalk/`.
//!
//! ```rust,no_run
//! use std::sync::Arc;
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     // One registry of operations for browsers and programs alike.
//!     let mut handlers = gotalk::Handlers::new();
//!     handlers.handle("greet", |_sock, name: String| async move {
//!         Ok::<_, String>(format!("Hello {name}"))
//!     });
//!     let handlers = Arc::new(handlers);
//!
//!     // Browsers: gotalk over WebSocket at /gotalk/, the client at /gotalk/gotalk.js.
//!     let gateway = gotalk_gateway::Gateway::new(handlers.clone(), gotalk::Config::default());
//!     let app = axum::Router::new()
//!         .nest_service("/gotalk", gateway.router())
//!         .route("/", axum::routing::get(|| async { axum::response::Html(PAGE) }));
//!
//!     // Programs: gotalk over TCP, on the same handlers.
//!     let tcp = gotalk::tcp::Server::new(handlers, gotalk::Config::default());
//!
//!     let http_listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
//!     let http = gotalk_gateway::http::Server::new(app);
//!     // Until ctrl-c; then both drain: requests in flight finish, WebSockets close with 1001.
//!     gateway.run(http, http_listener, Some((tcp, tcp_listener)), tokio::signal::ctrl_c()).await
//! }
//!
//! const PAGE: &str = r#"<!DOCTYPE html>
//! <script src="/gotalk/gotalk.js"></script>
//! <script>
//!   gotalk.connection().request('greet', 'you').then((greeting) => document.body.append(greeting));
//! </script>"#;
//! ```
//!
//! Every request under the mount must first name a host the gateway answers to (see
//! [`Gateway::allow_host`]). Before a socket is opened the request must then pass, in order:
//! the origin policy (see [`Gateway::allow_origin`]), the [`on_connect`](Gateway::on_connect)
//! hook and the connection limit. Handlers see the upgrade request in [`ConnInfo::request`].
//!
//! [`Metrics`] answers Prometheus scrapes with the gateway's connections, requests by op,
//! memory budget, relay and bus figures, at a route the app mounts.
//!
//! The guides: [serving browsers](docs::gateway) (origins, hosts, metrics, RetryResult,
//! framing, shutting down) and [the browser client](docs::browser) (gotalk.js, its npm package, the
//! bundle). This example is the repository README's; `examples/axum-app` is a complete app.

#![forbid(unsafe_code)]

mod assets;
mod compress;
pub mod docs;
mod host;
pub mod http;
mod metrics;
mod origin;
mod upgrade;

pub use assets::Assets;
pub use metrics::{Metrics, UNKNOWN_OP};

/// The example in `docs/builders.md`, compiled as a doc test (it needs both crates).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/builders.md")]
struct BuildersDoc;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use ::http::StatusCode;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use gotalk::listen::{ListenerLimits, Places, Refused};
use gotalk::ws;
use gotalk::CloseReason;
use gotalk::Config;
use gotalk::Connections;
use gotalk::Handlers;
use gotalk::{ConnInfo, Sock, TransportKind, UpgradeRequest};

/// A refusal of a WebSocket connection by the [`on_connect`](Gateway::on_connect) hook.
///
/// A browser cannot read the status or body of a refused upgrade (the page sees only a
/// failed socket, and would retry it forever), so the gateway accepts the upgrade and closes
/// the socket at once with close code 4000 + the status (4401 for
/// [`unauthorized`](Self::unauthorized), 4403 for [`forbidden`](Self::forbidden)) and the
/// message as the close reason (cut to 123 bytes): the page gets them in its `refused` and
/// `close` events, and our Rust client fails with [`gotalk::Error::Refused`]. As an HTTP
/// response (from [`check_host`](Gateway::check_host), or an app's own use) it is this
/// status and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    /// A refusal with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }

    /// 401: the client has not said who it is.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 403: the client may not connect.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The WebSocket close code it is sent with: 4000 + the status.
    pub fn close_code(&self) -> u16 {
        self.to_close().code()
    }

    fn to_close(&self) -> gotalk::Refusal {
        gotalk::Refusal::from_status(self.status.as_u16(), self.message.clone())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type ConnectHook =
    Arc<dyn Fn(UpgradeRequest) -> BoxFuture<Result<UpgradeRequest, Refusal>> + Send + Sync>;

/// Serves gotalk over WebSocket, and the browser client, to an axum app.
///
/// Cheap to clone: clones share the connections and the shutdown state.
#[derive(Clone)]
pub struct Gateway {
    handlers: Arc<Handlers>,
    /// For clients that declared they understand RetryResult, and for those that did not.
    config_retry: Arc<Config>,
    config_hold: Arc<Config>,
    assume_retry: bool,
    origins: origin::OriginPolicy,
    hosts: host::HostPolicy,
    served_over_tls: Option<bool>,
    on_connect: Option<ConnectHook>,
    assets: Assets,
    limits: ListenerLimits,
    places: Places,
    connections: Connections,
    stopping: CancellationToken,
    /// Sockets in their gotalk handshake, not yet among the connections.
    handshakes: TaskTracker,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("origins", &self.origins)
            .field("hosts", &self.hosts)
            .field("limits", &self.limits)
            .field("connections", &self.connections.len())
            .field("assets", &self.assets.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for `handlers`, with `config` for every connection. Pass the same `handlers`
    /// to the TCP [`Server`](gotalk::tcp::Server) to serve both transports from one registry.
    pub fn new(handlers: Arc<Handlers>, config: Config) -> Self {
        let config = config.hello_first(false);
        let retry = config.clone().peer_understands_retry(true);
        let hold = config.peer_understands_retry(false);
        let limits = ListenerLimits::default();
        Gateway {
            handlers,
            config_retry: Arc::new(retry),
            config_hold: Arc::new(hold),
            assume_retry: false,
            origins: origin::OriginPolicy::default(),
            hosts: host::HostPolicy::default(),
            served_over_tls: None,
            on_connect: None,
            assets: Assets::bundle(),
            limits,
            places: limits.places(),
            connections: Connections::default(),
            stopping: CancellationToken::new(),
            handshakes: TaskTracker::new(),
        }
    }

    /// Also allows pages from `origin` to connect: `scheme://host[:port]`, `null` (pages with
    /// an opaque origin, such as sandboxed frames) or `*` (any page at all, which lets any
    /// site use a visitor's cookies here; think twice). Pages from the gateway's own origin
    /// and clients that send no Origin are always allowed.
    ///
    /// # Panics
    /// If `origin` is none of those forms; check user input with [`valid_origin`].
    pub fn allow_origin(mut self, origin: &str) -> Self {
        assert!(self.origins.allow(origin), "not an origin: {origin:?}");
        self
    }

    /// Also answers requests whose Host names `host`: `example.com`, `*.example.com` (its
    /// subdomains, not itself), an IP address (IPv6 with or without brackets), or `*` (any
    /// host: the check is off). Any port matches; a trailing dot and case do not matter.
    ///
    /// This is the defence against DNS rebinding, where a site points its own name at
    /// 127.0.0.1 so that its pages reach a server on the visitor's machine as if it were
    /// theirs (the Origin and Host then agree, so the origin check passes). Default: a request
    /// that arrived at a loopback address must name a loopback host (`localhost`,
    /// `*.localhost`, 127.0.0.0/8 or `[::1]`) or an allowed one; a request that arrived at any
    /// other address may name any host until one is allowed, and then only allowed ones. The
    /// address is the server's side of the connection, [`http::LocalAddr`]
    /// (which [`http::Server`] provides), or else the peer's, from
    /// `ConnectInfo<SocketAddr>` (a loopback peer reached a loopback address); with neither
    /// the gateway cannot tell, and only allowed hosts count once one is. A request without a
    /// Host header (not a browser: browsers always send one) passes.
    ///
    /// A refused request gets 421 Misdirected Request, whose text names the host. The check
    /// covers every request under the mount, gotalk.js included: the files are public, but a
    /// refusal there is one a developer can read (a refused WebSocket reaches the page only as
    /// "failed"), and a rebinding page learns nothing from this server. Behind a proxy on the
    /// same machine, allow the public name the proxy passes on in `Host`. Guard an app's other
    /// routes with [`check_host`](Self::check_host).
    ///
    /// # Panics
    /// If `host` is none of those forms; check user input with [`valid_host`].
    pub fn allow_host(mut self, host: &str) -> Self {
        assert!(self.hosts.allow(host), "not a host name: {host:?}");
        self
    }

    /// Checks a request's Host as the gateway does (see [`allow_host`](Self::allow_host)), for
    /// an app's routes beside the gateway: an `Err` is the 421 to answer with.
    ///
    /// # Errors
    /// A [`Refusal`] (421 Misdirected Request) when the host is not one this gateway answers to.
    pub fn check_host<B>(&self, request: &::http::Request<B>) -> Result<(), Refusal> {
        let extensions = request.extensions();
        let arrived_at = extensions
            .get::<crate::http::LocalAddr>()
            .map(|l| l.0)
            .or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0));
        let on_loopback = arrived_at.is_some_and(|addr| host::is_loopback(addr.ip()));
        let authority = request.uri().authority().map(|a| a.as_str());
        let header = request.headers().get(::http::header::HOST);
        self.hosts.check(header, authority, on_loopback).map_err(|refused| {
            tracing::debug!(reason = %refused.0, "request refused: host");
            Refusal::new(StatusCode::MISDIRECTED_REQUEST, refused.0)
        })
    }

    /// Says whether pages reach the gateway over TLS, for the same-origin check, when the
    /// server cannot tell: behind a proxy that terminates TLS, or on an axum server that does
    /// not set [`http::Secure`]. With neither, the check compares host
    /// and port only.
    pub fn served_over_tls(mut self, yes: bool) -> Self {
        self.served_over_tls = Some(yes);
        self
    }

    /// Checks an upgrade request before the socket opens, after the origin check. Return the
    /// request to accept it, adding to its extensions whatever handlers should see (the
    /// authenticated user, say); return a [`Refusal`] to turn it away: the socket is closed
    /// at once with 4000 + its status and its message, which the page can read (see
    /// [`Refusal`]).
    /// This runs before the connection exists; [`Handlers::on_connect`] runs after. A hook
    /// that takes longer than the config's handshake timeout is answered with 503.
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(UpgradeRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<UpgradeRequest, Refusal>> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |request| Box::pin(hook(request))));
        self
    }

    /// The files served next to the socket. Default: the embedded browser client,
    /// [`Assets::bundle`].
    pub fn assets(mut self, assets: Assets) -> Self {
        self.assets = assets;
        self
    }

    /// Treats every client as able to take RetryResult, even without the declaration.
    /// Default false: a client that has not declared it (the original gotalk.js cannot take
    /// one) has its requests over the limit held until a slot frees.
    pub fn assume_retry(mut self, yes: bool) -> Self {
        self.assume_retry = yes;
        self
    }

    /// How many WebSockets may be open, from one address and in all, and how long
    /// [`shutdown`](Self::shutdown) waits for requests in flight. Default
    /// [`ListenerLimits::default`]. Past the limit, or refused a reserved place, an upgrade
    /// gets 503 with `Retry-After`; past its address's limit, 429 with `Retry-After`. The
    /// address is the TCP peer's, from axum's `ConnectInfo<SocketAddr>` (which
    /// [`http::Server`] provides); without it there is no per-address
    /// count nor reserve. Set it before taking the [`router`](Self::router): the count
    /// starts afresh here.
    pub fn limits(mut self, limits: ListenerLimits) -> Self {
        self.limits = limits;
        self.places = limits.places();
        self
    }

    /// The open WebSocket connections, to count them or reach every browser.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// The router to mount: `Router::new().nest_service("/gotalk", gateway.router())`.
    pub fn router(&self) -> Router {
        let gateway = Arc::new(self.clone());
        Router::new().fallback(serve).with_state(gateway)
    }

    /// Stops taking new sockets, lets requests in flight finish (up to the shutdown timeout),
    /// then closes every socket with 1001, "going away"; sockets still in their gotalk
    /// handshake get 1001 at once. Returns within the shutdown timeout: what a peer that
    /// does not read has not taken by then is dropped.
    pub async fn shutdown(&self) {
        let deadline = tokio::time::Instant::now() + self.places.shutdown_timeout;
        self.stopping.cancel();
        self.handshakes.close();
        let _ = tokio::time::timeout_at(deadline, self.handshakes.wait()).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.connections.drain(left).await;
    }

    /// A future that completes when `signal` does, after marking the gateway as stopping so
    /// it refuses new sockets at once. For the shutdown argument of an HTTP server, before
    /// [`shutdown`](Self::shutdown).
    pub fn shutdown_signal(&self, signal: impl Future) -> impl Future<Output = ()> {
        let stopping = self.stopping.clone();
        async move {
            signal.await;
            stopping.cancel();
        }
    }

    /// Runs `http` (an app that mounts this gateway) on `listener`, and the TCP server on its
    /// own listener if given, until `shutdown` completes. Then all of them stop accepting and
    /// drain together: HTTP requests, WebSockets (closed with 1001) and TCP connections.
    ///
    /// # Errors
    /// As [`http::Server::run`] and
    /// [`tcp::Server::run`](gotalk::tcp::Server::run).
    pub async fn run(
        &self,
        http: crate::http::Server,
        listener: TcpListener,
        tcp: Option<(gotalk::tcp::Server, TcpListener)>,
        shutdown: impl Future,
    ) -> io::Result<()> {
        let stop = CancellationToken::new();
        let tcp = async {
            match tcp {
                Some((server, listener)) => server.run(listener, stop.cancelled()).await,
                None => Ok(()),
            }
        };
        let ((), http, tcp, ()) = tokio::join!(
            async {
                shutdown.await;
                stop.cancel();
            },
            http.run(listener, self.shutdown_signal(stop.cancelled())),
            tcp,
            async {
                stop.cancelled().await;
                self.shutdown().await;
            },
        );
        http.and(tcp)
    }

    async fn upgrade(&self, request: Request) -> Response {
        if self.stopping.is_cancelled() {
            return refuse_busy("server shutting down");
        }
        let (mut parts, _body) = request.into_parts();
        let upgrade = match upgrade::check(&mut parts) {
            Ok(upgrade) => upgrade,
            Err(refused) => return refused.into_response(),
        };
        let secure = self
            .served_over_tls
            .or_else(|| parts.extensions.get::<crate::http::Secure>().map(|s| s.0))
            .or_else(|| parts.uri.scheme_str().map(|s| s == "https"));
        let authority = parts.uri.authority().map(|a| a.as_str());
        if let Err(refused) = self.origins.check(&parts.headers, authority, secure) {
            tracing::debug!(reason = %refused.0, "websocket refused");
            return Refusal::forbidden(refused.0).into_response();
        }
        let remote = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let local = parts.extensions.get::<crate::http::LocalAddr>().map(|l| l.0);
        // Handlers see the path as requested, mount point included.
        let uri = parts.extensions.get::<OriginalUri>().map_or(parts.uri, |o| o.0.clone());
        // Copied out of the buffer the server parsed the request in (see `UpgradeRequest`),
        // which would otherwise stay allocated for as long as the socket is open. So is the
        // original URI that routing left in the extensions.
        let mut request = UpgradeRequest::new(uri, parts.headers);
        if let Some(original) = parts.extensions.get_mut::<OriginalUri>() {
            original.0 = request.uri.clone();
        }
        request.extensions = parts.extensions;
        if let Some(hook) = &self.on_connect {
            // A panicking hook costs this request a 500, not the HTTP connection's task; a hook
            // that hangs gets the handshake's deadline.
            let checked = AssertUnwindSafe(async { hook(request).await }).catch_unwind();
            let deadline = self.config_hold.liveness_config().handshake_timeout;
            request = match tokio::time::timeout(deadline, checked).await {
                Ok(Ok(Ok(request))) => request,
                Ok(Ok(Err(refusal))) => {
                    tracing::debug!(status = %refusal.status, "websocket refused by on_connect");
                    return self.refuse_open(upgrade, &refusal);
                }
                Ok(Err(_)) => {
                    tracing::error!("on_connect panicked");
                    let status = StatusCode::INTERNAL_SERVER_ERROR;
                    return Refusal::new(status, "on_connect failed").into_response();
                }
                Err(_) => {
                    tracing::warn!(?deadline, "on_connect timed out");
                    return refuse_busy("on_connect timed out");
                }
            };
            if self.stopping.is_cancelled() {
                return refuse_busy("server shutting down");
            }
        }
        // Taken after the hook, so a slow hook does not hold a socket's place (the HTTP
        // server's connection limit bounds how many hooks run at once).
        let Ok(permit) = self.places.total.clone().try_acquire_owned() else {
            return refuse_busy("too many connections");
        };
        if self.config_retry.budget().nearly_spent() {
            tracing::warn!("websocket refused: the memory budget is nearly spent");
            return refuse_busy("the server's memory budget is nearly spent");
        }
        let addr_permit = match remote {
            Some(remote) => match self.places.per_addr.try_acquire(remote.ip()) {
                Ok(place) => Some(place),
                Err(Refused::AddressFull) => {
                    tracing::debug!(peer = %remote, "websocket refused: too many from its address");
                    return refuse_with(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections from this address",
                    );
                }
                Err(Refused::Crowded) => {
                    tracing::debug!(peer = %remote, "websocket refused a reserved place");
                    return refuse_busy("too many connections");
                }
            },
            None => None,
        };
        // Our clients declare themselves in the URL: they take RetryResults, and read
        // messages as one byte stream, so each frame can go as one message.
        let ours = ws::declares_retry(request.uri.query());
        let config = if self.assume_retry || ours {
            self.config_retry.clone()
        } else {
            self.config_hold.clone()
        };
        let chain = request.extensions.get::<crate::http::PeerCertificates>().map(|c| c.0.clone());
        let mut info =
            ConnInfo::new(TransportKind::WebSocket, remote, local).with_request(request.into());
        info.peer_certificates = chain;
        let gateway = self.clone();
        let handshake = self.handshakes.token();
        let response = upgrade.accept();
        tokio::spawn(async move {
            let upgraded = match upgrade.on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let (reader, writer) = upgrade::websocket(upgraded, &config);
            let writer = writer.whole_frames(ours);
            let handlers = gateway.handlers.clone();
            let stop = gateway.stopping.cancelled();
            match Sock::start_until(reader, writer, handlers, config, info, stop).await {
                Ok(sock) => {
                    sock.attach((permit, addr_permit));
                    gateway.connections.insert(&sock);
                    // Shutdown began as the handshake ended: the drain may have missed it.
                    if gateway.stopping.is_cancelled() {
                        sock.close_with(CloseReason::Shutdown, None);
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = ?remote, error = %e, "gotalk handshake failed")
                }
            }
            drop(handshake);
        });
        response
    }
}

impl Gateway {
    /// Accepts the upgrade only to close the socket with the refusal's code and reason,
    /// which a browser can read where it cannot read an HTTP refusal. The close waits for
    /// the peer's Close a short while, as any close does, so the reason is not lost to a
    /// reset.
    fn refuse_open(&self, upgrade: upgrade::Upgrade, refusal: &Refusal) -> Response {
        let response = upgrade.accept();
        let reason = refusal.to_close().close_reason();
        let config = self.config_hold.clone();
        let handshake = self.handshakes.token();
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.on_upgrade.await {
                let (reader, mut writer) = upgrade::websocket(upgraded, &config);
                // The writer's close reads the peer's half, once the reader hands it back.
                drop(reader);
                let close = gotalk::transport::FrameWriter::shutdown(&mut writer, &reason);
                let _ = tokio::time::timeout(std::time::Duration::from_secs(3), close).await;
            }
            drop(handshake);
        });
        response
    }
}

fn refuse_busy(message: &'static str) -> Response {
    refuse_with(StatusCode::SERVICE_UNAVAILABLE, message)
}

/// A refusal worth retrying later: the status, the reason as text, and `Retry-After`. The
/// connection is closed after it (`Connection: close`): a client turned away for load
/// should not keep holding one of the HTTP listener's places on keep-alive.
fn refuse_with(status: StatusCode, message: &'static str) -> Response {
    use ::http::{header, HeaderValue};
    let mut response = (status, message).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// True when `origin` is a valid argument for [`Gateway::allow_origin`].
pub fn valid_origin(origin: &str) -> bool {
    origin::is_valid(origin)
}

/// True when `host` is a valid argument for [`Gateway::allow_host`].
pub fn valid_host(host: &str) -> bool {
    host::is_valid(host)
}

/// Every request under the mount: a bundle file if one has that path, else a WebSocket.
async fn serve(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    if let Err(refusal) = gateway.check_host(&request) {
        return refusal.into_response();
    }
    let path = request.uri().path().trim_start_matches('/');
    let asset =
        gateway.assets.respond(path, request.method(), request.headers(), request.uri().query());
    match asset {
        Some(response) => response,
        None => gateway.upgrade(request).await,
    }
}
