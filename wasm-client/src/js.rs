//! What the client needs from JavaScript: timers, and the host object in gotalk.js that owns
//! the page-facing API (handlers, events).

use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// The JavaScript side of one Sock, written in gotalk.js. Every method guards the page's
    /// own code with try/catch; `catch` here keeps a fault in gotalk.js itself from
    /// unwinding through the client.
    pub type Host;

    /// Emits a Sock event (`open`, `close`, `heartbeat`, `state`) to the page's listeners.
    #[wasm_bindgen(method, catch)]
    pub fn emit(this: &Host, name: &str, arg: &JsValue) -> Result<(), JsValue>;

    /// A request from the peer; the page answers through `Core.reply`/`replyError` with the
    /// same `conn` and `id`.
    #[wasm_bindgen(method, catch)]
    pub fn request(
        this: &Host,
        op: &str,
        payload: Uint8Array,
        conn: u32,
        id: u32,
    ) -> Result<(), JsValue>;

    /// The peer opened a streaming request; its parts follow through `part`.
    #[wasm_bindgen(method, catch)]
    pub fn stream(this: &Host, op: &str, conn: u32, id: u32) -> Result<(), JsValue>;

    /// A part of a streaming request from the peer: a `Uint8Array`, `null` at its end, or an
    /// `Error` when the connection was lost first.
    #[wasm_bindgen(method, catch)]
    pub fn part(this: &Host, conn: u32, id: u32, payload: &JsValue) -> Result<(), JsValue>;

    /// A notification from the peer.
    #[wasm_bindgen(method, catch)]
    pub fn notification(this: &Host, name: &str, payload: Uint8Array) -> Result<(), JsValue>;

    /// A part of the result of one of the page's stream requests.
    #[wasm_bindgen(method, catch, js_name = streamData)]
    pub fn stream_data(this: &Host, token: u32, payload: Uint8Array) -> Result<(), JsValue>;

    /// The end of one of the page's stream requests: `null`, or the `Error` it failed with.
    #[wasm_bindgen(method, catch, js_name = streamEnd)]
    pub fn stream_end(this: &Host, token: u32, error: &JsValue) -> Result<(), JsValue>;

    /// `navigator.onLine`, or true where there is no navigator.
    #[wasm_bindgen(method)]
    pub fn online(this: &Host) -> bool;

    /// The global `setTimeout`; its handle is opaque.
    #[wasm_bindgen(js_name = setTimeout)]
    pub fn set_timeout(callback: &JsValue, ms: f64) -> JsValue;

    /// The global `clearTimeout`.
    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(handle: &JsValue);
}
