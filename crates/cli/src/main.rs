//! `gotalk`: serve the gateway, call and notify gotalk peers, listen to them, benchmark.
//!
//! Subcommands: `serve` runs the server on embedded defaults; `call`, `notify` and `listen`
//! talk to any gotalk server (ours, Go's) over TCP or TLS; `bench` measures throughput and
//! memory against a raw baseline.

#![forbid(unsafe_code)]

mod bench;
mod chat;
mod client;
mod demo_sources;
mod nofile;
mod serve;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// jemalloc, with its background thread purging freed pages (the crate's `background_threads`
// feature; dirty pages decay over 10 s), instead of glibc's malloc. glibc raises its mmap
// threshold after each large free (up to 32 MiB), so once peers have sent 16 MiB messages,
// buffers of that size come from heaps it rarely trims: measured with
// `gotalk bench --scenario hostile`, a server with no connection left still held 29-338 MiB
// 30 s after each attack, from 24 MiB before it. With jemalloc every attack's server was back
// under its RSS before the attack within 20 s. mimalloc (default options) idled at 73-93 MiB
// and kept 69 MiB-2 GiB. Throughput and idle memory per connection stayed within 10 % of the
// old glibc build (README, Performance). The cost: 16 MiB payloads fall in jemalloc's 20 MiB
// size class and freed ranges stay mapped, so more address space is mapped than with glibc;
// under `ulimit -v` that matters until the budget bounds every attack (README, Performance).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// gotalk for Rust: bidirectional requests, streams and notifications over one connection.
#[derive(Parser, Debug)]
#[command(name = "gotalk", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gotalk server with the demo operations.
    Serve(Box<serve::Args>),
    /// Call an operation and print its result.
    Call(client::CallArgs),
    /// Send a notification.
    Notify(client::NotifyArgs),
    /// Print notifications as they arrive, until the connection closes or ctrl-c.
    Listen(client::ListenArgs),
    /// Measure requests/s, latency and memory per connection against a raw baseline.
    Bench(bench::Args),
    /// Rust keepalive clients loading a server that is killed and restarted under them,
    /// counting every request (driven by `e2e/tests/kill.spec.ts`).
    #[command(hide = true)]
    BenchCrowd(bench::crowd::Args),
    /// A server for `bench` to measure, in a process of its own.
    #[command(hide = true)]
    BenchServer {
        /// `gotalk`, `raw`, `gotalk-ws` or `raw-ws`.
        #[arg(long)]
        kind: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("gotalk: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Call(args) => client::call(args).await,
            Command::Notify(args) => client::notify(args).await,
            Command::Listen(args) => client::listen(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchCrowd(args) => bench::crowd::run(args).await,
            Command::BenchServer { kind } => bench::serve_child(&kind).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote what peers said: escaped whatever --raw says, since they are
            // messages to the operator and not data.
            eprintln!("gotalk: {}", terminal::escape(&format!("{e:#}"), terminal::Lines::Escape));
            ExitCode::from(client::exit_code(&e))
        }
    }
}
