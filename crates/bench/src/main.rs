//! `gotalk-bench`: throughput, latency and memory of gotalk against raw baselines, and the
//! soak, crowd and hostile-peer scenarios.
//!
//! `gotalk-bench [OPTIONS]` runs the benchmark (`--scenario` picks one); `gotalk-bench
//! browser` measures the browser client in Chromium. The hidden
//! subcommands are the processes it starts: `bench-server` (a server to measure), `serve`
//! (`gotalk serve` with the fixture operations, for the soak and hostile scenarios) and
//! `bench-crowd` (keepalive clients loading a server that is killed under them, driven by
//! `e2e/tests/kill.spec.ts`).

#![forbid(unsafe_code)]

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The allocator `gotalk` ships with, so what the scenarios measure holds for it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Measures requests/s, latency and memory per connection against a raw baseline.
#[derive(Parser, Debug)]
#[command(name = "gotalk-bench", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: bench::Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Our browser client against gotalk.js 1.2.1 and a raw WebSocket echo, in Chromium
    /// with no driver attached.
    Browser(bench::browser::Args),
    /// The relay and groups across `gotalk serve` instances on Redis and NATS, against one
    /// process: relayed msgs/s and latency, group fan-out, memory per connection.
    Cluster(bench::cluster::Args),
    /// Rust keepalive clients loading a server that is killed and restarted under them,
    /// counting every request (driven by `e2e/tests/kill.spec.ts`).
    #[command(hide = true)]
    BenchCrowd(bench::crowd::Args),
    /// A server for the benchmark to measure, in a process of its own.
    #[command(hide = true)]
    BenchServer {
        /// `gotalk`, `raw`, `gotalk-ws` or `raw-ws`.
        #[arg(long)]
        kind: String,
        /// The gotalk server's default settings, not the benchmark's raised request limit.
        #[arg(long)]
        defaults: bool,
    },
    /// `gotalk serve` with the fixture operations, for the soak and hostile scenarios.
    #[command(hide = true)]
    Serve(Box<gotalk_cli::serve::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gotalk_cli::run("gotalk-bench", async {
        match cli.command {
            None => bench::run(cli.bench).await,
            Some(Command::Browser(args)) => bench::browser::run(args).await,
            Some(Command::Cluster(args)) => bench::cluster::run(args).await,
            Some(Command::BenchCrowd(args)) => bench::crowd::run(args).await,
            Some(Command::BenchServer { kind, defaults }) => {
                bench::serve_child(&kind, defaults).await
            }
            Some(Command::Serve(args)) => {
                let everyone = gotalk::Connections::default();
                let mut handlers = gotalk::Handlers::new();
                let registry = everyone.clone();
                handlers.on_connect(move |sock| {
                    registry.insert(&sock);
                    async {}
                });
                gotalk_tests::fixtures::register(&mut handlers, everyone);
                gotalk_cli::serve::run(*args, handlers, None).await
            }
        }
    })
}
