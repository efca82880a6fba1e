//! `--scenario go`: gotalk against the Go gotalk server and a raw echo (the ceiling), all three
//! loaded by the same neutral client (`neutral`), over TCP and WebSocket, on several shapes and
//! payloads.
//!
//! Each cell (transport, payload, connections × in flight) measures every server `runs` times,
//! the servers taking turns within each round, in an order that rotates from round to round,
//! so a slow patch of the machine falls on all of them. Every measurement gets a fresh server.
//! With two or more CPUs the servers run on one and the client on another (`--pin`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use tokio::task::JoinSet;

use super::neutral::{self, Expect, Framing};
use super::{
    cpu_probe, finish_run, median_f64, proc_status_field, Kind, Medians, Micros, OptMicros,
    RunResult, ServerChild, Shape, Transport, Window,
};

/// Options of the Go comparison.
#[derive(clap::Args, Debug)]
pub(crate) struct CompareArgs {
    /// Go comparison: the shapes, as CONNSxDEPTH (connections x requests in flight on each).
    #[arg(long, value_delimiter = ',', default_value = "1x1,100x1,1x64,16x16", value_parser = parse_shape)]
    shapes: Vec<(usize, usize)>,
    /// Go comparison: the payload sizes, in bytes.
    #[arg(long, value_delimiter = ',', default_value = "32,16384",
          value_parser = clap::value_parser!(u32).range(1..=(1 << 24)))]
    sizes: Vec<u32>,
    /// Go comparison: the transports.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "tcp,ws")]
    transports: Vec<Transport>,
    /// Go comparison: the servers, in the order of the first round.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "go,gotalk,ceiling")]
    servers: Vec<Server>,
    /// Go comparison: another build of this program whose gotalk server is measured beside
    /// this one's as `before` (add `before` to --servers), to compare a change side by side.
    #[arg(long)]
    before: Option<std::path::PathBuf>,
    /// Go comparison: also the resident memory each server (Go's and this gotalk's) holds per
    /// idle connection, with this many connections, opened through the handshake by the
    /// neutral client (0: not measured).
    #[arg(long, default_value_t = 0)]
    idle_conns: usize,
    /// Go comparison: only the idle memory (--idle-conns), no throughput.
    #[arg(long)]
    idle_only: bool,
    /// Go comparison: CPUs of the servers and of the client, as SERVER:CLIENT `taskset -c`
    /// lists, or `none`. Default: 0:1 when two CPUs are usable, else none.
    #[arg(long, value_parser = parse_pin)]
    pin: Option<Pin>,
}

fn parse_shape(s: &str) -> Result<(usize, usize), String> {
    let parsed = s.split_once('x').and_then(|(c, d)| Some((c.parse().ok()?, d.parse().ok()?)));
    match parsed {
        Some((conns, depth)) if (1..=10_000).contains(&conns) && (1..=65_536).contains(&depth) => {
            Ok((conns, depth))
        }
        _ => Err(format!("{s:?} is not CONNSxDEPTH (1-10000 x 1-65536)")),
    }
}

/// Where the servers and the client run.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pin {
    None,
    Cpus { server: String, client: String },
}

fn parse_pin(s: &str) -> Result<Pin, String> {
    if s == "none" {
        return Ok(Pin::None);
    }
    let cpu_list =
        |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit() || ",-".contains(c));
    match s.split_once(':') {
        Some((server, client)) if cpu_list(server) && cpu_list(client) => {
            Ok(Pin::Cpus { server: server.into(), client: client.into() })
        }
        _ => Err(format!("{s:?} is not SERVER:CLIENT (CPU lists such as 0:1) or none")),
    }
}

/// A server the comparison loads.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// The Go gotalk 1.3.7 server with an `echo` buffer handler and no limits.
    Go,
    /// This gotalk's server (over WebSocket, the gateway behind HTTP) with its default settings.
    Gotalk,
    /// A raw tokio echo (over WebSocket, tokio-tungstenite echoing each batch of messages with
    /// one flush): the same bytes back with no protocol work.
    Ceiling,
    /// The gotalk server of the build given with --before.
    Before,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Go => "go",
            Server::Gotalk => "gotalk",
            Server::Ceiling => "ceiling",
            Server::Before => "before",
        }
    }

    async fn start(
        self,
        transport: Transport,
        go: &std::path::Path,
        before: Option<&std::path::Path>,
        launcher: &[String],
    ) -> anyhow::Result<ServerChild> {
        let mut exe =
            std::env::current_exe().context("cannot find this program to start a server")?;
        if self == Server::Before {
            exe = before.context("`before` needs --before PATH")?.to_path_buf();
        }
        let arg = match transport {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        };
        let (program, args): (&std::path::Path, Vec<&str>) = match (self, transport) {
            (Server::Go, _) => (go, vec![arg]),
            (Server::Gotalk | Server::Before, _) => {
                (&exe, vec!["bench-server", "--kind", Kind::gotalk(transport).name(), "--defaults"])
            }
            (Server::Ceiling, Transport::Tcp) => {
                (&exe, vec!["bench-server", "--kind", Kind::Raw.name()])
            }
            (Server::Ceiling, Transport::Ws) => {
                (&exe, vec!["bench-server", "--kind", Kind::RawWsBatch.name()])
            }
        };
        ServerChild::start(launcher, program, &args).await
    }

    fn expect(self) -> Expect {
        match self {
            Server::Ceiling => Expect::Echo,
            Server::Go | Server::Gotalk | Server::Before => Expect::Result,
        }
    }
}

/// One cell's medians, per server.
struct Cell {
    transport: Transport,
    size: usize,
    conns: usize,
    depth: usize,
    results: Vec<(Server, Vec<RunResult>)>,
}

impl Cell {
    fn median(&self, server: Server) -> Option<f64> {
        let (_, runs) = self.results.iter().find(|(s, _)| *s == server)?;
        Some(median_f64(runs.iter().map(|r| r.rate).collect()))
    }

    /// (max - min) / median of a server's rates, as a percentage.
    fn spread(&self, server: Server) -> Option<f64> {
        let (_, runs) = self.results.iter().find(|(s, _)| *s == server)?;
        let rates = runs.iter().map(|r| r.rate);
        let (min, max) = rates.fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
        Some(100.0 * (max - min) / self.median(server)?)
    }

    /// The median server CPU time per round trip, in microseconds.
    fn cpu(&self, server: Server) -> Option<f64> {
        let (_, runs) = self.results.iter().find(|(s, _)| *s == server)?;
        Some(Medians::of(runs).server_cpu?.as_secs_f64() * 1e6)
    }

    fn ratio(&self, over: Server, under: Server) -> Option<f64> {
        Some(self.median(over)? / self.median(under)?)
    }

    /// The performance targets for this cell, as (what, met): at least 1.5x Go with several
    /// requests at once (connections or pipelining); with one request per connection, at
    /// least 0.9x the ceiling, or 0.7x for large payloads over TCP, which the ceiling moves
    /// without copying.
    fn targets(&self) -> Vec<(String, bool)> {
        let mut targets = Vec::new();
        if let Some(r) = self.ratio(Server::Gotalk, Server::Go) {
            if self.conns > 1 || self.depth > 1 {
                targets.push((format!("ours/Go {r:.2}x >= 1.5x"), r >= 1.5));
            }
        }
        if let Some(r) = self.ratio(Server::Gotalk, Server::Ceiling) {
            let large_tcp = self.transport == Transport::Tcp && self.size >= 16 * 1024;
            if large_tcp {
                targets.push((format!("ours/ceiling {r:.2}x >= 0.7x"), r >= 0.7));
            } else if self.depth == 1 {
                targets.push((format!("ours/ceiling {r:.2}x >= 0.9x"), r >= 0.9));
            }
        }
        targets
    }
}

struct Rate(Option<f64>);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) if r >= 10_000.0 => f.pad(&format!("{:.1}k", r / 1000.0)),
            Some(r) => f.pad(&format!("{r:.0}")),
            None => f.pad("-"),
        }
    }
}

struct Ratio(Option<f64>);

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(r) => f.pad(&format!("{r:.2}x")),
            None => f.pad("-"),
        }
    }
}

/// Runs the comparison; returns summary lines.
pub(super) async fn scenario(
    args: &CompareArgs,
    runs: usize,
    warmup: Duration,
    secs: Duration,
) -> anyhow::Result<Vec<String>> {
    ensure!(!args.servers.is_empty(), "--servers names no server");
    let go = if args.servers.contains(&Server::Go) {
        super::go::echo_server().context("cannot build the Go echo server")?
    } else {
        Default::default()
    };
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = match &args.pin {
        Some(pin) => pin.clone(),
        None if usable >= 2 => Pin::Cpus { server: "0".into(), client: "1".into() },
        None => Pin::None,
    };
    let launcher: Vec<String> = match &pin {
        Pin::None => Vec::new(),
        Pin::Cpus { server, client } => {
            // Every thread of this process, the runtime's workers included; threads started
            // later inherit it.
            let status = std::process::Command::new("taskset")
                .args(["-a", "-p", "-c", client, &std::process::id().to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .context("run taskset (util-linux) to pin the client")?;
            ensure!(status.success(), "taskset could not pin the client to CPUs {client}");
            vec!["taskset".into(), "-c".into(), server.clone()]
        }
    };
    print_machine(&pin, &go);
    let mut cells = Vec::new();
    for &transport in args.transports.iter().filter(|_| !args.idle_only) {
        for &size in &args.sizes {
            for &(conns, depth) in &args.shapes {
                let shape = Shape { conns, depth, size: size as usize, warmup, secs };
                let before = args.before.as_deref();
                let servers = &args.servers;
                cells.push(cell(&shape, transport, servers, runs, &go, before, &launcher).await?);
            }
        }
    }
    let mut summary = table(&cells, runs);
    if args.idle_conns > 0 {
        for &transport in &args.transports {
            for server in [Server::Go, Server::Gotalk] {
                if args.servers.contains(&server) {
                    let line = idle(server, transport, args.idle_conns, &go, &launcher).await?;
                    summary.push(line);
                }
            }
        }
    }
    Ok(summary)
}

/// The server's resident memory per idle connection: its growth from one connection (opened
/// and closed first, so the runtime and allocator have warmed up) to `n`, divided by `n`.
async fn idle(
    server: Server,
    transport: Transport,
    n: usize,
    go: &std::path::Path,
    launcher: &[String],
) -> anyhow::Result<String> {
    let limit = gotalk_cli::nofile::raise_open_file_limit();
    ensure!(limit >= n as u64 + 256, "the open-file limit {limit} is too low for {n} connections");
    let child = server.start(transport, go, None, launcher).await?;
    let framing = match transport {
        Transport::Tcp => Framing::Tcp,
        Transport::Ws => Framing::Ws,
    };
    let addr = child.addr;
    drop(neutral::connect(addr, framing).await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = super::settled_rss(&child).await?;
    let mut conns = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    while conns.len() < n {
        while conns.len() + pending.len() < n && pending.len() < 128 {
            pending.spawn(neutral::connect(addr, framing));
        }
        if let Some(conn) = pending.join_next().await {
            conns.push(conn.context("a connecting task panicked")??);
        }
    }
    let after = super::settled_rss(&child).await?;
    drop(conns);
    child.stop().await;
    let per = after.saturating_sub(before) as f64 / n as f64;
    let line = format!(
        "idle {} {}: {n} connections, RSS {} KiB before, {} KiB with them: {:.2} KiB per \
         connection",
        match transport {
            Transport::Tcp => "TCP",
            Transport::Ws => "WebSocket",
        },
        server.name(),
        before / 1024,
        after / 1024,
        per / 1024.0
    );
    println!("{line}");
    Ok(line)
}

/// What the figures were measured on.
fn print_machine(pin: &Pin, go: &std::path::Path) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':'])))
        .unwrap_or("?");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    println!("== gotalk against Go gotalk 1.3.7 and a raw echo, one neutral raw-gotalk client");
    println!("machine: {model}, CPUs {} online, Linux {}", online.trim(), kernel.trim());
    if !go.as_os_str().is_empty() {
        let version = std::process::Command::new("go").arg("version").output();
        let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        println!("go server: {} ({})", go.display(), version.unwrap_or_default());
    }
    match pin {
        Pin::None => println!("pinning: none (client and servers wherever the kernel puts them)"),
        Pin::Cpus { server, .. } => println!(
            "pinning: servers `taskset -c {server}`, client (this process, every thread) on CPUs \
             {}",
            proc_status_field("self", "Cpus_allowed_list:").unwrap_or_else(|| "?".into())
        ),
    }
    println!();
}

/// Measures one cell: `runs` rounds of every server, in turn.
async fn cell(
    shape: &Shape,
    transport: Transport,
    servers: &[Server],
    runs: usize,
    go: &std::path::Path,
    before: Option<&std::path::Path>,
    launcher: &[String],
) -> anyhow::Result<Cell> {
    let tname = match transport {
        Transport::Tcp => "TCP",
        Transport::Ws => "WebSocket",
    };
    println!(
        "== {tname}, {} B, {} connection(s) x {} in flight, {:.1} s per run after {:.1} s \
         warm-up, {runs} round(s)",
        shape.size,
        shape.conns,
        shape.depth,
        shape.secs.as_secs_f64(),
        shape.warmup.as_secs_f64()
    );
    println!(
        "{:<8} {:>4} {:>12} {:>11} {:>11} {:>10} {:>10}",
        "server", "run", "rt/s", "p50", "p99", "cli cpu/rt", "srv cpu/rt"
    );
    let mut results: Vec<(Server, Vec<RunResult>)> =
        servers.iter().map(|&s| (s, Vec::new())).collect();
    for run in 0..runs {
        for k in 0..servers.len() {
            let which = (k + run) % servers.len();
            let server = servers[which];
            let child = server.start(transport, go, before, launcher).await?;
            if run == 0 && k == 0 && !launcher.is_empty() {
                let pid = child.pid.to_string();
                let cpus = proc_status_field(&pid, "Cpus_allowed_list:");
                println!("(servers on CPUs {})", cpus.unwrap_or_else(|| "?".into()));
            }
            let result = measure(child.addr, child.pid, shape, transport, server.expect()).await;
            child.stop().await;
            let result =
                result.with_context(|| format!("{} run {} failed", server.name(), run + 1))?;
            println!(
                "{:<8} {:>4} {:>12.0} {:>11} {:>11} {:>10} {:>10}",
                server.name(),
                run + 1,
                result.rate,
                Micros(result.p50),
                Micros(result.p99),
                OptMicros(result.client_cpu),
                OptMicros(result.server_cpu),
            );
            results[which].1.push(result);
        }
    }
    let cell =
        Cell { transport, size: shape.size, conns: shape.conns, depth: shape.depth, results };
    println!("-- medians of {runs} run(s); spread = (max - min) / median");
    println!(
        "{:<8} {:>12} {:>7} {:>11} {:>11} {:>10} {:>10}",
        "server", "rt/s", "spread", "p50", "p99", "cli cpu/rt", "srv cpu/rt"
    );
    for (server, runs) in &cell.results {
        let m = Medians::of(runs);
        println!(
            "{:<8} {:>12.0} {:>6.1}% {:>11} {:>11} {:>10} {:>10}",
            server.name(),
            m.rate,
            cell.spread(*server).unwrap_or(0.0),
            Micros(m.p50),
            Micros(m.p99),
            OptMicros(m.client_cpu),
            OptMicros(m.server_cpu),
        );
    }
    println!(
        "ours/Go {}, ours/ceiling {}, Go/ceiling {}, ours/before {}",
        Ratio(cell.ratio(Server::Gotalk, Server::Go)),
        Ratio(cell.ratio(Server::Gotalk, Server::Ceiling)),
        Ratio(cell.ratio(Server::Go, Server::Ceiling)),
        Ratio(cell.ratio(Server::Gotalk, Server::Before)),
    );
    println!();
    Ok(cell)
}

/// One measurement: connects, keeps the load on for the warm-up and the window, and reads the
/// CPU both sides spent inside it. Runs on a single-threaded runtime of its own thread, so the
/// client's work is one thread's, whatever the rest of this program does.
async fn measure(
    addr: SocketAddr,
    pid: u32,
    shape: &Shape,
    transport: Transport,
    expect: Expect,
) -> anyhow::Result<RunResult> {
    let shape = *shape;
    let framing = match transport {
        Transport::Tcp => Framing::Tcp,
        Transport::Ws => Framing::Ws,
    };
    let run = move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let mut conns = Vec::with_capacity(shape.conns);
            for _ in 0..shape.conns {
                let conn =
                    tokio::time::timeout(Duration::from_secs(10), neutral::connect(addr, framing))
                        .await
                        .context("connecting took over 10 s")?
                        .context("cannot connect to the server")?;
                conns.push(conn);
            }
            let window = Window::after(shape.warmup, shape.secs);
            let cpu = cpu_probe(pid, window);
            let mut tasks = JoinSet::new();
            for conn in conns {
                tasks.spawn(neutral::pipeline(conn, shape.depth, shape.size, expect, window));
            }
            let latencies = super::collect(tasks).await?;
            finish_run(&shape, latencies, cpu).await
        })
    };
    tokio::task::spawn_blocking(run).await.context("the load thread panicked")?
}

/// The table of every cell, printed and returned as summary lines.
fn table(cells: &[Cell], runs: usize) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Go comparison, medians of {runs} run(s) (spread = (max - min) / median of each \
             server's runs):"
        ),
        "| transport, payload | shape | Go rt/s | ours | ceiling | ours/Go | ours/ceiling | \
         spread Go/ours/ceiling | server µs/rt Go/ours/ceiling | targets |"
            .to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    let mut missed = 0;
    let mut met = 0;
    for cell in cells {
        let tname = match cell.transport {
            Transport::Tcp => "TCP",
            Transport::Ws => "WebSocket",
        };
        let size = if cell.size >= 1024 && cell.size % 1024 == 0 {
            format!("{} KiB", cell.size / 1024)
        } else {
            format!("{} B", cell.size)
        };
        let spread = |s: Server| cell.spread(s).map_or("-".to_owned(), |p| format!("{p:.0}%"));
        let targets: Vec<String> = cell
            .targets()
            .into_iter()
            .map(|(what, ok)| {
                if ok {
                    met += 1;
                } else {
                    missed += 1;
                }
                format!("{what}: {}", if ok { "met" } else { "NOT met" })
            })
            .collect();
        let cpu = |s: Server| cell.cpu(s).map_or("-".to_owned(), |us| format!("{us:.1}"));
        lines.push(format!(
            "| {tname}, {size} | {} × {} | {} | {} | {} | {} | {} | {}/{}/{} | {}/{}/{} | {} |",
            cell.conns,
            cell.depth,
            Rate(cell.median(Server::Go)),
            Rate(cell.median(Server::Gotalk)),
            Rate(cell.median(Server::Ceiling)),
            Ratio(cell.ratio(Server::Gotalk, Server::Go)),
            Ratio(cell.ratio(Server::Gotalk, Server::Ceiling)),
            spread(Server::Go),
            spread(Server::Gotalk),
            spread(Server::Ceiling),
            cpu(Server::Go),
            cpu(Server::Gotalk),
            cpu(Server::Ceiling),
            if targets.is_empty() { "-".to_owned() } else { targets.join("; ") },
        ));
    }
    lines.push(format!("targets met: {met} of {}", met + missed));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_pins_parse_and_bad_ones_fail() {
        assert_eq!(parse_shape("100x1"), Ok((100, 1)));
        assert!(parse_shape("0x1").is_err() && parse_shape("1x").is_err());
        assert_eq!(parse_pin("none"), Ok(Pin::None));
        assert_eq!(parse_pin("0:1-3"), Ok(Pin::Cpus { server: "0".into(), client: "1-3".into() }));
        assert!(parse_pin("0").is_err() && parse_pin("a:1").is_err());
    }
}
