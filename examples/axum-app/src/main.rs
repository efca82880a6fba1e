//! A complete axum app with the gotalk gateway mounted beside its own routes.
//!
//! ```text
//! cargo run -p gotalk-example-axum                 # http://127.0.0.1:3000/
//! cargo run -p gotalk-example-axum -- 127.0.0.1:0  # any free port; the address is printed
//! ```
//!
//! The app has a page at `/` and a JSON route at `/api/health`; the gateway at `/gotalk/`
//! serves the browser client (`/gotalk/gotalk.js`) and gotalk over WebSocket. The page calls
//! the operation `shout` and shows the answer; `add` takes `{"a","b"}` and returns the sum.
//! `/private` is the same behind a login, with a gateway of its own at `/private/gotalk/`
//! that refuses sockets without a session (see `auth.rs`): a cookie or a token.
//! It stops on ctrl-c, letting requests in flight finish.

#![forbid(unsafe_code)]

mod auth;

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use gotalk::{Config, Handlers};
use gotalk_gateway::Gateway;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct AddIn {
    a: i64,
    b: i64,
}

#[derive(Serialize)]
struct Health {
    ok: bool,
    connections: usize,
}

/// The page: loads the client from the gateway and calls `shout`.
const PAGE: &str = r#"<!DOCTYPE html>
<meta charset="utf-8">
<title>gotalk in an axum app</title>
<link rel="icon" href="data:,">
<script src="/gotalk/gotalk.js"></script>
<p id="answer">…</p>
<script>
  gotalk.connection().request('shout', 'hello from the page', (err, answer) => {
    document.getElementById('answer').textContent = err ? 'error: ' + err : answer;
  });
</script>
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    let mut handlers = Handlers::new();
    handlers
        .handle("shout", |_sock, text: String| async move { Ok::<_, String>(text.to_uppercase()) })
        .handle("add", |_sock, input: AddIn| async move {
            input.a.checked_add(input.b).ok_or_else(|| "the sum overflows".to_owned())
        })
        .handle("whoami", |sock, (): ()| async move {
            // Set by the private gateway's on_connect; none on the public one.
            let user = sock.info().request.as_ref().and_then(|r| r.extensions.get::<auth::User>());
            Ok::<_, String>(user.map(|u| u.0.clone()))
        });
    let handlers = Arc::new(handlers);
    let gateway = Gateway::new(handlers.clone(), Config::default());
    let (private, private_gateway) = auth::router(handlers);

    let connections = gateway.connections();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/api/health",
            get(move || {
                let connections = connections.len();
                let json = serde_json::to_string(&Health { ok: true, connections });
                async move { ([(CONTENT_TYPE, "application/json")], json.unwrap_or_default()) }
            }),
        )
        .nest_service("/gotalk", gateway.router())
        .merge(private);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("http://{}/", listener.local_addr()?);
    let http = gotalk_gateway::http::Server::new(app);
    gateway
        .run(http, listener, None, async {
            tokio::signal::ctrl_c().await.ok();
            // The private gateway's sockets drain first, then the public one's.
            private_gateway.shutdown().await;
        })
        .await?;
    Ok(())
}
