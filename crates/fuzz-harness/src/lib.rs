//! The checks the fuzz targets in `fuzz/` run on each input, as plain functions.
//!
//! Each function takes the fuzzer's bytes and panics when a property of the product fails;
//! anything else (an error, a refused connection) is a correct answer to bad input. They live
//! in a workspace crate rather than in `fuzz/` so that stable `cargo test` replays every
//! committed corpus input and every crash found (`tests/replay.rs`) without nightly.

#![forbid(unsafe_code)]

pub mod decode;
pub mod relay;
pub mod runtime;
pub mod sock;
pub mod sources;
pub mod ws;

/// A fuzz target's check: panics when the input breaks a property of the product.
pub type Check = fn(&[u8]);

/// The fuzz targets, by the name of their file in `fuzz/fuzz_targets/` and of their corpus
/// directory, with the check each runs.
pub const TARGETS: [(&str, Check); 6] = [
    ("decode_frames", decode::decode_frames),
    ("sock_server", sock::sock_server),
    ("sock_client", sock::sock_client),
    ("ws_bridge", ws::ws_bridge),
    ("relay_envelope", relay::relay_envelope),
    ("sources_control", sources::sources_control),
];
