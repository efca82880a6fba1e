//! Sources: one request answered by many streams, each with a header and its own frames.
//!
//! A search fanned out to shards, a tail of several log files, a job reporting several
//! artefacts: the answer is a stream of *sources*, each a header and a stream of frames, and
//! each ending either completed or aborted. All of it travels inside one gotalk streaming
//! request on the connection the request came in on, so it works over TCP and WebSocket and
//! from the browser; the wire mapping is `gotalk_protocol::sources` (and
//! [`gotalk_protocol::docs::sources`]).
//!
//! The server side is a [`SourceService`] registered under an op name. The service returns a
//! stream of [`Source`]s; a scheduler announces them while fewer than
//! [`max_open`](SourceService::max_open) are open and the client has source credit, and takes
//! frames from the open ones in turn, only from those the client has granted frame credit.
//! Nothing is buffered: a producer is polled only when its frame can be sent, so a consumer
//! that stops granting credit stops its producers too, and a source whose consumer gives no
//! credit for the [`stall_timeout`](SourceService::stall_timeout) is aborted. Cancelling a
//! source, all of them, or losing the connection drops the producers.
//!
//! The client side is [`lookup_and_post`], which returns [`Sources`]: each [`RemoteSource`]
//! has its header, the server's address and its frames, and refills its credit as frames are
//! read.
//!
//! # Layout
//! - `service`: [`SourceService`], its settings and [`Source`].
//! - `schedule`: the server's scheduler: credit, round-robin, timeouts, cancellation.
//! - `client`: [`lookup_and_post`], [`Sources`], [`RemoteSource`].

mod client;
mod schedule;
mod service;

pub use client::{lookup_and_post, RemoteSource, SourceError, Sources, SourcesOptions};
pub use service::{Source, SourceService};
