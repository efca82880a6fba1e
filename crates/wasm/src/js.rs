//! What the client needs from JavaScript: timers, and the host object in gotalk.js that owns
//! the page-facing API (handlers, events).

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

    /// Hands the page something from the peer (see `ON_` in core): `kind` says what,
    /// `name` is the operation or notification, `a` and `b` the connection and request id
    /// (or the stream token), and `payload` a Uint8Array, `null` or an Error.
    #[wasm_bindgen(method, catch)]
    pub fn on(
        this: &Host,
        kind: u32,
        name: &str,
        a: u32,
        b: u32,
        payload: &JsValue,
    ) -> Result<(), JsValue>;

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
