//! gotalk for Rust: bidirectional requests, streams and notifications over one connection.
//!
//! Either side of a gotalk connection can expose operations and call the other's. Requests,
//! streaming requests and results, notifications and heartbeats are multiplexed over a
//! single TCP or WebSocket connection, in the wire format of the Go package and gotalk.js,
//! byte for byte. This crate is the Rust peer: a [`Sock`] per connection, a shared
//! [`Handlers`] registry, per-connection limits in [`Config`], the TCP (and TLS) transport,
//! and WebSocket framing for clients and for servers. The `gotalk-gateway` crate serves it to
//! browsers from an axum app, on the same registry as TCP.
//!
//! Unlike the reference peers, every limit is enforced before memory is spent: payload size,
//! name length, requests and streams in flight, queued bytes, handshake, read and write
//! timeouts. Handlers never run on the read loop, a panicking handler costs one ErrorResult,
//! and a pending request always resolves, with an error that says why if the connection
//! ended.
//!
//! # Layout
//! The types of one connection are at the root: [`Sock`] (requests both ways, streams,
//! notifications, heartbeats), [`Handlers`] (the registry of operations and notifications),
//! [`Config`] (limits, timeouts, liveness), [`Connections`] (the live connections of a
//! listener or gateway), [`Error`] and [`CloseReason`], and [`MemoryBudget`] (what every byte
//! held on a peer's behalf is charged to). Each has this one path. The modules:
//! - [`tcp`]: the TCP listener and client, with optional TLS; [`tls`]: TLS settings from PEM.
//! - [`ws`]: WebSocket framing for servers (the gateway) and the WebSocket client.
//! - [`keepalive`]: a client connection that reconnects with backoff and holds calls while
//!   it is down.
//! - [`Extension`]: the point add-ons plug into: hooks on every connection and on every
//!   finished request ([`RequestDone`], for metrics), and request and notification names
//!   they answer ahead of the handlers (the relay and sources below are built on it).
//! - [`listen`]: accepting connections within limits, shared by every listener.
//! - [`transport`]: byte streams (TCP, TLS, in-memory) as frame readers and writers.
//! - [`metrics`]: liveness counts of a registry's connections.
//! - [`middleware`]: tower layers around operations (auth, metrics, rate limits), on all ops
//!   or by name or prefix. What a failing handler's peer may read is [`HandlerError`]'s
//!   choice, and [`RemoteError`] reads it back.
//! - [`protocol`]: the wire codec (the `gotalk-protocol` crate).
//! - [`docs`]: the guides, one topic each: [using the library](docs::usage),
//!   [safe errors and middleware](docs::errors_and_middleware),
//!   [memory budgets](docs::memory), [liveness](docs::liveness), the relay (`docs::relay`),
//!   sources (`docs::sources`), [the keepalive client](docs::keepalive). The limits table and
//!   the project's other documents are in the repository's `docs/` folder.
//!
//! # Features
//! The add-ons are built on the extension point and the public API, each behind a cargo
//! feature, on by default; without them the core builds alone.
//! - `relay`: the module `relay`: peers address each other by id and topic through the
//!   server.
//! - `sources`: the module `sources`: one request answered by many streams (sources), each
//!   with a header and frames, with credit, limits and timeouts.
//!
//! # Examples
//! ```no_run
//! use std::sync::Arc;
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut handlers = gotalk::Handlers::new();
//! handlers.handle("echo", |_sock, text: String| async move { Ok::<_, String>(text) });
//! let handlers = Arc::new(handlers);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = gotalk::tcp::Server::new(handlers.clone(), Default::default());
//! tokio::spawn(server.run(listener, std::future::pending::<()>()));
//!
//! let sock = gotalk::tcp::connect(addr, handlers, Default::default()).await?;
//! let echoed: String = sock.request("echo", "hello").await?;
//! assert_eq!(echoed, "hello");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod config;
mod connections;
pub mod docs;
mod error;
mod extension;
mod handler_error;
mod handlers;
pub mod keepalive;
mod linger;
pub mod listen;
mod memory;
pub mod metrics;
pub mod middleware;
mod per_addr;
mod queue;
mod refusal;
#[cfg(feature = "relay")]
pub mod relay;
mod sock;
#[cfg(feature = "sources")]
pub mod sources;
pub mod tcp;
pub mod tls;
pub mod transport;
pub mod ws;

pub use config::Config;
pub use connections::Connections;
pub use error::{CloseReason, Error};
pub use extension::{Answer, Extension, Later, RequestDone, RequestOutcome};
pub use gotalk_protocol as protocol;
pub use gotalk_protocol::liveness::{Event as LivenessEvent, LivenessConfig};
pub use handler_error::{BoxError, HandlerError, RemoteError};
pub use handlers::Handlers;
pub use memory::{Exhausted, MemoryBudget, DEFAULT_PROCESS_BUDGET};
pub use refusal::Refusal;
pub use sock::{
    ConnInfo, Heartbeat, Sock, StreamInput, StreamOutput, StreamRequest, StreamResponse,
    TransportKind, UpgradeRequest, WithTimeout,
};

/// Locks a table. Every critical section in this crate is a single map or field operation,
/// so a panic while one is held cannot leave it half-changed: a poisoned lock is used as is.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
