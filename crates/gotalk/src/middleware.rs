//! Middleware around operations, in tower's terms: a [`Layer`] wraps a [`Service`] of
//! [`Call`]s, and [`Handlers::layer`](crate::Handlers::layer) puts one around every op, or
//! [`layer_for`](crate::Handlers::layer_for) around the ops a name or prefix selects.
//!
//! A middleware sees the op's name, the connection ([`Sock`], with its state and identity)
//! and the payload, and decides: pass the call on, answer it itself with a
//! [`HandlerError`] (a public one for a refused login, a [retry](HandlerError::retry) for a
//! rate limit), or time and count it. The same layer wraps requests, streaming requests and
//! notifications; [`Body`] tells them apart. [`from_fn`] makes a layer of an async function,
//! and any tower layer whose service passes its inner service's errors through (such as
//! `tower::limit::ConcurrencyLimitLayer`, or a [`ServiceBuilder`] of them) works too.
//!
//! ```
//! use gotalk::middleware::{from_fn, Call, Handler};
//! use gotalk::{Handlers, HandlerError};
//!
//! struct User(String);
//!
//! let mut handlers = Handlers::new();
//! handlers
//!     .handle("chat.send", |sock, text: String| async move {
//!         let user = sock.state::<User>().map(|u| u.0.clone()).unwrap_or_default();
//!         Ok::<_, HandlerError>(format!("{user}: {text}"))
//!     })
//!     // Only ops named `chat.…` need a login.
//!     .layer_for("chat.*", from_fn(|call: Call, next: Handler| async move {
//!         if call.sock().state::<User>().is_none() {
//!             return Err(HandlerError::public("unauthorized", "log in first"));
//!         }
//!         next.run(call).await
//!     }));
//! ```
//!
//! # Order
//! Each layer wraps what was there before it, so the layer added last runs first (as with
//! axum's `Router::layer`), and a layer wraps every op it selects whenever that op is
//! registered, before or after the layer.
//!
//! # Cost
//! Without layers, requests go straight to their handlers. With layers, each call of an op
//! they select costs a [`Call`] (the op's name is copied into it), a clone of the layered
//! service, and a boxed future per layer.
//!
//! # What a layer cannot do
//! - Extension names (the relay's `$relay.…`, sources' requests) and the liveness probe are
//!   answered before the handlers, past every layer.
//! - A layer around a streaming request sees its first part in [`Body::Stream`]'s input;
//!   reading further parts there takes them from the handler.
//! - A request the connection's limits refuse (too many in flight, memory) never reaches a
//!   layer.
//! - Tower layers whose service boxes errors (`tower::timeout::Timeout`,
//!   `tower::load_shed::LoadShed`) need the inner error to be a `std::error::Error`, which
//!   [`HandlerError`] is not (that is what lets `?` convert every error into it). Write such a
//!   layer with [`from_fn`] instead.
//! - A tower layer whose service keeps state of its own (`tower::limit::RateLimit`) gets a
//!   fresh clone per call, so that state is not shared: keep shared state behind an `Arc`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::handler_error::HandlerError;
use crate::sock::{Sock, StreamInput, StreamOutput};

pub use tower::{Layer, Service, ServiceBuilder};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One call of an op, as a middleware sees it.
#[derive(Debug)]
pub struct Call {
    sock: Sock,
    op: String,
    body: Body,
}

/// What the peer sent with a [`Call`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Body {
    /// A request with one payload (a streaming request to a single-payload handler arrives
    /// here gathered).
    Request(Bytes),
    /// A streaming request: its parts, and where the handler writes its result.
    Stream(StreamInput, StreamOutput),
    /// A notification: no reply goes back, and an error is only logged.
    Notification(Bytes),
}

/// What a handler produced, as a middleware sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reply {
    /// The result of a [`Body::Request`].
    Result(Bytes),
    /// A [`Body::Stream`]'s result stream ended.
    Ended,
    /// A [`Body::Notification`] was handled.
    Handled,
}

impl Call {
    /// A call of `op` on `sock`; for a middleware that calls another op, or a test.
    pub fn new(sock: Sock, op: impl Into<String>, body: Body) -> Self {
        Call { sock, op: op.into(), body }
    }

    /// The connection the call came on.
    pub fn sock(&self) -> &Sock {
        &self.sock
    }

    /// The op's (or the notification's) name.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// What the peer sent.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// What the peer sent, to change before the handler sees it.
    pub fn body_mut(&mut self) -> &mut Body {
        &mut self.body
    }

    /// The payload of a request or a notification; none for a streaming request.
    pub fn payload(&self) -> Option<&Bytes> {
        match &self.body {
            Body::Request(payload) | Body::Notification(payload) => Some(payload),
            Body::Stream(..) => None,
        }
    }

    /// Whether this is a notification, which has no reply.
    pub fn is_notification(&self) -> bool {
        matches!(self.body, Body::Notification(_))
    }

    fn into_parts(self) -> (Sock, String, Body) {
        (self.sock, self.op, self.body)
    }
}

/// A handler, or a handler and the layers around it, as a cloneable [`Service`]: what a
/// layer wraps and what [`from_fn`]'s function calls next.
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(Call) -> BoxFuture<Result<Reply, HandlerError>> + Send + Sync>);

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// Runs the call: the next layer, or the handler itself.
    pub fn run(&self, call: Call) -> impl Future<Output = Result<Reply, HandlerError>> + Send {
        (self.0)(call)
    }

    pub(crate) fn new(
        f: impl Fn(Call) -> BoxFuture<Result<Reply, HandlerError>> + Send + Sync + 'static,
    ) -> Self {
        Handler(Arc::new(f))
    }

    /// Boxes a service, which is cloned for each call (as axum does with its routes), so
    /// calls run at once, each waiting for its own clone to be ready.
    pub fn from_service<S>(service: S) -> Self
    where
        S: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
        S::Error: Into<HandlerError>,
        S::Future: Send + 'static,
    {
        Handler::new(move |call| {
            let mut service = service.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await.map_err(Into::into)?;
                service.call(call).await.map_err(Into::into)
            })
        })
    }

    /// Runs `layered` for the calls `selector` selects, `self` for the others.
    pub(crate) fn select(self, selector: Selector, layered: Handler) -> Handler {
        Handler::new(
            move |call| {
                if selector.matches(call.op()) {
                    (layered.0)(call)
                } else {
                    (self.0)(call)
                }
            },
        )
    }
}

impl Service<Call> for Handler {
    type Response = Reply;
    type Error = HandlerError;
    type Future = BoxFuture<Result<Reply, HandlerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), HandlerError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        (self.0)(call)
    }
}

/// A layer made of an async function of the call and the next handler: see [`from_fn`].
pub struct FromFnLayer<F>(Arc<F>);

impl<F> Clone for FromFnLayer<F> {
    fn clone(&self) -> Self {
        FromFnLayer(self.0.clone())
    }
}

impl<F> fmt::Debug for FromFnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFnLayer")
    }
}

/// A layer of an async function that gets each call and the [`Handler`] after it, and
/// returns the reply: call `next.run(call)` to go on, or return without it.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use gotalk::middleware::{from_fn, Call, Handler};
///
/// let calls = Arc::new(AtomicU64::new(0));
/// let counted = calls.clone();
/// let mut handlers = gotalk::Handlers::new();
/// handlers.layer(from_fn(move |call: Call, next: Handler| {
///     counted.fetch_add(1, Ordering::Relaxed);
///     async move {
///         let started = std::time::Instant::now();
///         let reply = next.run(call).await;
///         tracing::info!(took = ?started.elapsed(), ok = reply.is_ok(), "call");
///         reply
///     }
/// }));
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFnLayer<F>
where
    F: Fn(Call, Handler) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
{
    FromFnLayer(Arc::new(f))
}

impl<F, Fut, S> Layer<S> for FromFnLayer<F>
where
    F: Fn(Call, Handler) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, HandlerError>> + Send + 'static,
    S: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
    S::Error: Into<HandlerError>,
    S::Future: Send + 'static,
{
    type Service = Handler;

    fn layer(&self, inner: S) -> Handler {
        let f = self.0.clone();
        let next = Handler::from_service(inner);
        Handler::new(move |call| Box::pin(f(call, next.clone())))
    }
}

/// Which ops a layer wraps: every op, one op by name, or the ops whose names start with a
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    All,
    Name(String),
    Prefix(String),
}

impl Selector {
    /// `*` is every op, `chat.*` every op whose name starts with `chat.`, and any other
    /// text the op of that name.
    pub(crate) fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some("") => Selector::All,
            Some(prefix) => Selector::Prefix(prefix.to_owned()),
            None => Selector::Name(pattern.to_owned()),
        }
    }

    pub(crate) fn matches(&self, op: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Name(name) => op == name,
            Selector::Prefix(prefix) => op.starts_with(prefix.as_str()),
        }
    }
}

/// A layer with its types erased: a handler in, the layered handler out.
pub(crate) type LayerFn = Arc<dyn Fn(Handler) -> Handler + Send + Sync>;

/// Erases `layer`'s types.
pub(crate) fn erase<L>(layer: L) -> LayerFn
where
    L: Layer<Handler> + Send + Sync + 'static,
    L::Service: Service<Call, Response = Reply> + Clone + Send + Sync + 'static,
    <L::Service as Service<Call>>::Error: Into<HandlerError>,
    <L::Service as Service<Call>>::Future: Send + 'static,
{
    Arc::new(move |inner| Handler::from_service(layer.layer(inner)))
}

/// Splits a call made by the registry's adapters back into its parts.
pub(crate) fn parts(call: Call) -> (Sock, String, Body) {
    call.into_parts()
}

#[cfg(test)]
mod tests {
    use super::Selector;

    #[test]
    fn patterns_select_all_a_prefix_or_one_name() {
        assert!(Selector::parse("*").matches("anything"));
        let prefix = Selector::parse("chat.*");
        assert!(prefix.matches("chat.send") && prefix.matches("chat."));
        assert!(!prefix.matches("chat") && !prefix.matches("chatter"));
        let name = Selector::parse("chat.send");
        assert!(name.matches("chat.send") && !name.matches("chat.send2"));
    }
}
