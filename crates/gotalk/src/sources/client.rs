//! The client side: a request answered by sources, each read as its own stream, with credit
//! refilled as it is read.
//!
//! One task per request (the pump) reads the result parts and hands each frame to its
//! source's queue, and writes the control parts the handles ask for. The queues need no bound
//! of their own: the server sends a source at most its credit in frames, and credit is given
//! back only for frames the reader has taken, so a queue holds at most the frame window; the
//! same holds for sources and the source window.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use bytes::Bytes;
use gotalk_protocol::sources::{
    decompress_frame, Control, Open, Part, DEFAULT_FRAME_WINDOW, DEFAULT_MAX_FRAME,
    DEFAULT_SOURCE_WINDOW,
};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::sock::{Sock, StreamRequest, StreamResponse};

/// How a source of a [`RemoteSource`] ended badly.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The server aborted the source (its producer failed, a frame was too large, it was
    /// cancelled, it stalled); this is the reason.
    #[error("source aborted: {0}")]
    Aborted(String),
    /// The request or the connection failed before the source ended.
    #[error(transparent)]
    Request(#[from] Error),
}

/// The client's windows and limits for one request.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SourcesOptions {
    /// Frames a source may send ahead of the reader. Default: 1024.
    pub frame_window: u32,
    /// Sources the server may announce ahead of the reader. Default: 128.
    pub source_window: u32,
    /// The largest frame accepted, after decompression; a larger one aborts its source (and
    /// a compressed one is refused before anything is allocated for it). Default: 1 MiB.
    pub max_frame: u32,
    /// Accept LZ4-compressed frames. Default: true.
    pub lz4: bool,
}

impl Default for SourcesOptions {
    fn default() -> Self {
        SourcesOptions {
            frame_window: DEFAULT_FRAME_WINDOW,
            source_window: DEFAULT_SOURCE_WINDOW,
            max_frame: DEFAULT_MAX_FRAME,
            lz4: true,
        }
    }
}

impl SourcesOptions {
    /// Frames a source may send ahead of the reader (at least 1). Default: 1024.
    pub fn frame_window(mut self, frames: u32) -> Self {
        self.frame_window = frames.max(1);
        self
    }

    /// Sources the server may announce ahead of the reader (at least 1). Default: 128.
    pub fn source_window(mut self, sources: u32) -> Self {
        self.source_window = sources.max(1);
        self
    }

    /// The largest frame accepted, after decompression. Default: 1 MiB.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Whether to accept LZ4-compressed frames. Default: true.
    pub fn lz4(mut self, on: bool) -> Self {
        self.lz4 = on;
        self
    }
}

/// What a source's queue carries.
enum Item {
    Frame(Bytes),
    Complete,
    Failed(SourceError),
}

/// Sends `body` to the source service `op` on `sock` and returns its sources as they are
/// announced, with [`SourcesOptions::default`].
///
/// ```no_run
/// # async fn demo(sock: gotalk::Sock) -> Result<(), Box<dyn std::error::Error>> {
/// let mut sources = gotalk::sources::lookup_and_post(&sock, "search", "needle").await?;
/// while let Some(mut source) = sources.next().await? {
///     println!("source {:?} from {:?}", source.header(), source.remote_addr());
///     while let Some(frame) = source.next().await? {
///         println!("  {} bytes", frame.len());
///     }
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`Sock::stream_request`].
pub async fn lookup_and_post(
    sock: &Sock,
    op: &str,
    body: impl Into<Bytes>,
) -> Result<Sources, Error> {
    Sources::open(sock, op, body.into(), SourcesOptions::default()).await
}

/// The sources answering one request, in the order they are announced.
///
/// Dropping it, and every [`RemoteSource`] taken from it, cancels whatever is still open.
#[derive(Debug)]
pub struct Sources {
    rx: mpsc::UnboundedReceiver<Result<RemoteSource, Error>>,
    control: mpsc::UnboundedSender<Control>,
    window: u32,
    /// Sources taken since the last source grant.
    taken: u32,
    done: bool,
}

impl Sources {
    /// Sends `body` to the source service `op` with these options.
    ///
    /// # Errors
    /// As [`Sock::stream_request`].
    pub async fn open(
        sock: &Sock,
        op: &str,
        body: Bytes,
        options: SourcesOptions,
    ) -> Result<Sources, Error> {
        let open = Open {
            lz4: options.lz4,
            frame_window: options.frame_window.max(1),
            source_window: options.source_window.max(1),
        };
        let (request, response) = sock.stream_request(op, open.encode(&body)).await?;
        let (sources_tx, rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let pump = Pump {
            request,
            response,
            control: control.downgrade(),
            sources: sources_tx,
            open: HashMap::new(),
            refused: HashSet::new(),
            options,
            remote_addr: sock.info().remote_addr,
        };
        tokio::spawn(pump.run(control_rx));
        Ok(Sources { rx, control, window: open.source_window, taken: 0, done: false })
    }

    /// The next source; `Ok(None)` once the server said every source is finished.
    ///
    /// # Errors
    /// [`Error::Remote`] for the service's error (before any source, or a request-level
    /// failure such as `sourcing timeout` after the announced ones ended), [`Error::Closed`].
    pub async fn next(&mut self) -> Result<Option<RemoteSource>, Error> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Ok(source)) => {
                self.taken += 1;
                if self.taken >= (self.window / 2).max(1) {
                    let _ = self.control.send(Control::Sources { count: self.taken });
                    self.taken = 0;
                }
                Ok(Some(source))
            }
            Some(Err(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Cancels every source still open and every one not yet announced; each open one ends
    /// aborted.
    pub fn cancel(&self) {
        let _ = self.control.send(Control::CancelAll);
    }
}

/// One source: its header, where it came from, and its frames.
///
/// Dropping it before its end cancels it.
#[derive(Debug)]
pub struct RemoteSource {
    id: u32,
    header: Bytes,
    remote_addr: Option<SocketAddr>,
    rx: mpsc::UnboundedReceiver<Item>,
    control: mpsc::UnboundedSender<Control>,
    window: u32,
    /// Frames read since the last grant.
    read: u32,
    done: bool,
}

impl RemoteSource {
    /// The source's id, unique within its request.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The header the service gave the source.
    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// The address of the server that produced it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The next frame; `Ok(None)` when the source completed.
    ///
    /// # Errors
    /// [`SourceError::Aborted`] with the server's reason, [`SourceError::Request`] when the
    /// connection or the request failed first.
    pub async fn next(&mut self) -> Result<Option<Bytes>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let item = self.rx.recv().await;
        match item {
            Some(Item::Frame(frame)) => {
                self.read += 1;
                // Half the window at a time: few control parts, and the server never waits
                // for credit while the reader keeps up.
                if self.read >= (self.window / 2).max(1) {
                    let grant = Control::Credit { source: self.id, frames: self.read };
                    let _ = self.control.send(grant);
                    self.read = 0;
                }
                Ok(Some(frame))
            }
            Some(Item::Complete) => {
                self.done = true;
                Ok(None)
            }
            Some(Item::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Err(SourceError::Request(Error::StreamEnded))
            }
        }
    }

    /// Cancels the source: the server drops its producer and ends it aborted.
    pub fn cancel(mut self) {
        self.cancel_now();
    }

    fn cancel_now(&mut self) {
        if !self.done {
            self.done = true;
            let _ = self.control.send(Control::Cancel { source: self.id });
        }
    }
}

impl Drop for RemoteSource {
    fn drop(&mut self) {
        self.cancel_now();
    }
}

/// The task behind one request.
struct Pump {
    request: StreamRequest,
    response: StreamResponse,
    /// Handed to each new source; weak, so the pump ends once every handle is gone.
    control: mpsc::WeakUnboundedSender<Control>,
    sources: mpsc::UnboundedSender<Result<RemoteSource, Error>>,
    open: HashMap<u32, mpsc::UnboundedSender<Item>>,
    /// Sources this side ended (a frame it refused) whose end the server has yet to send.
    refused: HashSet<u32>,
    options: SourcesOptions,
    remote_addr: Option<SocketAddr>,
}

impl Pump {
    async fn run(mut self, mut control_rx: mpsc::UnboundedReceiver<Control>) {
        loop {
            tokio::select! {
                part = self.response.next() => match part {
                    Ok(Some(part)) => {
                        if let Err(e) = self.part(&part).await {
                            // The server broke the mapping: nothing after this can be trusted.
                            self.fail(Error::Remote(format!("invalid sources part: {e}")));
                            return;
                        }
                    }
                    Ok(None) => {
                        // Every source ended; any left open is the server's fault.
                        self.fail_open(SourceError::Aborted("the response ended first".into()));
                        return;
                    }
                    Err(e) => {
                        self.fail(e);
                        return;
                    }
                },
                control = control_rx.recv() => match control {
                    Some(control) => {
                        if let Err(e) = self.request.write(control.encode()).await {
                            self.fail(e);
                            return;
                        }
                    }
                    // Every handle is gone: dropping the request ends it, which cancels the
                    // rest on the server.
                    None => return,
                },
            }
        }
    }

    async fn part(&mut self, payload: &Bytes) -> Result<(), String> {
        let part = Part::decode(payload).map_err(|e| e.to_string())?;
        let source = part.source();
        if let Part::Announce { header, .. } = part {
            if self.open.contains_key(&source) {
                return Err(format!("source {source} announced twice"));
            }
            let Some(control) = self.control.upgrade() else { return Ok(()) };
            let (tx, rx) = mpsc::unbounded_channel();
            let handle = RemoteSource {
                id: source,
                header: payload.slice_ref(header),
                remote_addr: self.remote_addr,
                rx,
                control,
                window: self.options.frame_window.max(1),
                read: 0,
                done: false,
            };
            self.open.insert(source, tx);
            // Nobody reading sources any more: the handle's drop cancels it.
            let _ = self.sources.send(Ok(handle));
            return Ok(());
        }
        if self.refused.contains(&source) {
            if matches!(part, Part::Complete { .. } | Part::Abort { .. }) {
                self.refused.remove(&source);
            }
            return Ok(());
        }
        let Some(tx) = self.open.get(&source) else {
            return Err(format!("part for source {source}, which is not open"));
        };
        let item = match part {
            Part::Frame { data, .. } if data.len() > self.options.max_frame as usize => {
                Err(format!("frame of {} bytes exceeds the limit", data.len()))
            }
            // A slice of the part: no copy.
            Part::Frame { data, .. } => Ok(Item::Frame(payload.slice_ref(data))),
            Part::Compressed { len, data, .. } => {
                match decompress_frame(len, data, self.options.max_frame) {
                    Ok(frame) => Ok(Item::Frame(frame.into())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Part::Complete { .. } => {
                let _ = tx.send(Item::Complete);
                self.open.remove(&source);
                return Ok(());
            }
            Part::Abort { reason, .. } => {
                let _ = tx.send(Item::Failed(SourceError::Aborted(reason.to_owned())));
                self.open.remove(&source);
                return Ok(());
            }
            Part::Announce { .. } => return Ok(()),
        };
        match item {
            // A send fails only when the handle was dropped, which already asked the server to
            // cancel the source.
            Ok(item) => drop(tx.send(item)),
            Err(reason) => {
                // A frame this side refuses ends its source here, and the server is told to
                // stop it; its remaining parts are then ignored as it ends.
                let _ = tx.send(Item::Failed(SourceError::Aborted(reason)));
                self.open.remove(&source);
                self.refused.insert(source);
                let cancel = Control::Cancel { source }.encode();
                self.request.write(cancel).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn fail_open(&mut self, error: SourceError) {
        for (_, tx) in self.open.drain() {
            let _ = tx.send(Item::Failed(error.clone()));
        }
    }

    fn fail(&mut self, error: Error) {
        self.fail_open(SourceError::Request(error.clone()));
        let _ = self.sources.send(Err(error));
    }
}
