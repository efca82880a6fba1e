//! `gotalk-bench cluster`: the relay and groups across `gotalk serve` instances on a real bus,
//! Redis and NATS, against the one-process bus, in one run.
//!
//! Every instance is a real process: this program started again as `cluster instance`, which
//! is `gotalk serve` (the same flags, `--redis` / `--nats` included, and the same allocator)
//! with two operations for the benchmark: `bench-join` puts the caller in the group `bench`,
//! `bench-publish` publishes its payload to that group as the notification `bench-fan`. The
//! buses are Debian's `redis-server` and `nats-server` on free ports, started by the test
//! harness (`gotalk_tests::servers`). The clients are `gotalk::tcp::connect` socks in this
//! process, so one clock times a message from its sender to its recipient.
//!
//! Three parts, each run `--runs` times with the configurations taking turns within a run:
//! - **relay**: `conns` pairs of peers; on each, `depth` tasks of the sender relay 256-byte
//!   bodies to the recipient in the acknowledged form (`Sock::relay`, answered once queued
//!   for the recipient), one after another. `local` is one process without a bus; `same` has
//!   both peers on one instance of the cluster, `cross` on two. msgs/s counts acknowledged
//!   messages; "ack" is the sender's wait for the answer, "delivery" the time from sending
//!   until the recipient's client has the message.
//! - **fan-out**: `--members` connections spread over three instances (one, without a bus)
//!   join one group; one publish at a time, timed until the last member has it; then
//!   publishes kept 8 at a time for `--secs` (publishes/s, each complete once every member
//!   has it), with the bus's own count of messages per publish (Redis `INFO commandstats`
//!   PUBLISH calls, NATS `/varz` messages in and out).
//! - **memory**: a fresh instance, on a freshly started bus, per run holds `--idle` idle gotalk TCP clients; its RSS
//!   growth per connection, without a bus, with `--redis` and with `--nats`, and what the bus
//!   grew by per connection (Redis `used_memory`, the NATS server's RSS): each connection has
//!   a relay id, so a channel of its own on the bus.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use bytes::Bytes;
use gotalk::relay::{Group, Inbox, Note};
use gotalk_tests::cluster::{Bus, BusKind};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{median_f64, print_header, proc_status_field, Window};

/// The group every fan-out member joins.
const GROUP: &str = "bench";
/// The notification a fan-out publish becomes.
const FAN: &str = "bench-fan";
/// Publishes not yet at every member, at most, in the sustained fan-out.
const FAN_WINDOW: usize = 8;
/// Instances in a cluster (the fan-out spreads its members over all of them).
const INSTANCES: usize = 3;
/// Connections being opened at once.
const CONNECT_CONCURRENCY: usize = 128;
/// Digits of the timestamp or sequence number at the start of a body.
const STAMP: usize = 20;

/// Relay and group figures across `gotalk serve` instances on Redis and NATS, against one
/// process.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Starts redis-server and nats-server on free ports (Debian's, as the cluster tests do), three \
instances on each bus and one without, all as processes of this program (`cluster instance`, \
which is `gotalk serve`). On a machine with few cores pin the whole run to one core, \
`taskset -c 0 gotalk-bench cluster`: the buses and instances inherit the affinity.")]
pub(crate) struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// The buses to measure, besides the one-process bus.
    #[arg(long, value_delimiter = ',', default_value = "redis,nats")]
    buses: Vec<BusKind>,
    /// The parts to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "relay,fanout,memory")]
    parts: Vec<Part>,
    /// Runs of each configuration; the tables give the median and the range.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Seconds measured per relay run and per sustained fan-out run.
    #[arg(long, default_value_t = 2.0, value_parser = super::positive_secs)]
    secs: f64,
    /// Seconds of relay load before each run's measurement starts.
    #[arg(long, default_value_t = 0.5, value_parser = super::non_negative_secs)]
    warmup: f64,
    /// Bytes of a relayed body (its JSON text) and of a published payload.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    size: u32,
    /// Members of the fan-out group.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    members: u32,
    /// Publishes timed one at a time per fan-out run.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    publishes: u32,
    /// Idle connections per memory run.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=16_000))]
    idle: u32,
}

#[derive(clap::Subcommand, Debug)]
enum Role {
    /// One instance: `gotalk serve` with the benchmark's group operations.
    #[command(hide = true)]
    Instance(Box<gotalk_cli::serve::Args>),
}

/// A part of the benchmark.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Relayed messages, same instance against cross instance.
    Relay,
    /// One publish to a group spread over three instances.
    Fanout,
    /// Memory per idle connection, with and without a bus.
    Memory,
}

/// Runs `gotalk-bench cluster`, or one of its instances.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(Role::Instance(serve)) = args.role {
        return serve_instance(*serve).await;
    }
    ensure!(
        !gotalk_tests::servers::skip_cluster_tests(),
        "GOTALK_CLUSTER_TESTS=skip: the cluster benchmark needs redis-server and nats-server"
    );
    print_header();
    print_machine();
    let size = args.size as usize;
    let mut buses = Vec::new();
    for &kind in &args.buses {
        buses.push(Bus::start(kind).await);
    }
    if args.parts.contains(&Part::Relay) || args.parts.contains(&Part::Fanout) {
        // The one-process instance, then three on each bus.
        let mut clusters = vec![("local".to_owned(), None, vec![Instance::start(None).await?])];
        for bus in &buses {
            let mut instances = Vec::new();
            for _ in 0..INSTANCES {
                instances.push(Instance::start(Some(bus)).await?);
            }
            clusters.push((bus_name(bus).to_owned(), Some(bus), instances));
        }
        if args.parts.contains(&Part::Relay) {
            relay_part(&args, &clusters, size).await?;
        }
        if args.parts.contains(&Part::Fanout) {
            fanout_part(&args, &clusters, size).await?;
        }
    }
    if args.parts.contains(&Part::Memory) {
        memory_part(&args, &mut buses).await?;
    }
    println!("load average at the end: {}", load_average());
    Ok(())
}

/// The machine's shape: CPU model and count, memory, load.
fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map_or("?".to_owned(), |m| m.trim().to_owned());
    let online = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let memory = proc_status_field_of("/proc/meminfo", "MemTotal:").unwrap_or_else(|| "?".into());
    println!("machine: {online} CPU(s) online, {model}, MemTotal {memory}");
    println!("load average at the start: {}", load_average());
    println!();
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn proc_status_field_of(path: &str, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)).map(|v| v.trim().to_owned())
}

fn bus_name(bus: &Bus) -> &'static str {
    match bus.kind() {
        BusKind::Redis => "redis",
        BusKind::Nats => "nats",
    }
}

// ---------------------------------------------------------------------------------------------
// The instances.

/// Serves one instance: `gotalk serve` as `serve` says, with `bench-join` and
/// `bench-publish`, until its stdin closes (the benchmark has gone) or it is killed.
async fn serve_instance(serve: gotalk_cli::serve::Args) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while let Ok(n) = std::io::Read::read(&mut stdin, &mut buf) {
            if n == 0 {
                break;
            }
        }
        std::process::exit(0);
    });
    let relay = serve.relay().await?;
    let group = Group::new(GROUP)?;
    let mut handlers = gotalk::Handlers::new();
    let (joins, group_of_joins) = (relay.clone(), group.clone());
    handlers.handle("bench-join", move |sock, (): ()| {
        let joined = joins.join(&sock, &group_of_joins, Bytes::new()).map_err(|e| e.to_string());
        async move { joined }
    });
    let publishes = relay.clone();
    handlers.handle_buffer("bench-publish", move |_sock, payload: Bytes| {
        let published = Note::new(FAN, payload)
            .map_err(|e| e.to_string())
            .and_then(|note| publishes.publish(&group, note).map_err(|e| format!("{e:?}")))
            .map(|()| Bytes::new());
        async move { published }
    });
    gotalk_cli::serve::run_with(serve, relay, handlers, None).await
}

/// An instance process.
struct Instance {
    child: Child,
    // Closing it tells the instance the benchmark has gone.
    _stdin: ChildStdin,
    tcp: SocketAddr,
    pid: u32,
}

impl Instance {
    /// Starts an instance on `bus` (none: the one-process bus) on free ports and reads its
    /// TCP address from its banner.
    async fn start(bus: Option<&Bus>) -> anyhow::Result<Instance> {
        let exe = std::env::current_exe().context("cannot find this program")?;
        let mut command = Command::new(exe);
        command.args(["cluster", "instance", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"]);
        // Every client comes from 127.0.0.1; the limits are above what the parts open.
        command.args(["--max-connections", "20000", "--max-connections-per-addr", "20000"]);
        command.args(["--request-limit", "4096"]);
        if let Some(bus) = bus {
            command.args([bus.flag().to_owned(), bus.url()]);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "error");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an instance")?;
        let pid = child.id().context("the instance exited at once")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let banner = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("gotalk tcp:") {
                    let addr = url.trim().trim_start_matches("tcp://");
                    return addr.parse::<SocketAddr>().with_context(|| format!("banner {line:?}"));
                }
            }
            bail!("the instance exited before printing its address")
        };
        let tcp = tokio::time::timeout(Duration::from_secs(15), banner)
            .await
            .context("the instance printed no address within 15 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Instance { child, _stdin: stdin, tcp, pid })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let field = proc_status_field(&pid.to_string(), "VmRSS:")
        .with_context(|| format!("no VmRSS for process {pid}"))?;
    let kib: u64 = field.trim_end_matches("kB").trim().parse().context("VmRSS")?;
    Ok(kib * 1024)
}

/// Resident memory once it stops changing: sampled every 250 ms until two samples agree
/// within 0.5 %, for at most 10 s.
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut last = rss(pid)?;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(pid)?;
        if now.abs_diff(last) * 200 <= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// Opens `n` gotalk TCP clients to `addr` with `handlers`, a bounded number at a time.
async fn connect_many(
    addr: SocketAddr,
    n: usize,
    handlers: Arc<gotalk::Handlers>,
    config: &gotalk::Config,
) -> anyhow::Result<Vec<gotalk::Sock>> {
    let mut socks = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    let mut started = 0;
    while socks.len() < n {
        while started < n && pending.len() < CONNECT_CONCURRENCY {
            let (handlers, config) = (handlers.clone(), config.clone());
            pending.spawn(async move { gotalk::tcp::connect(addr, handlers, config).await });
            started += 1;
        }
        match pending.join_next().await {
            Some(joined) => socks.push(joined.context("a connecting task panicked")??),
            None => break,
        }
    }
    Ok(socks)
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// The `p`th percentile of sorted nanoseconds, as a duration.
fn percentile(sorted: &[u64], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_nanos(sorted[(sorted.len() * p / 100).min(sorted.len() - 1)])
}

/// The median, least and greatest of several runs' figures.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread { median: median_f64(values.to_vec()), min, max }
    }
}

/// Milliseconds with two decimals, for the tables.
fn ms(d: f64) -> String {
    format!("{:.2}", d * 1e3)
}

// ---------------------------------------------------------------------------------------------
// Relay.

type Cluster<'a> = (String, Option<&'a Bus>, Vec<Instance>);

/// One relay configuration: the bus, where the recipients are, and the shape.
struct RelayCase<'a> {
    bus: &'a str,
    place: &'static str,
    from: SocketAddr,
    to: SocketAddr,
    conns: usize,
    depth: usize,
}

/// One relay run's figures, latencies in seconds.
#[derive(Clone, Copy, Default)]
struct RelayRun {
    rate: f64,
    ack_p50: f64,
    ack_p99: f64,
    delivery_p50: f64,
    delivery_p99: f64,
}

async fn relay_part(args: &Args, clusters: &[Cluster<'_>], size: usize) -> anyhow::Result<()> {
    let (warmup, secs) = (Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.secs));
    println!(
        "== relay, acknowledged (Sock::relay), {size}-byte bodies, {:.1} s per run after {:.1} s \
         of load, {} run(s); instances are `gotalk serve` processes",
        args.secs, args.warmup, args.runs
    );
    let mut cases = Vec::new();
    for (conns, depth) in [(1, 1), (16, 16)] {
        for (name, bus, instances) in clusters {
            let places: &[&'static str] =
                if bus.is_some() { &["same", "cross"] } else { &["local"] };
            for &place in places {
                let to = if place == "cross" { instances[1].tcp } else { instances[0].tcp };
                cases.push(RelayCase {
                    bus: name,
                    place,
                    from: instances[0].tcp,
                    to,
                    conns,
                    depth,
                });
            }
        }
    }
    let mut results: Vec<Vec<RelayRun>> = vec![Vec::new(); cases.len()];
    for run in 1..=args.runs {
        for (case, results) in cases.iter().zip(&mut results) {
            let result = relay_run(case, size, warmup, secs).await.with_context(|| {
                format!("relay {} {} {}x{} run {run}", case.bus, case.place, case.conns, case.depth)
            })?;
            println!(
                "run {run}: {:<5} {:<5} {:>2}x{:<2} {:>9.0} msg/s  ack p50 {} ms p99 {} ms  \
                 delivery p50 {} ms p99 {} ms",
                case.bus,
                case.place,
                case.conns,
                case.depth,
                result.rate,
                ms(result.ack_p50),
                ms(result.ack_p99),
                ms(result.delivery_p50),
                ms(result.delivery_p99)
            );
            results.push(result);
        }
    }
    println!();
    println!(
        "| bus | peers | conns × depth | msgs/s (median) | min – max | ack p50 ms | ack p99 ms | \
         delivery p50 ms | delivery p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (case, runs) in cases.iter().zip(&results) {
        let pick = |f: fn(&RelayRun) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
        let rate = pick(|r| r.rate);
        println!(
            "| {} | {} | {} × {} | {:.0} | {:.0} – {:.0} | {} | {} | {} | {} |",
            case.bus,
            case.place,
            case.conns,
            case.depth,
            rate.median,
            rate.min,
            rate.max,
            ms(pick(|r| r.ack_p50).median),
            ms(pick(|r| r.ack_p99).median),
            ms(pick(|r| r.delivery_p50).median),
            ms(pick(|r| r.delivery_p99).median),
        );
    }
    println!();
    Ok(())
}

/// `conns` pairs, sender on `from` and recipient on `to`; `depth` tasks per sender relay one
/// message after another until the window ends. Each body starts with the nanoseconds since
/// `base` at sending, so the recipient can time it.
async fn relay_run(
    case: &RelayCase<'_>,
    size: usize,
    warmup: Duration,
    secs: Duration,
) -> anyhow::Result<RelayRun> {
    let config = gotalk::Config::default().heartbeat_interval(None);
    let sender_handlers = Arc::new(gotalk::Handlers::new());
    let (mut pairs, mut streams) = (Vec::new(), Vec::new());
    for _ in 0..case.conns {
        let inbox = Inbox::new();
        // Deliveries are read as they come; the queue only absorbs a burst.
        inbox.queue(1 << 16);
        let mut handlers = gotalk::Handlers::new();
        inbox.install(&mut handlers);
        streams.push(inbox.topic("b"));
        let recipient = gotalk::tcp::connect(case.to, Arc::new(handlers), config.clone())
            .await
            .context("connect a recipient")?;
        // Known once it is reachable across the cluster.
        let id = inbox.id().await;
        let sender = gotalk::tcp::connect(case.from, sender_handlers.clone(), config.clone())
            .await
            .context("connect a sender")?;
        pairs.push((sender, recipient, id));
    }
    let base = Instant::now();
    let window = Window::after(warmup, secs);
    let pad = "x".repeat(size.saturating_sub(2 + STAMP));
    let mut senders = JoinSet::new();
    let mut recipients = JoinSet::new();
    for ((sender, _, id), mut messages) in pairs.iter().zip(streams) {
        let id = *id;
        recipients.spawn(async move {
            let mut latencies = Vec::new();
            // Long enough for the last messages sent in the window to arrive.
            let until = window.end + Duration::from_millis(300);
            while let Ok(Some(message)) =
                tokio::time::timeout_at(until.into(), messages.recv()).await
            {
                let done = Instant::now();
                let stamp = message.body.get(1..=STAMP).context("a short body")?;
                let nanos: u64 = std::str::from_utf8(stamp)?.parse().context("a body's stamp")?;
                window.record(&mut latencies, base + Duration::from_nanos(nanos), done);
            }
            Ok::<_, anyhow::Error>(latencies)
        });
        for _ in 0..case.depth {
            let (sender, pad) = (sender.clone(), pad.clone());
            senders.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= window.end {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let nanos = sent.duration_since(base).as_nanos();
                    let body = format!("{nanos:0STAMP$}{pad}");
                    sender.relay(id, "b", &body).await?;
                    window.record(&mut latencies, sent, Instant::now());
                }
            });
        }
    }
    let mut acks = super::collect(senders).await?;
    let mut deliveries = super::collect(recipients).await?;
    for (sender, recipient, ..) in &pairs {
        sender.close();
        recipient.close();
    }
    ensure!(!acks.is_empty(), "no message was acknowledged within the window");
    ensure!(!deliveries.is_empty(), "no message was delivered within the window");
    acks.sort_unstable();
    deliveries.sort_unstable();
    let secs_of = |p: usize, v: &[u64]| percentile(v, p).as_secs_f64();
    Ok(RelayRun {
        rate: acks.len() as f64 / secs.as_secs_f64(),
        ack_p50: secs_of(50, &acks),
        ack_p99: secs_of(99, &acks),
        delivery_p50: secs_of(50, &deliveries),
        delivery_p99: secs_of(99, &deliveries),
    })
}

// ---------------------------------------------------------------------------------------------
// Fan-out.

/// One fan-out run's figures, latencies in seconds.
#[derive(Clone, Copy, Default)]
struct FanRun {
    p50: f64,
    p99: f64,
    rate: f64,
    /// Bus messages in (published into the bus) and out (handed to subscribers) per publish;
    /// Redis counts only the first.
    bus_in: Option<f64>,
    bus_out: Option<f64>,
}

async fn fanout_part(args: &Args, clusters: &[Cluster<'_>], size: usize) -> anyhow::Result<()> {
    let members = args.members as usize;
    println!(
        "== group fan-out: {members} members over the instances, {size}-byte payloads; {} \
         publishes timed one at a time, then {FAN_WINDOW} at a time for {:.1} s; {} run(s)",
        args.publishes, args.secs, args.runs
    );
    let mut results: Vec<Vec<FanRun>> = vec![Vec::new(); clusters.len()];
    for run in 1..=args.runs {
        for ((name, bus, instances), results) in clusters.iter().zip(&mut results) {
            let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.tcp).collect();
            let result = fanout_run(&addrs, *bus, members, args, size)
                .await
                .with_context(|| format!("fan-out {name} run {run}"))?;
            println!(
                "run {run}: {name:<5} last member p50 {} ms p99 {} ms, {:.0} publishes/s, bus \
                 msgs/publish in {} out {}",
                ms(result.p50),
                ms(result.p99),
                result.rate,
                result.bus_in.map_or("-".into(), |v| format!("{v:.2}")),
                result.bus_out.map_or("-".into(), |v| format!("{v:.2}")),
            );
            results.push(result);
        }
    }
    println!();
    println!(
        "| bus | members × instances | last member p50 ms | last member p99 ms | publishes/s \
         (median) | min – max | deliveries/s | bus msgs in / out per publish |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((name, _, instances), runs) in clusters.iter().zip(&results) {
        let pick = |f: fn(&FanRun) -> f64| Spread::of(&runs.iter().map(f).collect::<Vec<_>>());
        let rate = pick(|r| r.rate);
        let counted = |f: fn(&FanRun) -> Option<f64>| {
            let values: Option<Vec<f64>> = runs.iter().map(f).collect();
            values.map_or("-".into(), |v| format!("{:.2}", Spread::of(&v).median))
        };
        println!(
            "| {name} | {members} × {} | {} | {} | {:.0} | {:.0} – {:.0} | {:.0} | {} / {} |",
            instances.len(),
            ms(pick(|r| r.p50).median),
            ms(pick(|r| r.p99).median),
            rate.median,
            rate.min,
            rate.max,
            rate.median * members as f64,
            counted(|r| r.bus_in),
            counted(|r| r.bus_out),
        );
    }
    println!();
    Ok(())
}

/// Counts each publish's arrivals; sends (sequence number, time of the last arrival) once
/// every member has it.
fn collector(
    members: usize,
    mut arrivals: mpsc::UnboundedReceiver<(u64, Instant)>,
) -> mpsc::UnboundedReceiver<(u64, Instant)> {
    let (done, complete) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        while let Some((seq, at)) = arrivals.recv().await {
            let count = counts.entry(seq).or_default();
            *count += 1;
            if *count == members {
                counts.remove(&seq);
                if done.send((seq, at)).is_err() {
                    return;
                }
            }
        }
    });
    complete
}

async fn fanout_run(
    addrs: &[SocketAddr],
    bus: Option<&Bus>,
    members: usize,
    args: &Args,
    size: usize,
) -> anyhow::Result<FanRun> {
    let config = gotalk::Config::default().heartbeat_interval(None);
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let mut complete = collector(members, arrivals);
    let mut handlers = gotalk::Handlers::new();
    handlers.handle_buffer_notification(FAN, move |_sock, payload: Bytes| {
        let at = Instant::now();
        let seq = payload.get(..STAMP).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
        if let Some(seq) = seq {
            let _ = arrived.send((seq, at));
        }
        std::future::ready(())
    });
    let handlers = Arc::new(handlers);
    let mut socks = Vec::with_capacity(members);
    for (i, &addr) in addrs.iter().enumerate() {
        let share = members / addrs.len() + usize::from(i < members % addrs.len());
        socks.extend(connect_many(addr, share, handlers.clone(), &config).await?);
    }
    let mut joins = JoinSet::new();
    for sock in &socks {
        let sock = sock.clone();
        joins.spawn(async move { sock.request::<(), ()>("bench-join", &()).await });
    }
    while let Some(joined) = joins.join_next().await {
        joined.context("a join panicked")?.context("bench-join")?;
    }
    let publisher =
        gotalk::tcp::connect(addrs[0], Arc::new(gotalk::Handlers::new()), config.clone()).await?;
    let pad = "x".repeat(size.saturating_sub(STAMP));
    let mut seq = 0u64;
    let mut publish = |publisher: gotalk::Sock| {
        seq += 1;
        let payload = Bytes::from(format!("{seq:0STAMP$}{pad}"));
        (seq, async move { publisher.buffer_request("bench-publish", payload).await })
    };
    // Until every instance has subscribed the group's channel: a publish reaches everyone.
    let ready = async {
        loop {
            let (_, published) = publish(publisher.clone());
            published.await?;
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(200), complete.recv()).await
            {
                return Ok::<_, anyhow::Error>(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), ready)
        .await
        .context("a publish did not reach every member within 20 s")??;
    // Stragglers of the warm-up, so the timed publishes see only their own completions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while complete.try_recv().is_ok() {}

    let mut latencies = Vec::with_capacity(args.publishes as usize);
    for _ in 0..args.publishes {
        let (seq, published) = publish(publisher.clone());
        let sent = Instant::now();
        published.await?;
        let last = completion(seq, &mut complete).await?;
        latencies.push(u64::try_from(last.duration_since(sent).as_nanos()).unwrap_or(u64::MAX));
    }
    latencies.sort_unstable();

    let before = bus_counts(bus).await;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.secs);
    let (mut outstanding, mut issued, mut last) = (0usize, 0u64, start);
    loop {
        while outstanding < FAN_WINDOW && Instant::now() < end {
            publish(publisher.clone()).1.await?;
            outstanding += 1;
            issued += 1;
        }
        if outstanding == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(10), complete.recv()).await {
            Ok(Some((_, at))) => {
                outstanding -= 1;
                last = at;
            }
            _ => bail!("{outstanding} publishes did not reach every member within 10 s"),
        }
    }
    let after = bus_counts(bus).await;
    let per_publish = |f: fn(&BusCounts) -> Option<u64>| {
        let (b, a) = (before.as_ref().and_then(f)?, after.as_ref().and_then(f)?);
        Some(a.saturating_sub(b) as f64 / issued as f64)
    };
    for sock in socks.iter().chain([&publisher]) {
        sock.close();
    }
    Ok(FanRun {
        p50: percentile(&latencies, 50).as_secs_f64(),
        p99: percentile(&latencies, 99).as_secs_f64(),
        rate: issued as f64 / last.duration_since(start).as_secs_f64(),
        bus_in: per_publish(|c| c.into),
        bus_out: per_publish(|c| c.out),
    })
}

/// When publish `want` reached its last member; completions of other publishes are skipped.
async fn completion(
    want: u64,
    complete: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
) -> anyhow::Result<Instant> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), complete.recv()).await {
            Ok(Some((seq, at))) if seq == want => return Ok(at),
            Ok(Some(_)) => {}
            Ok(None) => bail!("the collector stopped"),
            Err(_) => bail!("publish {want} did not reach every member within 10 s"),
        }
    }
}

/// What a bus says it has carried so far.
struct BusCounts {
    into: Option<u64>,
    out: Option<u64>,
}

async fn bus_counts(bus: Option<&Bus>) -> Option<BusCounts> {
    match bus? {
        Bus::Redis(redis) => {
            let stats = redis_info(redis.port(), "commandstats").await.ok()?;
            // PUBLISH and SPUBLISH calls: every message into the bus.
            let calls = stats
                .lines()
                .filter(|l| l.starts_with("cmdstat_publish:") || l.starts_with("cmdstat_spublish:"))
                .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
                .sum();
            Some(BusCounts { into: Some(calls), out: None })
        }
        Bus::Nats(nats) => {
            let varz = nats_varz(nats).await.ok()?;
            let count = |key: &str| varz.get(key).and_then(serde_json::Value::as_u64);
            Some(BusCounts { into: count("in_msgs"), out: count("out_msgs") })
        }
    }
}

/// `INFO section` through `redis-cli`, which comes with `redis-server`.
async fn redis_info(port: u16, section: &str) -> anyhow::Result<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "INFO", section])
        .output()
        .await
        .context("run redis-cli")?;
    ensure!(output.status.success(), "redis-cli INFO {section}: {}", output.status);
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn nats_varz(nats: &gotalk_tests::servers::Nats) -> anyhow::Result<serde_json::Value> {
    let monitor = nats.monitor_url();
    let addr = monitor.trim_start_matches("http://").trim_end_matches('/');
    let response =
        gotalk_tests::cluster::http_get(addr, "/varz").await.map_err(anyhow::Error::msg)?;
    let body = response.split("\r\n\r\n").nth(1).context("no body in /varz")?;
    Ok(serde_json::from_str(body)?)
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// One memory run: the instance's and the bus's growth per connection, in bytes.
#[derive(Clone, Copy)]
struct MemoryRun {
    instance: f64,
    bus: Option<f64>,
}

async fn memory_part(args: &Args, buses: &mut [Bus]) -> anyhow::Result<()> {
    let n = args.idle as usize;
    let limit = gotalk_cli::nofile::raise_open_file_limit();
    ensure!(
        limit >= n as u64 + 256,
        "the open-file limit is {limit}, too low for {n} connections; lower --idle"
    );
    println!(
        "== memory: {n} idle gotalk TCP clients (relay ids, default heartbeats) on a fresh \
         `gotalk serve` instance per run; {} run(s)",
        args.runs
    );
    let mut results: Vec<Vec<MemoryRun>> = vec![Vec::new(); buses.len() + 1];
    for run in 1..=args.runs {
        for (k, results) in results.iter_mut().enumerate() {
            // A fresh bus each run: a Go server keeps the memory it freed, so the NATS
            // server's RSS grows only the first time.
            let bus = match k.checked_sub(1) {
                Some(b) => {
                    buses[b].restart().await;
                    Some(&buses[b])
                }
                None => None,
            };
            let name = bus.map_or("none", bus_name);
            let result =
                memory_run(bus, n).await.with_context(|| format!("memory {name} run {run}"))?;
            println!(
                "run {run}: {name:<5} instance {:.0} bytes/connection, bus {}",
                result.instance,
                result.bus.map_or("-".into(), |b| format!("{b:.0} bytes/connection"))
            );
            results.push(result);
        }
    }
    println!();
    println!(
        "| bus | connections | instance RSS bytes/conn (median) | min – max | bus bytes/conn \
         (median) | min – max |"
    );
    println!("|---|---|---|---|---|---|");
    let configs: Vec<Option<&Bus>> = std::iter::once(None).chain(buses.iter().map(Some)).collect();
    for (bus, runs) in configs.iter().zip(&results) {
        let instance = Spread::of(&runs.iter().map(|r| r.instance).collect::<Vec<_>>());
        let grown: Option<Vec<f64>> = runs.iter().map(|r| r.bus).collect();
        let (bus_median, bus_range) = match (bus, grown) {
            (Some(bus), Some(v)) => {
                let s = Spread::of(&v);
                let what = match bus.kind() {
                    BusKind::Redis => "used_memory",
                    BusKind::Nats => "nats-server RSS",
                };
                (format!("{:.0} ({what})", s.median), format!("{:.0} – {:.0}", s.min, s.max))
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {n} | {:.0} | {:.0} – {:.0} | {bus_median} | {bus_range} |",
            bus.map_or("none", bus_name),
            instance.median,
            instance.min,
            instance.max,
        );
    }
    println!();
    Ok(())
}

async fn memory_run(bus: Option<&Bus>, n: usize) -> anyhow::Result<MemoryRun> {
    let instance = Instance::start(bus).await?;
    let handlers = Arc::new(gotalk::Handlers::new());
    let config = gotalk::Config::default();
    // One connection first and closed again, so "before" is a server that has served one.
    for sock in connect_many(instance.tcp, 1, handlers.clone(), &config).await? {
        sock.close();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(instance.pid)?;
    let bus_before = bus_memory(bus).await?;
    let socks = connect_many(instance.tcp, n, handlers, &config).await?;
    let after = settled_rss(instance.pid).await?;
    let bus_after = bus_memory(bus).await?;
    for sock in &socks {
        sock.close();
    }
    instance.stop().await;
    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / n as f64;
    Ok(MemoryRun {
        instance: per(before, after),
        bus: bus_before.zip(bus_after).map(|(b, a)| per(b, a)),
    })
}

/// Redis's `used_memory`, or the NATS server's RSS.
async fn bus_memory(bus: Option<&Bus>) -> anyhow::Result<Option<u64>> {
    match bus {
        None => Ok(None),
        Some(Bus::Redis(redis)) => {
            let info = redis_info(redis.port(), "memory").await?;
            let used = info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .context("no used_memory in INFO memory")?;
            Ok(Some(used.trim().parse()?))
        }
        Some(Bus::Nats(nats)) => {
            // Settled too: the server takes the subscriptions as they come.
            Ok(Some(settled_rss(nats.pid()).await?))
        }
    }
}
