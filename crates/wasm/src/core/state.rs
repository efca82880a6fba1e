//! The protocol side of a connection: frames out, frames in, what is pending.

use super::*;

impl State {
    pub(super) fn new() -> State {
        let max_payload = gotalk_protocol::DEFAULT_MAX_PAYLOAD;
        let mut decoder = Decoder::new();
        decoder.max_payload(max_payload);
        State {
            url: String::new(),
            conn_no: 0,
            conn: None,
            early: None,
            early_version: None,
            open: false,
            connected: false,
            reconnect_seq: 0,
            max_payload,
            ended: false,
            close_when_idle: false,
            keep: None,
            reconnect_timer: None,
            heartbeat_timer: None,
            heartbeat_ms: 20_000.0,
            check_timer: None,
            close_error: None,
            server_fault: None,
            decoder,
            inbuf: BytesMut::new(),
            got_version: false,
            silence: Silence::default(),
            next_id: 0,
            pending: Table::default(),
            streams: Table::default(),
            incoming: Table::default(),
            outbox: Outbox::default(),
            server_done: false,
            hold: false,
            held: false,
            max_retries: u32::MAX,
            retry_timeout: DEFAULT_RETRY_TIMEOUT_MS,
            graveyard: Vec::new(),
            state_name: "closed",
            effects: Vec::new(),
            retries: Vec::new(),
            cancelled: Vec::new(),
            next: Next::Nothing,
        }
    }

    /// `end()`: no more reconnects; close once outstanding results are in, or at once the
    /// second time. Messages still queued fail.
    pub(super) fn end(&mut self) {
        let again = self.ended;
        self.ended = true;
        if let Some(keep) = &mut self.keep {
            keep.end();
        }
        if let Some(timer) = self.reconnect_timer.take() {
            clear_timeout(&timer);
        }
        let reason = error("gotalk: the socket was ended before this was sent");
        for item in self.outbox.take_all() {
            self.fail_outgoing(item, &reason);
        }
        if !again && self.open && !self.pending.is_empty() {
            self.close_when_idle = true;
        } else if let Some(conn) = &self.conn {
            let _ = conn.ws.close_with_code(1000);
        }
    }

    /// The page became visible at `at`. Returns how long the open connection has been
    /// silent when that is longer than it may be (see [`Silence`]); otherwise brings a
    /// pending reconnect forward.
    pub(super) fn visible(&mut self, at: f64) -> Option<f64> {
        if self.open {
            return self.silence.dead(at);
        }
        if let Some(keep) = &mut self.keep {
            self.next = keep.visible(at);
        }
        None
    }

    pub(super) fn name(&self) -> &'static str {
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

    pub(super) fn settle(&mut self, token: u32, value: JsValue) {
        self.effects.push(Effect::Settle(token, value));
    }

    /// Writes one message, header and payload, as one binary WebSocket message. Servers read
    /// WebSocket messages as one byte stream (Go's gotalk and ours alike; only gotalk.js needs
    /// a header per message, and no server is gotalk.js), and each `send` is a trip through
    /// the browser's network service: one per message is half the cost of two.
    pub(super) fn send(&mut self, frame: &Frame) {
        let Some(conn) = &self.conn else { return };
        // Closing already (a refusal's close came in): its close event settles everything,
        // and a send now would only log an error in the page's console.
        if conn.ws.ready_state() != web_sys::WebSocket::OPEN {
            return;
        }
        let payload = frame.payload();
        let mut message = Vec::with_capacity(frame.header_len() + payload.len());
        frame.encode_header(&mut message);
        message.extend_from_slice(payload);
        // A failed send means the socket is closing; its close event settles everything.
        let _ = conn.ws.send_with_u8_array(&message);
    }

    /// A request to send, made now.
    pub(super) fn call(&self, op: Name, payload: Bytes, token: u32) -> Call {
        let deadline = Deadline::new(now(), self.retry_timeout);
        Call { op, payload, token, retries: 0, deadline, parts: BytesMut::new() }
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
        if self.given_up(call.token) {
            return;
        }
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

    pub(super) fn send_outgoing(&mut self, item: Outgoing) {
        match item {
            Outgoing::Request(call) => self.send_request(call),
            Outgoing::Notify(name, payload) => self.send(&Frame::Notification { name, payload }),
            Outgoing::Part { token, payload, end } => self.send_part(token, payload, end),
        }
    }

    /// Sends now when open; otherwise queues, or fails when there is nothing to wait for.
    pub(super) fn write(&mut self, item: Outgoing) -> Result<(), (JsValue, Outgoing)> {
        if self.open && !self.holds(&item) {
            self.send_outgoing(item);
            return Ok(());
        }
        if self.ended || (self.keep.is_none() && self.conn.is_none()) {
            return Err((error("gotalk: the socket is closed"), item));
        }
        self.outbox.push(item).map_err(|full| {
            let mut message = String::from("gotalk: the send queue is full (sendBufferLimit ");
            message.push_str(&text::decimal(full.limit as u64));
            message.push_str(", waiting for the connection)");
            (error(&message), full.item)
        })
    }

    /// After the server said `$done` it answers new work with a RetryResult, and soon
    /// closes. A keepalive socket keeps new requests and streams for the next connection
    /// instead; parts of streams already on the wire still go out on this one.
    ///
    /// While the queue is held, a part of a stream whose earlier parts wait in it waits too,
    /// so the stream's parts keep their order.
    fn holds(&mut self, item: &Outgoing) -> bool {
        if let (true, Outgoing::Part { token, .. }) = (self.held, item) {
            let queued = |q: &Outgoing| matches!(q, Outgoing::Part { token: t, .. } if t == token);
            if self.outbox.iter().any(queued) {
                return true;
            }
        }
        self.server_done
            && self.keep.is_some()
            && match item {
                Outgoing::Request(_) => true,
                Outgoing::Notify(..) => false,
                Outgoing::Part { token, .. } => {
                    self.streams.get_mut(*token).is_none_or(|stream| stream.sent.is_none())
                }
            }
    }

    /// Ends the hold on the open connection: sends what waited, in order, or fails it with
    /// `err` (anything but null or undefined). Nothing without a hold: a hold ends with its
    /// connection, and a release meant for an earlier one finds none.
    pub(super) fn release(&mut self, err: &JsValue) {
        if !std::mem::take(&mut self.held) {
            return;
        }
        for item in self.outbox.take_all() {
            if err.is_null() || err.is_undefined() {
                self.send_outgoing(item);
            } else {
                self.fail_outgoing(item, err);
            }
        }
    }

    pub(super) fn fail_outgoing(&mut self, item: Outgoing, err: &JsValue) {
        match item {
            Outgoing::Request(call) => {
                self.given_up(call.token);
                self.settle(call.token, err.clone());
            }
            Outgoing::Notify(..) => {}
            Outgoing::Part { token, .. } => self.end_stream(token, err.clone()),
        }
    }

    pub(super) fn end_stream(&mut self, token: u32, error: JsValue) {
        if self.streams.remove(token).is_some() {
            self.effects.push(Effect::StreamEnd { token, error });
        }
    }

    /// Sends the protocol error and closes; the close event reports `message`, marked as a
    /// protocol error with its code as gotalk.js marks it.
    fn fail_protocol(&mut self, code: ProtocolErrorCode, message: &str) {
        self.send(&Frame::protocol_error(code));
        if self.close_error.is_none() {
            self.close_error = Some(protocol_error(message, code.as_u32()));
        }
        if let Some(conn) = &self.conn {
            let _ = conn.ws.close_with_code(CLOSE_PROTOCOL_BASE + code.as_u32() as u16);
        }
        self.open = false;
    }

    pub(super) fn receive(&mut self, bytes: &[u8]) {
        self.silence.inbound(now());
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
            Frame::SingleRequest { id, op, payload } if op.as_str() == PING => {
                self.send(&Frame::SingleResult { id, payload });
            }
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
                    Some(Pending::Single(call)) => {
                        self.settle(call.token, remote_error(&message));
                    }
                    Some(Pending::Stream(token)) => self.end_stream(token, remote_error(&message)),
                    None => {}
                }
            }
            Frame::RetryResult { id, wait, payload } => self.retry(id, wait, &payload),
            // The server is shutting down; it closes the connection (1001) when it is ready,
            // so this one stays usable until then.
            Frame::Notification { name, .. } if name.as_str() == DONE => {
                self.server_done = true;
                self.effects.push(Effect::Emit("done", JsValue::NULL));
            }
            Frame::Notification { name, payload } => {
                self.effects.push(Effect::Notification { name, payload });
            }
            Frame::Heartbeat { load, time } => {
                self.silence.heartbeat(now());
                let event = js_sys::Object::new();
                let date = Date::new(&JsValue::from_f64(f64::from(time) * 1000.0));
                let _ = js_sys::Reflect::set(&event, &"time".into(), &date);
                let _ = js_sys::Reflect::set(&event, &"load".into(), &f64::from(load).into());
                self.effects.push(Effect::Emit("heartbeat", event.into()));
            }
            // Reported once the socket has closed, with the close code and reason the
            // server gave (a message too large: `f00000002`, then close 1009).
            Frame::ProtocolError { code } => {
                self.server_fault = Some(code);
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
                self.settle(call.token, bytes_to_js(&body).into());
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

    /// The page gave up on its request `token`: forget it, so its result is dropped when it
    /// comes. The server is not told (the protocol cannot say it).
    pub(super) fn cancel(&mut self, token: u32) {
        let sent =
            self.pending.remove_where(|p| matches!(p, Pending::Single(c) if c.token == token));
        if sent.is_none() {
            // Queued, or waiting to be sent again: dropped when its turn comes. The page gives
            // up only on calls it has not heard the end of, so that turn comes.
            self.cancelled.push(token);
        }
        self.maybe_close_idle();
    }

    /// Whether the page gave up on the request `token` before it went out; forgets that.
    fn given_up(&mut self, token: u32) -> bool {
        let at = self.cancelled.iter().position(|t| *t == token);
        if let Some(at) = at {
            self.cancelled.swap_remove(at);
        }
        at.is_some()
    }

    fn maybe_close_idle(&mut self) {
        if self.close_when_idle && self.pending.is_empty() {
            self.close_when_idle = false;
            if let Some(conn) = &self.conn {
                let _ = conn.ws.close_with_code(1000);
            }
        }
    }

    /// A RetryResult: send the request again after `wait` ms with a new id, as long as it
    /// goes out by the call's deadline (and within `maxRetries`, when the page set it).
    fn retry(&mut self, id: Id, wait: u32, message: &[u8]) {
        let mut why = String::from("gotalk: the server is busy (");
        why.push_str(&String::from_utf8_lossy(message));
        why.push_str("); retry after ");
        why.push_str(&text::decimal(u64::from(wait)));
        why.push_str(" ms");
        match self.pending.remove(id) {
            Some(Pending::Single(mut call)) => {
                if !call.deadline.allows(now(), f64::from(wait)) {
                    why.push_str(" would pass the call's deadline (retryTimeout ");
                    why.push_str(&text::decimal(self.retry_timeout as u64));
                    why.push_str(" ms, after ");
                    why.push_str(&text::decimal(u64::from(call.retries)));
                    why.push_str(" retries)");
                    return self.settle(call.token, error(&why));
                }
                if call.retries >= self.max_retries {
                    return self.settle(call.token, error(&why));
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
