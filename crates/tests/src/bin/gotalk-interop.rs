//! A gotalk server that other implementations are tested against.
//!
//! ```text
//! cargo run -p gotalk-tests --bin gotalk-interop -- --tcp 127.0.0.1:0 [--http 127.0.0.1:0]
//!     [--request-limit N] [--stream-limit N] [--min-wait MS] [--max-wait MS]
//!     [--read-timeout S] [--heartbeat S] [--probe-interval S]
//! ```
//!
//! It prints `tcp <addr>` on stdout once listening, then `http <addr>` when `--http` is given,
//! so a test can start it on port 0. With `--http` the same operations are served over
//! WebSocket at `ws://<addr>/gotalk/` (and the browser client at `/gotalk/gotalk.js`). On
//! connect it notifies `hello` with `{"msg":"welcome","transport":"tcp"}` (or
//! `"websocket"`). The operations are the fixtures (`gotalk_tests::fixtures`).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use gotalk::{Config, Connections, Handlers};

/// Command line of the interop fixture.
#[derive(Parser, Debug)]
struct Args {
    /// Where gotalk over TCP listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    tcp: String,
    /// Where HTTP listens, with gotalk over WebSocket at /gotalk/; off when left out.
    #[arg(long)]
    http: Option<String>,
    /// Requests handled at once per connection.
    #[arg(long)]
    request_limit: Option<u32>,
    /// Streaming requests handled at once per connection.
    #[arg(long)]
    stream_limit: Option<u32>,
    /// The least RetryResult wait, in milliseconds.
    #[arg(long)]
    min_wait: Option<u64>,
    /// The most RetryResult wait, in milliseconds (exclusive).
    #[arg(long)]
    max_wait: Option<u64>,
    /// Seconds without a byte before a peer is dropped; 0 turns it off.
    #[arg(long)]
    read_timeout: Option<f64>,
    /// Seconds between heartbeats; 0 sends none.
    #[arg(long)]
    heartbeat: Option<f64>,
    /// Seconds of silence before a liveness probe (two may go unanswered).
    #[arg(long)]
    probe_interval: Option<f64>,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut config = Config::default();
    if let Some(n) = args.request_limit {
        config = config.request_limit(n);
    }
    if let Some(n) = args.stream_limit {
        config = config.stream_limit(n);
    }
    if args.min_wait.is_some() || args.max_wait.is_some() {
        let min = Duration::from_millis(args.min_wait.unwrap_or(500));
        let max = Duration::from_millis(args.max_wait.unwrap_or(5000));
        config = config.retry_wait(min, max);
    }
    if let Some(s) = args.read_timeout {
        config =
            config.read_timeout(Some(Duration::try_from_secs_f64(s)?).filter(|d| !d.is_zero()));
    }
    if let Some(s) = args.heartbeat {
        config = config.heartbeat_interval(Some(Duration::try_from_secs_f64(s)?));
    }
    if let Some(s) = args.probe_interval {
        let interval = Some(Duration::try_from_secs_f64(s)?);
        let liveness = gotalk::LivenessConfig { interval, ..config.liveness_config() };
        config = config.liveness(liveness)?;
    }
    Ok(config)
}

/// The fixture operations, with `hello` on connect; `broadcast` reaches every connection.
fn handlers() -> Handlers {
    let everyone = Connections::default();
    let mut h = Handlers::new();
    let registry = everyone.clone();
    h.on_connect(move |sock| {
        registry.insert(&sock);
        async move {
            let transport = sock.info().transport.to_string();
            let hello = serde_json::json!({ "msg": "welcome", "transport": transport });
            let _ = sock.notify("hello", &hello).await;
        }
    });
    gotalk_tests::fixtures::register(&mut h, everyone);
    h
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let config = config(&args)?;
    let handlers = Arc::new(handlers());
    let server = gotalk::tcp::Server::new(handlers.clone(), config.clone());
    let listener = tokio::net::TcpListener::bind(&args.tcp).await?;
    println!("tcp {}", listener.local_addr()?);
    let Some(http) = &args.http else {
        server.run(listener, tokio::signal::ctrl_c()).await?;
        return Ok(());
    };
    let gateway = gotalk_gateway::Gateway::new(handlers, config);
    let app = axum::Router::new().nest_service("/gotalk", gateway.router());
    let http_listener = tokio::net::TcpListener::bind(http).await?;
    println!("http {}", http_listener.local_addr()?);
    let http = gotalk_gateway::http::Server::new(app);
    gateway.run(http, http_listener, Some((server, listener)), tokio::signal::ctrl_c()).await?;
    Ok(())
}
