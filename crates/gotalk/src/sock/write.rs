//! The write loop: frames from every sender, batched into one flush, plus what liveness
//! asks for (heartbeats, probes).

use std::future::{Future, Pending};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use futures_util::future::Either;
use gotalk_protocol::{Frame, ProtocolErrorCode};
use tokio::time::Instant;

use super::live::{LIVE_DUE, READ_WAITING};
use super::{Outbound, Sock};
use crate::error::CloseReason;
use crate::transport::FrameWriter;

/// The most bytes gathered into one flush, so one busy connection still flushes often.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// The most frames gathered into one flush.
const MAX_BATCH_FRAMES: usize = 256;
/// The longest the last flush before closing may take.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// The connection's write loop. Every idle connection keeps this future, so it is kept small:
/// its arguments are captured by an `async` block rather than copied into the frame of an
/// `async fn` (which keeps both), and what waits for long or rarely (a flush the socket does
/// not take at once, the close) is boxed.
// Not an `async fn`: one would keep its arguments twice, in every idle connection.
#[allow(clippy::manual_async_fn)]
pub(super) fn write_loop<W: FrameWriter>(mut writer: W, sock: Sock) -> impl Future<Output = ()> {
    async move {
        run(&mut writer, &sock).await;
        sock.shared.out.close();
        sock.shared.terminated().cancel();
        let attachments = std::mem::take(&mut *super::lock(&sock.shared.attachments));
        drop(attachments);
    }
}

async fn run<W: FrameWriter>(writer: &mut W, sock: &Sock) {
    let queue = &sock.shared.out;
    let config = &sock.shared.config;
    // Permits stay held until their frames are flushed, so the send queue's budget covers
    // the bytes waiting in the writer too.
    let mut permits = Vec::new();
    // Whether liveness is driven at the top of the loop, when this loop keeps its time: not
    // after the queue woke an idle writer, since it is driven after the flush that follows
    // anyway (a lock and a clock reading less per answer). The wait below then uses the
    // deadline that drive read.
    let mut drive = true;
    loop {
        // Liveness, busy or not: heartbeats and probes that are due, and a dead peer. While
        // the read loop waits for bytes, its timer keeps liveness's time and says when it is
        // due; otherwise (the read loop is busy, waiting on a full queue, or done) this loop
        // does, with a timer of its own.
        let mut pending = {
            let due = sock.live_flag(LIVE_DUE);
            let covered = sock.live_flag(READ_WAITING);
            let drove = due || (drive && !covered);
            let (buffered, deadline) =
                if drove { sock.drive_liveness(writer) } else { (false, None) };
            if due {
                sock.set_live_flag(LIVE_DUE, false);
                // The read loop arms its timer for the next deadline.
                queue.wake();
            }
            if !buffered && queue.is_empty() {
                // Idle connections wait here, so nothing else is in scope: it would be kept.
                writer.release_idle();
                // The queue first, and no random draw: the rest is only a fallback.
                if covered {
                    tokio::select! {
                        biased;
                        _ = queue.ready() => drive = false,
                        _ = liveness_needs_me(sock) => drive = true,
                    }
                } else {
                    let deadline = if drove { deadline } else { sock.liveness_deadline() };
                    tokio::select! {
                        biased;
                        _ = queue.ready() => drive = false,
                        _ = sleep_until(deadline) => drive = true,
                    }
                }
                continue;
            }
            buffered
        };
        drive = true;
        let first = queue.pop();
        if matches!(first, Some(Outbound::Frame(..))) && sock.handlers_running() {
            // The sender that woke us may be one of many handler tasks made ready by the
            // same read; let them run first so their frames join this flush instead of each
            // costing a write of its own. Not when no handler is running: the answers of
            // handlers that answer at once are queued by the read loop before this loop
            // runs, and a requeue is a whole extra poll of the task (about 600 of a
            // request's 7,000 instructions at one request in flight).
            requeue().await;
        }
        // In a block of its own, so the batch's last item is not kept across the flush.
        let close = {
            let mut next = first;
            let mut close = None;
            let mut bytes = 0;
            let mut frames = 0;
            while let Some(item) = next.take() {
                match item {
                    Outbound::Frame(frame, permit, charge) => {
                        bytes += frame.encoded_len();
                        frames += 1;
                        writer.buffer_frame(&frame);
                        permits.push((permit, charge));
                        pending = true;
                    }
                    Outbound::Close(code) => {
                        close = Some(code);
                        break;
                    }
                }
                if bytes >= MAX_BATCH_BYTES || frames >= MAX_BATCH_FRAMES {
                    break;
                }
                next = queue.pop();
            }
            close
        };
        debug_assert!(pending || close.is_some());
        if let Some(code) = close {
            Box::pin(close_transport(writer, sock, code)).await;
            break;
        }
        // Pinned here: moved into `flush_within`'s frame and pinned there, it would be kept
        // twice.
        let written = flush_within(sock, config.write_timeout, pin!(writer.flush())).await;
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                sock.close_with(CloseReason::Io(e.to_string()), None);
                break;
            }
            // Given up at a deadline (a shutdown's): the transport is dropped as it is.
            None if sock.shared.abort().is_cancelled() => break,
            None => {
                let reason = CloseReason::WriteTimeout(config.write_timeout);
                sock.close_with(reason.clone(), None);
                let shutdown =
                    async { unless_aborted(sock, CLOSE_FLUSH, writer.shutdown(&reason)).await };
                let _ = Box::pin(shutdown).await;
                break;
            }
        }
        permits.clear();
        if permits.capacity() > 64 {
            permits = Vec::new();
        }
    }
}

/// The last flush, with the protocol error `code` if there is one, then the transport's
/// shutdown.
async fn close_transport<W: FrameWriter>(
    writer: &mut W,
    sock: &Sock,
    code: Option<ProtocolErrorCode>,
) {
    if let Some(code) = code {
        writer.buffer_frame(&Frame::protocol_error(code));
    }
    let limit = sock.shared.config.write_timeout.min(CLOSE_FLUSH);
    if unless_aborted(sock, limit, writer.flush()).await.is_some() {
        let reason = sock.close_reason().unwrap_or(CloseReason::Local);
        let _ = unless_aborted(sock, limit, writer.shutdown(&reason)).await;
    }
}

/// Lets every task that is ready run before this one goes on, by waking it at the back of
/// the run queue. Unlike `tokio::task::yield_now`, which waits for the runtime to poll for
/// I/O first (a system call each time, though the tasks it waits for are already queued).
async fn requeue() {
    let mut queued = false;
    std::future::poll_fn(|cx| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// [`unless_aborted`] for a flush, which mostly completes at once: tried first with no timer
/// to arm, or clock to read, for the deadline it would have had.
async fn flush_within<T, F: Future<Output = T>>(
    sock: &Sock,
    limit: Duration,
    mut write: Pin<&mut F>,
) -> Option<T> {
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(done) => Some(done),
        // The timer and the abort's wait on the heap, only for the flush that waits.
        Poll::Pending => Box::pin(unless_aborted(sock, limit, write)).await,
    }
}

/// Runs a write within `limit`, unless the connection is aborted first: `None` then, or at
/// the limit. A write that can finish at once (a close frame into an empty socket buffer)
/// still does after an abort.
async fn unless_aborted<T>(
    sock: &Sock,
    limit: Duration,
    write: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        done = tokio::time::timeout(limit, write) => done.ok(),
        _ = sock.shared.abort().cancelled() => None,
    }
}

/// Completes when liveness is due (the read loop says so) or the read loop stops keeping its
/// time. Both loops run in one task, so whatever changes either flag has just run in it.
fn liveness_needs_me(sock: &Sock) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(|_| {
        if sock.live_flag(LIVE_DUE) || !sock.live_flag(READ_WAITING) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Sleeps until `deadline`, or forever without one. Not an `async fn`, which would keep the
/// deadline beside the timer in every idle connection's future.
fn sleep_until(deadline: Option<Instant>) -> Either<tokio::time::Sleep, Pending<()>> {
    match deadline {
        Some(at) => Either::Left(tokio::time::sleep_until(at)),
        None => Either::Right(std::future::pending()),
    }
}
