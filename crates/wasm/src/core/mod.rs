//! One gotalk connection over a browser WebSocket: the protocol state behind a gotalk.js Sock.
//!
//! gotalk.js builds the page-facing API (events, handler tables, JSON) on top of [`Core`];
//! everything on the wire happens here, through `gotalk-protocol`.
//!
//! Re-entrancy: any call into the page (an event listener, a handler) may call straight back
//! into the Core. So state lives in a `RefCell` that is never borrowed across such a call:
//! each entry point works on the state, collects what the page must hear as effects,
//! releases the borrow, and only then delivers them.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use bytes::{Bytes, BytesMut};
// The reserved messages: `$ping` is answered here, echoing its payload (the cookie), and never
// shown to the page; `$done` (a server shutting down gracefully) becomes the `done` event.
use gotalk_protocol::liveness::{DONE, PING_OP as PING};
use gotalk_protocol::{decode_version, Decoder, Frame, Id, Name, ProtocolErrorCode, VERSION};
use js_sys::{ArrayBuffer, Date, Math, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::backoff::Backoff;
use crate::deadline::{Deadline, DEFAULT_RETRY_TIMEOUT_MS};
use crate::js::{clear_timeout, set_timeout, Host};
use crate::keepalive::{refuses_client, Closed, KeepAlive, Next};
use crate::liveness::Silence;
use crate::outbox::Outbox;
use crate::table::Table;
use crate::text;

mod socket;
mod state;

/// WebSocket close code of a server that is restarting or shutting down.
const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code of a server refusing a message over its size limit.
const CLOSE_TOO_BIG: u16 = 1009;
/// gotalk.js closes with 4000 + the protocol error code; so do we.
const CLOSE_PROTOCOL_BASE: u16 = 4000;

/// The protocol state of one Sock, shared by gotalk.js and the socket's event handlers.
#[wasm_bindgen]
pub struct Core {
    inner: Rc<Inner>,
}

struct Inner {
    host: Host,
    state: RefCell<State>,
}

/// A request of the page's, sent or waiting to be.
struct Call {
    op: Name,
    payload: Bytes,
    /// The page's number for it: its promise is settled through `ON_SETTLE`.
    token: u32,
    /// RetryResults honoured so far.
    retries: u32,
    /// Past it, a RetryResult fails the call instead of sending it again.
    deadline: Deadline,
    /// Parts gathered when the peer answers with a streaming result.
    parts: BytesMut,
}

enum Pending {
    Single(Call),
    /// One of the page's stream requests, by token.
    Stream(u32),
}

/// A write made while disconnected.
enum Outgoing {
    Request(Call),
    Notify(Name, Bytes),
    Part { token: u32, payload: Bytes, end: bool },
}

/// One of the page's stream requests.
struct StreamOut {
    op: Name,
    /// Its id once its first part is on the wire, and the connection it went out on.
    sent: Option<(u32, Id)>,
    ended: bool,
}

/// The open WebSocket and the handlers that must live as long as it does.
struct Conn {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut()>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

/// Something the page must hear once the state is no longer borrowed.
enum Effect {
    Emit(&'static str, JsValue),
    Settle(u32, JsValue),
    Request { op: Name, payload: Bytes, conn: u32, id: u32 },
    Stream { op: Name, conn: u32, id: u32 },
    Part { conn: u32, id: u32, payload: JsValue },
    Notification { name: Name, payload: Bytes },
    StreamData { token: u32, payload: Bytes },
    StreamEnd { token: u32, error: JsValue },
}

struct State {
    url: String,
    /// Numbers each WebSocket, so events and replies meant for an earlier one are ignored.
    conn_no: u32,
    conn: Option<Conn>,
    /// A socket gotalk.js opened while the wasm was loading, for the first connection.
    early: Option<WebSocket>,
    /// The connection whose version gotalk.js sent already, with requests made while the
    /// wasm loaded (`SET_EARLY`): its open does not send the version again.
    early_version: Option<u32>,
    /// The socket is open and writable.
    open: bool,
    /// The socket opened (it may since have failed); decides whether `close` is emitted.
    connected: bool,
    /// Bumped for every scheduled reconnect, so a superseded timer does nothing.
    reconnect_seq: u32,
    max_payload: u32,
    /// `end()` was called.
    ended: bool,
    /// `end()` was called with results outstanding: close once they are in.
    close_when_idle: bool,
    keep: Option<KeepAlive>,
    reconnect_timer: Option<JsValue>,
    heartbeat_timer: Option<JsValue>,
    heartbeat_ms: f64,
    /// The next check for a server gone silent.
    check_timer: Option<JsValue>,
    /// An error decided here (a protocol fault) to report when the socket closes.
    close_error: Option<JsValue>,
    /// The code of a ProtocolError the server sent, reported with its close code and reason.
    server_fault: Option<u32>,

    decoder: Decoder,
    inbuf: BytesMut,
    got_version: bool,
    /// What has arrived and when, to tell a server that went silent.
    silence: Silence,

    next_id: u32,
    pending: Table<Id, Pending>,
    streams: Table<u32, StreamOut>,
    /// The peer's streaming requests still receiving parts.
    incoming: Table<Id, ()>,
    outbox: Outbox<Outgoing>,
    /// The server said `$done` on this connection: new requests wait for the next one.
    server_done: bool,
    /// Whether a connection that opens keeps the queue held (`SET_HOLD`): the page has its
    /// own messages to send first (a session to resume, an app that rejoins).
    hold: bool,
    /// The queue waits on this connection until the page releases it (`SEND_RELEASE`);
    /// new writes go out meanwhile, ahead of it.
    held: bool,
    /// RetryResults honoured per call: no bound unless the page sets `maxRetries`.
    max_retries: u32,
    /// How long after a call is made RetryResults are honoured (ms).
    retry_timeout: f64,
    /// Handlers of closed sockets, dropped on a later turn: a handler may be the one
    /// running when its socket is retired.
    graveyard: Vec<Conn>,

    state_name: &'static str,
    effects: Vec<Effect>,
    /// Requests to send again after a RetryResult's wait (ms); timers need the `Inner`.
    retries: Vec<(f64, Call)>,
    /// Tokens of requests the page gave up on before they went out (queued for the
    /// connection, or waiting to be sent again after a RetryResult): dropped at their turn.
    cancelled: Vec<u32>,
    /// Whether a reconnect should be scheduled (set by the state, acted on by `Inner`).
    next: Next,
}

fn error(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
}

/// A peer's ErrorResult as an Error with the text as its message and, when the text begins
/// with an error code (`[not_found] no such room`, see `gotalk_protocol::error_text`), that
/// code as the string `code`.
fn remote_error(text: &str) -> JsValue {
    let err = error(text);
    if let (Some(code), _) = gotalk_protocol::error_text::split(text) {
        let _ = js_sys::Reflect::set(&err, &"code".into(), &code.into());
    }
    err
}

/// An Error marked as gotalk.js marks a protocol error, so pages written for it can tell:
/// `isGotalkProtocolError` and the protocol error `code`.
fn protocol_error(message: &str, code: u32) -> JsValue {
    let err = error(message);
    let _ = js_sys::Reflect::set(&err, &"isGotalkProtocolError".into(), &JsValue::TRUE);
    let _ = js_sys::Reflect::set(&err, &"code".into(), &f64::from(code).into());
    err
}

fn bytes_to_js(bytes: &[u8]) -> Uint8Array {
    Uint8Array::from(bytes)
}

/// A payload from the page: a string (sent as UTF-8), a Uint8Array, an ArrayBuffer, or
/// nothing.
fn payload_from_js(value: &JsValue) -> Result<Bytes, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(Bytes::new());
    }
    if let Some(text) = value.as_string() {
        return Ok(Bytes::from(text.into_bytes()));
    }
    if let Some(array) = value.dyn_ref::<Uint8Array>() {
        return Ok(Bytes::from(array.to_vec()));
    }
    if let Some(buffer) = value.dyn_ref::<ArrayBuffer>() {
        return Ok(Bytes::from(Uint8Array::new(buffer).to_vec()));
    }
    Err(error("gotalk: a payload must be a string, a Uint8Array or an ArrayBuffer"))
}

fn name(value: &str) -> Result<Name, JsValue> {
    Name::new(value).map_err(|_| error("gotalk: names are at most 4095 bytes of UTF-8"))
}

fn id_u32(id: Id) -> u32 {
    u32::from_le_bytes(id.0)
}

fn now() -> f64 {
    Date::now()
}

// What `Host::on` hands the page, by its first argument.
/// A request from the peer; the page answers through `answer`.
const ON_REQUEST: u32 = 0;
/// The peer opened a streaming request; its parts follow as `ON_PART`.
const ON_STREAM: u32 = 1;
/// A part of the peer's streaming request: a Uint8Array, `null` at its end, or an Error when
/// the connection was lost first.
const ON_PART: u32 = 2;
/// A notification from the peer.
const ON_NOTIFICATION: u32 = 3;
/// A part of the result of one of the page's stream requests.
const ON_STREAM_DATA: u32 = 4;
/// The end of one of the page's stream requests: `null`, or the Error it failed with.
const ON_STREAM_END: u32 = 5;
/// The outcome of the page's request: its result, a Uint8Array, or an Error.
const ON_SETTLE: u32 = 6;

// What `send`, `answer`, `event`, `get` and `set` do, by their first argument. One export
// per family rather than one per operation: every export costs glue in gotalk.js and a shim
// in the wasm, and the bundle has a size budget.

/// `send` kinds.
const SEND_NOTIFY: u32 = 0;
const SEND_STREAM: u32 = 1;
/// Sends what waited for a held connection (the payload `null`), or fails it with the
/// payload (an Error, which requests reject with).
const SEND_RELEASE: u32 = 2;
/// `answer` kinds: a result, an error result, a part of a streaming result, its end.
const ANSWER_RESULT: u32 = 0;
const ANSWER_ERROR: u32 = 1;
const ANSWER_PART: u32 = 2;
const ANSWER_END: u32 = 3;
/// `event` kinds.
/// The browser came online (`value` 1) or went offline (0: a pending reconnect waits for
/// the next `online` instead).
const EVENT_ONLINE: u32 = 0;
const EVENT_VISIBLE: u32 = 1;
const EVENT_HEARTBEAT: u32 = 2;
/// The page gave up on its request `value` (a timeout or an AbortSignal): it is not sent if
/// it has not been, and its result is dropped when it comes. (A stream request given up on
/// is ended by the page as any other, and its result parts go unheard.)
const EVENT_CANCEL: u32 = 3;
/// The page wants a keepalive that was refused (or is waiting) to connect again now
/// (`resume()`, after a login).
const EVENT_RESUME: u32 = 4;
/// `get` kinds.
const GET_STATE: u32 = 0;
const GET_NEXT_RECONNECT: u32 = 1;
const GET_ADDRESS: u32 = 2;
const GET_QUEUED: u32 = 3;
/// `set` kinds.
const SET_HEARTBEAT_MS: u32 = 0;
const SET_SEND_LIMIT: u32 = 1;
/// Nonzero: each connection that opens from now on holds the queue until `SEND_RELEASE`.
const SET_HOLD: u32 = 2;
/// gotalk.js sent the version and requests with ids below the value on the early socket the
/// Core has just taken over (see `adopt`): the version is not sent again, and ids go on from
/// there, so no answer still on its way for one of those can be taken for another's.
const SET_EARLY: u32 = 3;

#[wasm_bindgen]
impl Core {
    /// A Core reporting to `host`, the Sock object of gotalk.js.
    #[wasm_bindgen(constructor)]
    pub fn new(host: Host) -> Core {
        Core { inner: Rc::new(Inner { host, state: RefCell::new(State::new()) }) }
    }

    /// Connects to `url`; with `keepalive`, reconnects until `end()`. `options` may set
    /// `min`, `max`, `factor`, `jitter` (the backoff), `retryTimeout`, `maxRetries`,
    /// `sendLimit`, `maxPayload`, `deadAfter` and `refusedRetry`. `early` is a socket gotalk.js opened on
    /// that address while the wasm was loading; the first connection takes it over.
    pub fn open(
        &self,
        url: String,
        keepalive: bool,
        options: &JsValue,
        early: Option<WebSocket>,
    ) -> Result<(), JsValue> {
        let options = socket::Options::read(options)?;
        let busy = self.inner.with(|s| {
            if s.conn.is_some() {
                return true;
            }
            s.url = url;
            s.early = early;
            s.ended = false;
            s.keep = keepalive.then(|| {
                let mut keep = KeepAlive::new(options.backoff);
                keep.refused_wait(options.refused_retry.map(f64::from).filter(|ms| *ms > 0.0));
                keep
            });
            s.silence.dead_after(options.dead_after.map(f64::from));
            if let Some(n) = options.max_retries {
                s.max_retries = n;
            }
            if let Some(ms) = options.retry_timeout {
                s.retry_timeout = f64::from(ms);
            }
            if let Some(n) = options.send_limit {
                s.outbox.set_limit(n);
            }
            if let Some(n) = options.max_payload {
                s.max_payload = n;
                s.decoder.max_payload(n);
            }
            false
        });
        if busy {
            return Err(error("gotalk: the socket is already open"));
        }
        self.inner.connect();
        Ok(())
    }

    /// Sends a request with a raw payload; `token` is the page's number for it. Its outcome
    /// comes back as `ON_SETTLE`: the result's bytes, or an Error carrying the server's
    /// message or saying the connection was lost. Throws on a name or payload it cannot send.
    ///
    /// The page keeps the promise: a promise made here would cost a closure, a call back
    /// into the page and several handles per request.
    pub fn request(&self, op: &str, payload: &JsValue, token: u32) -> Result<(), JsValue> {
        let op = name(op)?;
        let payload = payload_from_js(payload)?;
        self.inner.with(|s| {
            let call = s.call(op, payload, token);
            if let Err((err, item)) = s.write(Outgoing::Request(call)) {
                s.fail_outgoing(item, &err);
            }
        });
        Ok(())
    }

    /// A request gotalk.js sent as `id` on the early socket while the wasm loaded, and not
    /// yet answered: from now on it is the Core's, as if `request` had sent it (its result,
    /// a RetryResult, a lost connection, `EVENT_CANCEL`).
    pub fn adopt(&self, id: u32, op: &str, payload: &JsValue, token: u32) -> Result<(), JsValue> {
        let op = name(op)?;
        let payload = payload_from_js(payload)?;
        self.inner.with(|s| {
            let call = s.call(op, payload, token);
            s.pending.insert(Id::from_u32(id), Pending::Single(call));
        });
        Ok(())
    }

    /// Sends something that is not a request: a notification `name` (`SEND_NOTIFY`), or a
    /// part of the page's stream request `token` for operation `name` (`SEND_STREAM`; the
    /// first part opens it, an empty part ends it). Throws when the send queue is full or
    /// the socket is closed. `SEND_RELEASE` ends a hold (see `SET_HOLD`): what waited is
    /// sent in order, or, with an Error as the payload, failed with it.
    pub fn send(
        &self,
        kind: u32,
        token: u32,
        name_: &str,
        payload: &JsValue,
    ) -> Result<(), JsValue> {
        if kind == SEND_RELEASE {
            self.inner.with(|s| s.release(payload));
            return Ok(());
        }
        let payload = payload_from_js(payload)?;
        let name_ = name(name_)?;
        self.inner.with(|s| {
            let item = match kind {
                SEND_NOTIFY => Outgoing::Notify(name_, payload),
                SEND_STREAM => {
                    let end = payload.is_empty();
                    match s.streams.get_mut(token) {
                        Some(stream) if stream.ended => return Ok(()),
                        Some(stream) => stream.ended = end,
                        None => {
                            s.streams.insert(token, StreamOut { op: name_, sent: None, ended: end })
                        }
                    }
                    Outgoing::Part { token, payload, end }
                }
                _ => return Err(error("gotalk: unknown send kind")),
            };
            s.write(item).map_err(|(err, _)| err)
        })
    }

    /// Answers the peer's request `id` on connection `conn` (see the `ANSWER_` kinds). A
    /// payload that is not a string, Uint8Array or ArrayBuffer becomes an ErrorResult, so the
    /// peer is never left waiting. An answer for an earlier connection is dropped: no one is
    /// left to receive it.
    pub fn answer(&self, kind: u32, conn: u32, id: u32, payload: &JsValue) {
        let id = Id::from_u32(id);
        let frame = match (kind, payload_from_js(payload)) {
            (ANSWER_RESULT, Ok(payload)) => Frame::SingleResult { id, payload },
            (ANSWER_ERROR, Ok(payload)) => Frame::ErrorResult { id, payload },
            // An empty part would end the stream on the wire.
            (ANSWER_PART, Ok(payload)) if payload.is_empty() => return,
            (ANSWER_PART, Ok(payload)) => Frame::StreamResult { id, payload },
            (ANSWER_END, _) => Frame::StreamResult { id, payload: Bytes::new() },
            _ => Frame::ErrorResult {
                id,
                payload: Bytes::from_static(b"the page answered with an unsupported value"),
            },
        };
        self.inner.with(|s| {
            if s.conn_no == conn && s.open {
                s.send(&frame);
            }
        });
    }

    /// Stops reconnecting and closes once outstanding results are in; a second call closes
    /// at once. Messages still queued fail.
    pub fn end(&self) {
        self.inner.with(State::end);
    }

    /// Tells the Core something happened: the browser came online or went offline (drop a
    /// pending reconnect until it is online), the page became visible
    /// (retry a pending reconnect now; give up on an open connection that went silent, as
    /// the periodic check does, which a background tab runs rarely), the page wants a
    /// heartbeat sent with load `value` in [0, 1], it gave up on the call `value`, or it
    /// wants a keepalive that was refused (or is waiting) to connect again now (`resume()`,
    /// after a login).
    pub fn event(&self, kind: u32, value: f64) {
        let at = now();
        let silent = self.inner.with(|s| match kind {
            EVENT_ONLINE => {
                if let Some(keep) = &mut s.keep {
                    s.next = if value != 0.0 {
                        keep.online(at, Math::random())
                    } else {
                        // A pending reconnect's timer finds itself stale when it fires.
                        s.reconnect_seq = s.reconnect_seq.wrapping_add(1);
                        keep.offline()
                    };
                }
                None
            }
            EVENT_VISIBLE => s.visible(at).map(|ms| (s.conn_no, ms)),
            EVENT_RESUME => {
                if let (Some(keep), false) = (&mut s.keep, s.ended) {
                    s.next = keep.resume(at);
                }
                None
            }
            EVENT_HEARTBEAT => {
                let load = (value.clamp(0.0, 1.0) * 65535.0).round() as u16;
                s.send(&Frame::Heartbeat { load, time: (at / 1000.0) as u32 });
                None
            }
            EVENT_CANCEL => {
                s.cancel(value as u32);
                None
            }
            _ => None,
        });
        if let Some((no, ms)) = silent {
            self.inner.went_silent(no, ms);
        }
    }

    /// Reads the state (`connecting`, `open`, `reconnecting`, `offline`, `refused` or
    /// `closed`), when
    /// the next reconnect is due (ms since the epoch, or undefined), the connected URL, or
    /// how many messages wait for the connection.
    pub fn get(&self, kind: u32) -> JsValue {
        let s = self.inner.state.borrow();
        match kind {
            GET_STATE => JsValue::from_str(s.name()),
            GET_NEXT_RECONNECT => match s.keep.as_ref().and_then(KeepAlive::next_attempt_at) {
                Some(at) if s.conn.is_none() => JsValue::from_f64(at),
                _ => JsValue::UNDEFINED,
            },
            GET_ADDRESS => s.conn.as_ref().map_or(JsValue::UNDEFINED, |c| c.ws.url().into()),
            GET_QUEUED => JsValue::from_f64(s.outbox.len() as f64),
            _ => JsValue::UNDEFINED,
        }
    }

    /// Sets the heartbeat interval (ms; 0 sends none; from the next connection) or the
    /// bound on the send queue (default 100; 0 turns queueing off), or whether connections
    /// that open from now on hold the queue until the page releases it.
    pub fn set(&self, kind: u32, value: f64) {
        let value = if value.is_finite() { value.max(0.0) } else { 0.0 };
        let mut s = self.inner.state.borrow_mut();
        match kind {
            SET_HEARTBEAT_MS => s.heartbeat_ms = value,
            SET_SEND_LIMIT => s.outbox.set_limit(value as usize),
            SET_HOLD => s.hold = value > 0.0,
            SET_EARLY => {
                s.early_version = Some(s.conn_no);
                s.next_id = s.next_id.max(value as u32);
            }
            _ => {}
        }
    }
}
