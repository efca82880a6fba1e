//! The gotalk browser client, compiled to wasm and loaded by `/gotalk/gotalk.js`.
//!
//! gotalk.js keeps the API pages already use (`gotalk.connection()`, `sock.request()`, …)
//! and hands every byte on the wire to [`Core`](core::Core), which speaks gotalk through
//! `gotalk-protocol`: the same codec the server uses. There is no second codec in
//! JavaScript, so payload sizes are always counted in UTF-8 bytes.
//!
//! The parts that decide things without I/O ([`backoff`], [`keepalive`], [`liveness`],
//! [`outbox`]) are plain Rust with native unit tests; [`core`] is the browser-facing part.
//! The reconnect schedule and its state machine live in `gotalk-protocol`, because the Rust
//! client (`gotalk::keepalive`) reconnects by the same rules.

#![forbid(unsafe_code)]

pub use gotalk_protocol::{backoff, keepalive};

pub mod core;
mod js;
pub mod liveness;
pub mod outbox;
pub mod sources;
mod table;
mod text;
