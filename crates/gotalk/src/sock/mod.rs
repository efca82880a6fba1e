//! The [`Sock`]: one gotalk connection, symmetric, over any transport.
//!
//! Each connection runs one task driving two loops: a read loop that decodes frames and
//! dispatches them, and a write loop that batches outgoing frames into one flush. A handler
//! is polled once on the read loop and, if it must wait, goes on in a task of its own, so the
//! read loop never waits on one. Notifications from one peer run in order on a second task,
//! started on the first notification.
//!
//! Layout: `read` (the read loop and dispatch of results), `write` (the write loop and
//! heartbeats), `call` (requests this side sends), `serve` (requests the peer sends),
//! `half_close` (answering a peer that stopped sending), `linger` (letting the peer read why
//! it was cut), `live` (liveness and the reserved messages), `state` (values kept with the
//! connection).

mod call;
mod half_close;
mod linger;
mod live;
mod read;
mod request;
mod serve;
mod signal;
mod state;
mod write;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use gotalk_protocol::{decode_version, Frame, ProtocolErrorCode, VERSION};
use tokio::sync::{Notify, OwnedSemaphorePermit};

pub(crate) use call::from_json;
pub use call::{StreamRequest, StreamResponse, WithTimeout};
pub use serve::{StreamInput, StreamOutput};

use crate::config::Config;
use crate::error::{CloseReason, Error};
use crate::handlers::Handlers;
use crate::lock;
use crate::memory::{Charge, ConnBudget};
use crate::queue::{ByteBudget, OutQueue};
use crate::transport::{FrameReader, FrameWriter, ReadEvent};
pub use request::UpgradeRequest;

/// Which transport a connection runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// TCP with TLS.
    Tls,
    /// WebSocket (plain or secure).
    WebSocket,
    /// An in-process pipe.
    Memory,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::WebSocket => "websocket",
            TransportKind::Memory => "memory",
        })
    }
}

/// What a handler may know about the connection, whatever the transport.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnInfo {
    /// A number unique to this connection within the process.
    pub id: u64,
    /// The transport.
    pub transport: TransportKind,
    /// The peer's address, when the transport has one.
    pub remote_addr: Option<SocketAddr>,
    /// This side's address, when the transport has one.
    pub local_addr: Option<SocketAddr>,
    /// The HTTP request that opened a WebSocket connection: its URI, headers (cookies,
    /// authorization, user agent) and whatever the gateway's `on_connect` hook or an axum
    /// middleware stored in its extensions. `None` for other transports.
    pub request: Option<Arc<UpgradeRequest>>,
    /// The certificate chain a TLS peer presented and the listener verified (see
    /// [`tls::server_config_verifying_clients`](crate::tls::server_config_verifying_clients)),
    /// its own certificate first. `None` without TLS or without a client certificate.
    pub peer_certificates: Option<Arc<[rustls::pki_types::CertificateDer<'static>]>>,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl ConnInfo {
    /// Info for a new connection over `transport`.
    pub fn new(
        transport: TransportKind,
        remote_addr: Option<SocketAddr>,
        local_addr: Option<SocketAddr>,
    ) -> Self {
        ConnInfo {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            transport,
            remote_addr,
            local_addr,
            request: None,
            peer_certificates: None,
        }
    }

    /// The same info, with the certificate chain the TLS peer presented.
    pub fn with_peer_certificates(
        mut self,
        chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> Self {
        self.peer_certificates = chain.filter(|c| !c.is_empty()).map(Arc::from);
        self
    }

    /// The same info, with the HTTP request that opened the connection.
    pub fn with_request(mut self, request: Arc<UpgradeRequest>) -> Self {
        self.request = Some(request);
        self
    }
}

/// A heartbeat received from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The peer's load: 0 idle, 0xffff dying.
    pub load: u16,
    /// The peer's clock, unix seconds.
    pub time: u32,
}

impl Heartbeat {
    /// One word, so the connection keeps its last heartbeat without a lock: a bit for
    /// "received", the load and the time.
    fn pack(self) -> u64 {
        1 << 48 | u64::from(self.load) << 32 | u64::from(self.time)
    }

    fn unpack(word: u64) -> Option<Heartbeat> {
        // Each cast keeps the part's own bits: the load's 16 above the time's 32.
        (word >> 48 == 1).then_some(Heartbeat { load: (word >> 32) as u16, time: word as u32 })
    }
}

/// One gotalk connection. Cheap to clone: every clone is the same connection.
///
/// Either side can send requests, streaming requests and notifications, and either side's
/// handlers answer the other's. Dropping every clone does not close the connection while its
/// tasks run; call [`close`](Sock::close) or [`end`](Sock::end).
#[derive(Clone)]
pub struct Sock {
    shared: Arc<Shared>,
}

impl fmt::Debug for Sock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sock")
            .field("info", &self.shared.info)
            .field("closed", &self.shared.reason.get().map(|r| &**r))
            .finish()
    }
}

/// A message for the write loop, with what it holds of the send queue's budget and of the
/// memory budgets (an answer keeps its request's charge until it is written).
enum Outbound {
    Frame(Frame, Option<OwnedSemaphorePermit>, Option<Charge>),
    /// Write everything before this, then the protocol error if any, then shut down.
    Close(Option<ProtocolErrorCode>),
}

pub(crate) struct Shared {
    info: ConnInfo,
    config: Arc<Config>,
    handlers: Arc<Handlers>,
    out: OutQueue<Outbound>,
    send_budget: ByteBudget,
    /// What this connection holds on its peer's behalf, within the process budget.
    budget: Arc<ConnBudget>,
    calls: Mutex<call::Calls>,
    inbound: Mutex<serve::Inbound>,
    /// Signalled when the calls or the inbound table empties, for [`Sock::end`].
    idle: Notify,
    next_id: AtomicU32,
    /// Results that arrived for calls no longer waiting (see [`Sock::late_results`]).
    late_results: AtomicU64,
    /// Fired when closing starts (the read loop stops and handlers are dropped), when the
    /// write loop has shut the transport down, to stop writing now (a shutdown past its
    /// deadline must not wait out a peer that does not read), and when the peer says
    /// `$done`. See [`Shared::cancel`] and the others.
    signals: signal::Signals,
    /// True once the peer is known to understand the reserved `$` messages (see
    /// [`Sock::peer_understands_reserved`]); until then none is sent to it.
    peer_understands_reserved: AtomicBool,
    /// True once this side has said its hello: with its version, or in reply to the peer's.
    hello_said: AtomicBool,
    /// Boxed, as the other fields set only once a connection closes or logs: every
    /// connection keeps this state, and it stays within the allocator's 768-byte class.
    reason: OnceLock<Box<CloseReason>>,
    ending: AtomicBool,
    /// Between the read and write loops: [`live::READ_WAITING`] and [`live::LIVE_DUE`]. Both
    /// loops run in one task, never at once, so the flags are read and written plainly.
    live_flags: AtomicU8,
    /// The peer's last heartbeat, packed by [`Heartbeat::pack`]; 0 before the first.
    last_heartbeat: AtomicU64,
    live: Mutex<live::Live>,
    /// Things that live exactly as long as the transport: a listener's connection permit,
    /// registry entries, the liveness counters of registries it is in. Dropped when the
    /// write loop ends.
    attachments: Mutex<Vec<Box<dyn Any + Send + Sync>>>,
    /// The connection's span, made when first needed (see [`Shared::span`]).
    span: OnceLock<Box<tracing::Span>>,
    /// Values kept with the connection, one per type (see [`Sock::set_state`]).
    state: state::State,
}

impl Shared {
    /// The connection's span, made on the first call. Made lazily because a span a
    /// subscriber records costs it about 400 bytes for as long as the connection lives, and
    /// most connections (idle ones, the busy ones of a quiet log) never log anything in it.
    /// Debug events pass `parent: self.span()`, which is evaluated only when the event is
    /// enabled; for the same reason, the tasks that work for a connection (its loops, an
    /// answer that waits, the relay's) are not instrumented with it.
    fn span(&self) -> &tracing::Span {
        self.span.get_or_init(|| Box::new(conn_span(&self.info, None)))
    }

    /// A span for one event in the connection's name: its span if made, else one like it
    /// made for this event alone (the connection's `info` events), so that opening and
    /// closing are logged with the connection's fields without keeping a span. Held while
    /// the event is logged: a span dropped before its event is gone from the subscriber.
    /// Cheap when the subscriber takes no `info` from this module: the span is then off.
    fn event_span(&self) -> tracing::Span {
        event_span(&self.span, &self.info)
    }

    /// Fired when closing starts: the read loop stops and handlers are dropped.
    fn cancel(&self) -> signal::Signal<'_> {
        self.signals.get(signal::Which::Cancel)
    }

    /// Fired when the write loop has shut the transport down.
    fn terminated(&self) -> signal::Signal<'_> {
        self.signals.get(signal::Which::Terminated)
    }

    /// Fired to stop writing now, flushed or not.
    fn abort(&self) -> signal::Signal<'_> {
        self.signals.get(signal::Which::Abort)
    }

    /// Fired when the peer says `$done`.
    fn peer_done(&self) -> signal::Signal<'_> {
        self.signals.get(signal::Which::PeerDone)
    }
}

impl Sock {
    /// Runs the handshake over a transport and starts the connection's tasks.
    ///
    /// Both sides send `01` at once, then read the peer's version. A peer speaking another
    /// version is sent ProtocolError 1. The handshake must finish within the config's
    /// handshake timeout.
    ///
    /// # Errors
    /// [`Error::Closed`] with the reason the handshake failed.
    pub async fn start<R: FrameReader, W: FrameWriter>(
        reader: R,
        writer: W,
        handlers: Arc<Handlers>,
        config: Arc<Config>,
        info: ConnInfo,
    ) -> Result<Sock, Error> {
        Self::start_until(reader, writer, handlers, config, info, std::future::pending::<()>())
            .await
    }

    /// [`start`](Self::start), giving up when `stop` completes first: the handshake fails
    /// with [`CloseReason::Shutdown`], which the transport passes on (a WebSocket closes with
    /// 1001).
    pub async fn start_until<R: FrameReader, W: FrameWriter>(
        mut reader: R,
        mut writer: W,
        handlers: Arc<Handlers>,
        config: Arc<Config>,
        info: ConnInfo,
        stop: impl std::future::Future,
    ) -> Result<Sock, Error> {
        // A connection opened inside a span of the caller's gets its own span at once, as a
        // child of that one; others make theirs when something first needs it.
        let span = OnceLock::new();
        if let Some(parent) = tracing::Span::current().id() {
            let _ = span.set(Box::new(conn_span(&info, Some(parent))));
        }
        let mut buf = BytesMut::new();
        let handshake = async {
            writer.buffer_version();
            if config.hello_first {
                // Tells a server of ours that this side understands the reserved messages;
                // every other implementation drops it unseen.
                writer.buffer_frame(&gotalk_protocol::reserved::hello());
            }
            writer.flush().await.map_err(|e| CloseReason::Io(e.to_string()))?;
            let mut version = None;
            loop {
                if version.is_none() {
                    match decode_version(&mut buf) {
                        Ok(found) => version = found,
                        Err(e) => return Err(CloseReason::InvalidMessage(e.to_string())),
                    }
                }
                if let Some(v) = version {
                    // A server of ours that refuses a client of ours says why right after
                    // its version, in the same write (see `crate::refusal`).
                    if !config.hello_first {
                        return Ok(v);
                    }
                    match crate::refusal::peek(&buf) {
                        crate::refusal::Peek::No => return Ok(v),
                        crate::refusal::Peek::Refused(reason) => return Err(reason),
                        crate::refusal::Peek::More => {}
                    }
                }
                match reader.read(&mut buf, Some(2)).await {
                    Ok(ReadEvent::Data(_) | ReadEvent::Partial(_)) => {}
                    Ok(ReadEvent::Eof) => return Err(CloseReason::PeerClosed),
                    Err(e) => return Err(CloseReason::Io(e.to_string())),
                }
            }
        };
        let handshake = async {
            tokio::select! {
                outcome = tokio::time::timeout(config.liveness.handshake_timeout, handshake) => outcome,
                _ = stop => Ok(Err(CloseReason::Shutdown)),
            }
        };
        let outcome = match handshake.await {
            Ok(Ok(v)) if v == VERSION => Ok(()),
            Ok(Ok(v)) => {
                Err((CloseReason::UnsupportedVersion(v), Some(ProtocolErrorCode::Unsupported)))
            }
            Ok(Err(reason @ CloseReason::InvalidMessage(_))) => {
                Err((reason, Some(ProtocolErrorCode::InvalidMessage)))
            }
            Ok(Err(reason)) => Err((reason, None)),
            Err(_) => Err((
                CloseReason::HandshakeTimeout(config.liveness.handshake_timeout),
                Some(ProtocolErrorCode::Timeout),
            )),
        };
        if let Err((reason, code)) = outcome {
            let span = event_span(&span, &info);
            tracing::debug!(parent: &span, %reason, "handshake failed");
            // Done with reading: a transport that reads on while it closes (a WebSocket waits
            // for the peer's Close) takes the reading side back. Others discard the peer's
            // input below, after the reason went out.
            let websocket = info.transport == TransportKind::WebSocket;
            let mut reader = if websocket {
                drop(reader);
                None
            } else {
                Some(reader)
            };
            if let Some(code) = code {
                writer.buffer_frame(&Frame::protocol_error(code));
                let _ = tokio::time::timeout(Duration::from_secs(1), writer.flush()).await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown(&reason)).await;
            // A peer that sent a wrong version may be sending more; one that timed out is not.
            let sent_more = matches!(
                code,
                Some(ProtocolErrorCode::Unsupported | ProtocolErrorCode::InvalidMessage)
            );
            if let Some(reader) = reader.as_mut().filter(|_| sent_more) {
                crate::linger::discard_input(reader, &mut buf).await;
            }
            return Err(Error::from_handshake(reason));
        }

        let live = Mutex::new(live::Live::new(&config));
        let hello_first = config.hello_first;
        // The browser client sends no hello; it declares itself in the URL, as it does for
        // RetryResult.
        let declared =
            info.request.as_ref().is_some_and(|r| gotalk_protocol::retry::declared(r.uri.query()));
        let shared = Arc::new(Shared {
            send_budget: ByteBudget::new(config.send_queue_bytes),
            budget: ConnBudget::new(config.connection_budget_bytes(), config.memory_budget.clone()),
            info,
            config,
            handlers,
            out: OutQueue::default(),
            calls: Mutex::new(call::Calls::default()),
            inbound: Mutex::new(serve::Inbound::default()),
            idle: Notify::new(),
            next_id: AtomicU32::new(0),
            late_results: AtomicU64::new(0),
            signals: signal::Signals::default(),
            peer_understands_reserved: AtomicBool::new(declared),
            hello_said: AtomicBool::new(hello_first),
            reason: OnceLock::new(),
            ending: AtomicBool::new(false),
            live_flags: AtomicU8::new(0),
            last_heartbeat: AtomicU64::new(0),
            live,
            attachments: Mutex::new(Vec::new()),
            span,
            state: state::State::default(),
        });
        let sock = Sock { shared };
        // At info, with the span's transport and peer: an operator's record of who came and
        // went, which per-request events are not.
        let span = sock.shared.event_span();
        tracing::info!(parent: &span, "connection opened");
        sock.shared.handlers.connected(&sock);
        // One task for both loops: an answer the read loop queues is written in the same
        // task, not by a second one it has to wake, and an idle connection keeps one task,
        // not two. The read loop is polled first, so what it queues joins the write loop's
        // next flush. Spawned as the join itself: an `async` block awaiting it would keep
        // both loops twice. Neither loop is instrumented: their events name the
        // connection's span themselves, which an idle connection then never makes, and
        // entering a span on every poll is not free.
        let read = read::read_loop(reader, buf, sock.clone());
        tokio::spawn(futures_util::future::join(read, write::write_loop(writer, sock.clone())));
        Ok(sock)
    }

    /// Two socks connected to each other in memory, each with its own handlers. Useful for
    /// tests and for in-process peers.
    ///
    /// # Errors
    /// [`Error::Closed`] if a handshake fails, which it cannot in memory.
    pub async fn pipe(
        a: (Arc<Handlers>, Arc<Config>),
        b: (Arc<Handlers>, Arc<Config>),
    ) -> Result<(Sock, Sock), Error> {
        let (x, y) = tokio::io::duplex(64 * 1024);
        let (xr, xw) = crate::transport::io(x);
        let (yr, yw) = crate::transport::io(y);
        let info = || ConnInfo::new(TransportKind::Memory, None, None);
        tokio::try_join!(
            Sock::start(xr, xw, a.0, a.1, info()),
            Sock::start(yr, yw, b.0, b.1, info()),
        )
    }

    /// What is known about the connection.
    pub fn info(&self) -> &ConnInfo {
        &self.shared.info
    }

    /// The certificate the TLS peer presented, verified against the listener's client CA
    /// (DER; parse it with a crate such as `x509-parser` for its subject and names). `None`
    /// without TLS or when the peer sent none.
    ///
    /// ```
    /// # fn who(sock: &gotalk::Sock) -> Option<usize> {
    /// sock.peer_certificate().map(|der| der.len())
    /// # }
    /// ```
    pub fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.shared.info.peer_certificates.as_deref().and_then(|chain| chain.first())
    }

    /// The settings this connection runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The most recent heartbeat from the peer, if any arrived.
    pub fn last_heartbeat(&self) -> Option<Heartbeat> {
        Heartbeat::unpack(self.shared.last_heartbeat.load(Ordering::Relaxed))
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().map(|r| (**r).clone())
    }

    /// True once closing has started.
    pub fn is_closed(&self) -> bool {
        self.shared.cancel().is_cancelled()
    }

    /// Waits until the connection has closed and its transport is shut, and says why.
    pub async fn closed(&self) -> CloseReason {
        self.shared.terminated().cancelled().await;
        self.close_reason().unwrap_or(CloseReason::Local)
    }

    /// True once the peer said `$done`: it is shutting down, answers new requests with a
    /// RetryResult, and closes the connection once the requests in flight are answered.
    pub fn peer_done(&self) -> bool {
        self.shared.peer_done().is_cancelled()
    }

    /// True once the peer is known to understand the reserved messages (`$ping`, `$done`,
    /// and the `$` names of [extensions](crate::Extension)): it is one of ours. It sent the
    /// hello (our clients send it after their version, our servers in reply), or one of those
    /// messages, or it is a WebSocket client that declared
    /// [`RETRY_QUERY`](crate::ws::RETRY_QUERY) in its URL, as the browser client does. Until
    /// then none of them is sent to it, since the original Go gotalk and gotalk.js would hand
    /// them to the application's catch-all handlers: it is not probed over TCP (over
    /// WebSocket, pings need no reserved name), and it is not told `$done`.
    pub fn peer_understands_reserved(&self) -> bool {
        self.shared.peer_understands_reserved.load(Ordering::Acquire)
    }

    /// Waits until the peer says `$done` (see [`peer_done`](Self::peer_done)); never returns
    /// on a connection that closes without it.
    pub async fn peer_done_notified(&self) {
        self.shared.peer_done().cancelled().await;
    }

    /// Closes the connection now. Pending requests fail with [`CloseReason::Local`]; frames
    /// already queued are still written.
    pub fn close(&self) {
        self.close_with(CloseReason::Local, None);
    }

    /// Closes the connection with a protocol error, sent to the peer first.
    pub fn close_with_error(&self, code: ProtocolErrorCode) {
        self.close_with(CloseReason::LocalProtocolError(code), Some(code));
    }

    /// Ends the connection gracefully: no new requests are sent (they fail with
    /// [`Error::Ending`]), requests in flight in both directions are answered, then the
    /// connection closes. Wrap it in a timeout to bound the wait.
    pub async fn end(&self) {
        self.end_with(CloseReason::Ended).await;
    }

    /// [`end`](Self::end), closing with `reason` once the requests in flight are answered.
    pub(crate) async fn end_with(&self, reason: CloseReason) {
        if !self.shared.ending.swap(true, Ordering::AcqRel) && self.peer_understands_reserved() {
            // Tell the peer first: it stops sending requests, and a browser knows the close
            // that follows is not a failure.
            let _ = self
                .send(Frame::Notification {
                    name: gotalk_protocol::Name::new(live::DONE).expect("a short name"),
                    payload: bytes::Bytes::new(),
                })
                .await;
        }
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            let quiet =
                lock(&self.shared.calls).is_empty() && lock(&self.shared.inbound).is_empty();
            if quiet || self.is_closed() {
                break;
            }
            tokio::select! {
                _ = idle => {}
                _ = self.shared.cancel().cancelled() => break,
            }
        }
        self.close_with(reason, None);
        self.shared.terminated().cancelled().await;
    }

    /// Sends a heartbeat now, with the given load.
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection is closed.
    pub async fn send_heartbeat(&self, load: u16) -> Result<(), Error> {
        self.send(Frame::Heartbeat { load, time: unix_time() }).await
    }

    /// Starts closing: records the reason once, stops the read loop and the handlers, fails
    /// every pending request, and tells the write loop to finish with `code`.
    pub fn close_with(&self, reason: CloseReason, code: Option<ProtocolErrorCode>) {
        if self.shared.reason.set(Box::new(reason.clone())).is_err() {
            return;
        }
        let span = self.shared.event_span();
        tracing::info!(parent: &span, %reason, "connection closed");
        self.shared.cancel().cancel();
        // The read loop waits for this through the writer's waker (see `read::closing`).
        self.shared.out.wake();
        self.fail_calls(&reason);
        self.shared.send_budget.close();
        let _ = self.shared.out.push(Outbound::Close(code));
        self.shared.idle.notify_waiters();
        self.shared.handlers.closing(self, &reason);
    }

    /// Closes with `reason` (unless closed already) and stops writing at once: a write that
    /// cannot finish now is given up and the transport dropped, so [`closed`](Self::closed)
    /// completes without waiting for the write timeout.
    pub(crate) fn abort(&self, reason: CloseReason) {
        self.close_with(reason, None);
        self.shared.abort().cancel();
    }

    /// Queues a frame for the write loop, waiting while the send queue is full.
    pub(crate) async fn send(&self, frame: Frame) -> Result<(), Error> {
        let permit = self.send_room(frame.payload().len()).await?;
        self.push_frame(frame, permit)
    }

    /// Room for `len` bytes in the send queue, waiting while it is full: the first half of
    /// [`send`](Self::send), for a sender that decides what to queue only once there is room.
    pub(crate) async fn send_room(&self, len: usize) -> Result<OwnedSemaphorePermit, Error> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.shared.send_budget.acquire(len).await.ok_or_else(|| self.closed_error())
    }

    /// Queues `frame` in the room taken with [`send_room`](Self::send_room), without waiting.
    pub(crate) fn push_frame(&self, frame: Frame, room: OwnedSemaphorePermit) -> Result<(), Error> {
        self.shared
            .out
            .push(Outbound::Frame(frame, Some(room), None))
            .map_err(|_| self.closed_error())
    }

    /// Keeps `value` with this connection, for whoever has the connection and knows the
    /// type: what an [extension](crate::Extension) keeps per connection, say. One value per
    /// type: a second one is refused and given back. It lives as long as the connection's
    /// [`Sock`]s, so it must not hold one.
    ///
    /// # Errors
    /// `value`, when the connection already keeps a `T`.
    pub fn set_state<T: Any + Send + Sync>(&self, value: T) -> Result<(), T> {
        self.shared.state.set(value)
    }

    /// The value of type `T` kept with [`set_state`](Self::set_state), if any. It takes no
    /// lock.
    pub fn state<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.shared.state.get()
    }

    /// Queues `frame` past the send queue's budget and without waiting: a short reserved
    /// message that goes out before anything else this side sends after it.
    pub(crate) fn send_now(&self, frame: Frame) {
        let _ = self.shared.out.push(Outbound::Frame(frame, None, None));
    }

    /// The budgets this connection's memory is charged to, for what holds bytes on its
    /// behalf outside the sock.
    // Used by add-ons, which a build may leave out.
    #[allow(dead_code)]
    pub(crate) fn conn_budget(&self) -> &Arc<ConnBudget> {
        &self.shared.budget
    }

    /// Keeps `value` alive until the connection's transport has shut down.
    pub fn attach(&self, value: impl Any + Send + Sync) {
        // Checked under the lock the write loop takes after it terminates, so a value can't
        // slip in after the attachments were dropped and then live as long as the Shared.
        let mut attachments = lock(&self.shared.attachments);
        if self.shared.terminated().is_cancelled() {
            return;
        }
        // Grown one at a time: a connection has two or three, and keeps them all its life.
        attachments.reserve_exact(1);
        attachments.push(Box::new(value));
    }

    /// How many bytes this connection holds on its peer's behalf now, charged to its
    /// [connection budget](Config::connection_budget) and the process's
    /// [memory budget](Config::memory_budget).
    pub fn budget_used(&self) -> usize {
        self.shared.budget.used()
    }

    /// The bytes waiting in this connection's send queue for the write loop, each message
    /// counted with a small overhead; at most the config's send queue bound.
    pub fn queued_bytes(&self) -> usize {
        self.shared.send_budget.queued()
    }

    /// A charge of `bytes` to this connection's budgets, if they fit now.
    pub(crate) fn try_charge(&self, bytes: usize) -> Result<Charge, crate::memory::Exhausted> {
        self.shared.budget.try_charge(bytes)
    }

    /// True when both are the same connection.
    #[allow(dead_code)]
    pub(crate) fn same(&self, other: &Sock) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// A span for this connection, for handlers' own logs, with its `id`, `transport` and
    /// `peer`. Made on the first call.
    pub fn span(&self) -> &tracing::Span {
        self.shared.span()
    }
}

/// A connection's span, with the fields operators find connections by.
fn conn_span(info: &ConnInfo, parent: Option<tracing::Id>) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "conn",
        id = info.id,
        transport = %info.transport,
        peer = %info.remote_addr.map(|a| a.to_string()).unwrap_or_default(),
    )
}

/// The connection's span if it was made, else one like it for a single event.
fn event_span(span: &OnceLock<Box<tracing::Span>>, info: &ConnInfo) -> tracing::Span {
    span.get().map_or_else(|| conn_span(info, None), |span| (**span).clone())
}

fn unix_time() -> u32 {
    let secs =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// A map from request id to state, shared by the call and serve tables. Every request is
/// looked up, inserted and removed in one, so its hasher is foldhash's: seeded, so a peer
/// cannot choose colliding ids, and a fraction of SipHash's cost on four bytes.
pub(crate) type IdMap<V> = HashMap<gotalk_protocol::Id, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::Heartbeat;

    #[test]
    fn a_heartbeat_packs_into_one_word_and_none_is_zero() {
        assert_eq!(Heartbeat::unpack(0), None);
        for (load, time) in [(0, 0), (0xffff, u32::MAX), (1, 1_765_000_000), (0x8000, 0)] {
            let heartbeat = Heartbeat { load, time };
            assert_eq!(Heartbeat::unpack(heartbeat.pack()), Some(heartbeat));
        }
    }
}
