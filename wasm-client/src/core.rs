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
use gotalk_protocol::{decode_version, Decoder, Frame, Id, Name, ProtocolErrorCode, VERSION};
use js_sys::{ArrayBuffer, Date, Function, Math, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, MessageEvent, WebSocket};

use crate::backoff::Backoff;
use crate::js::{clear_timeout, set_timeout, Host};
use crate::keepalive::{Closed, KeepAlive, Next};
use crate::outbox::Outbox;
use crate::table::Table;
use crate::text;

/// Declares to the server that this client understands RetryResult (see the gateway).
const RETRY_QUERY: &str = "gotalk-retry=1";
/// WebSocket close code of a server that is restarting or shutting down.
const CLOSE_GOING_AWAY: u16 = 1001;
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
    resolve: Function,
    reject: Function,
    /// RetryResults honoured so far.
    retries: u32,
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
    Settle(Function, JsValue),
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
    /// An error decided here (a protocol fault) to report when the socket closes.
    close_error: Option<JsValue>,

    decoder: Decoder,
    inbuf: BytesMut,
    got_version: bool,
    last_inbound: f64,
    /// When the peer's last two heartbeats arrived, to tell a stale connection.
    heartbeats_in: (f64, f64),

    next_id: u32,
    pending: Table<Id, Pending>,
    next_token: u32,
    streams: Table<u32, StreamOut>,
    /// The peer's streaming requests still receiving parts.
    incoming: Table<Id, ()>,
    outbox: Outbox<Outgoing>,
    max_retries: u32,
    /// Handlers of closed sockets, dropped on a later turn: a handler may be the one
    /// running when its socket is retired.
    graveyard: Vec<Conn>,

    state_name: &'static str,
    effects: Vec<Effect>,
    /// Requests to send again after a RetryResult's wait (ms); timers need the `Inner`.
    retries: Vec<(f64, Call)>,
    /// Whether a reconnect should be scheduled (set by the state, acted on by `Inner`).
    next: Next,
}

fn error(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
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

fn now() -> f64 {
    Date::now()
}

/// Appends the RetryResult declaration to the query of `url`.
fn with_retry_query(url: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let mut out = String::from(base);
    if !base.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p == RETRY_QUERY)) {
        out.push(if base.contains('?') { '&' } else { '?' });
        out.push_str(RETRY_QUERY);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

impl State {
    fn name(&self) -> &'static str {
        if self.open {
            "open"
        } else if let Some(keep) = &self.keep {
            keep.phase().name()
        } else if self.conn.is_some() {
            "connecting"
        } else {
            "closed"
        }
    }

    fn settle(&mut self, f: &Function, value: JsValue) {
        self.effects.push(Effect::Settle(f.clone(), value));
    }

    /// Writes one message: its header and its payload as separate binary WebSocket messages,
    /// as gotalk.js and Go expect. A zero-length payload message is never sent.
    fn send(&mut self, frame: &Frame) {
        let Some(conn) = &self.conn else { return };
        let mut header = Vec::with_capacity(frame.header_len());
        frame.encode_header(&mut header);
        // A failed send means the socket is closing; its close event settles everything.
        let _ = conn.ws.send_with_u8_array(&header);
        let payload = frame.payload();
        if !payload.is_empty() {
            let _ = conn.ws.send_with_u8_array(payload);
        }
    }

    /// A request id not in flight. Ids are opaque 4-byte strings; counting is enough.
    fn new_id(&mut self) -> Id {
        loop {
            let id = Id::from_u32(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if !self.pending.contains(id) {
                return id;
            }
        }
    }

    fn send_request(&mut self, call: Call) {
        let id = self.new_id();
        self.send(&Frame::SingleRequest { id, op: call.op.clone(), payload: call.payload.clone() });
        self.pending.insert(id, Pending::Single(call));
    }

    fn send_part(&mut self, token: u32, payload: Bytes, end: bool) {
        let conn_no = self.conn_no;
        let Some(stream) = self.streams.get_mut(token) else { return };
        let id = match stream.sent {
            Some((on, id)) if on == conn_no => {
                if !payload.is_empty() {
                    let frame = Frame::StreamRequestPart { id, payload };
                    self.send(&frame);
                }
                id
            }
            Some(_) => return,
            None => {
                let op = stream.op.clone();
                let id = self.new_id();
                if let Some(stream) = self.streams.get_mut(token) {
                    stream.sent = Some((conn_no, id));
                }
                self.pending.insert(id, Pending::Stream(token));
                self.send(&Frame::StreamRequest { id, op, payload });
                id
            }
        };
        if end {
            self.send(&Frame::StreamRequestPart { id, payload: Bytes::new() });
        }
    }

    fn send_outgoing(&mut self, item: Outgoing) {
        match item {
            Outgoing::Request(call) => self.send_request(call),
            Outgoing::Notify(name, payload) => self.send(&Frame::Notification { name, payload }),
            Outgoing::Part { token, payload, end } => self.send_part(token, payload, end),
        }
    }

    /// Sends now when open; otherwise queues, or fails when there is nothing to wait for.
    fn write(&mut self, item: Outgoing) -> Result<(), (JsValue, Outgoing)> {
        if self.open {
            self.send_outgoing(item);
            return Ok(());
        }
        if self.ended || (self.keep.is_none() && self.conn.is_none()) {
            return Err((error("gotalk: the socket is closed"), item));
        }
        self.outbox.push(item).map_err(|full| {
            let mut message = String::from("gotalk: the send queue is full (");
            message.push_str(&text::decimal(full.limit as u64));
            message.push_str(" messages are waiting for the connection)");
            (error(&message), full.item)
        })
    }

    fn fail_outgoing(&mut self, item: Outgoing, err: &JsValue) {
        match item {
            Outgoing::Request(call) => self.settle(&call.reject, err.clone()),
            Outgoing::Notify(..) => {}
            Outgoing::Part { token, .. } => self.end_stream(token, err.clone()),
        }
    }

    fn end_stream(&mut self, token: u32, error: JsValue) {
        if self.streams.remove(token).is_some() {
            self.effects.push(Effect::StreamEnd { token, error });
        }
    }

    /// Sends the protocol error and closes; the close event reports `message`.
    fn fail_protocol(&mut self, code: ProtocolErrorCode, message: &str) {
        self.send(&Frame::protocol_error(code));
        if self.close_error.is_none() {
            self.close_error = Some(error(message));
        }
        if let Some(conn) = &self.conn {
            let _ = conn.ws.close_with_code(CLOSE_PROTOCOL_BASE + code.as_u32() as u16);
        }
        self.open = false;
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.last_inbound = now();
        self.inbuf.extend_from_slice(bytes);
        if !self.got_version {
            match decode_version(&mut self.inbuf) {
                Ok(None) => return,
                Ok(Some(VERSION)) => self.got_version = true,
                Ok(Some(_)) => {
                    return self.fail_protocol(
                        ProtocolErrorCode::Unsupported,
                        "gotalk: the server speaks another protocol version",
                    )
                }
                Err(_) => {
                    return self.fail_protocol(
                        ProtocolErrorCode::InvalidMessage,
                        "gotalk: the server sent an invalid handshake",
                    )
                }
            }
        }
        while self.open {
            match self.decoder.decode(&mut self.inbuf) {
                Ok(Some(frame)) => self.handle(frame),
                Ok(None) => break,
                Err(_) => {
                    return self.fail_protocol(
                        ProtocolErrorCode::InvalidMessage,
                        "gotalk: the server sent an invalid message",
                    )
                }
            }
        }
    }

    fn handle(&mut self, frame: Frame) {
        let conn = self.conn_no;
        match frame {
            Frame::SingleRequest { id, op, payload } => {
                self.effects.push(Effect::Request { op, payload, conn, id: id_u32(id) });
            }
            Frame::StreamRequest { id, op, payload } => {
                self.incoming.insert(id, ());
                self.effects.push(Effect::Stream { op, conn, id: id_u32(id) });
                if !payload.is_empty() {
                    let payload = bytes_to_js(&payload).into();
                    self.effects.push(Effect::Part { conn, id: id_u32(id), payload });
                }
            }
            Frame::StreamRequestPart { id, payload } => {
                if !self.incoming.contains(id) {
                    return;
                }
                let payload = if payload.is_empty() {
                    self.incoming.remove(id);
                    JsValue::NULL
                } else {
                    bytes_to_js(&payload).into()
                };
                self.effects.push(Effect::Part { conn, id: id_u32(id), payload });
            }
            Frame::SingleResult { id, payload } => self.result(id, Some(payload), false),
            Frame::StreamResult { id, payload } => {
                let end = payload.is_empty();
                self.result(id, (!end).then_some(payload), true);
            }
            Frame::ErrorResult { id, payload } => {
                let message = String::from_utf8_lossy(&payload);
                match self.pending.remove(id) {
                    Some(Pending::Single(call)) => self.settle(&call.reject, error(&message)),
                    Some(Pending::Stream(token)) => self.end_stream(token, error(&message)),
                    None => {}
                }
            }
            Frame::RetryResult { id, wait, payload } => self.retry(id, wait, &payload),
            Frame::Notification { name, payload } => {
                self.effects.push(Effect::Notification { name, payload });
            }
            Frame::Heartbeat { load, time } => {
                self.heartbeats_in = (self.heartbeats_in.1, now());
                let event = js_sys::Object::new();
                let date = Date::new(&JsValue::from_f64(f64::from(time) * 1000.0));
                let _ = js_sys::Reflect::set(&event, &"time".into(), &date);
                let _ = js_sys::Reflect::set(&event, &"load".into(), &f64::from(load).into());
                self.effects.push(Effect::Emit("heartbeat", event.into()));
            }
            Frame::ProtocolError { code } => {
                let mut message = String::from("gotalk: the server reported a protocol error (");
                message.push_str(&text::decimal(u64::from(code)));
                message.push(')');
                self.close_error = Some(error(&message));
                if let Some(c) = &self.conn {
                    let _ = c.ws.close_with_code(CLOSE_PROTOCOL_BASE + (code.min(999) as u16));
                }
                self.open = false;
            }
            // A frame type added to the protocol later; nothing to do with it.
            _ => {}
        }
        self.maybe_close_idle();
    }

    /// A result for one of the page's requests: a whole one, a part, or the end (`None`).
    fn result(&mut self, id: Id, payload: Option<Bytes>, streaming: bool) {
        match self.pending.get_mut(id) {
            Some(Pending::Single(call)) => {
                if streaming {
                    if let Some(part) = payload {
                        // A single request answered by a stream: gather it.
                        call.parts.extend_from_slice(&part);
                        return;
                    }
                }
                let Some(Pending::Single(call)) = self.pending.remove(id) else { return };
                let body = match payload {
                    Some(p) if !streaming => p,
                    _ => call.parts.freeze(),
                };
                self.settle(&call.resolve, bytes_to_js(&body).into());
            }
            Some(Pending::Stream(token)) => {
                let token = *token;
                match payload {
                    Some(part) => {
                        self.effects.push(Effect::StreamData { token, payload: part.clone() });
                        if !streaming {
                            self.pending.remove(id);
                            self.end_stream(token, JsValue::NULL);
                        }
                    }
                    None => {
                        self.pending.remove(id);
                        self.end_stream(token, JsValue::NULL);
                    }
                }
            }
            None => {}
        }
    }

    fn maybe_close_idle(&mut self) {
        if self.close_when_idle && self.pending.is_empty() {
            self.close_when_idle = false;
            if let Some(conn) = &self.conn {
                let _ = conn.ws.close_with_code(1000);
            }
        }
    }

    /// A RetryResult: send the request again after `wait` ms with a new id, a bounded
    /// number of times.
    fn retry(&mut self, id: Id, wait: u32, message: &[u8]) {
        let mut why = String::from("gotalk: the server is busy (");
        why.push_str(&String::from_utf8_lossy(message));
        why.push_str("); retry after ");
        why.push_str(&text::decimal(u64::from(wait)));
        why.push_str(" ms");
        match self.pending.remove(id) {
            Some(Pending::Single(mut call)) => {
                if call.retries >= self.max_retries {
                    return self.settle(&call.reject, error(&why));
                }
                call.retries += 1;
                call.parts.clear();
                self.retries.push((f64::from(wait), call));
            }
            // Parts already sent cannot be replayed: the page decides.
            Some(Pending::Stream(token)) => self.end_stream(token, error(&why)),
            None => {}
        }
    }
}

fn id_u32(id: Id) -> u32 {
    u32::from_le_bytes(id.0)
}

/// The settings `open` reads from its options object.
struct Options {
    backoff: Backoff,
    max_retries: Option<u32>,
    send_limit: Option<usize>,
    max_payload: Option<u32>,
}

fn number(options: &JsValue, key: &str) -> Option<f64> {
    if options.is_undefined() || options.is_null() {
        return None;
    }
    js_sys::Reflect::get(options, &JsValue::from_str(key)).ok()?.as_f64()
}

fn count(options: &JsValue, key: &str, what: &str) -> Result<Option<u32>, JsValue> {
    match number(options, key) {
        None => Ok(None),
        Some(n) if n >= 0.0 && n <= f64::from(u32::MAX) && n.fract() == 0.0 => Ok(Some(n as u32)),
        Some(_) => {
            let mut message = String::from("gotalk: ");
            message.push_str(what);
            message.push_str(" must be a whole number, at least 0");
            Err(error(&message))
        }
    }
}

impl Options {
    fn read(options: &JsValue) -> Result<Options, JsValue> {
        let d = Backoff::default();
        let backoff = Backoff {
            min_ms: number(options, "min").unwrap_or(d.min_ms),
            max_ms: number(options, "max").unwrap_or(d.max_ms),
            factor: number(options, "factor").unwrap_or(d.factor),
            jitter: number(options, "jitter").unwrap_or(d.jitter),
        };
        backoff.validate().map_err(|e| error(e.message()))?;
        Ok(Options {
            backoff,
            max_retries: count(options, "maxRetries", "maxRetries")?,
            send_limit: count(options, "sendLimit", "sendLimit")?.map(|n| n as usize),
            max_payload: count(options, "maxPayload", "maxPayload")?,
        })
    }
}

impl Inner {
    /// Runs `f` on the state, then, with the state released, schedules the timers it asked
    /// for and delivers its effects to the page.
    fn with<R>(self: &Rc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.state.borrow_mut());
        self.settle();
        result
    }

    /// The second half of [`with`](Self::with), kept out of the generic function.
    fn settle(self: &Rc<Self>) {
        let (effects, retries, next, sweep) = {
            let mut s = self.state.borrow_mut();
            let name = s.name();
            if name != s.state_name {
                s.state_name = name;
                s.effects.push(Effect::Emit("state", JsValue::from_str(name)));
            }
            (
                std::mem::take(&mut s.effects),
                std::mem::take(&mut s.retries),
                std::mem::replace(&mut s.next, Next::Nothing),
                !s.graveyard.is_empty(),
            )
        };
        for (wait, call) in retries {
            self.after(wait, move |inner| inner.resend(call));
        }
        if let Next::ConnectAt(at) = next {
            self.schedule_connect(at);
        }
        if sweep {
            self.after(0.0, |inner| inner.state.borrow_mut().graveyard.clear());
        }
        for effect in effects {
            self.deliver(effect);
        }
    }

    fn resend(self: &Rc<Self>, call: Call) {
        self.with(|s| {
            if let Err((err, item)) = s.write(Outgoing::Request(call)) {
                s.fail_outgoing(item, &err);
            }
        });
    }

    fn deliver(&self, effect: Effect) {
        let host = &self.host;
        // The host guards the page's code; an error here is a fault in gotalk.js itself, and
        // the next effect must still be delivered.
        let _ = match effect {
            Effect::Emit(name, arg) => host.emit(name, &arg),
            Effect::Settle(f, value) => f.call1(&JsValue::UNDEFINED, &value).map(drop),
            Effect::Request { op, payload, conn, id } => {
                host.request(op.as_str(), bytes_to_js(&payload), conn, id)
            }
            Effect::Stream { op, conn, id } => host.stream(op.as_str(), conn, id),
            Effect::Part { conn, id, payload } => host.part(conn, id, &payload),
            Effect::Notification { name, payload } => {
                host.notification(name.as_str(), bytes_to_js(&payload))
            }
            Effect::StreamData { token, payload } => host.stream_data(token, bytes_to_js(&payload)),
            Effect::StreamEnd { token, error } => host.stream_end(token, &error),
        };
    }

    /// Runs `f` after `ms` milliseconds, unless the Core is gone by then.
    fn after(self: &Rc<Self>, ms: f64, f: impl FnOnce(&Rc<Inner>) + 'static) -> JsValue {
        let weak: Weak<Inner> = Rc::downgrade(self);
        let callback = Closure::once_into_js(move || {
            if let Some(inner) = weak.upgrade() {
                f(&inner);
            }
        });
        set_timeout(&callback, ms)
    }

    fn schedule_connect(self: &Rc<Self>, at: f64) {
        let seq = {
            let mut s = self.state.borrow_mut();
            s.reconnect_seq = s.reconnect_seq.wrapping_add(1);
            if let Some(old) = s.reconnect_timer.take() {
                clear_timeout(&old);
            }
            s.reconnect_seq
        };
        let timer = self.after((at - now()).max(0.0), move |inner| {
            let due = {
                let s = inner.state.borrow();
                s.reconnect_seq == seq && !s.ended && s.conn.is_none()
            };
            if due {
                inner.connect();
            }
        });
        self.state.borrow_mut().reconnect_timer = Some(timer);
    }

    fn connect(self: &Rc<Self>) {
        let attempt = self.with(|s| {
            if s.ended || s.conn.is_some() {
                return None;
            }
            s.conn_no = s.conn_no.wrapping_add(1);
            s.reconnect_timer = None;
            if let Some(keep) = &mut s.keep {
                keep.connecting();
            }
            Some((s.conn_no, with_retry_query(&s.url)))
        });
        let Some((no, url)) = attempt else { return };
        let ws = match WebSocket::new(&url) {
            Ok(ws) => ws,
            Err(thrown) => {
                // A malformed address: report what the browser said, as a failed attempt.
                self.with(|s| s.close_error = Some(thrown));
                return self.closed(no, None);
            }
        };
        ws.set_binary_type(BinaryType::Arraybuffer);
        let weak = Rc::downgrade(self);
        let on_open = Closure::<dyn FnMut()>::new({
            let weak = weak.clone();
            move || {
                if let Some(inner) = weak.upgrade() {
                    inner.opened(no);
                }
            }
        });
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new({
            let weak = weak.clone();
            move |event: MessageEvent| {
                if let Some(inner) = weak.upgrade() {
                    inner.message(no, &event.data());
                }
            }
        });
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            if let Some(inner) = weak.upgrade() {
                inner.closed(no, Some(event.code()));
            }
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.with(|s| {
            s.conn =
                Some(Conn { ws, _on_open: on_open, _on_message: on_message, _on_close: on_close })
        });
    }

    fn opened(self: &Rc<Self>, no: u32) {
        let started = self.with(|s| {
            if s.conn_no != no {
                return false;
            }
            s.open = true;
            s.connected = true;
            let at = now();
            s.last_inbound = at;
            s.heartbeats_in = (0.0, 0.0);
            if let Some(keep) = &mut s.keep {
                keep.opened(at);
            }
            if let Some(conn) = &s.conn {
                let mut version = Vec::with_capacity(2);
                gotalk_protocol::encode_version(&mut version);
                let _ = conn.ws.send_with_u8_array(&version);
            }
            for item in s.outbox.take_all() {
                s.send_outgoing(item);
            }
            s.effects.push(Effect::Emit("open", JsValue::NULL));
            true
        });
        if started {
            self.schedule_heartbeat(no);
        }
    }

    fn schedule_heartbeat(self: &Rc<Self>, no: u32) {
        let ms = self.state.borrow().heartbeat_ms;
        if ms <= 0.0 {
            return;
        }
        let timer = self.after(ms, move |inner| {
            let again = inner.with(|s| {
                if s.conn_no != no || !s.open {
                    return false;
                }
                s.send(&Frame::Heartbeat { load: 0, time: (now() / 1000.0) as u32 });
                true
            });
            if again {
                inner.schedule_heartbeat(no);
            }
        });
        if let Some(old) = self.state.borrow_mut().heartbeat_timer.replace(timer) {
            clear_timeout(&old);
        }
    }

    fn message(self: &Rc<Self>, no: u32, data: &JsValue) {
        let bytes = match data.as_string() {
            Some(text) => text.into_bytes(),
            None => Uint8Array::new(data).to_vec(),
        };
        self.with(|s| {
            if s.conn_no == no && s.open {
                s.receive(&bytes);
            }
        });
    }

    /// The socket `no` closed (`code` from its close event) or failed to open.
    fn closed(self: &Rc<Self>, no: u32, code: Option<u16>) {
        let online = self.host.online();
        self.with(|s| {
            if s.conn_no != no {
                return;
            }
            if let Some(conn) = s.conn.take() {
                conn.ws.set_onopen(None);
                conn.ws.set_onmessage(None);
                conn.ws.set_onclose(None);
                s.graveyard.push(conn);
            }
            if let Some(timer) = s.heartbeat_timer.take() {
                clear_timeout(&timer);
            }
            let was_connected = std::mem::take(&mut s.connected);
            s.open = false;
            s.close_when_idle = false;
            s.got_version = false;
            s.inbuf = BytesMut::new();
            s.decoder = Decoder::new();
            s.decoder.max_payload(s.max_payload);

            let err = match s.close_error.take() {
                Some(err) => err,
                None if !was_connected => {
                    let mut message = String::from("gotalk: could not connect to ");
                    message.push_str(&s.url);
                    error(&message)
                }
                None if code == Some(1000) => JsValue::NULL,
                None => {
                    let mut message = String::from("gotalk: the connection closed (code ");
                    message.push_str(&text::decimal(u64::from(code.unwrap_or(1006))));
                    message.push(')');
                    error(&message)
                }
            };
            for (_, pending) in s.pending.take() {
                let mut message =
                    String::from("gotalk: the connection was lost before the result of \"");
                match pending {
                    Pending::Single(call) => {
                        message.push_str(call.op.as_str());
                        message.push_str("\" arrived");
                        s.settle(&call.reject, error(&message));
                    }
                    Pending::Stream(token) => {
                        if let Some(stream) = s.streams.get_mut(token) {
                            message.push_str(stream.op.as_str());
                        }
                        message.push_str("\" arrived");
                        s.end_stream(token, error(&message));
                    }
                }
            }
            for (id, ()) in s.incoming.take() {
                let lost = error("gotalk: the connection was lost during the stream");
                s.effects.push(Effect::Part { conn: no, id: id_u32(id), payload: lost });
            }
            if was_connected || s.keep.is_none() {
                s.effects.push(Effect::Emit("close", err.clone()));
            }
            let how =
                if code == Some(CLOSE_GOING_AWAY) { Closed::GoingAway } else { Closed::Other };
            match &mut s.keep {
                Some(keep) if !s.ended => s.next = keep.closed(how, now(), online, Math::random()),
                _ => {
                    let reason =
                        if err.is_null() { error("gotalk: the socket is closed") } else { err };
                    for item in s.outbox.take_all() {
                        s.fail_outgoing(item, &reason);
                    }
                }
            }
        });
    }

    /// Gives up on socket `no` at once, without waiting for a close handshake that a dead
    /// network would never complete.
    fn abandon(self: &Rc<Self>, no: u32, why: &str) {
        self.with(|s| {
            s.close_error = Some(error(why));
            if let Some(conn) = &s.conn {
                let _ = conn.ws.close_with_code(CLOSE_PROTOCOL_BASE);
            }
        });
        self.closed(no, None);
    }
}

#[wasm_bindgen]
impl Core {
    /// A Core reporting to `host`, the Sock object of gotalk.js.
    #[wasm_bindgen(constructor)]
    pub fn new(host: Host) -> Core {
        let state = State {
            url: String::new(),
            conn_no: 0,
            conn: None,
            open: false,
            connected: false,
            reconnect_seq: 0,
            max_payload: gotalk_protocol::DEFAULT_MAX_PAYLOAD,
            ended: false,
            close_when_idle: false,
            keep: None,
            reconnect_timer: None,
            heartbeat_timer: None,
            heartbeat_ms: 20_000.0,
            close_error: None,
            decoder: Decoder::new(),
            inbuf: BytesMut::new(),
            got_version: false,
            last_inbound: 0.0,
            heartbeats_in: (0.0, 0.0),
            next_id: 0,
            pending: Table::default(),
            next_token: 0,
            streams: Table::default(),
            incoming: Table::default(),
            outbox: Outbox::default(),
            max_retries: 5,
            graveyard: Vec::new(),
            state_name: "closed",
            effects: Vec::new(),
            retries: Vec::new(),
            next: Next::Nothing,
        };
        Core { inner: Rc::new(Inner { host, state: RefCell::new(state) }) }
    }

    /// Connects to `url`; with `keepalive`, reconnects until `end()`. `options` may set
    /// `min`, `max`, `factor`, `jitter` (the backoff), `maxRetries`, `sendLimit` and
    /// `maxPayload`.
    pub fn open(&self, url: String, keepalive: bool, options: &JsValue) -> Result<(), JsValue> {
        let options = Options::read(options)?;
        let busy = self.inner.with(|s| {
            if s.conn.is_some() {
                return true;
            }
            s.url = url;
            s.ended = false;
            s.keep = keepalive.then(|| KeepAlive::new(options.backoff));
            if let Some(n) = options.max_retries {
                s.max_retries = n;
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

    /// Sends a request with a raw payload. The promise resolves with the result's bytes and
    /// rejects with an Error carrying the server's message, or saying the connection was lost.
    pub fn request(&self, op: &str, payload: &JsValue) -> Promise {
        let prepared = name(op).and_then(|op| Ok((op, payload_from_js(payload)?)));
        let (op, payload) = match prepared {
            Ok(p) => p,
            Err(err) => return Promise::reject(&err),
        };
        let mut settle = None;
        let promise = Promise::new(&mut |resolve, reject| settle = Some((resolve, reject)));
        let Some((resolve, reject)) = settle else { return promise };
        let call = Call { op, payload, resolve, reject, retries: 0, parts: BytesMut::new() };
        self.inner.with(|s| {
            if let Err((err, item)) = s.write(Outgoing::Request(call)) {
                s.fail_outgoing(item, &err);
            }
        });
        promise
    }

    /// Sends a notification with a raw payload.
    pub fn notify(&self, name_: &str, payload: &JsValue) -> Result<(), JsValue> {
        let item = Outgoing::Notify(name(name_)?, payload_from_js(payload)?);
        self.inner.with(|s| s.write(item).map_err(|(err, _)| err))
    }

    /// Starts one of the page's stream requests; returns its token. Nothing is sent until
    /// the first write.
    #[wasm_bindgen(js_name = streamOpen)]
    pub fn stream_open(&self, op: &str) -> Result<u32, JsValue> {
        let op = name(op)?;
        Ok(self.inner.with(|s| {
            s.next_token = s.next_token.wrapping_add(1);
            s.streams.insert(s.next_token, StreamOut { op, sent: None, ended: false });
            s.next_token
        }))
    }

    /// Writes a part of stream request `token`; an empty part ends it.
    #[wasm_bindgen(js_name = streamWrite)]
    pub fn stream_write(&self, token: u32, payload: &JsValue) -> Result<(), JsValue> {
        let payload = payload_from_js(payload)?;
        let end = payload.is_empty();
        self.inner.with(|s| {
            let Some(stream) = s.streams.get_mut(token) else { return Ok(()) };
            if stream.ended {
                return Ok(());
            }
            stream.ended = end;
            s.write(Outgoing::Part { token, payload, end }).map_err(|(err, _)| err)
        })
    }

    /// Answers the peer's request `id` on connection `conn` with a raw payload.
    pub fn reply(&self, conn: u32, id: u32, payload: &JsValue) -> Result<(), JsValue> {
        let payload = payload_from_js(payload)?;
        let id = Id::from_u32(id);
        self.answer(conn, Frame::SingleResult { id, payload });
        Ok(())
    }

    /// Answers the peer's request `id` with an ErrorResult.
    #[wasm_bindgen(js_name = replyError)]
    pub fn reply_error(&self, conn: u32, id: u32, message: &str) {
        let payload = Bytes::from(message.as_bytes().to_vec());
        self.answer(conn, Frame::ErrorResult { id: Id::from_u32(id), payload });
    }

    /// Sends one part of a streaming result for the peer's request `id`. An empty part is
    /// skipped, since on the wire it would end the stream.
    #[wasm_bindgen(js_name = replyPart)]
    pub fn reply_part(&self, conn: u32, id: u32, payload: &JsValue) -> Result<(), JsValue> {
        let payload = payload_from_js(payload)?;
        if !payload.is_empty() {
            self.answer(conn, Frame::StreamResult { id: Id::from_u32(id), payload });
        }
        Ok(())
    }

    /// Ends the streaming result for the peer's request `id`.
    #[wasm_bindgen(js_name = replyEnd)]
    pub fn reply_end(&self, conn: u32, id: u32) {
        self.answer(conn, Frame::StreamResult { id: Id::from_u32(id), payload: Bytes::new() });
    }

    /// Sends a heartbeat now with `load` in [0, 1].
    #[wasm_bindgen(js_name = sendHeartbeat)]
    pub fn send_heartbeat(&self, load: f64) -> Result<(), JsValue> {
        let load = (load.clamp(0.0, 1.0) * 65535.0).round() as u16;
        self.inner.with(|s| {
            if !s.open {
                return Err(error("gotalk: the socket is closed"));
            }
            s.send(&Frame::Heartbeat { load, time: (now() / 1000.0) as u32 });
            Ok(())
        })
    }

    /// Stops reconnecting and closes once outstanding results are in; a second call closes
    /// at once. Messages still queued fail.
    pub fn end(&self) {
        self.inner.with(|s| {
            let again = s.ended;
            s.ended = true;
            if let Some(keep) = &mut s.keep {
                keep.end();
            }
            if let Some(timer) = s.reconnect_timer.take() {
                clear_timeout(&timer);
            }
            let reason = error("gotalk: the socket was ended before this was sent");
            for item in s.outbox.take_all() {
                s.fail_outgoing(item, &reason);
            }
            if s.conn.is_none() {
                return;
            }
            if !again && s.open && !s.pending.is_empty() {
                s.close_when_idle = true;
            } else if let Some(conn) = &s.conn {
                let _ = conn.ws.close_with_code(1000);
            }
        });
    }

    /// The browser came online.
    pub fn online(&self) {
        self.inner.with(|s| {
            if let Some(keep) = &mut s.keep {
                s.next = keep.online(now(), Math::random());
            }
        });
    }

    /// The page became visible: retry now if a reconnect is pending, and give up on an open
    /// connection that has gone silent for longer than two of the server's heartbeats.
    pub fn visible(&self) {
        let at = now();
        let silent = self.inner.with(|s| {
            if s.open {
                let (before, last) = s.heartbeats_in;
                let gap = last - before;
                return (before > 0.0 && at - s.last_inbound > 2.0 * gap + 5_000.0)
                    .then_some(s.conn_no);
            }
            if let Some(keep) = &mut s.keep {
                s.next = keep.visible(at);
            }
            None
        });
        if let Some(no) = silent {
            self.inner.abandon(no, "gotalk: the connection went silent");
        }
    }

    /// `connecting`, `open`, `reconnecting`, `offline` or `closed`.
    #[wasm_bindgen(getter)]
    pub fn state(&self) -> String {
        self.inner.state.borrow().name().to_string()
    }

    /// When the next reconnect attempt is due (ms since the epoch), if one is scheduled.
    #[wasm_bindgen(getter, js_name = nextReconnectAt)]
    pub fn next_reconnect_at(&self) -> Option<f64> {
        let s = self.inner.state.borrow();
        s.keep.as_ref().and_then(KeepAlive::next_attempt_at).filter(|_| s.conn.is_none())
    }

    /// The URL of the current connection.
    #[wasm_bindgen(getter)]
    pub fn address(&self) -> Option<String> {
        self.inner.state.borrow().conn.as_ref().map(|c| c.ws.url())
    }

    /// Messages waiting for the connection.
    #[wasm_bindgen(getter)]
    pub fn queued(&self) -> u32 {
        self.inner.state.borrow().outbox.len() as u32
    }

    /// How often heartbeats are sent (ms); 0 turns them off. Takes effect on the next
    /// connection.
    #[wasm_bindgen(setter, js_name = heartbeatInterval)]
    pub fn set_heartbeat_interval(&self, ms: f64) {
        self.inner.state.borrow_mut().heartbeat_ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
    }

    /// The current heartbeat interval (ms).
    #[wasm_bindgen(getter, js_name = heartbeatInterval)]
    pub fn heartbeat_interval(&self) -> f64 {
        self.inner.state.borrow().heartbeat_ms
    }

    /// How many messages may wait for the connection (default 100; 0 turns queueing off).
    #[wasm_bindgen(setter, js_name = sendLimit)]
    pub fn set_send_limit(&self, limit: u32) {
        self.inner.state.borrow_mut().outbox.set_limit(limit as usize);
    }

    /// The bound on the send queue.
    #[wasm_bindgen(getter, js_name = sendLimit)]
    pub fn send_limit(&self) -> u32 {
        self.inner.state.borrow().outbox.limit() as u32
    }
}

impl Core {
    fn answer(&self, conn: u32, frame: Frame) {
        self.inner.with(|s| {
            // An answer for an earlier connection has no one left to receive it.
            if s.conn_no == conn && s.open {
                s.send(&frame);
            }
        });
    }
}
