//! Requests this side sends: the table of calls waiting for results, retries, deadlines,
//! notifications and streaming requests.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use gotalk_protocol::{Frame, Id, Name};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{lock, IdMap, Sock};
use crate::error::{CloseReason, Error};
use crate::memory::Charge;
use crate::queue::{parts, PartsRx, PartsTx, PushError};

/// How the peer answered a single request.
#[derive(Debug)]
pub(crate) enum Reply {
    Result(Bytes),
    Error(String),
    Retry { wait: u32, message: String },
}

/// One item of a streaming result as its reader sees it.
#[derive(Debug)]
pub(crate) enum Part {
    Data(Bytes),
    End,
    Failed(Error),
}

/// A call waiting for its result.
pub(crate) enum Call {
    /// A single request. A streaming result to it is collected, up to the payload limit,
    /// and charged to the memory budgets while it is.
    Single { tx: oneshot::Sender<Result<Reply, Error>>, collected: Option<(BytesMut, Charge)> },
    /// A streaming request; its result parts are queued for the reader.
    Stream(PartsTx<Part>),
}

impl Call {
    fn fail(self, error: Error) {
        match self {
            Call::Single { tx, .. } => {
                let _ = tx.send(Err(error));
            }
            Call::Stream(tx) => {
                let _ = tx.push_final(Part::Failed(error));
            }
        }
    }
}

/// The calls in flight, by id.
#[derive(Default)]
pub(crate) struct Calls {
    map: IdMap<Call>,
    /// Set once the peer can no longer answer: new calls fail at once with this. Boxed: set
    /// only at the end, and every connection keeps this table.
    refused: Option<Box<CloseReason>>,
}

impl Calls {
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Removes a call from the table if its caller gives up, so abandoned calls don't pile up.
struct CallGuard<'a> {
    sock: &'a Sock,
    id: Id,
    /// False once the result arrived: delivering it already removed the call.
    armed: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.sock.remove_call(self.id);
        }
    }
}

fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    Ok(Bytes::from(serde_json::to_vec(value)?))
}

/// Parses a JSON payload; an empty one is `null`, so an empty result reads as `()` or `None`.
pub(crate) fn from_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, serde_json::Error> {
    if payload.is_empty() {
        serde_json::from_slice(b"null")
    } else {
        serde_json::from_slice(payload)
    }
}

impl Sock {
    /// Sends a request with a JSON value and decodes the JSON result.
    ///
    /// An empty result decodes as JSON `null`, so `()` and `Option<T>` accept it. The
    /// connection's [`request_timeout`](crate::Config::request_timeout) bounds the wait, if set;
    /// [`with_timeout`](Self::with_timeout) gives one call a deadline of its own.
    ///
    /// # Errors
    /// [`Error::Remote`] for an ErrorResult, [`Error::Retry`] when retries run out,
    /// [`Error::Json`] for a value that does not encode or a result that does not decode,
    /// [`Error::Timeout`] past the deadline, [`Error::Closed`] when the connection closes
    /// first.
    pub async fn request<P, R>(&self, op: &str, params: &P) -> Result<R, Error>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.with_timeout(self.shared.config.request_timeout).request(op, params).await
    }

    /// This sock, with `timeout` as the deadline of the requests made through it instead of
    /// the connection's [`request_timeout`](crate::Config::request_timeout); `None` for no deadline.
    ///
    /// A call past its deadline fails with [`Error::Timeout`] and frees its entry at once. The
    /// deadline is local: the protocol has no way to cancel a request, so the peer's handler
    /// runs on until it answers (the late result is dropped and counted in
    /// [`late_results`](Self::late_results)) or the connection closes, which drops it.
    ///
    /// ```no_run
    /// # async fn f(sock: gotalk::Sock) -> Result<(), gotalk::Error> {
    /// use std::time::Duration;
    ///
    /// let sum: u32 = sock.with_timeout(Duration::from_secs(2)).request("add", &[1, 2]).await?;
    /// // A deadline for a whole streaming request: the response fails with Error::Timeout
    /// // and the request stream is ended when it passes.
    /// let (mut parts, mut results) =
    ///     sock.with_timeout(Duration::from_secs(30)).stream_request("upload", "first").await?;
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(&self, timeout: impl Into<Option<Duration>>) -> WithTimeout<'_> {
        WithTimeout { sock: self, timeout: timeout.into() }
    }

    /// How many result messages arrived for calls no longer waiting for them: calls that
    /// timed out or were dropped, and stream responses dropped before their end (each part
    /// counts). They are dropped, not treated as errors.
    pub fn late_results(&self) -> u64 {
        self.shared.late_results.load(Ordering::Relaxed)
    }

    /// Sends a request with raw bytes and returns the raw result. A RetryResult is honoured:
    /// the request is sent again with a new id after the wait, up to the configured number of
    /// retries. A streaming result is collected into one buffer, up to the payload limit.
    ///
    /// The connection's [`request_timeout`](crate::Config::request_timeout) bounds the whole call,
    /// retries included; [`with_timeout`](Self::with_timeout) sets another. Dropping the
    /// future abandons the request and frees its entry at once, as a timeout does; a late
    /// result is discarded and counted.
    ///
    /// # Errors
    /// As [`request`](Sock::request), and [`Error::PayloadTooLarge`] or [`Error::NameTooLong`]
    /// for what cannot be sent.
    pub async fn buffer_request(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        self.with_timeout(self.shared.config.request_timeout).buffer_request(op, payload).await
    }

    /// [`buffer_request`](Self::buffer_request) without a deadline.
    async fn single_call(&self, op: &str, payload: Bytes) -> Result<Bytes, Error> {
        let op = Name::new(op)?;
        self.check_size(payload.len())?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (tx, rx) = oneshot::channel();
            let id = self.add_call(Call::Single { tx, collected: None })?;
            let mut guard = CallGuard { sock: self, id, armed: true };
            self.send(Frame::SingleRequest { id, op: op.clone(), payload: payload.clone() })
                .await?;
            let reply = rx.await;
            guard.armed = false;
            let reply = reply.unwrap_or_else(|_| Err(self.closed_error()))?;
            match reply {
                Reply::Result(bytes) => return Ok(bytes),
                Reply::Error(message) => return Err(Error::Remote(message)),
                Reply::Retry { wait, message } => {
                    let wait = Duration::from_millis(u64::from(wait));
                    if attempts > self.shared.config.max_retries {
                        return Err(Error::Retry { wait, message, attempts });
                    }
                    tracing::debug!(parent: self.shared.span(), %op, ?wait, %message, "retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shared.cancel().cancelled() => return Err(self.closed_error()),
                    }
                }
            }
        }
    }

    /// Sends a notification with a JSON value.
    ///
    /// # Errors
    /// [`Error::Json`], [`Error::NameTooLong`], [`Error::PayloadTooLarge`], [`Error::Closed`].
    pub async fn notify<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        self.buffer_notify(name, to_json(value)?).await
    }

    /// Sends a notification with raw bytes.
    ///
    /// # Errors
    /// [`Error::NameTooLong`], [`Error::PayloadTooLarge`], [`Error::Closed`].
    pub async fn buffer_notify(&self, name: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        let name = Name::new(name)?;
        let payload = payload.into();
        self.check_size(payload.len())?;
        self.send(Frame::Notification { name, payload }).await
    }

    /// Opens a streaming request whose first part is `first`. Write more parts with the
    /// returned [`StreamRequest`] and read the result from the [`StreamResponse`]. A
    /// RetryResult ends the response with [`Error::Retry`]: the parts already sent cannot be
    /// replayed, so the caller decides.
    ///
    /// An empty `first` defers the request until the first non-empty write (or the end),
    /// because on the wire a streaming request with an empty first part is a stream that has
    /// already ended, as Go and gotalk.js treat it.
    ///
    /// No deadline applies, not even the connection's [`request_timeout`](crate::Config::request_timeout):
    /// a stream may rightly last as long as its connection. Give one with
    /// [`with_timeout`](Self::with_timeout).
    ///
    /// # Errors
    /// [`Error::NameTooLong`], [`Error::PayloadTooLarge`], [`Error::Ending`], [`Error::Closed`].
    pub async fn stream_request(
        &self,
        op: &str,
        first: impl Into<Bytes>,
    ) -> Result<(StreamRequest, StreamResponse), Error> {
        self.open_stream(op, first.into(), None).await
    }

    async fn open_stream(
        &self,
        op: &str,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<(StreamRequest, StreamResponse), Error> {
        let op = Name::new(op)?;
        self.check_size(payload.len())?;
        let budget = Some(self.shared.budget.clone());
        let (tx, rx) = parts(self.shared.config.stream_buffer_bytes, budget);
        let id = self.add_call(Call::Stream(tx))?;
        let out = Arc::new(Mutex::new(Outgoing { unsent: Some(op), ended: false, expired: None }));
        let deadline = timeout.map(|t| self.stream_deadline(id, out.clone(), t));
        let response =
            StreamResponse { sock: self.clone(), id, rx, done: false, _deadline: deadline };
        let mut request = StreamRequest { sock: self.clone(), id, out };
        if !payload.is_empty() {
            request.push(payload, false).await?;
        }
        Ok((request, response))
    }

    /// Ends the stream request `id` at `timeout` from now unless its response is dropped
    /// first: the response fails with [`Error::Timeout`], its entry is freed, and the request
    /// stream is ended so the peer's handler sees the end of its input.
    fn stream_deadline(&self, id: Id, out: Arc<Mutex<Outgoing>>, timeout: Duration) -> DropGuard {
        let stop = CancellationToken::new();
        let sock = self.clone();
        let stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = stopped.cancelled() => return,
                _ = sock.shared.cancel().cancelled() => return,
            }
            // A response that already ended has nothing left to time out.
            let Some(call) = sock.remove_call(id) else { return };
            call.fail(Error::Timeout(timeout));
            let mut out = lock(&out);
            if !out.ended {
                out.ended = true;
                out.expired = Some(timeout);
                // Under the lock the writer queues its parts under, so the end goes out after
                // every part already queued and no part can follow it. Nothing was sent for a
                // request whose first part never went: there is nothing to end.
                if out.unsent.is_none() {
                    sock.send_now(Frame::StreamRequestPart { id, payload: Bytes::new() });
                }
            }
        });
        stop.drop_guard()
    }

    pub(crate) fn check_size(&self, len: usize) -> Result<(), Error> {
        let max = self.shared.config.max_payload as usize;
        if len > max {
            return Err(Error::PayloadTooLarge { size: len, max });
        }
        Ok(())
    }

    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed(self.close_reason().unwrap_or(CloseReason::Local))
    }

    /// Registers a call under an id no other call in flight uses.
    fn add_call(&self, call: Call) -> Result<Id, Error> {
        if self.shared.ending.load(Ordering::Acquire) {
            return Err(Error::Ending);
        }
        let mut calls = lock(&self.shared.calls);
        // Checked under the lock so a call never slips in after close has failed the table.
        if self.is_closed() {
            return Err(self.closed_error());
        }
        if let Some(reason) = &calls.refused {
            return Err(Error::Closed((**reason).clone()));
        }
        loop {
            let id = Id::from_u32(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
            if let std::collections::hash_map::Entry::Vacant(slot) = calls.map.entry(id) {
                slot.insert(call);
                return Ok(id);
            }
        }
    }

    fn remove_call(&self, id: Id) -> Option<Call> {
        let mut calls = lock(&self.shared.calls);
        let call = calls.map.remove(&id);
        if call.is_some() && calls.map.is_empty() {
            self.shared.idle.notify_waiters();
        }
        call
    }

    /// Fails every call in flight, and every call made from now on, with `reason`.
    pub(super) fn fail_calls(&self, reason: &CloseReason) {
        let calls = {
            let mut calls = lock(&self.shared.calls);
            calls.refused.get_or_insert_with(|| Box::new(reason.clone()));
            std::mem::take(&mut calls.map)
        };
        for (_, call) in calls {
            call.fail(Error::Closed(reason.clone()));
        }
    }

    /// Delivers a result frame (`R`, `S`, `E` or `e`) to the call waiting for it. Results for
    /// ids nobody waits for (abandoned or unknown) are dropped.
    pub(super) fn deliver(&self, frame: Frame) {
        let Some(id) = frame.id() else { return };
        let mut calls = lock(&self.shared.calls);
        let Some(call) = calls.map.get_mut(&id) else {
            self.shared.late_results.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(parent: self.shared.span(), %id, "result for no pending request");
            return;
        };
        let finished = match (frame, call) {
            (Frame::StreamResult { payload, .. }, Call::Single { collected, .. })
                if !payload.is_empty() =>
            {
                let max = self.shared.config.max_payload as usize;
                let held = collected.as_ref().map_or(0, |(buf, _)| buf.len());
                if held + payload.len() > max {
                    Some(Err(Error::PayloadTooLarge { size: held + payload.len(), max }))
                } else {
                    let charged = match collected {
                        Some((_, charge)) => charge.grow(payload.len()),
                        None => self.try_charge(payload.len()).map(|charge| {
                            *collected = Some((BytesMut::new(), charge));
                        }),
                    };
                    match (charged, collected.as_mut()) {
                        (Ok(()), Some((buf, _))) => {
                            buf.extend_from_slice(&payload);
                            None
                        }
                        (Err(exhausted), _) => Some(Err(Error::OverBudget(exhausted))),
                        (Ok(()), None) => None,
                    }
                }
            }
            (Frame::StreamResult { payload, .. }, Call::Stream(tx)) if !payload.is_empty() => {
                let len = payload.len();
                match tx.push(Part::Data(payload), len) {
                    Ok(()) => None,
                    Err(PushError::Overflow) => Some(Err(Error::StreamOverflow(tx.capacity()))),
                    Err(PushError::Budget(exhausted)) => Some(Err(Error::OverBudget(exhausted))),
                    // The reader dropped its StreamResponse; stop tracking the call.
                    Err(PushError::Closed) => Some(Err(Error::StreamEnded)),
                }
            }
            (Frame::StreamResult { .. }, Call::Single { collected, .. }) => {
                let all = collected.take().map(|(buf, _charge)| buf.freeze());
                Some(Ok(Reply::Result(all.unwrap_or_default())))
            }
            // The end of a streaming result: nothing more to deliver but the end itself.
            (Frame::StreamResult { .. }, Call::Stream(_)) => Some(Ok(Reply::Result(Bytes::new()))),
            (Frame::SingleResult { payload, .. }, _) => Some(Ok(Reply::Result(payload))),
            (Frame::ErrorResult { payload, .. }, _) => Some(Ok(Reply::Error(text(&payload)))),
            (Frame::RetryResult { wait, payload, .. }, _) => {
                Some(Ok(Reply::Retry { wait, message: text(&payload) }))
            }
            _ => None,
        };
        let Some(outcome) = finished else { return };
        let Some(call) = calls.map.remove(&id) else { return };
        if calls.map.is_empty() {
            self.shared.idle.notify_waiters();
        }
        drop(calls);
        match (call, outcome) {
            (Call::Single { tx, .. }, outcome) => {
                let _ = tx.send(outcome);
            }
            (Call::Stream(tx), Ok(reply)) => {
                let _ = match reply {
                    Reply::Result(bytes) => {
                        if !bytes.is_empty() {
                            let _ = tx.push_final(Part::Data(bytes));
                        }
                        tx.push_final(Part::End)
                    }
                    Reply::Error(message) => tx.push_final(Part::Failed(Error::Remote(message))),
                    Reply::Retry { wait, message } => tx.push_final(Part::Failed(Error::Retry {
                        wait: Duration::from_millis(u64::from(wait)),
                        message,
                        attempts: 1,
                    })),
                };
            }
            (Call::Stream(tx), Err(error)) => {
                let _ = tx.push_final(Part::Failed(error));
            }
        }
    }
}

/// What the writing side of a streaming request has sent, shared with its deadline.
#[derive(Debug)]
struct Outgoing {
    /// The op, until the request itself (`s`) has gone out with the first part.
    unsent: Option<Name>,
    ended: bool,
    /// Set when the call's deadline passed and ended the stream.
    expired: Option<Duration>,
}

impl Outgoing {
    fn still_open(&self) -> Result<(), Error> {
        match self.expired {
            Some(timeout) => Err(Error::Timeout(timeout)),
            None if self.ended => Err(Error::StreamEnded),
            None => Ok(()),
        }
    }
}

/// The writing side of a streaming request.
#[derive(Debug)]
pub struct StreamRequest {
    sock: Sock,
    id: Id,
    /// Shared with the deadline, which may end the stream while this side is not writing.
    out: Arc<Mutex<Outgoing>>,
}

impl StreamRequest {
    /// Sends one more part. Empty parts are skipped: on the wire an empty part ends the
    /// stream, which is what [`end`](Self::end) is for.
    ///
    /// # Errors
    /// [`Error::StreamEnded`] after `end`, [`Error::Timeout`] once the call's deadline ended
    /// the stream, [`Error::PayloadTooLarge`], [`Error::Closed`].
    pub async fn write(&mut self, part: impl Into<Bytes>) -> Result<(), Error> {
        self.check_open()?;
        let payload = part.into();
        if payload.is_empty() {
            return Ok(());
        }
        self.sock.check_size(payload.len())?;
        self.push(payload, false).await
    }

    /// Ends the request stream.
    ///
    /// # Errors
    /// [`Error::StreamEnded`] if already ended, [`Error::Timeout`] once the call's deadline
    /// ended it, [`Error::Closed`].
    pub async fn end(&mut self) -> Result<(), Error> {
        self.check_open()?;
        self.push(Bytes::new(), true).await
    }

    fn check_open(&self) -> Result<(), Error> {
        lock(&self.out).still_open()
    }

    /// Queues a part (the request itself with the first), or the end. What goes out is
    /// decided only once there is room, under the lock the deadline ends the stream under.
    async fn push(&mut self, payload: Bytes, end: bool) -> Result<(), Error> {
        let room = self.sock.send_room(payload.len()).await?;
        let mut out = lock(&self.out);
        out.still_open()?;
        let id = self.id;
        let frame = match out.unsent.take() {
            // An empty first part ends it at once.
            Some(op) => Frame::StreamRequest { id, op, payload },
            None => Frame::StreamRequestPart { id, payload },
        };
        out.ended = end;
        self.sock.push_frame(frame, room)
    }
}

impl Drop for StreamRequest {
    fn drop(&mut self) {
        // A stream left open would hold one of the peer's stream slots forever; end it. The
        // end is empty, so it needs no room in the send queue and goes out without waiting.
        let mut out = lock(&self.out);
        if !out.ended && !self.sock.is_closed() {
            out.ended = true;
            let id = self.id;
            let frame = match out.unsent.take() {
                Some(op) => Frame::StreamRequest { id, op, payload: Bytes::new() },
                None => Frame::StreamRequestPart { id, payload: Bytes::new() },
            };
            self.sock.send_now(frame);
        }
    }
}

/// The result of a streaming request, read part by part.
#[derive(Debug)]
pub struct StreamResponse {
    sock: Sock,
    id: Id,
    rx: PartsRx<Part>,
    done: bool,
    /// Stops the call's deadline, if it has one, when the response is dropped.
    _deadline: Option<DropGuard>,
}

impl StreamResponse {
    /// The next part of the result; `Ok(None)` at its end. A single result (`R`) comes out as
    /// one part.
    ///
    /// # Errors
    /// [`Error::Remote`] for an ErrorResult, [`Error::Retry`] for a RetryResult,
    /// [`Error::StreamOverflow`] when parts were not read fast enough, [`Error::Closed`].
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Part::Data(bytes)) => Ok(Some(bytes)),
            Some(Part::End) => {
                self.done = true;
                Ok(None)
            }
            Some(Part::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Err(self.sock.closed_error())
            }
        }
    }

    /// Reads every remaining part into one buffer.
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub async fn collect(mut self) -> Result<Bytes, Error> {
        let mut all = BytesMut::new();
        while let Some(part) = self.next().await? {
            all.extend_from_slice(&part);
        }
        Ok(all.freeze())
    }
}

impl Drop for StreamResponse {
    fn drop(&mut self) {
        if !self.done {
            self.sock.remove_call(self.id);
        }
    }
}

/// A [`Sock`] whose requests have a deadline of their own: see [`Sock::with_timeout`].
#[derive(Debug, Clone, Copy)]
pub struct WithTimeout<'a> {
    sock: &'a Sock,
    timeout: Option<Duration>,
}

impl<'a> WithTimeout<'a> {
    /// [`Sock::request`] with this deadline.
    ///
    /// # Errors
    /// As [`Sock::request`]; [`Error::Timeout`] past the deadline.
    pub async fn request<P, R>(self, op: &str, params: &P) -> Result<R, Error>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let result = self.buffer_request(op, to_json(params)?).await?;
        Ok(from_json(&result)?)
    }

    /// [`Sock::buffer_request`] with this deadline, which bounds the whole call, retries
    /// included.
    ///
    /// # Errors
    /// As [`Sock::buffer_request`]; [`Error::Timeout`] past the deadline.
    pub async fn buffer_request(self, op: &str, payload: impl Into<Bytes>) -> Result<Bytes, Error> {
        let call = self.sock.single_call(op, payload.into());
        match self.timeout {
            // Dropping the call at the deadline frees its entry (see CallGuard).
            Some(timeout) => {
                tokio::time::timeout(timeout, call).await.unwrap_or(Err(Error::Timeout(timeout)))
            }
            None => call.await,
        }
    }

    /// [`Sock::stream_request`] with this deadline for the whole exchange. When it passes
    /// before the result has ended, the response fails with [`Error::Timeout`], the call's
    /// entry is freed, and the request stream is ended (writes fail with [`Error::Timeout`]).
    ///
    /// # Errors
    /// As [`Sock::stream_request`].
    pub async fn stream_request(
        self,
        op: &str,
        first: impl Into<Bytes>,
    ) -> Result<(StreamRequest, StreamResponse), Error> {
        self.sock.open_stream(op, first.into(), self.timeout).await
    }
}
