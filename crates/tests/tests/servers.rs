//! The cluster tests' harness (`gotalk_tests::servers`) against the real servers: each starts
//! on a free port and answers, comes back on the same port after SIGKILL, stops answering
//! while paused; the limited bus users get nothing outside their prefix; haproxy carries HTTP
//! and WebSocket to real `gotalk serve` processes and sees a killed one go down.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::process::ServeProcess;
use common::within;
use gotalk::{Config, Handlers};
use gotalk_tests::servers::{skip_cluster_tests, Auth, Haproxy, Nats, Redis};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a paused server is given to (wrongly) answer.
const SILENCE: Duration = Duration::from_millis(300);

/// One raw request-reply exchange: writes `send`, reads one line.
async fn exchange(port: u16, send: &[u8]) -> std::io::Result<String> {
    let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await?);
    stream.get_mut().write_all(send).await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    Ok(line.trim_end().to_owned())
}

fn refused(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[tokio::test]
async fn redis_answers_comes_back_on_its_port_after_sigkill_and_stops_answering_when_paused() {
    if skip_cluster_tests() {
        return;
    }
    let mut redis = Redis::start().await;
    let port = redis.port();
    assert_ne!(port, 6379, "never the system service's port");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(exchange(port, b"PING\r\n").await.unwrap(), "+PONG");
    assert_eq!(redis.admin_command(&["SET", "k", "v"]).await, "+OK");

    let pid = redis.pid();
    redis.kill();
    assert!(refused(port), "killed, yet something accepts on {port}");
    redis.restart().await;
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), pid, "a new process");
    assert_eq!(redis.admin_command(&["EXISTS", "k"]).await, ":0", "nothing persisted");

    redis.pause();
    let paused = tokio::time::timeout(SILENCE, exchange(port, b"PING\r\n")).await;
    assert!(paused.is_err(), "a paused redis answered: {paused:?}");
    redis.resume();
    assert_eq!(within("PING after resume", exchange(port, b"PING\r\n")).await.unwrap(), "+PONG");
}

#[tokio::test]
async fn the_redis_user_is_limited_to_its_prefix_and_default_is_off() {
    if skip_cluster_tests() {
        return;
    }
    let auth = Auth::new("gotalk");
    let redis = Redis::start_with(auth.clone()).await;
    let port = redis.port();
    assert_eq!(
        redis.url(),
        format!("redis://gotalk:{}@127.0.0.1:{port}", auth.password),
        "the URL a client connects with"
    );

    let noauth = exchange(port, b"PING\r\n").await.unwrap();
    assert!(noauth.starts_with("-NOAUTH"), "the default user is off: {noauth}");
    assert_eq!(redis.user_command(&["PING"]).await, "+PONG");
    assert!(redis.user_command(&["HELLO", "3"]).await.starts_with('%'), "RESP3, as clients ask");
    assert_eq!(redis.user_command(&["PUBLISH", "gotalk:peer:x", "hi"]).await, ":0");
    assert_eq!(redis.user_command(&["SPUBLISH", "gotalk:peer:x", "hi"]).await, ":0");
    assert_eq!(redis.user_command(&["SET", "gotalk:k", "v"]).await, "+OK");
    assert_eq!(redis.user_command(&["PUBSUB", "NUMSUB", "gotalk:peer:x"]).await, "*2");
    for outside in [
        &["PUBLISH", "other:peer:x", "hi"][..],
        &["SPUBLISH", "other:peer:x", "hi"],
        &["SET", "other:k", "v"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "dir"],
        &["CLIENT", "KILL", "TYPE", "pubsub"],
    ] {
        let reply = redis.user_command(outside).await;
        assert!(reply.starts_with("-NOPERM"), "{outside:?}: {reply}");
    }
    // The harness's own user may still do anything.
    assert_eq!(redis.admin_command(&["PUBLISH", "other:peer:x", "hi"]).await, ":0");
}

/// Connects and reads the `INFO` line NATS greets with.
async fn nats_info(port: u16) -> std::io::Result<String> {
    exchange(port, b"").await
}

#[tokio::test]
async fn nats_answers_comes_back_on_its_port_after_sigkill_and_stops_answering_when_paused() {
    if skip_cluster_tests() {
        return;
    }
    let mut nats = Nats::start().await;
    let port = nats.port();
    assert_ne!(port, 4222, "never the system service's port");
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert!(nats_info(port).await.unwrap().starts_with("INFO {"));
    let varz = http_get(&nats.monitor_url(), "/varz").await;
    assert!(varz.starts_with("HTTP/1.1 200") && varz.contains("\"server_id\""), "{varz}");

    nats.kill();
    assert!(refused(port), "killed, yet something accepts on {port}");
    nats.restart().await;
    assert_eq!(nats.port(), port);
    assert!(nats_info(port).await.unwrap().starts_with("INFO {"));

    nats.pause();
    let paused = tokio::time::timeout(SILENCE, nats_info(port)).await;
    assert!(paused.is_err(), "a paused nats greeted: {paused:?}");
    nats.resume();
    assert!(within("INFO after resume", nats_info(port)).await.unwrap().starts_with("INFO {"));
}

#[tokio::test]
async fn the_nats_user_is_limited_to_its_prefix_and_inbox() {
    if skip_cluster_tests() {
        return;
    }
    let auth = Auth::new("gotalk");
    let nats = Nats::start_with(auth.clone(), "_INBOX").await;
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://gotalk:{}@127.0.0.1:{port}", auth.password));

    let connect = |password: &str| {
        format!(
            "CONNECT {{\"user\":\"gotalk\",\"pass\":\"{password}\",\"verbose\":false,\
             \"pedantic\":false}}\r\n"
        )
    };
    let session = format!(
        "{}PUB gotalk.peer.x 2\r\nhi\r\nSUB _INBOX.a 1\r\nSUB gotalk.> 2\r\nPUB other.x 2\r\n\
         hi\r\nSUB other.> 3\r\nPING\r\n",
        connect(&auth.password)
    );
    let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    stream.get_mut().write_all(session.as_bytes()).await.unwrap();
    let mut lines = Vec::new();
    within("nats answers the session", async {
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            if line.is_empty() || line.starts_with("PONG") {
                break;
            }
            lines.push(line.trim_end().to_owned());
        }
    })
    .await;
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("-ERR")).collect();
    assert_eq!(
        errors,
        [
            "-ERR 'Permissions Violation for Publish to \"other.x\"'",
            "-ERR 'Permissions Violation for Subscription to \"other.>\"'",
        ],
        "all lines: {lines:?}"
    );

    let mut stream = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    stream.get_mut().write_all(connect("wrong").as_bytes()).await.unwrap();
    let mut rest = String::new();
    within("nats refuses", stream.read_to_string(&mut rest)).await.unwrap();
    assert!(rest.contains("-ERR 'Authorization Violation'"), "{rest}");
}

/// A raw HTTP/1.1 GET of `path` at `base` (`http://host:port…`): the whole response.
async fn http_get(base: &str, path: &str) -> String {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = within("connect", TcpStream::connect(host)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    within("the response", stream.read_to_string(&mut response)).await.unwrap();
    response
}

/// A `gotalk serve` on the given HTTP port (0: the system picks).
async fn gateway(http_port: u16) -> ServeProcess {
    let http = format!("127.0.0.1:{http_port}");
    ServeProcess::start(&["--http", &http, "--tcp", "127.0.0.1:0"]).await
}

/// An `echo` over a WebSocket through `haproxy`.
async fn echo_through(haproxy: &Haproxy, text: &str) {
    let url = format!("ws://127.0.0.1:{}/gotalk/", haproxy.port());
    let sock = within("connect through haproxy", async {
        gotalk::ws::connect(&url, Arc::new(Handlers::new()), Config::default()).await
    })
    .await
    .expect("a WebSocket through haproxy");
    let answer = within("echo", sock.buffer_request("echo", text.to_owned())).await.unwrap();
    assert_eq!(answer, text.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_carries_http_and_websockets_and_sees_a_killed_gateway_down_and_back() {
    if skip_cluster_tests() {
        return;
    }
    let mut first = gateway(0).await;
    let second = gateway(0).await;
    let first_addr = format!("127.0.0.1:{}", first.http_port());
    let second_addr = format!("127.0.0.1:{}", second.http_port());
    let both = [first_addr, second_addr];
    let haproxy = Haproxy::start(&both).await;
    assert_eq!(haproxy.url(), format!("http://127.0.0.1:{}/", haproxy.port()));
    haproxy.wait_until_up(&both, Duration::from_secs(5)).await;

    let page = http_get(&haproxy.url(), "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for i in 0..4 {
        echo_through(&haproxy, &format!("before {i}")).await;
    }

    first.child.start_kill().expect("SIGKILL");
    first.child.wait().await.expect("reaped");
    let took = haproxy.wait_until_up(&both[1..], Duration::from_millis(1500)).await;
    println!("haproxy saw the killed gateway down after {took:?}");
    let backends = haproxy.backends().await;
    assert!(backends[0].status.starts_with("DOWN"), "{backends:?}");
    for i in 0..4 {
        echo_through(&haproxy, &format!("after {i}")).await;
    }

    let _again = gateway(first.http_port()).await;
    haproxy.wait_until_up(&both, Duration::from_secs(5)).await;
}
