//! A complete axum app with the gotalk gateway mounted beside its own routes.
//!
//! ```text
//! cargo run -p gotalk-example-axum                 # http://127.0.0.1:3000/
//! cargo run -p gotalk-example-axum -- 127.0.0.1:0  # any free port; the address is printed
//! cargo run -p gotalk-example-axum -- 127.0.0.1:0 /tmp/rooms  # where room histories go
//! ```
//!
//! The app has a page at `/` and a JSON route at `/api/health`; the gateway at `/gotalk/`
//! serves the browser client (`/gotalk/gotalk.js`) and gotalk over WebSocket. The page calls
//! the operation `shout` and shows the answer; `add` takes `{"a","b"}` and returns the sum.
//! `login` takes a name, and then `rooms.post` (`{"room","text"}`) and `rooms.history`
//! (a room's name) and `rooms.next` (a room's name: waits for its next post) work: [`ops`] has them and their middleware (a login check, a rate limit
//! and a count of calls, which `/api/health` shows), and the errors each shows the page.
//! `/private` is the same behind a login, with a gateway of its own at `/private/gotalk/`
//! that refuses sockets without a session (see `auth.rs`): a cookie or a token.
//! It stops on ctrl-c, letting requests in flight finish.

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use gotalk::Config;
use gotalk_gateway::Gateway;
use serde::Serialize;

mod auth;
mod ops;
#[cfg(test)]
mod tests;

#[derive(Serialize)]
struct Health {
    ok: bool,
    connections: usize,
    /// Calls of the app's operations so far.
    calls: u64,
}

/// The page: loads the client from the gateway and calls `shout`.
const PAGE: &str = r#"<!DOCTYPE html>
<meta charset="utf-8">
<title>gotalk in an axum app</title>
<link rel="icon" href="data:,">
<script src="/gotalk/gotalk.js"></script>
<p id="answer">…</p>
<script>
  // Gives up after 5 s rather than waiting for ever (an AbortSignal as `signal` works too).
  gotalk.connection().request('shout', 'hello from the page', { timeout: 5000 }, (err, answer) => {
    document.getElementById('answer').textContent = err ? 'error: ' + err : answer;
  });
</script>
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let data = args.next().map_or_else(|| std::env::temp_dir().join("gotalk-rooms"), Into::into);
    std::fs::create_dir_all(&data)?;
    let settings = ops::Settings {
        data,
        posts: 5,
        window: Duration::from_secs(10),
        wait: Duration::from_secs(25),
    };

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("http://{}/", listener.local_addr()?);
    serve(listener, settings, async {
        tokio::signal::ctrl_c().await.ok();
    })
    .await?;
    Ok(())
}

/// Serves the app on `listener` until `shutdown` resolves.
async fn serve(
    listener: tokio::net::TcpListener,
    settings: ops::Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let calls = Arc::new(AtomicU64::new(0));
    let handlers = Arc::new(ops::handlers(settings, calls.clone()));
    let gateway = Gateway::new(handlers.clone(), Config::default());
    let (private, private_gateway) = auth::router(handlers);

    let connections = gateway.connections();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/api/health",
            get(move || {
                let connections = connections.len();
                let calls = calls.load(Ordering::Relaxed);
                let json = serde_json::to_string(&Health { ok: true, connections, calls });
                async move { ([(CONTENT_TYPE, "application/json")], json.unwrap_or_default()) }
            }),
        )
        .nest_service("/gotalk", gateway.router())
        .merge(private);

    let http = gotalk_gateway::http::Server::new(app);
    let shutdown = async move {
        shutdown.await;
        // The private gateway's sockets drain first, then the public one's.
        private_gateway.shutdown().await;
    };
    gateway.run(http, listener, None, shutdown).await
}
