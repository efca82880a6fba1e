//! `gotalk serve` as a real process: the demo page, one registry behind WebSocket and TCP,
//! the same over https, wss and TLS TCP with a certificate made by the test, and a graceful
//! shutdown on SIGTERM that lets a request in flight finish and exits 0.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::process::ServeProcess;
use common::within;
use gotalk::{CloseReason, Config, Handlers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// The server, and the three URLs it printed.
type Served = ServeProcess;

async fn serve() -> Served {
    serve_with(&[]).await
}

/// As [`serve`], with more arguments for `gotalk serve`.
async fn serve_with(extra: &[&str]) -> Served {
    let mut args = vec!["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--shutdown-timeout", "5"];
    args.extend_from_slice(extra);
    ServeProcess::start(&args).await
}

/// A browser-like WebSocket client with `browser_handlers`, and a TCP program.
async fn connect_both(served: &Served, browser_handlers: Handlers) -> (gotalk::Sock, gotalk::Sock) {
    let browser = gotalk::ws::connect(&served.ws, Arc::new(browser_handlers), Config::default())
        .await
        .expect("websocket connect");
    let tcp_addr = served.tcp.trim_start_matches("tcp://");
    let program = gotalk::tcp::connect(tcp_addr, Arc::new(Handlers::new()), Config::default())
        .await
        .expect("tcp connect");
    (browser, program)
}

/// A plain HTTP/1.1 GET, returning the whole response.
async fn get(http: &str, path: &str) -> String {
    let authority = http.trim_start_matches("http://").trim_end_matches('/');
    get_as(http, path, authority).await
}

/// [`get`] with `host` in the Host header.
async fn get_as(http: &str, path: &str, host: &str) -> String {
    let authority = http.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let read = within("http response", stream.read_to_string(&mut response)).await;
    read.unwrap_or_else(|e| panic!("GET {path}: {e} after {response:?}"));
    response
}

/// `/stats`, parsed.
async fn stats(http: &str) -> serde_json::Value {
    let response = get(http, "/stats").await;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test]
async fn stats_count_liveness_probes_and_their_answers_on_both_transports() {
    let served = serve_with(&["--probe-interval", "0.1", "--probe-misses", "3"]).await;
    let (browser, program) = connect_both(&served, Handlers::new()).await;
    // Both peers stay quiet, so the server probes them: WebSocket Pings answered by the
    // transport, `$ping` requests answered by the Rust client.
    let answered = |stats: &serde_json::Value, transport: &str| {
        stats["liveness"][transport]["acked"].as_u64().unwrap_or(0)
    };
    within("probes answered on both transports", async {
        loop {
            let stats = stats(&served.http).await;
            if answered(&stats, "tcp") >= 2 && answered(&stats, "websocket") >= 2 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let stats = stats(&served.http).await;
    for transport in ["tcp", "websocket"] {
        let counts = &stats["liveness"][transport];
        assert!(counts["probes_sent"].as_u64() >= counts["acked"].as_u64(), "{stats}");
        assert_eq!(counts["dead"], 0, "{stats}");
        assert!(counts["mean_rtt_ms"].as_f64().unwrap() > 0.0, "{stats}");
    }
    assert!(!browser.is_closed() && !program.is_closed());
}

#[tokio::test]
async fn one_process_is_ready_and_alive() {
    let served = serve().await;
    // Its bus is its own, always up: ready from the start, as a load balancer asks.
    for (path, body) in [("/readyz", "ready"), ("/healthz", "ok")] {
        let response = get(&served.http, path).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {response}");
        assert!(response.ends_with(&format!("\r\n\r\n{body}")), "{path}: {response}");
    }
}

#[tokio::test]
async fn serve_refuses_contradictory_liveness_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"))
        .args(["serve", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
        .args(["--liveness", "libvirt", "--probe-interval", "0", "--probe-misses", "2"])
        .output();
    let output = within("serve refuses", output).await.unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid liveness settings"), "{stderr}");
}

#[tokio::test]
async fn serve_on_loopback_answers_another_host_only_once_allowed() {
    let served = serve().await;
    let port = served.http_port();
    let (evil, local) = (format!("evil.example:{port}"), format!("localhost:{port}"));
    // The whole site, not only the gateway: a rebinding page reads nothing from it.
    for path in ["/", "/stats", "/gotalk/gotalk.js"] {
        let response = get_as(&served.http, path, &evil).await;
        assert!(response.starts_with("HTTP/1.1 421 "), "{path}: {response}");
        assert!(response.contains(&format!("host \"{evil}\" is not allowed")), "{response}");
        let response = get_as(&served.http, path, &local).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{path}: {response}");
    }

    let allowing =
        serve_with(&["--allow-host", "evil.example", "--allow-host", "*.app.example"]).await;
    let port = allowing.http_port();
    for host in [format!("evil.example:{port}"), format!("a.app.example:{port}")] {
        let response = get_as(&allowing.http, "/", &host).await;
        assert!(response.starts_with("HTTP/1.1 200 "), "{host}: {response}");
    }
    let response = get_as(&allowing.http, "/", &format!("other.example:{port}")).await;
    assert!(response.starts_with("HTTP/1.1 421 "), "{response}");

    // A port is not part of a name to allow: refused before the server starts.
    let output = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"))
        .args(["serve", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
        .args(["--allow-host", "evil.example:80"])
        .output();
    let output = within("serve refuses", output).await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-host"), "{stderr}");
}

#[tokio::test]
async fn serve_runs_the_demo_over_http_websocket_and_tcp_and_stops_gracefully() {
    let mut served = serve().await;
    let page = get(&served.http, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("content-type: text/html; charset=utf-8"), "{page}");
    assert!(page.contains("<title>gotalk chat</title>"), "{page}");

    // A browser-like WebSocket client and a TCP program, one registry: the program's
    // broadcast reaches the browser.
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let mut browser_handlers = Handlers::new();
    browser_handlers.handle_buffer_notification("broadcast", move |_sock, payload: Bytes| {
        let _ = notes_tx.send(payload);
        async {}
    });
    let (browser, program) = connect_both(&served, browser_handlers).await;
    let tcp_addr = served.tcp.trim_start_matches("tcp://").to_owned();
    let greeting: serde_json::Value =
        browser.request("greet", &serde_json::json!({"name": "browser"})).await.unwrap();
    assert_eq!(greeting["greeting"], "Hello browser");
    assert_eq!(program.buffer_request("broadcast", "hi all").await.unwrap(), "2");
    assert_eq!(within("broadcast", notes.recv()).await.unwrap(), "hi all");
    let stats = stats(&served.http).await;
    assert_eq!((&stats["tcp"], &stats["websocket"]), (&1.into(), &1.into()), "{stats}");

    // A stream request in flight when SIGTERM arrives is allowed to finish.
    let (mut tx, mut rx) = browser.stream_request("stream-echo", "before").await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "before");
    let pid = served.child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    within("listener closed", async {
        while TcpStream::connect(tcp_addr.as_str()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tx.write("during shutdown").await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "during shutdown");
    tx.end().await.unwrap();
    assert_eq!(rx.next().await.unwrap(), None);

    assert_eq!(within("browser closed", browser.closed()).await, CloseReason::PeerClosed);
    let status = within("serve exits", served.child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

/// A client whose `page-info` answers with `who` and the value it got, and whose `page-fail`
/// answers with an ErrorResult.
fn page_handlers(who: &'static str) -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .handle("page-info", move |_sock, value: serde_json::Value| async move {
            Ok::<_, String>(serde_json::json!({ "who": who, "echo": value }))
        })
        .handle("page-fail", |_sock, _: serde_json::Value| async move {
            Err::<(), _>(gotalk::HandlerError::text("the page says no"))
        });
    handlers
}

#[tokio::test]
async fn ask_page_calls_the_caller_back_and_returns_its_answer() {
    let served = serve().await;
    // Two pages with the same operation: the server must ask the one that called it.
    let page = gotalk::ws::connect(&served.ws, Arc::new(page_handlers("page")), Config::default())
        .await
        .expect("websocket connect");
    let other =
        gotalk::ws::connect(&served.ws, Arc::new(page_handlers("other")), Config::default())
            .await
            .expect("websocket connect");
    let tcp_addr = served.tcp.trim_start_matches("tcp://").to_owned();
    let program = gotalk::tcp::connect(
        tcp_addr.as_str(),
        Arc::new(page_handlers("program")),
        Config::default(),
    )
    .await
    .expect("tcp connect");

    let ask = serde_json::json!({"op": "page-info", "value": {"n": 1}});
    for (sock, who) in [(&page, "page"), (&other, "other"), (&program, "program")] {
        let answer: serde_json::Value = within("ask-page", sock.request("ask-page", &ask))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(answer, serde_json::json!({"who": who, "echo": {"n": 1}}));
    }

    // A missing value is null; the page's ErrorResult is the caller's, word for word; an
    // operation the page does not have is an error too.
    let answer: serde_json::Value =
        page.request("ask-page", &serde_json::json!({"op": "page-info"})).await.unwrap();
    assert_eq!(answer["echo"], serde_json::Value::Null);
    let failed = page
        .request::<_, serde_json::Value>("ask-page", &serde_json::json!({"op": "page-fail"}))
        .await;
    assert!(
        matches!(&failed, Err(gotalk::Error::Remote(m)) if m == "the page says no"),
        "{failed:?}"
    );
    let unknown =
        page.request::<_, serde_json::Value>("ask-page", &serde_json::json!({"op": "nope"})).await;
    assert!(matches!(&unknown, Err(gotalk::Error::Remote(_))), "{unknown:?}");
}

/// A client whose streaming `shout` answers each JSON string part with it in upper case, and
/// whose `refuse` answers with an ErrorResult after the first part.
fn streaming_page() -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .handle_stream("shout", |_sock, mut input, mut output| async move {
            while let Some(part) = input.next().await? {
                let text: String = serde_json::from_slice(&part)?;
                output.send(serde_json::to_vec(&text.to_uppercase())?).await?;
            }
            Ok::<_, gotalk::Error>(())
        })
        .handle_stream("refuse", |_sock, mut input, _output| async move {
            let _ = input.next().await;
            Err::<(), _>(gotalk::HandlerError::text("the page says no"))
        });
    handlers
}

#[tokio::test]
async fn stream_to_page_streams_to_the_caller_and_returns_its_parts() {
    let served = serve().await;
    let page = gotalk::ws::connect(&served.ws, Arc::new(streaming_page()), Config::default())
        .await
        .expect("websocket connect");
    let ask = async |op: &str, parts: serde_json::Value| {
        let input = serde_json::json!({ "op": op, "parts": parts });
        page.request::<_, serde_json::Value>("stream-to-page", &input).await
    };

    let answer =
        within("stream-to-page", ask("shout", serde_json::json!(["a", "b😀", "c"]))).await.unwrap();
    assert_eq!(answer, serde_json::json!(["A", "B😀", "C"]));

    // The page's ErrorResult is the caller's, word for word; no parts, or an operation the
    // page does not have, are errors too.
    let refused = within("refuse", ask("refuse", serde_json::json!(["x", "y"]))).await;
    assert!(
        matches!(&refused, Err(gotalk::Error::Remote(m)) if m == "the page says no"),
        "{refused:?}"
    );
    let empty = within("no parts", ask("shout", serde_json::json!([]))).await;
    assert!(matches!(&empty, Err(gotalk::Error::Remote(m)) if m.contains("empty")), "{empty:?}");
    let unknown = within("unknown op", ask("nope", serde_json::json!(["x"]))).await;
    assert!(matches!(&unknown, Err(gotalk::Error::Remote(_))), "{unknown:?}");
}

#[tokio::test]
async fn sleep_holds_a_request_and_retry_wait_sets_the_retry_results_wait() {
    let served = serve_with(&["--request-limit", "1", "--retry-wait", "0.25"]).await;
    // No retries, so the first RetryResult comes back as the error, with its wait.
    let config = Config::default().max_retries(0);
    let tcp_addr = served.tcp.trim_start_matches("tcp://").to_owned();
    let program = gotalk::tcp::connect(tcp_addr.as_str(), Arc::new(Handlers::new()), config)
        .await
        .expect("tcp connect");

    let started = tokio::time::Instant::now();
    let sleep = serde_json::json!({"ms": 300});
    let held = program.request::<_, serde_json::Value>("sleep", &sleep);
    let refused = async {
        // Sent after `sleep` on the same connection, so it arrives while `sleep` holds the
        // connection's one request slot.
        tokio::task::yield_now().await;
        program.request::<_, serde_json::Value>("echo", &"late").await
    };
    let (held, refused) = within("sleep and echo", async { tokio::join!(held, refused) }).await;
    assert_eq!(held.unwrap(), serde_json::json!({"slept": 300}));
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    match refused {
        Err(gotalk::Error::Retry { wait, message, attempts: 1 }) => {
            assert_eq!(wait, Duration::from_millis(250));
            assert_eq!(message, "request rate limit");
        }
        other => panic!("expected a RetryResult, got {other:?}"),
    }
}

/// A fresh self-signed certificate for `localhost` and 127.0.0.1, written as PEM files under
/// this test's own folder in the target directory; returns the certificate and key paths.
fn certificate_files(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// An HTTPS GET that trusts only `tls`'s roots, returning the whole response.
async fn get_https(tls: Arc<rustls::ClientConfig>, https: &str, path: &str) -> String {
    let authority = https.trim_start_matches("https://").trim_end_matches('/');
    let stream = TcpStream::connect(authority).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls);
    let mut stream = within("tls handshake", connector.connect(name, stream)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    // The server may end without close_notify after `Connection: close`; what was read counts.
    let _ = within("https response", stream.read_to_string(&mut response)).await;
    response
}

#[tokio::test]
async fn serve_with_a_certificate_speaks_https_wss_and_tls_tcp_only() {
    let (cert, key) = certificate_files("serve_tls");
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let served = serve_with(&["--tls-cert", cert_arg, "--tls-key", key_arg]).await;
    assert!(served.http.starts_with("https://"), "{}", served.http);
    assert!(served.ws.starts_with("wss://"), "{}", served.ws);
    assert!(served.tcp.starts_with("tls://"), "{}", served.tcp);
    let client_tls = gotalk::tls::client_config(&std::fs::read(&cert).unwrap()).unwrap();

    // The demo page over https.
    let page = get_https(client_tls.clone(), &served.http, "/").await;
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("<title>gotalk chat</title>"), "{page}");

    // A browser-like client over wss and a program over TLS TCP share one registry.
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let mut browser_handlers = Handlers::new();
    browser_handlers.handle_buffer_notification("broadcast", move |_sock, payload: Bytes| {
        let _ = notes_tx.send(payload);
        async {}
    });
    let connector = gotalk::ws::Connector::new().tls(client_tls.clone());
    let browser = within(
        "wss connect",
        connector.connect(&served.ws, Arc::new(browser_handlers), Config::default()),
    )
    .await
    .expect("wss connect");
    let tcp_addr = served.tcp.trim_start_matches("tls://").to_owned();
    let program = within(
        "tls connect",
        gotalk::tcp::connect_tls(
            tcp_addr.as_str(),
            "localhost",
            client_tls,
            Arc::new(Handlers::new()),
            Config::default(),
        ),
    )
    .await
    .expect("tls connect");
    let greeting: serde_json::Value =
        browser.request("greet", &serde_json::json!({"name": "wss"})).await.unwrap();
    assert_eq!(greeting["greeting"], "Hello wss");
    assert_eq!(program.buffer_request("broadcast", "over tls").await.unwrap(), "2");
    assert_eq!(within("broadcast", notes.recv()).await.unwrap(), "over tls");

    // The CLI client, trusting the certificate with --ca, over both secure transports.
    for url in [served.tcp.as_str(), served.ws.as_str()] {
        let call = Command::new(env!("CARGO_BIN_EXE_gotalk-e2e"))
            .args(["call", "--ca", cert_arg, url, "greet", r#"{"name":"cli"}"#])
            .output();
        let out = within("gotalk call", call).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{url}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"greeting\":\"Hello cli\"}\n");
    }

    // Nothing is served in the clear: plain HTTP and plain gotalk get no answer.
    let authority = served.http.trim_start_matches("https://").trim_end_matches('/');
    let mut plain = TcpStream::connect(authority).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    // A TLS alert or a reset, never a page.
    let _ = within("plain http refused", plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&answer));
    let plain_program =
        gotalk::tcp::connect(tcp_addr.as_str(), Arc::new(Handlers::new()), Config::default());
    assert!(within("plain tcp refused", plain_program).await.is_err());
}

#[tokio::test]
async fn frame_timeout_and_max_connections_per_addr_flags_reach_every_listener() {
    let served = serve_with(&["--frame-timeout", "0.3", "--max-connections-per-addr", "1"]).await;
    let tcp_addr = served.tcp.trim_start_matches("tcp://").to_owned();
    // One connection per address: the first is served, a second gets ProtocolError 0.
    let mut first = TcpStream::connect(tcp_addr.as_str()).await.unwrap();
    first.write_all(b"01").await.unwrap();
    let mut version = [0u8; 2];
    within("version", first.read_exact(&mut version)).await.unwrap();
    let mut second = TcpStream::connect(tcp_addr.as_str()).await.unwrap();
    let mut refusal = Vec::new();
    within("refusal", second.read_to_end(&mut refusal)).await.unwrap();
    assert_eq!(refusal, b"01f00000000");
    // The first starts a request and never finishes it: cut at the frame timeout.
    first.write_all(b"r0001004echo00000010abc").await.unwrap();
    let mut rest = Vec::new();
    within("frame timeout", first.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.ends_with(b"f00000003"), "{:?}", String::from_utf8_lossy(&rest));
    // The WebSocket listener has its own count per address.
    let browser = gotalk::ws::connect(&served.ws, Arc::new(Handlers::new()), Config::default())
        .await
        .expect("websocket connect");
    let refused =
        gotalk::ws::connect(&served.ws, Arc::new(Handlers::new()), Config::default()).await;
    assert!(refused.unwrap_err().to_string().contains("429"), "the second websocket");
    drop(browser);
}

#[tokio::test]
async fn sigterm_exits_within_the_shutdown_timeout_with_peers_that_never_read() {
    let mut served = ServeProcess::start(&[
        "--http",
        "127.0.0.1:0",
        "--tcp",
        "127.0.0.1:0",
        "--shutdown-timeout",
        "2",
    ])
    .await;
    let tcp_addr = served.tcp.trim_start_matches("tcp://").parse().unwrap();
    let http_addr = format!("127.0.0.1:{}", served.http_port()).parse().unwrap();
    // Both ask for 16 MiB of echoes and never read: the server's writes to them stall, and
    // the write timeout (30 s) is far past the shutdown timeout.
    let tcp = common::never_reads::tcp(tcp_addr);
    let ws = common::never_reads::websocket(http_addr);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pid = served.child.id().unwrap().to_string();
    let started = tokio::time::Instant::now();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(40), served.child.wait())
        .await
        .expect("serve exits at last")
        .unwrap();
    let took = started.elapsed();
    eprintln!("serve exited {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    assert!(took < Duration::from_secs(5), "serve took {took:?} to exit with --shutdown-timeout 2");
    tcp.abort();
    ws.abort();
}

/// An HTTP connection that holds one of the listener's places: answered 200 and kept alive.
/// The connections the WebSocket upgrades came over hand their places back only once the
/// server has seen them upgraded or closed, so a refusal meanwhile is tried again.
async fn held_http(addr: &str) -> TcpStream {
    within("an HTTP place", async {
        loop {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            if common::read_head(&mut stream).await.starts_with(b"HTTP/1.1 200 ") {
                return stream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_connection_reserve_flag_reaches_every_listener() {
    // 4 places, 2 kept for addresses holding none: 127.0.0.1 gets two, 127.0.0.2 one more.
    let served = serve_with(&[
        "--max-connections",
        "4",
        "--max-connections-per-addr",
        "4",
        "--connection-reserve",
        "2",
    ])
    .await;
    let other: std::net::IpAddr = [127, 0, 0, 2].into();
    let tcp_addr: std::net::SocketAddr = served.tcp.trim_start_matches("tcp://").parse().unwrap();
    // A gotalk client over a connection from `source`, if it is answered.
    let program = |source: std::net::IpAddr| async move {
        let stream = common::connect_from(tcp_addr, source).await.unwrap();
        let info = gotalk::ConnInfo::new(gotalk::TransportKind::Tcp, None, None);
        let (r, w) = gotalk::transport::tcp(stream);
        let config = Arc::new(Config::default());
        let sock = gotalk::Sock::start(r, w, Arc::new(Handlers::new()), config, info).await.ok()?;
        within("echo", sock.buffer_request("echo", "hi")).await.ok().map(|_| sock)
    };
    let home: std::net::IpAddr = [127, 0, 0, 1].into();
    let held = [program(home).await.expect("first"), program(home).await.expect("second")];
    assert!(program(home).await.is_none(), "into the reserve");
    let other = program(other).await.expect("an address holding none");

    let ws = || gotalk::ws::connect(&served.ws, Arc::new(Handlers::new()), Config::default());
    let browsers = [ws().await.expect("first"), ws().await.expect("second")];
    let refused = ws().await.expect_err("into the reserve");
    assert!(refused.to_string().contains("503"), "{refused}");

    let http_addr = format!("127.0.0.1:{}", served.http_port());
    let idle = [held_http(&http_addr).await, held_http(&http_addr).await];
    let mut busy = TcpStream::connect(&http_addr).await.unwrap();
    let mut answer = String::new();
    within("503", busy.read_to_string(&mut answer)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    drop((held, other, browsers, idle));
}

#[tokio::test]
async fn serve_with_a_required_client_ca_lets_in_only_clients_with_its_certificates() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let (cert, key) = certificate_files("serve_client_ca");
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client.example".to_owned()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    let ca_file = cert.with_file_name("client-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let args = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--client-ca",
        ca_file.to_str().unwrap(),
        "--client-cert-required",
    ];
    let served = serve_with(&args).await;
    let tcp_addr = served.tcp.trim_start_matches("tls://").to_owned();
    let server_pem = std::fs::read(&cert).unwrap();
    let connect = |tls| {
        let addr = tcp_addr.clone();
        async move {
            let handlers = Arc::new(Handlers::new());
            let sock = gotalk::tcp::connect_tls(
                addr.as_str(),
                "localhost",
                tls,
                handlers,
                Config::default(),
            )
            .await?;
            sock.buffer_request("echo", "hi").await
        }
    };
    // TLS 1.3: a client without a certificate finishes its side of the handshake, and the
    // server's refusal arrives on its first read; either way no answer comes.
    let anonymous = gotalk::tls::client_config(&server_pem).unwrap();
    assert!(within("anonymous", connect(anonymous)).await.is_err());
    let (client_pem, key_pem) = (client.pem(), client_key.serialize_pem());
    let with_cert = gotalk::tls::client_config_with_cert(
        &server_pem,
        client_pem.as_bytes(),
        key_pem.as_bytes(),
    )
    .unwrap();
    assert_eq!(within("with a certificate", connect(with_cert)).await.unwrap(), "hi");
}

/// `--resume-grace` turns kept sessions on: a TCP peer of `gotalk serve` that drops its
/// connection resumes its id with its token on a new one, and gets what was sent meanwhile.
/// `--resume-max-detached 0` keeps none, grace or not.
#[tokio::test]
async fn resume_flags_keep_a_session_for_a_peer_that_reconnects() {
    use gotalk::relay::Inbox;

    async fn peer(tcp: &str) -> (gotalk::Sock, Inbox, gotalk::relay::Topic) {
        let inbox = Inbox::new();
        let topic = inbox.topic("t");
        let mut handlers = Handlers::new();
        inbox.install(&mut handlers);
        let sock = gotalk::tcp::connect(tcp, Arc::new(handlers), Config::default())
            .await
            .expect("tcp connect");
        within("an id", inbox.id()).await;
        (sock, inbox, topic)
    }

    for (max, kept) in [("1", true), ("0", false)] {
        let served = serve_with(&["--resume-grace", "30", "--resume-max-detached", max]).await;
        let tcp = served.tcp.trim_start_matches("tcp://").to_owned();
        let (away, inbox, _) = peer(&tcp).await;
        let mut sessions = inbox.sessions();
        let token = within("a token", sessions.wait_for(Option::is_some)).await.unwrap().unwrap();
        let (sender, _, _) = peer(&tcp).await;
        away.close();
        // Time for the server to see the close: a relay before then goes to the old
        // connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = within("a relay while away", sender.relay(token.id, "t", &"while away")).await;
        let (back, _, mut topic) = peer(&tcp).await;
        let resumed = back.resume(&token).await;
        if kept {
            sent.expect("held");
            assert_eq!(resumed.expect("resumed"), token.id);
            let message = within("a held message", topic.recv()).await.unwrap();
            assert_eq!(message.json::<String>().unwrap(), "while away");
        } else {
            assert!(sent.unwrap_err().to_string().contains("unknown peer"), "freed at once");
            let err = resumed.unwrap_err();
            assert!(err.to_string().contains("resume refused"), "{err}");
        }
    }
}
