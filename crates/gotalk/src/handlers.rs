//! The handler registry: what this side does when the peer calls it.
//!
//! One [`Handlers`] is built at start-up and shared, behind an `Arc`, by every connection of
//! every transport, so a TCP peer and a browser reach the same operations. There are three
//! tables (requests, streaming requests and notifications), each with an optional fallback
//! for names it does not list, plus connection-level hooks and the
//! [extensions](crate::Extension) that plug into every connection.
//!
//! A request for an op registered only as a streaming handler runs that handler with a
//! one-part input; a streaming request for an op registered only as a single handler is
//! gathered first. A request nobody handles gets the ErrorResult `unknown operation "op"`.
//!
//! What a failing handler's peer reads is the handler's choice ([`HandlerError`]); a layer
//! ([`crate::middleware`]) wraps the ops it selects. Each handler is kept as registered and
//! as served (inside its layers), so layers added later wrap it too, and with no layers the
//! two are the same.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::error::CloseReason;
use crate::extension::{Extension, Extensions};
use crate::handler_error::{Failure, HandlerError};
use crate::middleware::{self, Body, Call, Handler, Layer, LayerFn, Reply, Selector, Service};
use crate::sock::{Heartbeat, Sock, StreamInput, StreamOutput};
use crate::LivenessEvent;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A request handler with its types erased: op and payload in, result or error out.
pub(crate) type RequestFn =
    Arc<dyn Fn(Sock, &str, Bytes) -> BoxFuture<Result<Bytes, HandlerError>> + Send + Sync>;
/// A streaming handler with its types erased.
pub(crate) type StreamFn = Arc<
    dyn Fn(Sock, &str, StreamInput, StreamOutput) -> BoxFuture<Result<(), HandlerError>>
        + Send
        + Sync,
>;
/// A notification handler with its types erased.
pub(crate) type NotificationFn = Arc<dyn Fn(Sock, String, Bytes) -> BoxFuture<()> + Send + Sync>;

/// A handler as registered, and as served: inside the layers that select it.
#[derive(Clone)]
struct Entry<F> {
    raw: F,
    served: F,
}

/// The handlers registered under one op name (or as the fallback).
#[derive(Default, Clone)]
struct Op {
    /// The name it is registered under; none for the fallback. Shared, so a request carries
    /// it to the [`Extension::request_done`] hook without copying it.
    name: Option<Arc<str>>,
    single: Option<Entry<RequestFn>>,
    stream: Option<Entry<StreamFn>>,
}

/// Which handler serves a request.
#[derive(Clone)]
pub(crate) enum Route {
    /// A single-payload handler.
    Buffer(RequestFn),
    /// A streaming handler.
    Stream(StreamFn),
}

impl Op {
    /// The handler for a request of this kind, or else the other kind's: a single request can
    /// run a streaming handler and a streaming request a single one.
    fn route(&self, stream: bool) -> Option<Route> {
        let single = || self.single.as_ref().map(|e| Route::Buffer(e.served.clone()));
        let streaming = || self.stream.as_ref().map(|e| Route::Stream(e.served.clone()));
        if stream {
            streaming().or_else(single)
        } else {
            single().or_else(streaming)
        }
    }
}

type ConnectFn = Arc<dyn Fn(Sock) -> BoxFuture<()> + Send + Sync>;
type CloseFn = Arc<dyn Fn(&Sock, &CloseReason) + Send + Sync>;
type HeartbeatFn = Arc<dyn Fn(&Sock, Heartbeat) + Send + Sync>;
type LivenessFn = Arc<dyn Fn(&Sock, LivenessEvent) + Send + Sync>;

/// Operations and notifications this side handles, shared by all its connections.
///
/// ```
/// use gotalk::Handlers;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct GreetIn { name: String }
/// #[derive(Serialize)]
/// struct GreetOut { greeting: String }
///
/// let mut handlers = Handlers::new();
/// handlers.handle("greet", |_sock, input: GreetIn| async move {
///     Ok::<_, String>(GreetOut { greeting: format!("Hello {}", input.name) })
/// });
/// ```
#[derive(Default, Clone)]
pub struct Handlers {
    /// One entry per op name, so routing a request costs one lookup (with a seeded hasher
    /// cheaper than SipHash: see `IdMap`).
    ops: HashMap<String, Op, foldhash::fast::RandomState>,
    fallback: Op,
    notifications: HashMap<String, Entry<NotificationFn>, foldhash::fast::RandomState>,
    notification_fallback: Option<Entry<NotificationFn>>,
    /// In the order added: each wraps the ones before it.
    layers: Vec<(Selector, LayerFn)>,
    on_connect: Option<ConnectFn>,
    on_close: Option<CloseFn>,
    pub(crate) on_heartbeat: Option<HeartbeatFn>,
    pub(crate) on_liveness: Option<LivenessFn>,
    pub(crate) extensions: Extensions,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn names<V, S>(table: &HashMap<String, V, S>) -> Vec<&str> {
            let mut names: Vec<&str> = table.keys().map(String::as_str).collect();
            names.sort_unstable();
            names
        }
        f.debug_struct("Handlers")
            .field("ops", &names(&self.ops))
            .field("notifications", &names(&self.notifications))
            .finish_non_exhaustive()
    }
}

/// A layer passed on a call of another kind than it was given, or answered it with another
/// kind of reply.
fn changed_kind() -> HandlerError {
    HandlerError::internal("a layer changed the kind of a call or of its reply")
}

/// Runs a synchronous hook, logging a panic instead of letting it unwind into the read loop
/// or whoever is closing the connection.
pub(crate) fn call_hook(name: &str, hook: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
        tracing::error!(hook = name, "connection hook panicked");
    }
}

/// Parses JSON parameters, taking an empty payload as `null`. What does not parse is the
/// peer's own mistake, so the peer reads why.
fn params<P: DeserializeOwned>(payload: &[u8]) -> Result<P, String> {
    crate::sock::from_json(payload).map_err(|e| format!("invalid parameters: {e}"))
}

/// Pays for what decoding `payload` as JSON may take (see
/// [`json_decoded_bound`](crate::memory::json_decoded_bound)), for as long as the charge is
/// kept.
fn charge_decoding(sock: &Sock, payload: &[u8]) -> Result<crate::memory::Charge, String> {
    let bound = crate::memory::json_decoded_bound(payload);
    sock.try_charge(bound)
        .map_err(|exhausted| format!("too large to decode ({bound} bytes at most): {exhausted}"))
}

fn json_result<R: Serialize>(value: &R) -> Result<Bytes, HandlerError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        HandlerError::internal(format!("the handler's result could not be encoded: {e}"))
    })
}

impl Handlers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles `op` with JSON in and out. The handler gets the connection and the decoded
    /// parameters (an empty payload decodes as `null`). Its error is a [`HandlerError`], or
    /// converts into one: the peer reads a public error's code and message, and only a
    /// reference for any other error (see [`HandlerError`]). Parameters that do not decode
    /// get the ErrorResult `invalid parameters: …` without calling the handler.
    ///
    /// Decoding is charged to the memory budgets while the handler runs, at a bound on what
    /// the decoded value can take (about 88 bytes per JSON value, plus the text): parameters
    /// whose bound does not fit get the ErrorResult `parameters too large to decode …`. Ops
    /// that take large data should take it as bytes ([`handle_buffer`](Self::handle_buffer))
    /// or as a stream. Nesting is bounded by serde_json's recursion limit (128 levels).
    pub fn handle<P, R, E, F, Fut>(&mut self, op: &str, f: F) -> &mut Self
    where
        P: DeserializeOwned,
        R: Serialize,
        E: Into<HandlerError>,
        F: Fn(Sock, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let f = Arc::new(f);
        // Parameters are decoded inside the handler's future, so the work happens in the
        // request's task and never on the connection's read loop.
        let f: RequestFn = Arc::new(move |sock: Sock, _op: &str, payload: Bytes| {
            let f = f.clone();
            Box::pin(async move {
                // What the decoded parameters may take is paid for while the handler runs,
                // which is as long as it can keep them.
                let _decoded = charge_decoding(&sock, &payload)
                    .map_err(|e| HandlerError::text(format!("parameters {e}")))?;
                let params = params::<P>(&payload).map_err(HandlerError::text)?;
                json_result(&f(sock, params).await.map_err(Into::into)?)
            })
        });
        self.set_single(Some(op), f);
        self
    }

    /// Handles `op` with raw bytes in and out. Errors as for [`handle`](Self::handle).
    pub fn handle_buffer<E, F, Fut>(&mut self, op: &str, f: F) -> &mut Self
    where
        E: Into<HandlerError>,
        F: Fn(Sock, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    {
        let f: RequestFn = Arc::new(move |sock: Sock, _op: &str, payload: Bytes| {
            let fut = f(sock, payload);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        self.set_single(Some(op), f);
        self
    }

    /// Handles requests for any op no other handler takes, with the op's name and raw bytes.
    pub fn fallback_buffer<E, F, Fut>(&mut self, f: F) -> &mut Self
    where
        E: Into<HandlerError>,
        F: Fn(Sock, String, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, E>> + Send + 'static,
    {
        let f: RequestFn = Arc::new(move |sock: Sock, op: &str, payload: Bytes| {
            let fut = f(sock, op.to_owned(), payload);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        self.set_single(None, f);
        self
    }

    /// Handles `op` as a stream: parts in, parts out. Returning `Ok(())` ends the result
    /// stream; an error ends it with an ErrorResult (or a RetryResult), as for
    /// [`handle`](Self::handle).
    pub fn handle_stream<E, F, Fut>(&mut self, op: &str, f: F) -> &mut Self
    where
        E: Into<HandlerError>,
        F: Fn(Sock, StreamInput, StreamOutput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let f: StreamFn = Arc::new(move |sock: Sock, _op: &str, input, output| {
            let fut = f(sock, input, output);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        self.set_stream(Some(op), f);
        self
    }

    /// Handles streaming requests for any op no other handler takes.
    pub fn fallback_stream<E, F, Fut>(&mut self, f: F) -> &mut Self
    where
        E: Into<HandlerError>,
        F: Fn(Sock, String, StreamInput, StreamOutput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let f: StreamFn = Arc::new(move |sock: Sock, op: &str, input, output| {
            let fut = f(sock, op.to_owned(), input, output);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        self.set_stream(None, f);
        self
    }

    /// Handles notification `name` with a JSON value. A value that does not decode, or whose
    /// decoded size would not fit the memory budgets, is logged and dropped, since a
    /// notification has no reply to carry an error.
    pub fn handle_notification<T, F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        T: DeserializeOwned,
        F: Fn(Sock, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: NotificationFn = Arc::new(move |sock, name, payload| {
            // As for requests: the decoded value is paid for while its handler runs.
            match charge_decoding(&sock, &payload)
                .and_then(|charge| Ok((charge, params::<T>(&payload)?)))
            {
                Ok((charge, value)) => {
                    let handled = f(sock, value);
                    Box::pin(async move {
                        handled.await;
                        drop(charge);
                    })
                }
                Err(message) => {
                    tracing::warn!(parent: sock.span(), notification = %name, %message, "dropped notification");
                    Box::pin(std::future::ready(()))
                }
            }
        });
        self.set_notification(Some(name), f);
        self
    }

    /// Handles notification `name` with raw bytes.
    pub fn handle_buffer_notification<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(Sock, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: NotificationFn = Arc::new(move |sock, _name, payload| Box::pin(f(sock, payload)));
        self.set_notification(Some(name), f);
        self
    }

    /// Handles notifications no other handler takes, with the name and raw bytes.
    pub fn fallback_notification<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn(Sock, String, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: NotificationFn =
            Arc::new(move |sock, name, payload| Box::pin(f(sock, name, payload)));
        self.set_notification(None, f);
        self
    }

    /// Wraps every op, fallback and notification in `layer`, a tower [`Layer`] (such as
    /// [`middleware::from_fn`]'s). The layer added last runs first, and it wraps ops
    /// registered after it too. See [`middleware`] for what a layer sees and cannot do.
    pub fn layer<L>(&mut self, layer: L) -> &mut Self
    where
        L: Layer<Handler> + Send + Sync + 'static,
        L::Service: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as Service<Call>>::Error: Into<HandlerError>,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        self.layer_for("*", layer)
    }

    /// Wraps the ops (and notifications) `pattern` selects in `layer`: `chat.*` selects
    /// every name that starts with `chat.`, `*` every name, and any other pattern the one
    /// name it spells. Calls that reach a fallback are selected by the name they call.
    ///
    /// ```
    /// use gotalk::middleware::{from_fn, Call, Handler};
    /// use gotalk::{Handlers, HandlerError};
    ///
    /// let mut handlers = Handlers::new();
    /// handlers.layer_for("admin.*", from_fn(|call: Call, next: Handler| async move {
    ///     if call.sock().info().remote_addr.is_some_and(|addr| addr.ip().is_loopback()) {
    ///         next.run(call).await
    ///     } else {
    ///         Err(HandlerError::public("forbidden", "admin ops are local only"))
    ///     }
    /// }));
    /// ```
    pub fn layer_for<L>(&mut self, pattern: &str, layer: L) -> &mut Self
    where
        L: Layer<Handler> + Send + Sync + 'static,
        L::Service: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as Service<Call>>::Error: Into<HandlerError>,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        self.layers.push((Selector::parse(pattern), middleware::erase(layer)));
        self.serve_all();
        self
    }

    /// Registers a request handler for `op`, or the fallback for `None`.
    fn set_single(&mut self, op: Option<&str>, raw: RequestFn) {
        let entry = Some(Entry { served: self.serve_request(op, &raw), raw });
        match op {
            Some(op) => self.op(op).single = entry,
            None => self.fallback.single = entry,
        }
    }

    fn set_stream(&mut self, op: Option<&str>, raw: StreamFn) {
        let entry = Some(Entry { served: self.serve_stream(op, &raw), raw });
        match op {
            Some(op) => self.op(op).stream = entry,
            None => self.fallback.stream = entry,
        }
    }

    fn set_notification(&mut self, name: Option<&str>, raw: NotificationFn) {
        let entry = Entry { served: self.serve_notification(name, &raw), raw };
        match name {
            Some(name) => {
                self.notifications.insert(name.to_owned(), entry);
            }
            None => self.notification_fallback = Some(entry),
        }
    }

    /// Puts every handler inside the layers that select it, after a layer was added.
    fn serve_all(&mut self) {
        let mut ops = std::mem::take(&mut self.ops);
        for (name, op) in &mut ops {
            self.serve_op(Some(name), op);
        }
        self.ops = ops;
        let mut fallback = std::mem::take(&mut self.fallback);
        self.serve_op(None, &mut fallback);
        self.fallback = fallback;
        let mut notifications = std::mem::take(&mut self.notifications);
        for (name, entry) in &mut notifications {
            entry.served = self.serve_notification(Some(name), &entry.raw);
        }
        self.notifications = notifications;
        if let Some(mut entry) = self.notification_fallback.take() {
            entry.served = self.serve_notification(None, &entry.raw);
            self.notification_fallback = Some(entry);
        }
    }

    fn serve_op(&self, name: Option<&str>, op: &mut Op) {
        if let Some(entry) = &mut op.single {
            entry.served = self.serve_request(name, &entry.raw);
        }
        if let Some(entry) = &mut op.stream {
            entry.served = self.serve_stream(name, &entry.raw);
        }
    }

    /// Whether a layer applies to `name` (`None`: the fallback, which any may).
    fn layered(&self, name: Option<&str>) -> bool {
        self.layers.iter().any(|(selector, _)| name.is_none_or(|name| selector.matches(name)))
    }

    /// `handler` inside the layers that select `name`. For the fallback (`None`), a layer
    /// that selects some names only is chosen call by call.
    fn wrap(&self, name: Option<&str>, handler: Handler) -> Handler {
        self.layers.iter().fold(handler, |inner, (selector, layer)| match name {
            Some(name) if selector.matches(name) => layer(inner),
            Some(_) => inner,
            None if *selector == Selector::All => layer(inner),
            None => inner.clone().select(selector.clone(), layer(inner)),
        })
    }

    fn serve_request(&self, op: Option<&str>, raw: &RequestFn) -> RequestFn {
        if !self.layered(op) {
            return raw.clone();
        }
        let inner = raw.clone();
        let handler = self.wrap(
            op,
            Handler::new(move |call| {
                let (sock, op, body) = middleware::parts(call);
                match body {
                    Body::Request(payload) => {
                        let result = inner(sock, &op, payload);
                        Box::pin(async move { result.await.map(Reply::Result) })
                    }
                    _ => Box::pin(std::future::ready(Err(changed_kind()))),
                }
            }),
        );
        Arc::new(move |sock: Sock, op: &str, payload: Bytes| {
            let reply = handler.run(Call::new(sock, op, Body::Request(payload)));
            Box::pin(async move {
                match reply.await? {
                    Reply::Result(result) => Ok(result),
                    _ => Err(changed_kind()),
                }
            })
        })
    }

    fn serve_stream(&self, op: Option<&str>, raw: &StreamFn) -> StreamFn {
        if !self.layered(op) {
            return raw.clone();
        }
        let inner = raw.clone();
        let handler = self.wrap(
            op,
            Handler::new(move |call| {
                let (sock, op, body) = middleware::parts(call);
                match body {
                    Body::Stream(input, output) => {
                        let ended = inner(sock, &op, input, output);
                        Box::pin(async move { ended.await.map(|()| Reply::Ended) })
                    }
                    _ => Box::pin(std::future::ready(Err(changed_kind()))),
                }
            }),
        );
        Arc::new(move |sock: Sock, op: &str, input, output| {
            let reply = handler.run(Call::new(sock, op, Body::Stream(input, output)));
            Box::pin(async move {
                match reply.await? {
                    Reply::Ended => Ok(()),
                    _ => Err(changed_kind()),
                }
            })
        })
    }

    fn serve_notification(&self, name: Option<&str>, raw: &NotificationFn) -> NotificationFn {
        if !self.layered(name) {
            return raw.clone();
        }
        let inner = raw.clone();
        let handler = self.wrap(
            name,
            Handler::new(move |call| {
                let (sock, name, body) = middleware::parts(call);
                match body {
                    Body::Notification(payload) => {
                        let handled = inner(sock, name, payload);
                        Box::pin(async move {
                            handled.await;
                            Ok(Reply::Handled)
                        })
                    }
                    _ => Box::pin(std::future::ready(Err(changed_kind()))),
                }
            }),
        );
        Arc::new(move |sock: Sock, name: String, payload: Bytes| {
            let reply = handler.run(Call::new(sock, name.clone(), Body::Notification(payload)));
            Box::pin(async move {
                if let Err(error) = reply.await {
                    // No reply can carry it; an internal error is logged as it is made.
                    match error.into_failure(&name) {
                        Failure::Error(text) | Failure::Retry(text) => {
                            tracing::debug!(notification = %name, %text, "notification refused");
                        }
                    }
                }
            })
        })
    }

    /// Runs after each connection's handshake. `f` itself is called before the first message
    /// is read, so what it does synchronously (registering the sock, say) happens before any
    /// handler sees that connection; the future it returns runs in a task of its own (so it
    /// may send requests and wait for their results).
    pub fn on_connect<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn(Sock) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |sock| Box::pin(f(sock))));
        self
    }

    /// Runs once when a connection starts closing, with the reason. It must not block.
    pub fn on_close(
        &mut self,
        f: impl Fn(&Sock, &CloseReason) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_close = Some(Arc::new(f));
        self
    }

    /// Runs for every heartbeat received, on the read loop. It must not block.
    pub fn on_heartbeat(
        &mut self,
        f: impl Fn(&Sock, Heartbeat) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_heartbeat = Some(Arc::new(f));
        self
    }

    /// Called with each liveness event of a connection: a probe sent, acknowledged (with its
    /// round trip), suppressed by traffic, the peer declared dead (with the reason), or the
    /// peer announcing it is done. It must not block.
    pub fn on_liveness(
        &mut self,
        f: impl Fn(&Sock, LivenessEvent) + Send + Sync + 'static,
    ) -> &mut Self {
        self.on_liveness = Some(Arc::new(f));
        self
    }

    /// Plugs `extension` into every connection these handlers serve, on every transport, in
    /// place of an extension of the same type. See [`Extension`].
    pub fn extension(&mut self, extension: impl Extension) -> &mut Self {
        self.extensions.add(extension);
        self
    }

    /// A connection has started: the extensions attach, then the `on_connect` hook runs,
    /// before the read loop starts, so its synchronous part (a registry insert) precedes
    /// every handler of this connection; its future runs in a task of its own. A panic in
    /// either ends only the hook.
    pub(crate) fn connected(&self, sock: &Sock) {
        for extension in self.extensions.iter() {
            call_hook("extension attach", || extension.attach(sock));
        }
        if let Some(on_connect) = &self.on_connect {
            let s = sock.clone();
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_connect(s))) {
                Ok(hook) => {
                    tokio::spawn(hook.instrument(sock.span().clone()));
                }
                Err(_) => tracing::error!(parent: sock.span(), "on_connect panicked"),
            }
        }
    }

    /// A connection has started closing: the extensions detach, then `on_close` runs.
    pub(crate) fn closing(&self, sock: &Sock, reason: &CloseReason) {
        for extension in self.extensions.iter() {
            call_hook("extension detach", || extension.detach(sock, reason));
        }
        if let Some(on_close) = &self.on_close {
            call_hook("on_close", || on_close(sock, reason));
        }
    }

    /// The peer has shown that it understands the reserved messages.
    pub(crate) fn peer_understands_reserved(&self, sock: &Sock) {
        for extension in self.extensions.iter() {
            call_hook("extension", || extension.peer_understands_reserved(sock));
        }
    }

    /// The handler for a request of `op`: the op's own, else the fallback. A fallback only
    /// applies when the op is not registered at all. With it, the name the op is registered
    /// under (none when the fallback serves it).
    pub(crate) fn route(&self, op: &str, stream: bool) -> Option<(Route, Option<Arc<str>>)> {
        let op = self.ops.get(op).unwrap_or(&self.fallback);
        op.route(stream).map(|route| (route, op.name.clone()))
    }

    /// The entry of `op`, made on first use.
    fn op(&mut self, op: &str) -> &mut Op {
        self.ops
            .entry(op.to_owned())
            .or_insert_with(|| Op { name: Some(op.into()), ..Op::default() })
    }

    pub(crate) fn notification(&self, name: &str) -> Option<NotificationFn> {
        self.notifications
            .get(name)
            .or(self.notification_fallback.as_ref())
            .map(|entry| entry.served.clone())
    }
}
