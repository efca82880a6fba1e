//! A cluster for the browser tests, driven over stdin: a bus, N `gotalk-e2e serve` instances
//! on it and haproxy in front (see `gotalk_tests::cluster`).
//!
//! It prints one JSON line once everything is up:
//! `{"lb", "bus", "bus_kind", "bus_pid", "health", "instances": [{"url", "tcp", "pid", "log"}]}`,
//! then reads one command a line and answers each with one JSON line, `{"ok": true, …}` or
//! `{"ok": false, "error"}`:
//!
//! | command | does |
//! |---|---|
//! | `kill I` | SIGKILLs instance I (from 0) and waits for it to be gone |
//! | `start I` | starts instance I again on its ports; answers once it printed its addresses |
//! | `pause I`, `resume I` | SIGSTOP, SIGCONT |
//! | `bus-kill` | SIGKILLs the bus |
//! | `bus-restart` | starts the bus again on its port; answers once it answers |
//! | `bus-pause`, `bus-resume` | SIGSTOP, SIGCONT the bus |
//! | `backends` | haproxy's view: `{"backends": [{"addr", "status", "check", "up"}]}` |
//! | `quit` | stops everything and exits |
//!
//! Everything it started is killed when its stdin closes, on SIGTERM or SIGINT, and, through a
//! watchdog process, when it dies any other way (SIGKILL): it runs its work in a process group
//! of its own, which the watchdog kills once either process is gone.

#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use clap::Parser;
use gotalk_tests::cluster::{BusKind, Cluster, Options};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Set in the worker's environment: the process that started it.
const WORKER_OF: &str = "GOTALK_CLUSTER_FIXTURE_WORKER_OF";

#[derive(Parser, Debug)]
#[command(
    about = "A bus, gotalk-e2e serve instances on it and haproxy in front, driven over stdin"
)]
struct Args {
    /// The bus: redis, nats, or none (separate instances sharing nothing: not a cluster; only
    /// for checking this fixture).
    #[arg(long, default_value = "redis")]
    bus: String,
    /// How many instances.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// The server binary [default: gotalk-e2e next to this one].
    #[arg(long)]
    server: Option<PathBuf>,
    /// More `serve` flags for every instance (after `--`).
    #[arg(last = true)]
    serve_args: Vec<String>,
}

fn main() -> ExitCode {
    match std::env::var(WORKER_OF) {
        Ok(_) => worker(),
        Err(_) => supervise(),
    }
}

/// Runs the worker as a child in a process group of its own, with a watchdog that kills that
/// group once this process or the worker is gone, so nothing outlives either.
fn supervise() -> ExitCode {
    let me = std::process::id();
    let exe = std::env::current_exe().expect("this binary's path");
    let mut worker = match Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(WORKER_OF, me.to_string())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("gotalk-cluster-fixture: cannot start its worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let group = worker.id();
    // A process killed but not yet waited for by its parent is a zombie: alive for `kill -0`,
    // so the state in /proc is what tells.
    let script = format!(
        "alive() {{ s=$(cat /proc/$1/stat 2>/dev/null) || return 1; s=${{s##*) }}; \
         [ \"${{s%% *}}\" != Z ]; }}; \
         while alive {me} && alive {group}; do sleep 0.2; done; \
         kill -s KILL -- -{group} 2>/dev/null; exit 0"
    );
    let watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = watchdog {
        eprintln!("gotalk-cluster-fixture: cannot start its watchdog: {e}");
        let _ = worker.kill();
        return ExitCode::FAILURE;
    }
    match worker.wait() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn worker() -> ExitCode {
    let args = Args::parse();
    let bus = match args.bus.as_str() {
        "none" => None,
        other => match other.parse::<BusKind>() {
            Ok(kind) => Some(kind),
            Err(e) => {
                eprintln!("gotalk-cluster-fixture: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let binary = args.server.unwrap_or_else(|| {
        std::env::current_exe().expect("this binary's path").with_file_name("gotalk-e2e")
    });
    let options = Options { binary, bus, instances: args.instances, serve_args: args.serve_args };
    // One thread: every process is spawned from it, and it lives as long as the fixture.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(options));
    ExitCode::SUCCESS
}

async fn run(options: Options) {
    let mut cluster = Cluster::start(options).await;
    let mut out = tokio::io::stdout();
    say(&mut out, &describe(&cluster)).await;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Ok(Some(line)) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "quit" {
            say(&mut out, &json!({"ok": true})).await;
            break;
        }
        let started = Instant::now();
        let answer = match command(&mut cluster, line).await {
            Ok(mut value) => {
                value["ok"] = json!(true);
                value["ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
                value
            }
            Err(error) => json!({"ok": false, "error": error}),
        };
        say(&mut out, &answer).await;
    }
    drop(cluster);
}

async fn say(out: &mut tokio::io::Stdout, value: &Value) {
    let mut line = value.to_string();
    line.push('\n');
    // Whoever drives the fixture may be gone; the loop then ends on stdin closing.
    let _ = out.write_all(line.as_bytes()).await;
    let _ = out.flush().await;
}

fn describe(cluster: &Cluster) -> Value {
    let instances: Vec<Value> = cluster.instances.iter().map(describe_instance).collect();
    json!({
        "lb": cluster.url(),
        "bus": cluster.bus.as_ref().map(|b| b.url()),
        "bus_kind": cluster.bus.as_ref().map(|b| b.kind()),
        "bus_pid": cluster.bus.as_ref().map(|b| b.pid()),
        "health": cluster.health_path,
        "instances": instances,
    })
}

fn describe_instance(instance: &gotalk_tests::cluster::Instance) -> Value {
    json!({
        "url": instance.http_url(),
        "tcp": instance.tcp_addr(),
        "pid": instance.pid(),
        "log": instance.log(),
    })
}

async fn command(cluster: &mut Cluster, line: &str) -> Result<Value, String> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let index = |word: Option<&str>, count: usize| -> Result<usize, String> {
        let i: usize = word
            .ok_or(format!("{verb} needs an instance number"))?
            .parse()
            .map_err(|e| format!("{verb}: {e}"))?;
        if i < count {
            Ok(i)
        } else {
            Err(format!("{verb}: no instance {i} (there are {count})"))
        }
    };
    let count = cluster.instances.len();
    match verb {
        "kill" => {
            let i = index(words.next(), count)?;
            cluster.instances[i].kill().await;
            Ok(json!({"instance": describe_instance(&cluster.instances[i])}))
        }
        "start" => {
            let i = index(words.next(), count)?;
            cluster.instances[i].restart().await;
            Ok(json!({"instance": describe_instance(&cluster.instances[i])}))
        }
        "pause" | "resume" => {
            let i = index(words.next(), count)?;
            let instance = &cluster.instances[i];
            if !instance.is_running() {
                return Err(format!("{verb}: instance {i} is not running"));
            }
            if verb == "pause" {
                instance.pause();
            } else {
                instance.resume();
            }
            Ok(json!({"instance": describe_instance(instance)}))
        }
        "bus-kill" | "bus-restart" | "bus-pause" | "bus-resume" => {
            let bus = cluster.bus.as_mut().ok_or("this cluster has no bus")?;
            match verb {
                "bus-kill" => bus.kill(),
                "bus-restart" => bus.restart().await,
                "bus-pause" => bus.pause(),
                _ => bus.resume(),
            }
            Ok(json!({"bus": bus.url()}))
        }
        "backends" => {
            let backends: Vec<Value> = cluster
                .backends()
                .await
                .into_iter()
                .map(|b| {
                    json!({"addr": b.addr, "status": b.status, "check": b.check, "up": b.is_up()})
                })
                .collect();
            Ok(json!({"backends": backends}))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}
