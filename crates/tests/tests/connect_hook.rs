//! The `on_connect` hook's synchronous part runs before any handler of its connection, so a
//! registry it fills is complete by the time the peer's first request is served.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{connect, start, within};
use gotalk::{Config, Handlers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_of_every_connection_finds_it_registered() {
    let registered = Arc::new(Mutex::new(HashSet::new()));
    let mut handlers = Handlers::new();
    let registry = registered.clone();
    handlers.on_connect(move |sock| {
        // A slow synchronous part: were it run alongside the read loop, the peer's first
        // request would be served before the insert.
        std::thread::sleep(Duration::from_millis(20));
        registry.lock().unwrap().insert(sock.info().id);
        async {}
    });
    let registry = registered.clone();
    handlers.handle("registered", move |sock, (): ()| {
        let found = registry.lock().unwrap().contains(&sock.info().id);
        async move { Ok::<_, String>(found) }
    });
    let server = start(handlers, Config::default()).await;
    for n in 0..10 {
        let client = connect(server.addr).await;
        let found: bool = within("registered", client.request("registered", &())).await.unwrap();
        assert!(found, "connection {n} was served before its on_connect hook ran");
        client.close();
    }
}
