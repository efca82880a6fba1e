//! A source service: what a server registers, and its limits and timeouts.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use gotalk_protocol::sources::DEFAULT_MAX_FRAME;

use crate::handlers::Handlers;
use crate::sock::Sock;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The service function with its types erased: connection and body in, sources or error
/// text out.
pub(super) type ServiceFn =
    Arc<dyn Fn(Sock, Bytes) -> BoxFuture<Result<BoxStream<'static, Source>, String>> + Send + Sync>;

/// One source: a header and a stream of frames. The stream ending completes the source; an
/// error item aborts it with the error's text as the reason.
pub struct Source {
    pub(super) header: Bytes,
    pub(super) frames: BoxStream<'static, Result<Bytes, String>>,
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("header", &self.header).finish_non_exhaustive()
    }
}

impl Source {
    /// A source with this header and these frames. The frames are produced only when the
    /// client can take them, and dropped (with whatever the stream owns) when the source is
    /// cancelled or the connection goes.
    pub fn new<S, E>(header: impl Into<Bytes>, frames: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: fmt::Display,
    {
        Source {
            header: header.into(),
            frames: frames.map(|item| item.map_err(|e| e.to_string())).boxed(),
        }
    }
}

/// A service that answers a request with sources, with its limits and timeouts.
///
/// ```
/// use bytes::Bytes;
/// use futures_util::stream;
/// use gotalk::sources::{Source, SourceService};
///
/// let mut handlers = gotalk::Handlers::new();
/// SourceService::new(|_sock, body: Bytes| async move {
///     // One source per shard, each streaming its matches.
///     let shards = (0..3).map(move |shard| {
///         let frames = stream::iter([Ok::<_, String>(Bytes::from(format!("{shard}: {body:?}")))]);
///         Source::new(format!("shard {shard}"), frames)
///     });
///     Ok::<_, String>(stream::iter(shards))
/// })
/// .compress(true)
/// .register(&mut handlers, "search");
/// ```
#[derive(Clone)]
pub struct SourceService {
    pub(super) f: ServiceFn,
    pub(super) max_open: usize,
    pub(super) max_frame: u32,
    pub(super) compress: bool,
    pub(super) sourcing_timeout: Duration,
    pub(super) serving_timeout: Duration,
    pub(super) stall_timeout: Duration,
}

impl fmt::Debug for SourceService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceService")
            .field("max_open", &self.max_open)
            .field("max_frame", &self.max_frame)
            .field("compress", &self.compress)
            .field("sourcing_timeout", &self.sourcing_timeout)
            .field("serving_timeout", &self.serving_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .finish_non_exhaustive()
    }
}

impl SourceService {
    /// A service that calls `f` with the connection and the request body. `f`'s error (before
    /// any source) goes to the client as an ErrorResult.
    pub fn new<F, Fut, S, E>(f: F) -> Self
    where
        F: Fn(Sock, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        S: Stream<Item = Source> + Send + 'static,
        E: fmt::Display,
    {
        let f: ServiceFn = Arc::new(move |sock, body| {
            let fut = f(sock, body);
            Box::pin(async move {
                match fut.await {
                    Ok(sources) => Ok(sources.boxed()),
                    Err(e) => Err(e.to_string()),
                }
            })
        });
        SourceService {
            f,
            max_open: 128,
            max_frame: DEFAULT_MAX_FRAME,
            compress: false,
            sourcing_timeout: Duration::from_secs(30),
            serving_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(30),
        }
    }

    /// Sources open at once; the next one is not taken from the service's stream until one
    /// ends. Default: 128. At least 1.
    pub fn max_open(mut self, max: usize) -> Self {
        self.max_open = max.max(1);
        self
    }

    /// The largest frame, uncompressed. A larger frame aborts its source, not the
    /// connection. Default: 1 MiB. It is also capped by the connection's payload limit.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Compresses frames with LZ4 for clients that can decompress them, each frame only when
    /// that makes it smaller. Default: off.
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// How long the service's stream may take to yield the next source while one could be
    /// announced. When it expires no more sources are taken; the open ones finish, and the
    /// request then ends with the ErrorResult `sourcing timeout`. Default: 30 s.
    pub fn sourcing_timeout(mut self, timeout: Duration) -> Self {
        self.sourcing_timeout = timeout;
        self
    }

    /// The longest a whole request may run. When it expires every open source is aborted
    /// and the request ends with the ErrorResult `serving timeout`. Default: 10 minutes.
    pub fn serving_timeout(mut self, timeout: Duration) -> Self {
        self.serving_timeout = timeout;
        self
    }

    /// How long a source may wait without frame credit (the client not reading it) before it
    /// is aborted; the other sources go on. Default: 30 s.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Serves this service as the streaming op `op`.
    pub fn register(self, handlers: &mut Handlers, op: &str) {
        let service = Arc::new(self);
        handlers.handle_stream(op, move |sock, input, output| {
            let service = service.clone();
            // The service's own errors and the timeouts are texts the client reads as is.
            async move {
                super::schedule::serve(&service, sock, input, output)
                    .await
                    .map_err(crate::HandlerError::text)
            }
        });
    }
}
