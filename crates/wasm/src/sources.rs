//! Sources in the browser: reading the result parts of `gotalk_protocol::sources` for
//! gotalk.js, with the server's own codec.
//!
//! gotalk.js keeps the per-source state (queues, credit, events) and writes the control
//! parts, which are a few ASCII characters each. The browser never declares LZ4 in its open
//! prefix, so the server never compresses for it and the bundle carries no decompressor; a
//! compressed part arriving anyway is malformed.

use gotalk_protocol::sources::Part;
use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;

/// Reads a result part: `tag × 2³² + source`, the body starting at byte 9; -1 for a part
/// that is malformed (or compressed, which this client never asks for).
#[wasm_bindgen]
pub fn source_part(payload: &Uint8Array) -> f64 {
    let payload = payload.to_vec();
    match Part::decode(&payload) {
        Ok(Part::Compressed { .. }) | Err(_) => -1.0,
        Ok(part) => f64::from(payload[0]) * 4_294_967_296.0 + f64::from(part.source()),
    }
}
