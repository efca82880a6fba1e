//! `gotalk-bench --scenario hostile`: what hostile peers make the real `gotalk serve` hold,
//! with its default settings, while a well-behaved client beside them keeps calling `echo`.
//!
//! Each attack gets a server of its own (this program, started again with `serve` and no
//! other flag, through `prlimit --as=BYTES` with `--address-space-limit`). So an attack that
//! makes the server abort spoils only its own row, each row's peak is that server's own VmHWM
//! with nothing carried over from the attack before, and every attack starts from the same
//! state: one TCP and one WebSocket connection made and closed, and the bystander connected.
//! After the attackers leave, the server is watched for `--hostile-after` seconds while the
//! next attack already runs on its own server: an idle process's memory does not depend on
//! what other processes do, and the whole run takes a third of the time.
//!
//! The bystander is a gotalk TCP client from 127.0.0.12 that calls `echo` every 200 ms from
//! before the attack until the attackers leave; a call not answered within 5 s has failed.
//!
//! The attacks, numbered as the findings they reproduce (payloads are the 16 MiB payload
//! limit times `--hostile-scale`; 8, memory kept after an attack, is a column of every row):
//! 1. `json`: 128 `ask-page` requests on one TCP connection, each a payload of
//!    `{"op":…,"value":[[],[],…]}` whose decoded value the handler keeps while it waits for an
//!    answer the attacker never gives.
//! 2. `held`: a WebSocket client that does not declare `gotalk-retry=1` fills the 128 request
//!    slots with 10-second `sleep` calls, then sends 256 `echo` requests of half a payload,
//!    which the server holds instead of refusing.
//! 3. `results`: 128 `ask-page` calls on one TCP connection; each call the server makes back
//!    is answered with streaming result parts adding up to one byte under a payload, and
//!    never ended.
//! 4. `streams`: 4 TCP connections, each with 32 `stream-echo` streams of 17 parts of a
//!    sixteenth of a payload, and never a byte read back.
//! 5. `partial`: 150 TCP connections, each sending an `echo` header declaring a payload and
//!    all of it but the last byte.
//! 6. `ws-buffers`: 60 well-behaved WebSocket clients each echo one payload (4 at a time),
//!    then stay open, idle.
//! 7. `broadcast`: 50 idle WebSocket clients, and a TCP client that calls `broadcast` with one
//!    payload.
//! 9. `exhaust`: `--exhaust-per-addr` gotalk TCP clients (answering liveness probes) from each
//!    of 127.0.0.2 to 127.0.0.11; then the bystander is a newcomer from 127.0.0.12: every
//!    200 ms a new connection tries an `echo` (5 s each).
//!
//! Attacks 1 to 5 send for at most `--hostile-hold` seconds (what the server has not taken by
//! then is never sent) and leave at its end. Attacks 6, 7 and 9 first do what they do (at most
//! 60 s), then hold for `--hostile-hold` seconds. "During" is the server's RSS just before the
//! attackers leave; "after" is its RSS `--hostile-after` seconds later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt as _, StreamExt as _};
use gotalk::protocol::{Decoder, Frame, Id, Name};
use gotalk::{Config, ConnInfo, Handlers, Sock, TransportKind};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::soak::{settled_rss, Gateway, Mib, ProcSample};
use super::{SPARE_FDS, TARGET_IDLE_BYTES, TARGET_IDLE_WS_BYTES};

// What `gotalk serve` allows by default (docs/limits.md): the attacks are sized
// from these.
/// The payload limit.
const PAYLOAD_LIMIT: usize = 16 << 20;
/// Requests in flight per connection.
const REQUEST_LIMIT: u32 = 128;
/// Streaming requests in flight per connection.
const STREAM_LIMIT: u32 = 32;
/// Requests held for a WebSocket peer that cannot take RetryResult.
const HELD_REQUESTS: u32 = 256;
/// TCP connections per remote address.
const PER_ADDR: u32 = 1_000;

/// How often the bystander calls, and how long one call may take before it has failed.
const BYSTANDER_EVERY: Duration = Duration::from_millis(200);
const BYSTANDER_TIMEOUT: Duration = Duration::from_secs(5);
/// The bystander's address: one no attacker uses.
const BYSTANDER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);
/// The attack 9 addresses: 127.0.0.2 and the nine after it.
const EXHAUST_FIRST: u8 = 2;
const EXHAUST_ADDRS: u8 = 10;
/// How long the attacks that first set something up (6, 7, 9) may take to do it.
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// How long one attacker's connection and handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many connections are being opened at once.
const CONNECT_CONCURRENCY: usize = 128;
/// An operation no attacker ever answers: the server's calls of it wait.
const NEVER_ANSWERED: &str = "hostile.never";
/// An operation whose calls the attacker answers with results it never ends.
const UNENDED: &str = "hostile.unended";
/// "Back to where it started": within this fraction of the RSS before the attack.
const RETURN_MARGIN: f64 = 0.10;

/// The hostile scenario's settings (used with `--scenario hostile`).
#[derive(clap::Args, Debug)]
pub(crate) struct HostileArgs {
    /// Hostile: the attacks to run, comma-separated [default: all, in order].
    #[arg(long = "attacks", value_enum, value_delimiter = ',', value_name = "LIST")]
    attacks: Vec<Attack>,
    /// Hostile: multiplies the attacks' payloads (16 MiB at 1) and the connections of
    /// `exhaust`; 0.01 is a quick check that every attack still runs.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0, value_parser = parse_scale)]
    hostile_scale: f64,
    /// Hostile: seconds each attack sends for (attacks 1-5), or holds what it set up
    /// (6, 7 and 9), before its attackers leave.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, value_parser = super::positive_secs)]
    hostile_hold: f64,
    /// Hostile: seconds the server's memory is watched after the attackers leave.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = super::positive_secs)]
    hostile_after: f64,
    /// Hostile: connections `exhaust` opens from each of its 10 addresses [default: 1,000 (the
    /// server's limit per address) times --hostile-scale, which fills its 10,000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_000))]
    exhaust_per_addr: Option<u32>,
    /// Hostile: start each server under `prlimit --as=BYTES` (util-linux), the address-space
    /// limit `ulimit -v` sets; twice the process memory budget is the target's setting.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    address_space_limit: Option<u64>,
}

fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a factor above 0 and at most 1")),
    }
}

/// One attack, by the finding it reproduces.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// 1: JSON that decodes to many times its size, kept by `ask-page`.
    Json,
    /// 2: held requests from a WebSocket peer without RetryResult.
    Held,
    /// 3: never-ended streaming results to the server's own calls.
    Results,
    /// 4: stream parts never read back.
    Streams,
    /// 5: messages declared and never finished.
    Partial,
    /// 6: WebSocket buffers after one large echo.
    WsBuffers,
    /// 7: one large broadcast to idle WebSockets.
    Broadcast,
    /// 9: connections from a few addresses filling the listener.
    Exhaust,
}

impl Attack {
    const ALL: [Attack; 8] = [
        Attack::Json,
        Attack::Held,
        Attack::Results,
        Attack::Streams,
        Attack::Partial,
        Attack::WsBuffers,
        Attack::Broadcast,
        Attack::Exhaust,
    ];

    fn number(self) -> u8 {
        match self {
            Attack::Json => 1,
            Attack::Held => 2,
            Attack::Results => 3,
            Attack::Streams => 4,
            Attack::Partial => 5,
            Attack::WsBuffers => 6,
            Attack::Broadcast => 7,
            Attack::Exhaust => 9,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Attack::Json => "json",
            Attack::Held => "held",
            Attack::Results => "results",
            Attack::Streams => "streams",
            Attack::Partial => "partial",
            Attack::WsBuffers => "ws-buffers",
            Attack::Broadcast => "broadcast",
            Attack::Exhaust => "exhaust",
        }
    }

    /// Whether it first sets something up and then holds it (else it sends until the hold
    /// ends).
    fn sets_up(self) -> bool {
        matches!(self, Attack::WsBuffers | Attack::Broadcast | Attack::Exhaust)
    }
}

/// The sizes every attack is built from.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// A "full" payload: the limit times the scale.
    payload: usize,
    /// `exhaust`'s connections per address.
    per_addr: usize,
}

impl Sizes {
    fn of(args: &HostileArgs) -> Sizes {
        let payload =
            ((PAYLOAD_LIMIT as f64 * args.hostile_scale) as usize).clamp(64, PAYLOAD_LIMIT);
        let per_addr = match args.exhaust_per_addr {
            Some(n) => n as usize,
            None => ((f64::from(PER_ADDR) * args.hostile_scale).round() as usize).max(1),
        };
        Sizes { payload, per_addr }
    }
}

// ---------------------------------------------------------------------------------------------
// The bystander.

/// What a bystander's calls came to.
#[derive(Debug, Default)]
struct Calls {
    answered: u64,
    failed: u64,
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
}

impl Calls {
    fn p99(&self) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        Some(sorted[(sorted.len() * 99 / 100).min(last)])
    }

    fn add(&mut self, outcome: Result<Duration, String>) {
        match outcome {
            Ok(latency) => {
                self.answered += 1;
                self.latencies.push(latency);
            }
            Err(e) => {
                self.failed += 1;
                *self.errors.entry(e).or_default() += 1;
            }
        }
    }

    fn summary(&self) -> String {
        let p99 = self.p99().map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
        let mut text = format!("{} answered, {} failed, p99 {p99}", self.answered, self.failed);
        if !self.errors.is_empty() {
            let errors: Vec<String> =
                self.errors.iter().take(3).map(|(e, n)| format!("{n}x {e}")).collect();
            let _ = write!(text, " ({})", errors.join("; "));
        }
        text
    }
}

/// How the bystander calls: on the connection it has held since before the attack, or on a
/// new connection each time (a newcomer).
#[derive(Clone)]
enum Caller {
    Held(Sock),
    Newcomer(SocketAddr),
}

impl Caller {
    async fn call(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let call = async {
            match self {
                Caller::Held(sock) => sock.buffer_request("echo", "bystander").await?,
                Caller::Newcomer(tcp) => {
                    let sock = connect_tcp_from(BYSTANDER_SOURCE, *tcp).await?;
                    let answer = sock.buffer_request("echo", "bystander").await;
                    sock.close();
                    answer?
                }
            };
            Ok::<_, anyhow::Error>(())
        };
        match tokio::time::timeout(BYSTANDER_TIMEOUT, call).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err(format!("no answer within {BYSTANDER_TIMEOUT:?}")),
        }
    }
}

/// A well-behaved client calling `echo` every 200 ms until stopped.
struct Bystander {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Calls>,
}

impl Bystander {
    fn start(caller: Caller) -> Bystander {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut calls = Calls::default();
            let mut in_flight = JoinSet::new();
            let mut tick = tokio::time::interval(BYSTANDER_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        let caller = caller.clone();
                        in_flight.spawn(async move { caller.call().await });
                    }
                    Some(done) = in_flight.join_next() => {
                        calls.add(done.unwrap_or_else(|e| Err(e.to_string())));
                    }
                }
            }
            // Calls in flight finish within their timeout.
            while let Some(done) = in_flight.join_next().await {
                calls.add(done.unwrap_or_else(|e| Err(e.to_string())));
            }
            calls
        });
        Bystander { stop, task }
    }

    async fn stop(self) -> Calls {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// A gotalk TCP client bound to `source` first, with the default settings (it answers
/// liveness probes).
async fn connect_tcp_from(source: Ipv4Addr, addr: SocketAddr) -> anyhow::Result<Sock> {
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("bind {source}"))?;
        let stream = socket.connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        let info =
            ConnInfo::new(TransportKind::Tcp, stream.peer_addr().ok(), stream.local_addr().ok());
        let (reader, writer) = gotalk::transport::tcp(stream);
        let handlers = Arc::new(Handlers::new());
        Sock::start(reader, writer, handlers, Arc::new(Config::default()), info)
            .await
            .context("gotalk handshake")
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .with_context(|| format!("no connection within {CONNECT_TIMEOUT:?}"))?
}

/// A gotalk WebSocket client with the default settings (declaring `gotalk-retry=1`).
async fn connect_ws(url: &str) -> anyhow::Result<Sock> {
    let connect = gotalk::ws::connect(url, Arc::new(Handlers::new()), Config::default());
    Ok(tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .with_context(|| format!("no connection within {CONNECT_TIMEOUT:?}"))??)
}

/// A raw TCP connection after the version exchange, for frames written by hand.
async fn raw_tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let connect = async {
        let mut stream = TcpStream::connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        stream.write_all(b"01").await.context("send the version")?;
        let mut version = [0u8; 2];
        stream.read_exact(&mut version).await.context("read the server's version")?;
        ensure!(&version == b"01", "the server answered version {version:?}");
        Ok(stream)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .with_context(|| format!("no connection within {CONNECT_TIMEOUT:?}"))?
}

/// Reads and decodes what the server sends until it closes, passing on the ids of its
/// requests for `op`.
async fn drain(
    mut read: impl tokio::io::AsyncRead + Unpin,
    op: &'static str,
    requests: mpsc::UnboundedSender<Id>,
) {
    let mut decoder = Decoder::new();
    decoder.max_payload(u32::MAX);
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(64 * 1024);
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::SingleRequest { id, op: name, .. })) if name.as_str() == op => {
                    let _ = requests.send(id);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A frame's header, encoded.
fn header(frame: &Frame) -> BytesMut {
    let mut head = BytesMut::new();
    frame.encode_header(&mut head);
    head
}

/// Writes `frame`'s header and the first `len` bytes of its payload, unless `deadline`
/// passes first; false if it did.
async fn write_until(
    out: &mut OwnedWriteHalf,
    frame: &Frame,
    len: usize,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let write = async {
        out.write_all(&header(frame)).await?;
        out.write_all(&frame.payload()[..len]).await
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(written) => written.map(|()| true).context("write"),
        Err(_) => Ok(false),
    }
}

fn request(id: u32, op: &str, payload: Bytes) -> Frame {
    Frame::SingleRequest { id: Id::from_u32(id), op: name(op), payload }
}

fn name(op: &str) -> Name {
    Name::new(op).expect("the attacks' names are short")
}

/// Bytes of `x`.
fn filler(len: usize) -> Bytes {
    Bytes::from(vec![b'x'; len])
}

/// Errors by message, counted.
#[derive(Debug, Default)]
struct Tally(BTreeMap<String, u64>);

impl Tally {
    fn add(&mut self, e: &anyhow::Error) {
        *self.0.entry(format!("{e:#}")).or_default() += 1;
    }

    fn summary(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self.0.iter().take(3).map(|(e, n)| format!("{n}x {e}")).collect();
        format!("; errors: {}", parts.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// The attacks.

/// Where and how hard to attack.
struct Target {
    http: SocketAddr,
    tcp: SocketAddr,
    ws_url: String,
    sizes: Sizes,
    hold: Duration,
}

/// What an attack holds until its attackers leave, and what it did.
#[derive(Default)]
struct Held {
    /// What it did, for its line in the report.
    note: String,
    /// Connections it held at most, by transport, for the memory allowance.
    tcp: usize,
    ws: usize,
    /// The bystander that counts instead of the held one (attack 9's newcomer).
    newcomer: Option<Calls>,
    /// Raw connections and the tasks reading them: dropped (and aborted) to leave.
    streams: Vec<TcpStream>,
    writers: Vec<OwnedWriteHalf>,
    tasks: JoinSet<()>,
    /// Raw WebSocket sinks.
    sinks: Vec<Box<dyn Send>>,
    #[expect(dead_code, reason = "held to keep the clients connected")]
    socks: Socks,
}

/// Client socks, closed when dropped: a sock lives on in its tasks until closed.
#[derive(Default)]
struct Socks(Vec<Sock>);

impl Drop for Socks {
    fn drop(&mut self) {
        for sock in &self.0 {
            sock.close();
        }
    }
}

async fn attack(which: Attack, target: &Target) -> anyhow::Result<Held> {
    let deadline = Instant::now() + target.hold;
    match which {
        Attack::Json => json(target, deadline).await,
        Attack::Held => held(target, deadline).await,
        Attack::Results => results(target, deadline).await,
        Attack::Streams => streams(target, deadline).await,
        Attack::Partial => partial(target, deadline).await,
        Attack::WsBuffers => ws_buffers(target).await,
        Attack::Broadcast => broadcast(target).await,
        Attack::Exhaust => exhaust(target).await,
    }
}

/// `{"op":"hostile.never","value":[[],[],…]}`, `len` bytes at most.
fn expanding_json(len: usize) -> Bytes {
    let head = format!(r#"{{"op":"{NEVER_ANSWERED}","value":["#);
    let tail = "]}";
    let items = (len.saturating_sub(head.len() + tail.len()) + 1) / 3;
    let mut json = Vec::with_capacity(len);
    json.extend_from_slice(head.as_bytes());
    for i in 0..items {
        json.extend_from_slice(if i == 0 { b"[]" } else { b",[]" });
    }
    json.extend_from_slice(tail.as_bytes());
    Bytes::from(json)
}

/// 1: `ask-page` requests whose value decodes to many times its size, on one TCP connection
/// that reads everything and answers nothing.
async fn json(target: &Target, deadline: Instant) -> anyhow::Result<Held> {
    let payload = expanding_json(target.sizes.payload);
    let (read, mut write) = raw_tcp(target.tcp).await?.into_split();
    let mut held = Held { tcp: 1, ..Held::default() };
    let (calls, _) = mpsc::unbounded_channel();
    held.tasks.spawn(drain(read, NEVER_ANSWERED, calls));
    let mut sent = 0;
    for id in 0..REQUEST_LIMIT {
        let frame = request(id, "ask-page", payload.clone());
        if !write_until(&mut write, &frame, payload.len(), deadline).await? {
            break;
        }
        sent += 1;
    }
    held.note = format!(
        "{sent} of {REQUEST_LIMIT} ask-page requests of {} of `[],` sent",
        Size(payload.len())
    );
    held.writers.push(write);
    tokio::time::sleep_until(deadline).await;
    Ok(held)
}

/// 2: a WebSocket peer that cannot take RetryResult fills its request slots with slow calls,
/// then sends requests the server must hold.
async fn held(target: &Target, deadline: Instant) -> anyhow::Result<Held> {
    // No `gotalk-retry=1`: the gateway holds this peer's requests past the limit.
    let stream = TcpStream::connect(target.http).await?;
    let config = gotalk::ws::socket_config(&Config::default());
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(target.ws_url.clone(), stream, Some(config))
            .await
            .context("websocket handshake")?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::Binary(Bytes::from_static(b"01"))).await?;
    let mut held = Held { ws: 1, ..Held::default() };
    held.tasks.spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let half = filler(target.sizes.payload / 2);
    let slow = Bytes::from_static(br#"{"ms":10000}"#);
    let (mut slow_sent, mut held_sent) = (0, 0);
    for id in 0..REQUEST_LIMIT + HELD_REQUESTS {
        let (frame, payload) = if id < REQUEST_LIMIT {
            (request(id, "sleep", slow.clone()), slow.clone())
        } else {
            (request(id, "echo", half.clone()), half.clone())
        };
        // A header in a message of its own, its payload in the next: one byte stream.
        let send = async {
            sink.feed(Message::Binary(header(&frame).freeze())).await?;
            sink.send(Message::Binary(payload)).await
        };
        match tokio::time::timeout_at(deadline, send).await {
            Ok(sent) => sent.context("send")?,
            Err(_) => break,
        }
        if id < REQUEST_LIMIT {
            slow_sent += 1;
        } else {
            held_sent += 1;
        }
    }
    held.note = format!(
        "WebSocket without gotalk-retry=1: {slow_sent} sleep calls, then {held_sent} of \
         {HELD_REQUESTS} echo requests of {} sent",
        Size(half.len())
    );
    held.sinks.push(Box::new(sink));
    tokio::time::sleep_until(deadline).await;
    Ok(held)
}

/// 3: `ask-page` calls whose calls back are answered with streaming results that are never
/// ended, each one byte short of a payload.
async fn results(target: &Target, deadline: Instant) -> anyhow::Result<Held> {
    let (read, mut write) = raw_tcp(target.tcp).await?.into_split();
    let mut held = Held { tcp: 1, ..Held::default() };
    let (calls_tx, mut calls) = mpsc::unbounded_channel();
    held.tasks.spawn(drain(read, UNENDED, calls_tx));
    let ask = Bytes::from(format!(r#"{{"op":"{UNENDED}","value":null}}"#));
    for id in 0..REQUEST_LIMIT {
        let frame = request(id, "ask-page", ask.clone());
        if !write_until(&mut write, &frame, ask.len(), deadline).await? {
            break;
        }
    }
    // Parts of a sixteenth of a payload, one byte short of a whole payload per call.
    let total = target.sizes.payload - 1;
    let part = filler((target.sizes.payload / 16).max(1));
    let (mut answered, mut bytes) = (0, 0u64);
    'calls: while let Ok(Some(id)) = tokio::time::timeout_at(deadline, calls.recv()).await {
        let mut left = total;
        while left > 0 {
            let len = left.min(part.len());
            let frame = Frame::StreamResult { id, payload: part.slice(..len) };
            if !write_until(&mut write, &frame, len, deadline).await? {
                break 'calls;
            }
            left -= len;
            bytes += len as u64;
        }
        answered += 1;
    }
    held.note = format!(
        "{answered} of the server's calls answered with {} each, never ended; {} sent",
        Size(total),
        Size(bytes as usize)
    );
    held.writers.push(write);
    tokio::time::sleep_until(deadline).await;
    Ok(held)
}

/// 4: 4 TCP connections, each filling 32 `stream-echo` streams with 17 sixteenths of a
/// payload, never reading a byte back.
async fn streams(target: &Target, deadline: Instant) -> anyhow::Result<Held> {
    const CONNECTIONS: usize = 4;
    const PARTS: usize = 17;
    let part = filler((target.sizes.payload / 16).max(1));
    let mut writers = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (stream, part) = (raw_tcp(target.tcp).await?, part.clone());
        writers.spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut sent = 0u64;
            'parts: for k in 0..PARTS {
                for stream in 0..STREAM_LIMIT {
                    let id = Id::from_u32(stream);
                    let frame = if k == 0 {
                        Frame::StreamRequest { id, op: name("stream-echo"), payload: part.clone() }
                    } else {
                        Frame::StreamRequestPart { id, payload: part.clone() }
                    };
                    match write_until(&mut write, &frame, part.len(), deadline).await {
                        Ok(true) => sent += part.len() as u64,
                        Ok(false) | Err(_) => break 'parts,
                    }
                }
            }
            (read, write, sent)
        });
    }
    let mut held = Held { tcp: CONNECTIONS, ..Held::default() };
    let mut sent = 0;
    while let Some(done) = writers.join_next().await {
        let (read, write, bytes) = done.context("a writer panicked")?;
        sent += bytes;
        held.streams.push(read.reunite(write).context("reunite")?);
    }
    held.note = format!(
        "{CONNECTIONS} connections x {STREAM_LIMIT} stream-echo streams x {PARTS} parts of {}, \
         nothing read back: {} sent",
        Size(part.len()),
        Size(sent as usize)
    );
    tokio::time::sleep_until(deadline).await;
    Ok(held)
}

/// 5: 150 TCP connections, each declaring a payload and sending all of it but its last byte.
async fn partial(target: &Target, deadline: Instant) -> anyhow::Result<Held> {
    const CONNECTIONS: usize = 150;
    let payload = filler(target.sizes.payload);
    let mut writers = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let (tcp, payload) = (target.tcp, payload.clone());
        writers.spawn(async move {
            let (read, mut write) = raw_tcp(tcp).await?.into_split();
            let frame = request(0, "echo", payload);
            let whole = write_until(&mut write, &frame, frame.payload().len() - 1, deadline).await;
            Ok::<_, anyhow::Error>((read.reunite(write)?, whole?))
        });
    }
    let mut held = Held::default();
    let (mut whole, mut errors) = (0, Tally::default());
    while let Some(done) = writers.join_next().await {
        match done.context("a writer panicked")? {
            Ok((stream, sent)) => {
                whole += usize::from(sent);
                held.streams.push(stream);
            }
            Err(e) => errors.add(&e),
        }
    }
    held.tcp = held.streams.len();
    held.note = format!(
        "{} of {CONNECTIONS} connections open, {whole} sent all but the last byte of {}{}",
        held.tcp,
        Size(payload.len()),
        errors.summary()
    );
    tokio::time::sleep_until(deadline).await;
    Ok(held)
}

/// 6: well-behaved WebSocket clients echo one payload each, then stay open and idle.
async fn ws_buffers(target: &Target) -> anyhow::Result<Held> {
    const SOCKETS: usize = 60;
    const AT_ONCE: usize = 4;
    let payload = filler(target.sizes.payload);
    let setup = async {
        let mut socks = Vec::with_capacity(SOCKETS);
        for _ in 0..SOCKETS {
            socks.push(connect_ws(&target.ws_url).await?);
        }
        let slots = Arc::new(Semaphore::new(AT_ONCE));
        let mut echoes = JoinSet::new();
        for sock in &socks {
            let (sock, payload, slots) = (sock.clone(), payload.clone(), slots.clone());
            echoes.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let echoed = sock.buffer_request("echo", payload.clone()).await?;
                ensure!(echoed.len() == payload.len(), "{} bytes came back", echoed.len());
                Ok(())
            });
        }
        let (mut done, mut errors) = (0, Tally::default());
        while let Some(echo) = echoes.join_next().await {
            match echo.context("an echo panicked")? {
                Ok(()) => done += 1,
                Err(e) => errors.add(&e),
            }
        }
        Ok::<_, anyhow::Error>((socks, done, errors))
    };
    let (socks, done, errors) = tokio::time::timeout(SETUP_LIMIT, setup)
        .await
        .with_context(|| format!("the echoes took over {SETUP_LIMIT:?}"))??;
    let mut held = Held { ws: socks.len(), socks: Socks(socks), ..Held::default() };
    held.note = format!(
        "{SOCKETS} WebSocket clients each echoed {} ({AT_ONCE} at a time): {done} answered{}; \
         then idle for {:.0} s",
        Size(payload.len()),
        errors.summary(),
        target.hold.as_secs_f64()
    );
    tokio::time::sleep(target.hold).await;
    Ok(held)
}

/// 7: idle WebSocket clients, and one TCP client that broadcasts a payload to everyone.
async fn broadcast(target: &Target) -> anyhow::Result<Held> {
    const SOCKETS: usize = 50;
    let payload = filler(target.sizes.payload);
    let setup = async {
        let mut socks = Vec::with_capacity(SOCKETS + 1);
        for _ in 0..SOCKETS {
            socks.push(connect_ws(&target.ws_url).await?);
        }
        let sender =
            gotalk::tcp::connect(target.tcp, Arc::new(Handlers::new()), Config::default()).await?;
        socks.push(sender.clone());
        let reached = sender.buffer_request("broadcast", payload.clone()).await;
        Ok::<_, anyhow::Error>((socks, reached))
    };
    let (socks, reached) = tokio::time::timeout(SETUP_LIMIT, setup)
        .await
        .with_context(|| format!("the broadcast took over {SETUP_LIMIT:?}"))??;
    let reached = match reached {
        Ok(text) => format!("reached {}", String::from_utf8_lossy(&text)),
        Err(e) => format!("failed: {e}"),
    };
    let mut held = Held { ws: SOCKETS, tcp: 1, socks: Socks(socks), ..Held::default() };
    held.note = format!(
        "one TCP client broadcast {} to {SOCKETS} idle WebSocket clients and the bystander: \
         {reached}; then idle for {:.0} s",
        Size(payload.len()),
        target.hold.as_secs_f64()
    );
    tokio::time::sleep(target.hold).await;
    Ok(held)
}

/// 9: gotalk TCP clients from 10 addresses, as many as each may open; then a newcomer from
/// another address tries to connect every 200 ms.
async fn exhaust(target: &Target) -> anyhow::Result<Held> {
    let per_addr = target.sizes.per_addr;
    let total = per_addr * usize::from(EXHAUST_ADDRS);
    let started = Instant::now();
    let setup_end = started + SETUP_LIMIT;
    let mut socks = Vec::with_capacity(total);
    let mut errors = Tally::default();
    let mut pending = JoinSet::new();
    let mut next = 0;
    while next < total || !pending.is_empty() {
        while next < total && pending.len() < CONNECT_CONCURRENCY && Instant::now() < setup_end {
            let source = Ipv4Addr::new(127, 0, 0, EXHAUST_FIRST + (next % 10) as u8);
            pending.spawn(connect_tcp_from(source, target.tcp));
            next += 1;
        }
        if Instant::now() >= setup_end {
            next = total;
        }
        let Some(done) = pending.join_next().await else { break };
        match done.context("a connecting task panicked")? {
            Ok(sock) => socks.push(sock),
            Err(e) => errors.add(&e),
        }
    }
    let opened_in = started.elapsed().as_secs_f64();
    let open = socks.iter().filter(|s| !s.is_closed()).count();
    let newcomer = Bystander::start(Caller::Newcomer(target.tcp));
    tokio::time::sleep(target.hold).await;
    let calls = newcomer.stop().await;
    let still = socks.iter().filter(|s| !s.is_closed()).count();
    let mut held =
        Held { tcp: socks.len(), socks: Socks(socks), newcomer: Some(calls), ..Held::default() };
    held.note = format!(
        "{} connections opened of {total} tried ({per_addr} from each of 127.0.0.{EXHAUST_FIRST} \
         to 127.0.0.{}) in {opened_in:.1} s, {open} open then and {still} at the end of the \
         hold{}; the bystander column is a newcomer from {BYSTANDER_SOURCE}, a new connection \
         per call",
        held.tcp,
        EXHAUST_FIRST + EXHAUST_ADDRS - 1,
        errors.summary()
    );
    Ok(held)
}

// ---------------------------------------------------------------------------------------------
// One attack on a server of its own.

/// The highest VmHWM and VmPeak seen, kept after the process is gone.
struct PeakWatch {
    peaks: Arc<[AtomicU64; 2]>,
    stop: CancellationToken,
}

impl PeakWatch {
    fn start(pid: u32) -> PeakWatch {
        let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let stop = CancellationToken::new();
        let (max, token) = (peaks.clone(), stop.clone());
        tokio::spawn(async move {
            let pid = pid.to_string();
            while !token.is_cancelled() {
                let now = ProcSample::of(&pid);
                max[0].fetch_max(now.hwm, Ordering::Relaxed);
                max[1].fetch_max(now.vm_peak, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        PeakWatch { peaks, stop }
    }

    /// The peak resident and mapped bytes so far.
    fn peaks(&self, pid: u32) -> (u64, u64) {
        let now = ProcSample::of(&pid.to_string());
        let rss = self.peaks[0].fetch_max(now.hwm, Ordering::Relaxed).max(now.hwm);
        let mapped = self.peaks[1].fetch_max(now.vm_peak, Ordering::Relaxed).max(now.vm_peak);
        (rss, mapped)
    }
}

impl Drop for PeakWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One row of the table.
struct Row {
    attack: Attack,
    note: String,
    /// The bystander's calls, and the held bystander's under attack 9.
    bystander: Calls,
    held_bystander: Option<Calls>,
    before: u64,
    during: Option<u64>,
    peak: u64,
    /// The peak of the address space (VmPeak), which `--address-space-limit` caps.
    mapped: u64,
    /// RSS before + the process budget + the idle cost of the attack's connections.
    allowed: Option<u64>,
    after: Option<u64>,
    /// Seconds after the attackers left when RSS was first back within the margin.
    back_after: Option<f64>,
    /// None while the server runs.
    exit: Option<String>,
    budget_peak: Option<u64>,
}

/// How a server exited.
fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (_, Some(6)) => "ABORTED (SIGABRT)".into(),
        (_, Some(9)) => "KILLED (SIGKILL)".into(),
        (_, Some(signal)) => format!("died of signal {signal}"),
        (Some(code), _) => format!("exited ({code})"),
        (None, None) => "exited".into(),
    }
}

/// `/stats`'s `memory.<field>`, when the server answers.
async fn budget_stat(server: &Gateway, field: &str) -> Option<u64> {
    server.stats().await.ok()?["memory"][field].as_u64()
}

/// Runs `which` on a fresh server. Returns its row so far and the task that watches the
/// server after the attackers left, which completes it.
async fn run_one(
    which: Attack,
    sizes: Sizes,
    args: &HostileArgs,
    launcher: &[String],
) -> anyhow::Result<tokio::task::JoinHandle<Row>> {
    let tag = format!("[{} {}]", which.number(), which.name());
    let mut server = Gateway::spawn(&[], launcher).await?;
    let pid = server.pid;
    // One connection of each kind first, so "before" is a server that has served.
    let handlers = Arc::new(Handlers::new());
    let tcp = gotalk::tcp::connect(server.tcp, handlers, Config::default()).await?;
    let ws = connect_ws(&server.ws_url()).await?;
    for sock in [tcp, ws] {
        sock.buffer_request("echo", "warm-up").await.context("the warm-up echo")?;
        sock.close();
        sock.closed().await;
    }
    let bystander_sock = connect_tcp_from(BYSTANDER_SOURCE, server.tcp).await?;
    let before = settled_rss(&server).await;
    let capacity = budget_stat(&server, "capacity").await;
    let watch = PeakWatch::start(pid);
    let bystander = Bystander::start(Caller::Held(bystander_sock.clone()));
    let target = Target {
        http: server.http,
        tcp: server.tcp,
        ws_url: server.ws_url(),
        sizes,
        hold: Duration::from_secs_f64(args.hostile_hold),
    };
    let held = attack(which, &target)
        .await
        .unwrap_or_else(|e| Held { note: format!("the attack stopped: {e:#}"), ..Held::default() });
    let during = Some(server.sample().rss).filter(|&rss| rss > 0);
    let mut held_calls = bystander.stop().await;
    bystander_sock.close();
    let (mut held, mut exit) = (held, server.exited().map(describe));
    let (bystander, held_bystander) = match held.newcomer.take() {
        Some(newcomer) => (newcomer, Some(std::mem::take(&mut held_calls))),
        None => (held_calls, None),
    };
    let idle_cost =
        held.tcp as f64 * TARGET_IDLE_BYTES + (held.ws + 1) as f64 * TARGET_IDLE_WS_BYTES;
    let allowed = capacity.map(|c| before + c + idle_cost as u64);
    let note = std::mem::take(&mut held.note);
    println!("{tag} {note}");
    // The attackers leave.
    drop(held);
    let left = Instant::now();
    let (peak, _) = watch.peaks(pid);
    println!(
        "{tag} RSS before {}, during {}, peak {}; bystander {}{}",
        Mib(before),
        during.map_or("-".into(), |d| Mib(d).to_string()),
        Mib(peak),
        bystander.summary(),
        exit.as_ref().map_or(String::new(), |e| format!("; the server {e}"))
    );
    let after_secs = args.hostile_after;
    Ok(tokio::spawn(async move {
        let (mut after, mut back_after) = (None, None);
        let end = left + Duration::from_secs_f64(after_secs);
        while exit.is_none() {
            let now = Instant::now();
            let rss = server.sample().rss;
            if rss > 0 {
                after = Some(rss);
                if back_after.is_none() && rss as f64 <= before as f64 * (1.0 + RETURN_MARGIN) {
                    back_after = Some(now.duration_since(left).as_secs_f64());
                }
            }
            exit = server.exited().map(describe);
            if now >= end {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1).min(end - now)).await;
        }
        let budget_peak = budget_stat(&server, "peak").await;
        let (peak, mapped) = watch.peaks(pid);
        exit = exit.or_else(|| server.exited().map(describe));
        server.stop().await;
        println!(
            "{tag} {after_secs:.0} s after the attackers left: RSS {}{}",
            after.map_or("-".into(), |a| Mib(a).to_string()),
            match back_after {
                Some(t) => format!(" (back within 10 % of before after {t:.0} s)"),
                None => " (not back within 10 % of before)".into(),
            }
        );
        Row {
            attack: which,
            note,
            bystander,
            held_bystander,
            before,
            during,
            peak,
            mapped,
            allowed,
            after: if exit.is_none() { after } else { None },
            back_after,
            exit,
            budget_peak,
        }
    }))
}

/// Runs the hostile scenario; returns summary lines, or fails when a server aborted or
/// exited under attack.
pub(super) async fn scenario(args: &HostileArgs) -> anyhow::Result<Vec<String>> {
    let attacks: Vec<Attack> =
        if args.attacks.is_empty() { Attack::ALL.to_vec() } else { args.attacks.clone() };
    let sizes = Sizes::of(args);
    let launcher: Vec<String> = match args.address_space_limit {
        Some(bytes) => vec!["prlimit".into(), format!("--as={bytes}")],
        None => Vec::new(),
    };
    println!(
        "== hostile: {} attack(s) on `gotalk serve` with its default settings, a server each; \
         payloads of {} (scale {}); each attack sends or holds for {:.0} s, then its server is \
         watched for {:.0} s{}",
        attacks.len(),
        Size(sizes.payload),
        args.hostile_scale,
        args.hostile_hold,
        args.hostile_after,
        match args.address_space_limit {
            Some(bytes) =>
                format!("; servers under prlimit --as={bytes} ({})", Size(bytes as usize)),
            None => String::new(),
        }
    );
    if attacks.contains(&Attack::Exhaust) {
        // Every attacking connection is a descriptor here and one in the server, which
        // inherits our limit.
        let files = gotalk_cli::nofile::raise_open_file_limit();
        let need = (sizes.per_addr * usize::from(EXHAUST_ADDRS)) as u64 + SPARE_FDS;
        ensure!(
            files >= need,
            "the open-file limit is {files}, too low for {} exhaust connections (need {need}); \
             raise the hard limit (ulimit -Hn) or lower --exhaust-per-addr",
            sizes.per_addr * usize::from(EXHAUST_ADDRS)
        );
    }
    println!();
    let mut watching = Vec::new();
    for &which in &attacks {
        println!(
            "-- attack {} ({}{})",
            which.number(),
            which.name(),
            if which.sets_up() { ", set up then held" } else { ", sent until the hold ends" }
        );
        watching.push(run_one(which, sizes, args, &launcher).await?);
        println!();
    }
    let mut rows = Vec::new();
    for task in watching {
        rows.push(task.await.context("a watch task panicked")?);
    }
    print_table(&rows, args);
    summarize(&rows, args)
}

/// Bytes in MiB, or KiB below one MiB (small runs send small payloads).
struct Size(usize);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= 1 << 20 {
            write!(f, "{:.1} MiB", self.0 as f64 / f64::from(1 << 20))
        } else {
            write!(f, "{:.1} KiB", self.0 as f64 / 1024.0)
        }
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)))
}

fn print_table(rows: &[Row], args: &HostileArgs) {
    println!(
        "== hostile result (MiB; peak = VmHWM; allowed = before + the process budget + 16 KiB \
         per TCP and 24 KiB per WebSocket connection held; after = {:.0} s after the attackers \
         left; mapped = VmPeak, the most address space mapped, which --address-space-limit \
         caps)",
        args.hostile_after
    );
    println!(
        "| # | attack | before | during | peak | allowed | after | back ≤10 % | bystander \
         answered/failed | bystander p99 | server | budget peak | mapped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let over = match row.allowed {
            Some(allowed) if row.peak > allowed => " (over)",
            _ => "",
        };
        println!(
            "| {} | {} | {} | {} | {}{over} | {} | {} | {} | {}/{} | {} | {} | {} | {} |",
            row.attack.number(),
            row.attack.name(),
            mib(Some(row.before)),
            mib(row.during),
            mib(Some(row.peak)),
            mib(row.allowed),
            mib(row.after),
            row.back_after.map_or("no".into(), |t| format!("{t:.0} s")),
            row.bystander.answered,
            row.bystander.failed,
            row.bystander.p99().map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
            row.exit.as_deref().unwrap_or("alive"),
            mib(row.budget_peak),
            mib(Some(row.mapped)),
        );
    }
    println!();
    for row in rows {
        println!("{} {}: {}", row.attack.number(), row.attack.name(), row.note);
        if let Some(held) = &row.held_bystander {
            println!("  the bystander connected before the attack: {}", held.summary());
        }
        if !row.bystander.errors.is_empty() {
            println!("  bystander: {}", row.bystander.summary());
        }
    }
    println!();
}

fn summarize(rows: &[Row], args: &HostileArgs) -> anyhow::Result<Vec<String>> {
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    let n = rows.len();
    let within = count(&|r| r.allowed.is_some_and(|a| r.peak <= a));
    let alive = count(&|r| r.exit.is_none());
    let back =
        count(&|r| r.after.is_some_and(|a| a as f64 <= r.before as f64 * (1.0 + RETURN_MARGIN)));
    let served = count(&|r| r.bystander.failed == 0 && r.bystander.answered > 0);
    let verdict = |k: usize| if k == n { "met" } else { "NOT met" };
    let lines = [
        format!(
            "peak RSS within the budget plus idle connections: {within} of {n}: {}",
            verdict(within)
        ),
        format!("server alive to the end: {alive} of {n}: {}", verdict(alive)),
        format!(
            "RSS within 10 % of before {:.0} s after the attackers left: {back} of {n}: {}",
            args.hostile_after,
            verdict(back)
        ),
        format!("bystander answered every time: {served} of {n}: {}", verdict(served)),
    ];
    for line in &lines {
        println!("{line}");
    }
    println!();
    let peak = rows.iter().map(|r| r.peak).max().unwrap_or(0);
    let mapped = rows.iter().map(|r| r.mapped).max().unwrap_or(0);
    let summary = format!(
        "hostile: {n} attacks at scale {}{}; highest peak RSS {}, address space {}; {}",
        args.hostile_scale,
        args.address_space_limit.map_or(String::new(), |b| format!(", prlimit --as={b}")),
        Mib(peak),
        Mib(mapped),
        lines.join("; ")
    );
    let died: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            Some(format!("{} {}: {}", r.attack.number(), r.attack.name(), r.exit.as_ref()?))
        })
        .collect();
    ensure!(died.is_empty(), "the server did not survive: {}", died.join(", "));
    Ok(vec![summary])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_json_fills_its_length_and_parses() {
        for len in [64, 65, 66, 1000, 4097] {
            let json = expanding_json(len);
            assert!(json.len() <= len && json.len() + 3 > len, "{len}: {}", json.len());
            let value: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
            assert_eq!(value["op"], NEVER_ANSWERED);
            assert!(value["value"]
                .as_array()
                .is_some_and(|a| a.iter().all(|v| v == &serde_json::json!([]))));
        }
    }

    #[test]
    fn sizes_follow_the_scale() {
        let args = |scale: f64, per_addr: Option<u32>| HostileArgs {
            attacks: Vec::new(),
            hostile_scale: scale,
            hostile_hold: 10.0,
            hostile_after: 30.0,
            exhaust_per_addr: per_addr,
            address_space_limit: None,
        };
        let full = Sizes::of(&args(1.0, None));
        assert_eq!((full.payload, full.per_addr), (16 << 20, 1000));
        let small = Sizes::of(&args(0.1, Some(7)));
        assert_eq!((small.payload, small.per_addr), ((16 << 20) / 10, 7));
        let tiny = Sizes::of(&args(1e-9, None));
        assert_eq!((tiny.payload, tiny.per_addr), (64, 1));
        assert!(
            parse_scale("0").is_err() && parse_scale("1.5").is_err() && parse_scale("x").is_err()
        );
    }

    #[test]
    fn percentiles_of_the_bystander() {
        let mut calls = Calls::default();
        assert_eq!(calls.p99(), None);
        for ms in 1..=100 {
            calls.add(Ok(Duration::from_millis(ms)));
        }
        calls.add(Err("no answer".into()));
        assert_eq!(calls.p99(), Some(Duration::from_millis(100)));
        assert_eq!((calls.answered, calls.failed), (100, 1));
    }
}
