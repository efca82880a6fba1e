//! The `gotalk` command: `serve` runs the gateway (WebSocket and TCP, one registry, the relay
//! on) on embedded defaults; `call`, `notify` and `listen` talk to any gotalk server (ours,
//! Go's) over TCP, TLS or WebSocket.
//!
//! As a library it lets an application ship the same command with its own operations:
//! [`main`] parses the command line and runs the subcommand, calling back for `serve` with
//! the application's flags beside [`serve::Args`]. The demo and the test servers are built
//! this way. The guide: [the `gotalk` command](docs::command).

#![forbid(unsafe_code)]

mod certs;
mod client;
mod config;
pub mod docs;
pub mod nofile;
pub mod serve;
mod terminal;

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gotalk for Rust: bidirectional requests, streams and notifications over one connection.
#[derive(Parser, Debug)]
#[command(name = "gotalk", version, about, after_help = client::EXIT_STATUS)]
struct Cli<S: clap::Args> {
    /// How log lines go to stderr: `text` (colours only on a terminal) or `json` (one object
    /// a line). `RUST_LOG` filters them (default: info for serve, warn for the rest).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command<S>,
}

/// How the log is written, chosen with `--log-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines, with colours only when stderr is a terminal: a log file or a
    /// journal gets no escape codes.
    #[default]
    Text,
    /// One JSON object a line: time, level, target, message and fields, and the spans (a
    /// connection's id, transport and peer), for log shippers.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command<S: clap::Args> {
    /// Run the gotalk server: gotalk over WebSocket and TCP, one registry, the relay on.
    Serve(Box<S>),
    /// Call an operation and print its result.
    #[command(after_help = client::EXIT_STATUS)]
    Call(client::CallArgs),
    /// Send a notification.
    #[command(after_help = client::EXIT_STATUS)]
    Notify(client::NotifyArgs),
    /// Print notifications as they arrive, until the connection closes or ctrl-c.
    #[command(after_help = client::EXIT_STATUS)]
    Listen(client::ListenArgs),
}

/// The command line as clap sees it, with `S` as `serve`'s flags: for help text, completions,
/// or a test that the flags of an application's `S` do not clash with `gotalk serve`'s
/// (`command::<S>().debug_assert()`).
pub fn command<S: clap::Args>() -> clap::Command {
    use clap::CommandFactory;
    config::with_sources(Cli::<S>::command())
}

/// Logs to stderr as text, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    init_logging_as(LogFormat::Text, "info");
}

/// Logs to stderr in `format`, filtered by `RUST_LOG`, else by `default` (a filter such as
/// `info`). Does nothing when the process already has a logger.
pub fn init_logging_as(format: LogFormat, default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logger.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => logger.json().try_init(),
    };
}

/// Runs the `gotalk` command: parses the command line (with `S` as `serve`'s flags), starts
/// logging and the runtime, and runs the subcommand, `serve` through `serve`. Errors are
/// printed, escaped, and turned into the exit code.
pub fn main<S, F, Fut>(serve: F) -> ExitCode
where
    S: clap::Args,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut command = command::<S>();
    let matches = config::matches(&command);
    let cli = {
        use clap::FromArgMatches;
        Cli::<S>::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
    };
    // A client's own connection is no news to the person who ran it: only warnings show.
    let level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    init_logging_as(cli.log_format, level);
    run_logged("gotalk", async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Call(args) => client::call(args).await,
            Command::Notify(args) => client::notify(args).await,
            Command::Listen(args) => client::listen(args).await,
        }
    })
}

/// Starts logging and a runtime, runs `work` on it, and turns its outcome into an exit code:
/// an error is printed after `name: `, escaped (errors quote what peers said, and are
/// messages to the operator, not data), with the exit code a failed call chose.
pub fn run(name: &str, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_logging();
    run_logged(name, work)
}

/// [`run`] with logging already started.
fn run_logged(name: &str, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", terminal::escape(&format!("{e:#}"), terminal::Lines::Escape));
            ExitCode::from(client::exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        super::command::<super::serve::Args>().debug_assert();
    }
}
