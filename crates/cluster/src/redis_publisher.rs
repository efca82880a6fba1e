//! The Redis session's way out: a queue, and one task that writes it to Redis in order.
//!
//! A call is taken into the queue synchronously, in the poll that hands it over, so calls
//! handed over one after another go out in that order. The `redis` client does not promise
//! that: its commands reach the connection through a channel of its own, which a command may
//! not enter at its first poll (the channel or the task's cooperative budget can make it
//! wait), and two commands polled in turn can then go out the other way round.
//!
//! The task writes what has gathered in the queue as one pipeline of `PUBLISH` commands per
//! round trip, and waits for its answers before the next, so one connection never has two
//! pipelines that could overtake each other. Each caller gets its own command's answer.
//!
//! On a Redis Cluster a pipeline may only hold commands for one hash slot, so what has
//! gathered is split by channel: one pipeline of `SPUBLISH` per channel, all sent at once and
//! all answered before the next round. A channel's messages stay in their order; messages on
//! different channels (on different shards) have no order between them, as on any sharded bus.
//!
//! The queue is bounded: a call that finds it full fails the session rather than wait, as
//! the connection is not keeping up and a call that waited could be overtaken. A connection
//! that fails fails the session: the calls of the pipeline on its way get the error, the
//! ones still queued are dropped (their callers see the session failed), and every later call
//! fails at once.

use std::collections::HashMap;

use ::redis::aio::MultiplexedConnection;
use ::redis::cluster_async::ClusterConnection;
use ::redis::RedisResult;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::link::LinkError;

/// At most this many commands go in one pipeline, so one round trip stays short and the
/// pipeline's encoding stays small.
const MAX_BATCH: usize = 1024;

/// A pipeline takes more calls while its frames come to less than this.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Where the task writes.
pub(crate) enum Writer {
    /// One Redis server: `PUBLISH`, one pipeline per round.
    Server(MultiplexedConnection),
    /// A Redis Cluster: `SPUBLISH`, one pipeline per channel per round.
    Cluster(ClusterConnection),
}

/// A publish handed over: where, what, and who waits for the number of receivers.
struct Call {
    channel: String,
    frame: Bytes,
    done: oneshot::Sender<Result<i64, LinkError>>,
}

/// The session's end of the queue. Dropping it lets the task write what was handed over
/// and end.
pub(crate) struct Publisher {
    queue: mpsc::Sender<Call>,
    capacity: usize,
    failed: CancellationToken,
}

/// The number of subscribers a handed-over publish reached, once Redis has answered.
pub(crate) type Written = oneshot::Receiver<Result<i64, LinkError>>;

impl Publisher {
    /// Starts the task writing to `connection`. `capacity` (at least 1) bounds the calls
    /// waiting to be written; `failed` is the session's: cancelled by the task when the
    /// connection fails, and the task stops when anything else cancels it.
    pub(crate) fn spawn(
        connection: Writer,
        capacity: usize,
        failed: CancellationToken,
    ) -> Publisher {
        let capacity = capacity.max(1);
        let (queue, calls) = mpsc::channel(capacity);
        tokio::spawn(write(connection, calls, failed.clone()));
        Publisher { queue, capacity, failed }
    }

    /// Hands `frame` over for `channel` now; the answer comes through the returned receiver.
    pub(crate) fn hand_over(&self, channel: &str, frame: Bytes) -> Result<Written, LinkError> {
        if self.failed.is_cancelled() {
            return Err(session_failed());
        }
        let (done, written) = oneshot::channel();
        let call = Call { channel: channel.to_owned(), frame, done };
        match self.queue.try_send(call) {
            Ok(()) => Ok(written),
            Err(mpsc::error::TrySendError::Full(_)) => {
                fail(&self.failed, "the publish queue is full");
                Err(LinkError(format!(
                    "redis: more than {} publishes waiting to be written",
                    self.capacity
                )))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(session_failed()),
        }
    }
}

/// Waits for Redis's answer to a handed-over publish: the number of subscribers it reached.
pub(crate) async fn written(written: Written) -> Result<i64, LinkError> {
    written.await.unwrap_or_else(|_| Err(session_failed()))
}

fn session_failed() -> LinkError {
    LinkError("redis: the session failed".to_owned())
}

/// Marks the session failed, and says why the first time.
pub(crate) fn fail(failed: &CancellationToken, why: &str) {
    if !failed.is_cancelled() {
        tracing::warn!(reason = why, "redis session failed");
        failed.cancel();
    }
}

async fn write(mut connection: Writer, mut calls: mpsc::Receiver<Call>, failed: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            // Dropping `calls` on the way out drops every call still queued: each caller's
            // receiver ends, and the caller sees the session failed.
            () = failed.cancelled() => return,
            call = calls.recv() => match call {
                Some(call) => call,
                None => return,
            },
        };
        let mut bytes = first.frame.len();
        batch.push(first);
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(call) = calls.try_recv() else { break };
            bytes += call.frame.len();
            batch.push(call);
        }
        let answers = tokio::select! {
            biased;
            () = failed.cancelled() => Err(session_failed()),
            answers = send(&mut connection, &batch) => answers,
        };
        match answers {
            Ok(answers) if answers.len() == batch.len() => {
                for (call, answer) in batch.drain(..).zip(answers) {
                    let answer = answer.map_err(|e| LinkError(format!("redis: {e}")));
                    let _ = call.done.send(answer);
                }
            }
            other => {
                let error = other.err().unwrap_or_else(mismatch);
                fail(&failed, &error.0);
                for call in batch.drain(..) {
                    let _ = call.done.send(Err(error.clone()));
                }
                return;
            }
        }
    }
}

/// Sends `batch` and returns one answer per call, in the batch's order.
async fn send(connection: &mut Writer, batch: &[Call]) -> Result<Vec<RedisResult<i64>>, LinkError> {
    match connection {
        Writer::Server(connection) => {
            let mut pipe = ::redis::Pipeline::with_capacity(batch.len());
            // A command Redis refuses (a channel the user may not use) fails that call only.
            pipe.ignore_errors();
            for call in batch {
                pipe.cmd("PUBLISH").arg(&call.channel).arg(&call.frame[..]);
            }
            pipe.query_async::<Vec<RedisResult<i64>>>(connection).await.map_err(redis_error)
        }
        Writer::Cluster(connection) => {
            // The calls of each channel, in their order; channels in order of first call.
            let mut by_channel: Vec<Vec<usize>> = Vec::new();
            let mut index: HashMap<&str, usize> = HashMap::new();
            for (i, call) in batch.iter().enumerate() {
                let group = *index.entry(&call.channel).or_insert_with(|| {
                    by_channel.push(Vec::new());
                    by_channel.len() - 1
                });
                by_channel[group].push(i);
            }
            let sends = by_channel.iter().map(|calls| {
                let mut pipe = ::redis::Pipeline::with_capacity(calls.len());
                pipe.ignore_errors();
                for &i in calls {
                    pipe.cmd("SPUBLISH").arg(&batch[i].channel).arg(&batch[i].frame[..]);
                }
                let mut connection = connection.clone();
                async move { pipe.query_async::<Vec<RedisResult<i64>>>(&mut connection).await }
            });
            let results = futures_util::future::join_all(sends).await;
            let mut answers: Vec<Option<RedisResult<i64>>> = batch.iter().map(|_| None).collect();
            for (calls, result) in by_channel.iter().zip(results) {
                let result = result.map_err(redis_error)?;
                if result.len() != calls.len() {
                    return Err(mismatch());
                }
                for (&i, answer) in calls.iter().zip(result) {
                    answers[i] = Some(answer);
                }
            }
            answers.into_iter().map(|a| a.ok_or_else(mismatch)).collect()
        }
    }
}

fn redis_error(e: ::redis::RedisError) -> LinkError {
    LinkError(format!("redis: {e}"))
}

fn mismatch() -> LinkError {
    LinkError("redis: a pipeline's answers do not match its commands".to_owned())
}
