//! `gotalk serve`: the server on embedded defaults, with a few demo operations.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gotalk::{Config, Handlers};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// `gotalk serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Where gotalk over TCP listens.
    #[arg(long, default_value = "127.0.0.1:1235", value_name = "ADDR")]
    tcp: String,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitArgs,
    /// How many connections may be open at once.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Seconds to let requests in flight finish at shutdown.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    shutdown_timeout: f64,
}

/// Per-connection limits, shared by every server the command runs.
#[derive(clap::Args, Debug)]
pub(crate) struct LimitArgs {
    /// Requests handled at once per connection.
    #[arg(long, value_name = "N")]
    request_limit: Option<u32>,
    /// Streaming requests handled at once per connection.
    #[arg(long, value_name = "N")]
    stream_limit: Option<u32>,
    /// The largest payload accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_payload: Option<u32>,
    /// Seconds without a byte from a peer before it is disconnected; 0 turns it off.
    #[arg(long, value_name = "SECONDS")]
    read_timeout: Option<f64>,
    /// Seconds between heartbeats; 0 sends none.
    #[arg(long, value_name = "SECONDS")]
    heartbeat: Option<f64>,
}

fn seconds(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid number of seconds: {s}"))
}

impl LimitArgs {
    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::default();
        if let Some(n) = self.request_limit {
            config.request_limit(n);
        }
        if let Some(n) = self.stream_limit {
            config.stream_limit(n);
        }
        if let Some(n) = self.max_payload {
            config.max_payload(n);
        }
        if let Some(s) = self.read_timeout {
            config.read_timeout(Some(seconds(s)?).filter(|d| !d.is_zero()));
        }
        if let Some(s) = self.heartbeat {
            config.heartbeat_interval(Some(seconds(s)?));
        }
        Ok(config)
    }
}

#[derive(Deserialize)]
struct GreetIn {
    name: String,
}

#[derive(Serialize)]
struct GreetOut {
    greeting: String,
}

/// The operations `serve` offers out of the box.
fn demo_handlers() -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .handle_buffer("echo", |_sock, payload| async move { Ok::<_, String>(payload) })
        .handle("greet", |_sock, input: GreetIn| async move {
            Ok::<_, String>(GreetOut { greeting: format!("Hello {}", input.name) })
        })
        .handle_stream("stream-echo", |_sock, mut input, mut output| async move {
            while let Some(part) = input.next().await? {
                output.send(part).await?;
            }
            Ok::<_, gotalk::Error>(())
        });
    handlers
}

/// Resolves on ctrl-c or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.limits.config()?;
    let mut server = gotalk::tcp::Server::new(Arc::new(demo_handlers()), config)
        .max_connections(args.max_connections)
        .shutdown_timeout(seconds(args.shutdown_timeout)?);
    let scheme = if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        server = server.tls(gotalk::tls::server_config(&cert, &key)?);
        "tls"
    } else {
        "tcp"
    };
    let listener = TcpListener::bind(&args.tcp)
        .await
        .with_context(|| format!("cannot listen on {}", args.tcp))?;
    let addr = listener.local_addr()?;
    tracing::info!("gotalk over {scheme} on {scheme}://{addr}");
    println!("gotalk listening on {scheme}://{addr}");
    println!("try: gotalk call {scheme}://{addr} greet '{{\"name\":\"you\"}}'");
    server.run(listener, shutdown_signal()).await?;
    Ok(())
}
