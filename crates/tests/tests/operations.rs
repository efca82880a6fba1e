//! What an operator of a real `gotalk serve` process sees: `/metrics` read back with a real
//! HTTP client and a Prometheus text parser after real TCP and WebSocket traffic, and the log
//! on stderr (plain text without escape codes when it is not a terminal, or JSON lines) with
//! connections opening and closing at info.

mod common;

use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use common::process::ServeProcess;
use common::{within, WAIT};
use gotalk::{Config, Handlers, Sock};
use http_body_util::{BodyExt, Empty};
use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const LISTEN: [&str; 4] = ["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"];

async fn tcp_client(served: &ServeProcess) -> Sock {
    let addr = served.tcp.trim_start_matches("tcp://");
    let connect = gotalk::tcp::connect(addr, Arc::new(Handlers::new()), Config::default());
    within("tcp connect", connect).await.expect("tcp connect")
}

async fn ws_client(served: &ServeProcess) -> Sock {
    let connect = gotalk::ws::connect(&served.ws, Arc::new(Handlers::new()), Config::default());
    within("websocket connect", connect).await.expect("websocket connect")
}

/// `GET /metrics` with hyper's HTTP/1.1 client, parsed as the Prometheus text format.
async fn scrape(served: &ServeProcess) -> Scrape {
    let authority = served.http.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let stream = TcpStream::connect(&authority).await.expect("connect to http");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, &authority)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("GET /metrics", sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let content_type = response.headers()[http::header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let body = within("/metrics body", response.into_body().collect()).await.unwrap();
    let text = String::from_utf8(body.to_bytes().to_vec()).expect("UTF-8");
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
}

/// The sample of `metric` whose labels include `labels`.
fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

/// The value of a counter or gauge sample; panics when there is none.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels).map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{metric}{labels:?}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_connections_by_transport_and_requests_by_registered_op() {
    let served = ServeProcess::start(&LISTEN).await;
    let tcp = tcp_client(&served).await;
    let ws = ws_client(&served).await;
    let ws_short = ws_client(&served).await;
    for _ in 0..3 {
        tcp.buffer_request("echo", Bytes::from_static(b"1")).await.expect("echo over tcp");
    }
    for _ in 0..2 {
        ws.buffer_request("echo", Bytes::from_static(b"2")).await.expect("echo over ws");
    }
    assert!(tcp.buffer_request("fail", Bytes::new()).await.is_err());
    // Names a peer makes up are counted, under one label.
    for made_up in ["made-up-1", "made-up-2"] {
        assert!(ws.buffer_request(made_up, Bytes::new()).await.is_err());
    }

    let m = scrape(&served).await;
    assert_eq!(value(&m, "gotalk_connections_open", &[("transport", "tcp")]), 1.0);
    assert_eq!(value(&m, "gotalk_connections_open", &[("transport", "websocket")]), 2.0);
    assert_eq!(value(&m, "gotalk_connections_opened_total", &[("transport", "websocket")]), 2.0);
    let echo = [("op", "echo")];
    assert_eq!(value(&m, "gotalk_requests_total", &echo), 5.0);
    // The histogram counts every request it timed: its +Inf bucket, its _count.
    let Some(Value::Histogram(buckets)) =
        sample(&m, "gotalk_request_duration_seconds", &echo).map(|s| &s.value)
    else {
        panic!("no histogram for echo")
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
    assert_eq!(inf.count, 5.0, "{buckets:?}");
    assert!(buckets.len() > 10, "{buckets:?}");
    assert_eq!(value(&m, "gotalk_request_duration_seconds_count", &echo), 5.0);
    assert_eq!(value(&m, "gotalk_request_errors_total", &[("op", "echo"), ("kind", "error")]), 0.0);
    assert_eq!(value(&m, "gotalk_requests_total", &[("op", "fail")]), 1.0);
    assert_eq!(value(&m, "gotalk_request_errors_total", &[("op", "fail"), ("kind", "error")]), 1.0);
    assert_eq!(value(&m, "gotalk_requests_total", &[("op", "unknown")]), 2.0);
    let unknown = [("op", "unknown"), ("kind", "unknown")];
    assert_eq!(value(&m, "gotalk_request_errors_total", &unknown), 2.0);
    let labelled_made_up =
        m.samples.iter().find(|s| s.labels.get("op").is_some_and(|op| op.starts_with("made-up")));
    assert!(labelled_made_up.is_none(), "{labelled_made_up:?}");
    // The figures /stats reads are there too.
    assert!(value(&m, "gotalk_memory_budget_capacity_bytes", &[]) > 0.0);
    assert!(value(&m, "gotalk_memory_budget_peak_bytes", &[]) > 0.0);
    assert_eq!(value(&m, "gotalk_send_queue_bytes", &[("transport", "tcp")]), 0.0);
    let dead = [("transport", "websocket"), ("event", "dead")];
    assert_eq!(value(&m, "gotalk_liveness_events_total", &dead), 0.0);
    assert!(sample(&m, "gotalk_relay_peers", &[]).is_some());

    // A connection that leaves is no longer open, and still counted as opened.
    ws_short.close();
    let mut open = 2.0;
    let until = tokio::time::Instant::now() + WAIT;
    while open != 1.0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        open =
            value(&scrape(&served).await, "gotalk_connections_open", &[("transport", "websocket")]);
    }
    assert_eq!(open, 1.0, "the closed WebSocket is still counted as open");
    let m = scrape(&served).await;
    assert_eq!(value(&m, "gotalk_connections_opened_total", &[("transport", "websocket")]), 2.0);
    assert_eq!(value(&m, "gotalk_connections_opened_total", &[("transport", "tcp")]), 1.0);
}

/// `gotalk` with `command`, its stderr read line by line into the returned channel.
async fn serve_logged(command: &[&str]) -> (ServeProcess, mpsc::UnboundedReceiver<String>) {
    let mut served = ServeProcess::start_with(command, &LISTEN, Stdio::piped()).await;
    let stderr = served.child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (served, rx)
}

/// Log lines until one that contains `needle`, that one included.
async fn lines_until(log: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    within(&format!("a log line with {needle:?}"), async {
        while let Some(line) = log.recv().await {
            let found = line.contains(needle);
            lines.push(line);
            if found {
                return;
            }
        }
        panic!("stderr ended before {needle:?}: {lines:?}");
    })
    .await;
    lines
}

#[tokio::test]
async fn a_log_that_is_not_a_terminal_is_plain_text_with_connections_at_info() {
    let (served, mut log) = serve_logged(&["serve"]).await;
    let tcp = tcp_client(&served).await;
    let mut lines = lines_until(&mut log, "connection opened").await;
    tcp.close();
    lines.extend(lines_until(&mut log, "connection closed").await);
    let all = lines.join("\n");
    assert!(!all.contains('\u{1b}'), "escape codes in a piped log: {all:?}");
    let opened = lines.iter().find(|l| l.contains("connection opened")).unwrap();
    let closed = lines.iter().find(|l| l.contains("connection closed")).unwrap();
    for line in [opened, closed] {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("transport=tcp"), "{line}");
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }
    assert!(closed.contains("reason="), "{closed}");
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_connections_at_info() {
    let (served, mut log) = serve_logged(&["--log-format", "json", "serve"]).await;
    let ws = ws_client(&served).await;
    // A request is no news at info.
    ws.buffer_request("echo", Bytes::from_static(b"1")).await.expect("echo");
    let mut lines = lines_until(&mut log, "connection opened").await;
    ws.close();
    lines.extend(lines_until(&mut log, "connection closed").await);
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let event = |message: &str| {
        let found = events.iter().find(|e| e["fields"]["message"] == message);
        found.unwrap_or_else(|| panic!("no {message:?} in {events:#?}")).clone()
    };
    for message in ["connection opened", "connection closed"] {
        let e = event(message);
        assert_eq!(e["level"], "INFO", "{e}");
        assert_eq!(e["span"]["transport"], "websocket", "{e}");
        let peer = e["span"]["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("127.0.0.1:"), "{e}");
    }
    assert!(event("connection closed")["fields"]["reason"].is_string());
    assert!(
        events.iter().all(|e| e["level"] != "INFO" || e["span"]["name"] != "request"),
        "{events:#?}"
    );
}

/// A sample's value as [`value`] reads it, or 0 when there is none yet.
fn value_or_zero(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sample(scrape, metric, labels).map_or(0.0, |_| value(scrape, metric, labels))
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
}

#[tokio::test]
async fn an_app_of_its_own_counts_each_outcome_under_its_op() {
    // The library on its own: a TCP server with the metrics as one of its extensions.
    let metrics = gotalk_gateway::Metrics::new();
    let mut handlers = gotalk_tests::fixtures::handlers();
    handlers.extension(metrics.clone());
    let server = gotalk::tcp::Server::new(Arc::new(handlers), Config::default().request_limit(1));
    let connections = server.connections();
    metrics.connections("tcp", connections.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(listener, stopped));
    let client = Config::default().max_retries(0);
    let sock = gotalk::tcp::connect(addr, Arc::new(Handlers::new()), client).await.unwrap();

    assert!(sock.buffer_request("panic", Bytes::from_static(b"\"boom\"")).await.is_err());
    // A request that never ends holds the one slot, so the next is told to retry. It may
    // itself be told to retry while an echo holds the slot: then it is sent again.
    let send_never = || {
        let sock = sock.clone();
        tokio::spawn(async move { sock.buffer_request("never", Bytes::new()).await })
    };
    let mut never = send_never();
    within("a RetryResult", async {
        loop {
            // The test's runtime has one thread: `never` is sent before the echo.
            tokio::task::yield_now().await;
            match sock.buffer_request("echo", Bytes::from_static(b"1")).await {
                Err(gotalk::Error::Retry { .. }) => break,
                Ok(_) if never.is_finished() => never = send_never(),
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    // Closed by the server while `never` runs: given up.
    for open in connections.socks() {
        open.close();
    }
    assert!(within("never ends with the connection", never).await.unwrap().is_err());

    let m = parse(&metrics.render());
    let errors =
        |op, kind| value_or_zero(&m, "gotalk_request_errors_total", &[("op", op), ("kind", kind)]);
    assert_eq!(errors("panic", "panicked"), 1.0);
    assert!(errors("echo", "retry") >= 1.0);
    assert_eq!(errors("never", "cancelled"), 1.0);
    for op in ["panic", "echo", "never"] {
        let requests = value(&m, "gotalk_requests_total", &[("op", op)]);
        let timed = value(&m, "gotalk_request_duration_seconds_count", &[("op", op)]);
        assert_eq!(requests, timed, "{op}");
    }
    assert_eq!(value(&m, "gotalk_connections_opened_total", &[("transport", "tcp")]), 1.0);
}
