//! `gotalk-bench bench-crowd`: a crowd of Rust keepalive clients loading a server that is killed
//! and restarted under it, counting every request until each is answered or has failed.
//!
//! Half the clients use TCP and half WebSocket. Each sends `echo` requests one after another,
//! each carrying a sequence number unique in the crowd, and checks that the answer is its own
//! number. The crowd never decides when the server dies: whoever drives it (the e2e test, a
//! shell) writes `mark` on stdin just before killing the server, and the crowd measures each
//! client's reconnect from that instant. Closing stdin (or SIGTERM, ctrl-c) stops the load:
//! no new requests, every one still out is awaited (up to the wait limit and a margin), and
//! one JSON tally goes to stdout. `lost` counts requests that neither got an answer nor an
//! error by then, and must be 0; so must `duplicates` (a number answered twice) and
//! `mismatched` (an answer carrying another request's number).
//!
//! stdout is one JSON object a line: `{"event":"ready",…}` once every client has had an
//! answer, `{"event":"progress",…}` every half second, and `{"event":"tally",…}` at the end.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gotalk::keepalive::KeepAlive;
use gotalk::keepalive::{Builder, Event};
use gotalk::{Config, Error, Handlers};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::task::JoinSet;

/// Options of `gotalk-bench bench-crowd`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The server's TCP address (`host:port`).
    #[arg(long)]
    tcp: String,
    /// The server's WebSocket endpoint (`ws://host:port/gotalk/`).
    #[arg(long)]
    ws: String,
    /// Clients in all; even-numbered ones use TCP, odd ones WebSocket.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Pause between one client's requests, in milliseconds (0: back to back).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// How long a request may wait for a connection (the keepalive's wait timeout), seconds.
    #[arg(long, default_value_t = 20)]
    wait_secs: u64,
}

/// What the whole crowd counted.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    answered: AtomicU64,
    errored: Mutex<BTreeMap<&'static str, u64>>,
    duplicates: AtomicU64,
    mismatched: AtomicU64,
    /// Every sequence number answered so far, to find one answered twice.
    seen: Mutex<HashSet<u64>>,
}

impl Tally {
    fn errored(&self) -> u64 {
        lock(&self.errored).values().sum()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One client's progress around the mark.
#[derive(Default)]
struct Client {
    /// Connections the client had opened when the mark came (`u64::MAX` before it).
    connections_at_mark: AtomicU64,
    /// Milliseconds from the mark to the client's first connection after it.
    reconnected_ms: Mutex<Option<f64>>,
    /// An answer arrived on a connection opened after the mark.
    recovered: AtomicBool,
    /// At least one answer arrived at all.
    answered: AtomicBool,
}

/// A client of the crowd: its keepalive and its progress.
type Member = (KeepAlive, Arc<Client>);

/// The error kinds the tally distinguishes.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Closed(_) => "closed",
        Error::NoConnection(_) => "no connection",
        Error::TooManyWaiting(_) => "too many waiting",
        Error::Remote(_) => "remote",
        Error::Retry { .. } => "retry",
        _ => "other",
    }
}

/// Runs the crowd until stdin closes or a signal comes, then prints the tally.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    gotalk_cli::nofile::raise_open_file_limit();
    let tally = Arc::new(Tally::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let mark: Arc<Mutex<Option<Instant>>> = Arc::default();
    let handlers = Arc::new(Handlers::new());
    let mut clients = Vec::with_capacity(args.clients);
    let mut tasks = JoinSet::new();
    for i in 0..args.clients {
        let state =
            Arc::new(Client { connections_at_mark: AtomicU64::new(u64::MAX), ..Client::default() });
        let builder = if i % 2 == 0 {
            Builder::tcp(args.tcp.clone(), handlers.clone(), Config::default())
        } else {
            let connector = gotalk::ws::Connector::new();
            Builder::ws(connector, args.ws.clone(), handlers.clone(), Config::default())
        };
        let observed = (state.clone(), mark.clone());
        let keepalive = builder
            .wait_timeout(Duration::from_secs(args.wait_secs))
            .on_event(move |event| {
                let (state, mark) = &observed;
                if let Event::Connected { .. } = event {
                    if let Some(at) = *lock(mark) {
                        let mut first = lock(&state.reconnected_ms);
                        if first.is_none() {
                            *first = Some(at.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                }
            })
            .start();
        tasks.spawn(load(
            i as u64,
            keepalive.clone(),
            state.clone(),
            tally.clone(),
            stop.clone(),
            Duration::from_millis(args.interval_ms),
        ));
        clients.push((keepalive, state));
    }

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    let mut ready = false;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    loop {
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(line)) if line.trim() == "mark" => {
                    *lock(&mark) = Some(Instant::now());
                    for (keepalive, state) in &clients {
                        state.connections_at_mark.store(keepalive.connections(), Ordering::SeqCst);
                    }
                }
                Ok(Some(_)) => {}
                _ => break,
            },
            _ = progress.tick() => {
                let report = snapshot(&clients, &tally);
                if !ready && report["answered_clients"] == json!(clients.len()) {
                    ready = true;
                    println!("{}", json!({"event": "ready", "clients": clients.len()}));
                }
                println!("{}", json!({"event": "progress", "state": report}));
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }

    // Stop sending, then await every request still out: an answer, an error, or the limit.
    stop.cancel();
    let grace = Duration::from_secs(args.wait_secs + 10);
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_ok();
    let mut report = snapshot(&clients, &tally);
    let mut reconnect: Vec<f64> =
        clients.iter().filter_map(|(_, state)| *lock(&state.reconnected_ms)).collect();
    reconnect.sort_by(f64::total_cmp);
    let at = |q: f64| reconnect.get(((reconnect.len().max(1) - 1) as f64 * q) as usize).copied();
    report["event"] = json!("tally");
    report["lost"] = report["pending"].clone();
    report["drained"] = json!(drained);
    report["reconnect_ms"] = json!({
        "count": reconnect.len(),
        "min": at(0.0), "median": at(0.5), "p90": at(0.9), "max": at(1.0),
    });
    println!("{report}");
    for (keepalive, _) in &clients {
        keepalive.close();
    }
    let bad = report["lost"] != json!(0)
        || report["duplicates"] != json!(0)
        || report["mismatched"] != json!(0);
    anyhow::ensure!(!bad, "requests lost, duplicated or mismatched: {report}");
    Ok(())
}

/// The crowd's counts now.
fn snapshot(clients: &[Member], tally: &Tally) -> serde_json::Value {
    let sent = tally.sent.load(Ordering::SeqCst);
    let answered = tally.answered.load(Ordering::SeqCst);
    let errored = tally.errored();
    let count = |f: &dyn Fn(&Member) -> bool| clients.iter().filter(|c| f(c)).count();
    json!({
        "clients": clients.len(),
        "connected": count(&|(k, _)| k.is_connected()),
        "answered_clients": count(&|(_, s)| s.answered.load(Ordering::SeqCst)),
        "reconnected": count(&|(k, s)| k.connections() > s.connections_at_mark.load(Ordering::SeqCst)),
        "recovered": count(&|(_, s)| s.recovered.load(Ordering::SeqCst)),
        "sent": sent,
        "answered": answered,
        "errored": errored,
        "errors": *lock(&tally.errored),
        // Requests neither answered nor failed yet; in the tally, after the drain: lost.
        "pending": sent.saturating_sub(answered + errored),
        "duplicates": tally.duplicates.load(Ordering::SeqCst),
        "mismatched": tally.mismatched.load(Ordering::SeqCst),
    })
}

/// One client's load: `echo` with its next sequence number, until told to stop.
async fn load(
    index: u64,
    keepalive: KeepAlive,
    state: Arc<Client>,
    tally: Arc<Tally>,
    stop: tokio_util::sync::CancellationToken,
    interval: Duration,
) {
    // Sequence numbers unique in the crowd: the client's index in the high half.
    let mut n = index << 32;
    // Start spread over one interval, so the crowd does not send in lockstep.
    let offset = interval.mul_f64(rand::random::<f64>());
    tokio::select! {
        _ = tokio::time::sleep(offset) => {}
        _ = stop.cancelled() => return,
    }
    while !stop.is_cancelled() {
        n += 1;
        let seq = n;
        let connection = keepalive.connections();
        tally.sent.fetch_add(1, Ordering::SeqCst);
        match keepalive.buffer_request("echo", seq.to_string()).await {
            Ok(answer) => {
                tally.answered.fetch_add(1, Ordering::SeqCst);
                state.answered.store(true, Ordering::SeqCst);
                let echoed = std::str::from_utf8(&answer).ok().and_then(|s| s.parse::<u64>().ok());
                match echoed {
                    Some(got) if got == seq => {
                        if !lock(&tally.seen).insert(seq) {
                            tally.duplicates.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    _ => {
                        tally.mismatched.fetch_add(1, Ordering::SeqCst);
                    }
                }
                // Answered on a connection opened after the mark: this client is back.
                // Counted only for a request started once the new connection was up, so an
                // answer from the old server read late cannot pass for one from the new.
                if connection > state.connections_at_mark.load(Ordering::SeqCst) {
                    state.recovered.store(true, Ordering::SeqCst);
                }
            }
            Err(e) => {
                *lock(&tally.errored).entry(kind(&e)).or_default() += 1;
            }
        }
        if !interval.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
}
