//! A client connection that comes back: [`KeepAlive`] redials a lost server with backoff and
//! holds the calls made meanwhile.
//!
//! A [`Sock`] is one connection; when the server restarts, it is gone and every call on it
//! fails. A `KeepAlive` owns a dial (TCP, TLS, WebSocket, or any closure returning a `Sock`)
//! and keeps a connection open through it, reconnecting on the browser client's schedule
//! ([`gotalk_protocol::keepalive`]: exponential backoff with jitter, a short spread after the
//! server said it is going away), so a crowd of Rust clients spreads out over a restart just
//! as a crowd of pages does.
//!
//! What a call sees:
//! - **Connected**: it goes out on the current connection at once.
//! - **Disconnected, or the server said `$done`** (it is draining): it waits for the next
//!   connection, at most [`Builder::wait_timeout`] ([`Error::NoConnection`] after it), and at
//!   most [`Builder::max_waiting`] calls wait at once ([`Error::TooManyWaiting`] for the one
//!   past). A call that failed this way was never sent. Waiting calls are not ordered among
//!   themselves.
//! - **In flight when its connection dies**: it fails with [`Error::Closed`] and the close
//!   reason. It is not sent again, because requests are not known to be idempotent: the
//!   server may or may not have acted on it, and only the caller can decide to retry.
//! - **Refused** (the server's `on_connect` hook turned this client away, [`Error::Refused`]
//!   with 4401 or 4403): nothing redials, since retrying will not help until what the reason
//!   names changes (a login); waiting and later calls fail with the refusal at once, until
//!   [`KeepAlive::resume`] (after that change) dials again. As the browser client does.
//! - **After [`KeepAlive::close`]**: nothing reconnects; waiting and in-flight calls, and
//!   every later one, fail with [`Error::Closed`] ([`CloseReason::Local`]).
//!
//! Notifications are fire and forget: `Ok` means one was queued on an open connection.
//!
//! # Examples
//! ```no_run
//! # async fn demo() -> Result<(), gotalk::Error> {
//! use std::sync::Arc;
//! use gotalk::keepalive::{Builder, Event};
//!
//! let handlers = Arc::new(gotalk::Handlers::new());
//! let client = Builder::tcp("127.0.0.1:1235", handlers, gotalk::Config::default())
//!     .on_event(|event| match event {
//!         Event::Disconnected { reason, retry_in } => {
//!             eprintln!("disconnected ({reason}); next attempt in {retry_in:?}")
//!         }
//!         other => eprintln!("{other:?}"),
//!     })
//!     .start();
//! let greeting: String = client.request("greet", "you").await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gotalk_protocol::backoff::{Backoff, InvalidBackoff};
use gotalk_protocol::keepalive::{Closed, KeepAlive as Schedule, Next};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{CloseReason, Error};
use crate::sock::{Sock, StreamRequest, StreamResponse};
use crate::{Config, Handlers};

/// The default bound on calls waiting for a connection: 100, as the browser client's
/// `sendLimit`.
pub const DEFAULT_MAX_WAITING: usize = 100;

/// The default time a call waits for a connection: 30 s, several steps of the default
/// backoff (which tops out at 5 s), so a server back within half a minute loses no call.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

type DialFuture = Pin<Box<dyn Future<Output = Result<Sock, Error>> + Send>>;
type Dial = Arc<dyn Fn() -> DialFuture + Send + Sync>;
type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// What happened to a [`KeepAlive`]'s connection, for logs, metrics and tests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An attempt to connect started.
    Connecting,
    /// A connection opened; `number` counts them from 1, so above 1 it is a reconnect.
    Connected {
        /// Connections opened so far, this one included.
        number: u64,
    },
    /// The server said `$done` (it is shutting down): new calls wait for the next connection.
    ServerDone,
    /// The connection was lost, or an attempt failed; the next attempt is in `retry_in`.
    Disconnected {
        /// Why: [`Error::Closed`] with the close reason for a lost connection, the dial's
        /// error (usually [`Error::Connect`]) for a failed attempt.
        reason: Error,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// The server refused this client ([`Error::Refused`]): no more attempts until
    /// [`KeepAlive::resume`].
    Refused {
        /// The refusal, with the server's code and reason.
        reason: Error,
    },
    /// [`KeepAlive::close`] was called, or every handle was dropped: no more attempts.
    Closed,
}

/// Settings for a [`KeepAlive`]; [`start`](Builder::start) connects.
pub struct Builder {
    dial: Dial,
    backoff: Backoff,
    max_waiting: usize,
    wait_timeout: Duration,
    on_event: Option<Observer>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("backoff", &self.backoff)
            .field("max_waiting", &self.max_waiting)
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A keepalive over any dial: `dial` is called for every attempt and returns a new
    /// connection. Bound it in time yourself (the constructors below use the config's
    /// handshake timeout for the whole dial).
    pub fn new<F, Fut>(dial: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Sock, Error>> + Send + 'static,
    {
        Builder {
            dial: Arc::new(move || Box::pin(dial()) as DialFuture),
            backoff: Backoff::default(),
            max_waiting: DEFAULT_MAX_WAITING,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            on_event: None,
        }
    }

    /// A keepalive over TCP ([`crate::tcp::connect`]); `handlers` answer the server's
    /// requests on every connection.
    pub fn tcp(addr: impl Into<String>, handlers: Arc<Handlers>, config: Config) -> Self {
        let addr = addr.into();
        Self::new(move || {
            let (addr, handlers, config) = (addr.clone(), handlers.clone(), config.clone());
            bounded(config.liveness.handshake_timeout, async move {
                crate::tcp::connect(addr.as_str(), handlers, config).await
            })
        })
    }

    /// A keepalive over TCP to a resolved address.
    pub fn tcp_addr(addr: SocketAddr, handlers: Arc<Handlers>, config: Config) -> Self {
        Self::tcp(addr.to_string(), handlers, config)
    }

    /// A keepalive over TLS ([`crate::tcp::connect_tls`]).
    pub fn tls(
        addr: impl Into<String>,
        server_name: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
        handlers: Arc<Handlers>,
        config: Config,
    ) -> Self {
        let (addr, name) = (addr.into(), server_name.into());
        Self::new(move || {
            let (addr, name, tls) = (addr.clone(), name.clone(), tls.clone());
            let (handlers, config) = (handlers.clone(), config.clone());
            bounded(config.liveness.handshake_timeout, async move {
                crate::tcp::connect_tls(addr.as_str(), &name, tls, handlers, config).await
            })
        })
    }

    /// A keepalive over WebSocket (`ws://…` or, with a TLS connector, `wss://…`), through
    /// `connector` ([`crate::ws::Connector`], which carries TLS settings and headers).
    pub fn ws(
        connector: crate::ws::Connector,
        url: impl Into<String>,
        handlers: Arc<Handlers>,
        config: Config,
    ) -> Self {
        let url = url.into();
        Self::new(move || {
            let (connector, url) = (connector.clone(), url.clone());
            let (handlers, config) = (handlers.clone(), config.clone());
            bounded(config.liveness.handshake_timeout, async move {
                connector.connect(&url, handlers, config).await
            })
        })
    }

    /// The reconnect schedule. Default: [`Backoff::default`], 500 ms doubling to 5 s, half
    /// of each step randomised, as the browser client.
    ///
    /// # Errors
    /// The first setting out of range ([`Backoff::validate`]).
    pub fn backoff(mut self, backoff: Backoff) -> Result<Self, InvalidBackoff> {
        backoff.validate()?;
        self.backoff = backoff;
        Ok(self)
    }

    /// How many calls may wait for a connection at once; the next fails with
    /// [`Error::TooManyWaiting`]. 0 makes every call made while disconnected fail at once.
    /// Default: [`DEFAULT_MAX_WAITING`] (100).
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n;
        self
    }

    /// How long a call waits for a connection before failing with [`Error::NoConnection`].
    /// It bounds the wait only; the call itself then takes what it takes on the connection
    /// (wrap it in `tokio::time::timeout` for a deadline). Default: [`DEFAULT_WAIT_TIMEOUT`]
    /// (30 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Called with every [`Event`], in order, on the keepalive's task: keep it quick.
    pub fn on_event(mut self, f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// Starts connecting, on a task of its own, and returns the handle at once.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> KeepAlive {
        let stop = CancellationToken::new();
        let (current, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            current,
            stop: stop.clone(),
            waiting: AtomicUsize::new(0),
            max_waiting: self.max_waiting,
            wait_timeout: self.wait_timeout,
            connections: AtomicU64::new(0),
            on_event: self.on_event,
            refused: Mutex::new(None),
            resume: Notify::new(),
        });
        tokio::spawn(run(inner.clone(), self.dial, self.backoff));
        KeepAlive { inner, _alive: Arc::new(stop.drop_guard()) }
    }
}

/// Bounds a dial by `limit`, so an unreachable host counts as a failed attempt.
fn bounded(
    limit: Duration,
    dial: impl Future<Output = Result<Sock, Error>> + Send + 'static,
) -> DialFuture {
    Box::pin(async move {
        tokio::time::timeout(limit, dial)
            .await
            .unwrap_or_else(|_| Err(Error::Connect(format!("timed out after {limit:?}"))))
    })
}

struct Inner {
    /// The open connection, `None` between connections.
    current: watch::Sender<Option<Sock>>,
    stop: CancellationToken,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait_timeout: Duration,
    connections: AtomicU64,
    on_event: Option<Observer>,
    /// The refusal the last attempt met, until [`KeepAlive::resume`].
    refused: Mutex<Option<Error>>,
    resume: Notify,
}

impl Inner {
    fn refusal(&self) -> Option<Error> {
        crate::lock(&self.refused).clone()
    }

    fn emit(&self, event: Event) {
        tracing::debug!(?event, "keepalive");
        if let Some(f) = &self.on_event {
            crate::handlers::call_hook("keepalive on_event", || f(&event));
        }
    }
}

/// A connection usable for a new call: open, and its server has not said `$done`.
fn usable(current: &Option<Sock>) -> Option<Sock> {
    current.as_ref().filter(|sock| !sock.is_closed() && !sock.peer_done()).cloned()
}

fn closed_locally() -> Error {
    Error::Closed(CloseReason::Local)
}

/// Gives a waiting slot back when its call stops waiting, however it stops.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client connection that reconnects by itself. Cheap to clone; every clone is the same
/// keepalive, and it stops (as [`close`](Self::close)) when the last clone is dropped.
#[derive(Clone)]
pub struct KeepAlive {
    inner: Arc<Inner>,
    _alive: Arc<DropGuard>,
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("connected", &self.is_connected())
            .field("connections", &self.connections())
            .field("closed", &self.inner.stop.is_cancelled())
            .finish()
    }
}

impl KeepAlive {
    /// True while a connection is open and its server has not said `$done`.
    pub fn is_connected(&self) -> bool {
        usable(&self.inner.current.borrow()).is_some()
    }

    /// How many connections have opened so far (reconnects are this minus one).
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::Acquire)
    }

    /// How many calls wait for a connection now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// The open connection, if any, for what the methods here do not cover (its
    /// [`ConnInfo`](crate::ConnInfo), a heartbeat). Calls made on it directly are not held.
    pub fn current(&self) -> Option<Sock> {
        self.inner.current.borrow().clone()
    }

    /// Stops reconnecting and closes the connection. Calls in flight and waiting calls fail
    /// with [`Error::Closed`] ([`CloseReason::Local`]), as does every later call.
    pub fn close(&self) {
        self.inner.stop.cancel();
        crate::lock(&self.inner.refused).take();
        if let Some(sock) = self.inner.current.send_replace(None) {
            sock.close();
        }
    }

    /// True while the server's refusal stands: nothing is dialled until
    /// [`resume`](Self::resume).
    pub fn is_refused(&self) -> bool {
        self.inner.refusal().is_some()
    }

    /// Dials again after a refusal ([`Event::Refused`]), once what its reason named has
    /// changed (the dial now carries a login, say); the backoff starts afresh. Does nothing
    /// unless refused.
    pub fn resume(&self) {
        if crate::lock(&self.inner.refused).take().is_some() {
            self.inner.resume.notify_one();
        }
    }

    /// The connection for a new call: the open one, or the next one within the wait limits.
    ///
    /// # Errors
    /// [`Error::TooManyWaiting`], [`Error::NoConnection`], [`Error::Refused`] while a
    /// refusal stands, or [`Error::Closed`] after [`close`](Self::close).
    pub async fn sock(&self) -> Result<Sock, Error> {
        let inner = &*self.inner;
        if inner.stop.is_cancelled() {
            return Err(closed_locally());
        }
        if let Some(sock) = usable(&inner.current.borrow()) {
            return Ok(sock);
        }
        if let Some(refused) = inner.refusal() {
            return Err(refused);
        }
        let before = inner.waiting.fetch_add(1, Ordering::AcqRel);
        let _slot = Slot(&inner.waiting);
        if before >= inner.max_waiting {
            return Err(Error::TooManyWaiting(inner.max_waiting));
        }
        let mut current = inner.current.subscribe();
        let wait = async {
            loop {
                if let Some(sock) = usable(&current.borrow_and_update()) {
                    return Ok(sock);
                }
                if let Some(refused) = inner.refusal() {
                    return Err(refused);
                }
                tokio::select! {
                    changed = current.changed() => {
                        if changed.is_err() {
                            return Err(closed_locally());
                        }
                    }
                    _ = inner.stop.cancelled() => return Err(closed_locally()),
                }
            }
        };
        tokio::time::timeout(inner.wait_timeout, wait)
            .await
            .unwrap_or(Err(Error::NoConnection(inner.wait_timeout)))
    }

    /// [`Sock::request`] on the current or next connection: a JSON value, a JSON result.
    ///
    /// # Errors
    /// As [`Sock::request`], and as [`sock`](Self::sock) while waiting for a connection.
    pub async fn request<P, R>(&self, op: &str, params: &P) -> Result<R, Error>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.sock().await?.request(op, params).await
    }

    /// [`Sock::buffer_request`] on the current or next connection: raw bytes both ways.
    ///
    /// # Errors
    /// As [`Sock::buffer_request`], and as [`sock`](Self::sock).
    pub async fn buffer_request(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        self.sock().await?.buffer_request(op, payload).await
    }

    /// [`Sock::notify`] on the current or next connection.
    ///
    /// # Errors
    /// As [`Sock::notify`], and as [`sock`](Self::sock).
    pub async fn notify<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        self.sock().await?.notify(name, value).await
    }

    /// [`Sock::buffer_notify`] on the current or next connection.
    ///
    /// # Errors
    /// As [`Sock::buffer_notify`], and as [`sock`](Self::sock).
    pub async fn buffer_notify(&self, name: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.sock().await?.buffer_notify(name, payload).await
    }

    /// [`Sock::stream_request`] on the current or next connection. The stream lives on that
    /// one connection: if it dies, both halves fail with [`Error::Closed`].
    ///
    /// # Errors
    /// As [`Sock::stream_request`], and as [`sock`](Self::sock).
    pub async fn stream_request(
        &self,
        op: &str,
        first: impl Into<Bytes>,
    ) -> Result<(StreamRequest, StreamResponse), Error> {
        self.sock().await?.stream_request(op, first).await
    }
}

/// The keepalive's task: dial, hold the connection until it ends, wait, dial again.
async fn run(inner: Arc<Inner>, dial: Dial, backoff: Backoff) {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_secs_f64() * 1000.0;
    let mut schedule = Schedule::new(backoff);
    let stop = inner.stop.clone();
    'attempts: loop {
        schedule.connecting();
        inner.emit(Event::Connecting);
        let dialed = tokio::select! {
            dialed = dial() => dialed,
            _ = stop.cancelled() => break,
        };
        let (how, reason) = match dialed {
            Ok(sock) => {
                schedule.opened(now_ms());
                let number = inner.connections.fetch_add(1, Ordering::AcqRel) + 1;
                inner.current.send_replace(Some(sock.clone()));
                inner.emit(Event::Connected { number });
                let mut told_done = false;
                let reason = loop {
                    tokio::select! {
                        reason = sock.closed() => break reason,
                        _ = sock.peer_done_notified(), if !told_done => {
                            told_done = true;
                            inner.emit(Event::ServerDone);
                        }
                        _ = stop.cancelled() => {
                            sock.close();
                            break 'attempts;
                        }
                    }
                };
                inner.current.send_replace(None);
                // A server that said `$done` is restarting or being replaced: come back
                // soon, spread over the going-away window, as the browser does after 1001.
                let how = if sock.peer_done() { Closed::GoingAway } else { Closed::Other };
                (how, Error::Closed(reason))
            }
            // 4401 and 4403: retrying will not help until what the reason names changes.
            // Other refusals (a 429 or 503, say) are retried on the schedule, as the browser
            // client does.
            Err(refused @ Error::Refused { code, .. })
                if gotalk_protocol::keepalive::refuses_client(code) =>
            {
                let resumed = inner.resume.notified();
                tokio::pin!(resumed);
                resumed.as_mut().enable();
                *crate::lock(&inner.refused) = Some(refused.clone());
                // Wakes the calls waiting for a connection, which fail with the refusal.
                inner.current.send_replace(None);
                inner.emit(Event::Refused { reason: refused });
                tokio::select! {
                    _ = resumed => {}
                    _ = stop.cancelled() => break,
                }
                schedule = Schedule::new(backoff);
                continue;
            }
            Err(error) => (Closed::Other, error),
        };
        let Next::ConnectAt(at) = schedule.closed(how, now_ms(), true, rand::random::<f64>())
        else {
            break;
        };
        let retry_in = Duration::from_secs_f64((at - now_ms()).max(0.0) / 1000.0);
        inner.emit(Event::Disconnected { reason, retry_in });
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = stop.cancelled() => break,
        }
    }
    schedule.end();
    if let Some(sock) = inner.current.send_replace(None) {
        sock.close();
    }
    inner.emit(Event::Closed);
}
