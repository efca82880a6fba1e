//! The WebSocket and the timers around a State: opening, reading, closing, reconnecting, and
//! delivering effects to the page.

use super::*;

/// The settings `open` reads from its options object.
pub(super) struct Options {
    pub(super) backoff: Backoff,
    pub(super) max_retries: Option<u32>,
    pub(super) retry_timeout: Option<u32>,
    pub(super) send_limit: Option<usize>,
    pub(super) max_payload: Option<u32>,
    pub(super) dead_after: Option<u32>,
    pub(super) refused_retry: Option<u32>,
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
    pub(super) fn read(options: &JsValue) -> Result<Options, JsValue> {
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
            retry_timeout: count(options, "retryTimeout", "retryTimeout")?,
            send_limit: count(options, "sendLimit", "sendLimit")?.map(|n| n as usize),
            max_payload: count(options, "maxPayload", "maxPayload")?,
            dead_after: count(options, "deadAfter", "deadAfter")?,
            refused_retry: count(options, "refusedRetry", "refusedRetry")?,
        })
    }
}

/// What a timer runs.
type Timer = dyn FnOnce(&Rc<Inner>);

impl Inner {
    /// Runs `f` on the state, then, with the state released, schedules the timers it asked
    /// for and delivers its effects to the page.
    pub(super) fn with<R>(self: &Rc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
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
        let bytes = |payload: &Bytes| JsValue::from(bytes_to_js(payload));
        let _ = match effect {
            Effect::Emit(name, arg) => host.emit(name, &arg),
            Effect::Settle(token, value) => host.on(ON_SETTLE, "", token, 0, &value),
            Effect::Request { op, payload, conn, id } => {
                host.on(ON_REQUEST, op.as_str(), conn, id, &bytes(&payload))
            }
            Effect::Stream { op, conn, id } => {
                host.on(ON_STREAM, op.as_str(), conn, id, &JsValue::NULL)
            }
            Effect::Part { conn, id, payload } => host.on(ON_PART, "", conn, id, &payload),
            Effect::Notification { name, payload } => {
                host.on(ON_NOTIFICATION, name.as_str(), 0, 0, &bytes(&payload))
            }
            Effect::StreamData { token, payload } => {
                host.on(ON_STREAM_DATA, "", token, 0, &bytes(&payload))
            }
            Effect::StreamEnd { token, error } => host.on(ON_STREAM_END, "", token, 0, &error),
        };
    }

    /// Runs `f` after `ms` milliseconds, unless the Core is gone by then.
    fn after(self: &Rc<Self>, ms: f64, f: impl FnOnce(&Rc<Inner>) + 'static) -> JsValue {
        self.after_dyn(ms, Box::new(f))
    }

    /// [`after`](Self::after) without the generic: each closure type given to wasm-bindgen
    /// costs its own glue in the wasm, so there is one.
    fn after_dyn(self: &Rc<Self>, ms: f64, f: Box<Timer>) -> JsValue {
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

    pub(super) fn connect(self: &Rc<Self>) {
        let attempt = self.with(|s| {
            if s.ended || s.conn.is_some() {
                return None;
            }
            s.conn_no = s.conn_no.wrapping_add(1);
            s.reconnect_timer = None;
            if let Some(keep) = &mut s.keep {
                keep.connecting();
            }
            let url = gotalk_protocol::retry::with_query(&s.url);
            // The socket opened early is taken when it went to this very address.
            let early = s.early.take().filter(|ws| ws.url() == url);
            Some((s.conn_no, url, early))
        });
        let Some((no, url, early)) = attempt else { return };
        let ws = match early.map_or_else(|| WebSocket::new(&url), Ok) {
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
                inner.closed(no, Some((event.code(), event.reason())));
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
            s.server_done = false;
            s.connected = true;
            let at = now();
            s.silence.opened(at);
            if let Some(keep) = &mut s.keep {
                keep.opened(at);
            }
            // A server that refuses closes at once: its close may be in before this runs.
            let version_sent = s.early_version.take() == Some(no);
            let writable = s.conn.as_ref().filter(|c| c.ws.ready_state() == WebSocket::OPEN);
            if let Some(conn) = writable.filter(|_| !version_sent) {
                let mut version = Vec::with_capacity(2);
                gotalk_protocol::encode_version(&mut version);
                let _ = conn.ws.send_with_u8_array(&version);
            }
            // Held, the queue waits for the page's `open` listener to send first.
            s.held = s.hold;
            if !s.held {
                for item in s.outbox.take_all() {
                    s.send_outgoing(item);
                }
            }
            s.effects.push(Effect::Emit("open", JsValue::NULL));
            true
        });
        if started {
            self.schedule_heartbeat(no);
            self.watch(no);
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
        // The first heartbeats may be what makes the silence measurable.
        self.watch(no);
    }

    /// Checks open socket `no` for silence on the period its heartbeats call for (see
    /// [`Silence::check_every`]), while nothing is scheduled yet; gives up on it once it has
    /// gone silent.
    fn watch(self: &Rc<Self>, no: u32) {
        let ms = {
            let s = self.state.borrow();
            if s.conn_no != no || !s.open || s.check_timer.is_some() {
                return;
            }
            match s.silence.check_every() {
                Some(ms) => ms,
                None => return,
            }
        };
        let timer = self.after(ms, move |inner| {
            let silent = {
                let mut s = inner.state.borrow_mut();
                if s.conn_no != no {
                    return;
                }
                s.check_timer = None;
                if s.open {
                    s.silence.dead(now())
                } else {
                    None
                }
            };
            match silent {
                Some(ms) => inner.went_silent(no, ms),
                None => inner.watch(no),
            }
        });
        self.state.borrow_mut().check_timer = Some(timer);
    }

    /// The socket `no` closed (with the code and reason of its close event) or failed to
    /// open.
    fn closed(self: &Rc<Self>, no: u32, close: Option<(u16, String)>) {
        let code = close.as_ref().map(|(code, _)| *code);
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
            if let Some(timer) = s.check_timer.take() {
                clear_timeout(&timer);
            }
            let was_connected = std::mem::take(&mut s.connected);
            s.open = false;
            s.held = false;
            s.close_when_idle = false;
            s.got_version = false;
            s.inbuf = BytesMut::new();
            s.decoder = Decoder::new();
            s.decoder.max_payload(s.max_payload);

            let fault = s.server_fault.take();
            let err = match s.close_error.take() {
                Some(err) => err,
                None if !was_connected => {
                    let mut message = String::from("gotalk: could not connect to ");
                    // Without the query, which may carry an access token: errors end up in
                    // consoles and error reports.
                    message.push_str(s.url.split('?').next().unwrap_or_default());
                    error(&message)
                }
                None if code == Some(1000) && fault.is_none() => JsValue::NULL,
                None => {
                    let (code, reason) = close.unwrap_or((1006, String::new()));
                    closed_by_server(fault, code, &reason)
                }
            };
            for (_, pending) in s.pending.take() {
                let mut message =
                    String::from("gotalk: the connection was lost before the result of \"");
                match pending {
                    Pending::Single(call) => {
                        message.push_str(call.op.as_str());
                        message.push_str("\" arrived");
                        s.settle(call.token, error(&message));
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
            let how = match code {
                Some(CLOSE_GOING_AWAY) => Closed::GoingAway,
                Some(code) if refuses_client(code) => Closed::Refused,
                _ => Closed::Other,
            };
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

    /// Gives up on socket `no`, silent for `ms`: emits `dead`, then closes at once, without
    /// waiting for a close handshake that a dead server would never complete. Results still
    /// outstanding fail; a keepalive reconnects on its schedule.
    pub(super) fn went_silent(self: &Rc<Self>, no: u32, ms: f64) {
        let mut why = String::from("gotalk: the server went silent (nothing received for ");
        why.push_str(&text::decimal((ms / 1000.0) as u64));
        why.push_str(" s)");
        let why = error(&why);
        self.with(|s| {
            s.effects.push(Effect::Emit("dead", why.clone()));
            s.close_error = Some(why);
            if let Some(conn) = &s.conn {
                let _ = conn.ws.close_with_code(CLOSE_PROTOCOL_BASE);
            }
        });
        self.closed(no, None);
    }
}

/// Why the server closed the connection: the ProtocolError it sent first, if any, then the
/// close code and the reason it gave. Marked as gotalk.js marks a protocol error when there
/// was one, and with `closeCode` in any case.
fn closed_by_server(fault: Option<u32>, code: u16, reason: &str) -> JsValue {
    let mut message = String::from("gotalk: ");
    match fault {
        Some(n) => {
            message.push_str("the server reported protocol error ");
            message.push_str(&text::decimal(u64::from(n)));
            message.push_str(match n {
                0 => " (abnormal)",
                1 => " (unsupported protocol)",
                2 => " (invalid message)",
                3 => " (timeout)",
                _ => "",
            });
        }
        None => message.push_str("the connection closed"),
    }
    if code == CLOSE_TOO_BIG {
        message.push_str(": a message was too large for the server");
    }
    message.push_str(" (code ");
    message.push_str(&text::decimal(u64::from(code)));
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    message.push(')');
    let err = match fault {
        Some(n) => protocol_error(&message, n),
        None => error(&message),
    };
    let _ = js_sys::Reflect::set(&err, &"closeCode".into(), &f64::from(code).into());
    let _ = js_sys::Reflect::set(&err, &"closeReason".into(), &reason.into());
    err
}
