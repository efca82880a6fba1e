//! `gotalk-bench --scenario sources`: frames/s and MB/s of sources, against plain streaming
//! results carrying the same frames on the same connection, in the same run.
//!
//! The server's `bench-sources` answers with N sources, each a stream of one frame repeated a
//! given number of times; `bench-stream` is the baseline, one streaming result of the same
//! frames, and the client opens N of them at once. Either way a run is the time from the
//! request until every frame has been read, for a fixed total of frames (a fixed amount, not a
//! fixed time, because the baseline has no flow control: in a timed run the server would
//! outrun a reader sharing its core without bound). Sources pay for the tagging, the credit
//! round trips and the scheduler; the client's stream buffer is raised to hold the whole
//! baseline transfer, so it never overflows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _};
use gotalk::sources::{Source, SourceService, Sources, SourcesOptions};
use gotalk::{Handlers, Sock};
use tokio::task::JoinSet;

use super::{gateway_url, median_f64, Kind, ServerChild, Transport};

/// Sources (or baseline streams) at once, and frame sizes, of the standard runs.
const SHAPES: [(usize, usize); 4] = [(1, 64), (16, 64), (1, 64 * 1024), (16, 64 * 1024)];
/// Bytes in the frames of one run, with at most [`MAX_FRAMES`] frames: a few seconds' worth.
const RUN_BYTES: usize = 512 << 20;
const MAX_FRAMES: usize = 2_000_000;

/// Registers the two operations on the bench server.
pub(super) fn register(handlers: &mut Handlers) {
    SourceService::new(|_sock, body: Bytes| async move {
        let (n, size, count) = shape(&body)?;
        let frame = Bytes::from(vec![b'x'; size]);
        let sources = (0..n).map(move |i| {
            let frames = stream::repeat(Ok::<_, String>(frame.clone())).take(count);
            Source::new(i.to_string(), frames)
        });
        Ok::<_, String>(stream::iter(sources))
    })
    .register(handlers, "bench-sources");
    handlers.handle_stream("bench-stream", |_sock, mut input, mut output| async move {
        let body = input.next().await?.unwrap_or_default();
        let (_, size, count) = shape(&body).map_err(gotalk::Error::Remote)?;
        let frame = Bytes::from(vec![b'x'; size]);
        for _ in 0..count {
            output.send(frame.clone()).await?;
        }
        Ok::<_, gotalk::Error>(())
    });
}

/// `"N SIZE COUNT"`: streams, frame size, frames per stream.
fn shape(body: &[u8]) -> Result<(usize, usize, usize), String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut words = text.split(' ').map(str::parse::<usize>);
    match (words.next(), words.next(), words.next()) {
        (Some(Ok(n)), Some(Ok(size)), Some(Ok(count)))
            if n <= 1024 && (1..=1 << 20).contains(&size) =>
        {
            Ok((n, size, count))
        }
        _ => Err(format!("expected \"STREAMS SIZE COUNT\", got {text:?}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Sources,
    Streams,
}

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::Sources => "sources",
            Load::Streams => "stream",
        }
    }
}

/// Runs the scenario and returns its summary lines.
pub(super) async fn scenario(transport: Transport, runs: usize) -> anyhow::Result<Vec<String>> {
    println!(
        "== sources{}: frames/s and MB/s, sources against the same frames as plain streaming \
         results on one connection; each run reads {} MiB (at most {MAX_FRAMES} frames), {runs} \
         run(s)",
        transport.tag(" over ", ""),
        RUN_BYTES >> 20,
    );
    println!(
        "{:<8} {:>7} {:>7} {:>4} {:>12} {:>9}",
        "kind", "streams", "frame B", "run", "frames/s", "MB/s"
    );
    let server = ServerChild::spawn(Kind::gotalk(transport)).await?;
    let mut summary = Vec::new();
    for (n, size) in SHAPES {
        let count = (RUN_BYTES / size).min(MAX_FRAMES) / n;
        let mut rates = [Vec::new(), Vec::new()];
        for run in 1..=runs {
            for (k, load) in [Load::Sources, Load::Streams].into_iter().enumerate() {
                let rate = measure(&server, transport, load, n, size, count)
                    .await
                    .with_context(|| format!("{} x{n} {size} B, run {run}", load.label()))?;
                println!(
                    "{:<8} {:>7} {:>7} {:>4} {:>12.0} {:>9.1}",
                    load.label(),
                    n,
                    size,
                    run,
                    rate,
                    rate * size as f64 / 1e6
                );
                rates[k].push(rate);
            }
        }
        let [sources, streams] = rates.map(median_f64);
        let ratio = sources / streams;
        let line = format!(
            "sources {}{n} x {size} B: {sources:.0} frames/s ({:.1} MB/s), plain stream \
             {streams:.0} frames/s ({:.1} MB/s), ratio {ratio:.2}x",
            transport.tag("", " "),
            sources * size as f64 / 1e6,
            streams * size as f64 / 1e6,
        );
        println!("-- median: {line}");
        summary.push(line);
    }
    server.stop().await;
    println!();
    Ok(summary)
}

/// Frames per second: `n` streams of `count` frames of `size` bytes, from the request until
/// the last frame has been read.
async fn measure(
    server: &ServerChild,
    transport: Transport,
    load: Load,
    n: usize,
    size: usize,
    count: usize,
) -> anyhow::Result<f64> {
    let mut config = gotalk::Config::default();
    // The baseline has no flow control: its buffer must hold the whole transfer.
    config = config.stream_buffer_bytes(RUN_BYTES + (64 << 20));
    let handlers = Arc::new(Handlers::new());
    let sock: Sock = match transport {
        Transport::Tcp => gotalk::tcp::connect(server.addr, handlers, config).await?,
        Transport::Ws => gotalk::ws::connect(&gateway_url(server.addr), handlers, config).await?,
    };
    let frames = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    let body = Bytes::from(format!("{n} {size} {count}"));
    let start = Instant::now();
    match load {
        Load::Sources => {
            let options = SourcesOptions::default().lz4(false);
            let mut sources = Sources::open(&sock, "bench-sources", body, options).await?;
            while let Some(mut source) = sources.next().await? {
                let frames = frames.clone();
                readers.spawn(async move {
                    while source.next().await?.is_some() {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                });
            }
        }
        Load::Streams => {
            for _ in 0..n {
                let (request, mut response) =
                    sock.stream_request("bench-stream", body.clone()).await?;
                let frames = frames.clone();
                readers.spawn(async move {
                    let _request = request;
                    while response.next().await?.is_some() {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                });
            }
        }
    }
    while let Some(done) = readers.join_next().await {
        done??;
    }
    let elapsed = start.elapsed();
    let got = frames.load(Ordering::Relaxed);
    anyhow::ensure!(got == (n * count) as u64, "read {got} frames of {}", n * count);
    sock.close();
    sock.closed().await;
    Ok(got as f64 / elapsed.as_secs_f64())
}
