//! The gotalk demo: a chat (rooms, names, history, direct messages over the relay) and a
//! search whose results stream in from several sources, on a page served at `/`, to browsers
//! over WebSocket and to programs over TCP from one registry.
//!
//! `cargo run --release -p gotalk-demo -- serve` runs it with `gotalk serve`'s flags, and the
//! chat's own.

#![forbid(unsafe_code)]

mod chat;
mod search;

use gotalk::relay::Relay;
use gotalk::{Connections, Handlers};
use gotalk_gateway::Assets;
use serde::{Deserialize, Serialize};

pub use chat::ChatArgs as Args;

/// The demo's operations: the chat's `chat.*`, `search`, and `greet` (`{"name"}` →
/// `{"greeting"}`). The chat's rooms are groups of `relay`, which must be the relay these
/// handlers are served with (`gotalk_cli::serve::run_with` serves them so). Every connection
/// is put in `everyone`, when given.
pub fn handlers(args: &Args, relay: &Relay, everyone: Option<Connections>) -> Handlers {
    let chat = chat::Chat::new(args.limits(), relay.clone());
    let mut handlers = Handlers::new();
    chat.register(&mut handlers);
    search::register(&mut handlers);
    handlers
        .on_connect(move |sock| {
            if let Some(everyone) = &everyone {
                everyone.insert(&sock);
            }
            chat.on_connect(sock)
        })
        .handle("greet", |_sock, input: GreetIn| async move {
            Ok::<_, String>(GreetOut { greeting: format!("Hello {}", input.name) })
        });
    handlers
}

/// The demo page (`index.html`, `demo.js`, `demo.css`), from memory.
pub fn site() -> Assets {
    let mut site = Assets::new();
    site.insert("index.html", &include_bytes!("../page/index.html")[..])
        .insert("demo.js", &include_bytes!("../page/demo.js")[..])
        .insert("demo.css", &include_bytes!("../page/demo.css")[..]);
    site
}

#[derive(Deserialize)]
struct GreetIn {
    name: String,
}

#[derive(Serialize)]
struct GreetOut {
    greeting: String,
}
