//! `gotalk-bench --scenario soak`: many clients held on the real gateway for a long time,
//! with a counted stream of requests and a steady churn of short connections.
//!
//! The server is `gotalk serve` itself (this program, started again with `serve` on ports the
//! kernel picks), with its default heartbeats and liveness probes and its connection limits
//! raised above the load. This process opens `--ws` WebSocket and `--tcp` TCP clients with the
//! default client settings (heartbeats and probes on), holds them for `--hold` seconds and,
//! meanwhile:
//! - sends `--requests` `echo` requests at a steady pace, round robin over the held clients,
//!   each carrying its own 8-byte sequence number. A bitmap of the numbers that came back
//!   tells answered, duplicated (a number seen twice, or an answer carrying another request's
//!   number) and lost (sent and never answered, or failed) apart;
//! - opens `--churn` extra connections per second, half TCP and half WebSocket, each making
//!   one request and closing. Each binds a source address of its own in 127.0.0.0/8 first, so
//!   the churn's TIME_WAIT sockets spread over many addresses instead of taking ephemeral
//!   ports from the one address the held clients use.
//!
//! Every `--report-every` seconds, and at the end, it prints what is held, what was counted,
//! and the server's memory and CPU time read from `/proc/<pid>`. The run fails (exits
//! non-zero) if a held connection dropped, a request was lost or duplicated, or a churn
//! connection failed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use futures_util::StreamExt as _;
use gotalk::{ConnInfo, Connections, Handlers, Sock, TransportKind};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ephemeral_ports, proc_status_field, shell_quote, IDLE_CONNECT_CONCURRENCY, SPARE_FDS};

/// Ticks of the request and churn pacers: often enough for a smooth rate, rarely enough to
/// cost nothing.
const TICK: Duration = Duration::from_millis(10);
/// How long one request, or one whole churn connection, may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long opening one held client may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight at most; past it the pacer waits, and the report shows it behind pace.
const MAX_IN_FLIGHT: usize = 20_000;
/// Seconds of churn allowed in flight at once, as a multiple of the churn rate.
const CHURN_IN_FLIGHT_SECS: u32 = 5;
/// The clock ticks per second of `/proc/<pid>/stat`'s times: Linux's USER_HZ, which is 100 on
/// every architecture it exports to user space.
const USER_HZ: f64 = 100.0;

/// The soak's settings (used with `--scenario soak`).
#[derive(clap::Args, Debug)]
pub(crate) struct SoakArgs {
    /// Soak: WebSocket clients held open.
    #[arg(long = "ws", value_name = "N", default_value_t = 10_000)]
    ws: u32,
    /// Soak: TCP clients held open.
    #[arg(long = "tcp", value_name = "N", default_value_t = 1_000)]
    tcp: u32,
    /// Soak: seconds the clients are held.
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0, value_parser = super::positive_secs)]
    hold: f64,
    /// Soak: `echo` requests spread over the hold, each counted.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(0..=1 << 32))]
    requests: u64,
    /// Soak: extra connections opened, used for one request and closed, per second, half TCP
    /// and half WebSocket.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    churn: u32,
    /// Soak: seconds between progress reports.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = super::positive_secs)]
    report_every: f64,
    /// Soak: run the server on these CPUs (`taskset -c LIST`), for example `1` with the bench
    /// itself under `taskset -c 0`.
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// The tally: the pure part.

/// Every request's fate, by sequence number: which were sent, answered once, answered twice
/// or with the wrong number, or failed. Shared by every request task; lock-free.
#[derive(Debug)]
pub(super) struct Tally {
    /// One bit per sequence number: set when its answer arrived.
    answered_bits: Box<[AtomicU64]>,
    capacity: u64,
    sent: AtomicU64,
    answered: AtomicU64,
    duplicated: AtomicU64,
    mismatched: AtomicU64,
    failed: AtomicU64,
}

/// What one answer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The first answer to its request.
    Fresh,
    /// An answer to a request that already had one.
    Duplicate,
    /// An answer that does not carry its request's number.
    Mismatch,
}

/// A snapshot of a [`Tally`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Counts {
    pub(super) sent: u64,
    pub(super) answered: u64,
    /// Second answers and answers carrying another number.
    pub(super) duplicated: u64,
    /// Requests that failed (an error or no answer in time).
    pub(super) failed: u64,
    /// Sent, and neither answered nor failed yet.
    pub(super) in_flight: u64,
}

impl Tally {
    /// A tally for sequence numbers `0..capacity`.
    pub(super) fn new(capacity: u64) -> Tally {
        let words = capacity.div_ceil(64) as usize;
        Tally {
            answered_bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
            capacity,
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The next sequence number to send, or `None` when all have been.
    pub(super) fn next(&self) -> Option<u64> {
        let seq = self.sent.fetch_add(1, Ordering::Relaxed);
        if seq < self.capacity {
            Some(seq)
        } else {
            self.sent.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    /// The payload that carries `seq`.
    pub(super) fn payload(seq: u64) -> Bytes {
        Bytes::copy_from_slice(&seq.to_be_bytes())
    }

    /// Records the answer `payload` to the request that sent `seq`.
    pub(super) fn answer(&self, seq: u64, payload: &[u8]) -> Answer {
        let carried = <[u8; 8]>::try_from(payload).ok().map(u64::from_be_bytes);
        if carried != Some(seq) || seq >= self.capacity {
            // Another request's answer, or garbage: this request is still unanswered.
            self.mismatched.fetch_add(1, Ordering::Relaxed);
            return Answer::Mismatch;
        }
        let bit = 1u64 << (seq % 64);
        let before = self.answered_bits[(seq / 64) as usize].fetch_or(bit, Ordering::Relaxed);
        if before & bit != 0 {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
            Answer::Duplicate
        } else {
            self.answered.fetch_add(1, Ordering::Relaxed);
            Answer::Fresh
        }
    }

    /// Records that the request that sent `seq` failed.
    pub(super) fn fail(&self, _seq: u64) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (sent, answered, failed, mismatched) =
            (get(&self.sent), get(&self.answered), get(&self.failed), get(&self.mismatched));
        Counts {
            sent,
            answered,
            duplicated: get(&self.duplicated) + mismatched,
            failed,
            in_flight: sent.saturating_sub(answered + failed + mismatched),
        }
    }

    /// The sequence numbers sent whose bit is not set, counted from the bitmap itself: the
    /// lost requests, once none is in flight.
    pub(super) fn unanswered(&self) -> u64 {
        let sent = self.sent.load(Ordering::Relaxed).min(self.capacity);
        let (whole, rest) = ((sent / 64) as usize, sent % 64);
        let mut set: u64 = self.answered_bits[..whole]
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as u64)
            .sum();
        if rest > 0 {
            let mask = (1u64 << rest) - 1;
            set += (self.answered_bits[whole].load(Ordering::Relaxed) & mask).count_ones() as u64;
        }
        sent - set
    }
}

/// Utime plus stime, in seconds, from the text of `/proc/<pid>/stat`.
pub(super) fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // The command name, in parentheses, may hold spaces and parentheses: fields are counted
    // from the last `)`. After it come field 3 (state) onwards; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// The source address of the `i`th churn connection: one of 65,024 in 127.1.0.0/16, so each
/// comes round again only after that many connections, long after its TIME_WAIT ended.
pub(super) fn churn_source(i: u64) -> Ipv4Addr {
    let k = i % (256 * 254);
    Ipv4Addr::new(127, 1, (k / 254) as u8, (k % 254 + 1) as u8)
}

// ---------------------------------------------------------------------------------------------
// The server: `gotalk serve` in a child process.

/// `gotalk serve` running as a child process, and where it listens.
pub(super) struct Gateway {
    child: Child,
    pub(super) pid: u32,
    pub(super) http: SocketAddr,
    pub(super) tcp: SocketAddr,
}

impl Gateway {
    /// Starts `gotalk serve --http 127.0.0.1:0 --tcp 127.0.0.1:0` with `flags` after those,
    /// through `launcher` (a command that execs the rest of its arguments, such as
    /// `taskset -c 1` or `prlimit --as=BYTES`) when it is not empty.
    pub(super) async fn spawn(flags: &[String], launcher: &[String]) -> anyhow::Result<Gateway> {
        let exe = std::env::current_exe().context("cannot find this program to start a server")?;
        let serve: Vec<String> = ["serve", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"]
            .into_iter()
            .map(String::from)
            .chain(flags.iter().cloned())
            .collect();
        let mut command = match launcher.split_first() {
            // The launcher execs the server, so the child's pid is the server's.
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(&exe);
                command
            }
            None => Command::new(&exe),
        };
        command.args(&serve);
        let shown: Vec<String> = launcher
            .iter()
            .cloned()
            .chain(std::iter::once(exe.display().to_string()))
            .chain(serve.iter().cloned())
            .map(|a| shell_quote(&a))
            .collect();
        println!("server: {}", shown.join(" "));
        // The server logs warnings and errors only, unless RUST_LOG says otherwise: at 11,000
        // connections, anything chattier would be the benchmark.
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `gotalk serve`")?;
        let pid = child.id().context("`gotalk serve` exited at once")?;
        let stdout = child.stdout.take().context("`gotalk serve` has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // The banner: `gotalk websocket: ws://ADDR/gotalk/` and `gotalk tcp:       tcp://ADDR`.
        let banner = async {
            let (mut http, mut tcp) = (None, None);
            loop {
                if let (Some(http), Some(tcp)) = (http, tcp) {
                    return Ok((http, tcp));
                }
                let Some(line) = lines.next_line().await? else {
                    bail!("`gotalk serve` exited before printing its addresses");
                };
                if let Some(url) = line.strip_prefix("gotalk websocket:") {
                    let addr = url.trim().trim_start_matches("ws://").trim_end_matches("/gotalk/");
                    http = Some(addr.parse::<SocketAddr>().with_context(|| format!("{line:?}"))?);
                } else if let Some(url) = line.strip_prefix("gotalk tcp:") {
                    let addr = url.trim().trim_start_matches("tcp://");
                    tcp = Some(addr.parse::<SocketAddr>().with_context(|| format!("{line:?}"))?);
                }
            }
        };
        let (http, tcp) = tokio::time::timeout(Duration::from_secs(10), banner)
            .await
            .context("`gotalk serve` did not print its addresses within 10 s")??;
        // The rest of its stdout is read and dropped, so it never fills a pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Gateway { child, pid, http, tcp })
    }

    pub(super) fn ws_url(&self) -> String {
        format!("ws://{}/gotalk/", self.http)
    }

    pub(super) fn sample(&self) -> ProcSample {
        ProcSample::of(&self.pid.to_string())
    }

    /// `/stats`: open connections and liveness counts per transport, as JSON.
    pub(super) async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        let mut stream = TcpStream::connect(self.http).await?;
        let request =
            format!("GET /stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.http);
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .context("/stats took over 10 s")??;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        ensure!(head.starts_with("HTTP/1.1 200"), "/stats answered {:?}", head.lines().next());
        Ok(serde_json::from_str(body)?)
    }

    /// How the server exited, if it has.
    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(super) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Memory and CPU time of one process.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ProcSample {
    /// VmRSS, bytes.
    pub(super) rss: u64,
    /// VmHWM, the peak of VmRSS, bytes.
    pub(super) hwm: u64,
    /// VmPeak, the peak of the address space mapped, bytes: what `ulimit -v` limits.
    pub(super) vm_peak: u64,
    /// User and system CPU time, seconds, of every thread it ever ran.
    pub(super) cpu: f64,
}

impl ProcSample {
    pub(super) fn of(pid: &str) -> ProcSample {
        let kib = |name| {
            proc_status_field(pid, name)
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |k| k * 1024)
        };
        let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| stat_cpu_secs(&stat))
            .unwrap_or(0.0);
        ProcSample { rss: kib("VmRSS:"), hwm: kib("VmHWM:"), vm_peak: kib("VmPeak:"), cpu }
    }
}

/// The server's resident memory once it stops changing: sampled every 250 ms until two
/// samples agree within 0.5 %, for at most 10 s.
pub(super) async fn settled_rss(server: &Gateway) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = server.sample().rss;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server.sample().rss;
        if now.abs_diff(last) * 200 <= last {
            return now;
        }
        last = now;
    }
    last
}

// ---------------------------------------------------------------------------------------------
// The clients.

/// The held clients, and registries that count their liveness events.
struct Held {
    ws: Vec<Sock>,
    tcp: Vec<Sock>,
    ws_registry: Connections,
    tcp_registry: Connections,
}

impl Held {
    /// Held clients whose connection has closed, by transport.
    fn dropped(&self) -> (usize, usize) {
        let closed = |socks: &[Sock]| socks.iter().filter(|s| s.is_closed()).count();
        (closed(&self.ws), closed(&self.tcp))
    }

    /// Why the first few dropped clients closed.
    fn drop_reasons(&self) -> BTreeMap<String, usize> {
        let mut reasons = BTreeMap::new();
        for sock in self.ws.iter().chain(&self.tcp).filter(|s| s.is_closed()) {
            let reason = sock.close_reason().map_or("closing".to_owned(), |r| r.to_string());
            *reasons.entry(reason).or_default() += 1;
        }
        reasons
    }

    /// Held clients that have had a heartbeat from the server.
    fn heartbeats_seen(&self) -> usize {
        self.ws.iter().chain(&self.tcp).filter(|s| s.last_heartbeat().is_some()).count()
    }

    fn close(&self) {
        for sock in self.ws.iter().chain(&self.tcp) {
            sock.close();
        }
    }
}

/// Opens `n` clients with `connect`, a bounded number at a time so the listen backlog never
/// overflows, registering each in `registry`.
async fn open_clients<F, Fut>(
    n: usize,
    what: &str,
    registry: &Connections,
    connect: F,
) -> anyhow::Result<Vec<Sock>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Sock, gotalk::Error>> + Send + 'static,
{
    let started_at = Instant::now();
    let mut socks = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut started = 0;
    while socks.len() < n {
        while started < n && pending.len() < IDLE_CONNECT_CONCURRENCY {
            pending.spawn(tokio::time::timeout(CONNECT_TIMEOUT, connect()));
            started += 1;
        }
        let Some(joined) = pending.join_next().await else { break };
        let sock = joined
            .context("a connecting task panicked")?
            .with_context(|| format!("{what} client {} took over 30 s to connect", socks.len()))?
            .with_context(|| format!("{what} client {} could not connect", socks.len()))?;
        registry.insert(&sock);
        socks.push(sock);
    }
    let secs = started_at.elapsed().as_secs_f64();
    println!("opened {n} {what} clients in {secs:.1} s ({:.0}/s)", n as f64 / secs.max(1e-9));
    Ok(socks)
}

/// The settings of every client: the defaults, heartbeats and liveness probes included.
fn client_config() -> gotalk::Config {
    gotalk::Config::default()
}

/// Errors seen, by message, so a report can show what went wrong without a line per failure.
#[derive(Debug, Default)]
struct Errors(Mutex<BTreeMap<String, u64>>);

impl Errors {
    fn add(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(what.into()).or_default() += 1;
    }

    fn summary(&self) -> String {
        let errors = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let parts: Vec<String> =
            errors.iter().take(5).map(|(what, n)| format!("{n}x {what}")).collect();
        parts.join("; ")
    }
}

/// Sends `total` counted `echo` requests, evenly over `window` from `start`, round robin over
/// `socks`.
async fn pace_requests(
    socks: Arc<Vec<Sock>>,
    tally: Arc<Tally>,
    errors: Arc<Errors>,
    start: Instant,
    window: Duration,
) {
    let total = tally.capacity;
    if total == 0 || socks.is_empty() {
        return;
    }
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut issued = 0u64;
    while issued < total {
        tick.tick().await;
        let share = (start.elapsed().as_secs_f64() / window.as_secs_f64()).min(1.0);
        let due = ((total as f64 * share) as u64).min(total);
        while issued < due {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let Some(seq) = tally.next() else { return };
            issued += 1;
            let sock = socks[(seq % socks.len() as u64) as usize].clone();
            let (tally, errors) = (tally.clone(), errors.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let request = sock.buffer_request("echo", Tally::payload(seq));
                match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                    Ok(Ok(echoed)) => {
                        if tally.answer(seq, &echoed) == Answer::Mismatch {
                            errors.add("an answer carried another sequence number");
                        }
                    }
                    Ok(Err(e)) => {
                        tally.fail(seq);
                        errors.add(e.to_string());
                    }
                    Err(_) => {
                        tally.fail(seq);
                        errors.add("no answer within 60 s");
                    }
                }
            });
        }
    }
    // Every request has been issued; wait until all are answered or have failed.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// What the churn did.
#[derive(Debug, Default)]
struct Churn {
    tcp: AtomicU64,
    ws: AtomicU64,
    failed: AtomicU64,
    errors: Errors,
    /// How long each connect, request and close took, in microseconds.
    cycles: Mutex<Vec<u32>>,
}

impl Churn {
    fn done(&self) -> u64 {
        self.tcp.load(Ordering::Relaxed) + self.ws.load(Ordering::Relaxed)
    }

    /// The median and 99th percentile of the cycle times.
    fn percentiles(&self) -> Option<(Duration, Duration)> {
        let mut cycles = self.cycles.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if cycles.is_empty() {
            return None;
        }
        cycles.sort_unstable();
        let at = |p: usize| {
            Duration::from_micros(cycles[(cycles.len() * p / 100).min(cycles.len() - 1)].into())
        };
        Some((at(50), at(99)))
    }
}

/// Opens `rate` connections per second from `start` until `end`, alternately TCP and
/// WebSocket, each bound to a source address of its own; each makes one counted `echo`
/// request and closes.
async fn churn(
    rate: u32,
    http: SocketAddr,
    tcp: SocketAddr,
    counts: Arc<Churn>,
    start: Instant,
    end: Instant,
) {
    if rate == 0 {
        return;
    }
    let cap = (rate * CHURN_IN_FLIGHT_SECS) as usize;
    let slots = Arc::new(Semaphore::new(cap));
    let handlers = Arc::new(Handlers::new());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut started = 0u64;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let due = (now.duration_since(start).as_secs_f64() * f64::from(rate)) as u64;
        while started < due {
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let i = started;
            started += 1;
            let (counts, handlers) = (counts.clone(), handlers.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let began = Instant::now();
                let ws = i % 2 == 1;
                let cycle = churn_once(i, ws, http, tcp, handlers);
                match tokio::time::timeout(REQUEST_TIMEOUT, cycle).await {
                    Ok(Ok(())) => {
                        let micros = began.elapsed().as_micros().min(u32::MAX.into()) as u32;
                        counts.cycles.lock().unwrap_or_else(|p| p.into_inner()).push(micros);
                        let done = if ws { &counts.ws } else { &counts.tcp };
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        counts.errors.add(format!("{e:#}"));
                    }
                    Err(_) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        counts.errors.add("a churn connection took over 60 s");
                    }
                }
            });
        }
    }
    let _ = slots.acquire_many(cap as u32).await;
}

/// One churn connection: connect from [`churn_source`]`(i)`, one `echo`, close.
async fn churn_once(
    i: u64,
    ws: bool,
    http: SocketAddr,
    tcp: SocketAddr,
    handlers: Arc<Handlers>,
) -> anyhow::Result<()> {
    let source = SocketAddr::from((churn_source(i), 0));
    let socket = TcpSocket::new_v4()?;
    socket.bind(source).with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(if ws { http } else { tcp }).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (remote, local) = (stream.peer_addr().ok(), stream.local_addr().ok());
    let config = client_config();
    let sock = if ws {
        // gotalk::ws::connect dials its own stream; this one is bound first, so the upgrade
        // and the sock are put together here as the connector does.
        let url = gotalk::protocol::retry::with_query(&format!("ws://{http}/gotalk/"));
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            url,
            stream,
            Some(gotalk::ws::socket_config(&config)),
        )
        .await
        .context("websocket upgrade")?;
        let (sink, stream) = socket.split();
        let (reader, writer) = gotalk::ws::pair(stream, sink);
        let info = ConnInfo::new(TransportKind::WebSocket, remote, local);
        Sock::start(reader, writer, handlers, Arc::new(config), info).await
    } else {
        let (reader, writer) = gotalk::transport::tcp(stream);
        let info = ConnInfo::new(TransportKind::Tcp, remote, local);
        Sock::start(reader, writer, handlers, Arc::new(config), info).await
    }
    .context("gotalk handshake")?;
    let payload = Tally::payload(i);
    let echoed = sock.buffer_request("echo", payload.clone()).await.context("echo")?;
    ensure!(echoed == payload, "echo returned other bytes than were sent");
    sock.close();
    sock.closed().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Everything the reports read.
struct Run {
    server: Gateway,
    held: Held,
    tally: Arc<Tally>,
    request_errors: Arc<Errors>,
    churn: Arc<Churn>,
    /// When the hold began, and the CPU times then.
    hold_start: Instant,
    server_cpu0: f64,
    client_cpu0: f64,
    /// The server's RSS with no client, after a warm-up connection.
    rss_before: u64,
    hold_secs: f64,
    /// The highest VmHWM read so far, in bytes.
    server_peak: AtomicU64,
}

impl Run {
    /// Prints one report.
    async fn report(&self, heading: &str) -> Sample {
        let elapsed = self.hold_start.elapsed().as_secs_f64();
        let (ws_dropped, tcp_dropped) = self.held.dropped();
        let (ws, tcp) = (self.held.ws.len(), self.held.tcp.len());
        let counts = self.tally.counts();
        let mut server = self.server.sample();
        // Once the server has exited, /proc has nothing: keep the peak seen while it ran.
        let peak = self.server_peak.fetch_max(server.hwm, Ordering::Relaxed).max(server.hwm);
        let gone = if server.rss == 0 { " (the server process is gone)" } else { "" };
        server.hwm = peak;
        let client = ProcSample::of("self");
        let percent = |cpu: f64, cpu0: f64| 100.0 * (cpu - cpu0) / elapsed.max(1e-9);
        let churn_done = self.churn.done();
        let held = ws + tcp - ws_dropped - tcp_dropped;
        println!("-- {heading}: {elapsed:.0} s of {:.0} s", self.hold_secs);
        println!(
            "held:     ws {}/{ws}, tcp {}/{tcp}, dropped {}",
            ws - ws_dropped,
            tcp - tcp_dropped,
            ws_dropped + tcp_dropped
        );
        println!(
            "requests: sent {}, answered {}, in flight {}, failed {}, duplicated {} ({:.0}/s)",
            counts.sent,
            counts.answered,
            counts.in_flight,
            counts.failed,
            counts.duplicated,
            counts.answered as f64 / elapsed.max(1e-9)
        );
        let cycles = match self.churn.percentiles() {
            Some((p50, p99)) => format!(
                ", cycle p50 {:.1} ms p99 {:.1} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ),
            None => String::new(),
        };
        println!(
            "churn:    {churn_done} done ({:.1}/s; tcp {}, ws {}), failed {}{cycles}",
            churn_done as f64 / elapsed.max(1e-9),
            self.churn.tcp.load(Ordering::Relaxed),
            self.churn.ws.load(Ordering::Relaxed),
            self.churn.failed.load(Ordering::Relaxed),
        );
        let per_conn = server.rss.saturating_sub(self.rss_before) as f64 / held.max(1) as f64;
        println!(
            "server:   RSS {}{gone} (peak {}), {:.0} B/held connection; CPU {:.1} s, {:.1} % of a \
             core over the hold",
            Mib(server.rss),
            Mib(server.hwm),
            per_conn,
            server.cpu,
            percent(server.cpu, self.server_cpu0)
        );
        println!(
            "client:   RSS {}; CPU {:.1} s, {:.1} % of a core over the hold",
            Mib(client.rss),
            client.cpu,
            percent(client.cpu, self.client_cpu0)
        );
        let client_probes = |registry: &Connections| {
            let l = registry.liveness();
            format!(
                "{} probes sent, {} acked, {} suppressed by traffic, {} dead",
                l.probes_sent, l.acked, l.suppressed, l.dead
            )
        };
        let server_probes = match self.server.stats().await {
            Ok(stats) => {
                let side = |t: &str| {
                    let l = &stats["liveness"][t];
                    format!(
                        "{} open, {} probes sent, {} acked, {} suppressed by traffic, {} dead",
                        stats[t], l["probes_sent"], l["acked"], l["suppressed"], l["dead"]
                    )
                };
                format!("ws {}; tcp {}", side("websocket"), side("tcp"))
            }
            Err(e) => format!("/stats unavailable: {e:#}"),
        };
        println!("liveness: server (/stats) {server_probes}");
        println!(
            "          clients ws {}; tcp {}; {} of {} held clients have had a server heartbeat",
            client_probes(&self.held.ws_registry),
            client_probes(&self.held.tcp_registry),
            self.held.heartbeats_seen(),
            ws + tcp
        );
        let (request_errors, churn_errors) =
            (self.request_errors.summary(), self.churn.errors.summary());
        if !request_errors.is_empty() {
            println!("request errors: {request_errors}");
        }
        if !churn_errors.is_empty() {
            println!("churn errors: {churn_errors}");
        }
        if ws_dropped + tcp_dropped > 0 {
            println!("dropped because: {:?}", self.held.drop_reasons());
        }
        println!();
        Sample {
            elapsed,
            dropped: ws_dropped + tcp_dropped,
            counts,
            churn_done,
            churn_failed: self.churn.failed.load(Ordering::Relaxed),
            server,
            server_cpu_percent: percent(server.cpu, self.server_cpu0),
            client_cpu_percent: percent(client.cpu, self.client_cpu0),
            per_conn,
        }
    }
}

/// What the final report found.
struct Sample {
    elapsed: f64,
    dropped: usize,
    counts: Counts,
    churn_done: u64,
    churn_failed: u64,
    server: ProcSample,
    server_cpu_percent: f64,
    client_cpu_percent: f64,
    per_conn: f64,
}

/// Bytes shown in MiB.
pub(super) struct Mib(pub(super) u64);

impl std::fmt::Display for Mib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} MiB", self.0 as f64 / (1024.0 * 1024.0))
    }
}

/// Runs the soak; returns summary lines, or fails when anything was dropped, lost or
/// duplicated.
pub(super) async fn scenario(args: &SoakArgs) -> anyhow::Result<Vec<String>> {
    let (ws, tcp) = (args.ws as usize, args.tcp as usize);
    let churn_cap = (args.churn * CHURN_IN_FLIGHT_SECS) as usize;
    let hold = Duration::from_secs_f64(args.hold);
    // Requests stop a little before the hold ends, so the last answers arrive within it.
    let tail = Duration::from_secs_f64((args.hold / 10.0).clamp(0.0, 10.0));
    let window = hold - tail;
    println!(
        "== soak: {ws} WebSocket + {tcp} TCP clients held {:.0} s; {} echo requests over the \
         first {:.0} s ({:.0}/s); churn {}/s (half TCP, half WebSocket)",
        args.hold,
        args.requests,
        window.as_secs_f64(),
        args.requests as f64 / window.as_secs_f64(),
        args.churn
    );

    // Every connection is a descriptor here and one in the server, which inherits our limit.
    let files = gotalk_cli::nofile::raise_open_file_limit();
    let need = (ws + tcp + churn_cap) as u64 + SPARE_FDS;
    ensure!(
        files >= need,
        "the open-file limit is {files}, too low for {ws} + {tcp} held and up to {churn_cap} churn \
         connections (need {need}); raise the hard limit (ulimit -Hn) or lower --ws, --tcp or \
         --churn"
    );
    if let Some(ports) = ephemeral_ports() {
        ensure!(
            (ws.max(tcp) as u64) < ports,
            "only {ports} ephemeral ports are configured (net.ipv4.ip_local_port_range); lower \
             --ws and --tcp"
        );
    }
    // The server's limits sit above the load: every held client comes from 127.0.0.1.
    let max_connections = ws.max(tcp) + churn_cap + 64;
    println!(
        "open-file limit {files} (need {need}); server limits raised above the load: \
         --max-connections {max_connections} --max-connections-per-addr {max_connections}; \
         heartbeats and liveness probes at their defaults on both sides"
    );
    if files < 2 * max_connections as u64 + 64 {
        println!(
            "(`gotalk serve` will warn that its open-file limit is under 2 x --max-connections: \
             that is both transports full; this load needs {need})"
        );
    }
    let limit = max_connections.to_string();
    let flags =
        ["--max-connections", &limit, "--max-connections-per-addr", &limit].map(String::from);
    let launcher: Vec<String> = match &args.server_cpus {
        Some(cpus) => vec!["taskset".into(), "-c".into(), cpus.clone()],
        None => Vec::new(),
    };
    let server = Gateway::spawn(&flags, &launcher).await?;
    run(args, server, window, hold).await
}

async fn run(
    args: &SoakArgs,
    server: Gateway,
    window: Duration,
    hold: Duration,
) -> anyhow::Result<Vec<String>> {
    let pid = server.pid.to_string();
    println!(
        "server pid {pid} on cpus {}, http {} (ws {}), tcp {}",
        proc_status_field(&pid, "Cpus_allowed_list:").unwrap_or_else(|| "?".into()),
        server.http,
        server.ws_url(),
        server.tcp
    );
    let handlers = Arc::new(Handlers::new());
    let ws_url = server.ws_url();
    let tcp_addr = server.tcp;
    let connect_ws = || {
        let (url, handlers) = (ws_url.clone(), handlers.clone());
        async move { gotalk::ws::connect(&url, handlers, client_config()).await }
    };
    let connect_tcp = || {
        let handlers = handlers.clone();
        async move { gotalk::tcp::connect(tcp_addr, handlers, client_config()).await }
    };
    // One connection of each kind first, closed again, so "before" is a server that has
    // served, not one never used.
    for sock in [connect_ws().await?, connect_tcp().await?] {
        sock.close();
        sock.closed().await;
    }
    let rss_before = settled_rss(&server).await;
    println!("server RSS with no client: {}", Mib(rss_before));

    let (ws_registry, tcp_registry) = (Connections::default(), Connections::default());
    let ws_socks = open_clients(args.ws as usize, "WebSocket", &ws_registry, connect_ws).await?;
    let tcp_socks = open_clients(args.tcp as usize, "TCP", &tcp_registry, connect_tcp).await?;
    let held = Held { ws: ws_socks, tcp: tcp_socks, ws_registry, tcp_registry };
    let n_held = held.ws.len() + held.tcp.len();
    let rss_open = settled_rss(&server).await;
    let per_conn_open = rss_open.saturating_sub(rss_before) as f64 / n_held.max(1) as f64;
    println!(
        "server RSS with {n_held} clients: {} ({per_conn_open:.0} B = {:.1} KiB per connection)",
        Mib(rss_open),
        per_conn_open / 1024.0
    );
    println!();

    let all: Arc<Vec<Sock>> = Arc::new(held.ws.iter().chain(&held.tcp).cloned().collect());
    let tally = Arc::new(Tally::new(args.requests));
    let request_errors = Arc::new(Errors::default());
    let churn_counts = Arc::new(Churn::default());
    let hold_start = Instant::now();
    let hold_end = hold_start + hold;
    let run = Run {
        server_cpu0: server.sample().cpu,
        client_cpu0: ProcSample::of("self").cpu,
        server,
        held,
        tally: tally.clone(),
        request_errors: request_errors.clone(),
        churn: churn_counts.clone(),
        hold_start,
        rss_before,
        hold_secs: args.hold,
        server_peak: AtomicU64::new(0),
    };
    let requests =
        tokio::spawn(pace_requests(all, tally.clone(), request_errors, hold_start, window));
    let churning = tokio::spawn(churn(
        args.churn,
        run.server.http,
        run.server.tcp,
        churn_counts,
        hold_start,
        hold_end,
    ));
    let every = Duration::from_secs_f64(args.report_every);
    let mut next = hold_start + every;
    while next < hold_end {
        tokio::time::sleep_until(next.into()).await;
        run.report("progress").await;
        next += every;
    }
    tokio::time::sleep_until(hold_end.into()).await;
    // The hold is over: what is still in flight may finish, nothing new starts.
    let _ = requests.await;
    let _ = churning.await;
    let last = run.report("end of the hold").await;
    let lost = tally.unanswered();
    run.held.close();
    run.server.stop().await;

    let verdict = |ok: bool| if ok { "ok" } else { "FAILED" };
    let c = last.counts;
    println!("== soak result");
    println!(
        "held connections: {} of {n_held} to the end ({} dropped): {}",
        n_held - last.dropped,
        last.dropped,
        verdict(last.dropped == 0)
    );
    println!(
        "requests: {} sent, {} answered, {lost} lost (bitmap: sent and not answered; {} of \
         them failed), {} duplicated: {}",
        c.sent,
        c.answered,
        c.failed,
        c.duplicated,
        verdict(lost == 0 && c.duplicated == 0 && c.sent == args.requests)
    );
    println!(
        "churn: {} connections in {:.0} s = {:.1}/s (asked {}/s), {} failed: {}",
        last.churn_done,
        last.elapsed,
        last.churn_done as f64 / last.elapsed.max(1e-9),
        args.churn,
        last.churn_failed,
        verdict(last.churn_failed == 0)
    );
    println!(
        "server: peak RSS {}, {per_conn_open:.0} B per connection when opened, {:.0} B at the \
         end; CPU {:.1} s in all, {:.1} % of a core over the hold; client {:.1} %",
        Mib(last.server.hwm),
        last.per_conn,
        last.server.cpu,
        last.server_cpu_percent,
        last.client_cpu_percent
    );
    println!();
    let summary = vec![format!(
        "soak: {} ws + {} tcp held {:.0} s, {} dropped; {} requests, {} answered, {lost} lost, \
         {} duplicated; churn {:.1}/s, {} failed; server peak RSS {} ({per_conn_open:.0} \
         B/connection), CPU {:.1} % of a core",
        args.ws,
        args.tcp,
        args.hold,
        last.dropped,
        c.sent,
        c.answered,
        c.duplicated,
        last.churn_done as f64 / last.elapsed.max(1e-9),
        last.churn_failed,
        Mib(last.server.hwm),
        last.server_cpu_percent
    )];
    ensure!(last.dropped == 0, "{} held connections dropped", last.dropped);
    ensure!(
        lost == 0 && c.duplicated == 0 && c.sent == args.requests,
        "{lost} requests lost and {} duplicated of {} sent ({} asked)",
        c.duplicated,
        c.sent,
        args.requests
    );
    ensure!(last.churn_failed == 0, "{} churn connections failed", last.churn_failed);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_answers_duplicates_and_losses() {
        let tally = Tally::new(130);
        let seqs: Vec<u64> = std::iter::from_fn(|| tally.next()).collect();
        assert_eq!(seqs, (0..130).collect::<Vec<_>>());
        assert_eq!(tally.next(), None, "no number past the capacity");
        assert_eq!(tally.counts().sent, 130);
        assert_eq!(tally.unanswered(), 130);

        for seq in 0..128 {
            assert_eq!(tally.answer(seq, &Tally::payload(seq)), Answer::Fresh);
        }
        // Seen twice, and another request's number.
        assert_eq!(tally.answer(5, &Tally::payload(5)), Answer::Duplicate);
        assert_eq!(tally.answer(128, &Tally::payload(7)), Answer::Mismatch);
        assert_eq!(tally.answer(128, b"short"), Answer::Mismatch);
        tally.fail(129);
        let counts = tally.counts();
        assert_eq!(counts.answered, 128);
        assert_eq!(counts.duplicated, 3);
        assert_eq!(counts.failed, 1);
        // 128 had two wrong answers and 129 failed: both are lost.
        assert_eq!(tally.unanswered(), 2);
        // 128's answers both count as done, so nothing is left in flight.
        assert_eq!(counts.in_flight, 0);
    }

    #[test]
    fn tally_counts_in_flight_and_partial_words() {
        let tally = Tally::new(1000);
        for _ in 0..70 {
            tally.next();
        }
        tally.answer(0, &Tally::payload(0));
        tally.answer(69, &Tally::payload(69));
        assert_eq!(tally.counts().in_flight, 68);
        assert_eq!(tally.unanswered(), 68);
        // A number never sent does not count, even if an answer claims it.
        assert_eq!(tally.answer(999, &Tally::payload(999)), Answer::Fresh);
        assert_eq!(tally.unanswered(), 68);
        assert_eq!(Tally::new(0).next(), None);
    }

    #[test]
    fn reads_cpu_time_from_proc_stat() {
        let stat = "1234 (gotalk (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    5 0 100 0 0";
        assert_eq!(stat_cpu_secs(stat), Some(3.0));
        assert_eq!(stat_cpu_secs("1234 (short) S 1"), None);
        let own = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
        assert!(stat_cpu_secs(&own).is_some());
    }

    #[test]
    fn churn_sources_are_loopback_and_spread() {
        assert_eq!(churn_source(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(churn_source(253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(churn_source(254), Ipv4Addr::new(127, 1, 1, 1));
        assert_eq!(churn_source(256 * 254), churn_source(0));
        let all: std::collections::HashSet<_> = (0..256 * 254).map(churn_source).collect();
        assert_eq!(all.len(), 256 * 254);
        assert!(all.iter().all(|a| a.is_loopback() && a.octets()[3] != 0 && a.octets()[3] != 255));
    }
}
