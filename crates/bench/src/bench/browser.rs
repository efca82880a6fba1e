//! `gotalk-bench browser`: the browser client in Chromium against the original gotalk.js 1.2.1
//! and against a raw WebSocket echo, with no driver attached.
//!
//! A driver (Playwright, or anything on the DevTools protocol) is told about every WebSocket
//! frame, and pages ran 5–8× slower with one attached; so Chromium is started here as a plain
//! headless process on a URL, and the page POSTs its figures back to the server that served
//! it. That server runs in this process: the gateway (the embedded bundle, or `--bundle`, at
//! `/gotalk/`, with the benchmark's `echo` operation), the original gotalk.js at
//! `/original/gotalk.js`, the pages, `/results`, and on a port of its own the raw-ws-batch
//! echo of the other scenarios (tokio-tungstenite, no protocol work).
//!
//! Two measurements:
//! - Round trips per second (`browser.js`): one Chromium, one page, every client connected at
//!   once and measured one at a time, the order rotating from run to run, at 1 and at 64
//!   requests in flight.
//! - Time to the first answer (`browser-first.js`): for each client in turn, a fresh Chromium
//!   with an empty profile loads a page with nothing but the client's script and a script
//!   that calls `echo` at once; the time from navigation start to the answer is the cold
//!   figure, the same page reloaded in that browser (its HTTP cache warm) the warm one, and
//!   reloaded once more the hot one (Chromium makes V8's code cache for a script on its second
//!   load, and uses it from the third).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::post;
use gotalk_gateway::{Assets, Gateway};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::mpsc;

/// The round-trip page's script.
const PAGE_JS: &str = include_str!("browser.js");
/// The first-answer page's script.
const FIRST_JS: &str = include_str!("browser-first.js");
/// The first-answer page's visits, in order, in one browser.
const VISITS: [&str; 3] = ["cold", "warm", "hot"];
/// Requests in flight, per measurement.
const DEPTHS: [usize; 2] = [1, 64];
/// The targets: round trips/s of ours at least this many times gotalk.js's…
const TARGET_VS_GOTALKJS: f64 = 1.1;
/// …and at least this fraction of the raw echo's.
const TARGET_VS_RAW: f64 = 0.8;
/// What Chromium needs to run as root in a container, without reaching out to the network.
const CHROMIUM_FLAGS: [&str; 11] = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// Our browser client against gotalk.js 1.2.1 and a raw WebSocket echo, in Chromium.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Starts a server in this process (the gateway with the `echo` operation, the original gotalk.js, \
the benchmark pages, and a raw tokio-tungstenite echo on a port of its own), then Chromium \
headless with no driver attached, twice over: one browser measuring round trips/s of each \
client in turn, 1 and 64 requests in flight, the order rotating between runs; then, per \
--loads, a fresh browser per client timing navigation start to the first answer (cold), and \
again after a reload (warm) and another (hot), each --revisit-after after the answer. Pin it \
to one core (`taskset -c 0`): Chromium inherits the affinity.

Needs Chromium (`--chromium`, or $CHROMIUM, default /usr/bin/chromium) and the original \
gotalk.js in `--peers` (or $GOTALK_PEERS, default ../shared/peers beside the repository).")]
pub(crate) struct Args {
    /// Runs of each client at each depth; the table gives the median and the spread.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 2.0, value_parser = super::positive_secs)]
    secs: f64,
    /// Seconds of load before each run's measurement starts.
    #[arg(long, default_value_t = 0.5, value_parser = super::non_negative_secs)]
    warmup: f64,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    size: u32,
    /// Page loads per client for the time to the first answer (0: none).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    loads: u32,
    /// Seconds between a visit's answer and the next visit (the reload). A reload at once
    /// times, besides the visit, what the last one left running: V8 optimising the wasm on
    /// other threads, Chromium writing its caches (on one core, all of it in the way).
    #[arg(long, default_value_t = 1.0, value_parser = super::non_negative_secs)]
    revisit_after: f64,
    /// The Chromium binary.
    #[arg(long)]
    chromium: Option<PathBuf>,
    /// The folder holding gotalk-1.3.7/js/gotalk.js.
    #[arg(long)]
    peers: Option<PathBuf>,
    /// Serve our client from this folder (a build of scripts/build-client.sh) instead of the
    /// bundle embedded in the gateway.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Also measure the client in this folder, as `before`, to compare two builds side by side.
    #[arg(long)]
    before: Option<PathBuf>,
}

/// One measured client, as the pages name it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Client {
    Ours,
    Before,
    GotalkJs,
    Raw,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Ours => "ours",
            Client::Before => "before",
            Client::GotalkJs => "gotalkjs",
            Client::Raw => "raw",
        }
    }

    fn parse(name: &str) -> Option<Client> {
        [Client::Ours, Client::Before, Client::GotalkJs, Client::Raw]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// How the tables name it.
    fn label(self) -> &'static str {
        match self {
            Client::Ours => "ours",
            Client::Before => "ours (--before)",
            Client::GotalkJs => "gotalk.js 1.2.1",
            Client::Raw => "raw WebSocket",
        }
    }

    /// The script a page loads for it, and where its gateway is.
    fn script(self) -> Option<(&'static str, &'static str)> {
        match self {
            Client::Ours => Some(("/gotalk/gotalk.js", "/gotalk/")),
            Client::Before => Some(("/before/gotalk.js", "/before/")),
            Client::GotalkJs => Some(("/original/gotalk.js", "/gotalk/")),
            Client::Raw => None,
        }
    }
}

/// The server the pages talk to, and what they report.
struct Site {
    http: SocketAddr,
    raw: SocketAddr,
    results: mpsc::UnboundedReceiver<String>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    super::print_header();
    let chromium = args
        .chromium
        .clone()
        .or_else(|| std::env::var_os("CHROMIUM").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let version = std::process::Command::new(&chromium)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", chromium.display()))?;
    println!("browser: {}", String::from_utf8_lossy(&version.stdout).trim());
    println!("browser flags: {}", CHROMIUM_FLAGS.join(" "));
    let mut site = serve(&args).await?;

    let mut clients = vec![Client::Ours];
    if args.before.is_some() {
        clients.push(Client::Before);
    }
    clients.extend([Client::GotalkJs, Client::Raw]);
    let names: Vec<&str> = clients.iter().map(|c| c.name()).collect();
    let depths: Vec<String> = DEPTHS.iter().map(|d| d.to_string()).collect();
    let url = format!(
        "http://{}/bench.html?runs={}&secs={}&warmup={}&size={}&depths={}&clients={}&raw=ws://{}/",
        site.http,
        args.runs,
        args.secs,
        args.warmup,
        args.size,
        depths.join(","),
        names.join(","),
        site.raw,
    );
    let per_run = (args.secs + args.warmup + 1.0) * (DEPTHS.len() * clients.len()) as f64;
    let timeout = Duration::from_secs_f64(60.0 + per_run * f64::from(args.runs));
    let reports = browse(&chromium, &url, 1, timeout, &mut site.results).await?;
    let mut rps: BTreeMap<(usize, Client), Vec<f64>> = BTreeMap::new();
    for report in &reports {
        println!("browser agent: {}", report["agent"].as_str().unwrap_or("?"));
        for r in report["results"].as_array().context("no results in the report")? {
            let depth = r["depth"].as_u64().context("a result without depth")? as usize;
            let client =
                r["client"].as_str().and_then(Client::parse).context("a result's client")?;
            rps.entry((depth, client)).or_default().push(r["rps"].as_f64().unwrap_or(0.0));
        }
    }

    let mut first: BTreeMap<(&'static str, Client), Vec<Load>> = BTreeMap::new();
    for load in 0..args.loads {
        // Rotated like the runs, so no client always goes first.
        let gotalks: Vec<Client> =
            clients.iter().copied().filter(|c| c.script().is_some()).collect();
        for i in 0..gotalks.len() {
            let client = gotalks[(i + load as usize) % gotalks.len()];
            let url = format!("http://{}/first-{}.html", site.http, client.name());
            for report in browse(
                &chromium,
                &url,
                VISITS.len(),
                Duration::from_secs_f64(60.0 + 2.0 * args.revisit_after),
                &mut site.results,
            )
            .await?
            {
                let visit = VISITS
                    .into_iter()
                    .find(|&v| report["visit"] == v)
                    .context("a first answer without its visit")?;
                let at = |key: &str| report[key].as_f64().unwrap_or(f64::NAN);
                let load = Load {
                    ms: report["ms"].as_f64().context("a first answer without ms")?,
                    arrived: at("arrived"),
                    after: at("after"),
                    ran: at("ran"),
                    open: at("open"),
                    wasm: at("wasm"),
                    ready: at("ready"),
                };
                first.entry((visit, client)).or_default().push(load);
            }
        }
    }

    let summary = print_tables(&args, &clients, &rps, &first);
    println!();
    println!("== summary");
    for line in summary {
        println!("{line}");
    }
    Ok(())
}

/// One page load's first answer: ms from navigation start to the answer and to the client's
/// script's arrival, then the other moments in ms after that arrival (NaN where the client
/// has no such moment).
struct Load {
    ms: f64,
    /// The client's script arrived (from navigation start).
    arrived: f64,
    /// The answer.
    after: f64,
    /// The page's own script starts: the client's script has been run.
    ran: f64,
    /// The client's socket is open.
    open: f64,
    /// The wasm has downloaded (or come from the cache).
    wasm: f64,
    /// `gotalk.ready` settled: the wasm compiled, instantiated and started.
    ready: f64,
}

/// Starts the server on 127.0.0.1 ports the system picks.
async fn serve(args: &Args) -> anyhow::Result<Site> {
    let peers = args
        .peers
        .clone()
        .or_else(|| std::env::var_os("GOTALK_PEERS").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers"));
    let original = peers.join("gotalk-1.3.7/js/gotalk.js");
    let original = std::fs::read(&original)
        .with_context(|| format!("cannot read gotalk.js 1.2.1 at {}", original.display()))?;

    let gateway = |bundle: Option<&Path>| -> anyhow::Result<Gateway> {
        let gateway =
            Gateway::new(super::echo_handlers(), super::server_config()).limits(super::uncapped());
        Ok(match bundle {
            Some(dir) => gateway.assets(bundle_from(dir)?),
            None => gateway,
        })
    };
    let mut app =
        axum::Router::new().nest_service("/gotalk", gateway(args.bundle.as_deref())?.router());
    if let Some(dir) = &args.before {
        app = app.nest_service("/before", gateway(Some(dir))?.router());
    }

    let mut pages = Assets::new();
    pages.insert("bench.html", "<!doctype html><meta charset=\"utf-8\"><title>gotalk-bench browser</title><script src=\"/bench.js\"></script>\n");
    pages.insert("bench.js", PAGE_JS);
    pages.insert("original/gotalk.js", original);
    for client in [Client::Ours, Client::Before, Client::GotalkJs] {
        let Some((script, path)) = client.script() else { continue };
        let html = format!(
            "<!doctype html>\n<html data-client=\"{}\" data-script=\"{script}\" data-path=\"{path}\" data-size=\"{}\" data-revisit=\"{}\">\
             <meta charset=\"utf-8\"><title>first answer</title>\n\
             <script src=\"{script}\"></script>\n<script>\n{FIRST_JS}</script>\n",
            client.name(),
            args.size,
            (args.revisit_after * 1000.0).round(),
        );
        pages.insert(&format!("first-{}.html", client.name()), html);
    }

    let (tx, results) = mpsc::unbounded_channel();
    let app = app.merge(pages.into_router()).route(
        "/results",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                http::StatusCode::NO_CONTENT
            }
        }),
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind 127.0.0.1:0")?;
    let http = listener.local_addr()?;
    let server = gotalk_gateway::http::Server::new(app).limits(super::uncapped());
    tokio::spawn(server.run(listener, std::future::pending::<()>()));
    let listener = TcpListener::bind("127.0.0.1:0").await.context("cannot bind 127.0.0.1:0")?;
    let raw = listener.local_addr()?;
    tokio::spawn(super::serve_raw(listener, |stream| super::raw_ws_echo(stream, true)));
    Ok(Site { http, raw, results })
}

/// A client bundle from a folder: its gotalk.js and gotalk_bg.wasm.
fn bundle_from(dir: &Path) -> anyhow::Result<Assets> {
    let mut assets = Assets::new();
    for name in ["gotalk.js", "gotalk_bg.wasm"] {
        let path = dir.join(name);
        let body =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        assets.insert(name, body);
    }
    Ok(assets)
}

/// Starts a fresh Chromium (an empty profile) on `url`, waits for `expect` reports from its
/// pages, and stops it.
async fn browse(
    chromium: &Path,
    url: &str,
    expect: usize,
    timeout: Duration,
    results: &mut mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<Vec<Value>> {
    let profile = std::env::temp_dir().join(format!(
        "gotalk-bench-chromium-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
    ));
    std::fs::create_dir_all(&profile)?;
    let log = std::fs::File::create(profile.join("chromium.log"))?;
    let mut child = Command::new(chromium)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group, so its helper processes are stopped with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", chromium.display()))?;
    let pid = child.id().context("chromium exited at once")?;

    let mut reports = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let outcome = loop {
        if reports.len() == expect {
            break Ok(());
        }
        tokio::select! {
            body = results.recv() => {
                let Some(body) = body else { break Err(anyhow::anyhow!("the server stopped")) };
                let report: Value = serde_json::from_str(&body).context("a report that is not JSON")?;
                if report["kind"] == "error" {
                    break Err(anyhow::anyhow!("the page failed: {}", report["error"].as_str().unwrap_or("?")));
                }
                reports.push(report);
            }
            status = child.wait() => break Err(anyhow::anyhow!("chromium exited ({status:?}) before the page reported")),
            () = tokio::time::sleep_until(deadline) => break Err(anyhow::anyhow!("no report from {url} within {timeout:?}")),
        }
    };
    // The whole group: the browser's renderer, network and zygote processes too.
    let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().await;
    let _ = child.wait().await;
    if let Err(err) = outcome {
        let log = std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let _ = std::fs::remove_dir_all(&profile);
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(err.context(format!("chromium's last lines:\n{}", tail.join("\n"))));
    }
    let _ = std::fs::remove_dir_all(&profile);
    Ok(reports)
}

/// Min, median and max.
fn stats(values: &[f64]) -> (f64, f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, super::median_f64(values.to_vec()), max)
}

/// The median over runs of `f(ours, other)`, each pair measured in the same run (or page
/// load), so a machine that slows down for a while slows both sides of each pair.
fn paired(ours: &[f64], other: &[f64], f: impl Fn(f64, f64) -> f64) -> f64 {
    super::median_f64(ours.iter().zip(other).map(|(&o, &c)| f(o, c)).collect())
}

/// Prints both tables; returns the summary lines, one per target.
fn print_tables(
    args: &Args,
    clients: &[Client],
    rps: &BTreeMap<(usize, Client), Vec<f64>>,
    first: &BTreeMap<(&'static str, Client), Vec<Load>>,
) -> Vec<String> {
    let mut summary = Vec::new();
    println!();
    println!(
        "== browser round trips/s: {} B payloads, {} runs of {} s each, clients alternating",
        args.size, args.runs, args.secs
    );
    println!("| in flight | client | median rt/s | min – max | spread | ours / client, per run |");
    println!("|---|---|---|---|---|---|");
    for depth in DEPTHS {
        let ours = rps.get(&(depth, Client::Ours));
        for &client in clients {
            let Some(values) = rps.get(&(depth, client)) else { continue };
            let (min, mid, max) = stats(values);
            let ratio = ours
                .map_or(String::from("-"), |o| format!("{:.2}×", paired(o, values, |o, c| o / c)));
            println!(
                "| {depth} | {} | {mid:.0} | {min:.0} – {max:.0} | ±{:.0} % | {ratio} |",
                client.label(),
                (max - min) / 2.0 / mid * 100.0
            );
        }
        for (client, target) in
            [(Client::GotalkJs, TARGET_VS_GOTALKJS), (Client::Raw, TARGET_VS_RAW)]
        {
            if let (Some(o), Some(c)) = (ours, rps.get(&(depth, client))) {
                let ratio = paired(o, c, |o, c| o / c);
                summary.push(format!(
                    "browser, {depth} in flight: ours {ratio:.2}× {} (target {target}×): {}",
                    client.label(),
                    if ratio >= target { "met" } else { "not met" }
                ));
            }
        }
    }
    if first.is_empty() {
        return summary;
    }
    println!();
    println!(
        "== browser time to the first answer (ms from navigation start), {} loads per client, \
         each reloaded {} s after its answer",
        args.loads, args.revisit_after
    );
    println!(
        "| visit | client | median ms | min – max | client − ours, per load | after the script arrived |"
    );
    println!("|---|---|---|---|---|---|");
    let ms = |visit: &'static str, client: Client| {
        first.get(&(visit, client)).map(|v| v.iter().map(|l| l.ms).collect::<Vec<f64>>())
    };
    for visit in VISITS {
        let ours = ms(visit, Client::Ours);
        for &client in clients {
            let (Some(values), Some(loads)) = (ms(visit, client), first.get(&(visit, client)))
            else {
                continue;
            };
            let (min, mid, max) = stats(&values);
            let after: Vec<f64> = loads.iter().map(|l| l.after).collect();
            let diff = ours.as_ref().map_or(String::from("-"), |o| {
                format!("{:+.1} ms", paired(o, &values, |o, c| c - o))
            });
            println!(
                "| {visit} | {} | {mid:.1} | {min:.1} – {max:.1} | {diff} | {:.1} |",
                client.label(),
                stats(&after).1
            );
        }
        if let (Some(o), Some(g)) = (&ours, ms(visit, Client::GotalkJs)) {
            let later: Vec<f64> = o.iter().zip(&g).map(|(o, g)| o - g).collect();
            let (low, mid, high) = median_interval(&later);
            summary.push(format!(
                "browser, first answer ({visit}): ours {:.1} ms, gotalk.js {:.1} ms, ours {mid:+.1} \
                 ms per load (95 % interval {low:+.1} … {high:+.1}; target: no slower): {}",
                stats(o).1,
                stats(&g).1,
                if mid <= 0.0 {
                    "met"
                } else if low < 0.0 {
                    "level (not met, but the interval reaches below zero)"
                } else {
                    "not met"
                }
            ));
        }
    }
    print_wait(clients, first);
    summary
}

/// One moment of a load: its heading, and where a load holds it.
type Moment = (&'static str, fn(&Load) -> f64);

/// The moments of a load the wait table shows, in order.
const MOMENTS: [Moment; 7] = [
    ("script arrived (from navigation)", |l| l.arrived),
    ("script run", |l| l.ran),
    ("socket open", |l| l.open),
    ("wasm arrived", |l| l.wasm),
    ("client ready", |l| l.ready),
    ("answer", |l| l.after),
    ("answer (from navigation)", |l| l.ms),
];

/// Where each visit's wait goes, per client, and for ours against each other client the
/// median of the per-load differences at each moment: the row that says where a gap opens.
fn print_wait(clients: &[Client], first: &BTreeMap<(&'static str, Client), Vec<Load>>) {
    println!();
    println!(
        "== where the wait goes (ms after the client's script arrived, but for the first and \
         last columns; medians)"
    );
    let headings: Vec<&str> = MOMENTS.iter().map(|(h, _)| *h).collect();
    println!("| visit | client | {} |", headings.join(" | "));
    println!("|---|---|{}", "---|".repeat(MOMENTS.len()));
    let cell = |values: Vec<f64>, sign: bool| {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        match (values.is_empty(), sign) {
            (true, _) => String::from("-"),
            (false, false) => format!("{:.1}", stats(&values).1),
            (false, true) => format!("{:+.1}", stats(&values).1),
        }
    };
    for visit in VISITS {
        for &client in clients {
            let Some(loads) = first.get(&(visit, client)) else { continue };
            let cells: Vec<String> =
                MOMENTS.iter().map(|(_, f)| cell(loads.iter().map(f).collect(), false)).collect();
            println!("| {visit} | {} | {} |", client.label(), cells.join(" | "));
        }
        let Some(ours) = first.get(&(visit, Client::Ours)) else { continue };
        for &client in clients.iter().filter(|&&c| c != Client::Ours) {
            let Some(other) = first.get(&(visit, client)) else { continue };
            let cells: Vec<String> = MOMENTS
                .iter()
                .map(|(_, f)| {
                    cell(ours.iter().zip(other).map(|(o, c)| f(o) - f(c)).collect(), true)
                })
                .collect();
            let name = if client == Client::GotalkJs { "gotalk.js" } else { client.label() };
            println!("| {visit} | ours − {name}, per load | {} |", cells.join(" | "));
        }
    }
}

/// The median of `values` and a 95 % interval for it from their order statistics (the ranks
/// n/2 ± 0.98·√n, as for a sign test): wide when the loads disagree, so a verdict on a
/// median that could as well fall on the other side of zero can be read as such.
fn median_interval(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let half = n as f64 / 2.0;
    let reach = 0.98 * (n as f64).sqrt();
    let low = ((half - reach).floor().max(0.0) as usize).min(n - 1);
    let high = ((half + reach).ceil() as usize).min(n - 1);
    let (low, high) = (sorted[low], sorted[high]);
    (low, super::median_f64(sorted), high)
}

#[cfg(test)]
mod tests {
    use super::median_interval;

    #[test]
    fn the_median_interval_widens_with_few_values_and_narrows_with_many() {
        assert!(median_interval(&[]).1.is_nan());
        assert_eq!(median_interval(&[3.0]), (3.0, 3.0, 3.0));
        // Few values: the interval is all of them.
        assert_eq!(median_interval(&[4.0, 1.0, 3.0, 2.0]), (1.0, 2.5, 4.0));
        // 100 values 0..99: the ranks 40 and 60.
        let hundred: Vec<f64> = (0..100).rev().map(f64::from).collect();
        assert_eq!(median_interval(&hundred), (40.0, 49.5, 60.0));
    }
}
