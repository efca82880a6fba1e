//! The gotalk browser client, compiled to wasm and loaded by `/gotalk/gotalk.js`.
//!
//! gotalk.js keeps the API pages already use (`gotalk.connection()`, `sock.request()`, …)
//! and hands every byte on the wire to [`Core`](core::Core), which speaks gotalk through
//! `gotalk-protocol`: the same codec the server uses. Nothing on the wire goes through a
//! second codec in JavaScript (the header helpers gotalk.js 1.2.1 exported are kept for
//! pages, not used), so payload sizes are always counted in UTF-8 bytes.
//!
//! The parts that decide things without I/O ([`backoff`], [`deadline`], [`keepalive`],
//! [`liveness`], [`outbox`]) are plain Rust with native unit tests; [`core`] is the
//! browser-facing part.
//! The reconnect schedule and its state machine live in `gotalk-protocol`, because the Rust
//! client (`gotalk::keepalive`) reconnects by the same rules.

#![forbid(unsafe_code)]

pub use gotalk_protocol::{backoff, keepalive};

pub mod core;
pub mod deadline;
mod js;
pub mod liveness;
pub mod outbox;
pub mod sources;
mod table;
mod text;
