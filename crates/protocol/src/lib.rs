//! The gotalk wire codec: message types, the version handshake and an incremental decoder.
//!
//! gotalk multiplexes requests, streams, notifications and heartbeats over one byte stream.
//! This crate turns that byte stream into [`Frame`]s and back and does nothing else: no
//! sockets, no timers, no async runtime. The server, the TCP and WebSocket transports and the
//! browser client (compiled to `wasm32-unknown-unknown`) all share it, so there is exactly one
//! codec in the project.
//!
//! Decoding is incremental and bounded: [`Decoder::decode`] returns `Ok(None)` when it needs
//! more bytes, an error for bytes that can never become a valid message, and it checks a
//! declared payload size against [`Decoder::max_payload`] before anything is allocated for it.
//! Encoding cannot fail.
//!
//! # Layout
//! - [`frame`]: the ten message types, request ids, names and protocol error codes.
//! - [`hex`]: the fixed-width hexadecimal numbers the wire format is made of.
//! - [`encode`]: writing frames and the version handshake.
//! - [`error_text`]: an ErrorResult's text with an optional error code in front.
//! - [`decode`]: the incremental decoder and its limits.
//! - [`relay`]: the relay's reserved names and its JSON envelope, validated; [`session`]:
//!   the token of a resumable relay session.
//! - [`sources`]: many streams answering one request, as tagged parts of one stream (the
//!   whole mapping: [`docs::sources`]).
//! - [`liveness`]: probes and their answers, as a state machine fed timestamps.
//! - [`reserved`]: which peers may be sent the reserved `$` messages, and the hello by which
//!   our peers recognise each other.
//! - [`backoff`], [`keepalive`]: when a client reconnects (exponential backoff with jitter),
//!   shared by the browser client and the Rust keepalive client so both spread a crowd alike.
//!
//! # Examples
//! ```
//! use bytes::BytesMut;
//! use gotalk_protocol::{Decoder, Frame, Id, Name};
//!
//! let frame = Frame::SingleRequest {
//!     id: Id(*b"0001"),
//!     op: Name::new("echo").unwrap(),
//!     payload: "{\"message\":\"Hello World\"}".into(),
//! };
//! let mut wire = BytesMut::new();
//! frame.encode(&mut wire);
//! assert_eq!(&wire[..], b"r0001004echo00000019{\"message\":\"Hello World\"}");
//!
//! let mut decoder = Decoder::new();
//! assert_eq!(decoder.decode(&mut wire).unwrap(), Some(frame));
//! assert!(wire.is_empty());
//! ```

#![forbid(unsafe_code)]

pub mod backoff;
pub mod decode;
pub mod docs;
pub mod encode;
pub mod error_text;
pub mod frame;
pub mod hex;
pub mod keepalive;
pub mod liveness;
#[cfg(feature = "relay")]
pub mod relay;
pub mod reserved;
pub mod retry;
#[cfg(feature = "relay")]
pub mod session;
pub mod sources;

pub use decode::{decode_version, DecodeError, Decoder, COPY_BELOW, DEFAULT_MAX_PAYLOAD};
pub use encode::encode_version;
pub use frame::{Frame, Id, MsgType, Name, NameTooLong, ProtocolErrorCode, MAX_NAME_LEN, VERSION};
