//! The server's scheduler for one sources request: announcements under the open-sources
//! bound and the client's source credit, frames in turn from the sources with frame credit,
//! control parts, and the sourcing, serving and stall timeouts.
//!
//! Producers are streams polled here and nowhere else, so a source without credit is not
//! polled at all (its producer waits, holding nothing), and dropping a source drops its
//! producer. This future runs as the request's handler, which the connection drops when it
//! closes, taking every producer with it.

use std::future::poll_fn;
use std::task::Poll;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use gotalk_protocol::sources::{encode_frame, Control, Open, Part, PART_OVERHEAD};
use tokio::time::{sleep_until, Instant};

use super::service::{Source, SourceService};
use crate::sock::{Sock, StreamInput, StreamOutput};

/// An announced source that has not ended.
struct OpenSource {
    id: u32,
    frames: BoxStream<'static, Result<Bytes, String>>,
    /// Frames it may still send.
    credit: u32,
    /// When it ran out of credit, if it has.
    stalled_since: Option<Instant>,
}

/// What woke the scheduler.
enum Event {
    Control(Result<Option<Bytes>, crate::Error>),
    Announce(Option<Source>),
    Frame(usize, Option<Result<Bytes, String>>),
    Timer,
}

struct Scheduler<'a> {
    service: &'a SourceService,
    output: StreamOutput,
    open: Vec<OpenSource>,
    /// Where the next round-robin turn starts.
    cursor: usize,
    next_id: u32,
    frame_window: u32,
    source_credit: u32,
    lz4: bool,
    /// The largest frame: the service's limit, within the connection's payload limit.
    max_frame: usize,
}

/// Serves one request: reads the open prefix, calls the service, then schedules its sources
/// until every one has ended. The outcome is the request's: `Ok` ends the result stream with
/// the empty `S`, an error sends an ErrorResult (only ever after every announced source has
/// ended).
pub(super) async fn serve(
    service: &SourceService,
    sock: Sock,
    mut input: StreamInput,
    output: StreamOutput,
) -> Result<(), String> {
    let deadline = Instant::now() + service.serving_timeout;
    // Bounded by the serving deadline too: a client that sends an empty `s` and then nothing
    // must not hold the handler.
    let first = tokio::time::timeout_at(deadline, input.next())
        .await
        .map_err(|_| "serving timeout".to_owned())?
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let (open, body) =
        Open::decode(&first).map_err(|e| format!("malformed sources request: {e}"))?;
    let body = first.slice_ref(body);
    let max_payload = sock.config().max_payload as usize;
    let sources = tokio::select! {
        sources = (service.f)(sock, body) => sources?,
        _ = sleep_until(deadline) => return Err("serving timeout".into()),
    };
    let mut scheduler = Scheduler {
        service,
        output,
        open: Vec::new(),
        cursor: 0,
        next_id: 0,
        frame_window: open.frame_window,
        source_credit: open.source_window,
        lz4: open.lz4 && service.compress,
        max_frame: (service.max_frame as usize).min(max_payload.saturating_sub(PART_OVERHEAD)),
    };
    let outcome = scheduler.run(sources, &mut input, deadline).await;
    if let Err(reason) = &outcome {
        // Every announced source ends exactly once, whatever ended the request.
        scheduler.abort_all(reason).await;
    }
    outcome
}

impl Scheduler<'_> {
    async fn run(
        &mut self,
        sources: BoxStream<'static, Source>,
        input: &mut StreamInput,
        deadline: Instant,
    ) -> Result<(), String> {
        let mut sources = Some(sources);
        let mut input_open = true;
        // When the wait for the next source started to count, while one could be announced.
        let mut sourcing_since: Option<Instant> = None;
        let mut sourcing_expired = false;
        // One timer, moved when the earliest deadline changes: making a new one for every
        // frame would cost a timer-wheel insertion and removal each.
        let timer = sleep_until(deadline);
        tokio::pin!(timer);
        while sources.is_some() || !self.open.is_empty() {
            let can_announce = sources.is_some()
                && self.open.len() < self.service.max_open
                && self.source_credit > 0;
            if !can_announce {
                sourcing_since = None;
            } else if sourcing_since.is_none() {
                sourcing_since = Some(Instant::now());
            }
            let mut wake = deadline;
            if let Some(since) = sourcing_since {
                wake = wake.min(since + self.service.sourcing_timeout);
            }
            for source in &self.open {
                if let Some(since) = source.stalled_since {
                    wake = wake.min(since + self.service.stall_timeout);
                }
            }
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let (open, cursor) = (&mut self.open, &mut self.cursor);
            // Control parts first, so a cancel takes effect before more frames go out; then
            // announcements, which the open-sources bound and source credit already limit;
            // then one frame, from the next source in turn that has credit and a frame ready.
            let event = tokio::select! {
                biased;
                part = input.next(), if input_open => Event::Control(part),
                source = next_source(&mut sources), if can_announce => Event::Announce(source),
                (index, frame) = next_frame(open, cursor) => Event::Frame(index, frame),
                _ = &mut timer => Event::Timer,
            };
            match event {
                Event::Control(Ok(Some(part))) => {
                    let control = Control::decode(&part)
                        .map_err(|e| format!("malformed control part: {e}"))?;
                    if self.control(control).await? {
                        // Cancel all: every source is aborted, and the request ends well.
                        drop(sources.take());
                        self.abort_all("cancelled").await;
                    }
                }
                Event::Control(Ok(None)) => {
                    // The client ended its side: nobody will grant credit or read any more.
                    input_open = false;
                    drop(sources.take());
                    self.abort_all("cancelled").await;
                }
                Event::Control(Err(e)) => return Err(e.to_string()),
                Event::Announce(Some(source)) => {
                    sourcing_since = None;
                    self.announce(source).await?;
                }
                Event::Announce(None) => sources = None,
                Event::Frame(index, Some(Ok(frame))) => self.frame(index, frame).await?,
                Event::Frame(index, Some(Err(reason))) => self.end(index, Some(&reason)).await?,
                Event::Frame(index, None) => self.end(index, None).await?,
                Event::Timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err("serving timeout".into());
                    }
                    if sourcing_since.is_some_and(|s| now >= s + self.service.sourcing_timeout) {
                        tracing::debug!(parent: self.output.sock().span(), "sourcing timeout");
                        sources = None;
                        sourcing_expired = true;
                    }
                    let stall = self.service.stall_timeout;
                    loop {
                        let stalled = |s: &OpenSource| {
                            s.stalled_since.is_some_and(|since| now >= since + stall)
                        };
                        let Some(index) = self.open.iter().position(stalled) else { break };
                        self.end(index, Some("stalled: the client granted no credit in time"))
                            .await?;
                    }
                }
            }
        }
        if sourcing_expired {
            return Err("sourcing timeout".into());
        }
        Ok(())
    }

    /// Applies a control part; true for a cancel of everything.
    async fn control(&mut self, control: Control) -> Result<bool, String> {
        let known = |source: u32, next_id: u32| {
            if source < next_id {
                Ok(())
            } else {
                Err(format!("malformed control part: source {source} was never announced"))
            }
        };
        match control {
            Control::Credit { source, frames } => {
                known(source, self.next_id)?;
                // A source that has ended meanwhile needs no credit: not an error.
                if let Some(open) = self.open.iter_mut().find(|s| s.id == source) {
                    open.credit = open
                        .credit
                        .checked_add(frames)
                        .ok_or("malformed control part: credit overflow")?;
                    open.stalled_since = None;
                }
            }
            Control::Sources { count } => {
                self.source_credit = self
                    .source_credit
                    .checked_add(count)
                    .ok_or("malformed control part: source credit overflow")?;
            }
            Control::Cancel { source } => {
                known(source, self.next_id)?;
                let index = self.open.iter().position(|s| s.id == source);
                if let Some(index) = index {
                    self.end(index, Some("cancelled")).await?;
                }
            }
            Control::CancelAll => return Ok(true),
        }
        Ok(false)
    }

    async fn announce(&mut self, source: Source) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        self.source_credit -= 1;
        let header = Part::Announce { source: id, header: &source.header }.encode();
        if header.len() > self.max_frame + PART_OVERHEAD {
            // Announced and at once aborted, so the client still sees every source end.
            let short = Part::Announce { source: id, header: &[] }.encode();
            self.send(short).await?;
            let reason = format!("header of {} bytes exceeds the limit", source.header.len());
            return self.send(Part::Abort { source: id, reason: &reason }.encode()).await;
        }
        self.send(header).await?;
        self.open.push(OpenSource {
            id,
            frames: source.frames,
            credit: self.frame_window,
            stalled_since: None,
        });
        Ok(())
    }

    async fn frame(&mut self, index: usize, frame: Bytes) -> Result<(), String> {
        if frame.len() > self.max_frame {
            let reason =
                format!("frame of {} bytes exceeds the limit of {}", frame.len(), self.max_frame);
            return self.end(index, Some(&reason)).await;
        }
        let source = &mut self.open[index];
        let part = encode_frame(source.id, &frame, self.lz4);
        source.credit -= 1;
        if source.credit == 0 {
            source.stalled_since = Some(Instant::now());
        }
        self.send(part).await
    }

    /// Ends an open source: completed without a reason, aborted with one. Its producer is
    /// dropped first.
    async fn end(&mut self, index: usize, abort: Option<&str>) -> Result<(), String> {
        let source = self.open.remove(index);
        if index < self.cursor {
            self.cursor -= 1;
        }
        let id = source.id;
        drop(source);
        let part = match abort {
            Some(reason) => Part::Abort { source: id, reason }.encode(),
            None => Part::Complete { source: id }.encode(),
        };
        self.send(part).await
    }

    /// Aborts every open source, as best it can: the connection may be gone.
    async fn abort_all(&mut self, reason: &str) {
        while !self.open.is_empty() {
            if self.end(0, Some(reason)).await.is_err() {
                self.open.clear();
            }
        }
    }

    async fn send(&mut self, part: Vec<u8>) -> Result<(), String> {
        self.output.send(part).await.map_err(|e| e.to_string())
    }
}

async fn next_source(sources: &mut Option<BoxStream<'static, Source>>) -> Option<Source> {
    match sources {
        Some(stream) => stream.next().await,
        None => None,
    }
}

/// The next frame (or end) from the open sources with credit, taking them in turn from the
/// cursor, so a source that always has a frame ready cannot starve the others. Sources
/// without credit are not polled. Pending while none is ready.
async fn next_frame(
    open: &mut [OpenSource],
    cursor: &mut usize,
) -> (usize, Option<Result<Bytes, String>>) {
    poll_fn(|cx| {
        let n = open.len();
        for k in 0..n {
            let index = (*cursor + k) % n;
            let source = &mut open[index];
            if source.credit == 0 {
                continue;
            }
            if let Poll::Ready(item) = source.frames.poll_next_unpin(cx) {
                *cursor = index + 1;
                return Poll::Ready((index, item));
            }
        }
        Poll::Pending
    })
    .await
}
