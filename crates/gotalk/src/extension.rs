//! The extension point: how an add-on joins every connection a registry serves, so the core
//! needs to know nothing about it.
//!
//! An [`Extension`] is registered on [`Handlers`](crate::Handlers) with
//! [`extension`](crate::Handlers::extension). It hears when each connection starts and when it
//! starts closing, and when the peer turns out to understand the reserved messages; it may
//! claim request and notification names, which it then answers on the read loop ahead of any
//! handler. What it keeps per connection goes in the connection's state
//! ([`Sock::set_state`]), and a connection it closes carries [`CloseReason::Extension`].

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::CloseReason;
use crate::sock::Sock;

/// An add-on that plugs into every connection of the [`Handlers`](crate::Handlers) it is
/// registered on, over every transport.
///
/// Every hook runs on the connection's own tasks (the synchronous ones also inside
/// [`Sock::close_with`]), so none may block; a hook that panics is logged and the connection
/// goes on.
///
/// ```
/// use std::pin::Pin;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use gotalk::{Answer, CloseReason, Extension, Sock};
///
/// /// Counts open connections and answers `$open` with the count.
/// #[derive(Default)]
/// struct Gauge(AtomicUsize);
///
/// impl Extension for Gauge {
///     fn requests(&self) -> &'static [&'static str] {
///         &["$open"]
///     }
///     fn attach(&self, _sock: &Sock) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
///     fn detach(&self, _sock: &Sock, _reason: &CloseReason) {
///         self.0.fetch_sub(1, Ordering::Relaxed);
///     }
///     fn request<'a>(
///         &'a self,
///         _sock: &'a Sock,
///         _op: &'a str,
///         _payload: bytes::Bytes,
///     ) -> Pin<Box<dyn std::future::Future<Output = Answer> + Send + 'a>> {
///         let open = self.0.load(Ordering::Relaxed).to_string();
///         Box::pin(std::future::ready(Answer::Result(open.into())))
///     }
/// }
///
/// let mut handlers = gotalk::Handlers::new();
/// handlers.extension(Gauge::default());
/// ```
pub trait Extension: Send + Sync + 'static {
    /// The single requests this extension answers with [`request`](Self::request), ahead of
    /// any handler of the same name. A name that begins with `$` is reserved: receiving it
    /// shows that the peer is one of ours (see [`Sock::peer_understands_reserved`]).
    fn requests(&self) -> &'static [&'static str] {
        &[]
    }

    /// The notifications this extension handles with [`notification`](Self::notification),
    /// ahead of any handler of the same name; `$` names as for [`requests`](Self::requests).
    fn notifications(&self) -> &'static [&'static str] {
        &[]
    }

    /// A connection has started: its handshake is done, and neither the registry's
    /// `on_connect` hook nor the read loop has run yet, so nothing has arrived from the peer
    /// and a frame sent now is the first after the handshake.
    fn attach(&self, sock: &Sock) {
        let _ = sock;
    }

    /// The peer has just shown that it understands the reserved messages (after
    /// [`attach`](Self::attach); once per connection, and never for a peer that already did
    /// when the connection started).
    fn peer_understands_reserved(&self, sock: &Sock) {
        let _ = sock;
    }

    /// Answers a request for one of [`requests`](Self::requests). It runs on the read loop,
    /// past the request limits, so it must only check and queue, never wait on another peer.
    fn request<'a>(
        &'a self,
        sock: &'a Sock,
        op: &'a str,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
        let _ = (sock, payload);
        Box::pin(std::future::ready(Answer::Error(format!("unknown operation {op:?}"))))
    }

    /// Handles a notification for one of [`notifications`](Self::notifications), on the read
    /// loop, as [`request`](Self::request).
    fn notification<'a>(
        &'a self,
        sock: &'a Sock,
        name: &'a str,
        payload: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        let _ = (sock, name, payload);
        Box::pin(std::future::ready(()))
    }

    /// The connection has started closing, for `reason`: nothing more should be routed to it.
    /// Called once, before the registry's `on_close` hook.
    fn detach(&self, sock: &Sock, reason: &CloseReason) {
        let _ = (sock, reason);
    }

    /// One of the peer's requests is done: answered, refused, or given up with its
    /// connection. Called once per request but liveness probes (`$ping`), on the connection's
    /// tasks, just before the answer is queued (so a peer that has the answer knows it was
    /// counted); it must only count (metrics, say), never wait.
    fn request_done(&self, sock: &Sock, done: &RequestDone<'_>) {
        let _ = (sock, done);
    }
}

/// A request of the peer's that is done, as [`Extension::request_done`] hears of it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RequestDone<'a> {
    /// The name the op is registered under, by a handler or an extension's claim. `None` for
    /// an op that only a fallback serves or that nobody serves: the peer chose that name, so
    /// it must not become a metric's label (one per name would be unbounded).
    pub op: Option<&'a str>,
    /// How it ended.
    pub outcome: RequestOutcome,
    /// From its arrival (its first part, for a stream request) until its answer was ready:
    /// time spent waiting for a slot and for room in the send queue included.
    pub elapsed: Duration,
}

/// How a request ended, for [`RequestDone`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// Answered with a result (for a stream request: its result ended without error).
    Result,
    /// The handler (or extension) answered with an ErrorResult.
    Error,
    /// The handler panicked; the peer was sent an internal error, `[internal] internal error
    /// (ref …)`, and the reference logged with the panic's message.
    Panicked,
    /// Not taken now, with a RetryResult: a request or stream limit, the memory budget, or
    /// the server draining.
    Retry,
    /// Refused with an ErrorResult before any handler ran: a limit, the memory budget, an id
    /// already in flight, stream requests turned off.
    Refused,
    /// No handler and no fallback serves the op.
    Unknown,
    /// The connection closed before the answer was queued.
    Cancelled,
}

impl RequestOutcome {
    /// A short lowercase name for logs and metric labels: `result`, `error`, `panicked`,
    /// `retry`, `refused`, `unknown`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Result => "result",
            RequestOutcome::Error => "error",
            RequestOutcome::Panicked => "panicked",
            RequestOutcome::Retry => "retry",
            RequestOutcome::Refused => "refused",
            RequestOutcome::Unknown => "unknown",
            RequestOutcome::Cancelled => "cancelled",
        }
    }
}

/// What an [`Extension`] answers a request with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// A result with this payload.
    Result(Bytes),
    /// An ErrorResult with this text.
    Error(String),
    /// Not now: a RetryResult with this text, after the connection's
    /// [retry wait](crate::Config::retry_wait), for a peer that takes one; an ErrorResult with
    /// the text for another.
    Retry(String),
    /// The answer this future gives, sent when it is ready. The read loop goes on meanwhile,
    /// so an extension that waits on something slow (a bus between instances) holds up none of
    /// the peer's other messages; the extension bounds how many such answers a connection may
    /// have pending, and one still pending when the connection closes is dropped.
    Later(Later),
}

/// An answer to come: see [`Answer::Later`].
pub struct Later(pub(crate) Pin<Box<dyn Future<Output = Answer> + Send>>);

impl Later {
    /// The answer `future` will give.
    pub fn new(future: impl Future<Output = Answer> + Send + 'static) -> Self {
        Later(Box::pin(future))
    }
}

impl std::fmt::Debug for Later {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Later(..)")
    }
}

type Claims = Vec<(&'static str, Arc<dyn Extension>)>;

/// The extensions of a registry, with the names they claim. Every request and notification
/// is looked up here first; there are a few names at most, so a scan beats hashing the name.
#[derive(Clone, Default)]
pub(crate) struct Extensions {
    list: Vec<(TypeId, Arc<dyn Extension>)>,
    requests: Claims,
    notifications: Claims,
}

/// The extension that claims `name`.
fn claimant<'a>(claims: &'a Claims, name: &str) -> Option<&'a Arc<dyn Extension>> {
    claims.iter().find(|(claimed, _)| *claimed == name).map(|(_, extension)| extension)
}

/// Claims `names` for `extension`, taking them from whoever claimed them before.
fn claim(claims: &mut Claims, names: &[&'static str], extension: &Arc<dyn Extension>) {
    for name in names {
        claims.retain(|(claimed, _)| claimed != name);
        claims.push((name, extension.clone()));
    }
}

impl Extensions {
    /// Adds `extension`, in place of one of the same type: a registry holds each kind once.
    /// A name two extensions claim goes to the one added last.
    pub(crate) fn add<E: Extension>(&mut self, extension: E) {
        let entry = (TypeId::of::<E>(), Arc::new(extension) as Arc<dyn Extension>);
        match self.list.iter_mut().find(|(kind, _)| *kind == entry.0) {
            Some(slot) => *slot = entry,
            None => self.list.push(entry),
        }
        self.requests.clear();
        self.notifications.clear();
        for (_, extension) in &self.list {
            claim(&mut self.requests, extension.requests(), extension);
            claim(&mut self.notifications, extension.notifications(), extension);
        }
    }

    /// True when no extension is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Extension>> {
        self.list.iter().map(|(_, extension)| extension)
    }

    /// The extension that answers requests for `op`.
    pub(crate) fn request(&self, op: &str) -> Option<&Arc<dyn Extension>> {
        claimant(&self.requests, op)
    }

    /// The extension that answers requests for `op`, with the name as it claimed it.
    pub(crate) fn request_claim(&self, op: &str) -> Option<(&'static str, &Arc<dyn Extension>)> {
        self.requests.iter().find(|(claimed, _)| *claimed == op).map(|(name, e)| (*name, e))
    }

    /// Tells every extension that a request is done.
    pub(crate) fn request_done(&self, sock: &Sock, done: &RequestDone<'_>) {
        for (_, extension) in &self.list {
            crate::handlers::call_hook("extension request_done", || {
                extension.request_done(sock, done)
            });
        }
    }

    /// The extension that handles notification `name`.
    pub(crate) fn notification(&self, name: &str) -> Option<&Arc<dyn Extension>> {
        claimant(&self.notifications, name)
    }

    /// True for a reserved request an extension claims: only a peer of ours sends one.
    pub(crate) fn reserves_request(&self, op: &str) -> bool {
        op.starts_with('$') && self.request(op).is_some()
    }

    /// True for a reserved notification an extension claims.
    pub(crate) fn reserves_notification(&self, name: &str) -> bool {
        name.starts_with('$') && self.notification(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Wide;
    impl Extension for Wide {
        fn requests(&self) -> &'static [&'static str] {
            &["x", "$wide"]
        }
    }

    struct Narrow;
    impl Extension for Narrow {
        fn requests(&self) -> &'static [&'static str] {
            &["x"]
        }
    }

    #[test]
    fn a_name_goes_to_the_extension_added_last_and_each_kind_is_held_once() {
        let mut extensions = Extensions::default();
        extensions.add(Wide);
        extensions.add(Narrow);
        extensions.add(Wide);
        assert_eq!(extensions.iter().count(), 2, "the second Wide replaced the first");
        let claimant = |op| extensions.request(op).map(|e| e.requests().len());
        assert_eq!(claimant("x"), Some(1), "Narrow was added after Wide took its place");
        assert_eq!(claimant("$wide"), Some(2));
        assert_eq!(claimant("y"), None);
        assert!(extensions.reserves_request("$wide"));
        assert!(!extensions.reserves_request("x"), "not a reserved name");
        assert!(!extensions.reserves_request("$other"), "claimed by nobody");
        assert!(extensions.notification("x").is_none());
    }
}
