//! Requests the peer sends: limits, the in-flight table, held requests, and running handlers
//! in tasks of their own.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use gotalk_protocol::{Frame, Id, Name};
use rand::Rng;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::{lock, IdMap, Outbound, Sock};
use crate::error::Error;
use crate::extension::{Answer, RequestDone, RequestOutcome};
use crate::handler_error::{self, Failure, HandlerError};
use crate::handlers::Route;
use crate::memory::{Charge, OVERHEAD};
use crate::queue::{parts, PartsRx, PartsTx, PushError};

type InputTx = PartsTx<Result<Bytes, Error>>;
type InputRx = PartsRx<Result<Bytes, Error>>;

/// One of the peer's requests that is running or held.
struct Entry {
    stream: bool,
    /// Where the request's further parts go, until its input ends.
    input: Option<InputTx>,
}

/// A request waiting for a slot, for a peer that cannot take a RetryResult.
struct Held {
    id: Id,
    op: Name,
    payload: Bytes,
    stream: bool,
    route: Route,
    input: Option<InputRx>,
    /// The request's payload, charged to the memory budgets until its answer is written.
    charge: Charge,
    /// Its name and arrival, for [`Extension::request_done`](crate::Extension::request_done).
    done: Done,
}

/// What [`Extension::request_done`](crate::Extension::request_done) is told of a request: the
/// name it is registered under, and when it arrived.
struct Done {
    op: OpName,
    /// Not read from the clock when no extension is registered: nothing would be told it.
    arrived: Option<Instant>,
}

/// The name a request is served under, kept without copying it.
enum OpName {
    /// A handler's.
    Registered(Arc<str>),
    /// An extension's claim.
    Claimed(&'static str),
    /// A fallback's, or nobody's: a name the peer chose.
    Other,
}

impl OpName {
    fn get(&self) -> Option<&str> {
        match self {
            OpName::Registered(name) => Some(name),
            OpName::Claimed(name) => Some(name),
            OpName::Other => None,
        }
    }
}

/// The peer's requests in flight.
#[derive(Default)]
pub(crate) struct Inbound {
    ids: IdMap<Entry>,
    running: u32,
    running_streams: u32,
    /// Made on the first request held: most connections never hold one, and every
    /// connection keeps this table.
    #[allow(clippy::box_collection)]
    held: Option<Box<VecDeque<Held>>>,
}

impl Inbound {
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn fits(&self, stream: bool, request_limit: u32, stream_limit: u32) -> bool {
        self.running < request_limit && (!stream || self.running_streams < stream_limit)
    }
}

/// What to do with a request that arrived.
enum Admit {
    Start(Held),
    Retry(String),
    Held,
    Refuse(String),
}

/// What is left to do for a request once [`Sock::on_request`] has done what needs no
/// waiting. Most requests leave nothing; this is for the rest, so the read loop makes (and
/// boxes) a future only for them, and one much smaller than a whole admission's.
pub(super) enum Later {
    /// An answer that waits for room in the send queue: a probe's echo, a refusal, an
    /// unknown operation's error.
    Send(Frame),
    /// A request an extension claims, answered by it.
    Claimed(Claimed),
}

/// A request an extension claims: [`Later::Claimed`].
pub(super) struct Claimed {
    id: Id,
    op: Name,
    payload: Bytes,
    extension: Arc<dyn crate::Extension>,
    done: Done,
}

impl Sock {
    /// Whether handlers of the peer's requests are running (in tasks of their own: one that
    /// answers at once is finished before the read loop goes on).
    pub(super) fn handlers_running(&self) -> bool {
        lock(&self.shared.inbound).running > 0
    }

    /// Admits a request (`r` or `s`) from the peer: starts it, holds it, or decides its
    /// answer, without waiting. What must wait is returned.
    ///
    /// A request whose id is already in flight is answered with an ErrorResult.
    pub(super) fn on_request(&self, frame: Frame, carried: Option<Charge>) -> Option<Later> {
        let (id, op, payload, stream) = match frame {
            Frame::SingleRequest { id, op, payload } => (id, op, payload, false),
            Frame::StreamRequest { id, op, payload } => (id, op, payload, true),
            _ => return None,
        };
        let arrived = (!self.shared.handlers.extensions.is_empty()).then(Instant::now);
        if !stream && op.as_str() == super::live::PING_OP {
            // A liveness probe: echoed at once, past every limit, so a busy peer still
            // proves it is alive.
            return Some(Later::Send(Frame::SingleResult { id, payload }));
        }
        if let Some((name, extension)) =
            self.shared.handlers.extensions.request_claim(op.as_str()).filter(|_| !stream)
        {
            // Answered by the extension, past the limits and the drain, as `$ping` is: an
            // extension's request only checks and queues.
            let done = Done { op: OpName::Claimed(name), arrived };
            let extension = extension.clone();
            return Some(Later::Claimed(Claimed { id, op, payload, extension, done }));
        }
        let Some((route, name)) = self.shared.handlers.route(op.as_str(), stream) else {
            let message = format!("unknown operation {:?}", op.as_str());
            self.request_done(&Done { op: OpName::Other, arrived }, RequestOutcome::Unknown);
            return Some(self.error_reply(id, message));
        };
        let done = Done { op: name.map_or(OpName::Other, OpName::Registered), arrived };
        let config = &self.shared.config;
        if config.peer_understands_retry && self.shared.ending.load(Ordering::Acquire) {
            // Draining: `$done` went out, and work that starts now could outlive the
            // connection. The peer sends it again after the wait, by then to whatever
            // serves next. A peer that cannot take a RetryResult is served as before,
            // within the drain's deadline.
            let payload = self.fit_text("shutting down".to_owned());
            let wait = self.retry_wait();
            self.request_done(&done, RequestOutcome::Retry);
            return Some(Later::Send(Frame::RetryResult { id, wait, payload }));
        }
        if stream && config.stream_limit == 0 {
            self.request_done(&done, RequestOutcome::Refused);
            return Some(self.error_reply(id, "stream requests are disabled".into()));
        }
        // Paid for before it is held: a large one already was, while it was read.
        let charge = match carried {
            Some(charge) => Ok(charge),
            None => self.try_charge(payload.len() + OVERHEAD),
        };
        let (admit, done) = {
            let mut inbound = lock(&self.shared.inbound);
            match charge {
                // Answered, as Go answers it, and the request in flight goes on: closing
                // would fail every other call on the connection for one peer's slip.
                _ if inbound.ids.contains_key(&id) => {
                    (Admit::Refuse(format!("request id {id} is already in flight")), Some(done))
                }
                Err(exhausted) => {
                    (budget_refusal(config.peer_understands_retry, exhausted), Some(done))
                }
                Ok(charge) => {
                    let held = Held { id, op, payload, stream, route, input: None, charge, done };
                    self.admit(&mut inbound, held)
                }
            }
        };
        self.answer_admission(id, admit, done)
    }

    /// Does what [`on_request`](Self::on_request) left to do.
    pub(super) async fn finish_request(&self, later: Later) {
        match later {
            Later::Send(frame) => {
                let _ = self.send(frame).await;
            }
            Later::Claimed(Claimed { id, op, payload, extension, done }) => {
                let answer = async { extension.request(self, op.as_str(), payload).await };
                let answer =
                    AssertUnwindSafe(answer).catch_unwind().await.unwrap_or_else(|panic| {
                        Answer::Error(handler_error::panicked(op.as_str(), &*panic))
                    });
                self.answer(id, answer, done).await;
            }
        }
    }

    /// Decides what becomes of a request that is paid for, under the inbound table's lock;
    /// gives back what the hook needs of one that is answered now.
    fn admit(&self, inbound: &mut Inbound, mut held: Held) -> (Admit, Option<Done>) {
        let config = &self.shared.config;
        let (id, stream) = (held.id, held.stream);
        let mut input_tx = None;
        // A stream request whose first part is empty has already ended its input: that is
        // what Go and gotalk.js send for a stream ended before anything was written.
        if stream && !held.payload.is_empty() {
            let (tx, rx) = parts(config.stream_buffer_bytes, Some(self.shared.budget.clone()));
            input_tx = Some(tx);
            held.input = Some(rx);
        }
        let admit = if inbound.held.as_ref().is_none_or(|held| held.is_empty())
            && inbound.fits(stream, config.request_limit, config.stream_limit)
        {
            inbound.running += 1;
            inbound.running_streams += u32::from(stream);
            (Admit::Start(held), None)
        } else if config.peer_understands_retry {
            let message = if stream { "stream rate limit" } else { "request rate limit" };
            (Admit::Retry(message.into()), Some(held.done))
        } else if inbound.held.as_ref().map_or(0, |held| held.len()) < config.held_requests {
            inbound.held.get_or_insert_default().push_back(held);
            (Admit::Held, None)
        } else {
            (Admit::Refuse("request rate limit".into()), Some(held.done))
        };
        if matches!(admit.0, Admit::Start(_) | Admit::Held) {
            inbound.ids.insert(id, Entry { stream, input: input_tx });
        }
        admit
    }

    /// Starts, holds or answers a request as admitted; `done` is for one answered here.
    fn answer_admission(&self, id: Id, admit: Admit, done: Option<Done>) -> Option<Later> {
        let outcome = match &admit {
            Admit::Retry(_) => RequestOutcome::Retry,
            _ => RequestOutcome::Refused,
        };
        if let Some(done) = done {
            self.request_done(&done, outcome);
        }
        match admit {
            Admit::Start(held) => {
                self.spawn_handler(held, true);
                None
            }
            Admit::Held => {
                tracing::debug!(parent: self.shared.span(), %id, "request held until a slot frees");
                None
            }
            Admit::Retry(message) => {
                let wait = self.retry_wait();
                let payload = self.fit_text(message);
                Some(Later::Send(Frame::RetryResult { id, wait, payload }))
            }
            Admit::Refuse(message) => Some(self.error_reply(id, message)),
        }
    }

    /// Routes a streaming request part (`p`) to its handler's input.
    pub(super) fn on_request_part(&self, id: Id, payload: Bytes) {
        let mut inbound = lock(&self.shared.inbound);
        let Some(entry) = inbound.ids.get_mut(&id) else {
            // Parts of a stream that was refused, answered or never opened.
            tracing::debug!(parent: self.shared.span(), %id, "part for no open stream request");
            return;
        };
        let Some(input) = &entry.input else { return };
        if payload.is_empty() {
            entry.input = None;
            return;
        }
        let len = payload.len();
        match input.push(Ok(payload), len) {
            Ok(()) => {}
            Err(PushError::Overflow) => {
                let _ = input.push_final(Err(Error::StreamOverflow(input.capacity())));
                entry.input = None;
            }
            Err(PushError::Budget(exhausted)) => {
                let _ = input.push_final(Err(Error::OverBudget(exhausted)));
                entry.input = None;
            }
            Err(PushError::Closed) => entry.input = None,
        }
    }

    /// Ends the input of every request stream still open with `error`: the peer can no
    /// longer send their parts, and their handlers must not wait for them.
    pub(super) fn fail_open_inputs(&self, error: Error) {
        let mut inbound = lock(&self.shared.inbound);
        for entry in inbound.ids.values_mut() {
            if let Some(input) = entry.input.take() {
                let _ = input.push_final(Err(error.clone()));
            }
        }
    }

    /// Sends an extension's answer to request `id`; one to come is sent from a task of its
    /// own when it is ready.
    async fn answer(&self, id: Id, answer: Answer, done: Done) {
        match answer {
            Answer::Later(later) => {
                let sock = self.clone();
                let answer = async move {
                    let answer = AssertUnwindSafe(later.0).catch_unwind().await;
                    let answer = answer.unwrap_or_else(|panic| {
                        Answer::Error(handler_error::panicked(done.op.get().unwrap_or(""), &*panic))
                    });
                    sock.answer_ready(id, answer, done).await;
                };
                // Not instrumented: that would make the connection's span for every
                // answer that waits (see `Shared::span`).
                tokio::spawn(answer);
            }
            answer => self.answer_ready(id, answer, done).await,
        }
    }

    /// Sends an answer that is not [`Answer::Later`]; one that still is (a future that gave
    /// another) is answered as an error.
    async fn answer_ready(&self, id: Id, answer: Answer, done: Done) {
        let (frame, outcome) = match answer {
            Answer::Later(_) => {
                let frame = Frame::ErrorResult { id, payload: self.fit_text("no answer".into()) };
                (frame, RequestOutcome::Error)
            }
            Answer::Result(payload) => {
                (Frame::SingleResult { id, payload }, RequestOutcome::Result)
            }
            Answer::Retry(message) if self.shared.config.peer_understands_retry => {
                let wait = self.retry_wait();
                let frame = Frame::RetryResult { id, wait, payload: self.fit_text(message) };
                (frame, RequestOutcome::Retry)
            }
            Answer::Error(message) | Answer::Retry(message) => {
                (Frame::ErrorResult { id, payload: self.fit_text(message) }, RequestOutcome::Error)
            }
        };
        self.request_done(&done, outcome);
        let _ = self.send(frame).await;
    }

    /// Tells the extensions that a request is done. Called before its answer is queued, so a
    /// peer that has the answer knows the extensions heard of it.
    fn request_done(&self, done: &Done, outcome: RequestOutcome) {
        let extensions = &self.shared.handlers.extensions;
        if extensions.is_empty() {
            return;
        }
        let elapsed = done.arrived.map(|at| at.elapsed()).unwrap_or_default();
        extensions.request_done(self, &RequestDone { op: done.op.get(), outcome, elapsed });
    }

    /// An ErrorResult with `message`, to send.
    fn error_reply(&self, id: Id, message: String) -> Later {
        Later::Send(Frame::ErrorResult { id, payload: self.fit_text(message) })
    }

    /// Error text as a payload, cut at a character boundary to the payload limit: a longer
    /// one (a long op name, serde's description of bad parameters) would make the peer drop
    /// the connection.
    fn fit_text(&self, mut message: String) -> Bytes {
        let max = self.shared.config.max_payload as usize;
        if message.len() > max {
            let mut end = max;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Bytes::from(message)
    }

    fn retry_wait(&self) -> u32 {
        let config = &self.shared.config;
        let (min, max) = (config.retry_wait_min, config.retry_wait_max);
        let wait = if max > min { rand::rng().random_range(min..max) } else { min };
        u32::try_from(wait.as_millis()).unwrap_or(u32::MAX)
    }

    /// Marks a request finished and queues its answer, if any, in one step under the table's
    /// lock: the id is free before the peer can see the answer (it may reuse the id at
    /// once), and the answer is queued before the table can look empty to
    /// [`Sock::end`](super::Sock::end), which closes the connection then. Then starts held
    /// requests that now fit.
    fn finish(
        &self,
        id: Id,
        answer: Option<Frame>,
        permit: Option<OwnedSemaphorePermit>,
        charge: Option<Charge>,
    ) {
        let config = &self.shared.config;
        let mut start = Vec::new();
        {
            let mut inbound = lock(&self.shared.inbound);
            if let Some(answer) = answer {
                let _ = self.shared.out.push(Outbound::Frame(answer, permit, charge));
            }
            if let Some(entry) = inbound.ids.remove(&id) {
                inbound.running -= 1;
                inbound.running_streams -= u32::from(entry.stream);
            }
            while let Some(stream) = inbound.held.as_ref().and_then(|h| h.front()).map(|n| n.stream)
            {
                if !inbound.fits(stream, config.request_limit, config.stream_limit) {
                    break;
                }
                inbound.running += 1;
                inbound.running_streams += u32::from(stream);
                start.extend(inbound.held.as_mut().and_then(|held| held.pop_front()));
            }
            if inbound.ids.is_empty() {
                self.shared.idle.notify_waiters();
            }
        }
        // In tasks: run here, a held request that finishes at once would start the next from
        // inside this call, as deep as the queue is long.
        for held in start {
            self.spawn_handler(held, false);
        }
    }

    fn spawn_handler(&self, mut held: Held, inline: bool) {
        let id = held.id;
        let span =
            tracing::debug_span!(parent: self.shared.span(), "request", op = %held.op, id = %id);
        let sock = self.clone();
        match held.route {
            // The common case gets a task of its own shape: the handler's future and little
            // else, which is much less to allocate and move than the general one.
            Route::Buffer(f) if !held.stream => {
                let (op, payload, charge) = (held.op, held.payload, held.charge);
                // The handler is called inside the request's future, where a panic is caught,
                // even one raised before it returns its future.
                self.spawn_request(id, span, charge, held.done, inline, async move {
                    let outcome = f(sock.clone(), op.as_str(), payload).await;
                    sock.single_result(id, op.as_str(), outcome)
                });
            }
            _ => {
                let charge = std::mem::take(&mut held.charge);
                let arrived = held.done.arrived;
                let done = std::mem::replace(&mut held.done, Done { op: OpName::Other, arrived });
                let work = async move { sock.run_handler(held).await };
                self.spawn_request(id, span, charge, done, inline, work)
            }
        }
    }

    /// Runs `work`, catching a panic, and sends the frame it returns once the request is
    /// marked finished. Closing the connection drops the work. With `inline`, it is polled
    /// once here first: most handlers answer without waiting (an echo, a lookup), and such a
    /// request then costs no task and no trip through the scheduler. One that waits goes on
    /// in a task of its own, which polls it again with the task's waker. The price: what a
    /// handler does before its first wait runs on the connection's read loop, so a handler
    /// that computes for long before it waits holds up this connection's next messages (not
    /// other connections'); such work belongs in `spawn_blocking`, as anywhere in async code.
    /// A handler that blocks its thread until this same connection hears something (with
    /// `block_in_place` and `block_on`) would wait forever: the read loop it blocks is what
    /// would hear it.
    fn spawn_request<F>(
        &self,
        id: Id,
        span: tracing::Span,
        charge: Charge,
        done: Done,
        inline: bool,
        work: F,
    ) where
        F: Future<Output = Frame> + Send + 'static,
    {
        let sock = self.clone();
        let request = async move {
            // The work first: a handler that answers at once then never registers with the
            // connection's cancellation (a lock to enter its wait list, another to leave it),
            // as it would every other time in select's random order.
            let outcome = tokio::select! {
                biased;
                outcome = AssertUnwindSafe(work).catch_unwind() => outcome,
                _ = sock.shared.cancel().cancelled() => {
                    sock.finish(id, None, None, None);
                    sock.request_done(&done, RequestOutcome::Cancelled);
                    return;
                }
            };
            let (last, outcome) = match outcome {
                Ok(last @ Frame::ErrorResult { .. }) => (last, RequestOutcome::Error),
                Ok(last) => (last, RequestOutcome::Result),
                Err(panic) => {
                    let text = handler_error::panicked(done.op.get().unwrap_or(""), &*panic);
                    let payload = sock.fit_text(text);
                    (Frame::ErrorResult { id, payload }, RequestOutcome::Panicked)
                }
            };
            // Room in the send queue first; then the answer is queued as the request
            // leaves the table.
            match sock.shared.send_budget.acquire(last.payload().len()).await {
                Some(permit) => {
                    sock.request_done(&done, outcome);
                    sock.finish(id, Some(last), Some(permit), Some(charge));
                }
                None => {
                    sock.finish(id, None, None, None);
                    sock.request_done(&done, RequestOutcome::Cancelled);
                }
            }
        }
        .instrument(span);
        if !inline {
            tokio::spawn(request);
            return;
        }
        let mut request = Box::pin(request);
        if request.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending() {
            tokio::spawn(request);
        }
    }

    /// The frame that answers a single-payload handler's outcome.
    fn single_result(&self, id: Id, op: &str, outcome: Result<Bytes, HandlerError>) -> Frame {
        match outcome {
            // A result over the payload limit would make the peer drop the connection.
            Ok(result) => match self.check_size(result.len()) {
                Ok(()) => Frame::SingleResult { id, payload: result },
                Err(e) => Frame::ErrorResult {
                    id,
                    payload: self.fit_text(format!("result too large: {e}")),
                },
            },
            Err(error) => self.failure(id, error.into_failure(op)),
        }
    }

    /// The frame that answers a handler's failure: a retry goes out as a RetryResult to a
    /// peer that takes one.
    fn failure(&self, id: Id, failure: Failure) -> Frame {
        match failure {
            Failure::Retry(message) if self.shared.config.peer_understands_retry => {
                Frame::RetryResult { id, wait: self.retry_wait(), payload: self.fit_text(message) }
            }
            Failure::Error(message) | Failure::Retry(message) => {
                Frame::ErrorResult { id, payload: self.fit_text(message) }
            }
        }
    }

    /// Runs the handler and returns the frame that completes the request.
    async fn run_handler(&self, held: Held) -> Frame {
        let Held { id, op, payload, stream, route, input, .. } = held;
        let error = |message: String| Frame::ErrorResult { id, payload: self.fit_text(message) };
        match route {
            Route::Buffer(f) => {
                let payload = if stream {
                    // A streaming request to a single-payload handler: gather it first.
                    let mut input = StreamInput::new(input, payload);
                    let max = self.shared.config.max_payload as usize;
                    let mut gathered = match self.try_charge(0) {
                        Ok(charge) => charge,
                        Err(e) => return error(Error::OverBudget(e).to_string()),
                    };
                    // Held until the handler returns, with the gathered payload.
                    let _gathered = &gathered;
                    match input.gather_charged(max, Some(&mut gathered)).await {
                        Ok(all) => all,
                        Err(e) => return error(e.to_string()),
                    }
                } else {
                    payload
                };
                self.single_result(id, op.as_str(), f(self.clone(), op.as_str(), payload).await)
            }
            Route::Stream(f) => {
                let input = StreamInput::new(input, payload);
                let output = StreamOutput { sock: self.clone(), id };
                match f(self.clone(), op.as_str(), input, output).await {
                    Ok(()) => Frame::StreamResult { id, payload: Bytes::new() },
                    Err(e) => self.failure(id, e.into_failure(op.as_str())),
                }
            }
        }
    }
}

/// The parts of a request, as a streaming handler reads them.
#[derive(Debug)]
pub struct StreamInput {
    first: Option<Bytes>,
    rx: Option<InputRx>,
}

impl StreamInput {
    fn new(rx: Option<InputRx>, first: Bytes) -> Self {
        StreamInput { first: Some(first).filter(|b| !b.is_empty()), rx }
    }

    /// The next part; `Ok(None)` once the peer ended the stream.
    ///
    /// # Errors
    /// [`Error::StreamOverflow`] when parts arrived faster than they were read.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let Some(rx) = &mut self.rx else { return Ok(None) };
        match rx.recv().await {
            Some(part) => part.map(Some),
            None => {
                self.rx = None;
                Ok(None)
            }
        }
    }

    /// Reads every remaining part into one buffer of at most `max` bytes.
    ///
    /// # Errors
    /// As [`next`](Self::next), and [`Error::PayloadTooLarge`] past `max`.
    pub async fn gather(&mut self, max: usize) -> Result<Bytes, Error> {
        self.gather_charged(max, None).await
    }

    /// [`gather`](Self::gather), charging what it gathers to `charge`.
    async fn gather_charged(
        &mut self,
        max: usize,
        mut charge: Option<&mut Charge>,
    ) -> Result<Bytes, Error> {
        let mut all = BytesMut::new();
        while let Some(part) = self.next().await? {
            if all.len() + part.len() > max {
                return Err(Error::PayloadTooLarge { size: all.len() + part.len(), max });
            }
            if let Some(charge) = charge.as_deref_mut() {
                charge.grow(part.len()).map_err(Error::OverBudget)?;
            }
            all.extend_from_slice(&part);
        }
        Ok(all.freeze())
    }
}

/// Where a streaming handler writes its result, part by part. Returning `Ok(())` from the
/// handler ends the result; returning an error sends an ErrorResult instead.
#[derive(Debug)]
pub struct StreamOutput {
    sock: Sock,
    id: Id,
}

impl StreamOutput {
    /// Sends one part of the result, waiting while the send queue is full. Empty parts are
    /// skipped, because on the wire an empty part ends the stream.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`], [`Error::Closed`].
    pub async fn send(&mut self, part: impl Into<Bytes>) -> Result<(), Error> {
        let payload = part.into();
        if payload.is_empty() {
            return Ok(());
        }
        self.sock.check_size(payload.len())?;
        self.sock.send(Frame::StreamResult { id: self.id, payload }).await
    }

    /// The connection this stream belongs to.
    pub fn sock(&self) -> &Sock {
        &self.sock
    }
}

/// How a request that does not fit the memory budget is answered: a RetryResult when the peer
/// can take one (the budget frees as requests finish), else an ErrorResult.
fn budget_refusal(retry: bool, exhausted: crate::memory::Exhausted) -> Admit {
    let message = format!("memory budget: {exhausted}");
    if retry {
        Admit::Retry(message)
    } else {
        Admit::Refuse(message)
    }
}
