//! `gotalk-bench`: a load generator that measures gotalk against a raw echo baseline, over TCP
//! or WebSocket.
//!
//! Every server runs in a child process of its own (this program, started again with the
//! hidden `bench-server` subcommand), so client and server are separate processes as in real
//! use, and the server's memory can be read from `/proc/<pid>/status`.
//!
//! Two kinds of server are measured in the same invocation, with the same client harness:
//! - `gotalk`: a [`gotalk::tcp::Server`] with a buffer handler `echo` that returns its payload,
//!   loaded by `gotalk::tcp::connect` clients with `depth` tasks per connection, each sending
//!   `echo` requests one after another.
//! - a plain tokio TCP echo server (read into a buffer, write back what was read), the
//!   baseline, loaded by a client that keeps `depth` fixed-size messages in flight per
//!   connection in one of two ways:
//!   - `raw`: reads and writes as much as the socket takes, so one read may return many
//!     messages and one write send many (the fewest system calls, the strongest baseline);
//!   - `raw-msg`: one write per message sent and one read per message received, as a naive
//!     client that sends each message the moment it has it does; a reference point, not the
//!     fair baseline.
//!
//! With `--transport ws` the same is measured over WebSocket:
//! - `gotalk`: the [`gotalk_gateway::Gateway`] mounted at `/gotalk` in an axum app served by
//!   [`gotalk_gateway::http::serve`], loaded by `gotalk::ws::connect` clients exactly as over TCP;
//! - `raw-ws`: a tokio-tungstenite echo server (each text or binary message sent back with
//!   `SinkExt::send`), loaded by a tokio-tungstenite client that keeps `depth` binary messages
//!   in flight per connection, sending one with `SinkExt::send` as each returns: what a
//!   typical tungstenite user writes; a reference point like `raw-msg`. With
//!   `--baseline batched` (or `both`), `raw-ws-batch` is measured too: the same, but both ends
//!   queue every message that is ready with `SinkExt::feed` and flush once, as gotalk does.
//!
//! The clients of both kinds and the raw-ws server use [`gotalk::ws::socket_config`] with the
//! default [`gotalk::Config`] (4 KiB read buffer, 64 KiB write buffer); the gateway frames its
//! side itself ([`gotalk::ws::server`]), with no buffer of its own beyond what a message needs.
//!
//! Throughput scenarios keep `depth` round trips in flight on each of `conns` connections for
//! a fixed time and report round trips per second and latency percentiles, per run and as
//! medians, and the ratio of gotalk's median to each baseline's. The idle scenario opens many
//! idle gotalk connections (over WebSocket: through the gotalk handshake, with
//! `gotalk::ws::connect`) and reports how much the server's resident memory grew per
//! connection.
//!
//! The relay scenario (`--scenario relay`) loads the same gotalk server, which has the relay
//! on, two ways in the same run: `gotalk`, the plain request/response round trips above, and
//! `relay`, where `conns` pairs of connections bounce messages between the two peers of each
//! pair through the relay (fire and forget, `$relay` notifications), `depth` at a time per
//! pair, each on a topic of its own. One relay round trip is two relayed messages, as one
//! request/response round trip is two messages, so the ratio compares like with like.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

pub(crate) mod browser;
pub(crate) mod cluster;
mod compare;
pub(crate) mod crowd;
mod go;
mod hostile;
mod neutral;
mod soak;
mod sources;

/// The issue's throughput target: gotalk's round trips/s at least this fraction of the
/// baseline's.
const TARGET_RATIO: f64 = 0.6;
/// The issue's idle-memory target over TCP, in bytes per connection.
const TARGET_IDLE_BYTES: f64 = 16.0 * 1024.0;
/// The idle-memory target over WebSocket, in bytes per connection.
const TARGET_IDLE_WS_BYTES: f64 = 24.0 * 1024.0;
/// The most bytes the `raw-ws` client keeps in flight on one connection. It sends and reads on
/// one task, so what it has in flight must fit in the socket buffers, or both ends would wait
/// to write with neither reading.
const RAW_WS_MAX_IN_FLIGHT: usize = 256 * 1024;
/// The standard throughput scenarios, as (connections, in flight per connection).
const STANDARD: [(usize, usize); 2] = [(1, 64), (16, 16)];
/// How many idle connections are being opened at once.
const IDLE_CONNECT_CONCURRENCY: usize = 128;
/// The request limit of the gotalk server under test, well above any depth we use.
const SERVER_REQUEST_LIMIT: u32 = 4096;
/// File descriptors kept spare beyond the idle connections.
const SPARE_FDS: u64 = 256;

/// Measure round trips/s, latency and memory per connection, gotalk against a raw baseline.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without options, runs the standard suite: 1 connection x 64 in flight and 16 connections x 16 \
in flight, 32-byte payloads, each against the gotalk server and a raw tokio TCP echo server, \
then the server's memory with 10,000 idle gotalk connections. The raw server is loaded twice: \
`raw` batches reads and writes as far as the socket allows (the baseline), `raw-msg` makes one \
write and one read per message (a naive client, for reference). `cli cpu/rt` and `srv cpu/rt` \
are the CPU time of the client and server processes per round trip in the measured window.

With `--transport ws`, gotalk runs as the WebSocket gateway behind HTTP and is loaded by \
`gotalk::ws::connect` clients; the baseline, `raw-ws`, is a tokio-tungstenite echo server \
loaded by a tokio-tungstenite client sending one message per `send`, both with gotalk's \
socket settings. `--baseline batched` measures `raw-ws-batch` instead, where both ends \
`feed` every ready message and flush once, and `--baseline both` measures the two. The idle \
scenario opens WebSocket connections through the gotalk handshake.

On a machine with few cores, pin the benchmark to one core, for example \
`taskset -c 0 gotalk-bench`: an idle virtual CPU sleeps, and a client and server on different \
cores give numbers that swing several times between runs. The server processes inherit the \
affinity.

`--scenario hostile` runs each attack of a hostile peer (`--attacks json,held,results,streams,\
partial,ws-buffers,broadcast,exhaust`, numbered 1-7 and 9 in its table) against the real \
`gotalk serve` with its default settings, a fresh server each, and reports the server's RSS \
before, during and at its peak (VmHWM), RSS `--hostile-after` seconds after the attackers \
left, the bystander's answers, failures and p99, how the server ended, and its memory \
budget's peak from /stats. `--hostile-scale 0.01 --hostile-hold 1 --hostile-after 1` is a \
quick check; `--address-space-limit 1073741824` runs every server under \
`prlimit --as=1073741824` (twice the default 512 MiB budget).")]
pub(crate) struct Args {
    /// What the connections run over: `tcp` (gotalk's TCP server against a raw tokio TCP
    /// echo) or `ws` (gotalk's WebSocket gateway against a raw tokio-tungstenite echo).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Which scenarios to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// Connections of a single throughput scenario. Without --conns and --depth, the two
    /// standard scenarios run (1x64 and 16x16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    conns: Option<u32>,
    /// Round trips in flight per connection in a single throughput scenario (default 1 when
    /// only --conns is given).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    depth: Option<u32>,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    size: u32,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0, value_parser = positive_secs)]
    secs: f64,
    /// Seconds of load before each run's measurement starts.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_secs)]
    warmup: f64,
    /// Runs per kind and scenario; the tables report each run and the median.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Idle connections for the memory scenario.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    idle: u32,
    /// Which raw baselines to run: `batched` (as few reads and writes as the socket allows:
    /// `raw`, or over WebSocket `raw-ws-batch`), `per-message` (one write per message:
    /// `raw-msg`, or over WebSocket `raw-ws`), or both. Default: both over TCP, `per-message`
    /// over WebSocket.
    #[arg(long, value_enum)]
    baseline: Option<Baseline>,
    #[command(flatten)]
    soak: soak::SoakArgs,
    #[command(flatten)]
    hostile: hostile::HostileArgs,
    #[command(flatten)]
    compare: compare::CompareArgs,
}

/// What the benchmark's connections run over.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// gotalk over TCP, against a raw tokio TCP echo.
    Tcp,
    /// gotalk over WebSocket (the gateway behind HTTP), against a raw tokio-tungstenite echo.
    Ws,
}

impl Transport {
    /// How headings and summary lines name the transport: TCP, the default, not at all, so
    /// its output reads as before WebSocket was added.
    fn tag(self, before: &str, after: &str) -> String {
        match self {
            Transport::Tcp => String::new(),
            Transport::Ws => format!("{before}ws{after}"),
        }
    }
}

/// The raw baseline clients to measure.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    /// Reads and writes batched as far as the socket allows (`raw`).
    Batched,
    /// One write and one read system call per message (`raw-msg`).
    PerMessage,
    /// Both.
    Both,
}

/// The scenarios `gotalk-bench` can run.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Round trips/s and latency, gotalk against the raw baseline.
    Throughput,
    /// The server's memory per idle connection.
    Idle,
    /// Both.
    All,
    /// Relayed round trips between pairs of peers, against plain request/response.
    Relay,
    /// Frames/s and MB/s of sources (1 and 16 at once) against plain streaming results (not
    /// part of `all`; `--secs` and `--warmup` do not apply: each run is a fixed transfer).
    Sources,
    /// The real `gotalk serve` holding many WebSocket and TCP clients for a long time, with
    /// counted requests and connection churn; reports its memory and CPU (not part of `all`;
    /// set by the `--ws`, `--tcp`, `--hold`, `--requests`, `--churn` options).
    Soak,
    /// Each attack of a hostile peer on the real `gotalk serve` with its default settings,
    /// a fresh server each, while a bystander calls `echo` every 200 ms; reports the server's
    /// memory during and after each, whether it survived, and the bystander's answers (not
    /// part of `all`; set by the `--attacks`, `--hostile-*`, `--exhaust-per-addr` and
    /// `--address-space-limit` options).
    Hostile,
    /// gotalk against the Go gotalk server and a raw echo (the ceiling), all loaded by one
    /// neutral client speaking raw gotalk bytes, over TCP and WebSocket, the servers taking
    /// turns within each round (not part of `all`; set by `--shapes`, `--sizes`,
    /// `--transports`, `--servers`, `--pin`, `--runs`, `--secs`, `--warmup`; needs `go`).
    Go,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds above 0")),
    }
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds, 0 or more")),
    }
}

/// Which server a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The gotalk TCP server with an `echo` buffer handler.
    Gotalk,
    /// A plain tokio TCP echo server: the TCP baseline.
    Raw,
    /// The gotalk WebSocket gateway at `/gotalk/`, with the same handler, behind HTTP.
    GotalkWs,
    /// A tokio-tungstenite echo server that sends each message back with its own flush.
    RawWs,
    /// A tokio-tungstenite echo server that sends back every ready message, then flushes.
    RawWsBatch,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Gotalk, Kind::Raw, Kind::GotalkWs, Kind::RawWs, Kind::RawWsBatch];

    fn name(self) -> &'static str {
        match self {
            Kind::Gotalk => "gotalk",
            Kind::Raw => "raw",
            Kind::GotalkWs => "gotalk-ws",
            Kind::RawWs => "raw-ws",
            Kind::RawWsBatch => "raw-ws-batch",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Kind> {
        if let Some(kind) = Kind::ALL.into_iter().find(|kind| kind.name() == s) {
            return Ok(kind);
        }
        let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
        bail!("unknown bench server kind {s:?}; expected one of {}", names.join(", "))
    }

    /// The gotalk server on `transport`.
    fn gotalk(transport: Transport) -> Kind {
        match transport {
            Transport::Tcp => Kind::Gotalk,
            Transport::Ws => Kind::GotalkWs,
        }
    }
}

/// A client harness and the server it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    /// gotalk TCP clients against the gotalk TCP server.
    Gotalk,
    /// The batched raw client against the raw echo server.
    Raw,
    /// The one-message-per-system-call raw client against the raw echo server.
    RawPerMessage,
    /// gotalk WebSocket clients against the gotalk gateway.
    GotalkWs,
    /// The tokio-tungstenite client against the tokio-tungstenite echo server, one `send`
    /// per message.
    RawWs,
    /// The same, but both ends `feed` every ready message and flush once.
    RawWsBatch,
    /// Pairs of gotalk TCP clients bouncing messages through the relay.
    Relay,
    /// The same over WebSocket.
    RelayWs,
}

impl Load {
    /// The name in the tables. gotalk is `gotalk` on either transport; the scenario's heading
    /// names the transport.
    fn label(self) -> &'static str {
        match self {
            Load::Gotalk | Load::GotalkWs => "gotalk",
            Load::Raw => "raw",
            Load::RawPerMessage => "raw-msg",
            Load::RawWs => "raw-ws",
            Load::RawWsBatch => "raw-ws-batch",
            Load::Relay | Load::RelayWs => "relay",
        }
    }

    fn server(self) -> Kind {
        match self {
            Load::Gotalk | Load::Relay => Kind::Gotalk,
            Load::RelayWs => Kind::GotalkWs,
            Load::Raw | Load::RawPerMessage => Kind::Raw,
            Load::GotalkWs => Kind::GotalkWs,
            Load::RawWs => Kind::RawWs,
            Load::RawWsBatch => Kind::RawWsBatch,
        }
    }

    fn is_gotalk(self) -> bool {
        matches!(self, Load::Gotalk | Load::GotalkWs)
    }
}

/// Runs `gotalk-bench`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    print_header();
    let throughput =
        matches!(args.scenario, Scenario::Throughput | Scenario::All | Scenario::Relay);
    let idle = matches!(args.scenario, Scenario::Idle | Scenario::All);
    let mut summary = Vec::new();
    if throughput {
        let shapes: Vec<(usize, usize)> = match (args.conns, args.depth) {
            (None, None) => STANDARD.to_vec(),
            (conns, depth) => {
                vec![(conns.unwrap_or(1) as usize, depth.unwrap_or(1) as usize)]
            }
        };
        for (conns, depth) in shapes {
            let shape = Shape {
                conns,
                depth,
                size: args.size as usize,
                warmup: Duration::from_secs_f64(args.warmup),
                secs: Duration::from_secs_f64(args.secs),
            };
            let loads = match (args.transport, args.baseline) {
                _ if args.scenario == Scenario::Relay => match args.transport {
                    Transport::Tcp => vec![Load::Gotalk, Load::Relay],
                    Transport::Ws => vec![Load::GotalkWs, Load::RelayWs],
                },
                (Transport::Tcp, Some(Baseline::Batched)) => vec![Load::Gotalk, Load::Raw],
                (Transport::Tcp, Some(Baseline::PerMessage)) => {
                    vec![Load::Gotalk, Load::RawPerMessage]
                }
                (Transport::Tcp, Some(Baseline::Both) | None) => {
                    vec![Load::Gotalk, Load::Raw, Load::RawPerMessage]
                }
                (Transport::Ws, Some(Baseline::Batched)) => vec![Load::GotalkWs, Load::RawWsBatch],
                (Transport::Ws, Some(Baseline::PerMessage) | None) => {
                    vec![Load::GotalkWs, Load::RawWs]
                }
                (Transport::Ws, Some(Baseline::Both)) => {
                    vec![Load::GotalkWs, Load::RawWs, Load::RawWsBatch]
                }
            };
            if args.transport == Transport::Ws {
                // Framing adds at most 14 bytes to a message.
                let in_flight = shape.depth.saturating_mul(shape.size + 14);
                ensure!(
                    in_flight <= RAW_WS_MAX_IN_FLIGHT,
                    "{} in flight x {} bytes is more than the raw-ws client can keep in flight \
                     on one task ({} KiB per connection); lower --depth or --size",
                    shape.depth,
                    shape.size,
                    RAW_WS_MAX_IN_FLIGHT / 1024
                );
            }
            summary.extend(
                throughput_scenario(&shape, args.transport, &loads, args.runs as usize).await?,
            );
        }
    }
    if idle {
        summary.push(idle_scenario(args.idle as usize, args.transport).await?);
    }
    if args.scenario == Scenario::Sources {
        summary.extend(sources::scenario(args.transport, args.runs as usize).await?);
    }
    if args.scenario == Scenario::Soak {
        summary.extend(soak::scenario(&args.soak).await?);
    }
    if args.scenario == Scenario::Hostile {
        summary.extend(hostile::scenario(&args.hostile).await?);
    }
    if args.scenario == Scenario::Go {
        let (warmup, secs) =
            (Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.secs));
        summary.extend(compare::scenario(&args.compare, args.runs as usize, warmup, secs).await?);
    }
    println!("== summary");
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

/// Prints the command line and what the machine gives this process.
fn print_header() {
    let command: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    println!("$ {}", command.join(" "));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let allowed = proc_status_field("self", "Cpus_allowed_list:").unwrap_or_else(|| "?".into());
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    println!(
        "cpus allowed: {allowed} ({cpus} usable); client runtime: {workers} worker thread(s); \
         gotalk {}",
        env!("CARGO_PKG_VERSION")
    );
    if cpus > 1 {
        println!(
            "note: not pinned to one core; on small machines `taskset -c 0` gives steadier numbers"
        );
    }
    println!();
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// The server side: a child process running `gotalk-bench bench-server --kind <kind>`.

/// Runs a bench server: binds `127.0.0.1:0`, prints its address on stdout, and serves until
/// killed or until its stdin closes (the parent exited).
pub(crate) async fn serve_child(kind: &str, defaults: bool) -> anyhow::Result<()> {
    let kind = Kind::parse(kind)?;
    gotalk_cli::nofile::raise_open_file_limit();
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    // The parent holds our stdin open; when it closes, the parent has gone, and so do we.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = io::stdin();
        while let Ok(n) = io::Read::read(&mut stdin, &mut buf) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
    // The benchmark's own scenarios raise the request limit above the depths they try.
    let config = if defaults { gotalk::Config::default() } else { server_config() };
    match kind {
        Kind::Gotalk => serve_gotalk(listener, config).await,
        Kind::Raw => serve_raw(listener, raw_echo).await,
        Kind::GotalkWs => serve_gateway(listener, config).await,
        Kind::RawWs => serve_raw(listener, |stream| raw_ws_echo(stream, false)).await,
        Kind::RawWsBatch => serve_raw(listener, |stream| raw_ws_echo(stream, true)).await,
    }
}

/// The handlers of the gotalk servers under test: one buffer operation, `echo`, that returns
/// its payload.
fn echo_handlers() -> Arc<gotalk::Handlers> {
    let mut handlers = gotalk::Handlers::new();
    // The relay too, for `--scenario relay`; requests for other ops only pass it by.
    handlers.relay(gotalk::relay::Relay::new());
    handlers.handle_buffer("echo", |_sock, payload: Bytes| async move {
        Ok::<_, std::convert::Infallible>(payload)
    });
    sources::register(&mut handlers);
    Arc::new(handlers)
}

/// The settings of the gotalk servers under test: the defaults, but for a request limit well
/// above what the benchmark keeps in flight.
fn server_config() -> gotalk::Config {
    gotalk::Config::default().request_limit(SERVER_REQUEST_LIMIT)
}

/// No cap, for the bench servers: every client comes from one address.
fn uncapped() -> gotalk::listen::ListenerLimits {
    const UNCAPPED: usize = 1 << 20;
    gotalk::listen::ListenerLimits::default()
        .max_connections(UNCAPPED)
        .max_connections_per_addr(UNCAPPED)
}

/// Serves gotalk over TCP with the `echo` handler and no cap on connections.
async fn serve_gotalk(listener: TcpListener, config: gotalk::Config) -> anyhow::Result<()> {
    let server = gotalk::tcp::Server::new(echo_handlers(), config).limits(uncapped());
    server.run(listener, std::future::pending::<()>()).await?;
    Ok(())
}

/// Serves gotalk over WebSocket: the gateway at `/gotalk/` with the `echo` handler and no cap
/// on sockets, in an axum app behind [`gotalk_gateway::http::Server`].
async fn serve_gateway(listener: TcpListener, config: gotalk::Config) -> anyhow::Result<()> {
    let gateway = gotalk_gateway::Gateway::new(echo_handlers(), config).limits(uncapped());
    let app = axum::Router::new().nest_service("/gotalk", gateway.router());
    gotalk_gateway::http::Server::new(app)
        .limits(uncapped())
        .run(listener, std::future::pending::<()>())
        .await?;
    Ok(())
}

/// A baseline server: one `echo` task per connection.
async fn serve_raw<F, Fut>(listener: TcpListener, echo: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream));
            }
            Err(e) => {
                // Out of file descriptors, say: wait for some to close.
                eprintln!("bench-server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Echoes one connection: reads into a buffer and writes back what was read.
async fn raw_echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The tungstenite settings of both ends of a raw-ws connection: gotalk's, so the baseline
/// pays for the same buffers and limits.
fn raw_ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    gotalk::ws::socket_config(&gotalk::Config::default())
}

/// Echoes one WebSocket connection: sends each text or binary message back with
/// `SinkExt::send`, or with `batched`, queues every message that has arrived with
/// `SinkExt::feed` and flushes once. tungstenite answers pings and closes itself.
async fn raw_ws_echo(stream: TcpStream, batched: bool) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(stream, Some(raw_ws_config())).await
    else {
        return;
    };
    while let Some(Ok(mut message)) = ws.next().await {
        if !batched {
            if matches!(message, Message::Binary(_) | Message::Text(_))
                && ws.send(message).await.is_err()
            {
                return;
            }
            continue;
        }
        loop {
            if matches!(message, Message::Binary(_) | Message::Text(_))
                && ws.feed(message).await.is_err()
            {
                return;
            }
            // The next message, if it has already arrived; else the batch is complete.
            match ws.next().now_or_never() {
                Some(Some(Ok(next))) => message = next,
                Some(None | Some(Err(_))) => return,
                None => break,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// A bench server in a child process.
struct ServerChild {
    child: Child,
    addr: SocketAddr,
    pid: u32,
}

impl ServerChild {
    /// Starts this program again as `bench-server --kind <kind>` and reads the address it
    /// listens on.
    async fn spawn(kind: Kind) -> anyhow::Result<ServerChild> {
        let exe = std::env::current_exe().context("cannot find this program to start a server")?;
        ServerChild::start(&[], &exe, &["bench-server", "--kind", kind.name()]).await
    }

    /// Starts `program` with `args` through `launcher` (a command that execs the rest of its
    /// arguments, such as `taskset -c 0`) when it is not empty, and reads the address it
    /// prints. The server must exit when its stdin closes.
    async fn start(
        launcher: &[String],
        program: &std::path::Path,
        args: &[&str],
    ) -> anyhow::Result<ServerChild> {
        let mut command = match launcher.split_first() {
            // The launcher execs the server, so the child's pid is the server's.
            Some((launcher, rest)) => {
                let mut command = Command::new(launcher);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let pid = child.id().context("the bench server exited at once")?;
        let stdout = child.stdout.take().context("the bench server has no stdout")?;
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), BufReader::new(stdout).read_line(&mut line))
            .await
            .context("the bench server did not print its address within 10 s")?
            .context("cannot read the bench server's address")?;
        let addr = line
            .trim()
            .parse()
            .with_context(|| format!("the bench server printed {line:?}, not an address"))?;
        Ok(ServerChild { child, addr, pid })
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.pid.to_string();
        let field = proc_status_field(&pid, "VmRSS:")
            .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
        let kib: u64 = field
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("unexpected VmRSS {field:?}"))?;
        Ok(kib * 1024)
    }

    /// Kills the server and waits for it to exit.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A field of `/proc/<pid>/status`, trimmed.
fn proc_status_field(pid: &str, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix(name)).map(|v| v.trim().to_owned())
}

/// CPU time of every thread of a process, from `/proc/<pid>/task/*/schedstat` (nanoseconds).
fn process_cpu(pid: &str) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        // A thread may exit between listing and reading; it just doesn't count.
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        total += stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok())?;
    }
    Some(Duration::from_nanos(total))
}

// ---------------------------------------------------------------------------------------------
// Throughput.

/// One throughput scenario.
#[derive(Debug, Clone, Copy)]
struct Shape {
    conns: usize,
    depth: usize,
    size: usize,
    warmup: Duration,
    secs: Duration,
}

impl Shape {
    fn is_issue_target(&self) -> bool {
        self.size == 32 && STANDARD.contains(&(self.conns, self.depth))
    }
}

/// When a run's measurement starts and ends. Round trips are counted, and their latency
/// recorded, when they complete inside the window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(warmup: Duration, secs: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window { start, end: start + secs }
    }

    /// Records a round trip sent at `sent` and answered at `done`, if it ended in the window.
    #[inline]
    fn record(&self, latencies: &mut Vec<u64>, sent: Instant, done: Instant) {
        if done >= self.start && done < self.end {
            let nanos = done.saturating_duration_since(sent).as_nanos();
            latencies.push(u64::try_from(nanos).unwrap_or(u64::MAX));
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// Client CPU time per round trip, if it could be read.
    client_cpu: Option<Duration>,
    /// Server CPU time per round trip, if it could be read.
    server_cpu: Option<Duration>,
}

/// Runs one throughput scenario: `runs` rounds, each measuring every load in turn against a
/// fresh server. Prints each run, the medians and the ratios; returns summary lines.
async fn throughput_scenario(
    shape: &Shape,
    transport: Transport,
    loads: &[Load],
    runs: usize,
) -> anyhow::Result<Vec<String>> {
    println!(
        "== throughput{}: {} connection(s) x {} in flight, {}-byte payload, {:.1} s per run after \
         {:.1} s warm-up, {} run(s)",
        transport.tag(" over ", ""),
        shape.conns,
        shape.depth,
        shape.size,
        shape.secs.as_secs_f64(),
        shape.warmup.as_secs_f64(),
        runs
    );
    // As wide as the longest label: 7, as it always was, unless `raw-ws-batch` is measured.
    let w = loads.iter().map(|load| load.label().len()).max().unwrap_or(0).max(7);
    println!(
        "{:<w$} {:>4} {:>12} {:>11} {:>11} {:>10} {:>10}",
        "kind", "run", "rt/s", "p50", "p99", "cli cpu/rt", "srv cpu/rt"
    );
    let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); loads.len()];
    for run in 1..=runs {
        for (k, &load) in loads.iter().enumerate() {
            let result = measure(load, shape)
                .await
                .with_context(|| format!("{} run {run} failed", load.label()))?;
            println!(
                "{:<w$} {:>4} {:>12.0} {:>11} {:>11} {:>10} {:>10}",
                load.label(),
                run,
                result.rate,
                Micros(result.p50),
                Micros(result.p99),
                OptMicros(result.client_cpu),
                OptMicros(result.server_cpu),
            );
            results[k].push(result);
        }
    }
    println!("-- medians of {runs} run(s)");
    println!(
        "{:<w$} {:>5} {:>5} {:>5} {:>12} {:>11} {:>11} {:>10} {:>10}",
        "kind", "conns", "depth", "size", "rt/s", "p50", "p99", "cli cpu/rt", "srv cpu/rt"
    );
    let mut medians = Vec::new();
    for (load, runs) in loads.iter().zip(&results) {
        let m = Medians::of(runs);
        println!(
            "{:<w$} {:>5} {:>5} {:>5} {:>12.0} {:>11} {:>11} {:>10} {:>10}",
            load.label(),
            shape.conns,
            shape.depth,
            shape.size,
            m.rate,
            Micros(m.p50),
            Micros(m.p99),
            OptMicros(m.client_cpu),
            OptMicros(m.server_cpu),
        );
        medians.push((load, m));
    }
    let mut summary = Vec::new();
    let gotalk = medians.iter().find(|(load, _)| load.is_gotalk()).map(|(_, m)| m.rate);
    for (load, m) in medians.iter().filter(|(load, _)| !load.is_gotalk()) {
        let Some(gotalk) = gotalk else { break };
        if matches!(load, Load::Relay | Load::RelayWs) {
            // The relay is measured against request/response, not the other way round.
            let ratio = m.rate / gotalk;
            println!("ratio relay/gotalk (median rt/s): {ratio:.2}x");
            summary.push(format!(
                "relay {}{}x{} {}B: relay {:.0} rt/s ({:.0} relayed msg/s), gotalk \
                 request/response {gotalk:.0} rt/s, ratio {ratio:.2}x",
                transport.tag("", " "),
                shape.conns,
                shape.depth,
                shape.size,
                m.rate,
                2.0 * m.rate
            ));
            continue;
        }
        let ratio = gotalk / m.rate;
        let verdict = if shape.is_issue_target() {
            let met = if ratio >= TARGET_RATIO { "met" } else { "NOT met" };
            format!(" (target >= {TARGET_RATIO:.2}x: {met})")
        } else {
            String::new()
        };
        let label = load.label();
        println!("ratio gotalk/{label} (median rt/s): {ratio:.2}x{verdict}");
        summary.push(format!(
            "throughput {}{}x{} {}B: gotalk {gotalk:.0} rt/s, {label} {:.0} rt/s, ratio \
             {ratio:.2}x{verdict}",
            transport.tag("", " "),
            shape.conns,
            shape.depth,
            shape.size,
            m.rate
        ));
    }
    println!();
    Ok(summary)
}

/// The median of each column over several runs, each column on its own.
struct Medians {
    rate: f64,
    p50: Duration,
    p99: Duration,
    client_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
}

impl Medians {
    fn of(runs: &[RunResult]) -> Medians {
        fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> Option<T> {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            match v.len() {
                0 => None,
                n => Some(v[(n - 1) / 2]),
            }
        }
        let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        let durations = |f: fn(&RunResult) -> Duration| {
            median(runs.iter().map(f).collect()).unwrap_or_default()
        };
        let optional = |f: fn(&RunResult) -> Option<Duration>| {
            runs.iter().map(f).collect::<Option<Vec<_>>>().and_then(median)
        };
        Medians {
            rate: median_f64(rates),
            p50: durations(|r| r.p50),
            p99: durations(|r| r.p99),
            client_cpu: optional(|r| r.client_cpu),
            server_cpu: optional(|r| r.server_cpu),
        }
    }
}

/// The median of a list of rates; the mean of the middle two for an even count.
fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs one measurement against a fresh server.
async fn measure(load: Load, shape: &Shape) -> anyhow::Result<RunResult> {
    let server = ServerChild::spawn(load.server()).await?;
    let result = match load {
        Load::Gotalk => load_gotalk(&server, shape, Transport::Tcp).await,
        Load::Raw => load_raw(&server, shape, false).await,
        Load::RawPerMessage => load_raw(&server, shape, true).await,
        Load::GotalkWs => load_gotalk(&server, shape, Transport::Ws).await,
        Load::RawWs => load_raw_ws(&server, shape, false).await,
        Load::RawWsBatch => load_raw_ws(&server, shape, true).await,
        Load::Relay => load_relay(&server, shape, Transport::Tcp).await,
        Load::RelayWs => load_relay(&server, shape, Transport::Ws).await,
    };
    server.stop().await;
    result
}

/// Client and server CPU time spent inside the window, read by a task that wakes at its
/// start and end.
fn cpu_probe(
    pid: u32,
    window: Window,
) -> tokio::task::JoinHandle<(Option<Duration>, Option<Duration>)> {
    let pid = pid.to_string();
    tokio::spawn(async move {
        tokio::time::sleep_until(window.start.into()).await;
        let (client0, server0) = (process_cpu("self"), process_cpu(&pid));
        tokio::time::sleep_until(window.end.into()).await;
        let (client1, server1) = (process_cpu("self"), process_cpu(&pid));
        let spent = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        (spent(client0, client1), spent(server0, server1))
    })
}

/// Sorts the latencies of a run and turns them into a result.
async fn finish_run(
    shape: &Shape,
    mut latencies: Vec<u64>,
    cpu: tokio::task::JoinHandle<(Option<Duration>, Option<Duration>)>,
) -> anyhow::Result<RunResult> {
    ensure!(!latencies.is_empty(), "no round trip completed within the measured window");
    let (client_cpu, server_cpu) = cpu.await.unwrap_or((None, None));
    latencies.sort_unstable();
    let percentile = |p: usize| {
        let i = (latencies.len() * p / 100).min(latencies.len() - 1);
        Duration::from_nanos(latencies[i])
    };
    let count = latencies.len() as f64;
    let per_round_trip = |d: Duration| Duration::from_secs_f64(d.as_secs_f64() / count);
    Ok(RunResult {
        rate: count / shape.secs.as_secs_f64(),
        p50: percentile(50),
        p99: percentile(99),
        client_cpu: client_cpu.map(per_round_trip),
        server_cpu: server_cpu.map(per_round_trip),
    })
}

/// The URL of the gateway in a `gotalk-ws` bench server.
fn gateway_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/gotalk/")
}

/// Loads a gotalk server over `transport`: `depth` tasks per connection, each sending `echo`
/// requests one after another.
async fn load_gotalk(
    server: &ServerChild,
    shape: &Shape,
    transport: Transport,
) -> anyhow::Result<RunResult> {
    let handlers = Arc::new(gotalk::Handlers::new());
    let config = gotalk::Config::default().heartbeat_interval(None);
    let payload = Bytes::from(vec![b'x'; shape.size]);
    let mut socks = Vec::with_capacity(shape.conns);
    for _ in 0..shape.conns {
        let (handlers, config) = (handlers.clone(), config.clone());
        let sock = match transport {
            Transport::Tcp => gotalk::tcp::connect(server.addr, handlers, config).await,
            Transport::Ws => gotalk::ws::connect(&gateway_url(server.addr), handlers, config).await,
        };
        socks.push(sock.context("cannot connect to the benchmark's gotalk server")?);
    }
    let window = Window::after(shape.warmup, shape.secs);
    let cpu = cpu_probe(server.pid, window);
    let mut tasks = JoinSet::new();
    for sock in &socks {
        for _ in 0..shape.depth {
            let (sock, payload) = (sock.clone(), payload.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= window.end {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let echoed = sock.buffer_request("echo", payload.clone()).await?;
                    let done = Instant::now();
                    ensure!(echoed == payload, "echo returned other bytes than were sent");
                    window.record(&mut latencies, sent, done);
                }
            });
        }
    }
    let latencies = collect(tasks).await;
    for sock in &socks {
        sock.close();
    }
    finish_run(shape, latencies?, cpu).await
}

/// Loads the relay: `conns` pairs of connections; on each pair, `depth` tasks of the first peer
/// each send a message to the second on a topic of their own and wait for it to come back,
/// which the second peer does by relaying every message it gets back to its sender.
async fn load_relay(
    server: &ServerChild,
    shape: &Shape,
    transport: Transport,
) -> anyhow::Result<RunResult> {
    let config = gotalk::Config::default().heartbeat_interval(None);
    // A JSON string of `size` bytes of JSON text.
    let body = "x".repeat(shape.size.saturating_sub(2));
    let connect = |handlers: Arc<gotalk::Handlers>| {
        let config = config.clone();
        async move {
            match transport {
                Transport::Tcp => gotalk::tcp::connect(server.addr, handlers, config).await,
                Transport::Ws => {
                    gotalk::ws::connect(&gateway_url(server.addr), handlers, config).await
                }
            }
        }
    };
    let topics: Vec<String> = (0..shape.depth).map(|k| format!("t{k}")).collect();
    let mut socks = Vec::new();
    let mut senders = Vec::new();
    let mut bouncers = JoinSet::new();
    for _ in 0..shape.conns {
        let (a_inbox, b_inbox) = (gotalk::relay::Inbox::new(), gotalk::relay::Inbox::new());
        a_inbox.queue(shape.depth + 1);
        b_inbox.queue(shape.depth + 1);
        let (mut a_handlers, mut b_handlers) = (gotalk::Handlers::new(), gotalk::Handlers::new());
        a_inbox.install(&mut a_handlers);
        b_inbox.install(&mut b_handlers);
        let replies: Vec<_> = topics.iter().map(|t| a_inbox.topic(t)).collect();
        let requests: Vec<_> = topics.iter().map(|t| b_inbox.topic(t)).collect();
        let a = connect(Arc::new(a_handlers)).await.context("cannot connect to the relay")?;
        let b = connect(Arc::new(b_handlers)).await.context("cannot connect to the relay")?;
        let b_id = b_inbox.id().await;
        for (mut rx, topic) in requests.into_iter().zip(&topics) {
            let (b, topic) = (b.clone(), topic.clone());
            bouncers.spawn(async move {
                while let Some(message) = rx.recv().await {
                    let body: Box<serde_json::value::RawValue> = message.json()?;
                    if b.relay_notify(message.from, &topic, &body).await.is_err() {
                        break;
                    }
                }
                Ok::<_, anyhow::Error>(())
            });
        }
        senders.push((a.clone(), b_id, replies));
        socks.push(a);
        socks.push(b);
    }
    let window = Window::after(shape.warmup, shape.secs);
    let cpu = cpu_probe(server.pid, window);
    let mut tasks = JoinSet::new();
    for (a, b_id, replies) in senders {
        for (mut rx, topic) in replies.into_iter().zip(topics.clone()) {
            let (a, body) = (a.clone(), body.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= window.end {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    a.relay_notify(b_id, &topic, &body).await?;
                    let back = rx.recv().await.context("the inbox closed")?;
                    let done = Instant::now();
                    ensure!(back.from == b_id, "a message came back from another peer");
                    ensure!(back.body.len() == shape_size(&body), "the body changed on the way");
                    window.record(&mut latencies, sent, done);
                }
            });
        }
    }
    let latencies = collect(tasks).await;
    for sock in &socks {
        sock.close();
    }
    bouncers.abort_all();
    finish_run(shape, latencies?, cpu).await
}

/// The bytes of JSON text a string body takes: the string and its quotes.
fn shape_size(body: &str) -> usize {
    body.len() + 2
}

/// Loads the raw echo server: one task per connection keeps `depth` messages of `size` bytes
/// in flight, writing a new one as each returns; with `per_message`, one system call per
/// message each way.
async fn load_raw(
    server: &ServerChild,
    shape: &Shape,
    per_message: bool,
) -> anyhow::Result<RunResult> {
    let mut streams = Vec::with_capacity(shape.conns);
    for _ in 0..shape.conns {
        let stream = TcpStream::connect(server.addr)
            .await
            .context("cannot connect to the raw bench server")?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let window = Window::after(shape.warmup, shape.secs);
    let cpu = cpu_probe(server.pid, window);
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(raw_pipeline(stream, shape.depth, shape.size, window, per_message));
    }
    let latencies = collect(tasks).await?;
    finish_run(shape, latencies, cpu).await
}

/// Keeps `depth` fixed-size messages in flight on one connection until the window ends.
///
/// The echo server may return the bytes in any split, so a message counts as returned when
/// `size` more bytes have come back; they come back in order. Reads and writes are
/// non-blocking on one task, so the baseline pays for no channel or lock and never deadlocks
/// however much is in flight. Batched, each read and write moves as much as the socket takes;
/// with `per_message`, each write sends one message and each read asks for the rest of one.
async fn raw_pipeline(
    stream: TcpStream,
    depth: usize,
    size: usize,
    window: Window,
    per_message: bool,
) -> anyhow::Result<Vec<u64>> {
    let message = vec![b'x'; size];
    // Unsent bytes, always whole messages from its start; `written` of them are sent.
    let mut out: Vec<u8> = Vec::with_capacity(depth * size);
    let mut written = 0;
    let mut input = vec![0u8; (depth * size).clamp(4096, 256 * 1024)];
    // Bytes of the next message to come back that have arrived.
    let mut partial = 0;
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut latencies = Vec::new();
    let now = Instant::now();
    for _ in 0..depth {
        out.extend_from_slice(&message);
        sent.push_back(now);
    }
    while !sent.is_empty() {
        if written < out.len() {
            let end = if per_message { (written / size + 1) * size } else { out.len() };
            match stream.try_write(&out[written..end]) {
                Ok(n) => {
                    written += n;
                    if written == out.len() {
                        out.clear();
                        written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("write to the raw bench server"),
            }
        }
        let want = if per_message { (size - partial).min(input.len()) } else { input.len() };
        match stream.try_read(&mut input[..want]) {
            Ok(0) => bail!("the raw bench server closed the connection"),
            Ok(n) => {
                let done = Instant::now();
                partial += n;
                while partial >= size {
                    partial -= size;
                    let at = sent.pop_front().context("more bytes echoed than were sent")?;
                    window.record(&mut latencies, at, done);
                    if done < window.end {
                        out.extend_from_slice(&message);
                        sent.push_back(done);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let interest = if written < out.len() {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                stream.ready(interest).await?;
            }
            Err(e) => return Err(e).context("read from the raw bench server"),
        }
    }
    Ok(latencies)
}

/// Loads the tokio-tungstenite echo server: one task per connection keeps `depth` binary
/// messages of `size` bytes in flight; with `batched`, feeding and flushing them in batches.
async fn load_raw_ws(
    server: &ServerChild,
    shape: &Shape,
    batched: bool,
) -> anyhow::Result<RunResult> {
    let mut sockets = Vec::with_capacity(shape.conns);
    for _ in 0..shape.conns {
        let stream = TcpStream::connect(server.addr)
            .await
            .context("cannot connect to the raw-ws bench server")?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{}/", server.addr);
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(raw_ws_config()))
                .await
                .context("websocket handshake with the raw-ws bench server")?;
        sockets.push(socket);
    }
    let window = Window::after(shape.warmup, shape.secs);
    let cpu = cpu_probe(server.pid, window);
    let mut tasks = JoinSet::new();
    for socket in sockets {
        tasks.spawn(raw_ws_pipeline(socket, shape.depth, shape.size, window, batched));
    }
    let latencies = collect(tasks).await?;
    finish_run(shape, latencies, cpu).await
}

/// Keeps `depth` binary messages in flight on one WebSocket until the window ends, as a
/// typical tungstenite client would: `send` (write and flush) one message, and for each that
/// comes back, `send` another. With `batched`, takes every echo that has already arrived,
/// `feed`s a new message for each and flushes once. The echo returns them in order.
async fn raw_ws_pipeline(
    mut socket: tokio_tungstenite::WebSocketStream<TcpStream>,
    depth: usize,
    size: usize,
    window: Window,
    batched: bool,
) -> anyhow::Result<Vec<u64>> {
    let message = Bytes::from(vec![b'x'; size]);
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(depth);
    let mut latencies = Vec::new();
    for _ in 0..depth {
        sent.push_back(Instant::now());
        let message = Message::Binary(message.clone());
        if batched {
            socket.feed(message).await.context("send to raw-ws")?;
        } else {
            socket.send(message).await.context("send to raw-ws")?;
        }
    }
    socket.flush().await.context("send to raw-ws")?;
    while !sent.is_empty() {
        let mut echoed = match socket.next().await {
            None => bail!("the raw-ws bench server closed the connection"),
            Some(message) => message.context("read from raw-ws")?,
        };
        loop {
            let done = Instant::now();
            if let Message::Binary(data) = &echoed {
                ensure!(data.len() == size, "raw-ws echoed {} bytes, not {size}", data.len());
                let at = sent.pop_front().context("more messages echoed than were sent")?;
                window.record(&mut latencies, at, done);
                if done < window.end {
                    sent.push_back(done);
                    let message = Message::Binary(message.clone());
                    if batched {
                        socket.feed(message).await.context("send to raw-ws")?;
                    } else {
                        socket.send(message).await.context("send to raw-ws")?;
                    }
                }
            }
            if !batched {
                break;
            }
            // The next echo, if it has already arrived; else the batch is complete.
            match socket.next().now_or_never() {
                Some(Some(next)) => echoed = next.context("read from raw-ws")?,
                Some(None) => bail!("the raw-ws bench server closed the connection"),
                None => break,
            }
        }
        if batched {
            socket.flush().await.context("send to raw-ws")?;
        }
    }
    // A clean close, so the server's task ends without an error; its answer is not awaited.
    let _ = socket.close(None).await;
    Ok(latencies)
}

/// Joins every task and concatenates their latencies; the first failure fails the run.
async fn collect(mut tasks: JoinSet<anyhow::Result<Vec<u64>>>) -> anyhow::Result<Vec<u64>> {
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let mut latencies = joined.context("a load task panicked")??;
        if all.is_empty() {
            all = latencies;
        } else {
            all.append(&mut latencies);
        }
    }
    Ok(all)
}

/// A duration printed in microseconds, or milliseconds from 10 ms up.
struct Micros(Duration);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_secs_f64() * 1e6;
        let text =
            if us < 10_000.0 { format!("{us:.1} µs") } else { format!("{:.2} ms", us / 1000.0) };
        f.pad(&text)
    }
}

/// An optional duration in microseconds; `-` when unknown.
struct OptMicros(Option<Duration>);

impl fmt::Display for OptMicros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => f.pad(&format!("{:.2} µs", d.as_secs_f64() * 1e6)),
            None => f.pad("-"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Idle memory.

async fn idle_scenario(n: usize, transport: Transport) -> anyhow::Result<String> {
    println!(
        "== idle memory: {n} idle gotalk connections{} to one server process",
        transport.tag(" over ", "")
    );
    let limit = gotalk_cli::nofile::raise_open_file_limit();
    let need = n as u64 + SPARE_FDS;
    ensure!(
        limit >= need,
        "the open-file limit is {limit}, too low for {n} connections (need {need}); raise the \
         hard limit (ulimit -Hn) or lower --idle"
    );
    if let Some(ports) = ephemeral_ports() {
        ensure!(
            (n as u64) < ports,
            "only {ports} ephemeral ports are configured (net.ipv4.ip_local_port_range); lower \
             --idle"
        );
    }
    let server = ServerChild::spawn(Kind::gotalk(transport)).await?;
    let result = idle_measure(&server, n, transport).await;
    server.stop().await;
    result
}

async fn idle_measure(
    server: &ServerChild,
    n: usize,
    transport: Transport,
) -> anyhow::Result<String> {
    let target = match transport {
        Transport::Tcp => TARGET_IDLE_BYTES,
        Transport::Ws => TARGET_IDLE_WS_BYTES,
    };
    let target_kib = target / 1024.0;
    // One connection first and closed again, so the runtime and allocator have warmed up and
    // "before" is the cost of a server with no connection, not of a server never used.
    drop(idle_connection(server.addr, transport).await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss()?;
    let started = Instant::now();
    let conns = open_idle(server.addr, n, transport).await?;
    let opened = started.elapsed();
    let after = settled_rss(server).await?;
    let growth = after.saturating_sub(before);
    let per_conn = growth as f64 / n as f64;
    drop(conns);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let closed = settled_rss(server).await?;
    let met = if per_conn <= target { "met" } else { "NOT met" };
    println!(
        "opened {n} connections in {:.2} s ({:.0}/s), each through the handshake",
        opened.as_secs_f64(),
        n as f64 / opened.as_secs_f64()
    );
    println!("server VmRSS before:          {:>10} KiB", before / 1024);
    println!("server VmRSS with {n:>6} idle: {:>10} KiB", after / 1024);
    println!("server VmRSS after closing:   {:>10} KiB", closed / 1024);
    println!(
        "per connection: {per_conn:.0} bytes ({:.2} KiB); target <= {target_kib:.0} KiB: {met}",
        per_conn / 1024.0
    );
    println!();
    Ok(format!(
        "idle{}: {n} connections, {per_conn:.0} bytes/connection ({:.2} KiB, target <= \
         {target_kib:.0} KiB: {met})",
        transport.tag(" ", ""),
        per_conn / 1024.0
    ))
}

/// An idle connection, open for as long as it is held.
enum IdleConn {
    /// A raw TCP connection that went through the gotalk handshake.
    Tcp(#[expect(dead_code, reason = "held to keep the connection open")] TcpStream),
    /// A gotalk WebSocket client sock.
    Ws(gotalk::Sock),
}

impl Drop for IdleConn {
    fn drop(&mut self) {
        // A sock lives on in its tasks until closed; a stream closes when dropped.
        if let IdleConn::Ws(sock) = self {
            sock.close();
        }
    }
}

/// Opens `n` idle gotalk connections, a bounded number at a time so the listen backlog never
/// overflows.
async fn open_idle(
    addr: SocketAddr,
    n: usize,
    transport: Transport,
) -> anyhow::Result<Vec<IdleConn>> {
    let mut conns = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut started = 0;
    while conns.len() < n {
        while started < n && pending.len() < IDLE_CONNECT_CONCURRENCY {
            pending.spawn(idle_connection(addr, transport));
            started += 1;
        }
        match pending.join_next().await {
            Some(joined) => conns.push(joined.context("a connecting task panicked")??),
            None => break,
        }
    }
    Ok(conns)
}

/// One connection through the gotalk handshake. Over TCP, a raw connection that sends `01`
/// and reads the server's `01`: lighter on this side than a full client sock, and the server
/// sees a real peer. Over WebSocket, a `gotalk::ws::connect` client sock with the default
/// settings.
async fn idle_connection(addr: SocketAddr, transport: Transport) -> anyhow::Result<IdleConn> {
    let handshake = async {
        if transport == Transport::Ws {
            let handlers = Arc::new(gotalk::Handlers::new());
            let sock = gotalk::ws::connect(&gateway_url(addr), handlers, gotalk::Config::default())
                .await
                .context("connect to the gateway")?;
            return Ok(IdleConn::Ws(sock));
        }
        let mut stream = TcpStream::connect(addr).await.context("connect")?;
        stream.write_all(b"01").await.context("send the version")?;
        let mut version = [0u8; 2];
        stream.read_exact(&mut version).await.context("read the server's version")?;
        ensure!(&version == b"01", "the server answered version {:?}", version);
        Ok(IdleConn::Tcp(stream))
    };
    tokio::time::timeout(Duration::from_secs(30), handshake)
        .await
        .context("an idle connection's handshake took over 30 s")?
}

/// The server's resident memory once it stops changing: sampled every 250 ms until two
/// samples agree within 0.5 %, for at most 10 s.
async fn settled_rss(server: &ServerChild) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = server.rss()?;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server.rss()?;
        if now.abs_diff(last) * 200 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// How many local ports loopback connections can use.
fn ephemeral_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ends = range.split_whitespace().map(|p| p.parse::<u64>());
    let (low, high) = (ends.next()?.ok()?, ends.next()?.ok()?);
    Some(high.saturating_sub(low) + 1)
}
