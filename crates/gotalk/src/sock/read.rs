//! The read loop: bytes in, frames out, each dispatched without waiting on a handler.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use gotalk_protocol::{Decoder, Frame, Name, ProtocolErrorCode};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};

use super::serve::Later;
use super::{Heartbeat, Sock};
use crate::error::CloseReason;
use crate::handlers::NotificationFn;
use crate::memory::{Charge, OVERHEAD};
use crate::queue::ByteBudget;
use crate::transport::{FrameReader, ReadEvent};

type Closing = (CloseReason, Option<ProtocolErrorCode>);

/// Messages whose payload is at least this large are charged to the memory budgets as soon
/// as their header arrives, and the peer is not read from until the charge fits. Smaller
/// ones are read at once and charged by whatever holds them next: the read buffer up to this
/// size is part of a connection's idle cost, and a peer sending small messages is never
/// stalled behind others' large ones.
const CHARGED_READ: usize = crate::transport::MAX_READ;

/// A received notification waiting for its handler.
struct Note {
    handler: NotificationFn,
    name: String,
    payload: Bytes,
    _permit: OwnedSemaphorePermit,
    _charge: Charge,
}

/// The queue to this connection's notification task, made on the first notification so
/// connections that never get one pay nothing for it.
struct Notes {
    tx: mpsc::UnboundedSender<Note>,
    budget: ByteBudget,
}

/// The connection's read loop. Every idle connection keeps this future, so its arguments are
/// captured by an `async` block rather than copied into the frame of an `async fn` (which
/// keeps both), and its rare or large steps are boxed.
// Not an `async fn`: one would keep its arguments twice, in every idle connection.
#[allow(clippy::manual_async_fn)]
pub(super) fn read_loop<R: FrameReader>(
    mut reader: R,
    mut buf: BytesMut,
    sock: Sock,
) -> impl Future<Output = ()> {
    async move {
        let config = &sock.shared.config;
        let mut decoder = Decoder::new();
        decoder.max_payload(config.max_payload).max_name_len(config.max_name_len);
        let mut notes = None;
        // When the message now arriving began to: it must be whole within the frame timeout,
        // however steadily its bytes trickle in (the read timeout only sees gaps between bytes).
        let mut frame_started = None;
        // When bytes of the byte stream last arrived. On a server, a WebSocket pong proves the
        // peer alive to the liveness checks but does not move this: pongs can be interleaved
        // with the fragments of one message, so a peer trickling a message a byte a fragment
        // while it answers every probe would otherwise never time out. An idle client keeps it
        // moving with heartbeats, which every gotalk client sends by default. On a client, the
        // answer to one of its own probes moves it (see `pongs_restart_read_timeout`).
        let mut last_data = Instant::now();
        // The charge for the large message being received, handed on with it once it is whole.
        let mut reading: Option<Charge> = None;
        // One timer for every read's deadlines and for liveness's (which the write loop, in
        // the same task, is told of through `LIVE_DUE`). It stays armed at the earliest
        // deadline asked for; a read with a later one lets it fire early, finds the deadline
        // not yet reached and arms it again. So a busy connection arms it about once per
        // timeout, not per read. Liveness's deadlines only move later between its drives
        // (bytes and pongs arriving), so they are read again only when it fires.
        let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
        let mut armed: Option<Instant> = None;
        // Liveness was found due, and the write loop has yet to drive it.
        let mut awaiting_drive = false;
        let live = liveness_at(&sock, Instant::now(), &mut awaiting_drive);
        arm(timer.as_mut(), &mut armed, live);
        let (reason, code) = loop {
            // What needs no waiting is done at once (most messages: a request started or held,
            // a result delivered). What waits goes on the heap, as the other rare or large
            // steps below: this task's future is as large as its largest step, and every idle
            // connection keeps one. Decided in a statement of its own, so the decoder's result
            // is not kept while it runs.
            let waiting = match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    frame_started = None;
                    match dispatch_now(&sock, frame, reading.take()) {
                        Ok(None) => continue,
                        Ok(Some(waits)) => Some(Box::pin(dispatch_later(&sock, waits, &mut notes))),
                        Err(closing) => break closing,
                    }
                }
                Ok(None) => None,
                Err(e) => break (CloseReason::from(e), Some(ProtocolErrorCode::InvalidMessage)),
            };
            if let Some(waiting) = waiting {
                if waited(waiting).await.1 {
                    // The dispatch waited on a full queue; that time is not the peer's silence.
                    last_data = Instant::now();
                }
                continue;
            }
            // Bytes left over after a dispatch count from now: while the read loop waited on a
            // full queue, the peer was not the one holding the message up.
            if decoder.is_mid_message(&buf) {
                frame_started.get_or_insert_with(Instant::now);
            } else {
                frame_started = None;
            }
            if let (None, Some(remaining)) = (&reading, decoder.payload_remaining(buf.len())) {
                let declared = buf.len() + remaining;
                if declared >= CHARGED_READ && answers_our_call(decoder.pending_header()) {
                    // A result is paid for if it fits but never waited for: handlers holding
                    // this connection's budget may be waiting for exactly this result. Results
                    // are bounded by the calls this side chose to make.
                    reading = sock.shared.budget.try_charge(declared + OVERHEAD).ok();
                } else if declared >= CHARGED_READ {
                    let asked = Instant::now();
                    // The wait is boxed whole, with the select around it: kept in this
                    // future, it would be its largest step, and every idle connection's.
                    let charge = Box::pin(async {
                        tokio::select! {
                            biased;
                            _ = closing(&sock) => None,
                            charge = sock.shared.budget.charge(declared + OVERHEAD) => Some(charge),
                        }
                    });
                    let Some(charge) = charge.await else { return };
                    reading = Some(charge);
                    // Paid for in full, so held in full now, in a buffer of exactly its size: one
                    // grown read by read would double past the payload and copy it on the way,
                    // and one that kept the consumed header in front would take the allocator's
                    // next size class up. Only the payload's first bytes are here to move.
                    let mut exact = BytesMut::with_capacity(declared);
                    exact.extend_from_slice(&buf);
                    buf = exact;
                    if Instant::now() > asked {
                        // The peer was not read from while it waited for room; its clocks
                        // restart.
                        frame_started = Some(Instant::now());
                        last_data = Instant::now();
                    }
                }
            }
            let frame_deadline = frame_started.zip(config.frame_timeout).map(|(at, t)| at + t);
            let read_deadline = config.liveness.peer_idle_timeout.map(|t| last_data + t);
            let deadline = earliest(read_deadline, frame_deadline);
            arm(timer.as_mut(), &mut armed, deadline.map(|(at, _)| at));
            let hint = decoder.payload_remaining(buf.len());
            // While it waits here, this loop's timer keeps liveness's time.
            sock.set_live_flag(super::live::READ_WAITING, true);
            let event = {
                let mut read = pin!(reader.read(&mut buf, hint));
                loop {
                    tokio::select! {
                        biased;
                        _ = closing(&sock) => {
                            sock.set_live_flag(super::live::READ_WAITING, false);
                            return;
                        }
                        event = &mut read => break Ok(event),
                        _ = &mut timer, if armed.is_some() => {
                            armed = None;
                            let now = Instant::now();
                            if let Some((at, expired)) = deadline {
                                if now >= at {
                                    break Err(expired);
                                }
                            }
                            let live = liveness_at(&sock, now, &mut awaiting_drive);
                            arm(timer.as_mut(), &mut armed, soonest(deadline.map(|(at, _)| at), live));
                        }
                        _ = driven(&sock), if awaiting_drive => {
                            awaiting_drive = false;
                            let live = liveness_at(&sock, Instant::now(), &mut awaiting_drive);
                            arm(timer.as_mut(), &mut armed, live);
                        }
                    }
                }
            };
            sock.set_live_flag(super::live::READ_WAITING, false);
            match event {
                Ok(Ok(ReadEvent::Data(n))) => {
                    let now = Instant::now();
                    if n > 0 {
                        last_data = now;
                    }
                    if armed.is_some_and(|at| now >= at) {
                        // Due while reads kept the select from polling the timer: a peer
                        // that always has more to send still gets its heartbeats.
                        armed = None;
                        let live = liveness_at(&sock, now, &mut awaiting_drive);
                        arm(timer.as_mut(), &mut armed, soonest(deadline.map(|(at, _)| at), live));
                    }
                    sock.mark_inbound(now);
                    while let Some(pong) = reader.take_pong() {
                        if sock.on_pong(&pong) && sock.pongs_restart_read_timeout() {
                            last_data = Instant::now();
                        }
                    }
                }
                // Decoded at once, but only a whole transport message shows the peer is alive.
                Ok(Ok(ReadEvent::Partial(_))) => {}
                Ok(Ok(ReadEvent::Eof)) if decoder.is_mid_message(&buf) => {
                    break (CloseReason::PeerClosedMidMessage, None)
                }
                Ok(Ok(ReadEvent::Eof)) => break Box::pin(sock.answer_after_fin(&mut reader)).await,
                Ok(Err(e)) => break (CloseReason::Io(e.to_string()), None),
                Err(Expired::Read) => {
                    let timeout = config.liveness.peer_idle_timeout.unwrap_or_default();
                    break (CloseReason::ReadTimeout(timeout), Some(ProtocolErrorCode::Timeout));
                }
                Err(Expired::Frame) => {
                    let timeout = config.frame_timeout.unwrap_or_default();
                    break (CloseReason::FrameTimeout(timeout), Some(ProtocolErrorCode::Timeout));
                }
            }
        };
        sock.close_with(reason, code);
        if code.is_some() {
            Box::pin(sock.linger(&mut reader, &mut buf)).await;
        }
    }
}

/// Completes once the connection starts closing. The read loop runs in the writer's task, so
/// it waits through the writer's waker, which closing wakes: a place in the signals' wait list
/// would be kept in the loop's future, by every idle connection.
fn closing(sock: &Sock) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(|cx| {
        sock.shared.out.register(cx);
        if sock.shared.cancel().is_cancelled() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// True for the results of this side's own calls.
fn answers_our_call(header: Option<&Frame>) -> bool {
    matches!(
        header,
        Some(
            Frame::SingleResult { .. }
                | Frame::StreamResult { .. }
                | Frame::ErrorResult { .. }
                | Frame::RetryResult { .. }
        )
    )
}

/// Liveness's next deadline at `now`, as the read loop's timer should know it: none while
/// the write loop has yet to drive it (`awaiting_drive`); when it is due, the write loop is
/// told (it runs next in this task) and this waits for it to drive.
fn liveness_at(sock: &Sock, now: Instant, awaiting_drive: &mut bool) -> Option<Instant> {
    if *awaiting_drive {
        return None;
    }
    let at = sock.liveness_deadline()?;
    if now < at {
        return Some(at);
    }
    sock.set_live_flag(super::live::LIVE_DUE, true);
    *awaiting_drive = true;
    None
}

/// Completes once the write loop has driven liveness (it clears `LIVE_DUE` and wakes this
/// task).
fn driven(sock: &Sock) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(|_| {
        if sock.live_flag(super::live::LIVE_DUE) {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
}

/// Arms `timer` for `at` unless it is already armed sooner.
fn arm(timer: Pin<&mut Sleep>, armed: &mut Option<Instant>, at: Option<Instant>) {
    if let Some(at) = at {
        if armed.is_none_or(|armed| at < armed) {
            timer.reset(at);
            *armed = Some(at);
        }
    }
}

/// The sooner of two optional instants.
fn soonest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which deadline a read missed.
#[derive(Clone, Copy)]
enum Expired {
    /// Nothing arrived within the read timeout.
    Read,
    /// The message being received was not whole by its deadline.
    Frame,
}

/// The read deadline or the current message's deadline, whichever is sooner (either may be
/// absent), and which it is.
fn earliest(
    read_deadline: Option<Instant>,
    frame_deadline: Option<Instant>,
) -> Option<(Instant, Expired)> {
    match (read_deadline, frame_deadline) {
        (Some(r), Some(f)) if f <= r => Some((f, Expired::Frame)),
        (Some(r), _) => Some((r, Expired::Read)),
        (None, Some(f)) => Some((f, Expired::Frame)),
        (None, None) => None,
    }
}

/// Runs `work`, and tells whether it had to wait: whether it did not finish the first time
/// it was polled.
async fn waited<T>(work: impl Future<Output = T>) -> (T, bool) {
    let mut work = pin!(work);
    let mut polls = 0u32;
    let done = std::future::poll_fn(|cx| {
        polls += 1;
        work.as_mut().poll(cx)
    })
    .await;
    (done, polls > 1)
}

/// What [`dispatch_now`] left to do, which may wait.
enum Waits {
    /// What [`Sock::on_request`] left.
    Request(Later),
    /// A notification, for an extension or the notification task.
    Notification { name: Name, payload: Bytes, carried: Option<Charge> },
}

/// Hands a frame to whatever handles it, doing at once what needs no waiting, and returns
/// what is left. `carried` is the charge taken while a large frame was read; whatever holds
/// the payload next keeps it, or takes a charge of its own.
fn dispatch_now(
    sock: &Sock,
    frame: Frame,
    carried: Option<Charge>,
) -> Result<Option<Waits>, Closing> {
    if super::live::from_our_peer(&frame, &sock.shared.handlers) {
        sock.peer_understands_reserved_now();
        if gotalk_protocol::reserved::is_hello(&frame) {
            return Ok(None);
        }
    }
    match frame {
        Frame::SingleRequest { .. } | Frame::StreamRequest { .. } if !sock.peer_may_request() => {
            let why = "a request after the peer announced it was done".to_owned();
            Err((CloseReason::InvalidMessage(why), Some(ProtocolErrorCode::InvalidMessage)))
        }
        Frame::SingleRequest { .. } | Frame::StreamRequest { .. } => {
            Ok(sock.on_request(frame, carried).map(Waits::Request))
        }
        Frame::StreamRequestPart { id, payload } => {
            sock.on_request_part(id, payload);
            Ok(None)
        }
        Frame::SingleResult { .. }
        | Frame::StreamResult { .. }
        | Frame::ErrorResult { .. }
        | Frame::RetryResult { .. } => {
            sock.deliver(frame);
            Ok(None)
        }
        Frame::Notification { name, .. } if name.as_str() == super::live::DONE => {
            sock.on_peer_done();
            Ok(None)
        }
        Frame::Notification { name, payload } => {
            Ok(Some(Waits::Notification { name, payload, carried }))
        }
        Frame::Heartbeat { load, time } => {
            let heartbeat = Heartbeat { load, time };
            sock.shared
                .last_heartbeat
                .store(heartbeat.pack(), std::sync::atomic::Ordering::Relaxed);
            if let Some(on_heartbeat) = &sock.shared.handlers.on_heartbeat {
                crate::handlers::call_hook("on_heartbeat", || on_heartbeat(sock, heartbeat));
            }
            Ok(None)
        }
        Frame::ProtocolError { code } => {
            Err((CloseReason::PeerProtocolError(ProtocolErrorCode::from_u32(code)), None))
        }
        // Frame is non-exhaustive; a type this loop does not know is not one the decoder makes.
        _ => Ok(None),
    }
}

/// Does what [`dispatch_now`] left to do.
async fn dispatch_later(sock: &Sock, waits: Waits, notes: &mut Option<Notes>) {
    match waits {
        Waits::Request(later) => sock.finish_request(later).await,
        Waits::Notification { name, payload, carried } => {
            match sock.shared.handlers.extensions.notification(name.as_str()) {
                // On the read loop, in order with the peer's requests: an extension's
                // notification only checks and queues.
                Some(extension) => {
                    let handled =
                        async { extension.notification(sock, name.as_str(), payload).await };
                    if AssertUnwindSafe(handled).catch_unwind().await.is_err() {
                        tracing::error!(parent: sock.span(), notification = %name, "extension panicked");
                    }
                }
                None => queue_notification(sock, notes, name.into_string(), payload, carried).await,
            }
        }
    }
}

/// Queues a notification for the connection's notification task, which runs handlers one at
/// a time so a peer's notifications are handled in the order sent. The read loop waits only
/// when the queue's byte budget is spent.
async fn queue_notification(
    sock: &Sock,
    notes: &mut Option<Notes>,
    name: String,
    payload: Bytes,
    carried: Option<Charge>,
) {
    let Some(handler) = sock.shared.handlers.notification(&name) else {
        tracing::debug!(parent: sock.span(), notification = %name, "no handler for notification");
        return;
    };
    let notes = notes.get_or_insert_with(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(notification_loop(rx, sock.clone()));
        Notes { tx, budget: ByteBudget::new(sock.shared.config.notification_queue_bytes) }
    });
    let permit = tokio::select! {
        permit = notes.budget.acquire(payload.len()) => permit,
        _ = sock.shared.cancel().cancelled() => None,
    };
    let Some(permit) = permit else { return };
    // Waiting for room here pushes back on the peer, as a full queue does.
    let charge = match carried {
        Some(charge) => charge,
        None => tokio::select! {
            charge = sock.shared.budget.charge(payload.len() + OVERHEAD) => charge,
            _ = sock.shared.cancel().cancelled() => return,
        },
    };
    let _ = notes.tx.send(Note { handler, name, payload, _permit: permit, _charge: charge });
}

async fn notification_loop(mut rx: mpsc::UnboundedReceiver<Note>, sock: Sock) {
    let run = async {
        while let Some(note) = rx.recv().await {
            let name = note.name.clone();
            // Called inside the caught future, so a handler that panics before returning its
            // future costs only its own notification.
            let work = async {
                (note.handler)(sock.clone(), note.name.clone(), note.payload.clone()).await
            };
            if AssertUnwindSafe(work).catch_unwind().await.is_err() {
                tracing::error!(parent: sock.span(), notification = %name, "notification handler panicked");
            }
        }
    };
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => return,
        _ = sock.shared.cancel().cancelled() => {}
    }
    // A connection that ended cleanly (the peer hung up at a message boundary, or either side
    // ended it gracefully) still has its received notifications handled: a program that
    // notifies and exits at once must not lose what it sent. The read loop has stopped, so
    // the queue ends. Failures (a dead peer, a protocol error, a local close) drop the rest.
    if matches!(
        sock.close_reason(),
        Some(CloseReason::PeerClosed | CloseReason::Ended | CloseReason::Shutdown)
    ) {
        run.await;
    }
}
