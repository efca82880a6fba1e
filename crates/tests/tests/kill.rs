//! `gotalk serve` killed with SIGKILL under 50 Rust keepalive clients (half TCP, half
//! WebSocket), each sending numbered `echo` requests, and restarted on the same ports: every
//! client reconnects and is answered by the new server, and every request was answered with
//! its own number or failed with an error. None lost, none answered twice. The e2e suite
//! (`e2e/tests/kill.spec.ts`) does the same with 1,000 clients and browser pages.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::ServeProcess;
use common::within;
use gotalk::keepalive::Builder;
use gotalk::keepalive::KeepAlive;
use gotalk::protocol::backoff::Backoff;
use gotalk::{Config, Error, Handlers};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 50;

/// A `gotalk serve` process on the given ports (0: the system picks), with the ports it got.
async fn serve(http_port: u16, tcp_port: u16) -> (Child, u16, u16) {
    let http = format!("127.0.0.1:{http_port}");
    let tcp = format!("127.0.0.1:{tcp_port}");
    let served = ServeProcess::start(&["--http", &http, "--tcp", &tcp]).await;
    let ports = (served.http_port(), served.tcp_port());
    (served.child, ports.0, ports.1)
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    answered: AtomicU64,
    errored: AtomicU64,
    duplicates: AtomicU64,
    mismatched: AtomicU64,
    seen: Mutex<HashSet<u64>>,
}

/// One client's loop: numbered `echo` requests until `stop`. Sets `recovered` once a request
/// started on a connection after the first is answered.
async fn load(
    index: u64,
    client: KeepAlive,
    counts: Arc<Counts>,
    recovered: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut seq = index << 32;
    while !stop.is_cancelled() {
        seq += 1;
        let connection = client.connections();
        counts.sent.fetch_add(1, Ordering::SeqCst);
        match client.buffer_request("echo", seq.to_string()).await {
            Ok(answer) if answer == seq.to_string().as_bytes() => {
                counts.answered.fetch_add(1, Ordering::SeqCst);
                if !counts.seen.lock().unwrap().insert(seq) {
                    counts.duplicates.fetch_add(1, Ordering::SeqCst);
                }
                if connection >= 2 {
                    recovered.store(true, Ordering::SeqCst);
                }
            }
            Ok(_) => {
                counts.answered.fetch_add(1, Ordering::SeqCst);
                counts.mismatched.fetch_add(1, Ordering::SeqCst);
            }
            Err(Error::Closed(_)) => {
                counts.errored.fetch_add(1, Ordering::SeqCst);
            }
            Err(other) => panic!("only requests in flight at the kill may fail: {other}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_comes_back_after_sigkill_and_no_request_is_lost() {
    let (mut first, http, tcp) = serve(0, 0).await;
    let fast = Backoff { min_ms: 50.0, max_ms: 500.0, ..Backoff::default() };
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let handlers = Arc::new(Handlers::new());
        let builder = if i % 2 == 0 {
            Builder::tcp(format!("127.0.0.1:{tcp}"), handlers, Config::default())
        } else {
            let url = format!("ws://127.0.0.1:{http}/gotalk/");
            Builder::ws(gotalk::ws::Connector::new(), url, handlers, Config::default())
        };
        let client = builder.backoff(fast).unwrap().start();
        let recovered = Arc::new(AtomicBool::new(false));
        let task = load(i as u64, client.clone(), counts.clone(), recovered.clone(), stop.clone());
        tasks.spawn(task);
        clients.push((client, recovered));
    }
    within("every client answered", async {
        while counts.seen.lock().unwrap().len() < CLIENTS * 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("the killed server is reaped");
    let (_second, ..) = serve(http, tcp).await;

    within("every client answered by the new server", async {
        while !clients.iter().all(|(_, recovered)| recovered.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop.cancel();
    within("every request settles", async {
        while let Some(done) = tasks.join_next().await {
            done.expect("a client's loop");
        }
    })
    .await;

    for (client, _) in &clients {
        assert_eq!(client.connections(), 2, "one reconnect each");
    }
    let sent = counts.sent.load(Ordering::SeqCst);
    let answered = counts.answered.load(Ordering::SeqCst);
    let errored = counts.errored.load(Ordering::SeqCst);
    println!("{CLIENTS} clients: sent {sent}, answered {answered}, failed in flight {errored}");
    assert_eq!(sent, answered + errored, "lost: {}", sent - answered - errored);
    assert!(errored <= CLIENTS as u64, "at most one request in flight per client: {errored}");
    assert_eq!(counts.duplicates.load(Ordering::SeqCst), 0);
    assert_eq!(counts.mismatched.load(Ordering::SeqCst), 0);
}
